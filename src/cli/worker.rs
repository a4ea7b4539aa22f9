//! `gpufn worker`: a standalone worker listening for sessions.

use anyhow::Context;
use clap::Args;
use gpufn_proto::transport::Address;
use gpufn_worker::config::{parse_duration, parse_qos_timeout, parse_size};
use gpufn_worker::device::backend_name;
use gpufn_worker::swap::SwapSettings;
use gpufn_worker::{BackendChoice, Worker, WorkerConfig};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Where stubs connect: tcp://HOST:PORT, unix:///PATH/TO.sock or quic://HOST:PORT
    /// (repeat to listen on several). QUIC prints its address with the certificate pin.
    #[arg(long, default_value = "tcp://127.0.0.1:7070")]
    pub listen: Vec<String>,
    /// Device memory quota of each session (cuMemGetInfo reports it as the total).
    #[arg(long, default_value = "4GiB", value_parser = parse_size)]
    pub session_memory: u64,
    /// Device backend: auto (a GPU if one can be used, else the CPU), cpu or cuda.
    #[arg(long, default_value = "auto")]
    pub backend: BackendChoice,
    /// Sessions served at once.
    #[arg(long, default_value_t = gpufn_worker::address_space::MAX_SESSION_RANGES)]
    pub max_sessions: u32,
    /// Memory for module images shared across sessions.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub module_cache: u64,
    /// Join this gateway's pool (its control endpoint, e.g. quic://HOST:7081?cert-sha256=…);
    /// sessions then need the gateway's tickets.
    #[arg(long)]
    pub gateway: Option<String>,
    /// Token with the `worker` scope, for --gateway.
    #[arg(long, env = "GPUFN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// This worker's id in the pool (default: the host name).
    #[arg(long)]
    pub worker_id: Option<String>,
    /// The address stubs reach this worker at, if not the first --listen address.
    #[arg(long)]
    pub advertise: Option<String>,
    /// Where the worker keeps its state (the QUIC development certificate).
    #[arg(long, default_value = ".gpufn")]
    pub data_dir: PathBuf,
    /// Device memory all active sessions share; session quotas may add up to more (idle
    /// sessions are swapped out to make room).
    #[arg(long, default_value = "8GiB", value_parser = parse_size)]
    pub device_memory: u64,
    /// A session with no call for this long is swapped out (e.g. 10s, 500ms, 2m), unless
    /// its QoS has its own (--idle-timeout-qos) or its gateway ticket sets one (a function's
    /// gpu_idle_timeout).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub idle_timeout: std::time::Duration,
    /// Idle timeout for one QoS level (low, medium, high, critical), e.g. `low=2s` (repeat
    /// for several).
    #[arg(long, value_parser = parse_qos_timeout)]
    pub idle_timeout_qos: Vec<(gpufn_proto::message::Qos, std::time::Duration)>,
    /// Host RAM for swapped-out sessions.
    #[arg(long, default_value = "4GiB", value_parser = parse_size)]
    pub host_swap_budget: u64,
    /// Directory for swapped-out sessions beyond the host budget (local NVMe); without it,
    /// swap stays in host RAM.
    #[arg(long)]
    pub swap_dir: Option<PathBuf>,
    /// Object store for long-idle swapped sessions: file:///DIR or memory:// (needs
    /// --swap-dir).
    #[arg(long)]
    pub cold_store: Option<String>,
}

impl WorkerArgs {
    pub fn config(&self) -> anyhow::Result<WorkerConfig> {
        let max = gpufn_worker::address_space::MAX_SESSION_RANGES;
        anyhow::ensure!(
            (1..=max).contains(&self.max_sessions),
            "--max-sessions must be between 1 and {max}"
        );
        Ok(WorkerConfig {
            backend: self.backend,
            session_memory: self.session_memory,
            max_sessions: self.max_sessions,
            module_cache_bytes: self.module_cache,
            swap: self.swap_settings()?,
            ..WorkerConfig::default()
        })
    }
}

impl WorkerArgs {
    fn swap_settings(&self) -> anyhow::Result<SwapSettings> {
        anyhow::ensure!(
            self.cold_store.is_none() || self.swap_dir.is_some(),
            "--cold-store needs --swap-dir (swapped sessions reach the cold store from disk)"
        );
        Ok(SwapSettings {
            worker_id: swap_worker_id(self.worker_id.as_deref(), &self.data_dir),
            device_memory: self.device_memory,
            idle_timeout: self.idle_timeout,
            idle_timeout_by_qos: self.idle_timeout_qos.iter().copied().collect(),
            host_budget: self.host_swap_budget,
            disk_dir: self.swap_dir.clone(),
            cold_url: self.cold_store.clone(),
            ..SwapSettings::default()
        })
    }
}

