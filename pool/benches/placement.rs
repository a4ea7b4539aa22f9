//! Placement decision time with 1,000 workers (4,000 devices).
//!
//! Criterion reports the mean and median; the goal is a p99 under 1 ms, so the bench also
//! times individual decisions per scenario and prints their percentiles, twice: by the wall
//! clock, and by this thread's CPU time, which leaves out the time other processes take the
//! CPU away (on a shared 2-core machine that, not the decision, makes the wall-clock tail).
//!
//! Scenarios:
//! * `direct`: 10,000 sessions, the request fits somewhere (the common case, via the index);
//! * `rejected`: the same pool, a request larger than any device (a full scan of all devices);
//! * `reclaim`: no device has room, so every device is scanned and swap-out victims chosen.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use std::time::Duration;

use gpufn_pool::bench::{
    LatencySummary, fixture, measure_placement, measure_reclaim, placement_requests,
    reclaim_requests, saturated_fixture, summarize,
};
use gpufn_pool::{Millis, PlacementStrategy, Pool, Qos, SessionId, SessionRequest};

const WORKERS: usize = 1_000;
const SESSIONS: usize = 10_000;

fn request(vram_gib: u64, qos: Qos, strategy: PlacementStrategy) -> SessionRequest {
    SessionRequest {
        id: SessionId(u64::MAX),
        tenant: "bench".into(),
        function: None,
        vram_bytes: vram_gib << 30,
        compute_percent: 10,
        qos,
        backend: None,
        strategy: Some(strategy),
        idle: None,
    }
}

/// CPU time used by this thread so far.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the duration of the call, and
    // CLOCK_THREAD_CPUTIME_ID exists on every Linux the bench runs on.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Percentiles of the CPU time each decision took.
fn cpu_time_each(pool: &Pool, requests: &[SessionRequest], now: Millis) -> LatencySummary {
    let times = requests
        .iter()
        .map(|request| {
            let start = thread_cpu_time();
            let _ = black_box(pool.plan_placement(request, now));
            thread_cpu_time() - start
        })
        .collect();
    summarize(times)
}

fn report(scenario: &str, clock: &str, summary: &LatencySummary) {
    println!(
        "{scenario} ({clock}), {} decisions: p50 {:?}, p99 {:?}, max {:?}",
        summary.samples, summary.p50, summary.p99, summary.max
    );
}

fn placement(c: &mut Criterion) {
    let mut pool = fixture(WORKERS, SESSIONS);
    assert_eq!(
        pool.sessions().count(),
        SESSIONS,
        "the fixture must hold every session"
    );
    let saturated = saturated_fixture(WORKERS);

    let direct = format!("direct placement, {WORKERS} workers x {SESSIONS} sessions");
    report(&direct, "wall", &measure_placement(&pool, 10_000));
    let cpu = cpu_time_each(&pool, &placement_requests(10_000), Millis(2));
    report(
        &direct,
        "thread CPU, includes ~0.1-0.3 us clock overhead",
        &cpu,
    );
    let reclaim = format!(
        "reclaim placement, {WORKERS} workers x {} sessions",
        saturated.sessions().count()
    );
    report(&reclaim, "wall", &measure_reclaim(&saturated, 1_000));
    let cpu = cpu_time_each(&saturated, &reclaim_requests(1_000), Millis(2_000));
    report(&reclaim, "thread CPU", &cpu);

    c.bench_function("plan_placement/direct/bin_pack", |b| {
        let req = request(8, Qos::Medium, PlacementStrategy::BinPack);
        b.iter(|| black_box(pool.plan_placement(black_box(&req), Millis(2))))
    });
    c.bench_function("plan_placement/direct/spread", |b| {
        let req = request(8, Qos::Medium, PlacementStrategy::Spread);
        b.iter(|| black_box(pool.plan_placement(black_box(&req), Millis(2))))
    });
    c.bench_function("plan_placement/rejected_full_scan", |b| {
        let req = request(81, Qos::Critical, PlacementStrategy::BinPack);
        b.iter(|| black_box(pool.plan_placement(black_box(&req), Millis(2))))
    });
    c.bench_function("plan_placement/reclaim", |b| {
        let req = request(20, Qos::High, PlacementStrategy::BinPack);
        b.iter(|| black_box(saturated.plan_placement(black_box(&req), Millis(2_000))))
    });
    c.bench_function("request_then_end_session", |b| {
        let req = request(8, Qos::Medium, PlacementStrategy::BinPack);
        b.iter(|| {
            let placed = pool.request_session(req.clone(), Millis(2));
            black_box(&placed);
            black_box(pool.end_session(req.id, Millis(2)))
        })
    });
}

criterion_group!(benches, placement);
criterion_main!(benches);
