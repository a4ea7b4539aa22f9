//! `gpufn bench swap`: swap throughput of the host and disk tiers against baselines measured in
//! the same run: a plain memcpy for the host tier, a plain sequential file write (+fsync) and
//! read with the same I/O mode for the disk tier.
//!
//! Baselines and swaps are measured in alternation, one warm-up round and then `repeats` rounds,
//! (page faults of first use are not counted on either side, and both sides see the same machine
//! conditions). It reports the best round of each figure and, more robust on a busy machine, the
//! median over rounds of each swap's throughput relative to its baseline of the same round.
//! For the buffered disk mode the file's pages are dropped from the page cache before
//! reading (`POSIX_FADV_DONTNEED`), so reads come from the disk.
//!
//! The disk has a second, independent baseline: `dd` writing (`conv=fsync`) and reading the
//! same number of bytes in chunk-size blocks with the same I/O mode (`oflag=direct` /
//! `iflag=direct`, or `iflag=nocache` to read a buffered file from the disk), also once per
//! round. Without `dd` on the `PATH` those columns are left out.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::buffer::ChunkBuf;
use crate::device::MemoryDevice;
use crate::error::{Result, SwapError};
use crate::store::{DiskConfig, SwapConfig, SwapStore};
use crate::types::{Allocation, SessionId, Tier};

#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Session sizes in bytes.
    pub sizes: Vec<u64>,
    /// Directory for the disk tier and the baseline file (on the disk to measure).
    pub dir: PathBuf,
    pub chunk_size: usize,
    pub repeats: usize,
    /// Use O_DIRECT for both the disk tier and the disk baseline.
    pub direct_io: bool,
}

impl BenchConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            sizes: vec![256 << 20, 1 << 30],
            dir: dir.into(),
            chunk_size: crate::store::DEFAULT_CHUNK_SIZE,
            repeats: 5,
            direct_io: true,
        }
    }
}

/// Throughputs in bytes per second (best round) for one session size, and the median over the
/// rounds of each swap's throughput relative to its baseline measured in the same round.
#[derive(Clone, Debug)]
pub struct BenchRow {
    pub size: u64,
    pub memcpy: f64,
    pub host_out: f64,
    pub host_in: f64,
    pub disk_write: f64,
    pub disk_read: f64,
    pub disk_out: f64,
    pub disk_in: f64,
    /// `dd`'s sequential write and read (`None`: no `dd`).
    pub dd_write: Option<f64>,
    pub dd_read: Option<f64>,
    /// Median per-round ratios: host out / memcpy, host in / memcpy, disk out / disk write,
    /// disk in / disk read.
    pub median_ratios: [f64; 4],
    /// Median per-round ratios: disk out / dd write, disk in / dd read.
    pub median_dd_ratios: Option<[f64; 2]>,
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub machine: String,
    pub chunk_size: usize,
    pub direct_io: bool,
    pub rows: Vec<BenchRow>,
}

pub fn run(config: &BenchConfig) -> Result<BenchReport> {
    std::fs::create_dir_all(&config.dir)
        .map_err(|e| SwapError::io("creating directory", &config.dir, e))?;
    let mut rows = Vec::new();
    for &size in &config.sizes {
        rows.push(measure_size(config, size)?);
    }
    Ok(BenchReport {
        machine: machine_description(),
        chunk_size: config.chunk_size,
        direct_io: config.direct_io,
        rows,
    })
}

const MEMCPY: usize = 0;
const HOST_OUT: usize = 1;
const HOST_IN: usize = 2;
const DISK_WRITE: usize = 3;
const DISK_READ: usize = 4;
const DISK_OUT: usize = 5;
const DISK_IN: usize = 6;
const DD_WRITE: usize = 7;
const DD_READ: usize = 8;
const FIGURES: usize = 9;

