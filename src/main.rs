//! The `gpufn` command.
//!
//! Subcommands appear as the parts behind them are built; today: `gpufn bench …`.

mod bench;
mod cli;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// gpufn: serverless GPU functions. Programs on CPU-only machines use pooled remote GPUs.
#[derive(Parser)]
#[command(name = "gpufn", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure a part of gpufn next to its baseline, measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Serve sessions: execute programs' CUDA calls on this machine's GPU or CPU.
    Worker(cli::worker::WorkerArgs),
    /// Run a program with the gpufn stub as its CUDA driver (a private worker unless
    /// --worker is given).
    Run(cli::run::RunArgs),
    /// Run the gateway: HTTP API, auth, placement, metering; stubs attach and workers
    /// register at its control endpoint.
    Gateway(cli::gateway::GatewayArgs),
    /// Manage tenant tokens.
    #[command(subcommand)]
    Token(cli::token::TokenCommand),
    /// Show the pool: workers, devices, sessions and their swap state.
    Status(cli::status::StatusArgs),
    /// Start a gateway and one local worker (a GPU if present, else the CPU): the first
    /// command to try.
    Up(cli::up::UpArgs),
    /// Deploy (or redeploy) a function from its function.toml and artifact.
    Deploy(cli::functions::DeployArgs),
    /// Invoke a function; its answer goes to stdout.
    Invoke(cli::functions::InvokeArgs),
    /// List your deployed functions with their instances.
    Functions(cli::functions::ListArgs),
    /// Show what a function's instances wrote to stdout and stderr.
    Logs(cli::functions::LogsArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Round-trip latency and bulk throughput of the protocol on QUIC, TCP and Unix sockets,
    /// each next to the raw transport.
    Transport(TransportArgs),
    /// Lane-instructions per second of the CPU device's PTX interpreter, one thread and all.
    Ptx(PtxArgs),
    /// Swap-out and swap-in throughput of the host and disk tiers, next to memcpy and the
    /// disk's sequential bandwidth; then the first call after idle of a 1 GiB session
    /// swapped to each tier (host, disk, cold).
    Swap(SwapArgs),
    /// Attach latency through the gateway vs direct, authenticated request throughput vs a
    /// bare hyper server, placement decision time for 1,000 workers × 10,000 sessions.
    Gateway(GatewayBenchArgs),
    /// Gateway overhead of a warm exec invoke next to running the same program directly;
    /// warm, swapped-to-host and cold-start latency of an http function (lab).
    Invoke(InvokeBenchArgs),
    /// A program's view through the stub: sync call round trip, launches per second and
    /// copy throughput on QUIC, TCP and Unix sockets, each next to the raw transport.
    Stub(StubBenchArgs),
    /// The measuring program `bench stub` starts (GPUFN_WORKER names the worker).
    #[command(hide = true)]
    StubClient(StubClientArgs),
}

#[derive(Args)]
struct StubBenchArgs {
    /// Transports to measure (comma-separated: quic, tcp, unix).
    #[arg(long, value_delimiter = ',', default_value = "quic,tcp,unix")]
    transports: Vec<String>,
    /// Baseline and stub alternate this many times.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Synchronous calls timed per round.
    #[arg(long, default_value_t = 5_000)]
    iterations: usize,
    /// Empty-kernel launches per round.
    #[arg(long, default_value_t = 200_000)]
    launches: usize,
    /// Copy sizes in MiB (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16,256,1024")]
    copy_mib: Vec<u64>,
    /// MiB moved at least per copy size, direction and round.
    #[arg(long, default_value_t = 256)]
    copy_total_mib: u64,
}

#[derive(Args)]
struct StubClientArgs {
    #[arg(long)]
    stub_dir: PathBuf,
    #[arg(long)]
    rtt_iterations: usize,
    #[arg(long)]
    launches: usize,
    #[arg(long, value_delimiter = ',')]
    copy_sizes: Vec<u64>,
    #[arg(long)]
    copy_bytes_per_size: u64,
}

