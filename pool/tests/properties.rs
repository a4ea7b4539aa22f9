//! Property tests: random event sequences driven through a `Pool`, with every invariant
//! re-derived independently from the public API after every step.

use std::collections::BTreeMap;
use std::time::Duration;

use gpufn_pool::*;
use proptest::prelude::*;

const WORKERS: u8 = 4;
const TENANTS: u8 = 4;
const RATE: RateLimit = RateLimit {
    per_second: 1,
    burst: 2,
};
const MAX_SESSIONS_T0: u32 = 3;
const MAX_VRAM_T1: u64 = 10;

#[derive(Clone, Debug)]
enum Event {
    Register {
        worker: u8,
        memory: Vec<u64>,
        last_is_cpu: bool,
    },
    Heartbeat {
        worker: u8,
        healthy: bool,
        devices_healthy: Vec<bool>,
    },
    Drain(u8),
    Resume(u8),
    Remove(u8),
    Request {
        tenant: u8,
        vram: u64,
        compute: u8,
        qos: u8,
        function: Option<u8>,
        spread: bool,
        backend: u8,
    },
    Activity(usize),
    SwappedOut(usize),
    SwapIn(usize),
    SwappedIn(usize),
    End(usize),
    Prewarm {
        tenant: u8,
        function: u8,
    },
    Tick,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        2 => (0..WORKERS, prop::collection::vec(0..=16u64, 0..=3), any::<bool>())
            .prop_map(|(worker, memory, last_is_cpu)| Event::Register { worker, memory, last_is_cpu }),
        5 => (0..WORKERS, prop::bool::weighted(0.85), prop::collection::vec(prop::bool::weighted(0.9), 0..=3))
            .prop_map(|(worker, healthy, devices_healthy)| Event::Heartbeat { worker, healthy, devices_healthy }),
        1 => (0..WORKERS).prop_map(Event::Drain),
        1 => (0..WORKERS).prop_map(Event::Resume),
        1 => (0..WORKERS).prop_map(Event::Remove),
        10 => (0..TENANTS, 0..=12u64, prop_oneof![Just(0u8), 0..=60u8, Just(100u8), Just(101u8)], 0..4u8,
               prop::option::of(0..2u8), any::<bool>(), prop_oneof![4 => Just(0u8), 1 => 1..3u8])
            .prop_map(|(tenant, vram, compute, qos, function, spread, backend)| Event::Request {
                tenant, vram, compute, qos, function, spread, backend,
            }),
        3 => any::<usize>().prop_map(Event::Activity),
        4 => any::<usize>().prop_map(Event::SwappedOut),
        3 => any::<usize>().prop_map(Event::SwapIn),
        1 => any::<usize>().prop_map(Event::SwappedIn),
        2 => any::<usize>().prop_map(Event::End),
        2 => (0..TENANTS, 0..2u8).prop_map(|(tenant, function)| Event::Prewarm { tenant, function }),
        3 => Just(Event::Tick),
    ]
}

fn steps() -> impl Strategy<Value = Vec<(u64, Event)>> {
    let dt = prop_oneof![2 => 0..200u64, 2 => 200..1_500u64, 1 => 1_500..12_000u64];
    prop::collection::vec((dt, event()), 1..80)
}

/// A burst of requests and ends from the quota-limited tenants on one large worker, fast
/// enough to press on the rate limit.
fn quota_steps() -> impl Strategy<Value = Vec<(u64, Event)>> {
    let request = (0..3u8, 0..=12u64).prop_map(|(tenant, vram)| Event::Request {
        tenant,
        vram,
        compute: 0,
        qos: 1,
        function: None,
        spread: false,
        backend: 0,
    });
    let event = prop_oneof![4 => request, 1 => any::<usize>().prop_map(Event::End)];
    let register = Event::Register {
        worker: 0,
        memory: vec![16, 16, 16],
        last_is_cpu: false,
    };
    prop::collection::vec((0..150u64, event), 1..80).prop_map(move |mut steps| {
        steps.insert(0, (0, register.clone()));
        steps
    })
}

