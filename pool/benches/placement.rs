//! Placement decision time with 1,000 workers (4,000 devices).
//!
//! Criterion reports the mean and median; the goal is a p99 under 1 ms, so the bench also
//! times 10,000 individual decisions per scenario and prints their percentiles.
//!
//! Scenarios:
//! * `direct`: 10,000 sessions, the request fits somewhere (the common case, via the index);
//! * `rejected`: the same pool, a request larger than any device (a full scan of all devices);
//! * `reclaim`: no device has room, so every device is scanned and swap-out victims chosen.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gpufn_pool::bench::{fixture, measure_placement, measure_reclaim, saturated_fixture};
use gpufn_pool::{Millis, PlacementStrategy, Qos, SessionId, SessionRequest};

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
    }
}

fn placement(c: &mut Criterion) {
    let mut pool = fixture(WORKERS, SESSIONS);
    assert_eq!(
        pool.sessions().count(),
        SESSIONS,
        "the fixture must hold every session"
    );
    let saturated = saturated_fixture(WORKERS);

    let direct = measure_placement(&pool, 10_000);
    println!(
        "direct placement, {WORKERS} workers x {SESSIONS} sessions, {} decisions: p50 {:?}, p99 {:?}, max {:?}",
        direct.samples, direct.p50, direct.p99, direct.max
    );
    let reclaim = measure_reclaim(&saturated, 1_000);
    println!(
        "reclaim placement, {WORKERS} workers x {} sessions, {} decisions: p50 {:?}, p99 {:?}, max {:?}",
        saturated.sessions().count(),
        reclaim.samples,
        reclaim.p50,
        reclaim.p99,
        reclaim.max
    );

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
