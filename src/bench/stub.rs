//! `gpufn bench stub`: what a program sees through the stub, next to the bare transport.
//!
//! For each transport (QUIC, TCP, Unix socket) a worker on the CPU backend serves sessions
//! from inside this process, and a child process (`gpufn bench stub-client`, hidden) loads
//! the stub as its driver (`dlopen` of `libcuda.so.1` from the stub directory, exactly what a
//! program's loader would find) and measures, on the driver API:
//! - the round trip of a synchronous call with nothing queued (`cuCtxSynchronize`);
//! - empty-kernel launches enqueued per second (`cuLaunchKernel`, then one synchronisation);
//! - host→device (`cuMemcpyHtoD` + `cuCtxSynchronize`) and device→host (`cuMemcpyDtoH`)
//!   throughput for each copy size.
//!
//! In the same run and the same rounds, `bench::transport` measures the raw transport: the
//! round trip of an echo of the same bytes as the protocol's minimal call, and the bulk
//! throughput of the same number of bytes in 1 MiB writes answered by one byte (so a 1 MiB
//! baseline pays one round trip, like a 1 MiB synchronous copy). Baseline and stub take turns
//! within every round, each going first every other round, and the reported figures are
//! medians over the rounds.

use std::ffi::{CString, c_char, c_int, c_void};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gpufn_proto::transport::Address;
use gpufn_worker::{BackendChoice, Worker, WorkerConfig};
use serde_json::{Value, json};

use super::transport::{self, Kind};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    pub kinds: Vec<Kind>,
    /// Baseline and stub take turns this many times.
    pub rounds: usize,
    /// Synchronous calls timed per round (stub and raw transport each).
    pub rtt_iterations: usize,
    /// Empty-kernel launches enqueued per round.
    pub launches: usize,
    /// Copy sizes in bytes.
    pub copy_sizes: Vec<u64>,
    /// Each copy size is repeated until at least this many bytes moved per direction and round.
    pub copy_bytes_per_size: u64,
    /// The directory holding the stub as `libcuda.so.1`.
    pub stub_dir: PathBuf,
    /// Scratch space for sockets and the development certificate.
    pub scratch_dir: PathBuf,
}

impl Options {
    pub fn new(stub_dir: PathBuf) -> Self {
        Options {
            kinds: Kind::ALL.to_vec(),
            rounds: 3,
            rtt_iterations: 5_000,
            launches: 200_000,
            copy_sizes: vec![1 << 20, 16 << 20, 256 << 20, 1 << 30],
            copy_bytes_per_size: 256 << 20,
            stub_dir,
            scratch_dir: std::env::temp_dir()
                .join(format!("gpufn-bench-stub-{}", std::process::id())),
        }
    }

    /// Repetitions of one copy of `size` bytes per round.
    fn copy_reps(&self, size: u64) -> usize {
        (self.copy_bytes_per_size.div_ceil(size.max(1)) as usize).max(2)
    }
}

/// One copy size's throughputs in MiB/s (medians over the rounds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CopyRow {
    pub size: u64,
    pub raw: f64,
    pub htod: f64,
    pub dtoh: f64,
}

impl CopyRow {
    /// The slower direction through the stub over the raw transport.
    pub fn ratio(&self) -> f64 {
        self.htod.min(self.dtoh) / self.raw
    }
}

/// One transport's results.
#[derive(Debug, Clone)]
pub struct Row {
    pub kind: Kind,
    /// p50 round trip of the raw transport and of `cuCtxSynchronize` through the stub (µs).
    pub raw_rtt_us: f64,
    pub stub_rtt_us: f64,
    /// p99 of the same.
    pub raw_rtt_p99_us: f64,
    pub stub_rtt_p99_us: f64,
    /// Launches enqueued per second, and executed per second (enqueue + the final sync).
    pub launches_issued: f64,
    pub launches_executed: f64,
    /// CPU time the program (stub included) spent per launch while enqueueing, in µs: what
    /// the stub itself costs, apart from waiting for a worker that executes more slowly.
    pub launch_cpu_us: f64,
    pub copies: Vec<CopyRow>,
}