fn config_strategy() -> impl Strategy<Value = PoolConfig> {
    (
        prop_oneof![Just(100u32), Just(150), Just(200), Just(300)],
        any::<bool>(),
        prop::option::of(1..20u64),
        prop::option::of(5..60u64),
    )
        .prop_map(|(overcommit, spread, idle_s, scale_s)| PoolConfig {
            strategy: if spread {
                PlacementStrategy::Spread
            } else {
                PlacementStrategy::BinPack
            },
            vram_overcommit_percent: overcommit,
            lease_timeout: Duration::from_secs(15),
            idle_timeout: PerQos {
                low: idle_s.map(Duration::from_secs),
                medium: idle_s.map(|s| Duration::from_secs(s * 2)),
                high: Some(Duration::from_secs(30)),
                critical: None,
            },
            reclaim_min_idle: Duration::from_secs(1),
            scale_to_zero_after: scale_s.map(Duration::from_secs),
            default_quota: TenantQuota::UNLIMITED,
        })
}

fn tenant(t: u8) -> TenantId {
    TenantId(format!("t{t}"))
}

fn worker_id(w: u8) -> WorkerId {
    WorkerId(format!("w{w}"))
}

fn function(f: u8) -> String {
    format!("f{f}")
}

fn new_pool(config: PoolConfig) -> Pool {
    let mut pool = Pool::new(config).unwrap();
    pool.set_tenant_quota(
        tenant(0),
        TenantQuota {
            max_sessions: Some(MAX_SESSIONS_T0),
            ..TenantQuota::UNLIMITED
        },
    );
    pool.set_tenant_quota(
        tenant(1),
        TenantQuota {
            max_vram_bytes: Some(MAX_VRAM_T1),
            ..TenantQuota::UNLIMITED
        },
    );
    pool.set_tenant_quota(
        tenant(2),
        TenantQuota {
            rate: Some(RATE),
            ..TenantQuota::UNLIMITED
        },
    );
    pool
}

/// The `index`-th live session (wrapping), or an id no session has when there are none.
fn pick(pool: &Pool, index: usize) -> SessionId {
    let count = pool.sessions().count();
    if count == 0 {
        return SessionId(index as u64);
    }
    pool.sessions().nth(index % count).map(|s| s.id).unwrap()
}

/// What the checker remembers between steps.
struct Checker {
    overcommit: u32,
    rate_admissions: Vec<Millis>,
}