#[derive(Args)]
struct InvokeBenchArgs {
    /// The compiled vadd example (exec), e.g. functions/examples/vadd/build/vadd.
    #[arg(long)]
    vadd: PathBuf,
    /// The compiled lab example (http); without it the lab part is skipped.
    #[arg(long)]
    lab: Option<PathBuf>,
    /// Direct runs and invokes timed, alternating.
    #[arg(long, default_value_t = 100)]
    exec_pairs: usize,
    /// Warm lab requests timed.
    #[arg(long, default_value_t = 50)]
    lab_warm: usize,
    /// Lab requests timed right after the session was swapped out.
    #[arg(long, default_value_t = 5)]
    lab_swapped: usize,
    /// Lab cold starts timed (each redeploys the function).
    #[arg(long, default_value_t = 3)]
    lab_cold: usize,
    /// The lab's model size in MiB.
    #[arg(long, default_value_t = 64)]
    lab_model_mib: u32,
}

#[derive(Args)]
struct GatewayBenchArgs {
    /// Attaches measured each way.
    #[arg(long, default_value_t = 200)]
    attaches: usize,
    /// HTTP requests per throughput measurement.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Placement decisions timed.
    #[arg(long, default_value_t = 10_000)]
    placement_samples: usize,
    /// A CUDA program (e.g. tests/cuda/hello.cu built with nvcc) to time from `gpufn run`
    /// start to its exit after its first kernel's result, through the gateway and direct.
    #[arg(long)]
    program: Option<std::path::PathBuf>,
    /// Runs of --program each way.
    #[arg(long, default_value_t = 30)]
    program_runs: usize,
}

#[derive(Args)]
struct TransportArgs {
    /// Transports to measure (comma-separated: quic, tcp, unix).
    #[arg(long, value_delimiter = ',', default_value = "quic,tcp,unix")]
    transports: Vec<String>,
    /// Round trips per measurement round, raw and through gpufn each.
    #[arg(long, default_value_t = 20_000)]
    iterations: usize,
    /// MiB moved per bulk measurement round, raw and through gpufn each.
    #[arg(long, default_value_t = 512)]
    bulk_mib: u64,
    /// Raw and protocol runs alternate this many times.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
}

#[derive(Args)]
struct PtxArgs {
    /// Threads for the multi-threaded figure (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args)]
struct SwapArgs {
    /// Session sizes in MiB for the throughput part (comma-separated; 0: skip it).
    #[arg(long, value_delimiter = ',', default_value = "256,1024")]
    sizes_mib: Vec<u64>,
    /// Directory on the disk to measure (the disk tier and its baseline file go there).
    #[arg(long, default_value = ".gpufn/bench-swap")]
    dir: PathBuf,
    /// Use the page cache instead of direct I/O for the disk tier and its baseline.
    #[arg(long)]
    buffered: bool,
    /// Measurement rounds per size (the best round counts).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Size in MiB of the session whose first call after idle is timed per tier (0: skip).
    #[arg(long, default_value_t = 1024)]
    wake_mib: u64,
    /// Rounds of the first-call-after-idle measurement (the median counts).
    #[arg(long, default_value_t = 3)]
    wake_rounds: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(bench) => run_bench(bench),
        Command::Worker(args) => cli::worker::run(args),
        Command::Run(args) => std::process::exit(cli::run::run(args)?),
        Command::Gateway(args) => cli::gateway::run(args),
        Command::Token(command) => cli::token::run(command),
        Command::Status(args) => cli::status::run(args),
        Command::Up(args) => cli::up::run(args),
        Command::Deploy(args) => cli::functions::deploy(args),
        Command::Invoke(args) => std::process::exit(cli::functions::invoke(args)?),
        Command::Functions(args) => cli::functions::list(args),
        Command::Logs(args) => cli::functions::logs(args),
    }
}

