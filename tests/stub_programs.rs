//! End-to-end tests of the stub: real nvcc-built programs (static and shared cudart), a C
//! program on the driver API and a Rust program on cudarc run unmodified through
//! `gpufn run` on the `cpu` backend, and must print correct results; error cases (illegal
//! address, quota, a killed or unreachable worker, another session's memory) must reach the
//! program as real CUDA errors with clear messages.
//!
//! The stub (`libgpufn_stub.so`) is a separate cdylib that `gpufn run` expects next to the
//! `gpufn` executable. Cargo does not build it for the root package's tests, so the tests run
//! `cargo build -p gpufn-stub` once, with the same profile as the `gpufn` binary under test.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::cuda::{Toolchain, describe, output_text, toolchain};

/// Longest a program may take before the test calls it hung (a guard, not a measurement).
const HANG_GUARD: Duration = Duration::from_secs(300);

fn gpufn() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gpufn"))
}

/// `target/<profile>/`, where `gpufn` and the stub live.
fn profile_dir() -> PathBuf {
    gpufn().parent().expect("gpufn has a folder").to_path_buf()
}

/// Runs `cargo build -p gpufn-stub` (plus `extra` arguments) with the profile of `gpufn`.
fn cargo_build_stub(extra: &[&str]) {
    let profile = profile_dir()
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_string();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(support::cuda::repo_root())
        .args(["build", "--quiet", "-p", "gpufn-stub"])
        .args(extra);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let output = command.output().expect("cargo runs");
    assert!(
        output.status.success(),
        "building the stub failed: {}\n{}",
        describe(&command),
        output_text(&output)
    );
}

/// The stub library (and the cudarc example program), built once per test process in one
/// cargo invocation.
fn stub_library() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| cargo_build_stub(&["--lib", "--example", "cudarc_vector_add"]));
    let library = profile_dir().join("libgpufn_stub.so");
    assert!(library.is_file(), "{} was not built", library.display());
    library
}

/// A scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("stub-programs")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// Compiles `tests/programs/<source>` with nvcc.
fn compile(tc: &Toolchain, source: &str, name: &str, flags: &[&str]) -> PathBuf {
    let path = support::cuda::repo_root()
        .join("tests/programs")
        .join(source);
    tc.compile(&path, name, flags)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// `gpufn run [options] -- program args`, with the toolchain's environment (so shared-cudart
/// programs find `libcudart.so.13`).
fn gpufn_run(tc: &Toolchain, options: &[&str], program: &Path, args: &[&str]) -> Command {
    stub_library();
    let mut command = tc.command(gpufn());
    command
        .arg("run")
        .args(["--backend", "cpu"])
        .args(options)
        .arg("--")
        .arg(program)
        .args(args);
    command
}

/// Runs `command` to completion, failing the test if it hangs.
fn finish(mut command: Command) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", describe(&command)));
    wait_guarded(child, &describe(&command))
}

fn wait_guarded(mut child: Child, what: &str) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > HANG_GUARD {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!("{what} hung\n{}", output_text(&output));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({})\n{}",
        output.status,
        output_text(output)
    );
}

/// A standalone `gpufn worker`, killed when dropped.
struct Worker {
    child: Child,
    /// Where it listens, as it printed it (for QUIC with the certificate pin).
    address: String,
}

impl Worker {
    /// A worker on a Unix socket in `dir`.
    fn start(dir: &Path) -> Worker {
        let address = format!("unix://{}", dir.join("worker.sock").display());
        Worker::start_on(dir, &address, &[])
    }

