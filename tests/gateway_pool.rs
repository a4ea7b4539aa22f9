//! A pool of real processes: `gpufn gateway`, two `gpufn worker --backend cpu --gateway …`
//! and nvcc-built programs started with `gpufn run` through the gateway (GPUFN_GATEWAY,
//! GPUFN_TOKEN, GPUFN_QOS).
//!
//! * Reclaim: two low-QoS programs fill device memory and go idle; a high-QoS program that
//!   needs the memory is placed by making the gateway swap one of them out on its worker; the
//!   low-QoS programs then resume and find every byte (swapped back in at the same addresses).
//! * A killed worker: its program's next call fails with a CUDA error, the gateway drops the
//!   worker from `/v1/pool` after its lease and ends its session with the reason, new
//!   sessions land on the other worker, and the program there is unaffected.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::cuda::{Toolchain, describe, output_text, toolchain};

/// Longest a step may take before the test calls it hung (a guard, not a measurement).
const HANG_GUARD: Duration = Duration::from_secs(300);
/// Device memory each worker offers; a program's session asks for `SESSION`, so one fits per
/// worker and a third needs memory reclaimed.
const WORKER_MEMORY: &str = "16MiB";
const SESSION: &str = "12MiB";
/// What each program writes and verifies.
const PROGRAM_MIB: &str = "8";

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

/// Everything a child process printed, collected by a thread so its pipe never fills.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<String>>);

