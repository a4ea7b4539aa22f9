//! Starting and stopping function instances as processes.
//!
//! An instance is the function's program started with the gpufn stub as its `libcuda.so.1`
//! (`LD_LIBRARY_PATH` = the stub folder, as `gpufn run` does) and attached to a session the
//! gateway placed for the function's tenant (`GPUFN_WORKER`, `GPUFN_TICKET`). Its environment
//! is only what the manifest gives plus what the runner sets — never the gateway's own
//! secrets. It runs in a private working folder; stdout and stderr go to the function's log
//! (for `exec` functions stdout is the answer instead). `http` instances die with the
//! gateway; `exec` processes are killed when their request is dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::logs::{LogBuffer, Tail};
use crate::manifest::{FunctionManifest, Protocol};

/// How long a stopping instance gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Largest answer an `exec` function may write to stdout.
pub const MAX_OUTPUT_BYTES: usize = 256 << 20;

/// Everything needed to start one instance.
pub struct Launch<'a> {
    pub manifest: &'a FunctionManifest,
    /// The deployed bundle (the artifact lives here).
    pub bundle_dir: &'a Path,
    /// The instance's private working folder (created here, removed by the caller).
    pub work_dir: &'a Path,
    /// The folder with the stub as `libcuda.so.1`.
    pub stub_dir: &'a Path,
    pub instance: u64,
    pub worker_address: &'a str,
    pub ticket: &'a str,
    /// For `http` functions: the port to listen on.
    pub port: Option<u16>,
}

/// Why an instance could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start {program}: {source}")]
pub struct SpawnError {
    pub program: String,
    pub source: std::io::Error,
}

/// The program to run: commands with a `/` are relative to the bundle, bare names are
/// looked up on `PATH`.
pub fn program_path(command: &str, bundle_dir: &Path) -> PathBuf {
    if command.contains('/') {
        let relative = command.strip_prefix("./").unwrap_or(command);
        bundle_dir.join(relative)
    } else {
        PathBuf::from(command)
    }
}

/// Environment every instance gets from the gateway's own: enough to find programs and
/// trace the stub, nothing secret.
const PASSED_ENV: [&str; 4] = ["PATH", "LANG", "TZ", "GPUFN_LOG"];