/// The name of this worker's swap files: `--worker-id`, else one derived from the data
/// directory, so a restarted worker finds (and removes) what its previous run left.
fn swap_worker_id(worker_id: Option<&str>, data_dir: &std::path::Path) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .take(48)
            .collect()
    };
    match worker_id {
        Some(id) => clean(id),
        None => {
            let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
            // FNV-1a: stable across runs and builds.
            let hash = dir
                .to_string_lossy()
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
            format!("worker-{hash:016x}")
        }
    }
}

pub fn run(args: WorkerArgs) -> anyhow::Result<()> {
    super::init_logging("info");
    let addresses = args
        .listen
        .iter()
        .map(|a| a.parse::<Address>())
        .collect::<Result<Vec<_>, _>>()?;
    let worker = Worker::new(args.config()?)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let served = runtime.block_on(async {
        let mut listeners = Vec::new();
        for address in &addresses {
            if let Address::Quic { .. } = address {
                std::fs::create_dir_all(&args.data_dir).with_context(|| {
                    format!(
                        "cannot create the data directory {}",
                        args.data_dir.display()
                    )
                })?;
            }
            listeners.push(worker.bind(address, Some(&args.data_dir)).await?);
        }
        let device = worker.device().properties();
        println!(
            "gpufn worker: {} backend, {}; {} per session",
            backend_name(worker.device()),
            device.name,
            human_bytes(args.session_memory)
        );
        let addresses_text: Vec<String> =
            listeners.iter().map(|l| l.local_address().to_string()).collect();
        for listener in &listeners {
            let address = listener.local_address();
            println!("listening on {address}");
            println!("  try: gpufn run --worker '{address}' -- PROGRAM ARGS");
        }
        let serving = listeners.into_iter().map(|listener| {
            let worker = worker.clone();
            tokio::spawn(async move { worker.serve(listener).await })
        });
        let serving: Vec<_> = serving.collect();
        let _heartbeats = match &args.gateway {
            Some(gateway) => {
                let token = args.token.as_deref().context(
                    "--gateway needs a token with the worker scope: pass --token or set GPUFN_TOKEN",
                )?;
                let advertised = match &args.advertise {
                    Some(a) => a.clone(),
                    None => addresses_text.first().cloned().context("no --listen address")?,
                };
                let id = args.worker_id.clone().unwrap_or_else(super::up::host_name);
                let task =
                    super::up::join_gateway(&worker, gateway, token, &id, &advertised).await?;
                println!("joined the gateway at {gateway} as worker {id}");
                Some(task)
            }
            None => None,
        };
        tokio::signal::ctrl_c()
            .await
            .context("cannot wait for Ctrl-C")?;
        println!("stopping");
        for task in serving {
            task.abort();
        }
        anyhow::Ok(())
    });
    // Sessions still running a kernel must not hold up the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    served
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (unit, shift) in UNITS {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use gpufn_proto::message::Qos;
    use gpufn_worker::swap::SessionTerms;
    use std::time::Duration;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        worker: WorkerArgs,
    }

    fn idle_timeouts(args: &[&str]) -> Vec<Duration> {
        let cli = Cli::try_parse_from(std::iter::once("gpufn-worker").chain(args.iter().copied()))
            .unwrap();
        let settings = cli.worker.config().unwrap().swap;
        [Qos::Low, Qos::Medium, Qos::High, Qos::Critical]
            .into_iter()
            .map(|qos| {
                settings.idle_timeout_for(SessionTerms {
                    qos,
                    idle_timeout: None,
                })
            })
            .collect()
    }

    #[test]
    fn every_qos_idles_10s_unless_configured() {
        let s = Duration::from_secs;
        assert_eq!(idle_timeouts(&[]), vec![s(10), s(10), s(10), s(10)]);
        assert_eq!(
            idle_timeouts(&[
                "--idle-timeout",
                "30s",
                "--idle-timeout-qos",
                "low=2s",
                "--idle-timeout-qos",
                "critical=5m",
            ]),
            vec![s(2), s(30), s(30), s(300)]
        );
        let bad = Cli::try_parse_from(["gpufn-worker", "--idle-timeout-qos", "urgent=1s"]);
        assert!(
            bad.err()
                .unwrap()
                .to_string()
                .contains("low, medium, high or critical")
        );
    }
}
