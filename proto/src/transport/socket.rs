//! TCP and Unix-socket connections. A connection is a group of sockets: the first one a
//! client opens (the control socket) establishes the connection and receives its id; every
//! stream is a further socket that starts with a preamble naming that id. The listener sorts
//! incoming sockets into their connections. The control socket's end ends the connection.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Address, RecvStream, SendStream, TransportError};

/// Preamble: magic, version, kind, then a 16-byte connection id (zero for `Connect`).
pub const PREAMBLE_LEN: usize = 22;
const MAGIC: [u8; 4] = *b"gpfn";
const VERSION: u8 = 1;
const KIND_CONNECT: u8 = 1;
const KIND_STREAM: u8 = 2;

/// A peer that opens a socket and sends nothing is dropped after this long.
const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Sockets whose preamble is still being read, at most (further ones are closed at once).
const MAX_PENDING_SOCKETS: usize = 256;
/// Live connections per listener, at most.
const MAX_CONNECTIONS: usize = 4096;
/// Streams opened by a client but not yet taken by `accept_stream`, per connection.
const STREAM_BACKLOG: usize = 64;
/// Connections established but not yet taken by `Listener::accept`.
const CONNECTION_BACKLOG: usize = 64;

pub type ConnectionId = [u8; 16];

/// The first bytes of every socket a client opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preamble {
    /// Establish a new connection; the server answers with its id.
    Connect,
    /// A new stream of an established connection.
    Stream(ConnectionId),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreambleError {
    #[error("not a gpufn socket (wrong magic bytes)")]
    BadMagic,
    #[error("unsupported preamble version {0}; this build speaks version {VERSION}")]
    UnsupportedVersion(u8),
    #[error("unknown socket kind {0}")]
    UnknownKind(u8),
}

pub fn encode_preamble(preamble: Preamble) -> [u8; PREAMBLE_LEN] {
    let mut out = [0u8; PREAMBLE_LEN];
    out[..4].copy_from_slice(&MAGIC);
    out[4] = VERSION;
    match preamble {
        Preamble::Connect => out[5] = KIND_CONNECT,
        Preamble::Stream(id) => {
            out[5] = KIND_STREAM;
            out[6..].copy_from_slice(&id);
        }
    }
    out
}

pub fn decode_preamble(bytes: &[u8; PREAMBLE_LEN]) -> Result<Preamble, PreambleError> {
    if bytes[..4] != MAGIC {
        return Err(PreambleError::BadMagic);
    }
    if bytes[4] != VERSION {
        return Err(PreambleError::UnsupportedVersion(bytes[4]));
    }
    match bytes[5] {
        KIND_CONNECT => Ok(Preamble::Connect),
        KIND_STREAM => {
            let mut id = [0u8; 16];
            id.copy_from_slice(&bytes[6..]);
            Ok(Preamble::Stream(id))
        }
        kind => Err(PreambleError::UnknownKind(kind)),
    }
}

/// One connected socket of either family.
pub(crate) enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    async fn connect(address: &Address, timeout: Duration) -> Result<Socket, TransportError> {
        let connect_error = |source| TransportError::Connect {
            address: address.to_string(),
            source,
        };
        let attempt = async {
            match address {
                Address::Tcp { host, port } => {
                    let stream = TcpStream::connect((host.as_str(), *port)).await?;
                    stream.set_nodelay(true)?;
                    Ok(Socket::Tcp(stream))
                }
                Address::Unix { path } => {
                    let stream = UnixStream::connect(path).await?;
                    widen_unix_buffers(&stream);
                    Ok(Socket::Unix(stream))
                }
                Address::Quic { .. } => Err(io::Error::other("not a socket address")),
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result.map_err(connect_error),
            Err(_) => Err(connect_error(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            ))),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.write_all(bytes).await,
            Socket::Unix(s) => s.write_all(bytes).await,
        }
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.read_exact(buf).await.map(|_| ()),
            Socket::Unix(s) => s.read_exact(buf).await.map(|_| ()),
        }
    }

    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf).await,
            Socket::Unix(s) => s.read(buf).await,
        }
    }

    fn into_stream(self) -> (SendStream, RecvStream) {
        match self {
            Socket::Tcp(s) => {
                let (read, write) = s.into_split();
                (SendStream::Tcp(write), RecvStream::Tcp(read))
            }
            Socket::Unix(s) => {
                let (read, write) = s.into_split();
                (SendStream::Unix(write), RecvStream::Unix(read))
            }
        }
    }
}

