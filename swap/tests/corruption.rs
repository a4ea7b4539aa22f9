//! Damaged swap data is detected and reported, names the chunk, and affects only its session.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use gpufn_swap::{DemotionPolicy, MemoryDevice, SessionId, SwapError, SwapStore, Tier};
use object_store::local::LocalFileSystem;

struct Setup {
    store: SwapStore,
    device: MemoryDevice,
    victim: TestSession,
    bystander: TestSession,
    dir: tempfile::TempDir,
    cold_dir: tempfile::TempDir,
}

/// Two sessions of 3 allocations (5 chunks each) stored in `tier`.
fn setup(tier: Tier) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let cold_dir = tempfile::tempdir().unwrap();
    let budget = if tier == Tier::Host { 1 << 30 } else { 0 };
    let mut cfg = disk_config("w", dir.path(), budget).with_cold(
        Arc::new(LocalFileSystem::new_with_prefix(cold_dir.path()).unwrap()),
        "cold",
    );
    cfg.policy = DemotionPolicy {
        host_idle: Duration::from_secs(3600),
        host_headroom: 0,
        disk_idle: Some(Duration::from_secs(1)),
        disk_headroom: 0,
    };
    let (store, _) = SwapStore::open(cfg).unwrap();
    let mut device = MemoryDevice::new();
    let lens = [2 * CHUNK + 100, 100, 2 * CHUNK + 5000];
    let victim = make_session(&mut device, 1, &lens);
    let bystander = make_session(&mut device, 2, &lens);
    for s in [&victim, &bystander] {
        store.swap_out(s.id, &s.allocations, &mut device).unwrap();
        release(&mut device, s);
    }
    if tier == Tier::Cold {
        let report = store.tick(Instant::now() + Duration::from_secs(2));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
    }
    assert!(store.status().sessions.iter().all(|s| s.tier == tier));
    Setup {
        store,
        device,
        victim,
        bystander,
        dir,
        cold_dir,
    }
}

fn data_file(dir: &Path, session: SessionId) -> PathBuf {
    dir.join("w").join(format!("{session}.data"))
}

