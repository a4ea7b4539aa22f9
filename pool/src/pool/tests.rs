//! Behaviour of the pool facade, one policy rule per test.

use std::time::Duration;

use super::*;
use crate::inventory::{Backend, DeviceSpec, DeviceUsage};
use crate::placement::PlacementStrategy;
use crate::qos::{PerQos, Qos};
use crate::quota::RateLimit;

const GIB: u64 = 1 << 30;

fn device(index: u32, gib: u64) -> DeviceSpec {
    DeviceSpec {
        index,
        name: format!("gpu{index}"),
        backend: Backend::Cuda,
        memory_bytes: gib * GIB,
        compute_units: 100,
    }
}

fn worker(id: &str, devices: Vec<DeviceSpec>) -> WorkerSpec {
    WorkerSpec {
        id: id.into(),
        address: format!("{id}:7001"),
        devices,
    }
}

fn request(id: u64, gib: u64, qos: Qos) -> SessionRequest {
    SessionRequest {
        id: SessionId(id),
        tenant: "acme".into(),
        function: None,
        vram_bytes: gib * GIB,
        compute_percent: 0,
        qos,
        backend: None,
        strategy: None,
        idle: None,
    }
}

fn config() -> PoolConfig {
    PoolConfig {
        scale_to_zero_after: None,
        ..PoolConfig::default()
    }
}

fn pool_with(config: PoolConfig, workers: Vec<WorkerSpec>) -> Pool {
    let mut pool = Pool::new(config).unwrap();
    for spec in workers {
        pool.register_worker(spec, Millis(0)).unwrap();
    }
    pool
}

fn pool(workers: Vec<WorkerSpec>) -> Pool {
    pool_with(config(), workers)
}

fn place(pool: &mut Pool, req: SessionRequest, now: u64) -> Placement {
    pool.request_session(req, Millis(now)).unwrap()
}

fn at(worker: &str, index: u32) -> DeviceRef {
    DeviceRef {
        worker: worker.into(),
        index,
    }
}

fn state(pool: &Pool, id: u64) -> SessionState {
    pool.session(SessionId(id)).unwrap().state
}

fn healthy(devices: Vec<DeviceUsage>) -> WorkerUsage {
    WorkerUsage {
        healthy: true,
        devices,
    }
}

// ----- placement ---------------------------------------------------------------------------

#[test]
fn an_exact_fit_is_placed_and_nothing_more() {
    let mut pool = pool(vec![worker("w", vec![device(0, 10)])]);
    let placed = place(&mut pool, request(1, 10, Qos::Medium), 0);
    assert_eq!(placed.device, at("w", 0));
    assert_eq!(placed.address, "w:7001");
    assert!(placed.ready && placed.commands.is_empty());
    let mut one_byte = request(2, 0, Qos::Medium);
    one_byte.vram_bytes = 1;
    let rejection = pool.request_session(one_byte, Millis(0)).unwrap_err();
    assert!(matches!(
        rejection,
        Rejection::NoCapacity {
            requested_bytes: 1,
            largest_unclaimed_bytes: 0,
            ..
        }
    ));
}

#[test]
fn bin_pack_fills_the_fullest_device_that_fits() {
    let mut pool = pool(vec![worker("w", vec![device(0, 20), device(1, 10)])]);
    assert_eq!(
        place(&mut pool, request(1, 5, Qos::Medium), 0).device,
        at("w", 1)
    );
    assert_eq!(
        place(&mut pool, request(2, 4, Qos::Medium), 0).device,
        at("w", 1)
    );
    // 1 GiB left on gpu1: a 2 GiB session must go to gpu0.
    assert_eq!(
        place(&mut pool, request(3, 2, Qos::Medium), 0).device,
        at("w", 0)
    );
}

#[test]
fn bin_pack_counts_the_overcommit_bound_as_room_too() {
    let mut pool = pool(vec![worker("w", vec![device(0, 10), device(1, 10)])]);
    place(&mut pool, request(1, 10, Qos::Medium), 0);
    pool.session_swapped_out(SessionId(1), Millis(0)).unwrap();
    place(&mut pool, request(2, 8, Qos::Medium), 0);
    pool.session_swapped_out(SessionId(2), Millis(0)).unwrap();
    // gpu0: 10 GiB unclaimed but only 2 GiB under its 20 GiB quota bound; gpu1: 10 GiB room.
    assert_eq!(pool.session(SessionId(2)).unwrap().device, at("w", 0));
    assert_eq!(
        place(&mut pool, request(3, 2, Qos::Medium), 0).device,
        at("w", 0)
    );
    assert_eq!(
        place(&mut pool, request(4, 1, Qos::Medium), 0).device,
        at("w", 1)
    );
}

