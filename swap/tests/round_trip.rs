//! Swap-out then swap-in restores every byte, on every tier, for awkward sizes.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use gpufn_swap::{DemotionPolicy, EventKind, MemoryDevice, Place, SwapError, SwapStore, Tier};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;

/// Sizes that hit every edge of the chunk layout.
fn awkward_sessions() -> Vec<Vec<usize>> {
    vec![
        vec![],                                 // no allocations
        vec![0],                                // one empty allocation
        vec![1],                                // one byte
        vec![CHUNK],                            // exactly one chunk
        vec![CHUNK + 1],                        // one byte into a second chunk
        vec![3 * CHUNK - 7, 5, 0, 4095, CHUNK], // mixed, not chunk multiples
        (0..200).map(|i| i * 37 + 1).collect(), // many small allocations sharing chunks
    ]
}

fn swap_out_all(
    store: &SwapStore,
    device: &mut MemoryDevice,
    first_id: u64,
) -> Vec<common::TestSession> {
    let mut sessions = Vec::new();
    for (i, lens) in awkward_sessions().iter().enumerate() {
        let s = make_session(device, first_id + i as u64, lens);
        store
            .swap_out(s.id, &s.allocations, device)
            .expect("swap-out");
        release(device, &s);
        sessions.push(s);
    }
    sessions
}

fn swap_in_all(
    store: &SwapStore,
    device: &mut MemoryDevice,
    sessions: &[common::TestSession],
    tier: Tier,
) {
    for s in sessions {
        remap(device, s);
        let receipt = store.swap_in(s.id, device).expect("swap-in");
        assert_eq!(
            receipt.from, tier,
            "session {} came from the wrong tier",
            s.id
        );
        assert_restored(device, s);
    }
    assert!(store.status().sessions.is_empty());
}

#[test]
fn the_store_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SwapStore>();
}

#[test]
fn host_tier_round_trip() {
    let (store, _) = SwapStore::open(config("w", 1 << 30)).unwrap();
    let mut device = MemoryDevice::new();
    let sessions = swap_out_all(&store, &mut device, 1);
    assert!(store.status().sessions.iter().all(|s| s.tier == Tier::Host));
    swap_in_all(&store, &mut device, &sessions, Tier::Host);
    assert_eq!(
        store.status().host_used,
        0,
        "host budget released after swap-in"
    );
}

#[test]
fn host_tier_round_trip_with_host_checksums() {
    let mut cfg = config("w", 1 << 30);
    cfg.host_checksums = true;
    let (store, _) = SwapStore::open(cfg).unwrap();
    let mut device = MemoryDevice::new();
    let sessions = swap_out_all(&store, &mut device, 1);
    swap_in_all(&store, &mut device, &sessions, Tier::Host);
}

