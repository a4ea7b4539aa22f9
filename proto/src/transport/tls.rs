//! TLS for the QUIC transport: the development certificate (rcgen, kept on disk), certificate
//! pinning by SHA-256 fingerprint, and the rustls configurations (ring provider, TLS 1.3 only).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use super::TransportError;

/// ALPN protocol id of gpufn's wire protocol, version 1.
pub const ALPN: &[u8] = b"gpufn/1";

/// File names of the development certificate inside the directory the caller chooses.
pub const DEV_CERT_FILE: &str = "quic-cert.pem";
pub const DEV_KEY_FILE: &str = "quic-key.pem";

/// The SHA-256 fingerprint of a DER certificate, written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint(pub [u8; 32]);

impl CertFingerprint {
    pub fn of(der: &[u8]) -> Self {
        CertFingerprint(Sha256::digest(der).into())
    }
}

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertFingerprint({self})")
    }
}

/// Why a fingerprint string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a certificate SHA-256 fingerprint: expected 64 hex digits \
     (colons allowed), as printed by the gpufn worker or gateway"
)]
pub struct FingerprintParseError(pub String);

impl FromStr for CertFingerprint {
    type Err = FingerprintParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
        let fail = || FingerprintParseError(s.to_string());
        if digits.len() != 64 {
            return Err(fail());
        }
        let mut out = [0u8; 32];
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|_| fail())?;
            out[i] = u8::from_str_radix(hex, 16).map_err(|_| fail())?;
        }
        Ok(CertFingerprint(out))
    }
}

/// The certificate a QUIC listener presents.
#[derive(Debug, Clone)]
pub enum ServerTls {
    /// A self-signed development certificate kept in `dir` (created on first use, reused after
    /// restarts so pinned fingerprints stay valid). Clients pin it with `?cert-sha256=`.
    DevCertificate { dir: PathBuf },
    /// A certificate chain and private key from PEM files, for production.
    Pem { cert_chain: PathBuf, key: PathBuf },
}

/// The ring provider: the only crypto provider gpufn uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn cert_error(path: &Path, reason: impl fmt::Display) -> TransportError {
    TransportError::Certificate {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Loads the development certificate from `dir`, creating it (and `dir`) when absent.
pub fn load_or_create_dev_certificate(
    dir: &Path,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TransportError> {
    let cert_path = dir.join(DEV_CERT_FILE);
    let key_path = dir.join(DEV_KEY_FILE);
    if !cert_path.exists() || !key_path.exists() {
        create_dev_certificate(dir, &cert_path, &key_path)?;
    }
    let chain = load_cert_chain(&cert_path)?;
    let cert = chain
        .into_iter()
        .next()
        .ok_or_else(|| cert_error(&cert_path, "no certificate in the file"))?;
    Ok((cert, load_key(&key_path)?))
}

fn create_dev_certificate(
    dir: &Path,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), TransportError> {
    fs::create_dir_all(dir)
        .map_err(|e| cert_error(dir, format!("cannot create directory: {e}")))?;
    let names = vec!["localhost".to_string(), "gpufn.invalid".to_string()];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| cert_error(cert_path, format!("cannot generate a certificate: {e}")))?;
    write_private(key_path, generated.signing_key.serialize_pem().as_bytes())?;
    fs::write(cert_path, generated.cert.pem())
        .map_err(|e| cert_error(cert_path, format!("cannot write: {e}")))?;
    tracing::info!(cert = %cert_path.display(), "created a self-signed development certificate");
    Ok(())
}

/// Writes a file readable only by its owner (the private key).
fn write_private(path: &Path, contents: &[u8]) -> Result<(), TransportError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| cert_error(path, format!("cannot write: {e}")))?;
    file.write_all(contents)
        .map_err(|e| cert_error(path, format!("cannot write: {e}")))
}

