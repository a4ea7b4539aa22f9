//! `gpufn up`: a gateway and one local worker in one process — the first command to try.
//! Also the helper `gpufn worker --gateway` uses to join a gateway.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use gpufn_gateway::auth::Scope;
use gpufn_proto::transport::Address;
use gpufn_worker::gateway_client::{GatewayOptions, register};
use gpufn_worker::{BackendChoice, Worker, WorkerConfig};

#[derive(Args, Debug)]
pub struct UpArgs {
    /// State directory.
    #[arg(long, default_value = ".gpufn")]
    pub data_dir: PathBuf,
    /// HTTP API address.
    #[arg(long, default_value = "127.0.0.1:7080")]
    pub http: std::net::SocketAddr,
    /// Control endpoint for stubs and workers.
    #[arg(long, default_value = "quic://127.0.0.1:7081")]
    pub control: String,
    /// Where the local worker listens for stubs.
    #[arg(long, default_value = "tcp://127.0.0.1:7070")]
    pub worker_listen: String,
    /// Backend of the local worker: auto (a GPU if one can be used, else the CPU), cpu, cuda.
    #[arg(long, default_value = "auto")]
    pub backend: BackendChoice,
}

/// The machine's host name, the default worker id.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "worker".to_owned())
}

/// Registers `worker` with the gateway at `gateway` and keeps heartbeating.
pub async fn join_gateway(
    worker: &Worker,
    gateway: &str,
    token: &str,
    worker_id: &str,
    data_address: &str,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let gateway: Address = gateway.parse().context("--gateway")?;
    register(
        worker,
        GatewayOptions {
            gateway,
            token: token.to_owned(),
            worker_id: worker_id.to_owned(),
            data_address: data_address.to_owned(),
            device_memory: None,
        },
    )
    .await
    .map_err(anyhow::Error::msg)
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    super::init_logging("warn");
    let mut config = super::gateway::GatewayArgs {
        data_dir: args.data_dir.clone(),
        http: args.http,
        control: args.control.clone(),
        audience: "gpufn".into(),
        issuer: "gpufn".into(),
        jwt_public_keys: Vec::new(),
        heartbeat_ms: 2000,
        lease_ms: 15_000,
        idle_timeout: Duration::from_secs(10),
        reclaim_min_idle: Duration::from_secs(1),
        influx_url: None,
        influx_db: "gpufn".into(),
    }
    .config()?;
    config.pool.lease_timeout = Duration::from_secs(15);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let g = gpufn_gateway::start(config).await?;
        let worker = Worker::new(WorkerConfig {
            backend: args.backend,
            ..WorkerConfig::default()
        })?;
        let listener = worker
            .bind(&args.worker_listen.parse()?, Some(&args.data_dir))
            .await?;
        let data_address = listener.local_address().to_string();
        let serving = {
            let worker = worker.clone();
            tokio::spawn(async move { worker.serve(listener).await })
        };
        let worker_token = g.gateway.minter.mint(
            "local-worker",
            &[Scope::Worker],
            Duration::from_secs(10 * 365 * 86_400),
        );
        let heartbeats = join_gateway(
            &worker,
            &g.control_addr.to_string(),
            &worker_token,
            &host_name(),
            &data_address,
        )
        .await?;
        let session_token = g.gateway.minter.mint(
            "local",
            &[Scope::Session, Scope::Invoke, Scope::Deploy],
            Duration::from_secs(12 * 3600),
        );
        super::gateway::announce(&g);
        println!(
            "  local worker {} ({}) at {data_address}",
            host_name(),
            worker.device().properties().name
        );
        println!();
        println!("run a CUDA program on the pool:");
        println!(
            "  export GPUFN_GATEWAY='{}' GPUFN_TOKEN={session_token}",
            g.control_addr
        );
        println!("  gpufn run -- ./PROGRAM");
        tokio::signal::ctrl_c()
            .await
            .context("cannot wait for Ctrl-C")?;
        println!("stopping");
        g.gateway.functions.shutdown().await;
        heartbeats.abort();
        serving.abort();
        g.shutdown();
        anyhow::Ok(())
    })
}
