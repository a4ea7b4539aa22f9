//! Property tests: random sequences of swap-outs, swap-ins, discards and ticks against the real
//! store never lose or alter a session's data and never exceed the host budget; the pure
//! demotion plan keeps its promises for random inputs.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use gpufn_swap::policy::{Limits, Move, SessionView, Usage, plan_demotions};
use gpufn_swap::{DemotionPolicy, MemoryDevice, SessionId, SwapStore, Tier};
use object_store::memory::InMemory;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    SwapOut(Vec<usize>),
    SwapIn(prop::sample::Index),
    Discard(prop::sample::Index),
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(prop_oneof![Just(0usize), 1..100usize, 1..(3 * CHUNK)], 0..4)
            .prop_map(Op::SwapOut),
        2 => any::<prop::sample::Index>().prop_map(Op::SwapIn),
        1 => any::<prop::sample::Index>().prop_map(Op::Discard),
        2 => (0u64..90).prop_map(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_never_lose_data_or_exceed_the_budget(
        budget_chunks in prop_oneof![Just(0u64), Just(1), Just(4), Just(16)],
        ops in prop::collection::vec(op(), 1..24),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let host_budget = budget_chunks * CHUNK as u64;
        let mut cfg = disk_config("w", dir.path(), host_budget)
            .with_cold(Arc::new(InMemory::new()), "cold");
        cfg.policy = DemotionPolicy {
            host_idle: Duration::from_secs(30),
            host_headroom: 2 * CHUNK as u64,
            disk_idle: Some(Duration::from_secs(60)),
            disk_headroom: 0,
        };
        let (store, _) = SwapStore::open(cfg).unwrap();
        let mut device = MemoryDevice::new();
        let mut stored: BTreeMap<SessionId, TestSession> = BTreeMap::new();
        let start = Instant::now();
        let mut clock = Duration::ZERO;
        let mut next_id = 1;

        for op in ops {
            match op {
                Op::SwapOut(lens) => {
                    let s = make_session(&mut device, next_id, &lens);
                    next_id += 1;
                    store.swap_out(s.id, &s.allocations, &mut device).unwrap();
                    release(&mut device, &s);
                    stored.insert(s.id, s);
                }
                Op::SwapIn(pick) if !stored.is_empty() => {
                    let id = *stored.keys().nth(pick.index(stored.len())).unwrap();
                    let s = stored.remove(&id).unwrap();
                    remap(&mut device, &s);
                    store.swap_in(id, &mut device).unwrap();
                    assert_restored(&device, &s);
                    release(&mut device, &s);
                }
                Op::Discard(pick) if !stored.is_empty() => {
                    let id = *stored.keys().nth(pick.index(stored.len())).unwrap();
                    stored.remove(&id);
                    store.discard(id).unwrap();
                }
                Op::Tick(secs) => {
                    clock += Duration::from_secs(secs);
                    let report = store.tick(start + clock);
                    prop_assert!(report.errors.is_empty(), "{:?}", report.errors);
                }
                _ => {}
            }
            let status = store.status();
            prop_assert!(status.host_used <= status.host_budget,
                "host {} > budget {}", status.host_used, status.host_budget);
            let ids: Vec<SessionId> = status.sessions.iter().map(|s| s.session).collect();
            prop_assert_eq!(ids, stored.keys().copied().collect::<Vec<_>>());
        }
        // Everything still stored comes back intact, from whichever tier it reached.
        for s in stored.values() {
            remap(&mut device, s);
            store.swap_in(s.id, &mut device).unwrap();
            assert_restored(&device, s);
        }
        let status = store.status();
        prop_assert_eq!((status.host_used, status.disk_used, status.cold_bytes), (0, 0, 0));
    }
}

fn view() -> impl Strategy<Value = (u8, u64, u64, bool)> {
    // tier, MiB, age seconds, busy
    (0u8..2, 0u64..64, 0u64..1000, prop::bool::weighted(0.2))
}

proptest! {
    #[test]
    fn demotion_plans_are_sound(
        raw in prop::collection::vec(view(), 0..20),
        host_budget in 0u64..512,
        disk_budget in prop::option::of(0u64..1024),
        host_headroom in 0u64..128,
        host_idle in 0u64..1000,
        disk_idle in prop::option::of(0u64..1000),
        cold_enabled in any::<bool>(),
    ) {
        const MIB: u64 = 1 << 20;
        let sessions: Vec<SessionView> = raw.iter().enumerate().map(|(i, &(tier, mib, age, busy))| SessionView {
            session: SessionId(i as u64),
            tier: if tier == 0 { Tier::Host } else { Tier::Disk },
            host_bytes: mib * MIB,
            disk_bytes: mib * MIB,
            age: Duration::from_secs(age),
            busy,
        }).collect();
        let usage = Usage {
            host: sessions.iter().filter(|s| s.tier == Tier::Host).map(|s| s.host_bytes).sum(),
            disk: sessions.iter().filter(|s| s.tier == Tier::Disk).map(|s| s.disk_bytes).sum(),
        };
        let limits = Limits {
            host_budget: host_budget * MIB,
            disk_enabled: true,
            disk_budget: disk_budget.map(|d| d * MIB),
            cold_enabled,
        };
        let policy = DemotionPolicy {
            host_idle: Duration::from_secs(host_idle),
            host_headroom: host_headroom * MIB,
            disk_idle: disk_idle.map(Duration::from_secs),
            disk_headroom: 0,
        };
        let plan = plan_demotions(&policy, &limits, &usage, &sessions);

        let mut host = usage.host;
        let mut disk = usage.disk;
        let mut moved = std::collections::HashSet::new();
        for Move { session, from, to } in &plan {
            let s = &sessions[session.0 as usize];
            prop_assert!(!s.busy, "busy session {session} moved");
            prop_assert!(moved.insert(*session), "session {session} moved twice");
            prop_assert_eq!(*from, s.tier);
            match (from, to) {
                (Tier::Host, Tier::Disk) => {
                    prop_assert!(s.age >= policy.host_idle || limits.host_budget.saturating_sub(host) < policy.host_headroom);
                    host -= s.host_bytes;
                    disk += s.disk_bytes;
                    if let Some(budget) = limits.disk_budget {
                        prop_assert!(disk <= budget.max(usage.disk), "host→disk overfilled the disk");
                    }
                }
                (Tier::Disk, Tier::Cold) => {
                    prop_assert!(cold_enabled);
                    disk -= s.disk_bytes;
                }
                other => prop_assert!(false, "unexpected move {other:?}"),
            }
        }
        // Idle host sessions are all demoted unless the disk budget stops them.
        if limits.disk_budget.is_none() {
            for s in sessions.iter().filter(|s| s.tier == Tier::Host && !s.busy && s.age >= policy.host_idle) {
                prop_assert!(moved.contains(&s.session), "idle session {} stayed in host", s.session);
            }
        }
    }
}
