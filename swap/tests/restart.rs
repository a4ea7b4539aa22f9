//! A restarted worker removes the swap files and cold objects its dead predecessor left, and
//! only those.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use gpufn_swap::{DemotionPolicy, MemoryDevice, SwapError, SwapStore, Tier};
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

#[test]
fn restart_removes_stale_files_of_the_same_worker_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut device = MemoryDevice::new();
    {
        let (store, report) = SwapStore::open(disk_config("w1", dir.path(), 0)).unwrap();
        assert_eq!(report.stale_files_removed, 0);
        for id in 1..=3 {
            let s = make_session(&mut device, id, &[CHUNK * 2 + 3]);
            store.swap_out(s.id, &s.allocations, &mut device).unwrap();
        }
        // The worker "dies": the store is dropped without cleaning up, as after a crash.
    }
    // A leftover from a crash in the middle of a write, and another worker's file.
    std::fs::write(
        dir.path().join("w1").join("00000000000000ff.manifest.tmp"),
        b"x",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("w2")).unwrap();
    std::fs::write(
        dir.path().join("w2").join("0000000000000001.data"),
        b"other",
    )
    .unwrap();
    let stale_count = std::fs::read_dir(dir.path().join("w1")).unwrap().count();
    assert_eq!(
        stale_count,
        3 * 2 + 3,
        "3 sessions (data + manifest), instance, trash, tmp"
    );

    let (store, report) = SwapStore::open(disk_config("w1", dir.path(), 0)).unwrap();
    assert_eq!(report.stale_files_removed, stale_count);
    let mut left: Vec<String> = std::fs::read_dir(dir.path().join("w1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, vec!["instance".to_string(), "trash".to_string()]);
    assert!(store.status().sessions.is_empty());
    assert!(
        dir.path().join("w2").join("0000000000000001.data").exists(),
        "other worker untouched"
    );
}

#[test]
fn a_second_live_instance_with_the_same_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = SwapStore::open(disk_config("w1", dir.path(), 0)).unwrap();
    let mut device = MemoryDevice::new();
    let s = make_session(&mut device, 1, &[100]);
    first.swap_out(s.id, &s.allocations, &mut device).unwrap();

    let err = match SwapStore::open(disk_config("w1", dir.path(), 0)) {
        Err(e) => e,
        Ok(_) => panic!("a second instance with the same worker id opened"),
    };
    assert!(matches!(err, SwapError::WorkerDirInUse { .. }), "{err}");
    assert!(err.to_string().contains("own worker id"), "{err}");
    // The live instance's data was not touched.
    assert!(SwapStore::open(disk_config("w2", dir.path(), 0)).is_ok());
    release(&mut device, &s);
    remap(&mut device, &s);
    first.swap_in(s.id, &mut device).unwrap();
    assert_restored(&device, &s);
}

#[test]
fn restart_removes_stale_cold_objects_of_the_same_worker_only() {
    let dir = tempfile::tempdir().unwrap();
    let cold: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut cfg = disk_config("w1", dir.path(), 0).with_cold(Arc::clone(&cold), "swap");
    cfg.policy = DemotionPolicy {
        disk_idle: Some(Duration::ZERO),
        ..DemotionPolicy::default()
    };
    {
        let (store, _) = SwapStore::open(cfg.clone()).unwrap();
        let mut device = MemoryDevice::new();
        let s = make_session(&mut device, 1, &[CHUNK * 3]);
        store.swap_out(s.id, &s.allocations, &mut device).unwrap();
        store.tick(Instant::now());
        assert_eq!(store.status().sessions[0].tier, Tier::Cold);
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let other = ObjectPath::from("swap/w2/0000000000000001/chunk-000000");
    runtime
        .block_on(cold.put(&other, PutPayload::from_static(b"other")))
        .unwrap();

    let (_store, report) = SwapStore::open(cfg).unwrap();
    assert_eq!(
        report.stale_objects_removed,
        3 + 1,
        "3 chunks and the manifest"
    );
    let remaining = runtime.block_on(async {
        use futures::TryStreamExt;
        cold.list(Some(&ObjectPath::from("swap")))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    });
    let names: Vec<String> = remaining.iter().map(|m| m.location.to_string()).collect();
    assert_eq!(names, vec![other.to_string()]);
}

#[test]
fn invalid_configurations_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let bad_id = disk_config("../escape", dir.path(), 0);
    assert!(
        matches!(SwapStore::open(bad_id), Err(SwapError::Config(m)) if m.contains("worker id"))
    );
    let mut bad_chunk = config("w", 0);
    bad_chunk.chunk_size = 1000;
    assert!(
        matches!(SwapStore::open(bad_chunk), Err(SwapError::Config(m)) if m.contains("chunk size"))
    );
    let cold_without_disk = config("w", 0).with_cold(Arc::new(InMemory::new()), "");
    assert!(
        matches!(SwapStore::open(cold_without_disk), Err(SwapError::Config(m)) if m.contains("disk"))
    );
}
