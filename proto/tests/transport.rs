//! Behaviour of the three transports as a user of `gpufn_proto::transport` sees it: streams
//! carry bytes both ways, a stuck bulk transfer does not hold up small calls, certificates are
//! pinned, and bad peers get clear errors without harming the listener.
//!
//! No timings are asserted; the outer timeouts only turn a hang into a failure.
#![cfg(feature = "transport")]

use std::path::PathBuf;
use std::time::Duration;

use gpufn_proto::transport::{
    Address, CertFingerprint, ClientOptions, Connection, Listener, RecvStream, SendStream,
    ServerOptions, ServerTls, TransportError, connect,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const KINDS: [&str; 3] = ["quic", "tcp", "unix"];
const HANG_GUARD: Duration = Duration::from_secs(120);

/// A scratch directory for certificates and sockets, removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "gpufn-transport-{name}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn options(&self) -> ServerOptions {
        ServerOptions::dev_certificate_in(self.0.join("certs"))
    }

    fn address(&self, kind: &str) -> Address {
        match kind {
            "quic" => "quic://127.0.0.1:0".parse().unwrap(),
            "tcp" => "tcp://127.0.0.1:0".parse().unwrap(),
            "unix" => format!("unix://{}", self.0.join("w.sock").display())
                .parse()
                .unwrap(),
            other => panic!("unknown kind {other}"),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0u8)
}

async fn listen(scratch: &Scratch, kind: &str) -> Listener {
    Listener::bind(&scratch.address(kind), &scratch.options())
        .await
        .unwrap_or_else(|e| panic!("bind {kind}: {e}"))
}

async fn dial(listener: &Listener) -> Connection {
    connect(listener.local_address(), &ClientOptions::default())
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", listener.local_address()))
}

/// Serves one connection: every stream echoes what it receives until the client finishes.
fn spawn_echo_server(listener: Listener) -> tokio::task::JoinHandle<Listener> {
    tokio::spawn(async move {
        let connection = listener.accept().await.unwrap();
        tokio::spawn(async move {
            while let Ok((send, recv)) = connection.accept_stream().await {
                tokio::spawn(echo(send, recv));
            }
        });
        listener
    })
}

