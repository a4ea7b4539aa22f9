//! Placement latency measurement, shared by the criterion bench and `gpufn bench gateway`.
//!
//! This is the one module that reads a clock: it times decisions, it makes none.

use std::time::{Duration, Instant};

use crate::ids::{SessionId, TenantId, WorkerId};
use crate::inventory::{Backend, DeviceSpec, WorkerSpec};
use crate::qos::Qos;
use crate::session::SessionRequest;
use crate::time::Millis;
use crate::{Pool, PoolConfig};

/// Devices per worker in [`fixture`] (a typical 4-GPU node).
pub const DEVICES_PER_WORKER: u32 = 4;
/// Memory of each device in [`fixture`] (80 GiB).
pub const DEVICE_BYTES: u64 = 80 << 30;

/// Percentiles of decision times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencySummary {
    /// Decisions timed.
    pub samples: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
}

/// A small deterministic pseudo-random sequence (a 64-bit LCG), so fixtures are reproducible.
struct Sequence(u64);

impl Sequence {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// `workers` registered workers with [`DEVICES_PER_WORKER`] devices of [`DEVICE_BYTES`].
fn empty_fixture(workers: usize) -> Pool {
    let mut pool = Pool::new(PoolConfig::default())
        .unwrap_or_else(|_| unreachable!("default config is valid"));
    for w in 0..workers {
        let devices = (0..DEVICES_PER_WORKER)
            .map(|index| DeviceSpec {
                index,
                name: "bench-gpu".into(),
                backend: Backend::Cuda,
                memory_bytes: DEVICE_BYTES,
                compute_units: 132,
            })
            .collect();
        let spec = WorkerSpec {
            id: WorkerId(format!("worker-{w:05}")),
            address: format!("10.0.{}.{}:7001", w / 256, w % 256),
            devices,
        };
        // A fresh pool has no sessions to lose, and indices are unique.
        let _ = pool.register_worker(spec, Millis(0));
    }
    pool
}

/// A pool of `workers` workers with [`DEVICES_PER_WORKER`] devices of [`DEVICE_BYTES`] each,
/// holding `sessions` sessions of 1–16 GiB from 100 tenants; about a third are swapped out.
/// Placement stops early (silently) if the pool fills up.
pub fn fixture(workers: usize, sessions: usize) -> Pool {
    let mut pool = empty_fixture(workers);
    let mut sequence = Sequence(42);
    for s in 0..sessions {
        let request = SessionRequest {
            id: SessionId(s as u64),
            tenant: TenantId(format!("tenant-{:03}", sequence.next(100))),
            function: None,
            vram_bytes: (1 + sequence.next(16)) << 30,
            compute_percent: 5,
            qos: Qos::ALL[sequence.next(4) as usize],
            backend: None,
            strategy: None,
            idle: None,
        };
        if pool.request_session(request, Millis(1)).is_err() {
            break;
        }
        if s % 3 == 0 {
            let _ = pool.session_swapped_out(SessionId(s as u64), Millis(1));
        }
    }
    pool
}

/// Times `samples` placement decisions ([`Pool::plan_placement`]) of 1–16 GiB requests on
/// [`fixture`]`(workers, sessions)`; returns (p50, p99).
pub fn placement_latency(workers: usize, sessions: usize, samples: usize) -> (Duration, Duration) {
    let summary = measure_placement(&fixture(workers, sessions), samples);
    (summary.p50, summary.p99)
}

/// Times `samples` placement decisions on `pool` (a [`fixture`]): 1–16 GiB requests of any
/// QoS, which find room directly.
pub fn measure_placement(pool: &Pool, samples: usize) -> LatencySummary {
    time_each(&placement_requests(samples), |request| {
        let _ = std::hint::black_box(pool.plan_placement(request, Millis(2)));
    })
}

/// The requests [`measure_placement`] times: 1–16 GiB, any QoS, decided at `Millis(2)`.
pub fn placement_requests(samples: usize) -> Vec<SessionRequest> {
    let mut sequence = Sequence(7);
    (0..samples)
        .map(|i| sample_request(&mut sequence, i))
        .collect()
}

/// A pool with no room for a 20 GiB session anywhere: `workers` workers whose every device
/// holds two idle 32 GiB low-QoS sessions (`workers × 8` sessions in all), so a placement
/// must visit every device and choose swap-out victims.
pub fn saturated_fixture(workers: usize) -> Pool {
    let mut pool = empty_fixture(workers);
    let sessions = workers * DEVICES_PER_WORKER as usize * 2;
    for s in 0..sessions {
        let request = SessionRequest {
            id: SessionId(s as u64),
            tenant: TenantId(format!("tenant-{:03}", s % 100)),
            function: None,
            vram_bytes: 32 << 30,
            compute_percent: 5,
            qos: Qos::Low,
            backend: None,
            strategy: None,
            idle: None,
        };
        let _ = pool.request_session(request, Millis(1));
    }
    pool
}
/// Times `samples` reclaim decisions on `pool` (a [`saturated_fixture`]): 20 GiB high-QoS
/// requests that fit nowhere without swapping idle sessions out.
pub fn measure_reclaim(pool: &Pool, samples: usize) -> LatencySummary {
    time_each(&reclaim_requests(samples), |request| {
        let _ = std::hint::black_box(pool.plan_placement(request, Millis(2_000)));
    })
}

/// The requests [`measure_reclaim`] times: 20 GiB high-QoS, decided at `Millis(2_000)`.
pub fn reclaim_requests(samples: usize) -> Vec<SessionRequest> {
    (0..samples)
        .map(|i| SessionRequest {
            id: SessionId(u64::MAX - i as u64),
            tenant: "bench".into(),
            function: None,
            vram_bytes: 20 << 30,
            compute_percent: 5,
            qos: Qos::High,
            backend: None,
            strategy: None,
            idle: None,
        })
        .collect()
}

/// Times `decide` once per request (wall clock) and summarises the times.
fn time_each(
    requests: &[SessionRequest],
    mut decide: impl FnMut(&SessionRequest),
) -> LatencySummary {
    let times = requests
        .iter()
        .map(|request| {
            let start = Instant::now();
            decide(request);
            start.elapsed()
        })
        .collect();
    summarize(times)
}

/// Percentiles of `times`.
pub fn summarize(mut times: Vec<Duration>) -> LatencySummary {
    times.sort();
    let percentile = |p: usize| {
        let rank = (times.len() * p / 100).min(times.len().saturating_sub(1));
        times.get(rank).copied().unwrap_or_default()
    };
    LatencySummary {
        samples: times.len(),
        p50: percentile(50),
        p99: percentile(99),
        max: times.last().copied().unwrap_or_default(),
    }
}

/// The `i`-th timed request: 1–16 GiB, any QoS, an id no fixture session uses.
fn sample_request(sequence: &mut Sequence, i: usize) -> SessionRequest {
    SessionRequest {
        id: SessionId(u64::MAX - i as u64),
        tenant: TenantId(format!("tenant-{:03}", sequence.next(100))),
        function: None,
        vram_bytes: (1 + sequence.next(16)) << 30,
        compute_percent: 5,
        qos: Qos::ALL[sequence.next(4) as usize],
        backend: None,
        strategy: None,
        idle: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_holds_the_requested_sessions_with_a_third_swapped_out() {
        let pool = fixture(10, 60);
        assert_eq!(pool.sessions().count(), 60);
        let swapped = pool
            .sessions()
            .filter(|s| s.state == crate::SessionState::SwappedOut)
            .count();
        assert_eq!(swapped, 20);
    }

    #[test]
    fn the_saturated_fixture_forces_a_reclaim() {
        let pool = saturated_fixture(3);
        assert_eq!(pool.sessions().count(), 24);
        let request = SessionRequest {
            id: SessionId(u64::MAX),
            tenant: "bench".into(),
            function: None,
            vram_bytes: 20 << 30,
            compute_percent: 5,
            qos: Qos::High,
            backend: None,
            strategy: None,
            idle: None,
        };
        let plan = pool.plan_placement(&request, Millis(2_000)).unwrap();
        assert_eq!(plan.swap_out.len(), 1);
        let summary = measure_reclaim(&pool, 10);
        assert_eq!(summary.samples, 10);
    }

    #[test]
    fn measurement_reports_ordered_percentiles() {
        let summary = measure_placement(&fixture(5, 20), 50);
        assert_eq!(summary.samples, 50);
        assert!(summary.p50 <= summary.p99 && summary.p99 <= summary.max);
    }
}