    /// A worker listening on `listen`, with `env` added to its environment.
    fn start_on(dir: &Path, listen: &str, env: &[(&str, &str)]) -> Worker {
        stub_library();
        let mut child = Command::new(gpufn())
            .args(["worker", "--backend", "cpu", "--listen", listen])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("gpufn worker starts");
        let out = child.stdout.take().expect("worker stdout");
        let mut lines = BufReader::new(out).lines();
        let address = loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("listening on") => {
                    let printed = line.split_whitespace().nth(2);
                    break printed
                        .expect("an address after `listening on`")
                        .to_string();
                }
                Some(Ok(_)) => {}
                _ => panic!("gpufn worker exited before listening on {listen}"),
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Worker { child, address }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn static_cudart_programs_print_correct_results() {
    let tc = toolchain().unwrap();
    let vadd = compile(tc, "vector_add.cu", "stub-vadd-static", &["-arch=sm_90"]);
    let output = finish(gpufn_run(tc, &[], &vadd, &[]));
    assert_success(&output, "vector_add (static cudart)");
    assert!(
        stdout(&output).contains("vector_add ok"),
        "{}",
        output_text(&output)
    );

    let corpus = compile(tc, "corpus.cu", "stub-corpus-static", &["-arch=sm_90"]);
    let output = finish(gpufn_run(tc, &[], &corpus, &[]));
    assert_success(&output, "corpus (static cudart)");
    let text = stdout(&output);
    for case in [
        "saxpy",
        "reduce",
        "histogram",
        "matmul",
        "transpose",
        "scan",
        "constant",
        "calls",
        "softmax",
        "blur",
        "half",
        "memcpy2d",
        "reset",
        "corpus",
    ] {
        assert!(
            text.contains(&format!("{case} ok")),
            "{case} missing\n{text}"
        );
    }
}

#[test]
fn shared_cudart_programs_print_correct_results() {
    let tc = toolchain().unwrap();
    let corpus = compile(
        tc,
        "corpus.cu",
        "stub-corpus-shared",
        &["-arch=sm_90", "-cudart", "shared"],
    );
    let output = finish(gpufn_run(tc, &[], &corpus, &[]));
    assert_success(&output, "corpus (shared cudart)");
    assert!(
        stdout(&output).contains("corpus ok"),
        "{}",
        output_text(&output)
    );
}

#[test]
fn per_thread_default_stream_programs_print_correct_results() {
    let tc = toolchain().unwrap();
    let corpus = compile(
        tc,
        "corpus.cu",
        "stub-corpus-ptds",
        &["-arch=sm_90", "--default-stream", "per-thread"],
    );
    let output = finish(gpufn_run(tc, &[], &corpus, &[]));
    assert_success(&output, "corpus (per-thread default stream)");
    assert!(
        stdout(&output).contains("corpus ok"),
        "{}",
        output_text(&output)
    );
}

/// Stream-ordered pools (`cudaMallocAsync`, pools, release threshold, trim), 3D copies and
/// copies split into many frames, with static and shared cudart.
#[test]
fn memory_pools_and_3d_copies_work_with_both_cudart_builds() {
    let tc = toolchain().unwrap();
    for (name, flags) in [
        ("stub-mempool-static", &["-arch=sm_90"][..]),
        (
            "stub-mempool-shared",
            &["-arch=sm_90", "-cudart", "shared"][..],
        ),
    ] {
        let program = compile(tc, "mempool.cu", name, flags);
        let output = finish(gpufn_run(tc, &[], &program, &[]));
        assert_success(&output, name);
        let text = stdout(&output);
        for case in [
            "default pool",
            "release threshold",
            "created pool",
            "memcpy3d",
            "large copies",
            "mempool",
        ] {
            assert!(
                text.contains(&format!("{case} ok")),
                "{name}: {case} missing\n{}",
                output_text(&output)
            );
        }
    }
}

/// `gpufn bench stub` runs end to end on every transport and prints its tables (the numbers
/// are not checked: timings belong in benchmarks, not tests).
#[test]
fn the_stub_benchmark_runs_on_every_transport() {
    stub_library();
    let mut command = Command::new(gpufn());
    command.args([
        "bench",
        "stub",
        "--rounds=1",
        "--iterations=20",
        "--launches=200",
        "--copy-mib=1",
        "--copy-total-mib=2",
    ]);
    let output = finish(command);
    assert_success(&output, "gpufn bench stub");
    let text = stdout(&output);
    for row in [
        "| QUIC | ",
        "| TCP | ",
        "| Unix socket | ",
        "| QUIC | 1 MiB |",
        "| TCP | 1 MiB |",
        "| Unix socket | 1 MiB |",
    ] {
        assert!(
            text.contains(row),
            "{row} missing\n{}",
            output_text(&output)
        );
    }
}

/// PTX text for the driver-API programs.
fn kernels_ptx(tc: &Toolchain, name: &str) -> PathBuf {
    compile(tc, "kernels.cu", name, &["-ptx", "-arch=compute_80"])
}

/// Compiles `tests/programs/<source>` (C on the driver API) with gcc, linked against the
/// stub as `libcuda.so` (no wheel ships the link-time stub).
fn compile_c(tc: &Toolchain, source: &str, name: &str) -> PathBuf {
    let dir = scratch(name);
    let link = dir.join("libcuda.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(stub_library(), &link).unwrap();
    let program = dir.join(name);
    let mut gcc = Command::new("gcc");
    gcc.arg(
        support::cuda::repo_root()
            .join("tests/programs")
            .join(source),
    )
    .arg(format!("-I{}", tc.cuda_home().join("include").display()))
    .arg(format!("-L{}", dir.display()))
    .arg("-lcuda")
    .arg("-o")
    .arg(&program);
    let built = gcc.output().expect("gcc runs");
    assert_success(&built, &describe(&gcc));
    program
}

#[test]
fn c_program_on_the_driver_api_runs_ptx_text() {
    let tc = toolchain().unwrap();
    let ptx = kernels_ptx(tc, "stub-driver-api-ptx");
    let program = compile_c(tc, "driver_api.c", "driver-api");
    let output = finish(gpufn_run(tc, &[], &program, &[ptx.to_str().unwrap()]));
    assert_success(&output, "driver_api");
    assert!(
        stdout(&output).contains("driver_api ok"),
        "{}",
        output_text(&output)
    );
}

/// A program that makes no CUDA call for several QUIC idle timeouts keeps its session: the
/// stub keeps the connection alive between calls (keep-alives, ACKs), not only while the
/// program is inside a call. Both sides run with a 1.5 s idle timeout (keep-alives every
/// 250 ms) instead of 30 s, so the program's 6 s pause spans four timeouts.
#[test]
fn a_program_idle_for_several_quic_timeouts_keeps_its_session() {
    use gpufn_proto::transport::quic::IDLE_TIMEOUT_ENV;
    let tc = toolchain().unwrap();
    let program = compile(tc, "swap_idle.cu", "stub-idle-quic", &[]);
    let dir = scratch("idle-quic");
    let idle_timeout = [(IDLE_TIMEOUT_ENV, "1500")];
    let worker = Worker::start_on(&dir, "quic://127.0.0.1:0", &idle_timeout);
    assert!(worker.address.starts_with("quic://"), "{}", worker.address);
    let mut run = gpufn_run(tc, &["--worker", &worker.address], &program, &["4", "6000"]);
    run.envs(idle_timeout);
    let output = finish(run);
    assert_success(&output, "swap_idle over QUIC");
    assert!(
        stdout(&output).contains("swap_idle ok"),
        "{}",
        output_text(&output)
    );
}

/// A copy of many chunks moves whole: `swap_idle` fills 40 MiB (ten 4 MiB copy chunks, more
/// than the stub keeps in flight at once) and checks every word it copies back.
#[test]
fn a_device_to_host_copy_of_many_chunks_lands_whole() {
    let tc = toolchain().unwrap();
    let program = compile(tc, "swap_idle.cu", "stub-many-chunks", &[]);
    let output = finish(gpufn_run(tc, &[], &program, &["40", "0"]));
    assert_success(&output, "swap_idle 40 MiB");
    assert!(
        stdout(&output).contains("swap_idle ok"),
        "{}",
        output_text(&output)
    );
}

/// Runs `tests/python/<script>` through `gpufn run` with the pinned Python GPU libraries
/// (`scripts/python-gpu-env.sh` installs them into `.cache/` once) and checks that it
/// printed every line of `checks`.
fn run_python_checks(script: &str, checks: &[&str]) {
    let tc = toolchain().unwrap();
    let root = support::cuda::repo_root();
    let installed = tc
        .command(root.join("scripts/python-gpu-env.sh"))
        .output()
        .expect("scripts/python-gpu-env.sh runs");
    assert!(
        installed.status.success(),
        "installing the Python GPU libraries failed: {}",
        output_text(&installed)
    );
    let python = String::from_utf8_lossy(&installed.stdout)
        .trim()
        .to_string();
    let script = root.join("tests/python").join(script);
    let output = finish(gpufn_run(
        tc,
        &[],
        Path::new(&python),
        &[script.to_str().unwrap()],
    ));
    assert_success(&output, &script.display().to_string());
    let text = stdout(&output);
    for check in checks {
        assert!(
            text.contains(check),
            "{check} missing: {}",
            output_text(&output)
        );
    }
}

/// Numba (numba-cuda over cuda-python) compiles Python kernels to PTX, links them with
/// `cuLink*` and launches them through the stub: shared memory and barriers, atomics, a 2D
/// grid, libdevice math, streams and events, each checked against NumPy.
#[test]
fn numba_kernels_run_through_the_stub() {
    run_python_checks(
        "numba_kernels.py",
        &[
            "saxpy ok",
            "block_sums ok",
            "histogram ok",
            "transpose ok",
            "sines on a stream ok",
            "numba ok",
        ],
    );
}

/// CuPy through the stub: elementwise arithmetic, CUB reductions and scans (a library
/// module of dozens of kernels, loaded with `cuLibraryLoadData`), `ElementwiseKernel` and
/// `RawKernel` compiled by NVRTC, and streams, each checked against NumPy.
#[test]
fn cupy_runs_through_the_stub() {
    run_python_checks(
        "cupy_kernels.py",
        &[
            "elementwise ok",
            "reduction (CUB) ok",
            "cumsum ok",
            "argmax ok",
            "ElementwiseKernel ok",
            "RawKernel ok",
            "stream ok",
            "cupy ok",
        ],
    );
}

/// After `fork()` the child's calls are refused with `CUDA_ERROR_NOT_INITIALIZED` and the
/// parent's session carries on with its memory intact.
#[test]
fn a_forked_child_is_refused_and_the_parent_session_survives() {
    let tc = toolchain().unwrap();
    let program = compile_c(tc, "fork.c", "fork");
    let output = finish(gpufn_run(tc, &[], &program, &[]));
    assert_success(&output, "fork");
    let text = stdout(&output);
    assert!(
        text.contains("fork child refused") && text.contains("fork ok"),
        "{}",
        output_text(&output)
    );
}

#[test]
fn rust_program_on_cudarc_runs_through_the_stub() {
    let tc = toolchain().unwrap();
    let ptx = kernels_ptx(tc, "stub-cudarc-ptx");
    stub_library();
    let program = profile_dir().join("examples/cudarc_vector_add");
    let output = finish(gpufn_run(tc, &[], &program, &[ptx.to_str().unwrap()]));
    assert_success(&output, "cudarc_vector_add");
    assert!(
        stdout(&output).contains("cudarc ok"),
        "{}",
        output_text(&output)
    );
}

#[test]
fn kernel_printf_reaches_stdout() {
    let tc = toolchain().unwrap();
    let program = compile(tc, "printf.cu", "stub-printf", &["-arch=sm_90"]);
    let output = finish(gpufn_run(tc, &[], &program, &[]));
    assert_success(&output, "printf");
    let text = stdout(&output);
    for t in 0..4 {
        assert!(
            text.contains(&format!("hello from thread {t}: {}", 100 + t)),
            "{text}"
        );
    }
}

#[test]
fn debug_log_shows_each_forwarded_call_with_its_result() {
    let tc = toolchain().unwrap();
    let program = compile(tc, "vector_add.cu", "stub-vadd-log", &["-arch=sm_90"]);
    let mut command = gpufn_run(tc, &[], &program, &[]);
    command.env("GPUFN_LOG", "debug");
    let output = finish(command);
    assert_success(&output, "vector_add with GPUFN_LOG=debug");
    let log = stderr(&output);
    for line in [
        "gpufn: cuInit -> CUDA_SUCCESS",
        "gpufn: cuMemAlloc_v2 -> CUDA_SUCCESS",
        "gpufn: cuLaunchKernel -> CUDA_SUCCESS",
        "gpufn: cuMemcpyDtoH_v2 -> CUDA_SUCCESS",
    ] {
        assert!(log.contains(line), "missing `{line}` in:\n{log}");
    }
}

#[test]
fn out_of_bounds_kernel_is_an_illegal_address() {
    let tc = toolchain().unwrap();
    let program = compile(tc, "errors.cu", "stub-errors-oob", &["-arch=sm_90"]);
    let output = finish(gpufn_run(tc, &[], &program, &["oob"]));
    assert_success(&output, "errors oob");
    assert!(
        stdout(&output).contains("oob: cudaErrorIllegalAddress"),
        "{}",
        output_text(&output)
    );
}

#[test]
fn allocation_beyond_the_quota_fails_with_memory_allocation() {
    let tc = toolchain().unwrap();
    let program = compile(tc, "errors.cu", "stub-errors-quota", &["-arch=sm_90"]);
    let output = finish(gpufn_run(
        tc,
        &["--session-memory", "64MiB"],
        &program,
        &["quota"],
    ));
    assert_success(&output, "errors quota");
    assert!(
        stdout(&output).contains("quota: cudaErrorMemoryAllocation"),
        "{}",
        output_text(&output)
    );
}

#[test]
fn unreachable_worker_is_named_in_a_clear_message() {
    let tc = toolchain().unwrap();
    let program = compile(
        tc,
        "vector_add.cu",
        "stub-vadd-unreachable",
        &["-arch=sm_90"],
    );
    let dir = scratch("unreachable");
    let address = format!("unix://{}", dir.join("nobody-listens.sock").display());
    let output = finish(gpufn_run(tc, &["--worker", &address], &program, &[]));
    assert!(!output.status.success(), "{}", output_text(&output));
    assert!(
        stderr(&output).contains(&address),
        "the message must name {address}:\n{}",
        output_text(&output)
    );
}

#[test]
fn killed_worker_fails_the_program_instead_of_hanging() {
    let tc = toolchain().unwrap();
    let program = compile(tc, "long_running.cu", "stub-long-running", &["-arch=sm_90"]);
    let dir = scratch("killed-worker");
    let mut worker = Worker::start(&dir);
    let address = worker.address.clone();
    let mut child = gpufn_run(tc, &["--worker", &address], &program, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gpufn run starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("program output");
        let started = line.starts_with("iteration 2");
        seen.push(line);
        if started {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.starts_with("iteration 2")),
        "program never ran: {seen:?}"
    );
    worker.child.kill().expect("kill the worker");
    worker.child.wait().expect("reap the worker");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let output = wait_guarded(child, "long_running after the worker died");
    assert_eq!(output.status.code(), Some(2), "rest of stdout: {rest:?}");
    assert!(
        rest.iter().any(|l| l.starts_with("error cuda")),
        "no CUDA error reported: {rest:?}"
    );
    let message = stderr(&output);
    assert!(
        message.contains("lost the worker at") && message.contains(&address),
        "{message}"
    );
}

#[test]
fn sessions_cannot_reach_each_others_memory() {
    let tc = toolchain().unwrap();
    let program = compile(tc, "isolation.cu", "stub-isolation", &["-arch=sm_90"]);
    let dir = scratch("isolation");
    let worker = Worker::start(&dir);
    let go = dir.join("go");
    let mut owner = gpufn_run(
        tc,
        &["--worker", &worker.address],
        &program,
        &["owner", go.to_str().unwrap()],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("owner starts");
    let mut lines = BufReader::new(owner.stdout.take().unwrap()).lines();
    let address = loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("address ") => {
                break line["address ".len()..].trim().to_string();
            }
            Some(Ok(_)) => {}
            _ => {
                let output = wait_guarded(owner, "owner");
                panic!("owner printed no address\n{}", output_text(&output));
            }
        }
    };

    let intruder = finish(gpufn_run(
        tc,
        &["--worker", &worker.address],
        &program,
        &["intruder", &address],
    ));
    std::fs::write(&go, b"").unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let owner_output = wait_guarded(owner, "owner");

    assert_success(&intruder, "intruder (both accesses must fail)");
    let text = stdout(&intruder);
    assert!(text.contains("read: cudaError"), "{text}");
    assert!(text.contains("write: cudaError"), "{text}");
    assert!(!text.contains("cudaSuccess"), "{text}");
    assert!(
        owner_output.status.success() && rest.iter().any(|l| l == "owner intact"),
        "owner: {rest:?}\n{}",
        output_text(&owner_output)
    );
}