fn load_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let pem = fs::read(path).map_err(|e| cert_error(path, format!("cannot read: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(path, format!("not a PEM certificate file: {e}")))?;
    if chain.is_empty() {
        return Err(cert_error(path, "no CERTIFICATE block in the file"));
    }
    Ok(chain)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    let pem = fs::read(path).map_err(|e| cert_error(path, format!("cannot read: {e}")))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| cert_error(path, format!("no usable PEM private key: {e}")))
}

/// The server's rustls configuration and the fingerprint of its leaf certificate.
pub fn server_crypto(
    tls: &ServerTls,
) -> Result<(rustls::ServerConfig, CertFingerprint), TransportError> {
    let (chain, key) = match tls {
        ServerTls::DevCertificate { dir } => {
            let (cert, key) = load_or_create_dev_certificate(dir)?;
            (vec![cert], key)
        }
        ServerTls::Pem { cert_chain, key } => (load_cert_chain(cert_chain)?, load_key(key)?),
    };
    let fingerprint = CertFingerprint::of(&chain[0]);
    let cert_path = match tls {
        ServerTls::DevCertificate { dir } => dir.join(DEV_CERT_FILE),
        ServerTls::Pem { cert_chain, .. } => cert_chain.clone(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| cert_error(&cert_path, format!("certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok((config, fingerprint))
}

/// What the client learns when pinning fails, read back after the failed handshake so the
/// error names both fingerprints.
pub type MismatchSlot = Arc<Mutex<Option<CertFingerprint>>>;

/// How a client decides to trust the server.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// Accept exactly the certificate with this SHA-256 fingerprint.
    Pinned(CertFingerprint),
    /// Accept certificates issued (for the server name) by the CA in this PEM file.
    CaFile(PathBuf),
}

/// The client's rustls configuration for `trust`. For pinning, the returned slot receives the
/// fingerprint the server presented when it did not match.
pub fn client_crypto(
    trust: &ServerTrust,
) -> Result<(rustls::ClientConfig, MismatchSlot), TransportError> {
    let provider = provider();
    let mismatch = MismatchSlot::default();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut config = match trust {
        ServerTrust::Pinned(expected) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertVerifier {
                expected: *expected,
                provider,
                mismatch: mismatch.clone(),
            }))
            .with_no_client_auth(),
        ServerTrust::CaFile(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in load_cert_chain(path)? {
                roots
                    .add(cert)
                    .map_err(|e| cert_error(path, format!("not a usable CA certificate: {e}")))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok((config, mismatch))
}

/// Trusts exactly one certificate, identified by its SHA-256 fingerprint. The handshake
/// signatures are still verified with the provider's algorithms, so the server must hold the
/// certificate's private key. Server name and validity dates are not checked: the pin is
/// the identity (a self-signed development certificate has no meaningful issuer).
#[derive(Debug)]
struct PinnedCertVerifier {
    expected: CertFingerprint,
    provider: Arc<CryptoProvider>,
    mismatch: MismatchSlot,
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = CertFingerprint::of(end_entity);
        if got == self.expected {
            return Ok(ServerCertVerified::assertion());
        }
        if let Ok(mut slot) = self.mismatch.lock() {
            *slot = Some(got);
        }
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dev_certificate_survives_restarts() {
        let dir = std::env::temp_dir().join(format!("gpufn-tls-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let tls = ServerTls::DevCertificate { dir: dir.clone() };
        let (_, first) = server_crypto(&tls).unwrap();
        let (_, second) = server_crypto(&tls).unwrap();
        assert_eq!(
            first, second,
            "a restart must keep the pinned fingerprint valid"
        );
        let mode = fs::metadata(dir.join(DEV_KEY_FILE)).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077, 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn broken_pem_names_the_file() {
        let dir = std::env::temp_dir().join(format!("gpufn-tls-bad-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(DEV_CERT_FILE), "garbage").unwrap();
        fs::write(dir.join(DEV_KEY_FILE), "garbage").unwrap();
        let err = server_crypto(&ServerTls::DevCertificate { dir: dir.clone() }).unwrap_err();
        assert!(err.to_string().contains(DEV_CERT_FILE), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fingerprint_accepts_colons_and_rejects_junk() {
        let plain = "0123456789abcdef".repeat(4);
        let fp: CertFingerprint = plain.parse().unwrap();
        assert_eq!(fp.to_string(), plain);
        let colons: Vec<String> = fp.0.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(colons.join(":").parse::<CertFingerprint>().unwrap(), fp);
        assert!("abc".parse::<CertFingerprint>().is_err());
        assert!("zz".repeat(32).parse::<CertFingerprint>().is_err());
    }

    proptest! {
        #[test]
        fn fingerprint_parse_never_panics(s in ".*") {
            let _ = s.parse::<CertFingerprint>();
        }

        #[test]
        fn fingerprint_display_round_trips(bytes: [u8; 32]) {
            let fp = CertFingerprint(bytes);
            prop_assert_eq!(fp.to_string().parse::<CertFingerprint>().unwrap(), fp);
        }
    }
}