#[test]
fn spread_uses_the_emptiest_device_and_requests_may_override_it() {
    let spread = PoolConfig {
        strategy: PlacementStrategy::Spread,
        ..config()
    };
    let mut pool = pool_with(
        spread,
        vec![worker("w", vec![device(0, 10), device(1, 20)])],
    );
    // Unclaimed after each: gpu1 20 → 14 → 8; gpu0 10 → 4.
    assert_eq!(
        place(&mut pool, request(1, 6, Qos::Medium), 0).device,
        at("w", 1)
    );
    assert_eq!(
        place(&mut pool, request(2, 6, Qos::Medium), 0).device,
        at("w", 1)
    );
    assert_eq!(
        place(&mut pool, request(3, 6, Qos::Medium), 0).device,
        at("w", 0)
    );
    // gpu0 has 4 GiB left, gpu1 8 GiB: bin packing picks gpu0.
    let mut packed = request(4, 1, Qos::Medium);
    packed.strategy = Some(PlacementStrategy::BinPack);
    assert_eq!(place(&mut pool, packed, 0).device, at("w", 0));
}

#[test]
fn ties_go_to_the_lowest_worker_id_then_device_index() {
    for strategy in [PlacementStrategy::BinPack, PlacementStrategy::Spread] {
        let config = PoolConfig {
            strategy,
            ..config()
        };
        let mut pool = pool_with(
            config,
            vec![
                worker("b", vec![device(0, 10)]),
                worker("a", vec![device(3, 10), device(1, 10)]),
            ],
        );
        assert_eq!(
            place(&mut pool, request(1, 1, Qos::Medium), 0).device,
            at("a", 1),
            "{strategy:?}"
        );
    }
}

#[test]
fn draining_workers_get_no_new_sessions() {
    let mut pool = pool(vec![
        worker("a", vec![device(0, 10)]),
        worker("b", vec![device(0, 10)]),
    ]);
    pool.drain_worker(&"a".into()).unwrap();
    assert_eq!(
        place(&mut pool, request(1, 1, Qos::Medium), 0).device,
        at("b", 0)
    );
    pool.drain_worker(&"b".into()).unwrap();
    let rejection = pool
        .request_session(request(2, 1, Qos::Critical), Millis(0))
        .unwrap_err();
    assert!(
        matches!(
            rejection,
            Rejection::NoEligibleDevice {
                draining_workers: 2,
                ..
            }
        ),
        "{rejection}"
    );
    pool.resume_worker(&"a".into()).unwrap();
    assert_eq!(
        place(&mut pool, request(2, 1, Qos::Medium), 0).device,
        at("a", 0)
    );
}

#[test]
fn unhealthy_workers_and_devices_get_no_new_sessions() {
    let mut pool = pool(vec![
        worker("a", vec![device(0, 10), device(1, 10)]),
        worker("b", vec![device(0, 10)]),
    ]);
    let sick = DeviceUsage {
        index: 0,
        used_bytes: 0,
        utilization_percent: 0,
        healthy: false,
    };
    pool.heartbeat(&"a".into(), healthy(vec![sick]), Millis(1))
        .unwrap();
    assert_eq!(
        place(&mut pool, request(1, 1, Qos::Medium), 1).device,
        at("a", 1)
    );
    pool.heartbeat(
        &"a".into(),
        WorkerUsage {
            healthy: false,
            devices: vec![],
        },
        Millis(2),
    )
    .unwrap();
    assert_eq!(
        place(&mut pool, request(2, 1, Qos::Medium), 2).device,
        at("b", 0)
    );
    pool.heartbeat(
        &"b".into(),
        WorkerUsage {
            healthy: false,
            devices: vec![],
        },
        Millis(3),
    )
    .unwrap();
    let rejection = pool
        .request_session(request(3, 1, Qos::Medium), Millis(3))
        .unwrap_err();
    assert!(
        matches!(
            rejection,
            Rejection::NoEligibleDevice {
                unhealthy_workers: 2,
                ..
            }
        ),
        "{rejection}"
    );
}

#[test]
fn a_worker_past_its_lease_gets_no_sessions_even_before_the_tick() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    let after_lease = Millis(15_001);
    let rejection = pool
        .request_session(request(1, 1, Qos::Medium), after_lease)
        .unwrap_err();
    assert!(
        matches!(
            rejection,
            Rejection::NoEligibleDevice {
                expired_workers: 1,
                ..
            }
        ),
        "{rejection}"
    );
    pool.heartbeat(&"a".into(), healthy(vec![]), after_lease)
        .unwrap();
    assert!(
        pool.request_session(request(1, 1, Qos::Medium), after_lease)
            .is_ok()
    );
}

#[test]
fn devices_without_memory_get_no_sessions_not_even_empty_ones() {
    let mut pool = pool(vec![worker("a", vec![device(0, 0)])]);
    let rejection = pool
        .request_session(request(1, 0, Qos::Medium), Millis(0))
        .unwrap_err();
    assert!(
        matches!(
            rejection,
            Rejection::NoEligibleDevice {
                unavailable_devices: 1,
                ..
            }
        ),
        "{rejection}"
    );
}

