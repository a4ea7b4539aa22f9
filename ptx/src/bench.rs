//! `gpufn bench ptx`: interpreter throughput in lane-instructions per second (one
//! instruction executed by one active lane) on vector add and a tiled matrix multiply,
//! single-threaded and on several host threads.
//!
//! The kernels are the corpus sources compiled once with `nvcc -ptx -arch=sm_90` and checked
//! in as `ptx/benches/*.ptx`, so the benchmark needs no CUDA toolchain.

use crate::{DeviceMemory, LaunchConfig, Module};
use std::fmt;
use std::time::Instant;

const VECTOR_ADD_PTX: &str = include_str!("../benches/vector_add.ptx");
const MATMUL_PTX: &str = include_str!("../benches/matmul.ptx");

/// One kernel measured with one thread and with `threads` threads.
#[derive(Debug, Clone)]
pub struct KernelBench {
    pub name: &'static str,
    pub lane_instructions: u64,
    pub seconds_single: f64,
    pub seconds_multi: f64,
    /// Process CPU time of the multi-threaded run (all threads), where the OS reports it.
    pub cpu_seconds_multi: Option<f64>,
}

impl KernelBench {
    pub fn rate_single(&self) -> f64 {
        self.lane_instructions as f64 / self.seconds_single
    }

    pub fn rate_multi(&self) -> f64 {
        self.lane_instructions as f64 / self.seconds_multi
    }

    /// Lane-instructions per CPU-second in the multi-threaded run: the per-core rate even
    /// when other processes compete for the cores.
    pub fn rate_per_cpu_second(&self) -> Option<f64> {
        self.cpu_seconds_multi
            .filter(|&c| c > 0.0)
            .map(|c| self.lane_instructions as f64 / c)
    }
}

/// Results of [`run`].
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub threads: usize,
    pub kernels: Vec<KernelBench>,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "PTX interpreter throughput (million lane-instructions per second)"
        )?;
        writeln!(
            f,
            "{:<12} {:>12} {:>10} {:>12} {:>12} {:>12} {:>8}",
            "kernel",
            "lane-instr",
            "1 thread",
            format!("{} threads", self.threads),
            "per thread",
            "per CPU-s",
            "scaling"
        )?;
        for k in &self.kernels {
            let per_cpu = k
                .rate_per_cpu_second()
                .map_or("n/a".to_string(), |r| format!("{:.1}", r / 1e6));
            writeln!(
                f,
                "{:<12} {:>12} {:>10.1} {:>12.1} {:>12.1} {:>12} {:>7.2}x",
                k.name,
                k.lane_instructions,
                k.rate_single() / 1e6,
                k.rate_multi() / 1e6,
                k.rate_multi() / 1e6 / self.threads as f64,
                per_cpu,
                k.rate_multi() / k.rate_single()
            )?;
        }
        writeln!(
            f,
            "(wall-clock rates, best of 3; 'per CPU-s' divides by the CPU time all threads used, \
             which stays meaningful on a busy machine; scaling = {}-thread / 1-thread wall rate)",
            self.threads
        )?;
        Ok(())
    }
}

/// Measures vector add (4 Mi elements) and a 256x256x256 tiled matmul, each with 1 and with
/// `threads` host threads (best of three runs each).
pub fn run(threads: usize) -> Result<BenchReport, String> {
    let threads = threads.max(1);
    let memory = DeviceMemory::new(1 << 30);
    let mut kernels = Vec::new();

    let module = Module::from_ptx(VECTOR_ADD_PTX, &memory).map_err(|e| e.to_string())?;
    let n: u32 = 1 << 22;
    let bytes = n as u64 * 4;
    let a = alloc_filled(&memory, bytes, 1.0)?;
    let b = alloc_filled(&memory, bytes, 2.0)?;
    let c = alloc_filled(&memory, bytes, 0.0)?;
    let params = [
        &a.to_le_bytes()[..],
        &b.to_le_bytes(),
        &c.to_le_bytes(),
        &n.to_le_bytes(),
    ]
    .concat();
    let cfg = LaunchConfig {
        grid: [n / 256, 1, 1],
        block: [256, 1, 1],
        dynamic_shared: 0,
    };
    kernels.push(measure(
        "vector_add",
        &module,
        "vector_add",
        cfg,
        &params,
        &memory,
        threads,
    )?);

    let module = Module::from_ptx(MATMUL_PTX, &memory).map_err(|e| e.to_string())?;
    let dim: u32 = 256;
    let bytes = (dim * dim) as u64 * 4;
    let a = alloc_filled(&memory, bytes, 0.5)?;
    let b = alloc_filled(&memory, bytes, 0.25)?;
    let c = alloc_filled(&memory, bytes, 0.0)?;
    let params = [
        &a.to_le_bytes()[..],
        &b.to_le_bytes(),
        &c.to_le_bytes(),
        &dim.to_le_bytes(),
        &dim.to_le_bytes(),
        &dim.to_le_bytes(),
    ]
    .concat();
    let cfg = LaunchConfig {
        grid: [dim / 16, dim / 16, 1],
        block: [16, 16, 1],
        dynamic_shared: 0,
    };
    kernels.push(measure(
        "matmul", &module, "matmul", cfg, &params, &memory, threads,
    )?);
    Ok(BenchReport { threads, kernels })
}

fn alloc_filled(memory: &DeviceMemory, bytes: u64, value: f32) -> Result<u64, String> {
    let addr = memory.allocate(bytes).map_err(|e| e.to_string())?;
    let data: Vec<u8> = (0..bytes / 4).flat_map(|_| value.to_le_bytes()).collect();
    memory.write(addr, &data).map_err(|e| e.to_string())?;
    Ok(addr)
}

fn measure(
    name: &'static str,
    module: &Module,
    kernel: &str,
    cfg: LaunchConfig,
    params: &[u8],
    memory: &DeviceMemory,
    threads: usize,
) -> Result<KernelBench, String> {
    let time = |t: usize| -> Result<(f64, u64, Option<f64>), String> {
        let mut best = f64::INFINITY;
        let mut best_cpu = None;
        let mut count = 0;
        for _ in 0..3 {
            let cpu_before = process_cpu_seconds();
            let start = Instant::now();
            let out = module
                .launch(kernel, cfg, params, memory, t)
                .map_err(|e| e.to_string())?;
            let wall = start.elapsed().as_secs_f64();
            if wall < best {
                best = wall;
                best_cpu = cpu_before.zip(process_cpu_seconds()).map(|(a, b)| b - a);
            }
            count = out.lane_instructions;
        }
        Ok((best, count, best_cpu))
    };
    let (seconds_single, lane_instructions, _) = time(1)?;
    let (seconds_multi, _, cpu_seconds_multi) = time(threads)?;
    Ok(KernelBench {
        name,
        lane_instructions,
        seconds_single,
        seconds_multi,
        cpu_seconds_multi,
    })
}

/// User + system CPU time of this process (Linux `/proc/self/stat`, 100 Hz ticks).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn bench_kernels_load() {
        let memory = crate::DeviceMemory::new(1 << 20);
        for text in [super::VECTOR_ADD_PTX, super::MATMUL_PTX] {
            crate::Module::from_ptx(text, &memory).unwrap();
        }
    }
}