impl Checker {
    /// Invariants of the pool state, derived from sessions and the device inventory.
    fn state(&self, pool: &Pool, now: Millis) {
        let view = pool.view(now);
        let mut devices: BTreeMap<DeviceRef, &DeviceView> = BTreeMap::new();
        for worker in &view.workers {
            for device in &worker.devices {
                devices.insert(
                    DeviceRef {
                        worker: worker.id.clone(),
                        index: device.index,
                    },
                    device,
                );
            }
        }
        #[derive(Default, PartialEq, Debug)]
        struct Sums {
            hot: u64,
            claimed: u64,
            quota: u64,
            compute: u32,
            counts: [u32; 4],
        }
        let mut sums: BTreeMap<DeviceRef, Sums> = BTreeMap::new();
        let mut per_tenant: BTreeMap<TenantId, (u32, u64)> = BTreeMap::new();
        for session in pool.sessions() {
            assert!(
                devices.contains_key(&session.device),
                "session {} is assigned to a missing device {}",
                session.id,
                session.device
            );
            let sum = sums.entry(session.device.clone()).or_default();
            sum.quota += session.vram_bytes;
            if matches!(
                session.state,
                SessionState::Resident | SessionState::SwappingOut
            ) {
                sum.hot += session.vram_bytes;
            }
            if matches!(
                session.state,
                SessionState::Resident | SessionState::Waiting
            ) {
                sum.claimed += session.vram_bytes;
                sum.compute += u32::from(session.compute_percent);
            }
            let slot = match session.state {
                SessionState::Resident => 0,
                SessionState::Waiting => 1,
                SessionState::SwappingOut => 2,
                SessionState::SwappedOut => 3,
            };
            sum.counts[slot] += 1;
            let usage = per_tenant.entry(session.tenant.clone()).or_default();
            usage.0 += 1;
            usage.1 += session.vram_bytes;
        }
        for (device_ref, device) in &devices {
            let sum = sums.remove(device_ref).unwrap_or_default();
            let memory = device.memory_bytes;
            assert!(
                sum.hot <= memory,
                "{device_ref}: resident {} > physical {memory}",
                sum.hot
            );
            assert!(
                sum.claimed <= memory,
                "{device_ref}: claimed {} > physical {memory}",
                sum.claimed
            );
            let quota_limit = u128::from(memory) * u128::from(self.overcommit) / 100;
            assert!(
                u128::from(sum.quota) <= quota_limit,
                "{device_ref}: quotas {} > {quota_limit}",
                sum.quota
            );
            assert!(
                sum.compute <= 100,
                "{device_ref}: compute {}% > 100%",
                sum.compute
            );
            // Liveness: with no swap-out in flight, nothing is left waiting for memory.
            if sum.counts[2] == 0 {
                assert_eq!(
                    sum.counts[1], 0,
                    "{device_ref}: sessions wait with no swap-out in flight"
                );
            }
            // The view's own totals agree with the sessions.
            let counted = [
                device.sessions.resident,
                device.sessions.waiting,
                device.sessions.swapping_out,
                device.sessions.swapped_out,
            ];
            assert_eq!(
                (
                    device.resident_bytes,
                    device.claimed_bytes,
                    device.quota_bytes,
                    device.claimed_compute_percent,
                    counted
                ),
                (sum.hot, sum.claimed, sum.quota, sum.compute, sum.counts),
                "{device_ref}: view totals disagree with sessions"
            );
        }
        let (sessions_t0, _) = per_tenant.get(&tenant(0)).copied().unwrap_or_default();
        assert!(
            sessions_t0 <= MAX_SESSIONS_T0,
            "tenant t0 has {sessions_t0} sessions"
        );
        let (_, vram_t1) = per_tenant.get(&tenant(1)).copied().unwrap_or_default();
        assert!(vram_t1 <= MAX_VRAM_T1, "tenant t1 holds {vram_t1} bytes");
        for tenant_view in &view.tenants {
            let (count, vram) = per_tenant
                .get(&tenant_view.tenant)
                .copied()
                .unwrap_or_default();
            assert_eq!(
                (tenant_view.sessions, tenant_view.vram_bytes),
                (count, vram),
                "tenant usage of {}",
                tenant_view.tenant
            );
        }
    }

    /// The token bucket bound: admissions in any window [a, b] ≤ burst + rate × (b − a).
    fn rate(&self) {
        let times = &self.rate_admissions;
        for (i, start) in times.iter().enumerate() {
            for (j, end) in times.iter().enumerate().skip(i) {
                let admitted = (j - i + 1) as u64;
                let allowed =
                    u64::from(RATE.burst) + (end.0 - start.0) * u64::from(RATE.per_second) / 1000;
                assert!(
                    admitted <= allowed,
                    "{admitted} admissions between {start} and {end}"
                );
            }
        }
    }
}

