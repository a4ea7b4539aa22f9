//! `gpufn gateway`: the control plane — HTTP API, control endpoint for stubs and workers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use gpufn_gateway::auth::Scope;
use gpufn_gateway::config::{InfluxConfig, KeyAlgorithm, PublicKeyConfig};
use gpufn_gateway::{GatewayConfig, RunningGateway};
use gpufn_worker::config::parse_duration;

#[derive(Args, Debug, Clone)]
pub struct GatewayArgs {
    /// State directory (SQLite database with tenants, quotas, the usage ledger and keys).
    #[arg(long, default_value = ".gpufn")]
    pub data_dir: PathBuf,
    /// HTTP API address.
    #[arg(long, default_value = "127.0.0.1:7080")]
    pub http: SocketAddr,
    /// Control endpoint where stubs attach and workers register (quic://, tcp:// or unix://).
    #[arg(long, default_value = "quic://127.0.0.1:7081")]
    pub control: String,
    /// Audience every token must carry.
    #[arg(long, default_value = "gpufn")]
    pub audience: String,
    /// Issuer every token must carry.
    #[arg(long, default_value = "gpufn")]
    pub issuer: String,
    /// Accept tokens signed elsewhere: `eddsa:PATH` or `rs256:PATH` to a PEM public key
    /// (repeatable). HS256 tokens from `gpufn token create` are always accepted.
    #[arg(long = "jwt-public-key")]
    pub jwt_public_keys: Vec<String>,
    /// Workers heartbeat this often (milliseconds).
    #[arg(long, default_value_t = 2000)]
    pub heartbeat_ms: u64,
    /// A worker missing heartbeats this long (milliseconds) is removed and its sessions fail.
    #[arg(long, default_value_t = 15_000)]
    pub lease_ms: u64,
    /// The gateway swaps out a session with no call for this long (e.g. 10s, 2m); workers
    /// also swap on their own --idle-timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// A session idle at least this long may be swapped out for a higher-QoS session that
    /// needs its memory.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub reclaim_min_idle: Duration,
    /// Push usage and scheduling events as InfluxDB line protocol to this URL
    /// (e.g. http://127.0.0.1:8086).
    #[arg(long)]
    pub influx_url: Option<String>,
    /// InfluxDB database for the push.
    #[arg(long, default_value = "gpufn")]
    pub influx_db: String,
}

impl GatewayArgs {
    pub fn config(&self) -> anyhow::Result<GatewayConfig> {
        let mut c = GatewayConfig::new(&self.data_dir);
        c.http_addr = self.http;
        c.control_addr = self.control.clone();
        c.auth.audience = self.audience.clone();
        c.auth.issuer = self.issuer.clone();
        for spec in &self.jwt_public_keys {
            let (alg, path) = spec
                .split_once(':')
                .context("--jwt-public-key takes eddsa:PATH or rs256:PATH")?;
            let algorithm = match alg {
                "eddsa" => KeyAlgorithm::EdDsa,
                "rs256" => KeyAlgorithm::Rs256,
                other => anyhow::bail!("unknown key algorithm `{other}`: use eddsa or rs256"),
            };
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the public key {path}"))?;
            c.auth.public_keys.push(PublicKeyConfig { algorithm, pem });
        }
        c.heartbeat_interval = Duration::from_millis(self.heartbeat_ms.max(10));
        c.pool.lease_timeout = Duration::from_millis(self.lease_ms.max(self.heartbeat_ms * 2));
        c.pool.idle_timeout = gpufn_pool::PerQos::uniform(Some(self.idle_timeout));
        c.pool.reclaim_min_idle = self.reclaim_min_idle;
        c.influx = self.influx_url.as_ref().map(|url| InfluxConfig {
            url: url.clone(),
            database: self.influx_db.clone(),
            interval: Duration::from_secs(5),
        });
        // Functions run with the stub built next to gpufn; without it they are refused.
        c.functions.stub_dir = super::run::prepare_stub_dir()
            .inspect_err(|e| eprintln!("functions cannot run: {e:#}"))
            .ok();
        Ok(c)
    }
}

/// Prints where the gateway listens, an admin token and what to try next.
pub fn announce(g: &RunningGateway) {
    let admin = g
        .gateway
        .minter
        .mint("admin", &[Scope::Admin], Duration::from_secs(24 * 3600));
    println!("gpufn gateway");
    println!("  HTTP API:  http://{}", g.http_addr);
    println!("  control:   {}", g.control_addr);
    println!("  data:      {}", g.gateway.config.data_dir.display());
    println!("  admin token (24 h): {admin}");
    println!();
    println!("next:");
    println!(
        "  export GPUFN_API=http://{} GPUFN_TOKEN={admin}",
        g.http_addr
    );
    println!("  gpufn status");
    println!(
        "  gpufn token create --tenant TENANT --scope session --ttl 12h --data-dir {}",
        g.gateway.config.data_dir.display()
    );
}

pub fn run(args: GatewayArgs) -> anyhow::Result<()> {
    super::init_logging("info");
    let config = args.config()?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let g = gpufn_gateway::start(config).await?;
        announce(&g);
        tokio::signal::ctrl_c()
            .await
            .context("cannot wait for Ctrl-C")?;
        println!("stopping");
        g.gateway.functions.shutdown().await;
        g.shutdown();
        anyhow::Ok(())
    })
}
