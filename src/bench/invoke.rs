//! `gpufn bench invoke`: what the functions gateway adds to a request.
//!
//! One process runs a gateway and a `cpu` worker (as `gpufn up` does). Two measurements:
//!
//! - **exec overhead**: the same `exec` program (e.g. vadd) run directly — spawned with the
//!   stub, its session already placed, input on stdin, answer from stdout — and invoked over
//!   HTTP (`POST /v1/functions/NAME/invoke`), alternating one of each so both see the same
//!   machine state. The difference of the medians is the gateway's overhead: HTTP, auth,
//!   admission, placement and ticket, process bookkeeping.
//! - **http function (lab)**: warm requests; requests after the instance's GPU memory was
//!   swapped out to host RAM (with the swap-in share from the `x-gpufn-swap-in-ms` header);
//!   and cold starts (function redeployed: process start and model load before the answer).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use gpufn_gateway::auth::{Principal, Scope};
use gpufn_gateway::functions::client::{Answer, FunctionsClient};
use gpufn_gateway::{Gateway, GatewayConfig};
use gpufn_proto::message::{Qos, ResourceRequest};
use gpufn_worker::{BackendChoice, Worker, WorkerConfig};

pub struct Options {
    /// The compiled `exec` example (vadd).
    pub exec_program: PathBuf,
    /// The compiled `lab` example; `None` skips the http measurements.
    pub lab_program: Option<PathBuf>,
    /// Pairs (direct, invoke) timed for the exec overhead.
    pub exec_pairs: usize,
    pub lab_warm: usize,
    pub lab_swapped: usize,
    pub lab_cold: usize,
    pub lab_model_mib: u32,
    pub stub_dir: PathBuf,
}

/// Idle time after which the lab's session is swapped out during the benchmark.
const GPU_IDLE: Duration = Duration::from_secs(2);
/// Longest wait for a swap-out before the benchmark gives up (a guard).
const SWAP_GUARD: Duration = Duration::from_secs(120);

#[derive(Clone, Copy)]
struct Stats {
    p50: f64,
    p90: f64,
    max: f64,
    n: usize,
}

fn stats(mut ms: Vec<f64>) -> Stats {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Stats {
        p50: at(0.5),
        p90: at(0.9),
        max: ms[ms.len() - 1],
        n: ms.len(),
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {:.2} ms, p90 {:.2} ms, max {:.2} ms (n={})",
            self.p50, self.p90, self.max, self.n
        )
    }
}

struct Lab {
    warm: Stats,
    swapped: Stats,
    swap_in: Stats,
    cold: Stats,
    cold_start: Stats,
}

struct Exec {
    direct: Stats,
    invoked: Stats,
    /// `x-gpufn-exec-ms`: the process from spawn to exit, inside the invoke.
    inside: Stats,
    /// `x-gpufn-cold-start-ms`: attach and spawn, inside the invoke.
    start: Stats,
    /// Placing a session and signing its ticket (in-process `Gateway::attach`).
    attach: Stats,
}

pub struct Report {
    machine: String,
    exec: Exec,
    lab: Option<(u32, Lab)>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invoke benchmark on {}", self.machine)?;
        let e = &self.exec;
        writeln!(
            f,
            "exec function (vadd), alternating direct run and invoke:"
        )?;
        writeln!(
            f,
            "  direct (spawn with the stub, session already placed): {}",
            e.direct
        )?;
        writeln!(
            f,
            "  POST /v1/functions/vadd/invoke (end to end):          {}",
            e.invoked
        )?;
        writeln!(
            f,
            "  inside the invoke, the process (x-gpufn-exec-ms):     {}",
            e.inside
        )?;
        writeln!(
            f,
            "  inside the invoke, attach + spawn (x-gpufn-cold-start-ms): {}",
            e.start
        )?;
        writeln!(
            f,
            "  placement + ticket (Gateway::attach, both paths):     {}",
            e.attach
        )?;
        writeln!(
            f,
            "  gateway overhead, p50 invoke - p50 direct: {:.2} ms (goal <= 2 ms); without the attach: {:.2} ms",
            e.invoked.p50 - e.direct.p50,
            e.invoked.p50 - e.direct.p50 - e.attach.p50
        )?;
        if let Some((mib, lab)) = &self.lab {
            writeln!(f, "http function (lab, {mib} MiB model in device memory):")?;
            writeln!(f, "  warm:                         {}", lab.warm)?;
            writeln!(f, "  after swap-out to host memory: {}", lab.swapped)?;
            writeln!(f, "    of which swap-in (prewarm):  {}", lab.swap_in)?;
            writeln!(
                f,
                "    swap-in share of the p50:    {:.0}%",
                100.0 * lab.swap_in.p50 / lab.swapped.p50.max(f64::EPSILON)
            )?;
            writeln!(f, "  cold start (redeployed):       {}", lab.cold)?;
            writeln!(f, "    of which start until healthy: {}", lab.cold_start)?;
        }
        Ok(())
    }
}