impl Row {
    pub fn rtt_overhead(&self) -> f64 {
        self.stub_rtt_us / self.raw_rtt_us - 1.0
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub machine: String,
    pub options: Options,
    pub rows: Vec<Row>,
}

/// Runs the benchmark for every transport in `options.kinds`.
pub fn run(options: &Options) -> anyhow::Result<Report> {
    let library = options.stub_dir.join("libcuda.so.1");
    if !library.is_file() {
        bail!(
            "no stub at {}: build it with `cargo build --release -p gpufn-stub`",
            library.display()
        );
    }
    std::fs::create_dir_all(&options.scratch_dir)
        .with_context(|| format!("cannot create {}", options.scratch_dir.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start tokio")?;
    let mut rows = Vec::new();
    for &kind in &options.kinds {
        let row = measure(&runtime, kind, options)
            .with_context(|| format!("benchmarking the stub over {kind:?}"))?;
        rows.push(row);
    }
    let _ = std::fs::remove_dir_all(&options.scratch_dir);
    Ok(Report {
        machine: super::transport::machine_description(),
        options: options.clone(),
        rows,
    })
}

/// Medians of one side's samples over the rounds.
#[derive(Default)]
struct Samples {
    rtt_p50: Vec<f64>,
    rtt_p99: Vec<f64>,
    issued: Vec<f64>,
    executed: Vec<f64>,
    launch_cpu: Vec<f64>,
    /// Per copy size: (raw, htod, dtoh) per round.
    copies: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)>,
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    kind: Kind,
    options: &Options,
) -> anyhow::Result<Row> {
    let address = runtime.block_on(start_worker(kind, options))?;
    let mut raw = Samples {
        copies: vec![Default::default(); options.copy_sizes.len()],
        ..Default::default()
    };
    let mut stub = Samples {
        copies: vec![Default::default(); options.copy_sizes.len()],
        ..Default::default()
    };
    for round in 0..options.rounds.max(1) {
        let stub_first = round % 2 == 1;
        if stub_first {
            stub_round(&address, options, &mut stub)?;
        }
        runtime.block_on(raw_round(kind, options, round, &mut raw))?;
        if !stub_first {
            stub_round(&address, options, &mut stub)?;
        }
    }
    let copies = options
        .copy_sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| CopyRow {
            size,
            raw: median(raw.copies[i].0.clone()),
            htod: median(stub.copies[i].1.clone()),
            dtoh: median(stub.copies[i].2.clone()),
        })
        .collect();
    Ok(Row {
        kind,
        raw_rtt_us: median(raw.rtt_p50),
        stub_rtt_us: median(stub.rtt_p50),
        raw_rtt_p99_us: median(raw.rtt_p99),
        stub_rtt_p99_us: median(stub.rtt_p99),
        launches_issued: median(stub.issued),
        launches_executed: median(stub.executed),
        launch_cpu_us: median(stub.launch_cpu),
        copies,
    })
}

/// A CPU-backend worker serving from this process's runtime; returns its address (with the
/// certificate pin for QUIC).
async fn start_worker(kind: Kind, options: &Options) -> anyhow::Result<String> {
    let largest = options.copy_sizes.iter().copied().max().unwrap_or(0);
    let config = WorkerConfig {
        backend: BackendChoice::Cpu,
        session_memory: (largest + (256 << 20)).max(1 << 30),
        ..WorkerConfig::default()
    };
    let mut config = config;
    config.swap.device_memory = config.swap.device_memory.max(config.session_memory * 2);
    let worker = Worker::new(config)?;
    let address: Address = match kind {
        Kind::Quic => "quic://127.0.0.1:0".parse()?,
        Kind::Tcp => "tcp://127.0.0.1:0".parse()?,
        Kind::Unix => format!(
            "unix://{}",
            options
                .scratch_dir
                .join(format!("worker-{kind:?}.sock"))
                .display()
        )
        .parse()?,
    };
    let certs = options.scratch_dir.join("worker");
    std::fs::create_dir_all(&certs)?;
    let listener = worker.bind(&address, Some(&certs)).await?;
    let local = listener.local_address().to_string();
    tokio::spawn(async move { worker.serve(listener).await });
    Ok(local)
}

/// The raw transport's round trip and per-size bulk throughput, through `bench::transport`.
async fn raw_round(
    kind: Kind,
    options: &Options,
    round: usize,
    raw: &mut Samples,
) -> anyhow::Result<()> {
    let base = transport::Options {
        kinds: vec![kind],
        udp_context: false,
        scratch_dir: options.scratch_dir.join(format!("raw-{round}")),
        ..transport::Options::default()
    };
    // Each measurement gets its own folder: a listener being dropped removes its socket
    // file, which must not be the next measurement's.
    let rtt = transport::run(&transport::Options {
        rtt_iterations: options.rtt_iterations,
        bulk_bytes: 1 << 20,
        rounds: 1,
        scratch_dir: base.scratch_dir.join("rtt"),
        ..base.clone()
    })
    .await?;
    let row = &rtt.rows[0];
    raw.rtt_p50.push(row.raw.rtt.p50_us);
    raw.rtt_p99.push(row.raw.rtt.p99_us);
    for (i, &size) in options.copy_sizes.iter().enumerate() {
        let bulk = transport::run(&transport::Options {
            rtt_iterations: 1,
            bulk_bytes: size,
            bulk_frame: size.min(1 << 20) as usize,
            rounds: options.copy_reps(size),
            scratch_dir: base.scratch_dir.join(format!("bulk-{size}")),
            ..base.clone()
        })
        .await?;
        raw.copies[i].0.push(bulk.rows[0].raw.bulk);
    }
    Ok(())
}

/// One child process measuring through the stub.
fn stub_round(address: &str, options: &Options, stub: &mut Samples) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the gpufn executable")?;
    let sizes: Vec<String> = options.copy_sizes.iter().map(u64::to_string).collect();
    let output = Command::new(exe)
        .args(["bench", "stub-client"])
        .arg("--stub-dir")
        .arg(&options.stub_dir)
        .arg(format!("--rtt-iterations={}", options.rtt_iterations))
        .arg(format!("--launches={}", options.launches))
        .arg(format!("--copy-sizes={}", sizes.join(",")))
        .arg(format!(
            "--copy-bytes-per-size={}",
            options.copy_bytes_per_size
        ))
        .env("GPUFN_WORKER", address)
        .output()
        .context("cannot start the stub client")?;
    if !output.status.success() {
        bail!(
            "the stub client failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .last()
        .context("the stub client printed nothing")?;
    let result: Value = serde_json::from_str(line).context("the stub client's output")?;
    let number = |v: &Value| v.as_f64().context("a number in the stub client's output");
    stub.rtt_p50.push(number(&result["rtt_p50_us"])?);
    stub.rtt_p99.push(number(&result["rtt_p99_us"])?);
    stub.issued.push(number(&result["launches_issued"])?);
    stub.executed.push(number(&result["launches_executed"])?);
    stub.launch_cpu.push(number(&result["launch_cpu_us"])?);
    let copies = result["copies"]
        .as_array()
        .context("copies in the stub client's output")?;
    for (i, copy) in copies.iter().enumerate().take(stub.copies.len()) {
        stub.copies[i].1.push(number(&copy["htod"])?);
        stub.copies[i].2.push(number(&copy["dtoh"])?);
    }
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64()
}

// ---------------------------------------------------------------------------------------
// The child: a driver-API program with the stub loaded as its `libcuda.so.1`.

/// What the child measures; its answer is one JSON line on stdout.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub stub_dir: PathBuf,
    pub rtt_iterations: usize,
    pub launches: usize,
    pub copy_sizes: Vec<u64>,
    pub copy_bytes_per_size: u64,
}

/// An empty kernel, as PTX text (the CPU backend and a real driver both load it).
const EMPTY_KERNEL_PTX: &str = "\
.version 8.0
.target sm_80
.address_size 64
.visible .entry empty()
{
    ret;
}
\0";

pub fn client(options: &ClientOptions) -> anyhow::Result<()> {
    let driver = Driver::open(&options.stub_dir.join("libcuda.so.1"))?;
    // SAFETY: the functions have the signatures of `cuda.h`, and every pointer passed is
    // valid for the call.
    unsafe {
        check("cuInit", (driver.init)(0))?;
        let mut device = 0;
        check("cuDeviceGet", (driver.device_get)(&mut device, 0))?;
        let mut context = 0;
        check(
            "cuDevicePrimaryCtxRetain",
            (driver.primary_ctx_retain)(&mut context, device),
        )?;
        check("cuCtxSetCurrent", (driver.ctx_set_current)(context))?;
        check("cuCtxSynchronize", (driver.ctx_synchronize)())?;
    }
    let (rtt_p50, rtt_p99) = sync_round_trips(&driver, options.rtt_iterations)?;
    let (issued, executed, launch_cpu) = launch_rate(&driver, options.launches)?;
    let mut copies = Vec::new();
    for &size in &options.copy_sizes {
        let reps = (options.copy_bytes_per_size.div_ceil(size.max(1)) as usize).max(2);
        let (htod, dtoh) = copy_throughput(&driver, size as usize, reps)?;
        copies.push(json!({ "size": size, "htod": htod, "dtoh": dtoh }));
    }
    let result = json!({
        "rtt_p50_us": rtt_p50,
        "rtt_p99_us": rtt_p99,
        "launches_issued": issued,
        "launches_executed": executed,
        "launch_cpu_us": launch_cpu,
        "copies": copies,
    });
    println!("{result}");
    Ok(())
}

fn sync_round_trips(driver: &Driver, iterations: usize) -> anyhow::Result<(f64, f64)> {
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations.max(1) {
        let start = Instant::now();
        // SAFETY: no arguments; a context is current.
        check("cuCtxSynchronize", unsafe { (driver.ctx_synchronize)() })?;
        samples.push(start.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Ok((at(0.5), at(0.99)))
}

/// Launches enqueued per second, executed per second (including the final sync), and this
/// process's CPU time per launch while enqueueing (µs).
fn launch_rate(driver: &Driver, launches: usize) -> anyhow::Result<(f64, f64, f64)> {
    let mut module = 0u64;
    let mut function = 0u64;
    let name = CString::new("empty").expect("no NUL");
    // SAFETY: the image is NUL-terminated PTX text; out-pointers are valid.
    unsafe {
        check(
            "cuModuleLoadData",
            (driver.module_load_data)(&mut module, EMPTY_KERNEL_PTX.as_ptr().cast()),
        )?;
        check(
            "cuModuleGetFunction",
            (driver.module_get_function)(&mut function, module, name.as_ptr()),
        )?;
    }
    let launch = || {
        // SAFETY: the kernel takes no parameters; stream 0 is the default stream.
        let rc = unsafe {
            (driver.launch_kernel)(
                function,
                1,
                1,
                1,
                1,
                1,
                1,
                0,
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        check("cuLaunchKernel", rc)
    };
    launch()?;
    // SAFETY: no arguments.
    check("cuCtxSynchronize", unsafe { (driver.ctx_synchronize)() })?;
    let cpu = process_cpu_time();
    let start = Instant::now();
    for _ in 0..launches {
        launch()?;
    }
    let issued = start.elapsed();
    let cpu = process_cpu_time().saturating_sub(cpu);
    // SAFETY: no arguments.
    check("cuCtxSynchronize", unsafe { (driver.ctx_synchronize)() })?;
    let executed = start.elapsed();
    let n = launches as f64;
    Ok((
        n / issued.as_secs_f64(),
        n / executed.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / n.max(1.0),
    ))
}

/// CPU time used so far by this process, all threads.
fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_PROCESS_CPUTIME_ID exists on Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Median throughput (MiB/s) of `reps` host→device copies (each followed by a sync, so the
/// worker holds the bytes) and `reps` device→host copies of `size` bytes, pageable memory.
fn copy_throughput(driver: &Driver, size: usize, reps: usize) -> anyhow::Result<(f64, f64)> {
    let mut host = vec![0x5au8; size];
    let mut device = 0u64;
    // SAFETY: out-pointer.
    check("cuMemAlloc", unsafe {
        (driver.mem_alloc)(&mut device, size)
    })?;
    let htod = || {
        let start = Instant::now();
        // SAFETY: `host` holds `size` bytes; `device` was allocated with `size` bytes.
        check("cuMemcpyHtoD", unsafe {
            (driver.memcpy_htod)(device, host.as_ptr().cast(), size)
        })?;
        // SAFETY: no arguments.
        check("cuCtxSynchronize", unsafe { (driver.ctx_synchronize)() })?;
        anyhow::Ok(mib_per_s(size as u64, start.elapsed()))
    };
    htod()?;
    let mut up: Vec<f64> = (0..reps).map(|_| htod()).collect::<anyhow::Result<_>>()?;
    let mut dtoh = || {
        let start = Instant::now();
        // SAFETY: as above, in the other direction.
        check("cuMemcpyDtoH", unsafe {
            (driver.memcpy_dtoh)(host.as_mut_ptr().cast(), device, size)
        })?;
        anyhow::Ok(mib_per_s(size as u64, start.elapsed()))
    };
    dtoh()?;
    let mut down = Vec::with_capacity(reps);
    for _ in 0..reps {
        down.push(dtoh()?);
    }
    // SAFETY: allocated above.
    check("cuMemFree", unsafe { (driver.mem_free)(device) })?;
    up.sort_by(f64::total_cmp);
    down.sort_by(f64::total_cmp);
    Ok((up[up.len() / 2], down[down.len() / 2]))
}

fn check(call: &str, rc: c_int) -> anyhow::Result<()> {
    if rc != 0 {
        bail!("{call} failed with CUresult {rc}");
    }
    Ok(())
}

type CuResult = c_int;

/// The driver functions the client uses, resolved from the stub with `dlsym`.
struct Driver {
    init: unsafe extern "C" fn(u32) -> CuResult,
    device_get: unsafe extern "C" fn(*mut c_int, c_int) -> CuResult,
    primary_ctx_retain: unsafe extern "C" fn(*mut u64, c_int) -> CuResult,
    ctx_set_current: unsafe extern "C" fn(u64) -> CuResult,
    ctx_synchronize: unsafe extern "C" fn() -> CuResult,
    module_load_data: unsafe extern "C" fn(*mut u64, *const c_void) -> CuResult,
    module_get_function: unsafe extern "C" fn(*mut u64, u64, *const c_char) -> CuResult,
    #[allow(clippy::type_complexity)]
    launch_kernel: unsafe extern "C" fn(
        u64,
        u32,
        u32,
        u32,
        u32,
        u32,
        u32,
        u32,
        u64,
        *mut *mut c_void,
        *mut *mut c_void,
    ) -> CuResult,
    mem_alloc: unsafe extern "C" fn(*mut u64, usize) -> CuResult,
    mem_free: unsafe extern "C" fn(u64) -> CuResult,
    memcpy_htod: unsafe extern "C" fn(u64, *const c_void, usize) -> CuResult,
    memcpy_dtoh: unsafe extern "C" fn(*mut c_void, u64, usize) -> CuResult,
}

impl Driver {
    fn open(path: &Path) -> anyhow::Result<Driver> {
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .context("the stub path contains a NUL byte")?;
        // SAFETY: `c_path` is a valid C string; the library stays loaded for the process's
        // life (never closed), so the function pointers below stay valid.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            bail!("cannot load the stub at {}", path.display());
        }
        let library = Library { handle, path };
        // SAFETY: each symbol is the `cuda.h` function of that name, whose C signature the
        // field's type spells out.
        unsafe {
            Ok(Driver {
                init: library.function("cuInit")?,
                device_get: library.function("cuDeviceGet")?,
                primary_ctx_retain: library.function("cuDevicePrimaryCtxRetain")?,
                ctx_set_current: library.function("cuCtxSetCurrent")?,
                ctx_synchronize: library.function("cuCtxSynchronize")?,
                module_load_data: library.function("cuModuleLoadData")?,
                module_get_function: library.function("cuModuleGetFunction")?,
                launch_kernel: library.function("cuLaunchKernel")?,
                mem_alloc: library.function("cuMemAlloc_v2")?,
                mem_free: library.function("cuMemFree_v2")?,
                memcpy_htod: library.function("cuMemcpyHtoD_v2")?,
                memcpy_dtoh: library.function("cuMemcpyDtoH_v2")?,
            })
        }
    }
}

/// A library loaded with `dlopen`, never closed.
struct Library<'a> {
    handle: *mut c_void,
    path: &'a Path,
}

impl Library<'_> {
    /// The function `name` as the function pointer type `F`.
    ///
    /// # Safety
    /// `F` must be an `extern "C"` function pointer type matching the symbol's C signature.
    unsafe fn function<F: Copy>(&self, name: &str) -> anyhow::Result<F> {
        assert_eq!(
            size_of::<F>(),
            size_of::<*mut c_void>(),
            "F is a function pointer"
        );
        let c_name = CString::new(name).context("a symbol name contains a NUL byte")?;
        // SAFETY: `handle` is a live library handle, `c_name` a valid C string.
        let ptr = unsafe { libc::dlsym(self.handle, c_name.as_ptr()) };
        if ptr.is_null() {
            bail!("the stub at {} does not export {name}", self.path.display());
        }
        // SAFETY: `F` is a function pointer of the symbol's signature (the caller's
        // contract), the same size as `ptr`.
        Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&ptr) })
    }
}