#[test]
fn a_required_backend_is_honoured_and_explained() {
    let mut cpu = device(1, 10);
    cpu.backend = Backend::Cpu;
    let mut pool = pool(vec![worker("a", vec![device(0, 10), cpu])]);
    let mut req = request(1, 1, Qos::Medium);
    req.backend = Some(Backend::Cpu);
    assert_eq!(place(&mut pool, req, 0).device, at("a", 1));
    let mut only_cpu = pool_with(config(), vec![worker("b", vec![device(0, 10)])]);
    let mut req = request(2, 1, Qos::Medium);
    req.backend = Some(Backend::Cpu);
    let rejection = only_cpu.request_session(req, Millis(0)).unwrap_err();
    assert_eq!(
        rejection,
        Rejection::NoEligibleDevice {
            draining_workers: 0,
            unhealthy_workers: 0,
            expired_workers: 0,
            unavailable_devices: 0,
            other_backend_devices: 1,
            required_backend: Some(Backend::Cpu),
        }
    );
}

#[test]
fn requests_larger_than_any_device_or_with_no_workers_are_explained() {
    let mut empty = pool(vec![]);
    assert_eq!(
        empty.request_session(request(1, 1, Qos::Medium), Millis(0)),
        Err(Rejection::NoWorkers)
    );
    let mut pool = pool(vec![worker("a", vec![device(0, 10), device(1, 24)])]);
    assert_eq!(
        pool.request_session(request(1, 25, Qos::Critical), Millis(0)),
        Err(Rejection::TooLarge {
            requested_bytes: 25 * GIB,
            largest_device_bytes: 24 * GIB
        })
    );
}

#[test]
fn compute_shares_add_up_to_at_most_one_device() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10), device(1, 10)])]);
    let mut big = request(1, 1, Qos::Medium);
    big.compute_percent = 60;
    assert_eq!(place(&mut pool, big, 0).device, at("a", 0));
    let mut second = request(2, 1, Qos::Medium);
    second.compute_percent = 50;
    assert_eq!(place(&mut pool, second, 0).device, at("a", 1));
    let mut third = request(3, 1, Qos::Medium);
    third.compute_percent = 51;
    assert!(matches!(
        pool.request_session(third, Millis(0)),
        Err(Rejection::NoCapacity { .. })
    ));
    let mut invalid = request(4, 1, Qos::Medium);
    invalid.compute_percent = 101;
    assert_eq!(
        pool.request_session(invalid, Millis(0)),
        Err(Rejection::ComputeShareTooLarge { percent: 101 })
    );
}

#[test]
fn swapped_out_sessions_free_physical_memory_within_the_overcommit() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    place(&mut pool, request(1, 10, Qos::Medium), 0);
    assert!(
        pool.session_swapped_out(SessionId(1), Millis(1))
            .unwrap()
            .is_empty()
    );
    let second = place(&mut pool, request(2, 10, Qos::Medium), 1);
    assert!(second.ready);
    pool.session_swapped_out(SessionId(2), Millis(2)).unwrap();
    // Quotas now total 20 GiB = 10 GiB × 200%: not one byte more.
    let mut one_byte = request(3, 0, Qos::Critical);
    one_byte.vram_bytes = 1;
    assert!(matches!(
        pool.request_session(one_byte, Millis(2)),
        Err(Rejection::NoCapacity { .. })
    ));
}

#[test]
fn without_overcommit_swapped_out_sessions_keep_their_quota() {
    let strict = PoolConfig {
        vram_overcommit_percent: 100,
        ..config()
    };
    let mut pool = pool_with(strict, vec![worker("a", vec![device(0, 10)])]);
    place(&mut pool, request(1, 6, Qos::Medium), 0);
    pool.session_swapped_out(SessionId(1), Millis(1)).unwrap();
    assert!(
        pool.request_session(request(2, 5, Qos::Medium), Millis(1))
            .is_err()
    );
    assert!(
        pool.request_session(request(2, 4, Qos::Medium), Millis(1))
            .is_ok()
    );
}

#[test]
fn a_live_session_id_cannot_be_reused() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    place(&mut pool, request(1, 1, Qos::Medium), 0);
    assert_eq!(
        pool.request_session(request(1, 1, Qos::Medium), Millis(0)),
        Err(Rejection::DuplicateSession {
            session: SessionId(1)
        })
    );
    pool.end_session(SessionId(1), Millis(1)).unwrap();
    assert!(
        pool.request_session(request(1, 1, Qos::Medium), Millis(1))
            .is_ok()
    );
}

#[test]
fn planning_changes_nothing() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    pool.set_tenant_quota(
        "acme".into(),
        TenantQuota {
            rate: Some(RateLimit {
                per_second: 0,
                burst: 1,
            }),
            ..TenantQuota::UNLIMITED
        },
    );
    let before = pool.view(Millis(0));
    let plan = pool
        .plan_placement(&request(1, 4, Qos::Medium), Millis(0))
        .unwrap();
    assert_eq!(
        plan,
        PlacementPlan {
            device: at("a", 0),
            swap_out: vec![]
        }
    );
    assert!(
        pool.plan_placement(&request(1, 4, Qos::Medium), Millis(0))
            .is_ok()
    );
    assert_eq!(pool.view(Millis(0)), before);
    // The single rate token is still there.
    assert!(
        pool.request_session(request(1, 4, Qos::Medium), Millis(0))
            .is_ok()
    );
}

