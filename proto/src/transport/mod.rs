//! Transports: QUIC, TCP and Unix-domain sockets behind one abstraction.
//!
//! Modelled on QUIC: a [`Connection`] carries many independent bidirectional byte streams, so
//! a bulk copy on one stream never blocks small calls on another. On TCP and Unix sockets each
//! stream is its own socket (see [`socket`]); on QUIC each is a QUIC stream.
//!
//! ```no_run
//! # async fn demo() -> Result<(), gpufn_proto::transport::TransportError> {
//! use gpufn_proto::transport::{connect, Address, ClientOptions};
//! let address: Address = "tcp://127.0.0.1:7000".parse().unwrap();
//! let connection = connect(&address, &ClientOptions::default()).await?;
//! let (mut send, mut recv) = connection.open_stream().await?;
//! # Ok(()) }
//! ```

mod address;
mod error;
pub mod quic;
pub mod socket;
pub mod tls;

use std::io::{self, IoSlice};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

pub use address::{ACCEPTED_FORMS, Address, AddressParseError};
pub use error::TransportError;
pub use tls::{CertFingerprint, ServerTls};

/// How a listener is set up. Only QUIC uses the TLS settings; TCP and Unix sockets carry
/// plain bytes (use them on trusted networks or the same host).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub tls: ServerTls,
}

impl ServerOptions {
    /// A self-signed development certificate kept in `dir` (for example the data directory).
    pub fn dev_certificate_in(dir: impl Into<PathBuf>) -> Self {
        ServerOptions {
            tls: ServerTls::DevCertificate { dir: dir.into() },
        }
    }
}

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// For QUIC addresses without `?cert-sha256=`: trust servers whose certificate this CA
    /// (PEM file) issued for the server name.
    pub ca_file: Option<PathBuf>,
    /// The name the server certificate must carry (CA mode); default: the address's host.
    pub server_name: Option<String>,
    /// Give up connecting after this long.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            ca_file: None,
            server_name: None,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Listens for connections on one address. Dropping it stops accepting connections;
/// established connections keep their open streams.
pub struct Listener {
    inner: ListenerInner,
}

enum ListenerInner {
    Quic(quic::QuicListener),
    Socket(socket::SocketListener),
}

impl Listener {
    /// Starts listening. Port 0 picks a free port; see [`Listener::local_address`].
    pub async fn bind(address: &Address, options: &ServerOptions) -> Result<Self, TransportError> {
        let inner = match address {
            Address::Quic { .. } => {
                ListenerInner::Quic(quic::QuicListener::bind(address, &options.tls).await?)
            }
            Address::Tcp { .. } | Address::Unix { .. } => {
                ListenerInner::Socket(socket::SocketListener::bind(address).await?)
            }
        };
        Ok(Listener { inner })
    }

    /// The address clients use, with the real port and, for QUIC, the certificate pin.
    pub fn local_address(&self) -> &Address {
        match &self.inner {
            ListenerInner::Quic(l) => l.local_address(),
            ListenerInner::Socket(l) => l.local_address(),
        }
    }

    /// The SHA-256 fingerprint of the QUIC certificate; `None` for TCP and Unix sockets.
    pub fn cert_fingerprint(&self) -> Option<CertFingerprint> {
        match &self.inner {
            ListenerInner::Quic(l) => Some(l.fingerprint()),
            ListenerInner::Socket(_) => None,
        }
    }

    /// The next established connection.
    pub async fn accept(&self) -> Result<Connection, TransportError> {
        let inner = match &self.inner {
            ListenerInner::Quic(l) => ConnectionInner::Quic {
                connection: l.accept().await?,
                _endpoint: None,
            },
            ListenerInner::Socket(l) => ConnectionInner::SocketServer(l.accept().await?),
        };
        Ok(Connection { inner })
    }
}

/// Connects to a listener.
pub async fn connect(
    address: &Address,
    options: &ClientOptions,
) -> Result<Connection, TransportError> {
    let inner = match address {
        Address::Quic { .. } => {
            let (connection, endpoint) = quic::connect(address, options).await?;
            ConnectionInner::Quic {
                connection,
                _endpoint: Some(endpoint),
            }
        }
        Address::Tcp { .. } | Address::Unix { .. } => ConnectionInner::SocketClient(
            socket::SocketClient::connect(address, options.connect_timeout).await?,
        ),
    };
    Ok(Connection { inner })
}

/// A connection between a client and a listener, carrying independent streams.
///
/// Streams are opened by the client. QUIC also lets the server open streams; on TCP and Unix
/// sockets it cannot (the client would have to accept sockets), so there
/// `open_stream` on the server side and `accept_stream` on the client side are errors.
pub struct Connection {
    inner: ConnectionInner,
}