// ---------------------------------------------------------------------------------------

fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Quic => "QUIC",
        Kind::Tcp => "TCP",
        Kind::Unix => "Unix socket",
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        writeln!(f, "Machine: {}", self.machine)?;
        writeln!(
            f,
            "Worker: cpu backend in the bench process; program: a child process with the stub \
             as libcuda.so.1 (driver API). {} rounds (baseline and stub alternate, each first \
             every other round), medians; {} synchronous calls and {} launches per round; \
             copies of pageable memory, at least {} MiB per size, direction and round.",
            o.rounds,
            o.rtt_iterations,
            o.launches,
            o.copy_bytes_per_size >> 20
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "| transport | raw RTT p50 / p99 (µs) | cuCtxSynchronize p50 / p99 (µs) | \
             overhead (goal ≤ 15%) | launches enqueued/s (goal ≥ 200k) | launches executed/s | \
             program CPU per launch (µs) |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|---|")?;
        for row in &self.rows {
            writeln!(
                f,
                "| {} | {:.1} / {:.1} | {:.1} / {:.1} | {:+.1}% | {:.0} | {:.0} | {:.2} |",
                kind_name(row.kind),
                row.raw_rtt_us,
                row.raw_rtt_p99_us,
                row.stub_rtt_us,
                row.stub_rtt_p99_us,
                row.rtt_overhead() * 100.0,
                row.launches_issued,
                row.launches_executed,
                row.launch_cpu_us,
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "| transport | size | raw bulk (MiB/s) | HtoD (MiB/s) | DtoH (MiB/s) | \
             slower / raw (goal ≥ 80%) |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|")?;
        for row in &self.rows {
            for copy in &row.copies {
                writeln!(
                    f,
                    "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0}% |",
                    kind_name(row.kind),
                    human_size(copy.size),
                    copy.raw,
                    copy.htod,
                    copy.dtoh,
                    copy.ratio() * 100.0
                )?;
            }
        }
        Ok(())
    }
}