// ----- QoS and reclaim ---------------------------------------------------------------------

#[test]
fn a_higher_qos_session_reclaims_memory_from_an_idle_lower_one() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    place(&mut pool, request(1, 6, Qos::Low), 0);
    let placed = place(&mut pool, request(2, 6, Qos::High), 5_000);
    assert!(!placed.ready);
    assert_eq!(
        placed.commands,
        [Command::SwapOut {
            session: SessionId(1),
            device: at("a", 0),
            reason: SwapOutReason::Reclaim {
                for_session: SessionId(2)
            },
        }]
    );
    assert_eq!(state(&pool, 1), SessionState::SwappingOut);
    assert_eq!(state(&pool, 2), SessionState::Waiting);
    let ready = pool
        .session_swapped_out(SessionId(1), Millis(5_100))
        .unwrap();
    assert_eq!(
        ready,
        [Command::Ready {
            session: SessionId(2),
            device: at("a", 0)
        }]
    );
    assert_eq!(state(&pool, 2), SessionState::Resident);
}

#[test]
fn recently_active_sessions_are_never_reclaimed() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    place(&mut pool, request(1, 6, Qos::Low), 0);
    pool.session_activity(SessionId(1), Millis(4_500)).unwrap();
    let rejection = pool
        .request_session(request(2, 6, Qos::Critical), Millis(5_000))
        .unwrap_err();
    assert!(
        matches!(
            rejection,
            Rejection::NoCapacity {
                qos: Qos::Critical,
                ..
            }
        ),
        "{rejection}"
    );
    assert!(
        pool.request_session(request(2, 6, Qos::Critical), Millis(5_500))
            .is_ok()
    );
}

#[test]
fn equal_or_lower_qos_never_reclaims() {
    for (victim, requester) in [
        (Qos::Low, Qos::Low),
        (Qos::High, Qos::High),
        (Qos::Critical, Qos::Critical),
        (Qos::High, Qos::Medium),
    ] {
        let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
        place(&mut pool, request(1, 6, victim), 0);
        let result = pool.request_session(request(2, 6, requester), Millis(5_000));
        assert!(
            matches!(result, Err(Rejection::NoCapacity { .. })),
            "{victim} vs {requester}"
        );
        assert_eq!(state(&pool, 1), SessionState::Resident);
    }
}

#[test]
fn reclaim_picks_the_device_that_moves_the_fewest_bytes() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10), device(1, 10)])]);
    place(&mut pool, request(1, 8, Qos::Low), 0); // gpu0: 2 GiB free
    place(&mut pool, request(2, 6, Qos::Low), 0); // gpu1 (bin pack: gpu0 is too full)
    place(&mut pool, request(3, 2, Qos::Low), 0); // gpu0: full
    assert_eq!(pool.session(SessionId(2)).unwrap().device, at("a", 1));
    // 5 GiB: gpu1 needs 1 GiB freed (session 2, 6 GiB); gpu0 needs 5 GiB (session 1, 8 GiB).
    let placed = place(&mut pool, request(4, 5, Qos::High), 10_000);
    assert_eq!(placed.device, at("a", 1));
    assert_eq!(placed.commands.len(), 1);
    assert!(matches!(
        placed.commands[0],
        Command::SwapOut {
            session: SessionId(2),
            ..
        }
    ));
}

#[test]
fn reclaim_finds_the_cheapest_device_even_after_costlier_ones() {
    let one_each = |id: &str| worker(id, vec![device(0, 10)]);
    let mut pool = pool(vec![one_each("a"), one_each("b"), one_each("c")]);
    for (id, gib) in [(1, 5), (2, 5), (3, 9), (4, 3), (5, 3), (6, 3)] {
        place(&mut pool, request(id, gib, Qos::Low), 0);
    }
    let on = |pool: &Pool, id: u64| pool.session(SessionId(id)).unwrap().device.worker.0.clone();
    assert_eq!([on(&pool, 2), on(&pool, 3), on(&pool, 6)], ["a", "b", "c"]);
    // Freeing 6 GiB moves 10 GiB on a, 9 GiB on b, 6 GiB (two sessions) on c.
    let placed = place(&mut pool, request(7, 6, Qos::High), 5_000);
    assert_eq!(placed.device, at("c", 0));
    let victims: Vec<SessionId> = placed
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::SwapOut { session, .. } => Some(*session),
            _ => None,
        })
        .collect();
    assert_eq!(victims, [SessionId(4), SessionId(5)]);
}

#[test]
fn a_direct_fit_is_preferred_over_a_reclaim() {
    let mut pool = pool(vec![
        worker("a", vec![device(0, 10)]),
        worker("b", vec![device(0, 10)]),
    ]);
    place(&mut pool, request(1, 10, Qos::Low), 0);
    let placed = place(&mut pool, request(2, 5, Qos::Critical), 5_000);
    assert_eq!(placed.device, at("b", 0));
    assert!(placed.ready && placed.commands.is_empty());
}