/// `<prefix>/<worker>/<session>-<generation>/chunk-NNNNNN` of the one stored copy of `session`.
fn chunk_object(cold_dir: &Path, session: SessionId, chunk: u32) -> PathBuf {
    let worker_dir = cold_dir.join("cold").join("w");
    let prefix = format!("{session}-");
    let copies: Vec<PathBuf> = std::fs::read_dir(&worker_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    copies[0].join(format!("chunk-{chunk:06}"))
}

fn flip_byte(path: &Path, offset: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    byte[0] ^= 0x01;
    file.write_all_at(&byte, offset).unwrap();
}

/// The victim fails with `check`; the bystander still swaps in intact.
fn assert_only_victim_fails(s: &mut Setup, check: impl FnOnce(&SwapError)) {
    remap(&mut s.device, &s.victim);
    let err = s.store.swap_in(s.victim.id, &mut s.device).unwrap_err();
    check(&err);
    let message = err.to_string();
    assert!(
        message.contains(&s.victim.id.to_string()),
        "error names the session: {message}"
    );

    remap(&mut s.device, &s.bystander);
    s.store.swap_in(s.bystander.id, &mut s.device).unwrap();
    assert_restored(&s.device, &s.bystander);
    // The failed session's data is kept (for a retry or for inspection) until discarded.
    assert_eq!(s.store.status().sessions.len(), 1);
    s.store.discard(s.victim.id).unwrap();
    assert!(s.store.status().sessions.is_empty());
}

#[test]
fn a_flipped_byte_in_a_disk_file_names_the_chunk() {
    let mut s = setup(Tier::Disk);
    // Chunk 2 starts at 2 * CHUNK; it holds the end of allocation 0 and all of allocation 1.
    flip_byte(&data_file(s.dir.path(), s.victim.id), 2 * CHUNK as u64 + 50);
    assert_only_victim_fails(&mut s, |err| match err {
        SwapError::ChunkCorrupted {
            tier,
            chunk,
            covers,
            detail,
            ..
        } => {
            assert_eq!((*tier, *chunk), (Tier::Disk, 2));
            assert_eq!(detail, "checksum mismatch");
            assert!(covers.contains("allocation #0"), "{covers}");
            assert!(covers.contains("allocation #1"), "{covers}");
            assert!(
                err.to_string()
                    .contains("chunk 2 in the disk tier is corrupted"),
                "{err}"
            );
        }
        other => panic!("expected a corrupted chunk, got {other}"),
    });
}

#[test]
fn corrupted_chunks_are_never_written_to_the_device() {
    let mut s = setup(Tier::Disk);
    flip_byte(&data_file(s.dir.path(), s.victim.id), 3 * CHUNK as u64 + 1);
    remap(&mut s.device, &s.victim);
    assert!(s.store.swap_in(s.victim.id, &mut s.device).is_err());
    // Chunk 3 lies in allocation 2 at bytes [CHUNK - 100 - 100 ..): still zero on the device.
    let alloc2 = s
        .device
        .get(s.victim.allocations[2].device_address)
        .unwrap();
    let chunk3_start = 3 * CHUNK - (2 * CHUNK + 100) - 100;
    assert!(
        alloc2[chunk3_start..chunk3_start + CHUNK]
            .iter()
            .all(|&b| b == 0)
    );
}

#[test]
fn a_truncated_disk_file_reports_the_missing_chunk() {
    let mut s = setup(Tier::Disk);
    let file = OpenOptions::new()
        .write(true)
        .open(data_file(s.dir.path(), s.victim.id))
        .unwrap();
    file.set_len(3 * CHUNK as u64).unwrap(); // chunks 3 and 4 gone
    assert_only_victim_fails(&mut s, |err| match err {
        SwapError::ChunkMissing { tier, chunk, .. } => assert_eq!((*tier, *chunk), (Tier::Disk, 3)),
        other => panic!("expected a missing chunk, got {other}"),
    });
}

#[test]
fn a_deleted_disk_file_is_reported_missing() {
    let mut s = setup(Tier::Disk);
    std::fs::remove_file(data_file(s.dir.path(), s.victim.id)).unwrap();
    assert_only_victim_fails(&mut s, |err| {
        assert!(
            matches!(err, SwapError::ChunkMissing { chunk: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("does not exist"), "{err}");
    });
}

#[test]
fn a_damaged_disk_manifest_is_reported() {
    let mut s = setup(Tier::Disk);
    let manifest = s
        .dir
        .path()
        .join("w")
        .join(format!("{}.manifest", s.victim.id));
    flip_byte(&manifest, 40);
    assert_only_victim_fails(&mut s, |err| {
        assert!(
            matches!(
                err,
                SwapError::ManifestInvalid {
                    tier: Tier::Disk,
                    ..
                }
            ),
            "{err}"
        );
    });
}

#[test]
fn a_corrupted_cold_object_names_the_chunk() {
    let mut s = setup(Tier::Cold);
    flip_byte(&chunk_object(s.cold_dir.path(), s.victim.id, 4), 7);
    assert_only_victim_fails(&mut s, |err| match err {
        SwapError::ChunkCorrupted { tier, chunk, .. } => {
            assert_eq!((*tier, *chunk), (Tier::Cold, 4))
        }
        other => panic!("expected a corrupted chunk, got {other}"),
    });
}

#[test]
fn a_deleted_cold_object_is_reported_missing() {
    let mut s = setup(Tier::Cold);
    std::fs::remove_file(chunk_object(s.cold_dir.path(), s.victim.id, 1)).unwrap();
    assert_only_victim_fails(&mut s, |err| match err {
        SwapError::ChunkMissing {
            tier,
            chunk,
            detail,
            ..
        } => {
            assert_eq!((*tier, *chunk), (Tier::Cold, 1));
            assert!(detail.contains("not found"), "{detail}");
        }
        other => panic!("expected a missing chunk, got {other}"),
    });
}

#[test]
fn a_corrupted_disk_chunk_fails_the_cold_demotion_and_the_session_stays_on_disk() {
    let mut s = setup(Tier::Disk);
    flip_byte(&data_file(s.dir.path(), s.victim.id), 10);
    let report = s.store.tick(Instant::now() + Duration::from_secs(2));
    assert_eq!(report.errors.len(), 1);
    assert!(matches!(
        report.errors[0],
        SwapError::ChunkCorrupted { chunk: 0, .. }
    ));
    assert_eq!(report.events.len(), 1, "the bystander was demoted");
    let tiers: Vec<Tier> = s.store.status().sessions.iter().map(|x| x.tier).collect();
    assert_eq!(tiers, vec![Tier::Disk, Tier::Cold]);
    // The damaged session is not retried on every tick.
    let again = s.store.tick(Instant::now() + Duration::from_secs(3));
    assert!(
        again.errors.is_empty() && again.events.is_empty(),
        "{again:?}"
    );
    assert_only_victim_fails(&mut s, |err| {
        assert!(
            matches!(
                err,
                SwapError::ChunkCorrupted {
                    tier: Tier::Disk,
                    chunk: 0,
                    ..
                }
            ),
            "{err}"
        );
    });
}

#[test]
fn sessions_demoted_from_the_host_tier_are_checksummed_on_the_way_to_disk() {
    // Host-tier chunks carry no checksums by default; demotion must add them.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = disk_config("w", dir.path(), 1 << 30);
    cfg.policy = DemotionPolicy {
        host_idle: Duration::ZERO,
        ..DemotionPolicy::default()
    };
    let (store, _) = SwapStore::open(cfg).unwrap();
    let mut device = MemoryDevice::new();
    let victim = make_session(&mut device, 1, &[3 * CHUNK]);
    let bystander = make_session(&mut device, 2, &[3 * CHUNK]);
    for s in [&victim, &bystander] {
        store.swap_out(s.id, &s.allocations, &mut device).unwrap();
        release(&mut device, s);
    }
    assert_eq!(store.tick(Instant::now()).events.len(), 2);
    assert!(store.status().sessions.iter().all(|s| s.tier == Tier::Disk));
    flip_byte(&data_file(dir.path(), victim.id), CHUNK as u64 + 3);
    let mut s = Setup {
        store,
        device,
        victim,
        bystander,
        dir,
        cold_dir: tempfile::tempdir().unwrap(),
    };
    assert_only_victim_fails(&mut s, |err| {
        assert!(
            matches!(
                err,
                SwapError::ChunkCorrupted {
                    tier: Tier::Disk,
                    chunk: 1,
                    ..
                }
            ),
            "{err}"
        );
    });
}