/// Checks a successful placement against the state before it.
fn check_placement(
    before: &PoolView,
    sessions_before: &[Session],
    request: &SessionRequest,
    placement: &Placement,
    after: &Pool,
    now: Millis,
) {
    let worker = before
        .workers
        .iter()
        .find(|w| w.id == placement.device.worker)
        .expect("placed on an unregistered worker");
    assert_eq!(
        worker.status,
        WorkerStatus::Active,
        "placed on a draining worker"
    );
    assert!(worker.healthy, "placed on an unhealthy worker");
    assert!(
        now <= worker.lease_expires_at,
        "placed on a worker past its lease"
    );
    let device = worker
        .devices
        .iter()
        .find(|d| d.index == placement.device.index)
        .expect("placed on a missing device");
    assert!(
        device.healthy && device.memory_bytes > 0,
        "placed on an unusable device"
    );
    if let Some(backend) = request.backend {
        assert_eq!(device.backend, backend);
    }
    let session = after
        .session(placement.session)
        .expect("placed session is live");
    assert_eq!(session.state == SessionState::Resident, placement.ready);
    for command in &placement.commands {
        let Command::SwapOut {
            session: victim,
            device: victim_device,
            reason: SwapOutReason::Reclaim { for_session },
        } = command
        else {
            panic!("unexpected placement command {command:?}");
        };
        assert_eq!(*for_session, placement.session);
        assert_eq!(victim_device, &placement.device);
        let old = sessions_before
            .iter()
            .find(|s| s.id == *victim)
            .expect("victim existed");
        assert_eq!(old.state, SessionState::Resident);
        assert!(
            old.qos < request.qos,
            "reclaimed a {} session for a {} one",
            old.qos,
            request.qos
        );
        assert!(
            now.since(old.last_active) >= Duration::from_secs(1),
            "reclaimed a busy session"
        );
    }
}

/// Checks commands returned by any event.
fn check_commands(commands: &[Command], pool: &Pool) {
    for command in commands {
        match command {
            Command::WorkerLost { worker, sessions } => {
                assert!(
                    pool.worker_address(worker).is_none()
                        || sessions.iter().all(|s| pool
                            .session(*s)
                            .map(|x| &x.device.worker != worker)
                            .unwrap_or(true))
                );
                for session in sessions {
                    assert!(
                        pool.session(*session)
                            .is_none_or(|s| &s.device.worker != worker),
                        "lost session {session} still assigned"
                    );
                }
            }
            Command::ScaleToZero { session, .. } => assert!(pool.session(*session).is_none()),
            Command::Ready { session, device } | Command::SwapIn { session, device } => {
                let s = pool.session(*session).expect("ready session is live");
                assert_eq!(s.state, SessionState::Resident);
                assert_eq!(&s.device, device);
            }
            Command::SwapOut { session, .. } => {
                // A later command in the same batch cannot bring it back; it must be swapping out.
                assert_eq!(
                    pool.session(*session).map(|s| s.state),
                    Some(SessionState::SwappingOut)
                );
            }
            Command::WorkerDrained { worker } => {
                assert!(pool.sessions().all(|s| &s.device.worker != worker));
            }
        }
    }
}

/// Checks that a tick did exactly what was due: every decision was due, and nothing due was
/// left undone.
fn check_tick(
    config: &PoolConfig,
    before: &PoolView,
    sessions_before: &[Session],
    commands: &[Command],
    after: &Pool,
    now: Millis,
) {
    let old = |id: &SessionId| {
        sessions_before
            .iter()
            .find(|s| s.id == *id)
            .expect("existed")
    };
    for command in commands {
        match command {
            Command::WorkerLost { worker, .. } => {
                let w = before
                    .workers
                    .iter()
                    .find(|w| &w.id == worker)
                    .expect("existed");
                assert!(
                    now > w.lease_expires_at,
                    "{worker} removed within its lease"
                );
            }
            Command::SwapOut {
                session, reason, ..
            } => {
                assert_eq!(*reason, SwapOutReason::Idle);
                let s = old(session);
                assert_eq!(s.state, SessionState::Resident);
                let timeout = config.idle_timeout.get(s.qos).expect("level has a timeout");
                assert!(
                    now.since(s.last_active) >= timeout,
                    "{session} swapped out early"
                );
            }
            Command::ScaleToZero { session, .. } => {
                let s = old(session);
                assert!(s.state == SessionState::SwappedOut && s.function.is_some());
                let delay = config.scale_to_zero_after.expect("scale to zero is on");
                assert!(
                    now.since(s.last_active) >= delay,
                    "{session} scaled to zero early"
                );
            }
            Command::WorkerDrained { worker } => {
                let w = before
                    .workers
                    .iter()
                    .find(|w| &w.id == worker)
                    .expect("existed");
                assert_eq!(w.status, WorkerStatus::Draining);
            }
            other => panic!("tick issued {other:?}"),
        }
    }
    let view = after.view(now);
    for worker in &view.workers {
        assert!(
            now <= worker.lease_expires_at,
            "{} outlived its lease",
            worker.id
        );
    }
    for session in after.sessions() {
        let idle = now.since(session.last_active);
        if session.state == SessionState::Resident
            && let Some(timeout) = config.idle_timeout.get(session.qos)
        {
            assert!(idle < timeout, "{} left resident while idle", session.id);
        }
        if session.state == SessionState::SwappedOut
            && session.function.is_some()
            && let Some(delay) = config.scale_to_zero_after
        {
            assert!(
                idle < delay,
                "{} left swapped out past scale-to-zero",
                session.id
            );
        }
    }
}