#[test]
fn waiting_sessions_become_ready_first_come_first_served() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    place(&mut pool, request(1, 5, Qos::Low), 0);
    place(&mut pool, request(2, 5, Qos::Low), 0);
    let first = place(&mut pool, request(3, 5, Qos::High), 5_000);
    assert_eq!(first.commands.len(), 1);
    let second = place(&mut pool, request(4, 5, Qos::High), 5_000);
    assert_eq!(second.commands.len(), 1);
    let (first_victim, second_victim) = match (&first.commands[0], &second.commands[0]) {
        (Command::SwapOut { session: a, .. }, Command::SwapOut { session: b, .. }) => (*a, *b),
        other => panic!("unexpected {other:?}"),
    };
    // The second victim finishes first: the first waiter (3) takes the memory.
    let ready = pool
        .session_swapped_out(second_victim, Millis(5_100))
        .unwrap();
    assert_eq!(
        ready,
        [Command::Ready {
            session: SessionId(3),
            device: at("a", 0)
        }]
    );
    let ready = pool
        .session_swapped_out(first_victim, Millis(5_200))
        .unwrap();
    assert_eq!(
        ready,
        [Command::Ready {
            session: SessionId(4),
            device: at("a", 0)
        }]
    );
}

#[test]
fn a_session_placed_behind_unfinished_swap_outs_waits_without_new_victims() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    place(&mut pool, request(1, 10, Qos::Medium), 0);
    let idle = pool.tick(Millis(10_000));
    assert_eq!(idle.len(), 1, "{idle:?}");
    // Memory is promised free but still occupied.
    let placed = place(&mut pool, request(2, 4, Qos::Low), 10_000);
    assert!(!placed.ready && placed.commands.is_empty());
    assert_eq!(
        pool.end_session(SessionId(1), Millis(10_100)).unwrap(),
        [Command::Ready {
            session: SessionId(2),
            device: at("a", 0)
        }]
    );
}

// ----- swap-in -----------------------------------------------------------------------------

#[test]
fn a_swapped_out_session_gets_its_memory_back_when_free() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    place(&mut pool, request(1, 6, Qos::Medium), 0);
    pool.session_swapped_out(SessionId(1), Millis(1)).unwrap();
    assert_eq!(
        pool.request_swap_in(SessionId(1), Millis(2)).unwrap(),
        SwapInDecision::Granted {
            ready: true,
            commands: vec![]
        }
    );
    pool.session_swapped_in(SessionId(1), Millis(3)).unwrap();
    assert_eq!(
        pool.request_swap_in(SessionId(1), Millis(4)).unwrap(),
        SwapInDecision::AlreadyReserved { ready: true }
    );
}

#[test]
fn swap_in_reclaims_from_idle_lower_qos_or_is_denied() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    place(&mut pool, request(1, 6, Qos::High), 0);
    pool.session_swapped_out(SessionId(1), Millis(1)).unwrap();
    place(&mut pool, request(2, 6, Qos::Low), 1);
    let decision = pool.request_swap_in(SessionId(1), Millis(5_000)).unwrap();
    let SwapInDecision::Granted {
        ready: false,
        commands,
    } = decision
    else {
        panic!("{decision:?}")
    };
    assert!(matches!(
        commands[..],
        [Command::SwapOut {
            session: SessionId(2),
            ..
        }]
    ));
    assert_eq!(
        pool.request_swap_in(SessionId(1), Millis(5_001)).unwrap(),
        SwapInDecision::AlreadyReserved { ready: false }
    );

    // The low session cannot take the memory back from the high one.
    pool.session_swapped_out(SessionId(2), Millis(5_100))
        .unwrap();
    let denied = pool.request_swap_in(SessionId(2), Millis(9_000)).unwrap();
    assert!(
        matches!(
            denied,
            SwapInDecision::Denied {
                rejection: Rejection::NoCapacity { .. }
            }
        ),
        "{denied:?}"
    );
    assert_eq!(state(&pool, 2), SessionState::SwappedOut);
}

#[test]
fn swap_protocol_violations_are_refused_without_changes() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    place(&mut pool, request(1, 6, Qos::Medium), 0);
    pool.tick(Millis(10_000));
    assert_eq!(state(&pool, 1), SessionState::SwappingOut);
    let err = pool
        .request_swap_in(SessionId(1), Millis(10_001))
        .unwrap_err();
    assert!(
        err.to_string().contains("report the swap-out first"),
        "{err}"
    );
    pool.session_swapped_out(SessionId(1), Millis(10_002))
        .unwrap();
    let err = pool
        .session_swapped_in(SessionId(1), Millis(10_003))
        .unwrap_err();
    assert!(matches!(
        err,
        PoolError::InvalidTransition {
            state: SessionState::SwappedOut,
            ..
        }
    ));
    assert_eq!(state(&pool, 1), SessionState::SwappedOut);
    // A repeated swap-out report is harmless.
    assert!(
        pool.session_swapped_out(SessionId(1), Millis(10_004))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        pool.session_activity(SessionId(9), Millis(0)),
        Err(PoolError::UnknownSession {
            session: SessionId(9)
        })
    );
}

