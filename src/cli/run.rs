//! `gpufn run [--worker ADDR] -- PROGRAM ARGS…`: runs a program with the stub as its
//! `libcuda.so.1`. Without `--worker`, a private worker serves the run from inside this
//! process on a Unix socket in a temporary directory, and ends with it.

use anyhow::{Context, bail};
use clap::Args;
use gpufn_proto::transport::Address;
use gpufn_worker::config::parse_size;
use gpufn_worker::{BackendChoice, Worker, WorkerConfig};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// File name cargo gives the stub's cdylib (`cargo build -p gpufn-stub`), next to `gpufn`.
pub const STUB_LIBRARY: &str = "libgpufn_stub.so";
/// How long ending the private worker may wait for work still running in it.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// Names under which programs look for the driver.
const DRIVER_NAMES: [&str; 2] = ["libcuda.so.1", "libcuda.so"];

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Worker to run on (tcp://, unix:// or quic://…?cert-sha256=…); default: a private
    /// worker for this run.
    #[arg(long)]
    pub worker: Option<String>,
    /// Device memory quota of the private worker's session.
    #[arg(long, default_value = "4GiB", value_parser = parse_size)]
    pub session_memory: u64,
    /// Backend of the private worker: auto, cpu or cuda.
    #[arg(long, default_value = "auto")]
    pub backend: BackendChoice,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "PROGRAM ARGS")]
    pub command: Vec<OsString>,
}

/// Runs the program; returns the exit code to leave with.
pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    super::init_logging("warn");
    let stub_dir = prepare_stub_dir()?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    // The program gets Ctrl-C itself; this process stays to clean up and report its exit.
    runtime.spawn(async { while tokio::signal::ctrl_c().await.is_ok() {} });
    // With GPUFN_GATEWAY (and no --worker), the gateway places the session.
    let attached = match (&args.worker, std::env::var("GPUFN_GATEWAY")) {
        (None, Ok(gateway)) if !gateway.is_empty() => {
            Some(runtime.block_on(super::attach::attach(&gateway, args.session_memory))?)
        }
        _ => None,
    };
    let private = match (&args.worker, &attached) {
        (Some(address), _) => {
            address.parse::<Address>()?;
            None
        }
        (None, Some(_)) => None,
        (None, None) => {
            Some(runtime.block_on(PrivateWorker::start(args.session_memory, args.backend))?)
        }
    };
    let address = match (&args.worker, &attached, &private) {
        (Some(address), _, _) => address.clone(),
        (None, Some(attached), _) => attached.worker_address.clone(),
        (None, None, Some(private)) => private.address.clone(),
        (None, None, None) => unreachable!("a private worker is started when no address is given"),
    };
    let ticket = attached.as_ref().map(|a| a.ticket.as_str());
    let status = run_program(&args.command, &stub_dir, &address, ticket)?;
    // A kernel of a session the program left behind must not hold up the exit.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    drop(private);
    Ok(exit_code(status))
}

/// Environment a program through the stub gets unless it sets its own.
/// `CUPY_COMPILE_WITH_PTX`: CuPy compiles its kernels to PTX instead of machine code for the
/// device it sees, so that any worker can run them (the CPU device runs PTX only, and a
/// session may later run on a different GPU model).
pub const PROGRAM_DEFAULTS: [(&str, &str); 1] = [("CUPY_COMPILE_WITH_PTX", "1")];

/// Attaches the program to a worker: today, the address the user gave or the private
/// worker's. The gateway's placement replaces this step.
fn run_program(
    command: &[OsString],
    stub_dir: &Path,
    worker: &str,
    ticket: Option<&str>,
) -> anyhow::Result<ExitStatus> {
    let (program, args) = command
        .split_first()
        .context("no program given: use gpufn run -- PROGRAM ARGS")?;
    let library_path = library_path_with(stub_dir, std::env::var_os("LD_LIBRARY_PATH"));
    tracing::debug!(?program, worker, stub = %stub_dir.display(), "starting the program");
    let mut command = Command::new(program);
    command
        .args(args)
        .env("LD_LIBRARY_PATH", library_path)
        .env("GPUFN_WORKER", worker);
    if let Some(ticket) = ticket {
        command.env("GPUFN_TICKET", ticket);
    }
    for (name, value) in PROGRAM_DEFAULTS {
        if std::env::var_os(name).is_none() {
            command.env(name, value);
        }
    }
    command.status().with_context(|| {
        format!(
            "cannot run {}: check the path (a program in the current directory is \
                 ./NAME) and that it is executable",
            Path::new(program).display()
        )
    })
}