#[test]
fn concurrent_sessions_do_not_interfere() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = disk_config("w", dir.path(), 8 * CHUNK as u64);
    cfg.policy = DemotionPolicy {
        host_idle: Duration::ZERO,
        ..DemotionPolicy::default()
    };
    let (store, _) = SwapStore::open(cfg).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        // A background ticker keeps demoting host sessions to disk while others swap.
        scope.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let report = store.tick(Instant::now());
                assert!(report.errors.is_empty(), "{:?}", report.errors);
            }
        });
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                let store = &store;
                scope.spawn(move || {
                    let mut device = MemoryDevice::new();
                    for round in 0..10u64 {
                        let id = 1 + t * 100 + round;
                        let s =
                            make_session(&mut device, id, &[CHUNK + (id as usize % 7) * 999, 17]);
                        store.swap_out(s.id, &s.allocations, &mut device).unwrap();
                        release(&mut device, &s);
                        remap(&mut device, &s);
                        store.swap_in(s.id, &mut device).unwrap();
                        assert_restored(&device, &s);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let status = store.status();
    assert!(status.sessions.is_empty());
    assert_eq!((status.host_used, status.disk_used), (0, 0));
}

#[test]
fn tiny_host_budget_forces_the_disk_tier() {
    let dir = tempfile::tempdir().unwrap();
    // Budget 0: everything with data goes to disk; empty sessions cost nothing and stay in RAM.
    let (store, _) = SwapStore::open(disk_config("w", dir.path(), 0)).unwrap();
    let mut device = MemoryDevice::new();
    let sessions = swap_out_all(&store, &mut device, 1);
    for (s, status) in sessions.iter().zip(store.status().sessions) {
        let bytes: u64 = s.allocations.iter().map(|a| a.len).sum();
        let expected = if bytes == 0 { Tier::Host } else { Tier::Disk };
        assert_eq!(status.tier, expected, "session {}", s.id);
        if bytes > 0 {
            let file = dir.path().join("w").join(format!("{}.data", s.id));
            assert!(file.exists(), "{} missing", file.display());
        }
    }
    assert_eq!(store.status().host_used, 0);
    for s in &sessions {
        remap(&mut device, s);
        store.swap_in(s.id, &mut device).unwrap();
        assert_restored(&device, s);
    }
    store.wait_for_cleanup();
    let trash: Vec<_> = std::fs::read_dir(dir.path().join("w").join("trash"))
        .unwrap()
        .collect();
    assert!(trash.is_empty(), "files not unlinked: {trash:?}");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("w"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "instance" && n != "trash")
        .collect();
    assert!(left.is_empty(), "swap files left after swap-in: {left:?}");
}

#[test]
fn budget_is_shared_first_come_first_served() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = SwapStore::open(disk_config("w", dir.path(), 3 * CHUNK as u64)).unwrap();
    let mut device = MemoryDevice::new();
    let a = make_session(&mut device, 1, &[2 * CHUNK]);
    let b = make_session(&mut device, 2, &[2 * CHUNK]);
    assert_eq!(
        store
            .swap_out(a.id, &a.allocations, &mut device)
            .unwrap()
            .tier,
        Tier::Host
    );
    assert_eq!(
        store
            .swap_out(b.id, &b.allocations, &mut device)
            .unwrap()
            .tier,
        Tier::Disk
    );
    let status = store.status();
    assert!(status.host_used <= status.host_budget);
    for s in [&a, &b] {
        release(&mut device, s);
        remap(&mut device, s);
        store.swap_in(s.id, &mut device).unwrap();
        assert_restored(&device, s);
    }
}

#[test]
fn direct_io_disk_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = disk_config("w", dir.path(), 0);
    cfg.disk.as_mut().unwrap().direct_io = true;
    let (store, _) = match SwapStore::open(cfg) {
        Ok(opened) => opened,
        Err(SwapError::Config(msg)) if msg.contains("O_DIRECT") => {
            eprintln!("skipping: {msg}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let mut device = MemoryDevice::new();
    let sessions = swap_out_all(&store, &mut device, 1);
    for s in &sessions {
        remap(&mut device, s);
        store.swap_in(s.id, &mut device).unwrap();
        assert_restored(&device, s);
    }
}

fn demote_everything_policy() -> DemotionPolicy {
    DemotionPolicy {
        host_idle: Duration::from_secs(60),
        host_headroom: 0,
        disk_idle: Some(Duration::from_secs(600)),
        disk_headroom: 0,
    }
}

fn cold_tier_round_trip(cold: Arc<dyn object_store::ObjectStore>) -> SwapStore {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = disk_config("w", dir.path(), 1 << 30).with_cold(cold, "swap");
    cfg.policy = demote_everything_policy();
    let (store, _) = SwapStore::open(cfg).unwrap();
    let mut device = MemoryDevice::new();
    let sessions = swap_out_all(&store, &mut device, 1);

    // Young sessions stay where they are.
    assert!(store.tick(Instant::now()).events.is_empty());

    let later = Instant::now() + Duration::from_secs(61);
    let report = store.tick(later);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.events.len(), sessions.len());
    assert!(report.events.iter().all(|e| e.kind == EventKind::Demote
        && e.from == Place::Tier(Tier::Host)
        && e.to == Place::Tier(Tier::Disk)));
    assert!(store.status().sessions.iter().all(|s| s.tier == Tier::Disk));
    assert_eq!(store.status().host_used, 0);

    let much_later = Instant::now() + Duration::from_secs(601);
    let report = store.tick(much_later);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(store.status().sessions.iter().all(|s| s.tier == Tier::Cold));
    assert_eq!(store.status().disk_used, 0);
    let total: u64 = sessions
        .iter()
        .flat_map(|s| &s.allocations)
        .map(|a| a.len)
        .sum();
    assert_eq!(store.status().cold_bytes, total);

    swap_in_all(&store, &mut device, &sessions, Tier::Cold);
    assert_eq!(store.status().cold_bytes, 0);
    store
}

#[test]
fn cold_tier_on_a_local_filesystem_object_store() {
    let cold_dir = tempfile::tempdir().unwrap();
    let cold = Arc::new(LocalFileSystem::new_with_prefix(cold_dir.path()).unwrap());
    let store = cold_tier_round_trip(cold);
    // Swapped-in sessions leave no chunk objects behind (deleted in the background).
    store.wait_for_cleanup();
    let leftovers = walk(cold_dir.path());
    assert!(leftovers.is_empty(), "objects left: {leftovers:?}");
}

#[test]
fn cold_tier_in_memory() {
    let _ = cold_tier_round_trip(Arc::new(InMemory::new()));
}

#[test]
fn store_works_from_tokio_blocking_threads() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = tokio::task::spawn_blocking(|| cold_tier_round_trip(Arc::new(InMemory::new())))
            .await
            .unwrap();
        // Dropping the store (and its cold-tier runtime) inside async code must not panic.
        drop(store);
    });
}