/// The client side: the control socket plus what it takes to open further stream sockets.
pub(crate) struct SocketClient {
    address: Address,
    id: ConnectionId,
    connect_timeout: Duration,
    control: Mutex<Option<Socket>>,
}

impl SocketClient {
    pub(crate) async fn connect(
        address: &Address,
        connect_timeout: Duration,
    ) -> Result<Self, TransportError> {
        let mut control = Socket::connect(address, connect_timeout).await?;
        let handshake = async {
            control
                .write_all(&encode_preamble(Preamble::Connect))
                .await?;
            let mut id = [0u8; 16];
            control.read_exact(&mut id).await?;
            Ok::<_, io::Error>(id)
        };
        let id = match tokio::time::timeout(connect_timeout, handshake).await {
            Ok(Ok(id)) => id,
            Ok(Err(e)) => {
                return Err(TransportError::Handshake {
                    address: address.to_string(),
                    reason: format!(
                        "{e}; the server closed the socket: is it a gpufn listener \
                         (and of the same version), and not overloaded?"
                    ),
                });
            }
            Err(_) => {
                return Err(TransportError::Handshake {
                    address: address.to_string(),
                    reason: format!(
                        "no answer within {connect_timeout:?}: is it a gpufn listener?"
                    ),
                });
            }
        };
        Ok(SocketClient {
            address: address.clone(),
            id,
            connect_timeout,
            control: Mutex::new(Some(control)),
        })
    }

    pub(crate) async fn open_stream(&self) -> Result<(SendStream, RecvStream), TransportError> {
        if self.control.lock().map(|c| c.is_none()).unwrap_or(true) {
            return Err(self.closed("closed by this side"));
        }
        let mut socket = Socket::connect(&self.address, self.connect_timeout).await?;
        socket
            .write_all(&encode_preamble(Preamble::Stream(self.id)))
            .await
            .map_err(|e| {
                TransportError::io(format!("cannot open a stream to {}", self.address), e)
            })?;
        Ok(socket.into_stream())
    }

    /// Ends the connection: the server sees the control socket close.
    pub(crate) fn close(&self) {
        if let Ok(mut control) = self.control.lock() {
            control.take();
        }
    }

    fn closed(&self, reason: &str) -> TransportError {
        TransportError::Closed {
            peer: self.address.to_string(),
            reason: reason.to_string(),
        }
    }
}

type Registry = Arc<Mutex<HashMap<ConnectionId, mpsc::Sender<Socket>>>>;

/// The server side of one connection: the stream sockets the listener sorted into it.
pub(crate) struct SocketServerConnection {
    id: ConnectionId,
    peer: String,
    streams: tokio::sync::Mutex<mpsc::Receiver<Socket>>,
    registry: Registry,
    /// Dropping this tells the control-socket watcher that the server let go.
    _released: oneshot::Sender<()>,
}

impl SocketServerConnection {
    pub(crate) fn peer(&self) -> &str {
        &self.peer
    }

    pub(crate) async fn accept_stream(&self) -> Result<(SendStream, RecvStream), TransportError> {
        match self.streams.lock().await.recv().await {
            Some(socket) => Ok(socket.into_stream()),
            None => Err(TransportError::Closed {
                peer: self.peer.clone(),
                reason: "the client closed the connection".to_string(),
            }),
        }
    }

    pub(crate) fn close(&self) {
        remove(&self.registry, &self.id);
    }
}

impl Drop for SocketServerConnection {
    fn drop(&mut self) {
        remove(&self.registry, &self.id);
    }
}

fn remove(registry: &Registry, id: &ConnectionId) {
    if let Ok(mut map) = registry.lock() {
        map.remove(id);
    }
}

/// Socket buffer size asked for on Unix sockets (the kernel caps it at `net.core.wmem_max`
/// and `rmem_max`).
pub const UNIX_BUFFER_BYTES: usize = 4 << 20;

