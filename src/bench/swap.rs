//! `gpufn bench swap`, second part: the first call after idle. A session holding 1 GiB on an
//! in-process `cpu` worker stays idle until the worker has swapped it out to the host tier,
//! the disk tier or the cold tier (an object store on the local filesystem); then its next call
//! (a 4 KiB device-to-host copy, which needs the memory back) is timed from send to reply.
//! Next to it: the swap-in alone (the worker's swap event for that call), the same call on the
//! hot session, and the baseline measured in the same round: a memcpy of the session's size for
//! the host tier, `dd`'s O_DIRECT sequential read of a file that size in the swap directory
//! for the disk and cold tiers. Figures are medians over the rounds.
//!
//! A swap-in maps the session's memory afresh before filling it (on the `cpu` backend: newly
//! allocated host memory, whose pages fault in as they are first written), so each round also
//! times a memcpy of the session's size into freshly allocated memory: the fastest the `cpu`
//! backend could bring the bytes back on this machine.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gpufn_proto::frame::{FrameLimits, FrameReader, FrameWriter};
use gpufn_proto::message::{Channel, Credentials, Hello, Role, SessionId, SwapState};
use gpufn_proto::transport::{Address, ClientOptions, Connection, RecvStream, SendStream, connect};
use gpufn_proto::{FrameKind, PROTOCOL_VERSION, Reply, Request};
use gpufn_swap::{DemotionPolicy, EventKind};
use gpufn_worker::swap::SwapSettings;
use gpufn_worker::{BackendChoice, Worker, WorkerConfig};

/// Bytes per host-to-device copy while filling the session (payloads are limited per frame).
const FILL_BLOCK: usize = 64 << 20;
/// The timed call reads this many bytes.
const PROBE_BYTES: u64 = 4096;
/// How long a tier may take to receive the idle session before the bench gives up.
const SWAP_GUARD: Duration = Duration::from_secs(300);

pub struct Options {
    /// Working directory on the disk to measure (swap files, cold store, dd's file).
    pub dir: PathBuf,
    pub session_bytes: u64,
    pub rounds: usize,
}

/// Medians over the rounds for one tier.
pub struct TierRow {
    pub tier: SwapState,
    pub first_call: Duration,
    pub swap_in: Duration,
    pub hot_call: Duration,
    pub baseline_name: &'static str,
    pub baseline: Duration,
    /// A memcpy of the session's size into freshly allocated memory.
    pub fresh_memcpy: Duration,
}

pub struct Report {
    pub session_bytes: u64,
    pub rounds: usize,
    pub rows: Vec<TierRow>,
}