// ----- quotas ------------------------------------------------------------------------------

#[test]
fn the_session_quota_holds_and_ending_a_session_frees_it() {
    let mut pool = pool(vec![worker("a", vec![device(0, 80)])]);
    pool.set_tenant_quota(
        "acme".into(),
        TenantQuota {
            max_sessions: Some(2),
            ..TenantQuota::UNLIMITED
        },
    );
    place(&mut pool, request(1, 1, Qos::Medium), 0);
    place(&mut pool, request(2, 1, Qos::Medium), 0);
    let rejection = pool
        .request_session(request(3, 1, Qos::Medium), Millis(0))
        .unwrap_err();
    assert!(matches!(
        rejection,
        Rejection::Quota {
            exceeded: QuotaExceeded::Sessions {
                limit: 2,
                current: 2,
                ..
            }
        }
    ));
    let mut other = request(3, 1, Qos::Medium);
    other.tenant = "other".into();
    assert!(
        pool.request_session(other, Millis(0)).is_ok(),
        "quotas are per tenant"
    );
    pool.end_session(SessionId(1), Millis(1)).unwrap();
    assert!(
        pool.request_session(request(4, 1, Qos::Medium), Millis(1))
            .is_ok()
    );
}

#[test]
fn the_vram_quota_counts_swapped_out_sessions_too() {
    let mut pool = pool(vec![worker("a", vec![device(0, 80)])]);
    pool.set_tenant_quota(
        "acme".into(),
        TenantQuota {
            max_vram_bytes: Some(10 * GIB),
            ..TenantQuota::UNLIMITED
        },
    );
    place(&mut pool, request(1, 6, Qos::Medium), 0);
    pool.session_swapped_out(SessionId(1), Millis(1)).unwrap();
    let rejection = pool
        .request_session(request(2, 5, Qos::Medium), Millis(1))
        .unwrap_err();
    assert!(
        matches!(
            rejection,
            Rejection::Quota {
                exceeded: QuotaExceeded::Vram { .. }
            }
        ),
        "{rejection}"
    );
    assert!(
        pool.request_session(request(2, 4, Qos::Medium), Millis(1))
            .is_ok(),
        "exact fit"
    );
}

#[test]
fn the_rate_quota_is_a_token_bucket_and_only_admissions_take_tokens() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    pool.set_tenant_quota(
        "acme".into(),
        TenantQuota {
            rate: Some(RateLimit {
                per_second: 1,
                burst: 2,
            }),
            ..TenantQuota::UNLIMITED
        },
    );
    // A capacity rejection does not use a token.
    assert!(matches!(
        pool.request_session(request(1, 11, Qos::Medium), Millis(0)),
        Err(Rejection::TooLarge { .. })
    ));
    place(&mut pool, request(1, 1, Qos::Medium), 0);
    place(&mut pool, request(2, 1, Qos::Medium), 0);
    let rejection = pool
        .request_session(request(3, 1, Qos::Medium), Millis(400))
        .unwrap_err();
    assert!(
        matches!(
            rejection,
            Rejection::Quota {
                exceeded: QuotaExceeded::Rate {
                    retry_after_ms: Some(600),
                    ..
                }
            }
        ),
        "{rejection}"
    );
    assert!(
        pool.request_session(request(3, 1, Qos::Medium), Millis(1_000))
            .is_ok()
    );
}

#[test]
fn the_default_quota_applies_until_a_tenant_has_its_own() {
    let limited = PoolConfig {
        default_quota: TenantQuota {
            max_sessions: Some(1),
            ..TenantQuota::UNLIMITED
        },
        ..config()
    };
    let mut pool = pool_with(limited, vec![worker("a", vec![device(0, 10)])]);
    place(&mut pool, request(1, 1, Qos::Medium), 0);
    assert!(
        pool.request_session(request(2, 1, Qos::Medium), Millis(0))
            .is_err()
    );
    pool.set_tenant_quota("acme".into(), TenantQuota::UNLIMITED);
    place(&mut pool, request(2, 1, Qos::Medium), 0);
    pool.clear_tenant_quota(&"acme".into());
    assert_eq!(pool.tenant_quota(&"acme".into()).max_sessions, Some(1));
    assert!(
        pool.request_session(request(3, 1, Qos::Medium), Millis(0))
            .is_err()
    );
}

// ----- leases and workers ------------------------------------------------------------------