#[test]
fn events_report_each_movement() {
    let (store, _) = SwapStore::open(config("w", 1 << 30)).unwrap();
    let mut device = MemoryDevice::new();
    let s = make_session(&mut device, 9, &[1000, 2000]);
    let out = store.swap_out(s.id, &s.allocations, &mut device).unwrap();
    assert_eq!(out.event.kind, EventKind::SwapOut);
    assert_eq!(
        (out.event.from, out.event.to),
        (Place::Device, Place::Tier(Tier::Host))
    );
    assert_eq!(out.event.bytes, 3000);
    let status = store.status();
    assert_eq!(status.sessions.len(), 1);
    assert_eq!(status.sessions[0].bytes, 3000);
    assert_eq!(status.sessions[0].allocations, 2);
    assert_eq!(store.allocations(s.id).unwrap(), s.allocations);
    release(&mut device, &s);
    remap(&mut device, &s);
    let back = store.swap_in(s.id, &mut device).unwrap();
    assert_eq!(
        (back.event.from, back.event.to),
        (Place::Tier(Tier::Host), Place::Device)
    );
    assert_eq!(back.event.bytes, 3000);
}

#[test]
fn misuse_is_reported() {
    let (store, _) = SwapStore::open(config("w", 1 << 30)).unwrap();
    let mut device = MemoryDevice::new();
    let s = make_session(&mut device, 1, &[10]);
    store.swap_out(s.id, &s.allocations, &mut device).unwrap();
    assert!(matches!(
        store.swap_out(s.id, &s.allocations, &mut device),
        Err(SwapError::AlreadySwappedOut(_))
    ));
    assert!(matches!(
        store.swap_in(gpufn_swap::SessionId(77), &mut device),
        Err(SwapError::UnknownSession(_))
    ));
    store.discard(s.id).unwrap();
    assert!(matches!(
        store.swap_in(s.id, &mut device),
        Err(SwapError::UnknownSession(_))
    ));
}

#[test]
fn full_host_without_disk_is_a_clear_error() {
    let (store, _) = SwapStore::open(config("w", CHUNK as u64)).unwrap();
    let mut device = MemoryDevice::new();
    let s = make_session(&mut device, 1, &[2 * CHUNK]);
    let err = store
        .swap_out(s.id, &s.allocations, &mut device)
        .unwrap_err();
    assert!(matches!(err, SwapError::NoSpace { .. }), "{err}");
    assert!(err.to_string().contains("no disk tier"), "{err}");
    assert!(store.status().sessions.is_empty());
    assert_eq!(store.status().host_used, 0);
}

#[test]
fn a_failing_device_read_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = SwapStore::open(disk_config("w", dir.path(), 0)).unwrap();
    let mut device = MemoryDevice::new();
    let s = make_session(&mut device, 1, &[3 * CHUNK, 10]);
    device.free(s.allocations[1].device_address); // the second allocation is not mapped
    let err = store
        .swap_out(s.id, &s.allocations, &mut device)
        .unwrap_err();
    assert!(matches!(err, SwapError::Device { .. }), "{err}");
    assert!(store.status().sessions.is_empty());
    assert_eq!(store.status().disk_used, 0);
    assert!(!dir.path().join("w").join(format!("{}.data", s.id)).exists());
}

#[test]
fn a_panicking_device_leaves_the_store_usable() {
    struct PanickingDevice;
    impl gpufn_swap::DeviceIo for PanickingDevice {
        fn read(&mut self, _: u64, _: &mut [u8]) -> Result<(), gpufn_swap::DeviceIoError> {
            panic!("device lost");
        }
        fn write(&mut self, _: u64, _: &[u8]) -> Result<(), gpufn_swap::DeviceIoError> {
            panic!("device lost");
        }
    }
    let (store, _) = SwapStore::open(config("w", 1 << 30)).unwrap();
    let s = make_session(&mut MemoryDevice::new(), 1, &[10]);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.swap_out(s.id, &s.allocations, &mut PanickingDevice)
    }));
    assert!(panicked.is_err());
    assert!(store.status().sessions.is_empty());
    assert_eq!(store.status().host_used, 0);
    let mut device = MemoryDevice::new();
    let s = make_session(&mut device, 1, &[10]);
    store.swap_out(s.id, &s.allocations, &mut device).unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
