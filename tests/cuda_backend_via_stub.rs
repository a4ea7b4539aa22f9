//! The worker's cuda backend, end to end, without a GPU: its "driver" is gpufn's own stub,
//! which forwards every driver call to a second worker on the cpu backend.
//!
//! ```text
//! program → stub → worker B (--backend cuda, GPUFN_CUDA_ALLOW_STUB=1)
//!                     └ cudarc → stub as libcuda → worker A (--backend cpu)
//! ```
//!
//! So the backend's real code runs against a real implementation of the driver API:
//! contexts per session, the session range reserved at its fixed base and memory mapped into
//! it (the stub's VMM calls), pinned double-buffered staging copies, module loading with
//! kernel enumeration and parameter layouts, launches, streams and events, error
//! translation, and swap-out/swap-in releasing and re-mapping physical memory.
//!
//! What this setup cannot show: GPU speed, and behaviour specific to NVIDIA's driver (that
//! is `scripts/gpu-check.sh`'s job on a GPU machine). Each test starts its own pair of
//! workers: the stub in worker B holds one session with worker A for all of B's sessions, so
//! a sticky error in one would reach the next.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use support::cuda::{describe, output_text, toolchain};

fn gpufn() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gpufn"))
}

/// The stub, built next to `gpufn` (cargo does not build cdylibs for the root's tests), in a
/// folder of its own as `libcuda.so.1` and `libcuda.so`.
fn stub_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let profile_dir = gpufn().parent().unwrap().to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        command.current_dir(support::cuda::repo_root()).args([
            "build",
            "--quiet",
            "-p",
            "gpufn-stub",
        ]);
        if profile_dir.ends_with("release") {
            command.arg("--release");
        }
        let output = command.output().expect("cargo runs");
        assert!(
            output.status.success(),
            "building the stub failed: {}\n{}",
            describe(&command),
            output_text(&output)
        );
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cuda-via-stub-driver");
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["libcuda.so.1", "libcuda.so"] {
            let link = dir.join(name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(profile_dir.join("libgpufn_stub.so"), &link).unwrap();
        }
        dir
    })
}