fn run_bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Invoke(args) => {
            let options = bench::invoke::Options {
                exec_program: args.vadd,
                lab_program: args.lab,
                exec_pairs: args.exec_pairs.max(1),
                lab_warm: args.lab_warm,
                lab_swapped: args.lab_swapped,
                lab_cold: args.lab_cold,
                lab_model_mib: args.lab_model_mib.max(1),
                stub_dir: cli::run::prepare_stub_dir()?,
            };
            let runtime = tokio::runtime::Runtime::new().context("cannot start tokio")?;
            let report = runtime.block_on(bench::invoke::run(&options))?;
            println!("{report}");
        }
        BenchCommand::Gateway(args) => {
            let options = bench::gateway::Options {
                attaches: args.attaches.max(1),
                requests: args.requests.max(args.concurrency.max(1)),
                concurrency: args.concurrency.max(1),
                placement_samples: args.placement_samples.max(1),
                program: args.program,
                program_runs: args.program_runs.max(1),
            };
            let runtime = tokio::runtime::Runtime::new().context("cannot start tokio")?;
            let report = runtime.block_on(bench::gateway::run(&options))?;
            println!("{report}");
        }
        BenchCommand::Transport(args) => {
            let options = bench::transport::Options {
                kinds: args
                    .transports
                    .iter()
                    .map(|name| parse_transport(name))
                    .collect::<anyhow::Result<_>>()?,
                rtt_iterations: args.iterations,
                bulk_bytes: args.bulk_mib << 20,
                rounds: args.rounds,
                ..Default::default()
            };
            let runtime = tokio::runtime::Runtime::new().context("cannot start tokio")?;
            let report = runtime.block_on(bench::transport::run(&options))?;
            println!("{report}");
        }
        BenchCommand::Ptx(args) => {
            let threads = args
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let report = gpufn_ptx::bench::run(threads).map_err(anyhow::Error::msg)?;
            println!("{report}");
        }
        BenchCommand::Stub(args) => {
            let mut options = bench::stub::Options::new(cli::run::prepare_stub_dir()?);
            options.kinds = args
                .transports
                .iter()
                .map(|name| parse_transport(name))
                .collect::<anyhow::Result<_>>()?;
            options.rounds = args.rounds.max(1);
            options.rtt_iterations = args.iterations.max(1);
            options.launches = args.launches;
            options.copy_sizes = args.copy_mib.iter().map(|mib| mib << 20).collect();
            options.copy_bytes_per_size = args.copy_total_mib << 20;
            let report = bench::stub::run(&options)?;
            println!("{report}");
        }
        BenchCommand::StubClient(args) => {
            bench::stub::client(&bench::stub::ClientOptions {
                stub_dir: args.stub_dir,
                rtt_iterations: args.rtt_iterations,
                launches: args.launches,
                copy_sizes: args.copy_sizes,
                copy_bytes_per_size: args.copy_bytes_per_size,
            })?;
        }
        BenchCommand::Swap(args) => {
            let mut config = gpufn_swap::bench::BenchConfig::new(&args.dir);
            config.sizes = args
                .sizes_mib
                .iter()
                .filter(|&&mib| mib > 0)
                .map(|mib| mib << 20)
                .collect();
            config.direct_io = !args.buffered;
            config.repeats = args.repeats;
            if !config.sizes.is_empty() {
                let report = gpufn_swap::bench::run(&config)?;
                println!("{report}");
            }
            if args.wake_mib > 0 {
                let report = bench::swap::run(&bench::swap::Options {
                    dir: args.dir.clone(),
                    session_bytes: args.wake_mib << 20,
                    rounds: args.wake_rounds,
                })?;
                println!("{report}");
            }
        }
    }
    Ok(())
}

fn parse_transport(name: &str) -> anyhow::Result<bench::transport::Kind> {
    use bench::transport::Kind;
    match name.trim().to_ascii_lowercase().as_str() {
        "quic" => Ok(Kind::Quic),
        "tcp" => Ok(Kind::Tcp),
        "unix" => Ok(Kind::Unix),
        other => anyhow::bail!("unknown transport {other:?}: use quic, tcp or unix"),
    }
}