#[test]
fn a_worker_that_misses_its_heartbeats_is_removed_and_its_sessions_lost() {
    let mut pool = pool(vec![
        worker("a", vec![device(0, 10), device(1, 10)]),
        worker("b", vec![device(0, 10)]),
    ]);
    place(&mut pool, request(2, 9, Qos::Medium), 0);
    place(&mut pool, request(1, 9, Qos::Medium), 0);
    place(&mut pool, request(3, 9, Qos::Medium), 0);
    pool.heartbeat(&"b".into(), healthy(vec![]), Millis(10_000))
        .unwrap();
    assert!(
        pool.tick(Millis(15_000))
            .iter()
            .all(|c| !matches!(c, Command::WorkerLost { .. }))
    );
    let commands = pool.tick(Millis(15_001));
    assert_eq!(
        commands[0],
        Command::WorkerLost {
            worker: "a".into(),
            sessions: vec![SessionId(1), SessionId(2)]
        }
    );
    assert!(pool.session(SessionId(1)).is_none() && pool.session(SessionId(2)).is_none());
    assert!(pool.session(SessionId(3)).is_some());
    assert_eq!(pool.view(Millis(15_001)).tenants[0].sessions, 1);
    let err = pool
        .heartbeat(&"a".into(), healthy(vec![]), Millis(15_002))
        .unwrap_err();
    assert!(err.to_string().contains("register it again"));
}

#[test]
fn a_worker_registering_again_has_restarted_and_lost_its_sessions() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    place(&mut pool, request(1, 4, Qos::Medium), 0);
    let commands = pool
        .register_worker(worker("a", vec![device(0, 20)]), Millis(5))
        .unwrap();
    assert_eq!(
        commands,
        [Command::WorkerLost {
            worker: "a".into(),
            sessions: vec![SessionId(1)]
        }]
    );
    assert_eq!(
        pool.view(Millis(5)).workers[0].devices[0].memory_bytes,
        20 * GIB
    );
    assert!(
        pool.register_worker(worker("a", vec![device(0, 20)]), Millis(6))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn bad_registrations_and_heartbeats_change_nothing() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    let err = pool
        .register_worker(worker("b", vec![device(0, 1), device(0, 1)]), Millis(0))
        .unwrap_err();
    assert_eq!(
        err,
        PoolError::DuplicateDevice {
            worker: "b".into(),
            index: 0
        }
    );
    let before = pool.view(Millis(1));
    let bad = DeviceUsage {
        index: 7,
        used_bytes: 0,
        utilization_percent: 0,
        healthy: false,
    };
    let ok = DeviceUsage {
        index: 0,
        used_bytes: 5,
        utilization_percent: 50,
        healthy: false,
    };
    let err = pool
        .heartbeat(
            &"a".into(),
            WorkerUsage {
                healthy: false,
                devices: vec![ok, bad],
            },
            Millis(1),
        )
        .unwrap_err();
    assert_eq!(
        err,
        PoolError::UnknownDevice {
            worker: "a".into(),
            index: 7
        }
    );
    assert_eq!(pool.view(Millis(1)), before);
}

#[test]
fn removing_a_worker_loses_its_sessions() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    place(&mut pool, request(1, 4, Qos::Medium), 0);
    assert_eq!(
        pool.remove_worker(&"a".into()).unwrap(),
        Command::WorkerLost {
            worker: "a".into(),
            sessions: vec![SessionId(1)]
        }
    );
    assert_eq!(pool.sessions().count(), 0);
    assert!(pool.remove_worker(&"a".into()).is_err());
}

// ----- idle, scale to zero, drain ------------------------------------------------------------

#[test]
fn idle_resident_sessions_are_swapped_out_once() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    place(&mut pool, request(1, 4, Qos::Medium), 0);
    pool.session_activity(SessionId(1), Millis(3_000)).unwrap();
    pool.heartbeat(&"a".into(), healthy(vec![]), Millis(12_000))
        .unwrap();
    assert!(pool.tick(Millis(12_999)).is_empty());
    assert_eq!(
        pool.tick(Millis(13_000)),
        [Command::SwapOut {
            session: SessionId(1),
            device: at("a", 0),
            reason: SwapOutReason::Idle
        }]
    );
    assert!(pool.tick(Millis(13_001)).is_empty());
}

#[test]
fn idle_timeouts_follow_the_qos_level() {
    let per_level = PoolConfig {
        idle_timeout: PerQos {
            low: Some(Duration::from_secs(1)),
            medium: None,
            high: None,
            critical: None,
        },
        ..config()
    };
    let mut pool = pool_with(per_level, vec![worker("a", vec![device(0, 10)])]);
    place(&mut pool, request(1, 1, Qos::Low), 0);
    place(&mut pool, request(2, 1, Qos::High), 0);
    let commands = pool.tick(Millis(5_000));
    assert_eq!(commands.len(), 1);
    assert!(matches!(
        commands[0],
        Command::SwapOut {
            session: SessionId(1),
            ..
        }
    ));
}