pub fn run(options: &Options) -> anyhow::Result<Report> {
    anyhow::ensure!(
        options.session_bytes >= PROBE_BYTES,
        "the session must hold at least {PROBE_BYTES} bytes"
    );
    std::fs::create_dir_all(&options.dir)
        .with_context(|| format!("cannot create {}", options.dir.display()))?;
    let dir = options.dir.join(format!("wake-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let measured = [SwapState::Host, SwapState::Disk, SwapState::Cold]
        .into_iter()
        .map(|tier| runtime.block_on(measure_tier(&dir, tier, options)))
        .collect::<anyhow::Result<Vec<_>>>();
    drop(runtime);
    let _ = std::fs::remove_dir_all(&dir);
    let rows = measured?;
    Ok(Report {
        session_bytes: options.session_bytes,
        rounds: options.rounds.max(1),
        rows,
    })
}

async fn measure_tier(dir: &Path, tier: SwapState, options: &Options) -> anyhow::Result<TierRow> {
    let size = options.session_bytes;
    let (worker, serving, address) = start_worker(dir, tier, size).await?;
    let mut session = Session::open(&address).await?;
    let (address, pattern) = session.fill(size).await?;
    let probe_at = address + size / 2;
    let expected = expected_bytes(&pattern, size / 2, PROBE_BYTES);
    let mut baseline = Baseline::new(dir, tier, size)?;

    let mut hot = Vec::new();
    let mut first = Vec::new();
    let mut swap_in = Vec::new();
    let mut base = Vec::new();
    let mut fresh = Vec::new();
    let source = vec![0x5au8; usize::try_from(size)?];
    for _ in 0..options.rounds.max(1) {
        hot.push(best_hot_call(&mut session, probe_at).await?);
        wait_for_tier(&worker, session.id, tier).await?;
        // Measured while the session rests in its tier, so nothing else moves meanwhile.
        base.push(baseline.measure()?);
        fresh.push(fresh_memcpy(&source));
        let start = Instant::now();
        let data = session.read(probe_at, PROBE_BYTES).await?;
        first.push(start.elapsed());
        if data != expected {
            bail!("the session's bytes differ after its swap-in from the {tier:?} tier");
        }
        swap_in.push(last_swap_in(&worker, session.id)?);
    }
    session.verify_all(address, size, &pattern).await?;
    session.close();
    serving.abort();
    drop(worker);
    Ok(TierRow {
        tier,
        first_call: median(first),
        swap_in: median(swap_in),
        hot_call: median(hot),
        baseline_name: baseline.name(),
        baseline: median(base),
        fresh_memcpy: median(fresh),
    })
}

/// A `cpu` worker on a Unix socket whose idle sessions end up in `tier`.
async fn start_worker(
    dir: &Path,
    tier: SwapState,
    size: u64,
) -> anyhow::Result<(Worker, tokio::task::JoinHandle<()>, Address)> {
    let name = format!("{tier:?}").to_ascii_lowercase();
    let tier_dir = dir.join(&name);
    std::fs::create_dir_all(&tier_dir)?;
    let headroom = 64 << 20;
    let mut swap = SwapSettings {
        worker_id: format!("bench-wake-{name}"),
        device_memory: size + headroom,
        idle_timeout: Duration::from_millis(200),
        host_budget: 0,
        ..SwapSettings::default()
    };
    match tier {
        SwapState::Host => swap.host_budget = size + headroom,
        SwapState::Disk => swap.disk_dir = Some(tier_dir.join("swap")),
        _ => {
            let cold = tier_dir.join("cold");
            std::fs::create_dir_all(&cold)?;
            swap.disk_dir = Some(tier_dir.join("swap"));
            swap.cold_url = Some(format!("file://{}", cold.display()));
            swap.demotion = DemotionPolicy {
                disk_idle: Some(Duration::ZERO),
                ..DemotionPolicy::default()
            };
        }
    }
    let worker = Worker::new(WorkerConfig {
        backend: BackendChoice::Cpu,
        session_memory: size + headroom,
        swap,
        ..WorkerConfig::default()
    })?;
    let address: Address = format!("unix://{}", tier_dir.join("worker.sock").display()).parse()?;
    let listener = worker.bind(&address, Some(&tier_dir)).await?;
    let address = listener.local_address().clone();
    let serving = worker.clone();
    let task = tokio::spawn(async move { serving.serve(listener).await });
    Ok((worker, task, address))
}

/// Polls the worker's status until the session is in `tier` (and nowhere on its way).
async fn wait_for_tier(worker: &Worker, session: SessionId, tier: SwapState) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let state = worker
            .swap_status()
            .sessions
            .iter()
            .find(|s| s.session == session)
            .map(|s| s.state);
        if state == Some(tier) {
            return Ok(());
        }
        if start.elapsed() > SWAP_GUARD {
            bail!("the idle session did not reach the {tier:?} tier (it is {state:?})");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The duration of the session's latest swap-in, as the worker recorded it.
fn last_swap_in(worker: &Worker, session: SessionId) -> anyhow::Result<Duration> {
    worker
        .swap_status()
        .recent_events
        .iter()
        .rev()
        .find(|e| e.session.0 == session.0 && e.kind == EventKind::SwapIn)
        .map(|e| e.duration)
        .context("the worker recorded no swap-in for the first call")
}

/// The fastest of a few probe calls on the hot session.
async fn best_hot_call(session: &mut Session, at: u64) -> anyhow::Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..20 {
        let start = Instant::now();
        session.read(at, PROBE_BYTES).await?;
        best = best.min(start.elapsed());
    }
    Ok(best)
}

/// Copies `source` into newly allocated (not yet touched) memory.
fn fresh_memcpy(source: &[u8]) -> Duration {
    let start = Instant::now();
    let mut fresh = vec![0u8; source.len()];
    fresh.copy_from_slice(source);
    std::hint::black_box(&mut fresh);
    let elapsed = start.elapsed();
    drop(fresh);
    elapsed
}

/// What the swap-in is compared with.
enum Baseline {
    Memcpy { src: Vec<u8>, dst: Vec<u8> },
    DiskRead { file: PathBuf, size: u64 },
}

impl Baseline {
    fn new(dir: &Path, tier: SwapState, size: u64) -> anyhow::Result<Baseline> {
        let len = usize::try_from(size)?;
        if tier == SwapState::Host {
            // Both buffers touched once, so the copy pays no first-use page faults.
            return Ok(Baseline::Memcpy {
                src: vec![0x5a; len],
                dst: vec![0xa5; len],
            });
        }
        let file = dir.join(format!("dd-{tier:?}.tmp"));
        let block = 8u64 << 20;
        run_dd(&[
            "if=/dev/zero".into(),
            format!("of={}", file.display()),
            format!("bs={block}"),
            format!("count={}", size.div_ceil(block)),
            "oflag=direct".into(),
            "conv=fsync".into(),
        ])?;
        Ok(Baseline::DiskRead { file, size })
    }

    fn name(&self) -> &'static str {
        match self {
            Baseline::Memcpy { .. } => "memcpy",
            Baseline::DiskRead { .. } => "dd read (O_DIRECT)",
        }
    }

    fn measure(&mut self) -> anyhow::Result<Duration> {
        match self {
            Baseline::Memcpy { src, dst } => {
                let start = Instant::now();
                dst.copy_from_slice(src);
                std::hint::black_box(&mut *dst);
                Ok(start.elapsed())
            }
            Baseline::DiskRead { file, size } => {
                let block = 8u64 << 20;
                run_dd(&[
                    format!("if={}", file.display()),
                    "of=/dev/null".into(),
                    format!("bs={block}"),
                    format!("count={}", size.div_ceil(block)),
                    "iflag=direct".into(),
                ])
            }
        }
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        if let Baseline::DiskRead { file, .. } = self {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Runs `dd`; returns the time it reports (falls back to the wall time around it).
fn run_dd(args: &[String]) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let output = std::process::Command::new("dd")
        .args(args)
        .output()
        .context("cannot run dd (coreutils) for the disk baseline")?;
    let wall = start.elapsed();
    let text = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(
        output.status.success(),
        "dd {} failed: {}",
        args.join(" "),
        text.trim()
    );
    let reported = text
        .rsplit_once("copied, ")
        .and_then(|(_, after)| after.split_whitespace().next()?.parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok());
    Ok(reported.unwrap_or(wall))
}

/// One session on the worker: a connection and its `Calls` stream.
struct Session {
    id: SessionId,
    writer: FrameWriter<SendStream>,
    reader: FrameReader<RecvStream>,
    next_id: u64,
    connection: Connection,
}

impl Session {
    async fn open(address: &Address) -> anyhow::Result<Session> {
        let connection = connect(address, &ClientOptions::default()).await?;
        let (send, recv) = connection.open_stream().await?;
        let mut session = Session {
            id: SessionId(0),
            writer: FrameWriter::new(send),
            reader: FrameReader::new(recv, FrameLimits::default()),
            next_id: 1,
            connection,
        };
        let hello = Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            role: Role::Cli,
            channel: Channel::Calls,
            credentials: Credentials::None,
            session: None,
            client: "gpufn bench swap".into(),
        });
        match session.call(&hello, &[]).await?.0 {
            Reply::Welcome(welcome) => session.id = welcome.session,
            other => bail!("the worker answered Hello with {other:?}"),
        }
        Ok(session)
    }

    async fn call(
        &mut self,
        request: &Request,
        payload: &[u8],
    ) -> anyhow::Result<(Reply, Vec<u8>)> {
        let id = self.next_id;
        self.next_id += 1;
        self.writer
            .write_request(FrameKind::Call, id, request, &[payload])
            .await?;
        self.writer.flush().await?;
        self.reader
            .next_frame()
            .await?
            .context("the worker closed the session")?;
        let message = self.reader.reply()?;
        let mut data = self.reader.read_payload_vec().await?;
        // Kernel printf output follows the call's data; there is none here, but keep it out.
        data.truncate(data.len().saturating_sub(message.printf_bytes as usize));
        match message.result {
            Ok(reply) => Ok((reply, data)),
            Err(e) => bail!("{request:?} failed: {}", e.message),
        }
    }

    /// Allocates `size` bytes and fills them block by block with `pattern` (each block's
    /// first byte varied, so misplaced blocks show). Returns the address and the pattern.
    async fn fill(&mut self, size: u64) -> anyhow::Result<(u64, Vec<u8>)> {
        let address = match self
            .call(
                &Request::MemAlloc {
                    address: None,
                    size,
                },
                &[],
            )
            .await?
            .0
        {
            Reply::Address(a) => a,
            other => bail!("MemAlloc answered {other:?}"),
        };
        let pattern: Vec<u8> = (0..FILL_BLOCK).map(|i| (i * 7 + i / 4096) as u8).collect();
        let mut block = pattern.clone();
        let mut offset = 0u64;
        while offset < size {
            let len = (size - offset).min(FILL_BLOCK as u64) as usize;
            block[0] = block_tag(offset);
            let dst = address + offset;
            self.call(&Request::MemcpyHtoD { dst, stream: None }, &block[..len])
                .await?;
            offset += len as u64;
        }
        Ok((address, pattern))
    }

    async fn read(&mut self, src: u64, len: u64) -> anyhow::Result<Vec<u8>> {
        let request = Request::MemcpyDtoH {
            src,
            len,
            stream: None,
        };
        Ok(self.call(&request, &[]).await?.1)
    }

    /// Reads the whole session back and compares it with what [`Session::fill`] wrote.
    async fn verify_all(&mut self, address: u64, size: u64, pattern: &[u8]) -> anyhow::Result<()> {
        let mut offset = 0u64;
        while offset < size {
            let len = (size - offset).min(FILL_BLOCK as u64);
            let data = self.read(address + offset, len).await?;
            if data != expected_bytes(pattern, offset, len) {
                bail!("the session's bytes at offset {offset} changed over the swaps");
            }
            offset += len;
        }
        Ok(())
    }

    fn close(self) {
        self.connection.close();
    }
}

/// The first byte of the fill block at `offset`.
fn block_tag(offset: u64) -> u8 {
    (offset / FILL_BLOCK as u64) as u8 ^ 0x80
}

/// The bytes [`Session::fill`] wrote at `offset..offset + len`.
fn expected_bytes(pattern: &[u8], offset: u64, len: u64) -> Vec<u8> {
    (offset..offset + len)
        .map(|at| {
            let within = (at % FILL_BLOCK as u64) as usize;
            if within == 0 {
                block_tag(at)
            } else {
                pattern[within]
            }
        })
        .collect()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "first call after idle: a {} MiB session on a cpu worker (Unix socket), swapped out \
             to each tier, then a {PROBE_BYTES}-byte read; medians of {} rounds",
            self.session_bytes >> 20,
            self.rounds
        )?;
        writeln!(
            f,
            "| tier | first call after idle | swap-in alone | baseline (same rounds) | swap-in vs baseline | memcpy into fresh memory | call when hot |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|---|")?;
        for r in &self.rows {
            let gbps = |d: Duration| self.session_bytes as f64 / d.as_secs_f64().max(1e-9) / 1e9;
            writeln!(
                f,
                "| {} | {:.0} ms | {:.0} ms ({:.2} GB/s) | {} {:.0} ms ({:.2} GB/s) | {:.0}% | {:.0} ms ({:.2} GB/s) | {:.0} µs |",
                format!("{:?}", r.tier).to_ascii_lowercase(),
                ms(r.first_call),
                ms(r.swap_in),
                gbps(r.swap_in),
                r.baseline_name,
                ms(r.baseline),
                gbps(r.baseline),
                100.0 * r.baseline.as_secs_f64() / r.swap_in.as_secs_f64().max(1e-9),
                ms(r.fresh_memcpy),
                gbps(r.fresh_memcpy),
                r.hot_call.as_secs_f64() * 1e6,
            )?;
        }
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_bytes_follow_the_fill_pattern_across_blocks() {
        let pattern: Vec<u8> = (0..FILL_BLOCK).map(|i| (i * 7 + i / 4096) as u8).collect();
        let at = FILL_BLOCK as u64 - 2;
        let bytes = expected_bytes(&pattern, at, 4);
        assert_eq!(bytes[0], pattern[FILL_BLOCK - 2]);
        assert_eq!(bytes[2], block_tag(FILL_BLOCK as u64));
        assert_eq!(bytes[3], pattern[1]);
    }
}