impl Collected {
    fn from(pipe: impl Read + Send + 'static) -> Collected {
        let collected = Collected::default();
        let sink = collected.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut text = sink.0.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        collected
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// A child process killed when dropped, with its output collected.
struct Process {
    name: String,
    child: Child,
    stdout: Collected,
    stderr: Collected,
}

impl Process {
    fn spawn(name: &str, command: &mut Command) -> Process {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", describe(command)));
        Process {
            name: name.to_owned(),
            stdout: Collected::from(child.stdout.take().unwrap()),
            stderr: Collected::from(child.stderr.take().unwrap()),
            child,
        }
    }

    fn output(&self) -> String {
        format!(
            "--- {} stdout:\n{}--- {} stderr:\n{}",
            self.name,
            self.stdout.text(),
            self.name,
            self.stderr.text()
        )
    }

    /// Waits until stdout has a line containing `needle`; returns that line.
    fn wait_for_line(&mut self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.stdout.text().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the collector threads finish reading.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "{} exited ({status}) before printing `{needle}`\n{}",
                    self.name,
                    self.output()
                );
            }
            assert!(
                start.elapsed() < HANG_GUARD,
                "{} did not print `{needle}`\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit; its exit code (signals as 128 + n).
    fn wait(&mut self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                use std::os::unix::process::ExitStatusExt;
                return status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            }
            assert!(
                start.elapsed() < HANG_GUARD,
                "{} hung\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `gpufn gateway` on loopback ports with fast heartbeats and a short lease.
struct Gateway {
    process: Process,
    http: String,
    control: String,
    admin: String,
    data_dir: PathBuf,
}

impl Gateway {
    fn start(dir: &Path) -> Gateway {
        let data_dir = dir.join("gateway");
        let mut process = Process::spawn(
            "gateway",
            Command::new(gpufn())
                .args(["gateway", "--http", "127.0.0.1:0"])
                .args(["--control", "tcp://127.0.0.1:0"])
                .args(["--heartbeat-ms", "200", "--lease-ms", "2000"])
                // Only reclaim swaps sessions out in this test, not the idle timeout.
                .args(["--idle-timeout", "10m", "--reclaim-min-idle", "1s"])
                .arg("--data-dir")
                .arg(&data_dir)
                .env("NO_COLOR", "1"),
        );
        let value = |line: String| line.rsplit(' ').next().unwrap().trim().to_owned();
        let http = value(process.wait_for_line("HTTP API:"));
        let control = value(process.wait_for_line("control:"));
        let admin = value(process.wait_for_line("admin token"));
        Gateway {
            process,
            http,
            control,
            admin,
            data_dir,
        }
    }

    fn token(&self, tenant: &str, scope: &str) -> String {
        let output = Command::new(gpufn())
            .args(["token", "create", "--tenant", tenant, "--scope", scope])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", output_text(&output));
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// `GET path` with the admin token.
    fn get(&self, path: &str) -> Value {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(gpufn_gateway::client::get_json(
                &self.http,
                path,
                Some(&self.admin),
            ))
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.process.output()))
    }

    /// The sessions of `tenant` (ended ones too).
    fn sessions(&self, tenant: &str) -> Vec<Value> {
        self.get(&format!("/v1/sessions?tenant={tenant}&all=true"))["sessions"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// The one session of `tenant`.
    fn session(&self, tenant: &str) -> Value {
        let sessions = self.sessions(tenant);
        assert_eq!(sessions.len(), 1, "{sessions:?}");
        sessions[0].clone()
    }

    fn workers(&self) -> Vec<String> {
        self.get("/v1/pool")["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Polls until `condition` holds (guarded against hangs).
    fn eventually(&self, what: &str, condition: impl Fn(&Gateway) -> bool) {
        let start = Instant::now();
        while !condition(self) {
            assert!(
                start.elapsed() < HANG_GUARD,
                "never happened: {what}\n{}",
                self.process.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `gpufn worker --backend cpu` joined to the gateway.
fn start_worker(dir: &Path, gateway: &Gateway, id: &str) -> Process {
    let mut worker = Process::spawn(
        id,
        Command::new(gpufn())
            .args(["worker", "--backend", "cpu"])
            .args(["--listen", "tcp://127.0.0.1:0"])
            .args(["--gateway", &gateway.control, "--worker-id", id])
            .args(["--device-memory", WORKER_MEMORY, "--idle-timeout", "10m"])
            .arg("--data-dir")
            .arg(dir.join(id))
            .env("GPUFN_TOKEN", gateway.token("workers", "worker"))
            .env("NO_COLOR", "1"),
    );
    worker.wait_for_line("joined the gateway");
    worker
}

/// `gpufn run -- swap_idle MIB -` for `tenant` at `qos`, placed by the gateway. It waits
/// after filling its memory until its stdin gets a line or closes (see [`resume`]).
fn start_program(
    tc: &Toolchain,
    program: &Path,
    gateway: &Gateway,
    tenant: &str,
    qos: &str,
) -> (Process, ChildStdin) {
    let mut command = tc.command(gpufn());
    command
        .args(["run", "--session-memory", SESSION, "--"])
        .arg(program)
        .arg(PROGRAM_MIB)
        .arg("-")
        .env("GPUFN_GATEWAY", &gateway.control)
        .env("GPUFN_TOKEN", gateway.token(tenant, "session"))
        .env("GPUFN_QOS", qos)
        .stdin(Stdio::piped());
    let mut process = Process::spawn(tenant, &mut command);
    let stdin = process.child.stdin.take().unwrap();
    (process, stdin)
}

/// Lets a waiting program go on with its checks.
fn resume(mut stdin: ChildStdin) {
    let _ = stdin.write_all(b"\n");
}

fn assert_verified(program: &mut Process) {
    let code = program.wait();
    assert!(
        code == 0 && program.stdout.text().contains("swap_idle ok"),
        "{} exited with {code}\n{}",
        program.name,
        program.output()
    );
}

fn worker_of(session: &Value) -> String {
    session["worker"].as_str().unwrap().to_owned()
}

#[test]
fn a_pool_of_real_workers_reclaims_memory_for_higher_qos_and_survives_a_killed_worker() {
    let tc = toolchain().unwrap();
    let source = support::cuda::repo_root().join("tests/programs/swap_idle.cu");
    let program = tc
        .compile(&source, "gateway-pool-swap-idle", &["-arch=sm_90"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    stub_library();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gateway-pool");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let gateway = Gateway::start(&dir);
    let mut workers = [
        start_worker(&dir, &gateway, "w1"),
        start_worker(&dir, &gateway, "w2"),
    ];
    gateway.eventually("both workers are in the pool", |g| g.workers().len() == 2);

    // Two low-QoS programs fill their memory and go idle: one per worker (a second does not
    // fit next to the first).
    let (mut low_a, low_a_in) = start_program(tc, &program, &gateway, "batch-a", "low");
    low_a.wait_for_line("filled");
    let (mut low_b, low_b_in) = start_program(tc, &program, &gateway, "batch-b", "low");
    low_b.wait_for_line("filled");
    let (a, b) = (gateway.session("batch-a"), gateway.session("batch-b"));
    assert_ne!(worker_of(&a), worker_of(&b), "{a}\n{b}");
    // Reclaim takes only sessions idle for the reclaim minimum (1 s).
    gateway.eventually("the low-QoS sessions are idle", |g| {
        let pool = g.get("/v1/pool");
        let now = pool["now_ms"].as_u64().unwrap();
        let sessions = pool["sessions"].as_array().unwrap();
        sessions.len() == 2
            && sessions
                .iter()
                .all(|s| now.saturating_sub(s["last_active_ms"].as_u64().unwrap()) > 1500)
    });

    // A high-QoS program needs a whole worker's free memory: the gateway swaps an idle
    // low-QoS session out on its worker before it answers the attach.
    let (mut high, high_in) = start_program(tc, &program, &gateway, "studio", "high");
    drop(high_in);
    assert_verified(&mut high);
    let high_worker = worker_of(&gateway.session("studio"));
    let (victim, bystander) = if worker_of(&a) == high_worker {
        ("batch-a", "batch-b")
    } else {
        ("batch-b", "batch-a")
    };
    let victim_session = gateway.session(victim);
    assert_eq!(victim_session["state"], "swapped_out", "{victim_session}");
    assert_eq!(gateway.session(bystander)["state"], "resident");

    // The low-QoS programs resume: the swapped one is brought back at the same addresses,
    // and both find every byte they wrote.
    resume(low_a_in);
    resume(low_b_in);
    assert_verified(&mut low_a);
    assert_verified(&mut low_b);
    // The worker reported the swap in its heartbeats: the ledger bills it.
    let victim_id = victim_session["id"].as_u64().unwrap();
    gateway.eventually("the swap-out is metered", |g| {
        g.get(&format!("/v1/sessions/{victim_id}"))["usage"]["swap_events"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
    gateway.eventually("the finished programs' sessions end", |g| {
        g.get("/v1/pool")["sessions"].as_array().unwrap().is_empty()
    });

    // One program per worker again; kill the worker under the first.
    let (mut doomed, doomed_in) = start_program(tc, &program, &gateway, "alpha", "medium");
    doomed.wait_for_line("filled");
    let (mut survivor, survivor_in) = start_program(tc, &program, &gateway, "beta", "medium");
    survivor.wait_for_line("filled");
    let killed = worker_of(&gateway.session("alpha"));
    let kept = worker_of(&gateway.session("beta"));
    assert_ne!(killed, kept);
    let index = usize::from(killed == "w2");
    workers[index].kill();

    // Within the lease the worker leaves the pool and its session ends with the reason.
    gateway.eventually("the killed worker leaves /v1/pool", |g| {
        g.workers() == vec![kept.clone()]
    });
    let lost = gateway.session("alpha");
    assert!(
        lost["end_reason"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("worker {killed} was lost")),
        "{lost}"
    );
    // The program on the killed worker fails at its next call with a CUDA error.
    resume(doomed_in);
    let code = doomed.wait();
    assert_eq!(code, 2, "{}", doomed.output());
    assert!(
        doomed.stdout.text().contains("CUDA error"),
        "{}",
        doomed.output()
    );

    // The program on the other worker is unaffected, and new sessions land there.
    resume(survivor_in);
    assert_verified(&mut survivor);
    gateway.eventually("the finished program's session ends", |g| {
        g.session("beta")["state"] == "ended"
    });
    let (mut late, late_in) = start_program(tc, &program, &gateway, "gamma", "medium");
    drop(late_in);
    assert_verified(&mut late);
    assert_eq!(worker_of(&gateway.session("gamma")), kept);
}