#[test]
fn idle_function_sessions_scale_to_zero_after_swapping_out() {
    let scaling = PoolConfig {
        scale_to_zero_after: Some(Duration::from_secs(60)),
        ..config()
    };
    let mut pool = pool_with(scaling, vec![worker("a", vec![device(0, 10)])]);
    let mut function = request(1, 4, Qos::Medium);
    function.function = Some("blur".into());
    place(&mut pool, function, 0);
    place(&mut pool, request(2, 4, Qos::Medium), 0);
    for t in [10_000, 20_000, 30_000, 40_000, 50_000] {
        pool.heartbeat(&"a".into(), healthy(vec![]), Millis(t))
            .unwrap();
    }
    assert_eq!(pool.tick(Millis(10_000)).len(), 2);
    pool.session_swapped_out(SessionId(1), Millis(10_500))
        .unwrap();
    pool.session_swapped_out(SessionId(2), Millis(10_500))
        .unwrap();
    assert!(pool.tick(Millis(59_999)).is_empty());
    assert_eq!(
        pool.tick(Millis(60_000)),
        [Command::ScaleToZero {
            session: SessionId(1),
            device: at("a", 0)
        }]
    );
    assert!(pool.session(SessionId(1)).is_none());
    assert!(
        pool.session(SessionId(2)).is_some(),
        "sessions without a function stay"
    );
}

#[test]
fn a_drained_worker_is_reported_once_when_empty() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    place(&mut pool, request(1, 4, Qos::Medium), 0);
    pool.drain_worker(&"a".into()).unwrap();
    assert!(pool.tick(Millis(1)).is_empty());
    pool.end_session(SessionId(1), Millis(2)).unwrap();
    assert_eq!(
        pool.tick(Millis(3)),
        [Command::WorkerDrained { worker: "a".into() }]
    );
    assert!(pool.tick(Millis(4)).is_empty());
}

// ----- prewarm ------------------------------------------------------------------------------

fn function_request(id: u64, gib: u64, qos: Qos) -> SessionRequest {
    SessionRequest {
        function: Some("blur".into()),
        ..request(id, gib, qos)
    }
}

#[test]
fn prewarm_reports_cold_warm_and_in_progress_instances() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    let tenant: TenantId = "acme".into();
    assert_eq!(
        pool.prewarm(&tenant, "blur", Millis(0)),
        PrewarmDecision::NoInstance
    );
    place(&mut pool, function_request(1, 4, Qos::Medium), 0);
    assert_eq!(
        pool.prewarm(&tenant, "blur", Millis(1)),
        PrewarmDecision::Warm {
            session: SessionId(1)
        }
    );
    assert_eq!(
        pool.prewarm(&"other".into(), "blur", Millis(1)),
        PrewarmDecision::NoInstance
    );
    pool.tick(Millis(10_000));
    assert_eq!(
        pool.prewarm(&tenant, "blur", Millis(10_001)),
        PrewarmDecision::SwapOutInProgress {
            session: SessionId(1)
        }
    );
}

#[test]
fn prewarm_swaps_in_the_most_recently_used_instance() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    place(&mut pool, function_request(1, 4, Qos::Medium), 0);
    place(&mut pool, function_request(2, 4, Qos::Medium), 0);
    pool.session_activity(SessionId(2), Millis(100)).unwrap();
    pool.session_swapped_out(SessionId(1), Millis(200)).unwrap();
    pool.session_swapped_out(SessionId(2), Millis(200)).unwrap();
    let decision = pool.prewarm(&"acme".into(), "blur", Millis(300));
    assert_eq!(
        decision,
        PrewarmDecision::SwapIn {
            session: SessionId(2),
            commands: vec![Command::SwapIn {
                session: SessionId(2),
                device: at("a", 0)
            }]
        }
    );
    assert_eq!(state(&pool, 2), SessionState::Resident);
}

#[test]
fn prewarm_is_denied_when_no_memory_can_be_freed() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    place(&mut pool, function_request(1, 6, Qos::Low), 0);
    pool.session_swapped_out(SessionId(1), Millis(1)).unwrap();
    place(&mut pool, request(2, 6, Qos::High), 1);
    let decision = pool.prewarm(&"acme".into(), "blur", Millis(9_000));
    assert!(
        matches!(
            decision,
            PrewarmDecision::Denied {
                session: SessionId(1),
                rejection: Rejection::NoCapacity { .. }
            }
        ),
        "{decision:?}"
    );
}

// ----- view ---------------------------------------------------------------------------------

#[test]
fn the_view_shows_memory_by_state_as_json() {
    let mut pool = pool(vec![worker("a", vec![device(0, 10)])]);
    place(&mut pool, request(1, 4, Qos::Medium), 0);
    place(&mut pool, request(2, 2, Qos::Medium), 0);
    pool.session_swapped_out(SessionId(2), Millis(1)).unwrap();
    let view = pool.view(Millis(2));
    let json = serde_json::to_value(&view).unwrap();
    let gpu = &json["workers"][0]["devices"][0];
    assert_eq!(gpu["resident_bytes"], 4 * GIB);
    assert_eq!(gpu["quota_bytes"], 6 * GIB);
    assert_eq!(gpu["quota_limit_bytes"], 20 * GIB);
    assert_eq!(gpu["sessions"]["swapped_out"], 1);
    assert_eq!(json["workers"][0]["status"], "active");
    assert_eq!(json["workers"][0]["lease_expires_at"], 15_000);
    assert_eq!(json["tenants"][0]["vram_bytes"], 6 * GIB);
    assert_eq!(view.sessions.total(), 2);
}