async fn echo(mut send: SendStream, mut recv: RecvStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match recv.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if send.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = send.finish().await;
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn with_guard<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_carry_their_own_bytes() {
    for kind in KINDS {
        let scratch = Scratch::new("streams");
        let listener = listen(&scratch, kind).await;
        let client = dial(&listener).await;
        let _server = spawn_echo_server(listener);
        let mut tasks = Vec::new();
        for seed in 0..6u8 {
            let (mut send, mut recv) = client.open_stream().await.unwrap();
            tasks.push(tokio::spawn(async move {
                let data = pattern(seed, 300_000 + seed as usize * 1000);
                let writer = async {
                    send.write_all(&data).await.unwrap();
                    send.finish().await.unwrap();
                };
                let mut got = Vec::new();
                let reader = recv.read_to_end(&mut got);
                let ((), read) = tokio::join!(writer, reader);
                read.unwrap();
                assert!(got == data, "stream {seed} returned other bytes");
            }));
        }
        with_guard(kind, async {
            for task in tasks {
                task.await.unwrap();
            }
        })
        .await;
    }
}

/// A bulk transfer the server does not read yet fills every buffer on its way, so its writer
/// is stuck; small request/replies on another stream of the same connection still complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_bulk_transfer_does_not_block_small_calls() {
    const CHUNK: usize = 1 << 20;
    for kind in KINDS {
        // More than can be in flight unread, so the bulk writer cannot finish before the
        // server reads: QUIC buffers up to its send window (64 MiB) plus the stream window
        // (16 MiB); a socket pair buffers at most a few MiB (Linux defaults: tcp_wmem 4 MiB
        // plus tcp_rmem 6 MiB at most).
        let bulk_bytes: usize = if kind == "quic" { 96 << 20 } else { 32 << 20 };
        let scratch = Scratch::new("bulk");
        let listener = listen(&scratch, kind).await;
        let client = dial(&listener).await;
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let connection = listener.accept().await.unwrap();
            // Streams may be accepted in another order than opened (on TCP and Unix sockets
            // each is its own socket), so each starts with a tag byte saying what it is.
            let mut bulk = None;
            for _ in 0..2 {
                let (send, mut recv) = connection.accept_stream().await.unwrap();
                let mut tag = [0u8; 1];
                recv.read_exact(&mut tag).await.unwrap();
                match &tag {
                    // Bulk: held unread until released.
                    b"B" => bulk = Some((send, recv)),
                    // Small calls: answered at once.
                    _ => drop(tokio::spawn(echo(send, recv))),
                }
            }
            let (mut bulk_send, mut bulk_recv) = bulk.unwrap();
            release_rx.await.unwrap();
            let mut received = 0usize;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = bulk_recv.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                received += n;
            }
            bulk_send
                .write_all(&(received as u64).to_le_bytes())
                .await
                .unwrap();
            bulk_send.finish().await.unwrap();
            (listener, connection)
        });

        let (mut bulk_send, mut bulk_recv) = client.open_stream().await.unwrap();
        // The tag also announces the stream (QUIC streams appear with their first byte).
        bulk_send.write_all(b"B").await.unwrap();
        let bulk = tokio::spawn(async move {
            let chunk = vec![7u8; CHUNK];
            for _ in 0..bulk_bytes / CHUNK {
                bulk_send.write_all(&chunk).await.unwrap();
            }
            bulk_send.finish().await.unwrap();
            bulk_send
        });

        let (mut small_send, mut small_recv) = client.open_stream().await.unwrap();
        small_send.write_all(b"S").await.unwrap();
        with_guard(kind, async {
            for i in 0..200u32 {
                let request = i.to_le_bytes();
                small_send.write_all(&request).await.unwrap();
                let mut reply = [0u8; 4];
                small_recv.read_exact(&mut reply).await.unwrap();
                assert_eq!(reply, request, "{kind}: reply {i} out of order");
            }
        })
        .await;
        assert!(
            !bulk.is_finished(),
            "{kind}: the bulk writer finished although the server never read it"
        );

        release_tx.send(()).unwrap();
        let _bulk_send = with_guard(kind, bulk).await.unwrap();
        let mut count = [0u8; 8];
        with_guard(kind, bulk_recv.read_exact(&mut count))
            .await
            .unwrap();
        assert_eq!(
            u64::from_le_bytes(count),
            bulk_bytes as u64,
            "{kind}: bulk bytes lost"
        );
        let _ = server.await.unwrap();
    }
}

#[tokio::test]
async fn quic_refuses_a_certificate_with_another_fingerprint() {
    let scratch = Scratch::new("pin");
    let listener = listen(&scratch, "quic").await;
    let Address::Quic { host, port, .. } = listener.local_address().clone() else {
        unreachable!()
    };
    let wrong = CertFingerprint([0xab; 32]);
    let address = Address::Quic {
        host,
        port,
        cert_sha256: Some(wrong),
    };
    let accept = tokio::spawn(async move {
        // The listener keeps running; no connection may come out of the failed handshake.
        tokio::time::timeout(Duration::from_millis(500), listener.accept())
            .await
            .is_err()
    });
    match connect(&address, &ClientOptions::default()).await {
        Err(TransportError::FingerprintMismatch { expected, got, .. }) => {
            assert_eq!(expected, wrong);
            assert_ne!(got, wrong);
            let text = TransportError::FingerprintMismatch {
                address: address.to_string(),
                expected,
                got,
            }
            .to_string();
            assert!(text.contains(&wrong.to_string()) && text.contains(&got.to_string()));
        }
        Err(other) => panic!("expected a fingerprint mismatch, got: {other}"),
        Ok(_) => panic!("connected despite a wrong pinned fingerprint"),
    }
    assert!(
        accept.await.unwrap(),
        "a refused handshake produced a connection"
    );
}

#[tokio::test]
async fn quic_pins_the_fingerprint_the_listener_reports_across_restarts() {
    let scratch = Scratch::new("restart");
    let first = listen(&scratch, "quic").await;
    let fingerprint = first.cert_fingerprint().unwrap();
    drop(first);
    let second = listen(&scratch, "quic").await;
    assert_eq!(second.cert_fingerprint(), Some(fingerprint));
    let Address::Quic { cert_sha256, .. } = second.local_address() else {
        unreachable!()
    };
    assert_eq!(*cert_sha256, Some(fingerprint));
    let client = dial(&second).await;
    let _server = spawn_echo_server(second);
    let (mut send, mut recv) = client.open_stream().await.unwrap();
    send.write_all(b"hello").await.unwrap();
    let mut got = [0u8; 5];
    recv.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"hello");
}

