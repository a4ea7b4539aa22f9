//! Placement decision time with 1,000 workers (4,000 devices) and 10,000 sessions.
//!
//! Criterion reports the mean and median; the goal is a p99 under 1 ms, so the bench also
//! times 10,000 individual decisions and prints their percentiles.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gpufn_pool::bench::{fixture, measure_placement};
use gpufn_pool::{Millis, PlacementStrategy, Qos, SessionId, SessionRequest};

const WORKERS: usize = 1_000;
const SESSIONS: usize = 10_000;

fn request(strategy: PlacementStrategy) -> SessionRequest {
    SessionRequest {
        id: SessionId(u64::MAX),
        tenant: "bench".into(),
        function: None,
        vram_bytes: 8 << 30,
        compute_percent: 10,
        qos: Qos::Medium,
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

    let summary = measure_placement(&pool, 10_000);
    println!(
        "placement decision, {WORKERS} workers x {SESSIONS} sessions, {} samples: p50 {:?}, p99 {:?}, max {:?}",
        summary.samples, summary.p50, summary.p99, summary.max
    );

    c.bench_function("plan_placement/bin_pack", |b| {
        let req = request(PlacementStrategy::BinPack);
        b.iter(|| black_box(pool.plan_placement(black_box(&req), Millis(2))))
    });
    c.bench_function("plan_placement/spread", |b| {
        let req = request(PlacementStrategy::Spread);
        b.iter(|| black_box(pool.plan_placement(black_box(&req), Millis(2))))
    });
    c.bench_function("request_then_end_session", |b| {
        let req = request(PlacementStrategy::BinPack);
        b.iter(|| {
            let placed = pool.request_session(req.clone(), Millis(2));
            black_box(&placed);
            black_box(pool.end_session(req.id, Millis(2)))
        })
    });
}

criterion_group!(benches, placement);
criterion_main!(benches);
