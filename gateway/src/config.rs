//! How a gateway is set up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gpufn_pool::PoolConfig;

/// Everything a [`crate::Gateway`] needs to start.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// State (SQLite database, signing keys, QUIC certificate) lives here; created if missing.
    pub data_dir: PathBuf,
    /// HTTP API listen address (port 0 picks a free port).
    pub http_addr: SocketAddr,
    /// Control endpoint for stubs and workers (`quic://…`, `tcp://…`, `unix://…`).
    pub control_addr: String,
    /// JWT settings.
    pub auth: AuthConfig,
    /// Placement, QoS, idle and quota defaults.
    pub pool: PoolConfig,
    /// How often workers must heartbeat; the pool's lease timeout says when one is lost.
    pub heartbeat_interval: Duration,
    /// How long a session ticket stays valid for opening its session on the worker.
    pub ticket_ttl: Duration,
    /// HTTP overload protection and per-tenant rate limits.
    pub limits: HttpLimits,
    /// InfluxDB line-protocol push; `None` disables it.
    pub influx: Option<InfluxConfig>,
    /// How often the pool's time-driven decisions run and usage is metered.
    pub tick_interval: Duration,
    /// How functions are run (the stub's folder).
    pub functions: crate::functions::FunctionsConfig,
}

impl GatewayConfig {
    /// Loopback defaults with data under `data_dir`: HTTP on 127.0.0.1:7080, control over
    /// QUIC on 127.0.0.1:7081.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        GatewayConfig {
            data_dir: data_dir.into(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 7080)),
            control_addr: "quic://127.0.0.1:7081".to_owned(),
            auth: AuthConfig::default(),
            pool: PoolConfig::default(),
            heartbeat_interval: Duration::from_secs(2),
            ticket_ttl: Duration::from_secs(60),
            limits: HttpLimits::default(),
            influx: None,
            tick_interval: Duration::from_secs(1),
            functions: Default::default(),
        }
    }
}

/// JWT verification settings. Tokens are always checked for algorithm, signature, audience,
/// issuer and expiry.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// The `aud` every token must carry.
    pub audience: String,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// Extra verification keys (EdDSA or RS256 public keys, PEM) for tokens minted elsewhere.
    /// HS256 tokens are verified with the gateway's generated secret.
    pub public_keys: Vec<PublicKeyConfig>,
    /// Tolerated clock skew when checking `exp`.
    pub leeway: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            audience: "gpufn".to_owned(),
            issuer: "gpufn".to_owned(),
            public_keys: Vec::new(),
            leeway: Duration::from_secs(5),
        }
    }
}

/// A configured public key.
#[derive(Clone, Debug)]
pub struct PublicKeyConfig {
    pub algorithm: KeyAlgorithm,
    /// The key in PEM form.
    pub pem: String,
}

/// Asymmetric algorithms accepted for configured keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    EdDsa,
    Rs256,
}

/// HTTP overload protection.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// Requests handled at once; more are answered 503 at once (load shedding).
    pub max_concurrent: usize,
    /// A request taking longer is answered 504. Function routes (`/v1/functions…`) are bounded
    /// by the function's own timeouts instead, up to `function_request_timeout`.
    pub request_timeout: Duration,
    /// The outer bound for function routes: invokes wait in a function's queue, cold-start
    /// instances and run for as long as the manifest allows; deploys upload large bundles.
    pub function_request_timeout: Duration,
    /// Request bodies larger than this are refused with 413.
    pub max_body_bytes: usize,
    /// Requests per second per tenant (token bucket refill rate).
    pub tenant_rate_per_second: u32,
    /// Requests a tenant may burst above the rate.
    pub tenant_burst: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_concurrent: 256,
            request_timeout: Duration::from_secs(10),
            function_request_timeout: Duration::from_secs(3600),
            max_body_bytes: 1 << 20,
            tenant_rate_per_second: 200,
            tenant_burst: 400,
        }
    }
}

/// Where usage and scheduling events are pushed as InfluxDB line protocol.
#[derive(Clone, Debug)]
pub struct InfluxConfig {
    /// Base URL, e.g. `http://127.0.0.1:8086` (plain HTTP).
    pub url: String,
    /// Database (InfluxDB 1.x `db` parameter; GreptimeDB accepts it too).
    pub database: String,
    /// How often buffered points are pushed.
    pub interval: Duration,
}
