//! `gpufn bench transport`: what gpufn's protocol costs on top of each transport.
//!
//! For QUIC, TCP and Unix sockets on loopback, in one run: the round-trip time of the minimal
//! synchronous call (a `Ping` frame, decoded by the server, answered with a reply frame) and
//! the throughput of bulk copies (`MemcpyHtoD` frames with 1 MiB raw payloads read into a
//! destination buffer), each next to the raw transport doing the same without gpufn: a plain
//! socket echo for TCP and Unix, a plain quinn stream for QUIC, and a plain UDP datagram echo
//! for context. Raw and protocol measurements alternate in rounds so that drift on a busy
//! machine affects both alike. Servers run in this process on their own tokio tasks.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gpufn_proto::frame::{
    FrameBody, FrameKind, FrameLimits, FrameReader, FrameWriter, encode_frame,
};
use gpufn_proto::message::{Reply, ReplyMessage, Request};
use gpufn_proto::transport::socket::widen_unix_buffers;
use gpufn_proto::transport::{self, Address, ClientOptions, Listener, ServerOptions, ServerTls};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};

/// The transports the benchmark knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Quic,
    Tcp,
    Unix,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Quic, Kind::Tcp, Kind::Unix];

    fn name(self) -> &'static str {
        match self {
            Kind::Quic => "QUIC",
            Kind::Tcp => "TCP",
            Kind::Unix => "Unix socket",
        }
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    pub kinds: Vec<Kind>,
    /// Round trips in all, raw and through gpufn each, spread over the rounds.
    pub rtt_iterations: usize,
    /// Bytes per bulk measurement (one per round), raw and through gpufn each.
    pub bulk_bytes: u64,
    /// Payload bytes per bulk frame (and per raw write).
    pub bulk_frame: usize,
    /// Raw and gpufn measurements alternate this many times, so that load from other
    /// processes hits both alike; RTT percentiles pool all rounds, throughput is the median.
    pub rounds: usize,
    /// Scratch space for the development certificate and the Unix sockets.
    pub scratch_dir: PathBuf,
    /// QUIC only: also measure plain UDP datagrams for context.
    pub udp_context: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kinds: Kind::ALL.to_vec(),
            rtt_iterations: 20_000,
            bulk_bytes: 64 << 20,
            bulk_frame: 1 << 20,
            rounds: 10,
            scratch_dir: std::env::temp_dir().join(format!("gpufn-bench-{}", std::process::id())),
            udp_context: true,
        }
    }
}

/// Round-trip percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rtt {
    pub p50_us: f64,
    pub p99_us: f64,
}

/// One side's numbers: raw transport or through gpufn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub rtt: Rtt,
    /// Bulk throughput in MiB/s, median over the rounds.
    pub bulk: f64,
    /// CPU time of this process (client and server together) per round trip. Unlike wall
    /// time it hardly moves with load from other processes, so it shows the protocol's cost
    /// even on a busy machine.
    pub cpu_per_call_us: f64,
    /// Bulk bytes moved per CPU second of this process.
    pub mib_per_cpu_s: f64,
}

/// One transport's results.
#[derive(Debug, Clone)]
pub struct Row {
    pub kind: Kind,
    pub raw: Measured,
    pub gpufn: Measured,
    /// Median over the rounds of gpufn's throughput over the raw throughput measured next to
    /// it: pairing cancels slow drift in the machine's load.
    pub bulk_ratio: f64,
    /// QUIC only: plain UDP datagram echo (RTT) and stop-and-wait 60,000-byte datagrams.
    pub udp: Option<(Rtt, f64)>,
}

impl Row {
    /// Protocol round trip over raw round trip, minus one, at p50.
    pub fn rtt_overhead(&self) -> f64 {
        self.gpufn.rtt.p50_us / self.raw.rtt.p50_us - 1.0
    }
}

/// The results of one run, printable as a Markdown table.
#[derive(Debug, Clone)]
pub struct Report {
    pub machine: String,
    pub options: Options,
    pub request_bytes: usize,
    pub reply_bytes: usize,
    pub rows: Vec<Row>,
}