#[tokio::test]
async fn quic_without_a_pin_or_ca_explains_how_to_trust_the_server() {
    let address: Address = "quic://127.0.0.1:4433".parse().unwrap();
    let err = connect(&address, &ClientOptions::default())
        .await
        .err()
        .expect("no trust anchor must be refused");
    assert!(matches!(err, TransportError::NoTrustAnchor { .. }), "{err}");
    assert!(err.to_string().contains("cert-sha256"), "{err}");
}

/// Production mode: a CA certificate file instead of a pin.
#[tokio::test]
async fn quic_trusts_a_ca_file_and_refuses_a_foreign_ca() {
    let scratch = Scratch::new("ca");
    let (ca_pem, server_pem, server_key) = issue_chain("localhost");
    let (other_ca_pem, _, _) = issue_chain("localhost");
    let write = |name: &str, text: &str| {
        let path = scratch.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let tls = ServerTls::Pem {
        cert_chain: write("server.pem", &server_pem),
        key: write("server-key.pem", &server_key),
    };
    let ca = write("ca.pem", &ca_pem);
    let other_ca = write("other-ca.pem", &other_ca_pem);
    let listener = Listener::bind(&scratch.address("quic"), &ServerOptions { tls })
        .await
        .unwrap();
    let Address::Quic { port, .. } = listener.local_address().clone() else {
        unreachable!()
    };
    let address: Address = format!("quic://127.0.0.1:{port}").parse().unwrap();
    let options = |ca_file: PathBuf| ClientOptions {
        ca_file: Some(ca_file),
        server_name: Some("localhost".into()),
        ..ClientOptions::default()
    };
    let err = connect(&address, &options(other_ca))
        .await
        .err()
        .expect("a certificate from a foreign CA must be refused");
    assert!(matches!(err, TransportError::Handshake { .. }), "{err}");

    let client = connect(&address, &options(ca)).await.unwrap();
    let _server = spawn_echo_server(listener);
    let (mut send, mut recv) = client.open_stream().await.unwrap();
    send.write_all(b"ca").await.unwrap();
    let mut got = [0u8; 2];
    recv.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ca");
}

/// A CA and a server certificate it signed: (CA PEM, server cert PEM, server key PEM).
fn issue_chain(server_name: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec![server_name.to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    (ca.pem(), server.pem(), server_key.serialize_pem())
}

#[tokio::test]
async fn connecting_to_nothing_names_the_address_and_the_fix() {
    let scratch = Scratch::new("nothing");
    // A port that was free a moment ago.
    let tcp_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let udp_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pin = "ab".repeat(32);
    let cases = [
        (
            format!("tcp://127.0.0.1:{tcp_port}"),
            "is a gpufn worker listening there?",
        ),
        (
            format!("unix://{}", scratch.0.join("none.sock").display()),
            "is a gpufn worker running there?",
        ),
        (
            format!("quic://127.0.0.1:{udp_port}?cert-sha256={pin}"),
            "is a gpufn worker listening there",
        ),
    ];
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(1),
        ..ClientOptions::default()
    };
    for (address, hint) in cases {
        let parsed: Address = address.parse().unwrap();
        let err = connect(&parsed, &options)
            .await
            .err()
            .unwrap_or_else(|| panic!("connected to nothing at {address}"));
        let text = err.to_string();
        assert!(matches!(err, TransportError::Connect { .. }), "{text}");
        assert!(text.contains(&parsed.to_string()), "{text}");
        assert!(text.contains(hint), "{text}");
    }
}

/// Garbage, a foreign protocol, a silent socket and a stream for an unknown connection are
/// all dropped; a real client connects afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_do_not_harm_the_listener() {
    for kind in KINDS {
        let scratch = Scratch::new("garbage");
        let listener = listen(&scratch, kind).await;
        let address = listener.local_address().clone();
        let garbage: [&[u8]; 4] = [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            &[0xff; 22],
            // A well-formed stream preamble naming a connection that does not exist.
            b"gpfn\x01\x02AAAAAAAAAAAAAAAA",
            b"gp",
        ];
        let mut sockets = Vec::new();
        for bytes in garbage {
            sockets.push(send_raw(&address, bytes).await);
        }
        let client = dial(&listener).await;
        let _server = spawn_echo_server(listener);
        let (mut send, mut recv) = client.open_stream().await.unwrap();
        send.write_all(b"still alive").await.unwrap();
        let mut got = [0u8; 11];
        with_guard(kind, recv.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"still alive", "{kind}");
        drop(sockets);
    }
}

