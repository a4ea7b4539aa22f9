//! The QUIC transport (quinn): a connection carries many independent bidirectional streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{Endpoint, TransportConfig, VarInt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::tls::{self, CertFingerprint, ServerTls, ServerTrust};
use super::{Address, ClientOptions, TransportError};

/// Handshakes finished but not yet taken by `Listener::accept`.
const CONNECTION_BACKLOG: usize = 64;

/// A connection that hears nothing from its peer for this long is closed; keep-alives go out
/// every sixth of it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Overrides [`IDLE_TIMEOUT`] in milliseconds, so tests can check that idle connections stay
/// up without waiting for minutes. Both peers need it: the shorter of their timeouts applies.
pub const IDLE_TIMEOUT_ENV: &str = "GPUFN_QUIC_IDLE_TIMEOUT_MS";

/// The idle timeout: [`IDLE_TIMEOUT`], or what [`IDLE_TIMEOUT_ENV`] says.
fn idle_timeout() -> Duration {
    let Ok(text) = std::env::var(IDLE_TIMEOUT_ENV) else {
        return IDLE_TIMEOUT;
    };
    match text.trim().parse::<u32>() {
        Ok(ms) if ms >= 6 => Duration::from_millis(u64::from(ms)),
        _ => {
            tracing::warn!(
                "{IDLE_TIMEOUT_ENV}={text:?} is not a number of milliseconds of at least 6; \
                 using {IDLE_TIMEOUT:?} (unset it or give e.g. 2000)"
            );
            IDLE_TIMEOUT
        }
    }
}

/// Transport parameters for gpufn's traffic: a few long-lived connections, each with one
/// stream per CUDA stream plus bulk copies.
pub fn transport_config() -> TransportConfig {
    let mut config = TransportConfig::default();
    // A bulk copy on one stream must not stall on flow control: the per-stream window must
    // cover bandwidth × RTT. 16 MiB covers 10 Gbit/s at 13 ms (quinn's default, 1.25 MB,
    // allows about 100 Mbit/s at 100 ms). The connection window bounds the memory a peer can
    // make us buffer across all its streams.
    config.stream_receive_window(VarInt::from_u32(16 << 20));
    config.receive_window(VarInt::from_u32(64 << 20));
    config.send_window(64 << 20);
    // One stream per CUDA stream and per in-flight bulk copy; 100 (the default) is tight.
    config.max_concurrent_bidi_streams(VarInt::from_u32(1024));
    config.max_concurrent_uni_streams(VarInt::from_u32(0));
    // Sessions idle for long stretches (swapped out) but must stay connected; a dead peer is
    // noticed after the idle timeout (30 s).
    let idle = idle_timeout();
    config.keep_alive_interval(Some(idle / 6));
    config.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(idle).unwrap_or(VarInt::from_u32(30_000).into()),
    ));
    config
}

/// A quinn server configuration presenting the certificate `tls` names, with its fingerprint.
pub fn server_config(
    tls: &ServerTls,
) -> Result<(quinn::ServerConfig, CertFingerprint), TransportError> {
    let (crypto, fingerprint) = tls::server_crypto(tls)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    Ok((config, fingerprint))
}

/// A quinn client configuration trusting the server as `trust` says, with the slot that
/// receives a mismatched fingerprint.
pub fn client_config(
    trust: &ServerTrust,
) -> Result<(quinn::ClientConfig, tls::MismatchSlot), TransportError> {
    let (crypto, mismatch) = tls::client_crypto(trust)?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    Ok((config, mismatch))
}

pub(crate) async fn resolve(address: &Address) -> Result<SocketAddr, TransportError> {
    let host_port = address.host_port().unwrap_or_default();
    let resolve_error = |reason: String| TransportError::Resolve {
        address: address.to_string(),
        reason,
    };
    tokio::net::lookup_host(&host_port)
        .await
        .map_err(|e| resolve_error(e.to_string()))?
        .next()
        .ok_or_else(|| resolve_error("the name has no addresses".to_string()))
}

pub(crate) struct QuicListener {
    endpoint: Endpoint,
    connections: tokio::sync::Mutex<mpsc::Receiver<quinn::Connection>>,
    accept_task: JoinHandle<()>,
    local: Address,
    fingerprint: CertFingerprint,
}

