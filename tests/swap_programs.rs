//! End-to-end swap: a real nvcc-built program fills device memory through the stub, stays
//! idle past a standalone worker's idle timeout (the worker swaps the session out and logs
//! it), then verifies every byte with a kernel and after a copy back (the session was swapped
//! in at the same addresses).

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::cuda::{describe, output_text, toolchain};

/// Longest the program may take before the test calls it hung (a guard, not a measurement).
const HANG_GUARD: Duration = Duration::from_secs(300);

fn gpufn() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gpufn"))
}

/// Builds the stub next to `gpufn` (cargo does not build cdylibs for the root's tests).
fn stub_library() {
    let profile_dir = gpufn().parent().unwrap().to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(support::cuda::repo_root()).args([
        "build",
        "--quiet",
        "-p",
        "gpufn-stub",
        "--lib",
    ]);
    if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
        command.arg("--release");
    }
    let output = command.output().expect("cargo runs");
    assert!(
        output.status.success(),
        "building the stub failed: {}\n{}",
        describe(&command),
        output_text(&output)
    );
}

struct Worker {
    child: Child,
    address: String,
    log: PathBuf,
}

impl Worker {
    fn start(dir: &Path, extra: &[&str]) -> Worker {
        let address = format!("unix://{}", dir.join("worker.sock").display());
        let log = dir.join("worker.log");
        let mut child = Command::new(gpufn())
            .args(["worker", "--backend", "cpu", "--listen", &address])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(extra)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("gpufn worker starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("listening on") => break,
                Some(Ok(_)) => {}
                _ => panic!("gpufn worker exited before listening on {address}"),
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        Worker {
            child,
            address,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_program_idle_past_the_timeout_is_swapped_out_and_resumes_with_every_byte() {
    let tc = toolchain().unwrap();
    let source = support::cuda::repo_root().join("tests/programs/swap_idle.cu");
    let program = tc
        .compile(&source, "swap-idle", &["-arch=sm_90"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    stub_library();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("swap-programs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let swap_dir = dir.join("swap");
    let worker = Worker::start(
        &dir,
        &[
            "--idle-timeout",
            "300ms",
            "--host-swap-budget",
            "1MiB",
            "--swap-dir",
            swap_dir.to_str().unwrap(),
        ],
    );

    let mut command = tc.command(gpufn());
    command
        .args(["run", "--backend", "cpu", "--worker", &worker.address, "--"])
        .arg(&program)
        .args(["16", "3000"]);
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", describe(&command)));
    let start = Instant::now();
    let mut child = child;
    let output = loop {
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        if start.elapsed() > HANG_GUARD {
            let _ = child.kill();
            panic!("{} hung", describe(&command));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = worker.log();
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains("swap_idle ok"),
        "{}\nworker log:\n{log}",
        output_text(&output)
    );
    // The 1 MiB host budget is too small: the 16 MiB session went to disk and came back.
    assert!(
        log.contains("SwapOut") && log.contains("to=disk"),
        "the worker did not swap the idle session out to disk:\n{log}"
    );
    assert!(
        log.contains("SwapIn") && log.contains("from=disk"),
        "the worker did not swap the session in:\n{log}"
    );
}