/// The gateway and worker of the benchmark, in this process.
struct System {
    gateway: Arc<Gateway>,
    client: FunctionsClient,
    _running: gpufn_gateway::RunningGateway,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
    _data: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start(stub_dir: &Path) -> anyhow::Result<System> {
    let data =
        TempDir(std::env::temp_dir().join(format!("gpufn-bench-invoke-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&data.0);
    let mut config = GatewayConfig::new(&data.0);
    config.http_addr = "127.0.0.1:0".parse()?;
    config.control_addr = "tcp://127.0.0.1:0".to_owned();
    config.functions.stub_dir = Some(stub_dir.to_path_buf());
    config.pool.idle_timeout = gpufn_pool::PerQos::uniform(Some(GPU_IDLE));
    config.heartbeat_interval = Duration::from_millis(500);
    config.limits.request_timeout = Duration::from_secs(600);
    config.limits.tenant_rate_per_second = 100_000;
    config.limits.tenant_burst = 100_000;
    let running = gpufn_gateway::start(config).await?;
    let worker = Worker::new(WorkerConfig {
        backend: BackendChoice::Cpu,
        ..WorkerConfig::default()
    })?;
    let listener = worker
        .bind(&"tcp://127.0.0.1:0".parse()?, Some(&data.0))
        .await?;
    let worker_address = listener.local_address().to_string();
    let serving = {
        let worker = worker.clone();
        tokio::spawn(async move { worker.serve(listener).await })
    };
    let worker_token =
        running
            .gateway
            .minter
            .mint("bench-worker", &[Scope::Worker], Duration::from_secs(3600));
    let heartbeats = crate::cli::up::join_gateway(
        &worker,
        &running.control_addr.to_string(),
        &worker_token,
        "bench-worker",
        &worker_address,
    )
    .await?;
    let token = running.gateway.minter.mint(
        "bench",
        &[Scope::Deploy, Scope::Invoke, Scope::Session],
        Duration::from_secs(3600),
    );
    let client = FunctionsClient::new(&format!("http://{}", running.http_addr), &token);
    Ok(System {
        gateway: running.gateway.clone(),
        client,
        _running: running,
        _tasks: vec![serving, heartbeats],
        _data: data,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn check(answer: Answer, what: &str) -> anyhow::Result<Answer> {
    if !answer.status.is_success() {
        bail!(
            "{what} failed: {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    Ok(answer)
}

const VADD_INPUT: &str = "1 2 3 4 5 6 7 8\n10 20 30 40 50 60 70 80\n";
const VADD_OUTPUT: &str = "11 22 33 44 55 66 77 88";

fn exec_manifest() -> String {
    "name = \"vadd\"\ncommand = \"./vadd\"\n[artifact]\npath = \"vadd\"\n[resources]\nvram = \"256MiB\"\ncompute_share = 0.25\n[protocol]\ntype = \"exec\"\n[scaling]\nmax_instances = 1\n".to_owned()
}

fn lab_manifest(model_mib: u32) -> String {
    format!(
        "name = \"lab\"\ncommand = \"./lab\"\nenv = {{ LAB_MODEL_MIB = \"{model_mib}\" }}\n[artifact]\npath = \"lab\"\n[resources]\nvram = \"{}MiB\"\n[protocol]\ntype = \"http\"\n[scaling]\ngpu_idle_timeout = \"{}s\"\ninstance_idle_timeout = \"1h\"\n[limits]\ntimeout = \"10m\"\nstartup_timeout = \"10m\"\n",
        model_mib * 2 + 64,
        GPU_IDLE.as_secs()
    )
}

/// The exec program run the way the runner runs it, minus the gateway: a placed session,
/// the stub on the library path, input on stdin.
/// Returns the run's time and, separately, the time the placement (attach) took.
async fn run_direct(
    system: &System,
    program: &Path,
    stub_dir: &Path,
) -> anyhow::Result<(Duration, Duration)> {
    let principal = Principal {
        tenant: "bench".to_owned(),
        scopes: vec![Scope::Session],
        expires_at: u64::MAX,
    };
    let attaching = Instant::now();
    let attached = system
        .gateway
        .attach(
            &principal,
            &ResourceRequest {
                vram_bytes: 256 << 20,
                compute_percent: 25,
                qos: Qos::Medium,
                function: None,
            },
        )
        .await?;
    let attach = attaching.elapsed();
    let started = Instant::now();
    let mut child = tokio::process::Command::new(program)
        .env("LD_LIBRARY_PATH", stub_dir)
        .env("GPUFN_WORKER", &attached.worker_address)
        .env("GPUFN_TICKET", &attached.ticket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(VADD_INPUT.as_bytes()).await?;
    }
    let output = child.wait_with_output().await?;
    let took = started.elapsed();
    system
        .gateway
        .session_closed(attached.session, "benchmark run ended");
    if String::from_utf8_lossy(&output.stdout).trim() != VADD_OUTPUT {
        bail!(
            "the direct run answered {:?}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
    Ok((took, attach))
}

async fn exec_overhead(system: &System, options: &Options) -> anyhow::Result<Exec> {
    let program = std::fs::read(&options.exec_program)
        .with_context(|| format!("cannot read {}", options.exec_program.display()))?;
    check(
        system
            .client
            .deploy(&exec_manifest(), Some(&program))
            .await?,
        "deploying vadd",
    )?;
    let (mut direct, mut invoked, mut inside, mut start, mut attach) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..options.exec_pairs + 3 {
        let (d, a) = run_direct(system, &options.exec_program, &options.stub_dir).await?;
        let started = Instant::now();
        let answer = check(
            system
                .client
                .invoke("vadd", "", Bytes::from(VADD_INPUT))
                .await?,
            "invoking vadd",
        )?;
        let took = started.elapsed();
        if String::from_utf8_lossy(&answer.body).trim() != VADD_OUTPUT {
            bail!("vadd answered {:?}", String::from_utf8_lossy(&answer.body));
        }
        // The first few warm up caches (page cache, module cache on the worker).
        if i >= 3 {
            direct.push(ms(d));
            invoked.push(ms(took));
            inside.push(answer.timing_ms("x-gpufn-exec-ms").unwrap_or(0.0));
            attach.push(ms(a));
            start.push(answer.timing_ms("x-gpufn-cold-start-ms").unwrap_or(0.0));
        }
    }
    Ok(Exec {
        direct: stats(direct),
        invoked: stats(invoked),
        inside: stats(inside),
        start: stats(start),
        attach: stats(attach),
    })
}

async fn generate(system: &System, prompt: &str) -> anyhow::Result<(Duration, Answer)> {
    let started = Instant::now();
    let answer = check(
        system
            .client
            .invoke("lab", "/generate", Bytes::from(prompt.to_owned()))
            .await?,
        "invoking lab",
    )?;
    Ok((started.elapsed(), answer))
}

async fn wait_swapped_out(system: &System) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let swapped = system
            .gateway
            .live_sessions(Some("bench"))
            .iter()
            .any(|s| s.function.as_deref() == Some("lab") && s.state.name() == "swapped_out");
        if swapped {
            return Ok(());
        }
        if started.elapsed() > SWAP_GUARD {
            bail!("the lab's session was not swapped out within {SWAP_GUARD:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn lab(system: &System, options: &Options, program: &Path) -> anyhow::Result<Lab> {
    let bytes =
        std::fs::read(program).with_context(|| format!("cannot read {}", program.display()))?;
    let manifest = lab_manifest(options.lab_model_mib);
    let (mut cold, mut cold_start) = (Vec::new(), Vec::new());
    for _ in 0..options.lab_cold.max(1) {
        let _ = system.client.delete("/v1/functions/lab").await?;
        check(
            system.client.deploy(&manifest, Some(&bytes)).await?,
            "deploying lab",
        )?;
        let (took, answer) = generate(system, "cold").await?;
        cold.push(ms(took));
        cold_start.push(answer.timing_ms("x-gpufn-cold-start-ms").unwrap_or(0.0));
    }
    let mut warm = Vec::new();
    for i in 0..options.lab_warm.max(1) {
        warm.push(ms(generate(system, &format!("warm {i}")).await?.0));
    }
    let (mut swapped, mut swap_in) = (Vec::new(), Vec::new());
    for i in 0..options.lab_swapped.max(1) {
        wait_swapped_out(system).await?;
        let (took, answer) = generate(system, &format!("swapped {i}")).await?;
        swapped.push(ms(took));
        swap_in.push(answer.timing_ms("x-gpufn-swap-in-ms").unwrap_or(0.0));
    }
    Ok(Lab {
        warm: stats(warm),
        swapped: stats(swapped),
        swap_in: stats(swap_in),
        cold: stats(cold),
        cold_start: stats(cold_start),
    })
}

pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let system = start(&options.stub_dir).await?;
    let exec = exec_overhead(&system, options).await?;
    let lab = match &options.lab_program {
        Some(program) => Some((options.lab_model_mib, lab(&system, options, program).await?)),
        None => None,
    };
    system.gateway.functions.shutdown().await;
    Ok(Report {
        machine: super::transport::machine_description(),
        exec,
        lab,
    })
}