impl QuicListener {
    pub(crate) async fn bind(address: &Address, tls: &ServerTls) -> Result<Self, TransportError> {
        let (config, fingerprint) = server_config(tls)?;
        let socket_addr = resolve(address).await?;
        let endpoint =
            Endpoint::server(config, socket_addr).map_err(|source| TransportError::Bind {
                address: address.to_string(),
                source,
            })?;
        let bound = endpoint
            .local_addr()
            .map_err(|source| TransportError::Bind {
                address: address.to_string(),
                source,
            })?;
        let local = Address::Quic {
            host: bound.ip().to_string(),
            port: bound.port(),
            cert_sha256: Some(fingerprint),
        };
        let (tx, rx) = mpsc::channel(CONNECTION_BACKLOG);
        let accept_task = tokio::spawn(accept_loop(endpoint.clone(), tx));
        Ok(QuicListener {
            endpoint,
            connections: tokio::sync::Mutex::new(rx),
            accept_task,
            local,
            fingerprint,
        })
    }

    pub(crate) fn local_address(&self) -> &Address {
        &self.local
    }

    pub(crate) fn fingerprint(&self) -> CertFingerprint {
        self.fingerprint
    }

    pub(crate) async fn accept(&self) -> Result<quinn::Connection, TransportError> {
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

impl Drop for QuicListener {
    fn drop(&mut self) {
        // Stop accepting, but let established connections run on: the endpoint lives on
        // with them, as accepted TCP and Unix-socket connections outlive their listener.
        self.accept_task.abort();
        self.endpoint.set_server_config(None);
    }
}

/// Runs handshakes concurrently so that one slow client cannot hold up the others.
async fn accept_loop(endpoint: Endpoint, connections: mpsc::Sender<quinn::Connection>) {
    while let Some(incoming) = endpoint.accept().await {
        let connections = connections.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(connection) => {
                    if connections.try_send(connection).is_err() {
                        tracing::warn!(%remote, "refusing QUIC connection: too many waiting");
                    }
                }
                Err(e) => tracing::warn!(%remote, "QUIC handshake failed: {e}"),
            }
        });
    }
}

pub(crate) async fn connect(
    address: &Address,
    options: &ClientOptions,
) -> Result<(quinn::Connection, Endpoint), TransportError> {
    let Address::Quic {
        host, cert_sha256, ..
    } = address
    else {
        return Err(TransportError::Unsupported(format!(
            "{address} is not a QUIC address"
        )));
    };
    let trust = match (cert_sha256, &options.ca_file) {
        (Some(pin), _) => ServerTrust::Pinned(*pin),
        (None, Some(ca)) => ServerTrust::CaFile(ca.clone()),
        (None, None) => {
            return Err(TransportError::NoTrustAnchor {
                address: address.to_string(),
            });
        }
    };
    let (config, mismatch) = client_config(&trust)?;
    let remote = resolve(address).await?;
    let local = if remote.is_ipv6() {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
    };
    let endpoint = Endpoint::client(local).map_err(|source| TransportError::Connect {
        address: address.to_string(),
        source,
    })?;
    let server_name = options.server_name.as_deref().unwrap_or(host);
    let connecting = endpoint
        .connect_with(config, remote, server_name)
        .map_err(|e| TransportError::Handshake {
            address: address.to_string(),
            reason: e.to_string(),
        })?;
    let result = tokio::time::timeout(options.connect_timeout, connecting).await;
    let error = match result {
        Ok(Ok(connection)) => return Ok((connection, endpoint)),
        Ok(Err(e)) => e,
        Err(_) => {
            return Err(TransportError::Connect {
                address: address.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no QUIC answer within {:?}", options.connect_timeout),
                ),
            });
        }
    };
    if let (ServerTrust::Pinned(expected), Some(got)) =
        (&trust, mismatch.lock().ok().and_then(|slot| *slot))
    {
        return Err(TransportError::FingerprintMismatch {
            address: address.to_string(),
            expected: *expected,
            got,
        });
    }
    Err(TransportError::Handshake {
        address: address.to_string(),
        reason: error.to_string(),
    })
}