/// Runs the benchmark for every transport in `options.kinds`.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    std::fs::create_dir_all(&options.scratch_dir)
        .with_context(|| format!("cannot create {}", options.scratch_dir.display()))?;
    let (request_bytes, reply_bytes) = ping_sizes()?;
    let mut rows = Vec::new();
    for &kind in &options.kinds {
        rows.push(
            measure(kind, options, request_bytes, reply_bytes)
                .await
                .with_context(|| format!("benchmarking {}", kind.name()))?,
        );
    }
    let _ = std::fs::remove_dir_all(&options.scratch_dir);
    Ok(Report {
        machine: machine_description(),
        options: options.clone(),
        request_bytes,
        reply_bytes,
        rows,
    })
}

/// Encoded sizes of the ping call and its reply, so the raw echo moves the same bytes.
fn ping_sizes() -> anyhow::Result<(usize, usize)> {
    let request = encode_frame(FrameKind::Call, 1, &FrameBody::Request(Request::Ping), &[])?;
    let reply = encode_frame(FrameKind::Reply, 1, &FrameBody::Reply(pong()), &[])?;
    Ok((request.len(), reply.len()))
}

fn pong() -> ReplyMessage {
    ReplyMessage {
        deferred: Vec::new(),
        result: Ok(Reply::Pong),
        printf_bytes: 0,
    }
}

async fn measure(
    kind: Kind,
    options: &Options,
    request_bytes: usize,
    reply_bytes: usize,
) -> anyhow::Result<Row> {
    let raw = RawPair::start(kind, options).await?;
    let gpufn = GpufnPair::start(kind, options).await?;
    let frames = (options.bulk_bytes / options.bulk_frame as u64).max(1);
    let per_round = (options.rtt_iterations / options.rounds.max(1)).max(1);

    let mut raw_side = Side::default();
    let mut gpufn_side = Side::default();
    // Warm-up: connections, windows, caches.
    raw.rtt(200, request_bytes, reply_bytes).await?;
    gpufn.rtt(200).await?;
    for round in 0..options.rounds.max(1) {
        // Alternate which side goes first, so neither always runs in the other's wake.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for through_gpufn in order {
            let cpu = cpu_time();
            let samples = if through_gpufn {
                gpufn.rtt(per_round).await?
            } else {
                raw.rtt(per_round, request_bytes, reply_bytes).await?
            };
            let side = if through_gpufn {
                &mut gpufn_side
            } else {
                &mut raw_side
            };
            side.rtt_cpu += cpu_time().saturating_sub(cpu);
            side.samples.extend(samples);
        }
        for through_gpufn in order {
            let cpu = cpu_time();
            let throughput = if through_gpufn {
                gpufn.bulk(frames, options.bulk_frame).await?
            } else {
                raw.bulk(frames, options.bulk_frame).await?
            };
            let side = if through_gpufn {
                &mut gpufn_side
            } else {
                &mut raw_side
            };
            side.bulk_cpu += cpu_time().saturating_sub(cpu);
            side.bulk_bytes += frames * options.bulk_frame as u64;
            side.bulk.push(throughput);
        }
    }
    let ratios = raw_side
        .bulk
        .iter()
        .zip(&gpufn_side.bulk)
        .map(|(raw, gpufn)| gpufn / raw)
        .collect();
    let udp = if kind == Kind::Quic && options.udp_context {
        Some(udp_baseline(options, request_bytes, reply_bytes).await?)
    } else {
        None
    };
    Ok(Row {
        kind,
        raw: raw_side.summary(),
        gpufn: gpufn_side.summary(),
        bulk_ratio: median(ratios),
        udp,
    })
}

/// What one side (raw or gpufn) accumulated over the rounds.
#[derive(Default)]
struct Side {
    samples: Vec<Duration>,
    rtt_cpu: Duration,
    bulk: Vec<f64>,
    bulk_cpu: Duration,
    bulk_bytes: u64,
}

impl Side {
    fn summary(self) -> Measured {
        let calls = self.samples.len().max(1) as f64;
        Measured {
            cpu_per_call_us: self.rtt_cpu.as_secs_f64() * 1e6 / calls,
            mib_per_cpu_s: mib_per_s(self.bulk_bytes, self.bulk_cpu),
            rtt: percentiles(self.samples),
            bulk: median(self.bulk),
        }
    }
}

fn percentiles(mut samples: Vec<Duration>) -> Rtt {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1));
        samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    Rtt {
        p50_us: at(0.50),
        p99_us: at(0.99),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// CPU time used so far by this process, all threads.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_PROCESS_CPUTIME_ID exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64()
}