pub fn spawn(launch: &Launch<'_>) -> Result<Child, SpawnError> {
    let m = launch.manifest;
    let program = program_path(&m.command, launch.bundle_dir);
    let spawn_error = |source| SpawnError {
        program: program.display().to_string(),
        source,
    };
    std::fs::create_dir_all(launch.work_dir).map_err(spawn_error)?;
    let mut command = Command::new(&program);
    command
        .args(&m.args)
        .current_dir(launch.work_dir)
        .env_clear()
        .envs(
            PASSED_ENV
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (k, v))),
        )
        .env("HOME", launch.work_dir)
        // As `gpufn run` does: CuPy sends PTX, which any worker runs. The manifest may
        // say otherwise.
        .env("CUPY_COMPILE_WITH_PTX", "1")
        .envs(&m.env)
        .env("LD_LIBRARY_PATH", launch.stub_dir)
        .env("GPUFN_WORKER", launch.worker_address)
        .env("GPUFN_TICKET", launch.ticket)
        .env("GPUFN_FUNCTION", &m.name)
        .env("GPUFN_INSTANCE", launch.instance.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let (Protocol::Http { .. }, Some(port)) = (&m.protocol, launch.port) {
        command.env("PORT", port.to_string()).stdin(Stdio::null());
    }
    let memory = m.limits.memory;
    // A pre-exec hook makes the spawn fork the whole gateway instead of using posix_spawn,
    // about 1.5 ms per process: exec functions (one process per request, ending with their
    // input) only pay it for a memory limit. Long-lived http instances always get it, so
    // they die with the gateway even when it is killed.
    let long_lived = matches!(m.protocol, Protocol::Http { .. });
    if long_lived || memory.is_some() {
        // SAFETY: the closure runs in the child between fork and exec and calls only
        // async-signal-safe functions (prctl, setrlimit); it touches no memory shared with
        // the parent's other threads.
        unsafe {
            command.pre_exec(move || {
                if long_lived && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(bytes) = memory {
                    let limit = libc::rlimit {
                        rlim_cur: bytes,
                        rlim_max: bytes,
                    };
                    if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    command.spawn().map_err(spawn_error)
}

/// Copies a stream into the function's log line by line; `tail` keeps its last bytes.
pub fn capture(
    stream: impl AsyncRead + Unpin + Send + 'static,
    logs: Arc<LogBuffer>,
    instance: u64,
    name: &'static str,
    tail: Option<Arc<Mutex<Tail>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match tokio::io::AsyncBufReadExt::read_until(&mut reader, b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if let Some(tail) = &tail {
                        tail.lock().unwrap_or_else(|p| p.into_inner()).push(&line);
                    }
                    logs.push(instance, name, &line);
                }
            }
        }
    })
}

/// What an `exec` process did with one request.
pub struct ExecOutput {
    /// `None` when it had to be killed (timeout).
    pub status: Option<std::process::ExitStatus>,
    pub stdout: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_tail: String,
}

/// Feeds `input` to a started `exec` process, collects its answer and waits for it, killing
/// it after `timeout`.
pub async fn run_exec(
    mut child: Child,
    input: bytes::Bytes,
    timeout: Duration,
    logs: Arc<LogBuffer>,
    instance: u64,
) -> ExecOutput {
    let tail = Arc::new(Mutex::new(Tail::default()));
    let stderr = child
        .stderr
        .take()
        .map(|s| capture(s, logs, instance, "stderr", Some(tail.clone())));
    let mut stdin = child.stdin.take();
    // A program may answer before reading all its input (or not read it at all): write on
    // the side so neither end can block the other.
    let writer = tokio::spawn(async move {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        }
    });
    let stdout = child.stdout.take();
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        let mut truncated = false;
        if let Some(stdout) = stdout {
            let mut limited = stdout.take(MAX_OUTPUT_BYTES as u64 + 1);
            let _ = limited.read_to_end(&mut out).await;
            if out.len() > MAX_OUTPUT_BYTES {
                out.truncate(MAX_OUTPUT_BYTES);
                truncated = true;
            }
        }
        (out, truncated)
    });
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Some(status),
        Ok(Err(_)) | Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            None
        }
    };
    writer.abort();
    let (stdout, stdout_truncated) = reader.await.unwrap_or_default();
    if let Some(stderr) = stderr {
        // The process is gone; its stderr ends once any children it left close it too.
        let _ = tokio::time::timeout(Duration::from_secs(1), stderr).await;
    }
    let stderr_tail = tail.lock().unwrap_or_else(|p| p.into_inner()).text();
    ExecOutput {
        status,
        stdout,
        stdout_truncated,
        stderr_tail,
    }
}

/// Asks a process to stop (SIGTERM), then kills it after [`STOP_GRACE`].
pub async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid this Child owns and has not reaped yet (id() is Some
        // only until the process is waited for).
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// A free TCP port on the loopback interface for an `http` instance.
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// "exit code 3", "killed by signal 11 (SIGSEGV)".
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}{}", signal_name(signal)),
        (None, None) => "ended".to_owned(),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGILL => " (SIGILL)",
        libc::SIGFPE => " (SIGFPE)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_with_a_slash_live_in_the_bundle() {
        let bundle = Path::new("/data/f/v1");
        assert_eq!(
            program_path("./build/vadd", bundle),
            bundle.join("build/vadd")
        );
        assert_eq!(program_path("bin/x", bundle), bundle.join("bin/x"));
        assert_eq!(program_path("python3", bundle), PathBuf::from("python3"));
    }

    #[test]
    fn exits_are_described_for_people() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            describe_exit(std::process::ExitStatus::from_raw(2 << 8)),
            "exit code 2"
        );
        assert_eq!(
            describe_exit(std::process::ExitStatus::from_raw(11)),
            "killed by signal 11 (SIGSEGV)"
        );
    }
}