/// Measures baselines and swaps in alternation (so both see the same machine conditions),
/// one warm-up round and then `repeats` rounds, keeping the best of each.
fn measure_size(config: &BenchConfig, size: u64) -> Result<BenchRow> {
    let (mut device, allocations) = device_with(size);
    let original =
        twox_hash::XxHash3_64::oneshot(device.get(allocations[0].device_address).expect("mapped"));
    let mut copy_target = vec![1u8; size as usize];
    let host = open_store(config, "bench-host", size + config.chunk_size as u64, None)?;
    let disk = open_store(
        config,
        "bench-disk",
        0,
        Some(DiskConfig {
            dir: config.dir.clone(),
            direct_io: config.direct_io,
            budget: None,
        }),
    )?;
    let baseline = config.dir.join("bench-baseline.tmp");
    let dd_file = config.dir.join("bench-dd.tmp");
    let dd = dd_available();
    let mut rounds: Vec<[Duration; FIGURES]> = Vec::new();
    let result = (|| {
        for _ in 0..=config.repeats.max(1) {
            let mut round = [Duration::MAX; FIGURES];
            let mut record = |which: usize, d: Duration| round[which] = round[which].min(d);
            // The baseline is the faster of one large memcpy and chunk-size memcpys (which
            // use different store strategies in libc), so the swap is not flattered.
            let src = device.get(allocations[0].device_address).expect("mapped");
            let start = Instant::now();
            copy_target.copy_from_slice(src);
            std::hint::black_box(&mut copy_target);
            record(MEMCPY, start.elapsed());
            let start = Instant::now();
            for (dst, src) in copy_target
                .chunks_mut(config.chunk_size)
                .zip(src.chunks(config.chunk_size))
            {
                dst.copy_from_slice(src);
            }
            std::hint::black_box(&mut copy_target);
            record(MEMCPY, start.elapsed());

            let (out, into) = round_trip(&host, &mut device, &allocations, Tier::Host)?;
            record(HOST_OUT, out);
            record(HOST_IN, into);

            record(DISK_WRITE, baseline_write(config, &baseline, size)?);
            record(DISK_READ, baseline_read(config, &baseline, size)?);
            let _ = std::fs::remove_file(&baseline);
            if dd {
                record(DD_WRITE, dd_write(config, &dd_file, size)?);
                record(DD_READ, dd_read(config, &dd_file, size)?);
                let _ = std::fs::remove_file(&dd_file);
            }
            let (out, into) = round_trip(&disk, &mut device, &allocations, Tier::Disk)?;
            record(DISK_OUT, out);
            record(DISK_IN, into);
            rounds.push(round);
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&baseline);
    let _ = std::fs::remove_file(&dd_file);
    result?;
    // The swaps must have brought back exactly what was swapped out.
    let restored = device.get(allocations[0].device_address).expect("mapped");
    if twox_hash::XxHash3_64::oneshot(restored) != original {
        return Err(SwapError::Internal(
            "benchmark data differs after the swap round trips".into(),
        ));
    }
    let measured = &rounds[1..]; // The first round is the warm-up.
    let r = |which: usize| {
        rate(
            size,
            measured.iter().map(|d| d[which]).min().expect("rounds"),
        )
    };
    // A ratio of throughputs is the inverse ratio of durations.
    let median_ratio = |swap: usize, baseline: usize| {
        let mut ratios: Vec<f64> = measured
            .iter()
            .map(|d| d[baseline].as_secs_f64() / d[swap].as_secs_f64().max(1e-9))
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    };
    Ok(BenchRow {
        size,
        memcpy: r(MEMCPY),
        host_out: r(HOST_OUT),
        host_in: r(HOST_IN),
        disk_write: r(DISK_WRITE),
        disk_read: r(DISK_READ),
        disk_out: r(DISK_OUT),
        disk_in: r(DISK_IN),
        dd_write: dd.then(|| r(DD_WRITE)),
        dd_read: dd.then(|| r(DD_READ)),
        median_ratios: [
            median_ratio(HOST_OUT, MEMCPY),
            median_ratio(HOST_IN, MEMCPY),
            median_ratio(DISK_OUT, DISK_WRITE),
            median_ratio(DISK_IN, DISK_READ),
        ],
        median_dd_ratios: dd.then(|| {
            [
                median_ratio(DISK_OUT, DD_WRITE),
                median_ratio(DISK_IN, DD_READ),
            ]
        }),
    })
}

fn rate(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64().max(1e-9)
}

/// A device holding one allocation of `size` bytes of non-trivial data.
fn device_with(size: u64) -> (MemoryDevice, Vec<Allocation>) {
    let mut data = vec![0u8; size as usize];
    for (i, word) in data.chunks_mut(8).enumerate() {
        let v = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes();
        word.copy_from_slice(&v[..word.len()]);
    }
    let mut device = MemoryDevice::new();
    let address = 0x7f00_0000_0000;
    device.insert(address, data);
    (device, vec![Allocation::new(address, size)])
}

fn open_store(
    config: &BenchConfig,
    worker_id: &str,
    host_budget: u64,
    disk: Option<DiskConfig>,
) -> Result<SwapStore> {
    let store_config = SwapConfig {
        chunk_size: config.chunk_size,
        prefault_host: true,
        disk,
        ..SwapConfig::new(worker_id, host_budget)
    };
    Ok(SwapStore::open(store_config)?.0)
}

/// One swap-out and swap-in; returns their durations as the store reports them.
fn round_trip(
    store: &SwapStore,
    device: &mut MemoryDevice,
    allocations: &[Allocation],
    expected: Tier,
) -> Result<(Duration, Duration)> {
    let session = SessionId(1);
    let out = store.swap_out(session, allocations, device)?;
    if out.tier != expected {
        return Err(SwapError::Internal(format!(
            "benchmark session landed in the {} tier, expected {expected}",
            out.tier
        )));
    }
    let back = store.swap_in(session, device)?;
    Ok((out.event.duration, back.event.duration))
}

/// Plain sequential write of `size` bytes in chunk-size blocks, then fsync.
fn baseline_write(config: &BenchConfig, path: &Path, size: u64) -> Result<Duration> {
    let mut buf = baseline_buffer(config)?;
    let file = open_baseline(path, config.direct_io, true)?;
    let start = Instant::now();
    for (offset, len) in blocks(size, config.chunk_size as u64) {
        file.write_all_at(&buf.as_mut_slice()[..len], offset)
            .map_err(|e| SwapError::io("writing", path, e))?;
    }
    file.sync_all()
        .map_err(|e| SwapError::io("syncing", path, e))?;
    Ok(start.elapsed())
}

/// Plain sequential read of the file written by [`baseline_write`], from the disk.
fn baseline_read(config: &BenchConfig, path: &Path, size: u64) -> Result<Duration> {
    let mut buf = baseline_buffer(config)?;
    let file = open_baseline(path, config.direct_io, false)?;
    drop_cache(&file);
    let start = Instant::now();
    for (offset, len) in blocks(size, config.chunk_size as u64) {
        file.read_exact_at(&mut buf.as_mut_slice()[..len], offset)
            .map_err(|e| SwapError::io("reading", path, e))?;
    }
    Ok(start.elapsed())
}

fn dd_available() -> bool {
    std::process::Command::new("dd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `dd` writing `size` bytes of zeros in chunk-size blocks, fsynced before it exits.
fn dd_write(config: &BenchConfig, path: &Path, size: u64) -> Result<Duration> {
    let mut args = dd_blocks(config, size);
    args.extend([
        "if=/dev/zero".to_string(),
        format!("of={}", path.display()),
        "conv=fsync".to_string(),
    ]);
    if config.direct_io {
        args.push("oflag=direct".into());
    }
    run_dd(&args)
}

/// `dd` reading the file [`dd_write`] wrote, from the disk.
fn dd_read(config: &BenchConfig, path: &Path, size: u64) -> Result<Duration> {
    if !config.direct_io {
        // Drop the file's cached pages first (`count=0` reads nothing).
        run_dd(&[
            format!("if={}", path.display()),
            "iflag=nocache".into(),
            "count=0".into(),
        ])?;
    }
    let mut args = dd_blocks(config, size);
    args.extend([format!("if={}", path.display()), "of=/dev/null".to_string()]);
    if config.direct_io {
        args.push("iflag=direct".into());
    }
    run_dd(&args)
}

/// `bs` and `count` for `size` bytes in chunk-size blocks (the last one whole).
fn dd_blocks(config: &BenchConfig, size: u64) -> Vec<String> {
    let block = config.chunk_size as u64;
    vec![
        format!("bs={block}"),
        format!("count={}", size.div_ceil(block)),
    ]
}

/// Runs `dd` and returns the elapsed time it reports (its own clock, without process start).
fn run_dd(args: &[String]) -> Result<Duration> {
    let start = Instant::now();
    let output = std::process::Command::new("dd")
        .args(args)
        .output()
        .map_err(|e| SwapError::Internal(format!("cannot run dd: {e}")))?;
    let wall = start.elapsed();
    let text = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(SwapError::Internal(format!(
            "dd {} failed: {}",
            args.join(" "),
            text.trim()
        )));
    }
    Ok(dd_seconds(&text).unwrap_or(wall))
}

/// The seconds in dd's summary line: `1073741824 bytes (1.1 GB, 1.0 GiB) copied, 0.67 s, …`.
fn dd_seconds(summary: &str) -> Option<Duration> {
    let after = summary.rsplit_once("copied, ")?.1;
    let seconds: f64 = after.split_whitespace().next()?.parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

fn baseline_buffer(config: &BenchConfig) -> Result<ChunkBuf> {
    let mut buf = ChunkBuf::with_capacity(config.chunk_size)
        .map_err(|e| SwapError::Internal(format!("cannot allocate a buffer: {e}")))?;
    buf.as_mut_slice().fill(0x5a);
    Ok(buf)
}

/// (offset, length) of each block, lengths rounded up to 4096 for direct I/O.
fn blocks(size: u64, block: u64) -> impl Iterator<Item = (u64, usize)> {
    (0..size.div_ceil(block)).map(move |i| {
        let offset = i * block;
        (
            offset,
            block.min(size - offset).next_multiple_of(4096) as usize,
        )
    })
}

fn open_baseline(path: &Path, direct: bool, write: bool) -> Result<File> {
    let mut options = OpenOptions::new();
    if write {
        options.create(true).truncate(true).write(true);
    } else {
        options.read(true);
    }
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    options
        .open(path)
        .map_err(|e| SwapError::io("opening", path, e))
}

fn drop_cache(file: &File) {
    // SAFETY: posix_fadvise on a valid, open file descriptor owned by `file`; no memory is passed.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cores} cores, {cpu}, {}", std::env::consts::ARCH)
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "gpufn swap benchmark: {}; chunk {} MiB; disk I/O {}",
            self.machine,
            self.chunk_size >> 20,
            if self.direct_io {
                "O_DIRECT"
            } else {
                "buffered"
            }
        )?;
        writeln!(
            f,
            "GB/s of the best round; in parentheses: best/best, and the median over rounds of the \
             swap relative to its baseline in the same round"
        )?;
        writeln!(
            f,
            "| size | memcpy | host out | host in | disk write | disk read | disk out | disk in |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|---|---|")?;
        for r in &self.rows {
            write_row(f, r)?;
        }
        if self.rows.iter().any(|r| r.median_dd_ratios.is_some()) {
            writeln!(
                f,
                "\nThe disk tier against dd in the same rounds (GB/s of the best round; in \
                 parentheses: best/best, median of per-round ratios):"
            )?;
            writeln!(f, "| size | dd write | disk out | dd read | disk in |")?;
            writeln!(f, "|---|---|---|---|---|")?;
            for r in &self.rows {
                write_dd_row(f, r)?;
            }
        }
        Ok(())
    }
}

fn write_row(f: &mut fmt::Formatter<'_>, r: &BenchRow) -> fmt::Result {
    let [m_host_out, m_host_in, m_disk_out, m_disk_in] = r.median_ratios;
    writeln!(
        f,
        "| {} MiB | {:.2} | {} | {} | {:.2} | {:.2} | {} | {} |",
        r.size >> 20,
        r.memcpy / 1e9,
        versus(r.host_out, r.memcpy, m_host_out),
        versus(r.host_in, r.memcpy, m_host_in),
        r.disk_write / 1e9,
        r.disk_read / 1e9,
        versus(r.disk_out, r.disk_write, m_disk_out),
        versus(r.disk_in, r.disk_read, m_disk_in),
    )
}

fn write_dd_row(f: &mut fmt::Formatter<'_>, r: &BenchRow) -> fmt::Result {
    let (Some(write), Some(read), Some([m_out, m_in])) =
        (r.dd_write, r.dd_read, r.median_dd_ratios)
    else {
        return Ok(());
    };
    writeln!(
        f,
        "| {} MiB | {:.2} | {} | {:.2} | {} |",
        r.size >> 20,
        write / 1e9,
        versus(r.disk_out, write, m_out),
        read / 1e9,
        versus(r.disk_in, read, m_in),
    )
}

/// `GB/s (best/best %, median ratio %)`.
fn versus(swap: f64, baseline: f64, median_ratio: f64) -> String {
    format!(
        "{:.2} ({:.0}%, {:.0}%)",
        swap / 1e9,
        100.0 * swap / baseline,
        100.0 * median_ratio
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dd_summaries_give_their_seconds() {
        let gnu = "128+0 records in\n128+0 records out\n1073741824 bytes (1.1 GB, 1.0 GiB) \
                   copied, 0.671199 s, 1.6 GB/s\n";
        assert_eq!(dd_seconds(gnu), Some(Duration::from_secs_f64(0.671199)));
        assert_eq!(
            dd_seconds("dd: error writing: No space left on device"),
            None
        );
    }
}