// ---------------------------------------------------------------------------------------
// Through gpufn: the transport abstraction plus frames and messages.

/// A gpufn connection with one stream for calls and one for bulk copies, as the stub uses
/// them, and a server that decodes every frame.
struct GpufnPair {
    calls: tokio::sync::Mutex<Framed>,
    bulk: tokio::sync::Mutex<Framed>,
    _connection: transport::Connection,
    _server: tokio::task::JoinHandle<()>,
}

type Framed = (
    FrameWriter<transport::SendStream>,
    FrameReader<transport::RecvStream>,
);

impl GpufnPair {
    async fn start(kind: Kind, options: &Options) -> anyhow::Result<Self> {
        let address: Address = match kind {
            Kind::Quic => "quic://127.0.0.1:0".parse()?,
            Kind::Tcp => "tcp://127.0.0.1:0".parse()?,
            Kind::Unix => format!(
                "unix://{}",
                options.scratch_dir.join("gpufn.sock").display()
            )
            .parse()?,
        };
        let server_options = ServerOptions::dev_certificate_in(options.scratch_dir.join("certs"));
        let listener = Listener::bind(&address, &server_options).await?;
        let connection =
            transport::connect(listener.local_address(), &ClientOptions::default()).await?;
        let server = tokio::spawn(async move {
            let Ok(connection) = listener.accept().await else {
                return;
            };
            while let Ok((send, recv)) = connection.accept_stream().await {
                tokio::spawn(serve_frames(send, recv));
            }
        });
        let open = || async {
            let (send, recv) = connection.open_stream().await?;
            Ok::<_, anyhow::Error>((
                FrameWriter::new(send),
                FrameReader::new(recv, FrameLimits::default()),
            ))
        };
        let calls = open().await?;
        let bulk = open().await?;
        Ok(GpufnPair {
            calls: tokio::sync::Mutex::new(calls),
            bulk: tokio::sync::Mutex::new(bulk),
            _connection: connection,
            _server: server,
        })
    }

    async fn ping(framed: &mut Framed, id: u64) -> anyhow::Result<()> {
        let (writer, reader) = framed;
        writer
            .write_request(FrameKind::Call, id, &Request::Ping, &[])
            .await?;
        let Some(header) = reader.next_frame().await? else {
            bail!("the server closed the stream");
        };
        if header.kind != FrameKind::Reply || header.id != id {
            bail!("expected the reply to call {id}, got {header:?}");
        }
        match reader.reply()?.result {
            Ok(Reply::Pong) => Ok(()),
            other => bail!("unexpected reply {other:?}"),
        }
    }

    async fn rtt(&self, iterations: usize) -> anyhow::Result<Vec<Duration>> {
        let mut framed = self.calls.lock().await;
        let mut samples = Vec::with_capacity(iterations);
        for id in 0..iterations as u64 {
            let start = Instant::now();
            Self::ping(&mut framed, id).await?;
            samples.push(start.elapsed());
        }
        Ok(samples)
    }

    /// `frames` posted host-to-device copies, then a ping: its reply proves the server has
    /// read every payload.
    async fn bulk(&self, frames: u64, frame_bytes: usize) -> anyhow::Result<f64> {
        let mut framed = self.bulk.lock().await;
        let data = vec![0x5au8; frame_bytes];
        let start = Instant::now();
        for id in 0..frames {
            let copy = Request::MemcpyHtoD {
                dst: 0x7000_0000_0000 + id * frame_bytes as u64,
                stream: None,
            };
            framed
                .0
                .write_request(FrameKind::Post, id, &copy, &[&data])
                .await?;
        }
        Self::ping(&mut framed, frames).await?;
        Ok(mib_per_s(frames * frame_bytes as u64, start.elapsed()))
    }
}

