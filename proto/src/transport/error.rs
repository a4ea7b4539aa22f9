//! Errors of the transport layer. Each names the address or file involved and what to do.

use std::io;
use std::path::PathBuf;

use super::tls::CertFingerprint;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot connect to {address}: {source} — {}", connect_hint(.source))]
    Connect { address: String, source: io::Error },

    #[error("cannot listen on {address}: {source} — {}", bind_hint(.source))]
    Bind { address: String, source: io::Error },

    #[error("cannot resolve {address}: {reason} — check the host name")]
    Resolve { address: String, reason: String },

    #[error(
        "server certificate fingerprint mismatch at {address}: expected {expected}, got {got} — \
         the server has a different certificate; take the cert-sha256 the worker or gateway \
         prints at start, or fix the address"
    )]
    FingerprintMismatch {
        address: String,
        expected: CertFingerprint,
        got: CertFingerprint,
    },

    #[error(
        "{address} gives no way to trust the server's certificate — add \
         ?cert-sha256=FINGERPRINT (printed by the worker or gateway at start) to the address, \
         or pass a CA certificate file"
    )]
    NoTrustAnchor { address: String },

    #[error("QUIC handshake with {address} failed: {reason}")]
    Handshake { address: String, reason: String },

    #[error("certificate file {}: {reason}", .path.display())]
    Certificate { path: PathBuf, reason: String },

    #[error("TLS configuration error: {0}")]
    Tls(String),

    #[error("connection to {peer} closed: {reason}")]
    Closed { peer: String, reason: String },

    #[error("{0}")]
    Unsupported(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn connect_hint(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => "is a gpufn worker listening there?",
        io::ErrorKind::NotFound => "no socket at that path; is a gpufn worker running there?",
        io::ErrorKind::PermissionDenied => "the socket's permissions do not allow this user",
        io::ErrorKind::TimedOut => {
            "nothing answered: is a gpufn worker listening there, and do firewalls let it through?"
        }
        _ => "check the address and that the peer is running",
    }
}

fn bind_hint(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::AddrInUse => "another process listens there; stop it or pick another port",
        io::ErrorKind::PermissionDenied => "choose a port above 1023 or a writable socket path",
        io::ErrorKind::AddrNotAvailable => "that IP address is not on this machine",
        io::ErrorKind::NotFound => "the socket's directory does not exist",
        _ => "check the address",
    }
}

impl TransportError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        TransportError::Io {
            context: context.into(),
            source,
        }
    }
}