fn compile(source: &str, name: &str) -> PathBuf {
    let path = support::cuda::repo_root()
        .join("tests/programs")
        .join(source);
    toolchain()
        .unwrap()
        .compile(&path, name, &["-arch=sm_90"])
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// A `gpufn worker` process, stopped when dropped.
struct Worker {
    child: Child,
    address: String,
    log: PathBuf,
    /// What it printed on stdout before listening (the backend line).
    banner: String,
}

impl Worker {
    fn start(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Worker {
        let address = format!("unix://{}", dir.join(format!("{name}.sock")).display());
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(gpufn())
            .args(["worker", "--listen", &address])
            .arg("--data-dir")
            .arg(dir.join(name))
            .args(args)
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("gpufn worker starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut banner = String::new();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("listening on") => break,
                Some(Ok(line)) => banner.push_str(&line),
                _ => panic!(
                    "worker {name} exited before listening:\n{banner}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        Worker {
            child,
            address,
            log,
            banner,
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

/// Worker A (cpu backend) and worker B (cuda backend driving the stub, which talks to A).
struct Chain {
    cpu: Worker,
    cuda: Worker,
}

impl Chain {
    fn start(test: &str, cuda_args: &[&str]) -> Chain {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("cuda-via-stub")
            .join(test);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cpu = Worker::start(
            &dir,
            "cpu",
            &["--backend", "cpu"],
            &[("GPUFN_LOG", "debug")],
        );
        let stub_dir = stub_dir().to_str().unwrap().to_owned();
        let mut args = vec!["--backend", "cuda"];
        args.extend_from_slice(cuda_args);
        let cuda = Worker::start(
            &dir,
            "cuda",
            &args,
            &[
                ("LD_LIBRARY_PATH", &stub_dir),
                ("GPUFN_WORKER", &cpu.address),
                ("GPUFN_CUDA_ALLOW_STUB", "1"),
                ("GPUFN_LOG", "info"),
            ],
        );
        assert!(
            cuda.banner.contains("cuda backend"),
            "worker B is not on the cuda backend: {}\n{}",
            cuda.banner,
            cuda.log()
        );
        Chain { cpu, cuda }
    }

    /// Runs `program` through the stub on worker B.
    fn run(&self, program: &Path, args: &[&str]) -> Output {
        let mut command = Command::new(gpufn());
        command
            .args(["run", "--worker", &self.cuda.address, "--"])
            .arg(program)
            .args(args);
        command.output().expect("gpufn run starts")
    }

    fn logs(&self) -> String {
        format!(
            "--- worker B (cuda) log:\n{}\n--- worker A (cpu) log (tail):\n{}",
            self.cuda.log(),
            tail(&self.cpu.log(), 40)
        )
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The same program on a private cpu-backend worker, for comparison.
fn run_on_cpu(program: &Path, args: &[&str]) -> Output {
    Command::new(gpufn())
        .args(["run", "--backend", "cpu", "--"])
        .arg(program)
        .args(args)
        .output()
        .expect("gpufn run starts")
}

/// Program output with timings (`(12.3 ms)`) removed, so two runs compare.
fn normalized(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| match line.find(" (") {
            Some(i) if line.ends_with(" ms)") => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_same_as_cpu(chain: &Chain, program: &Path, args: &[&str], marker: &str) {
    let on_cuda = chain.run(program, args);
    let on_cpu = run_on_cpu(program, args);
    assert!(
        normalized(&on_cuda).contains(marker),
        "{} through the cuda backend:\n{}\n{}",
        program.display(),
        output_text(&on_cuda),
        chain.logs()
    );
    assert_eq!(
        (on_cuda.status.code(), normalized(&on_cuda)),
        (on_cpu.status.code(), normalized(&on_cpu)),
        "the cuda backend and the cpu backend disagree\n{}",
        chain.logs()
    );
}

#[test]
fn vector_add_runs_on_the_cuda_backend() {
    let program = compile("vector_add.cu", "via-stub-vadd");
    let chain = Chain::start("vector_add", &[]);
    assert_same_as_cpu(&chain, &program, &[], "vector_add ok");
}

/// Reductions, histograms with atomics, matmul, scans, constant memory, device calls,
/// half precision, 2D copies, module variables and a device reset: the backend's modules,
/// launches, copies and memsets in one program.
#[test]
fn the_kernel_corpus_runs_on_the_cuda_backend() {
    let program = compile("corpus.cu", "via-stub-corpus");
    let chain = Chain::start("corpus", &[]);
    assert_same_as_cpu(&chain, &program, &[], "corpus ok");
}

#[test]
fn ptx_text_loads_through_the_driver_api_on_the_cuda_backend() {
    let tc = toolchain().unwrap();
    let source = support::cuda::repo_root().join("tests/programs/kernels.cu");
    let ptx = tc
        .compile(
            &source,
            "via-stub-kernels-ptx",
            &["-ptx", "-arch=compute_80"],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let dir = ptx.parent().unwrap();
    let program = dir.join("driver_api");
    let mut gcc = Command::new("gcc");
    gcc.arg(support::cuda::repo_root().join("tests/programs/driver_api.c"))
        .arg(format!("-I{}", tc.cuda_home().join("include").display()))
        .arg(format!("-L{}", stub_dir().display()))
        .arg("-lcuda")
        .arg("-o")
        .arg(&program);
    let built = gcc.output().expect("gcc runs");
    assert!(built.status.success(), "{}", output_text(&built));
    let chain = Chain::start("driver_api", &[]);
    assert_same_as_cpu(&chain, &program, &[ptx.to_str().unwrap()], "driver_api ok");
}

#[test]
fn kernel_faults_and_quota_errors_reach_the_program_as_on_the_cpu_backend() {
    let program = compile("errors.cu", "via-stub-errors");
    for case in ["oob", "quota"] {
        let chain = Chain::start(&format!("errors-{case}"), &[]);
        assert_same_as_cpu(&chain, &program, &[case], "");
    }
}

/// Swap on the cuda backend: the session's memory is read out through the staging buffers,
/// every mapping is released (the "driver" frees it), and swap-in maps memory at the same
/// addresses again and restores every byte.
#[test]
fn swap_releases_the_mappings_and_restores_every_byte_at_the_same_addresses() {
    let program = compile("swap_idle.cu", "via-stub-swap-idle");
    let chain = Chain::start("swap", &["--idle-timeout", "300ms"]);
    let output = chain.run(&program, &["64", "3000"]);
    let text = output_text(&output);
    assert!(
        output.status.success() && text.contains("swap_idle ok"),
        "{text}\n{}",
        chain.logs()
    );
    let b = chain.cuda.log();
    assert!(
        b.contains("kind=SwapOut") && b.contains("kind=SwapIn"),
        "worker B did not swap the session out and in:\n{}",
        chain.logs()
    );
    // On worker A: the mappings were freed, then the same addresses were allocated again.
    let a = chain.cpu.log();
    let allocated: Vec<&str> = a
        .lines()
        .filter(|l| l.contains("executed") && l.contains("request=MemAlloc"))
        .filter_map(|l| l.split("address: Some(").nth(1))
        .filter_map(|rest| rest.split(')').next())
        .collect();
    let freed = a
        .lines()
        .filter(|l| l.contains("executed") && l.contains("request=MemFree"))
        .count();
    assert!(freed > 0, "no mapping was released:\n{}", chain.logs());
    let first = allocated.first().expect("worker A mapped memory");
    assert!(
        allocated.iter().filter(|a| *a == first).count() >= 2,
        "0x{first} was not mapped again after swap-in: {allocated:?}"
    );
}