/// Runs the events, checking invariants after each; returns a log of every decision.
fn run(config: PoolConfig, steps: &[(u64, Event)]) -> Vec<String> {
    let overcommit = config.vram_overcommit_percent;
    let mut pool = new_pool(config.clone());
    let mut checker = Checker {
        overcommit,
        rate_admissions: Vec::new(),
    };
    let mut log = Vec::new();
    let mut now = Millis(0);
    let mut next_id = 0u64;
    for (dt, event) in steps {
        now = Millis(now.0 + dt);
        let entry = match event {
            Event::Register {
                worker,
                memory,
                last_is_cpu,
            } => {
                let count = memory.len();
                let devices = memory
                    .iter()
                    .enumerate()
                    .map(|(i, &memory_bytes)| DeviceSpec {
                        index: i as u32,
                        name: format!("d{i}"),
                        backend: if *last_is_cpu && i + 1 == count {
                            Backend::Cpu
                        } else {
                            Backend::Cuda
                        },
                        memory_bytes,
                        compute_units: 8,
                    })
                    .collect();
                let spec = WorkerSpec {
                    id: worker_id(*worker),
                    address: format!("w{worker}"),
                    devices,
                };
                let result = pool.register_worker(spec, now);
                if let Ok(commands) = &result {
                    check_commands(commands, &pool);
                }
                format!("{result:?}")
            }
            Event::Heartbeat {
                worker,
                healthy,
                devices_healthy,
            } => {
                let devices = devices_healthy
                    .iter()
                    .enumerate()
                    .map(|(i, &healthy)| DeviceUsage {
                        index: i as u32,
                        used_bytes: 0,
                        utilization_percent: 0,
                        healthy,
                    })
                    .collect();
                format!(
                    "{:?}",
                    pool.heartbeat(
                        &worker_id(*worker),
                        WorkerUsage {
                            healthy: *healthy,
                            devices
                        },
                        now
                    )
                )
            }
            Event::Drain(w) => format!("{:?}", pool.drain_worker(&worker_id(*w))),
            Event::Resume(w) => format!("{:?}", pool.resume_worker(&worker_id(*w))),
            Event::Remove(w) => {
                let result = pool.remove_worker(&worker_id(*w));
                if let Ok(command) = &result {
                    check_commands(std::slice::from_ref(command), &pool);
                }
                format!("{result:?}")
            }
            Event::Request {
                tenant: t,
                vram,
                compute,
                qos,
                function: f,
                spread,
                backend,
            } => {
                next_id += 1;
                let request = SessionRequest {
                    id: SessionId(next_id),
                    tenant: tenant(*t),
                    function: f.map(function),
                    vram_bytes: *vram,
                    compute_percent: *compute,
                    qos: Qos::ALL[usize::from(*qos)],
                    backend: [None, Some(Backend::Cuda), Some(Backend::Cpu)][usize::from(*backend)],
                    strategy: spread.then_some(PlacementStrategy::Spread),
                    idle: None,
                };
                let before = pool.view(now);
                let sessions_before: Vec<Session> = pool.sessions().cloned().collect();
                let plan = pool.plan_placement(&request, now);
                let result = pool.request_session(request.clone(), now);
                // Planning predicts the decision exactly.
                match (&plan, &result) {
                    (Ok(plan), Ok(placed)) => {
                        assert_eq!(plan.device, placed.device);
                        assert_eq!(plan.swap_out.len(), placed.commands.len());
                    }
                    (Err(a), Err(b)) => assert_eq!(a, b),
                    _ => panic!("plan {plan:?} but request {result:?}"),
                }
                if let Ok(placement) = &result {
                    check_placement(&before, &sessions_before, &request, placement, &pool, now);
                    check_commands(&placement.commands, &pool);
                    if request.tenant == tenant(2) {
                        checker.rate_admissions.push(now);
                        checker.rate();
                    }
                }
                format!("{result:?}")
            }
            Event::Activity(i) => format!("{:?}", pool.session_activity(pick(&pool, *i), now)),
            Event::SwappedOut(i) => {
                let result = pool.session_swapped_out(pick(&pool, *i), now);
                if let Ok(commands) = &result {
                    check_commands(commands, &pool);
                }
                format!("{result:?}")
            }
            Event::SwapIn(i) => {
                let id = pick(&pool, *i);
                let result = pool.request_swap_in(id, now);
                match &result {
                    Ok(SwapInDecision::Granted { ready, commands }) => {
                        check_commands(commands, &pool);
                        let state = pool.session(id).unwrap().state;
                        assert_eq!(state == SessionState::Resident, *ready);
                    }
                    Ok(SwapInDecision::Denied { .. }) => {
                        assert_eq!(pool.session(id).unwrap().state, SessionState::SwappedOut)
                    }
                    _ => {}
                }
                format!("{result:?}")
            }
            Event::SwappedIn(i) => format!("{:?}", pool.session_swapped_in(pick(&pool, *i), now)),
            Event::End(i) => {
                let id = pick(&pool, *i);
                let result = pool.end_session(id, now);
                if let Ok(commands) = &result {
                    assert!(pool.session(id).is_none());
                    check_commands(commands, &pool);
                }
                format!("{result:?}")
            }
            Event::Prewarm {
                tenant: t,
                function: f,
            } => {
                let decision = pool.prewarm(&tenant(*t), &function(*f), now);
                if let PrewarmDecision::SwapIn { commands, .. } = &decision {
                    check_commands(commands, &pool);
                }
                format!("{decision:?}")
            }
            Event::Tick => {
                let before = pool.view(now);
                let sessions_before: Vec<Session> = pool.sessions().cloned().collect();
                let commands = pool.tick(now);
                check_commands(&commands, &pool);
                check_tick(&config, &before, &sessions_before, &commands, &pool, now);
                format!("{commands:?}")
            }
        };
        checker.state(&pool, now);
        log.push(entry);
    }
    log.push(format!("{:?}", pool.view(now)));
    log
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Every invariant holds after every step of any event sequence.
    #[test]
    fn invariants_hold_after_every_event(config in config_strategy(), steps in steps()) {
        run(config, &steps);
    }

    /// Session, VRAM and rate quotas hold under a fast stream of requests.
    #[test]
    fn quotas_hold_under_request_bursts(steps in quota_steps()) {
        run(PoolConfig { vram_overcommit_percent: 1_000, ..PoolConfig::default() }, &steps);
    }

    /// The same events always produce the same decisions and the same final state.
    #[test]
    fn decisions_are_deterministic(config in config_strategy(), steps in steps()) {
        let first = run(config.clone(), &steps);
        let second = run(config, &steps);
        prop_assert_eq!(first, second);
    }
}