/// Sends raw bytes to the listener's port or socket, keeping the socket open.
async fn send_raw(address: &Address, bytes: &[u8]) -> Box<dyn std::any::Any + Send> {
    match address {
        Address::Tcp { host, port } => {
            let mut s = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .unwrap();
            s.write_all(bytes).await.unwrap();
            Box::new(s)
        }
        Address::Unix { path } => {
            let mut s = tokio::net::UnixStream::connect(path).await.unwrap();
            s.write_all(bytes).await.unwrap();
            Box::new(s)
        }
        Address::Quic { host, port, .. } => {
            let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            s.send_to(bytes, (host.as_str(), *port)).await.unwrap();
            // A QUIC-looking long header with nonsense after it.
            let mut fake = vec![0xc0, 0, 0, 0, 1];
            fake.extend_from_slice(&[0x55; 1200]);
            s.send_to(&fake, (host.as_str(), *port)).await.unwrap();
            Box::new(s)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_learns_when_the_client_closes_the_connection() {
    for kind in KINDS {
        let scratch = Scratch::new("close");
        let listener = listen(&scratch, kind).await;
        let client = dial(&listener).await;
        let server = listener.accept().await.unwrap();
        let (mut send, _recv) = client.open_stream().await.unwrap();
        send.write_all(b"x").await.unwrap();
        let (_s, mut r) = server.accept_stream().await.unwrap();
        let mut one = [0u8; 1];
        r.read_exact(&mut one).await.unwrap();
        client.close();
        drop(client);
        let err = with_guard(kind, server.accept_stream())
            .await
            .err()
            .expect("accept_stream must end when the client closes");
        assert!(
            matches!(err, TransportError::Closed { .. }),
            "{kind}: {err}"
        );
    }
}

#[tokio::test]
async fn socket_transports_explain_which_side_opens_streams() {
    for kind in ["tcp", "unix"] {
        let scratch = Scratch::new("sides");
        let listener = listen(&scratch, kind).await;
        let client = dial(&listener).await;
        let server = listener.accept().await.unwrap();
        let err = server.open_stream().await.err().unwrap();
        assert!(err.to_string().contains("the client opens them"), "{err}");
        let err = client.accept_stream().await.err().unwrap();
        assert!(matches!(err, TransportError::Unsupported(_)), "{err}");
    }
}

#[tokio::test]
async fn unix_listener_replaces_a_stale_socket_but_not_a_live_one() {
    let scratch = Scratch::new("stale");
    let address = scratch.address("unix");
    let Address::Unix { path } = &address else {
        unreachable!()
    };
    // A socket file whose process is gone.
    drop(std::os::unix::net::UnixListener::bind(path).unwrap());
    assert!(path.exists());
    let live = Listener::bind(&address, &scratch.options()).await.unwrap();
    let err = Listener::bind(&address, &scratch.options())
        .await
        .err()
        .expect("a second listener on a live socket must fail");
    assert!(
        err.to_string().contains("another process listens there"),
        "{err}"
    );
    drop(live);
    assert!(!path.exists(), "the listener removes its socket file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn established_streams_outlive_the_listener() {
    for kind in KINDS {
        let scratch = Scratch::new("outlive");
        let listener = listen(&scratch, kind).await;
        let client = dial(&listener).await;
        let server = listener.accept().await.unwrap();
        let (mut send, mut recv) = client.open_stream().await.unwrap();
        send.write_all(b"1").await.unwrap();
        let (server_send, server_recv) = server.accept_stream().await.unwrap();
        tokio::spawn(echo(server_send, server_recv));
        drop(listener);
        send.write_all(b"2").await.unwrap();
        let mut got = [0u8; 2];
        with_guard(kind, recv.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"12", "{kind}");
    }
}
