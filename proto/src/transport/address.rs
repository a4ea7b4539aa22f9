//! Transport addresses: `quic://host:port[?cert-sha256=HEX]`, `tcp://host:port`,
//! `unix:///path/to.sock`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::tls::CertFingerprint;

/// The forms an address may take, quoted in every parse error.
pub const ACCEPTED_FORMS: &str =
    "quic://HOST:PORT[?cert-sha256=HEX], tcp://HOST:PORT or unix:///PATH/TO.sock";

/// Where a gpufn endpoint listens or is reached, and over which transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// QUIC over UDP. `cert_sha256` pins the server certificate by its SHA-256 fingerprint.
    Quic {
        host: String,
        port: u16,
        cert_sha256: Option<CertFingerprint>,
    },
    /// Plain TCP, one socket per stream.
    Tcp { host: String, port: u16 },
    /// Unix-domain socket at a filesystem path, one socket per stream.
    Unix { path: PathBuf },
}

/// Why an address string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address `{input}`: {reason}; accepted forms: {ACCEPTED_FORMS}")]
pub struct AddressParseError {
    pub input: String,
    pub reason: String,
}

impl Address {
    /// The transport's scheme name (`quic`, `tcp` or `unix`).
    pub fn scheme(&self) -> &'static str {
        match self {
            Address::Quic { .. } => "quic",
            Address::Tcp { .. } => "tcp",
            Address::Unix { .. } => "unix",
        }
    }

    /// `host:port` for the network transports, `None` for Unix sockets.
    pub fn host_port(&self) -> Option<String> {
        match self {
            Address::Quic { host, port, .. } | Address::Tcp { host, port } => {
                Some(join_host_port(host, *port))
            }
            Address::Unix { .. } => None,
        }
    }
}

impl FromStr for Address {
    type Err = AddressParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| AddressParseError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = input
            .split_once("://")
            .ok_or_else(|| fail("missing scheme"))?;
        match scheme {
            "tcp" => {
                if rest.contains('?') {
                    return Err(fail("tcp addresses take no options"));
                }
                let (host, port) = split_host_port(rest).map_err(|r| fail(&r))?;
                Ok(Address::Tcp { host, port })
            }
            "quic" => {
                let (authority, query) = match rest.split_once('?') {
                    Some((a, q)) => (a, Some(q)),
                    None => (rest, None),
                };
                let (host, port) = split_host_port(authority).map_err(|r| fail(&r))?;
                let cert_sha256 = match query {
                    None => None,
                    Some(query) => Some(parse_quic_query(query).map_err(|r| fail(&r))?),
                };
                Ok(Address::Quic {
                    host,
                    port,
                    cert_sha256,
                })
            }
            "unix" => {
                if rest.is_empty() {
                    return Err(fail("missing socket path"));
                }
                if !rest.starts_with('/') {
                    return Err(fail(
                        "unix socket paths must be absolute (unix:///path/to.sock, three slashes)",
                    ));
                }
                Ok(Address::Unix {
                    path: PathBuf::from(rest),
                })
            }
            other => Err(fail(&format!("unknown scheme `{other}`"))),
        }
    }
}

fn parse_quic_query(query: &str) -> Result<CertFingerprint, String> {
    let (key, value) = query
        .split_once('=')
        .ok_or_else(|| format!("option `{query}` is not KEY=VALUE"))?;
    if key != "cert-sha256" {
        return Err(format!(
            "unknown option `{key}` (only cert-sha256 is known)"
        ));
    }
    value.parse::<CertFingerprint>().map_err(|e| e.to_string())
}

/// Splits `host:port`, accepting bracketed IPv6 literals (`[::1]:4433`).
fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or("unclosed `[` in IPv6 address")?;
        let port = after
            .strip_prefix(':')
            .ok_or("missing `:PORT` after the host")?;
        (host, port)
    } else {
        authority
            .rsplit_once(':')
            .ok_or("missing `:PORT` after the host")?
    };
    if host.is_empty() {
        return Err("missing host".to_string());
    }
    if host.contains([':', '/', '?', '@']) && !authority.starts_with('[') {
        return Err(format!("`{host}` is not a host name or IP address"));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("port `{port}` is not a number from 0 to 65535"))?;
    Ok((host.to_string(), port))
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Quic {
                host,
                port,
                cert_sha256,
            } => {
                write!(f, "quic://{}", join_host_port(host, *port))?;
                if let Some(fp) = cert_sha256 {
                    write!(f, "?cert-sha256={fp}")?;
                }
                Ok(())
            }
            Address::Tcp { host, port } => write!(f, "tcp://{}", join_host_port(host, *port)),
            Address::Unix { path } => write!(f, "unix://{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            "tcp://127.0.0.1:7000".parse::<Address>().unwrap(),
            Address::Tcp {
                host: "127.0.0.1".into(),
                port: 7000
            }
        );
        assert_eq!(
            "unix:///tmp/w.sock".parse::<Address>().unwrap(),
            Address::Unix {
                path: "/tmp/w.sock".into()
            }
        );
        let fp = "ab".repeat(32);
        let quic: Address = format!("quic://[::1]:4433?cert-sha256={fp}")
            .parse()
            .unwrap();
        assert_eq!(
            quic.to_string(),
            format!("quic://[::1]:4433?cert-sha256={fp}")
        );
        assert_eq!(quic.host_port().unwrap(), "[::1]:4433");
    }

    #[test]
    fn errors_name_the_accepted_forms() {
        for bad in [
            "127.0.0.1:7000",
            "http://x:1",
            "tcp://x",
            "tcp://x:99999",
            "unix://relative.sock",
            "quic://h:1?cert-sha256=zz",
            "quic://h:1?foo=bar",
            "tcp://:80",
        ] {
            let err = bad.parse::<Address>().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
            assert!(err.contains("tcp://HOST:PORT"), "{err}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = s.parse::<Address>();
        }

        #[test]
        fn display_round_trips(host in "[a-z][a-z0-9.-]{0,20}", port: u16, unix in "/[a-z/]{1,20}") {
            for addr in [
                Address::Tcp { host: host.clone(), port },
                Address::Quic { host: host.clone(), port, cert_sha256: None },
                Address::Unix { path: unix.clone().into() },
            ] {
                prop_assert_eq!(addr.to_string().parse::<Address>().unwrap(), addr);
            }
        }
    }
}