/// Unix stream sockets start with about 200 KiB of buffer, and nothing grows it (TCP tunes
/// its own). A copy of many MiB then moves in 200 KiB steps, each costing both sides a
/// wake-up; a few MiB of buffer lets it flow. Failing to widen is not an error: the socket
/// works, only slower.
pub fn widen_unix_buffers(stream: &UnixStream) {
    let socket = socket2::SockRef::from(stream);
    let _ = socket.set_send_buffer_size(UNIX_BUFFER_BYTES);
    let _ = socket.set_recv_buffer_size(UNIX_BUFFER_BYTES);
}

enum RawListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl RawListener {
    async fn accept(&self) -> io::Result<(Socket, String)> {
        match self {
            RawListener::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                stream.set_nodelay(true)?;
                Ok((Socket::Tcp(stream), format!("tcp://{peer}")))
            }
            RawListener::Unix(l) => {
                let (stream, _) = l.accept().await?;
                widen_unix_buffers(&stream);
                Ok((Socket::Unix(stream), "unix socket peer".to_string()))
            }
        }
    }
}

pub(crate) struct SocketListener {
    connections: tokio::sync::Mutex<mpsc::Receiver<SocketServerConnection>>,
    local: Address,
    accept_task: JoinHandle<()>,
    unix_path: Option<PathBuf>,
}

impl SocketListener {
    pub(crate) async fn bind(address: &Address) -> Result<Self, TransportError> {
        let bind_error = |source| TransportError::Bind {
            address: address.to_string(),
            source,
        };
        let (raw, local, unix_path) = match address {
            Address::Tcp { host, port } => {
                let listener = TcpListener::bind((host.as_str(), *port))
                    .await
                    .map_err(bind_error)?;
                let bound = listener.local_addr().map_err(bind_error)?;
                let local = Address::Tcp {
                    host: bound.ip().to_string(),
                    port: bound.port(),
                };
                (RawListener::Tcp(listener), local, None)
            }
            Address::Unix { path } => {
                remove_stale_socket(path).await.map_err(bind_error)?;
                let listener = UnixListener::bind(path).map_err(bind_error)?;
                (
                    RawListener::Unix(listener),
                    address.clone(),
                    Some(path.clone()),
                )
            }
            Address::Quic { .. } => {
                return Err(TransportError::Unsupported(format!(
                    "{address} is a QUIC address, not a socket address"
                )));
            }
        };
        let (connection_tx, connection_rx) = mpsc::channel(CONNECTION_BACKLOG);
        let accept_task = tokio::spawn(accept_loop(raw, connection_tx));
        Ok(SocketListener {
            connections: tokio::sync::Mutex::new(connection_rx),
            local,
            accept_task,
            unix_path,
        })
    }

    pub(crate) fn local_address(&self) -> &Address {
        &self.local
    }

    pub(crate) async fn accept(&self) -> Result<SocketServerConnection, TransportError> {
        self.connections
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| TransportError::Closed {
                peer: self.local.to_string(),
                reason: "the listener stopped".to_string(),
            })
    }
}

impl Drop for SocketListener {
    fn drop(&mut self) {
        self.accept_task.abort();
        if let Some(path) = &self.unix_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A socket file left by a process that died is removed; one that a live process answers on
/// is left alone (binding then fails with "address in use").
async fn remove_stale_socket(path: &Path) -> io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    match UnixStream::connect(path).await {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "a process already listens on this socket",
        )),
        Err(_) => std::fs::remove_file(path),
    }
}

async fn accept_loop(listener: RawListener, connections: mpsc::Sender<SocketServerConnection>) {
    let registry = Registry::default();
    let pending = Arc::new(Semaphore::new(MAX_PENDING_SOCKETS));
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!("accepting a socket failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many sockets still owe their preamble; closing this one");
            continue;
        };
        let registry = registry.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            handle_socket(socket, peer, registry, connections, permit).await;
        });
    }
}

async fn handle_socket(
    mut socket: Socket,
    peer: String,
    registry: Registry,
    connections: mpsc::Sender<SocketServerConnection>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut bytes = [0u8; PREAMBLE_LEN];
    match tokio::time::timeout(PREAMBLE_TIMEOUT, socket.read_exact(&mut bytes)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(%peer, "socket closed before its preamble: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "no preamble within {PREAMBLE_TIMEOUT:?}; closing the socket");
            return;
        }
    }
    drop(permit);
    match decode_preamble(&bytes) {
        Err(e) => tracing::warn!(%peer, "dropping socket: {e}"),
        Ok(Preamble::Stream(id)) => route_stream(socket, &peer, &id, &registry),
        Ok(Preamble::Connect) => establish(socket, peer, registry, connections).await,
    }
}