enum ConnectionInner {
    Quic {
        connection: quinn::Connection,
        /// The client's endpoint lives as long as its connection.
        _endpoint: Option<quinn::Endpoint>,
    },
    SocketClient(socket::SocketClient),
    SocketServer(socket::SocketServerConnection),
}

impl Connection {
    /// Opens a new bidirectional stream. On QUIC the peer learns of it with the first byte
    /// written.
    pub async fn open_stream(&self) -> Result<(SendStream, RecvStream), TransportError> {
        match &self.inner {
            ConnectionInner::Quic { connection, .. } => {
                let (send, recv) = connection
                    .open_bi()
                    .await
                    .map_err(|e| quic_closed(connection, e))?;
                Ok((SendStream::Quic(send), RecvStream::Quic(recv)))
            }
            ConnectionInner::SocketClient(client) => client.open_stream().await,
            ConnectionInner::SocketServer(_) => Err(TransportError::Unsupported(
                "the server side of a TCP or Unix-socket connection cannot open streams; \
                 the client opens them"
                    .to_string(),
            )),
        }
    }

    /// Waits for the peer to open a stream. Streams may be accepted in another order than
    /// they were opened (on TCP and Unix sockets each is its own socket): identify a stream
    /// by its first message, not by its position.
    pub async fn accept_stream(&self) -> Result<(SendStream, RecvStream), TransportError> {
        match &self.inner {
            ConnectionInner::Quic { connection, .. } => {
                let (send, recv) = connection
                    .accept_bi()
                    .await
                    .map_err(|e| quic_closed(connection, e))?;
                Ok((SendStream::Quic(send), RecvStream::Quic(recv)))
            }
            ConnectionInner::SocketServer(server) => server.accept_stream().await,
            ConnectionInner::SocketClient(_) => Err(TransportError::Unsupported(
                "the client side of a TCP or Unix-socket connection cannot accept streams; \
                 use QUIC for server-opened streams"
                    .to_string(),
            )),
        }
    }

    /// A description of the peer for logs.
    pub fn peer(&self) -> String {
        match &self.inner {
            ConnectionInner::Quic { connection, .. } => {
                format!("quic://{}", connection.remote_address())
            }
            ConnectionInner::SocketClient(_) => "server".to_string(),
            ConnectionInner::SocketServer(server) => server.peer().to_string(),
        }
    }

    /// Ends the connection now. On QUIC all its streams end with it; on TCP and Unix sockets
    /// no further streams are accepted, and streams already open run until either side closes
    /// them.
    pub fn close(&self) {
        match &self.inner {
            ConnectionInner::Quic { connection, .. } => {
                connection.close(quinn::VarInt::from_u32(0), b"closed")
            }
            ConnectionInner::SocketClient(client) => client.close(),
            ConnectionInner::SocketServer(server) => server.close(),
        }
    }
}

fn quic_closed(connection: &quinn::Connection, e: quinn::ConnectionError) -> TransportError {
    TransportError::Closed {
        peer: format!("quic://{}", connection.remote_address()),
        reason: e.to_string(),
    }
}

/// The sending half of a stream. Write with [`tokio::io::AsyncWriteExt`]; end it with
/// [`SendStream::finish`] so the peer reads end-of-stream.
pub enum SendStream {
    Quic(quinn::SendStream),
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    Unix(tokio::net::unix::OwnedWriteHalf),
}

/// The receiving half of a stream. Read with [`tokio::io::AsyncReadExt`].
pub enum RecvStream {
    Quic(quinn::RecvStream),
    Tcp(tokio::net::tcp::OwnedReadHalf),
    Unix(tokio::net::unix::OwnedReadHalf),
}

impl SendStream {
    /// Ends the stream after the bytes already written; the peer reads end-of-stream.
    pub async fn finish(&mut self) -> Result<(), TransportError> {
        match self {
            SendStream::Quic(s) => s
                .finish()
                .map_err(|e| TransportError::io("cannot finish the stream", io::Error::other(e))),
            SendStream::Tcp(s) => s
                .shutdown()
                .await
                .map_err(|e| TransportError::io("cannot finish the stream", e)),
            SendStream::Unix(s) => s
                .shutdown()
                .await
                .map_err(|e| TransportError::io("cannot finish the stream", e)),
        }
    }
}

impl AsyncWrite for SendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            SendStream::Quic(s) => Pin::new(s).poll_write(cx, buf).map_err(io::Error::from),
            SendStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            SendStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            SendStream::Quic(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            SendStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            SendStream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            SendStream::Quic(s) => s.is_write_vectored(),
            SendStream::Tcp(s) => s.is_write_vectored(),
            SendStream::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SendStream::Quic(s) => Pin::new(s).poll_flush(cx),
            SendStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            SendStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SendStream::Quic(s) => Pin::new(s).poll_shutdown(cx),
            SendStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            SendStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for RecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RecvStream::Quic(s) => Pin::new(s).poll_read(cx, buf),
            RecvStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            RecvStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}