/// The server side of one gpufn stream: answers pings, reads copy payloads into a
/// destination buffer (standing in for device memory).
async fn serve_frames(send: transport::SendStream, recv: transport::RecvStream) {
    let mut writer = FrameWriter::new(send);
    let mut reader = FrameReader::new(recv, FrameLimits::default());
    let mut device = Vec::new();
    let reply = pong();
    while let Ok(Some(header)) = reader.next_frame().await {
        let Ok(request) = reader.request() else {
            return;
        };
        match request {
            Request::Ping => {
                if writer.write_reply(header.id, &reply, &[]).await.is_err() {
                    return;
                }
            }
            Request::MemcpyHtoD { .. } => {
                device.resize(header.payload_len as usize, 0);
                if reader.read_payload(&mut device).await.is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw baselines: the same byte counts over the bare transport, no gpufn code involved.

/// A plain byte stream for calls and one for bulk, with an echo/sink server behind them.
struct RawPair {
    calls: tokio::sync::Mutex<(BoxWrite, BoxRead)>,
    bulk: tokio::sync::Mutex<(BoxWrite, BoxRead)>,
    _keep: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;
type BoxRead = Box<dyn AsyncRead + Send + Unpin>;

impl RawPair {
    async fn start(kind: Kind, options: &Options) -> anyhow::Result<Self> {
        let frames = (options.bulk_bytes / options.bulk_frame as u64).max(1);
        let shape = RawShape {
            frames,
            frame_bytes: options.bulk_frame,
        };
        match kind {
            Kind::Tcp => {
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                let server = tokio::spawn(async move {
                    while let Ok((s, _)) = listener.accept().await {
                        let _ = s.set_nodelay(true);
                        let (r, w) = s.into_split();
                        tokio::spawn(raw_server(Box::new(w), Box::new(r), shape));
                    }
                });
                let open = || async {
                    let s = TcpStream::connect(addr).await?;
                    s.set_nodelay(true)?;
                    let (r, w) = s.into_split();
                    Ok::<_, anyhow::Error>((Box::new(w) as BoxWrite, Box::new(r) as BoxRead))
                };
                Self::new(
                    open().await?,
                    open().await?,
                    vec![Box::new(AbortOnDrop(server))],
                )
                .await
            }
            Kind::Unix => {
                let path = options.scratch_dir.join("raw.sock");
                let _ = std::fs::remove_file(&path);
                let listener = UnixListener::bind(&path)?;
                let server = tokio::spawn(async move {
                    while let Ok((s, _)) = listener.accept().await {
                        widen_unix_buffers(&s);
                        let (r, w) = s.into_split();
                        tokio::spawn(raw_server(Box::new(w), Box::new(r), shape));
                    }
                });
                let open = || async {
                    // The same socket buffers as gpufn's own Unix sockets.
                    let stream = UnixStream::connect(&path).await?;
                    widen_unix_buffers(&stream);
                    let (r, w) = stream.into_split();
                    Ok::<_, anyhow::Error>((Box::new(w) as BoxWrite, Box::new(r) as BoxRead))
                };
                Self::new(
                    open().await?,
                    open().await?,
                    vec![Box::new(AbortOnDrop(server))],
                )
                .await
            }
            Kind::Quic => Self::start_quic(options, shape).await,
        }
    }

    /// Announces each stream's kind with its first byte (which also makes a QUIC stream
    /// known to the server).
    async fn new(
        mut calls: (BoxWrite, BoxRead),
        mut bulk: (BoxWrite, BoxRead),
        keep: Vec<Box<dyn std::any::Any + Send + Sync>>,
    ) -> anyhow::Result<Self> {
        calls.0.write_all(&[RAW_PING]).await?;
        bulk.0.write_all(&[RAW_BULK]).await?;
        Ok(RawPair {
            calls: tokio::sync::Mutex::new(calls),
            bulk: tokio::sync::Mutex::new(bulk),
            _keep: keep,
        })
    }

    /// Plain quinn with the same TLS and transport configuration gpufn uses.
    async fn start_quic(options: &Options, shape: RawShape) -> anyhow::Result<Self> {
        let tls = ServerTls::DevCertificate {
            dir: options.scratch_dir.join("certs"),
        };
        let (server_config, fingerprint) = transport::quic::server_config(&tls)?;
        let server_ep = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse()?)?;
        let server_addr = server_ep.local_addr()?;
        let accept_ep = server_ep.clone();
        let server = tokio::spawn(async move {
            let Some(incoming) = accept_ep.accept().await else {
                return;
            };
            let Ok(connection) = incoming.await else {
                return;
            };
            while let Ok((w, r)) = connection.accept_bi().await {
                tokio::spawn(raw_server(Box::new(w), Box::new(r), shape));
            }
        });
        let trust = transport::tls::ServerTrust::Pinned(fingerprint);
        let (client_config, _) = transport::quic::client_config(&trust)?;
        let client_ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let connection = client_ep
            .connect_with(client_config, server_addr, "localhost")?
            .await?;
        let open = || async {
            let (w, r) = connection.open_bi().await?;
            Ok::<_, anyhow::Error>((Box::new(w) as BoxWrite, Box::new(r) as BoxRead))
        };
        let calls = open().await?;
        let bulk = open().await?;
        Self::new(
            calls,
            bulk,
            vec![
                Box::new(AbortOnDrop(server)),
                Box::new(connection),
                Box::new(client_ep),
                Box::new(server_ep),
            ],
        )
        .await
    }

    async fn rtt(
        &self,
        iterations: usize,
        request_bytes: usize,
        reply_bytes: usize,
    ) -> anyhow::Result<Vec<Duration>> {
        let mut guard = self.calls.lock().await;
        let (w, r) = &mut *guard;
        let request = vec![0u8; request_bytes];
        let mut reply = vec![0u8; reply_bytes];
        let mut samples = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let start = Instant::now();
            w.write_all(&request).await?;
            r.read_exact(&mut reply).await?;
            samples.push(start.elapsed());
        }
        Ok(samples)
    }

    async fn bulk(&self, frames: u64, frame_bytes: usize) -> anyhow::Result<f64> {
        let mut guard = self.bulk.lock().await;
        let (w, r) = &mut *guard;
        let data = vec![RAW_BULK; frame_bytes];
        let start = Instant::now();
        for _ in 0..frames {
            w.write_all(&data).await?;
        }
        let mut ack = [0u8; 1];
        r.read_exact(&mut ack).await?;
        Ok(mib_per_s(frames * frame_bytes as u64, start.elapsed()))
    }
}

const RAW_PING: u8 = 1;
const RAW_BULK: u8 = 2;

#[derive(Debug, Clone, Copy)]
struct RawShape {
    frames: u64,
    frame_bytes: usize,
}

/// The raw server. The first byte of a stream says what it carries: `RAW_PING` streams then
/// loop on ping-sized requests answered with reply-sized replies; `RAW_BULK` streams loop on
/// `frames` payloads answered with one byte. Sizes are fixed per run, so no header is needed
/// and every request is one `read_exact`, the least a server can do.
async fn raw_server(mut w: BoxWrite, mut r: BoxRead, shape: RawShape) {
    let Ok((request_bytes, reply_bytes)) = ping_sizes() else {
        return;
    };
    let mut kind = [0u8; 1];
    if r.read_exact(&mut kind).await.is_err() {
        return;
    }
    match kind[0] {
        RAW_PING => {
            let mut request = vec![0u8; request_bytes];
            let reply = vec![0u8; reply_bytes];
            while r.read_exact(&mut request).await.is_ok() {
                if w.write_all(&reply).await.is_err() {
                    return;
                }
            }
        }
        RAW_BULK => {
            let mut sink = vec![0u8; shape.frame_bytes];
            loop {
                for _ in 0..shape.frames {
                    if r.read_exact(&mut sink).await.is_err() {
                        return;
                    }
                }
                if w.write_all(&[1]).await.is_err() {
                    return;
                }
            }
        }
        _ => {}
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Datagram size for the UDP throughput context: the largest that fits common limits.
const UDP_DATAGRAM: usize = 60_000;

/// Plain UDP: echo of ping-sized datagrams, and stop-and-wait throughput of 60,000-byte
/// datagrams (each answered by a one-byte datagram). Loopback does not drop these in
/// practice; a lost datagram would show as a 1 s sample.
async fn udp_baseline(
    options: &Options,
    request_bytes: usize,
    reply_bytes: usize,
) -> anyhow::Result<(Rtt, f64)> {
    let server = UdpSocket::bind("127.0.0.1:0").await?;
    let server_addr: SocketAddr = server.local_addr()?;
    let server = Arc::new(server);
    let task = AbortOnDrop(tokio::spawn({
        let server = server.clone();
        async move {
            let mut buf = vec![0u8; 65_536];
            let reply = vec![0u8; reply_bytes];
            while let Ok((n, from)) = server.recv_from(&mut buf).await {
                let answer: &[u8] = if n == UDP_DATAGRAM { &[1] } else { &reply };
                let _ = server.send_to(answer, from).await;
            }
        }
    }));
    let client = UdpSocket::bind("127.0.0.1:0").await?;
    client.connect(server_addr).await?;
    let request = vec![0u8; request_bytes];
    let mut buf = vec![0u8; 65_536];
    let timeout = Duration::from_secs(1);
    let mut samples = Vec::with_capacity(options.rtt_iterations);
    for _ in 0..options.rtt_iterations {
        let start = Instant::now();
        client.send(&request).await?;
        let _ = tokio::time::timeout(timeout, client.recv(&mut buf)).await;
        samples.push(start.elapsed());
    }
    let datagram = vec![0u8; UDP_DATAGRAM];
    let count = (options.bulk_bytes / UDP_DATAGRAM as u64).max(1);
    let start = Instant::now();
    for _ in 0..count {
        client.send(&datagram).await?;
        let _ = tokio::time::timeout(timeout, client.recv(&mut buf)).await;
    }
    let throughput = mib_per_s(count * UDP_DATAGRAM as u64, start.elapsed());
    drop(task);
    Ok((percentiles(samples), throughput))
}

pub(crate) fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string());
    format!(
        "{cpu}, {cores} cores available, load average {load} at the end of the run, loopback, {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        writeln!(f, "Machine: {}", self.machine)?;
        writeln!(
            f,
            "Sync call: Ping ({} B request frame, {} B reply frame), {} round trips each; \
             bulk: {} MiB per round as {} KiB MemcpyHtoD frames, median of {} rounds; raw and \
             gpufn alternate, each going first in every other round.",
            self.request_bytes,
            self.reply_bytes,
            o.rtt_iterations,
            o.bulk_bytes >> 20,
            o.bulk_frame >> 10,
            o.rounds
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "| transport | RTT p50 / p99 raw (µs) | RTT p50 / p99 gpufn (µs) | p50 overhead | \
             CPU per call raw / gpufn (µs) | bulk raw (MiB/s) | bulk gpufn (MiB/s) | \
             gpufn / raw (paired) | MiB per CPU-s raw / gpufn |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|---|---|---|")?;
        for row in &self.rows {
            let (raw, gpufn) = (&row.raw, &row.gpufn);
            writeln!(
                f,
                "| {} | {:.1} / {:.1} | {:.1} / {:.1} | {:+.1}% | {:.1} / {:.1} | {:.0} | {:.0} \
                 | {:.0}% | {:.0} / {:.0} |",
                row.kind.name(),
                raw.rtt.p50_us,
                raw.rtt.p99_us,
                gpufn.rtt.p50_us,
                gpufn.rtt.p99_us,
                row.rtt_overhead() * 100.0,
                raw.cpu_per_call_us,
                gpufn.cpu_per_call_us,
                raw.bulk,
                gpufn.bulk,
                row.bulk_ratio * 100.0,
                raw.mib_per_cpu_s,
                gpufn.mib_per_cpu_s,
            )?;
            if let Some((rtt, throughput)) = row.udp {
                writeln!(
                    f,
                    "| (plain UDP datagrams, context) | {:.1} / {:.1} | – | – | – | \
                     {:.0} (stop-and-wait, {} B) | – | – | – |",
                    rtt.p50_us, rtt.p99_us, throughput, UDP_DATAGRAM
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The benchmark runs end to end on every transport and reports sane numbers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reports_every_transport() {
        let options = Options {
            rtt_iterations: 40,
            bulk_bytes: 2 << 20,
            bulk_frame: 256 << 10,
            rounds: 2,
            scratch_dir: std::env::temp_dir()
                .join(format!("gpufn-bench-test-{}", std::process::id())),
            ..Options::default()
        };
        let report = run(&options).await.unwrap();
        assert_eq!(report.rows.len(), 3);
        for row in &report.rows {
            for side in [&row.raw, &row.gpufn] {
                assert!(side.rtt.p50_us > 0.0 && side.bulk > 0.0 && side.cpu_per_call_us > 0.0);
            }
        }
        let table = report.to_string();
        for name in ["QUIC", "TCP", "Unix socket", "plain UDP"] {
            assert!(table.contains(name), "{table}");
        }
    }
}