fn route_stream(socket: Socket, peer: &str, id: &ConnectionId, registry: &Registry) {
    let sender = registry.lock().ok().and_then(|map| map.get(id).cloned());
    let Some(sender) = sender else {
        tracing::warn!(%peer, "dropping stream socket for an unknown or closed connection");
        return;
    };
    if let Err(e) = sender.try_send(socket) {
        let why = match e {
            mpsc::error::TrySendError::Full(_) => "too many streams waiting to be accepted",
            mpsc::error::TrySendError::Closed(_) => "the connection is closed",
        };
        tracing::warn!(%peer, "dropping stream socket: {why}");
    }
}

async fn establish(
    mut control: Socket,
    peer: String,
    registry: Registry,
    connections: mpsc::Sender<SocketServerConnection>,
) {
    let id = match new_connection_id() {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(%peer, "cannot draw a connection id: {e:?}");
            return;
        }
    };
    let (stream_tx, stream_rx) = mpsc::channel(STREAM_BACKLOG);
    {
        let Ok(mut map) = registry.lock() else { return };
        if map.len() >= MAX_CONNECTIONS {
            tracing::warn!(%peer, "refusing connection: {MAX_CONNECTIONS} already open");
            return;
        }
        map.insert(id, stream_tx);
    }
    let (released_tx, released_rx) = oneshot::channel();
    let connection = SocketServerConnection {
        id,
        peer: peer.clone(),
        streams: tokio::sync::Mutex::new(stream_rx),
        registry: registry.clone(),
        _released: released_tx,
    };
    if let Err(e) = control.write_all(&id).await {
        tracing::debug!(%peer, "client left during the handshake: {e}");
        return;
    }
    if connections.try_send(connection).is_err() {
        tracing::warn!(%peer, "refusing connection: too many waiting to be accepted");
        return;
    }
    watch_control(control, released_rx).await;
    remove(&registry, &id);
}

/// Waits until the client closes its control socket or the server drops the connection.
async fn watch_control(mut control: Socket, released: oneshot::Receiver<()>) {
    let mut buf = [0u8; 64];
    tokio::select! {
        read = control.read(&mut buf) => {
            if let Ok(n) = read && n > 0 {
                tracing::warn!("unexpected bytes on a control socket; ending the connection");
            }
        }
        _ = released => {}
    }
}

/// Connection ids are unguessable: knowing one lets a socket join that connection.
fn new_connection_id() -> Result<ConnectionId, rustls::crypto::GetRandomFailed> {
    let mut id = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut id)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[tokio::test]
    async fn unix_sockets_get_wide_buffers() {
        let (a, _b) = UnixStream::pair().unwrap();
        let before = socket2::SockRef::from(&a).send_buffer_size().unwrap();
        widen_unix_buffers(&a);
        let after = socket2::SockRef::from(&a).send_buffer_size().unwrap();
        // The kernel caps the request at net.core.wmem_max (and reports twice what it keeps).
        let cap = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(0);
        assert!(
            after >= before && after >= UNIX_BUFFER_BYTES.min(cap),
            "send buffer {before} -> {after} bytes (wmem_max {cap})"
        );
    }

    #[test]
    fn preamble_round_trips() {
        for p in [Preamble::Connect, Preamble::Stream([7; 16])] {
            assert_eq!(decode_preamble(&encode_preamble(p)), Ok(p));
        }
    }

    #[test]
    fn foreign_bytes_are_rejected() {
        let mut http = [0u8; PREAMBLE_LEN];
        http[..PREAMBLE_LEN].copy_from_slice(b"GET / HTTP/1.1\r\nHost: ");
        assert_eq!(decode_preamble(&http), Err(PreambleError::BadMagic));
        let mut future = encode_preamble(Preamble::Connect);
        future[4] = 9;
        assert_eq!(
            decode_preamble(&future),
            Err(PreambleError::UnsupportedVersion(9))
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes: [u8; PREAMBLE_LEN]) {
            let _ = decode_preamble(&bytes);
        }
    }
}