/// `stub_dir` first, then the caller's library path without it.
fn library_path_with(stub_dir: &Path, existing: Option<OsString>) -> OsString {
    let mut dirs = vec![stub_dir.to_path_buf()];
    if let Some(existing) = existing {
        dirs.extend(std::env::split_paths(&existing).filter(|d| d != stub_dir));
    }
    std::env::join_paths(dirs).unwrap_or_else(|_| stub_dir.as_os_str().to_owned())
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    }
}

/// The directory holding the stub as `libcuda.so.1`: `GPUFN_STUB_DIR`, or `stub/` next to
/// this executable, where links to `libgpufn_stub.so` are created or refreshed.
pub fn prepare_stub_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("GPUFN_STUB_DIR") {
        let dir = PathBuf::from(dir);
        if !dir.join("libcuda.so.1").is_file() {
            bail!(
                "GPUFN_STUB_DIR is {} but it holds no libcuda.so.1; point it at a directory \
                 with the stub as libcuda.so.1, or unset it to use the stub built next to gpufn",
                dir.display()
            );
        }
        return Ok(dir);
    }
    let exe = std::env::current_exe().context("cannot find the gpufn executable's path")?;
    let exe_dir = exe
        .parent()
        .context("the gpufn executable has no parent directory")?;
    let library = exe_dir.join(STUB_LIBRARY);
    if !library.is_file() {
        bail!(
            "the gpufn stub library is missing: expected {}; build it with `cargo build -p \
             gpufn-stub` (same profile as gpufn), or set GPUFN_STUB_DIR to a directory \
             holding the stub as libcuda.so.1",
            library.display()
        );
    }
    let dir = exe_dir.join("stub");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for name in DRIVER_NAMES {
        link_atomically(
            Path::new("..").join(STUB_LIBRARY).as_os_str(),
            &dir.join(name),
        )?;
    }
    Ok(dir)
}

/// Points `link` at `target`, replacing whatever is there in one step (several runs may
/// start at once).
fn link_atomically(target: &OsStr, link: &Path) -> anyhow::Result<()> {
    if std::fs::read_link(link).is_ok_and(|t| t.as_os_str() == target) {
        return Ok(());
    }
    let temporary = link.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(target, &temporary)
        .and_then(|()| std::fs::rename(&temporary, link))
        .with_context(|| format!("cannot create the link {}", link.display()))
}

/// A worker inside this process serving one run on a Unix socket; dropping it (with the
/// runtime it serves on) ends it and removes its directory.
struct PrivateWorker {
    address: String,
    dir: PathBuf,
}

impl PrivateWorker {
    async fn start(session_memory: u64, backend: BackendChoice) -> anyhow::Result<Self> {
        let dir = private_dir()?;
        let guard = PrivateWorker {
            address: format!("unix://{}", dir.join("worker.sock").display()),
            dir,
        };
        let config = WorkerConfig {
            backend,
            session_memory,
            ..WorkerConfig::default()
        };
        let worker = Worker::new(config)?;
        let address: Address = guard.address.parse()?;
        let listener = worker.bind(&address, Some(&guard.dir)).await?;
        tokio::spawn(async move { worker.serve(listener).await });
        Ok(guard)
    }
}

impl Drop for PrivateWorker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A new directory only this user can enter, for the private worker's socket.
fn private_dir() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let dir = base.join(format!("gpufn-run-{}-{attempt}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create {}", dir.display()));
            }
        }
    }
    bail!(
        "cannot create a private directory in {}: clean up old gpufn-run-* entries",
        base.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stub_directory_comes_first_once() {
        let stub = Path::new("/opt/gpufn/stub");
        let path = library_path_with(stub, Some("/usr/lib:/opt/gpufn/stub:/x".into()));
        assert_eq!(path, OsString::from("/opt/gpufn/stub:/usr/lib:/x"));
        assert_eq!(
            library_path_with(stub, None),
            OsString::from("/opt/gpufn/stub")
        );
    }

    #[test]
    fn exit_codes_are_forwarded_and_signals_become_128_plus() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }
}
