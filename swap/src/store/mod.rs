//! The swap store: where swapped-out sessions live, and the operations that move them.
//!
//! All operations block (device copies, file and object I/O); call them from blocking threads.
//! Operations on different sessions run concurrently; operations on one session are serialized
//! (a swap-in waits for a demotion of the same session to finish; `tick` skips busy sessions).

mod config;
mod moves;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use config::{ColdConfig, DEFAULT_CHUNK_SIZE, DEFAULT_PIPELINE_DEPTH, DiskConfig, SwapConfig};

use crate::buffer::{BufferPool, ChunkBuf, host_footprint};
use crate::device::DeviceIo;
use crate::error::{Result, SwapError};
use crate::event::{EventKind, SwapEvent};
use crate::layout;
use crate::manifest::Manifest;
use crate::policy::{self, DemotionPolicy, Limits, Move, SessionView, Usage};
use crate::tier::cold::ColdTier;
use crate::tier::disk::DiskTier;
use crate::types::{Allocation, Place, SessionId, Tier};

/// What `open` found and cleaned up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Files of a previous instance of this worker removed from the disk directory.
    pub stale_files_removed: usize,
    /// Objects of a previous instance removed from the cold tier.
    pub stale_objects_removed: usize,
}

/// The result of a swap-out: the data is durable in `tier` and the device memory may go.
#[derive(Clone, Debug)]
pub struct SwapOutReceipt {
    pub tier: Tier,
    pub chunks: usize,
    pub event: SwapEvent,
}

/// The result of a swap-in: every byte was verified and written back to the device.
#[derive(Clone, Debug)]
pub struct SwapInReceipt {
    pub from: Tier,
    pub event: SwapEvent,
}

/// What one `tick` did.
#[derive(Debug, Default)]
pub struct TickReport {
    pub events: Vec<SwapEvent>,
    /// Demotions that failed; the sessions concerned stay where they were.
    pub errors: Vec<SwapError>,
}

/// One stored session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionStatus {
    pub session: SessionId,
    pub tier: Tier,
    /// Session bytes (sum of its allocations).
    pub bytes: u64,
    pub allocations: usize,
    /// Time since its swap-out.
    pub age: Duration,
    pub busy: bool,
    /// A demotion found its data damaged; its swap-in will fail.
    pub damaged: bool,
}

/// Usage per tier and the stored sessions (sorted by id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreStatus {
    pub host_budget: u64,
    /// Host memory held by host-tier sessions (and reserved by swap-outs in flight).
    pub host_used: u64,
    /// Disk space of disk-tier sessions (and reservations).
    pub disk_used: u64,
    /// Session bytes in the cold tier.
    pub cold_bytes: u64,
    pub sessions: Vec<SessionStatus>,
}

struct Entry {
    manifest: Arc<Manifest>,
    tier: Tier,
    /// The data while in the host tier (taken out while a swap-in or demotion reads it).
    host_chunks: Vec<ChunkBuf>,
    host_bytes: u64,
    disk_bytes: u64,
    swapped_at: Instant,
    busy: bool,
    /// A demotion found the data damaged: it stays where it is (its swap-in will report the
    /// damage) instead of failing again on every tick.
    damaged: bool,
}

#[derive(Default)]
struct Index {
    sessions: HashMap<SessionId, Entry>,
    usage: Usage,
    cold_bytes: u64,
}

pub struct SwapStore {
    chunk_size: usize,
    generations: AtomicU64,
    host_checksums: bool,
    depth: usize,
    limits: Limits,
    policy: DemotionPolicy,
    pool: BufferPool,
    disk: Option<DiskTier>,
    cold: Option<ColdTier>,
    index: Mutex<Index>,
    /// Signalled whenever a session stops being busy or leaves.
    released: Condvar,
}

impl SwapStore {
    /// Opens the store: takes this worker's lock in the disk directory and removes the files
    /// and cold objects a previous (dead) instance of the same worker id left behind.
    pub fn open(config: SwapConfig) -> Result<(Self, OpenReport)> {
        config.validate()?;
        let mut report = OpenReport::default();
        let disk = match &config.disk {
            Some(d) => {
                let (tier, removed) = DiskTier::open(&d.dir, &config.worker_id, d.direct_io)?;
                report.stale_files_removed = removed;
                Some(tier)
            }
            None => None,
        };
        let cold = match &config.cold {
            Some(c) => {
                let (tier, removed) =
                    ColdTier::open(Arc::clone(&c.store), &c.prefix, &config.worker_id)?;
                report.stale_objects_removed = removed;
                Some(tier)
            }
            None => None,
        };
        let budget_chunks = (config.host_budget / config.chunk_size as u64) as usize;
        let pool = BufferPool::new(
            config.chunk_size,
            budget_chunks + 2 * config.pipeline_depth + 2,
        );
        if config.prefault_host {
            pool.prefault(budget_chunks)
                .map_err(|e| SwapError::Internal(format!("cannot allocate host buffers: {e}")))?;
        }
        let limits = Limits {
            host_budget: config.host_budget,
            disk_enabled: disk.is_some(),
            disk_budget: config.disk.as_ref().and_then(|d| d.budget),
            cold_enabled: cold.is_some(),
        };
        let store = Self {
            chunk_size: config.chunk_size,
            generations: AtomicU64::new(0),
            host_checksums: config.host_checksums,
            depth: config.pipeline_depth,
            limits,
            policy: config.policy,
            pool,
            disk,
            cold,
            index: Mutex::new(Index::default()),
            released: Condvar::new(),
        };
        Ok((store, report))
    }

    /// Copies the session's allocations into the store. Returns once the data is durable in its
    /// tier (host buffers filled, or disk file and manifest fsynced); only then may the worker
    /// release the device memory. Fails without storing anything if any copy or write fails.
    pub fn swap_out(
        &self,
        session: SessionId,
        allocations: &[Allocation],
        device: &mut dyn DeviceIo,
    ) -> Result<SwapOutReceipt> {
        let start = Instant::now();
        let total = validate_allocations(allocations)?;
        let chunks = layout::plan_chunks(allocations, self.chunk_size);
        let host_bytes: u64 = chunks.iter().map(|c| host_footprint(c.len)).sum();
        let disk_bytes = DiskTier::file_bytes(total);
        let skeleton = Manifest {
            session,
            generation: self.generations.fetch_add(1, Ordering::Relaxed),
            chunk_size: self.chunk_size,
            allocations: allocations.to_vec(),
            checksums: Vec::new(),
        };
        let tier = self.reserve(session, skeleton.clone(), host_bytes, disk_bytes)?;
        // Until committed, dropping this (an error or a panic in the device callback) removes
        // the reservation again.
        let mut pending = PendingSwapOut {
            store: self,
            session,
            committed: false,
        };
        let (manifest, host_chunks) = match tier {
            Tier::Host => moves::device_to_host(self, &skeleton, &chunks, device)?,
            Tier::Disk => (
                moves::device_to_disk(self, &skeleton, &chunks, device)?,
                Vec::new(),
            ),
            Tier::Cold => return Err(SwapError::Internal("swap-out never targets cold".into())),
        };
        {
            let mut index = self.lock();
            let entry = index.sessions.get_mut(&session).expect("reserved entry");
            entry.manifest = Arc::new(manifest);
            entry.host_chunks = host_chunks;
            entry.swapped_at = Instant::now();
            entry.busy = false;
            pending.committed = true;
        }
        Ok(SwapOutReceipt {
            tier,
            chunks: chunks.len(),
            event: SwapEvent {
                session,
                kind: EventKind::SwapOut,
                from: Place::Device,
                to: Place::Tier(tier),
                bytes: total,
                duration: start.elapsed(),
            },
        })
    }

    /// Writes the session's data back to the device at the addresses it was swapped out from
    /// (the worker maps them first, see [`Self::allocations`]) and forgets it.
    ///
    /// Every chunk is verified before it is written, in order; on a corrupted or missing chunk
    /// the swap-in stops with an error naming the session, tier, chunk and allocations. Chunks
    /// before it have then been written (with correct data), so the worker must treat the
    /// session's device memory as lost. The stored data is kept after a failure.
    pub fn swap_in(&self, session: SessionId, device: &mut dyn DeviceIo) -> Result<SwapInReceipt> {
        let start = Instant::now();
        let _busy = self.acquire(session)?;
        let (manifest, tier, host_chunks) = self.take_for_move(session);
        let restored = match tier {
            Tier::Host => moves::host_to_device(self, &manifest, &host_chunks, device),
            Tier::Disk => moves::disk_to_device(self, &manifest, device),
            Tier::Cold => moves::cold_to_device(self, &manifest, device),
        };
        if let Err(e) = restored {
            self.put_back_host_chunks(session, host_chunks);
            return Err(e);
        }
        self.forget(&manifest, tier, host_chunks);
        Ok(SwapInReceipt {
            from: tier,
            event: SwapEvent {
                session,
                kind: EventKind::SwapIn,
                from: Place::Tier(tier),
                to: Place::Device,
                bytes: manifest.total_bytes(),
                duration: start.elapsed(),
            },
        })
    }

    /// Deletes a stored session without restoring it (e.g. its program ended while swapped out).
    pub fn discard(&self, session: SessionId) -> Result<()> {
        let _busy = self.acquire(session)?;
        let (manifest, tier, host_chunks) = self.take_for_move(session);
        self.forget(&manifest, tier, host_chunks);
        Ok(())
    }

    /// The allocations of a stored session, to map before [`Self::swap_in`].
    pub fn allocations(&self, session: SessionId) -> Result<Vec<Allocation>> {
        let index = self.lock();
        let entry = index
            .sessions
            .get(&session)
            .ok_or(SwapError::UnknownSession(session))?;
        Ok(entry.manifest.allocations.clone())
    }

    /// Demotes sessions by age and pressure ([`policy::plan_demotions`]), as of `now`.
    /// Call it periodically (e.g. every few seconds) from a blocking thread.
    pub fn tick(&self, now: Instant) -> TickReport {
        let planned = {
            let index = self.lock();
            let views: Vec<SessionView> = index
                .sessions
                .iter()
                .map(|(&session, e)| SessionView {
                    session,
                    tier: e.tier,
                    host_bytes: e.host_bytes,
                    disk_bytes: e.disk_bytes,
                    age: now.saturating_duration_since(e.swapped_at),
                    busy: e.busy || e.damaged,
                })
                .collect();
            policy::plan_demotions(&self.policy, &self.limits, &index.usage, &views)
        };
        let mut report = TickReport::default();
        for step in planned {
            match self.demote(step) {
                Ok(Some(event)) => report.events.push(event),
                Ok(None) => {}
                Err(e) => {
                    if e.is_damage() {
                        self.mark_damaged(step.session);
                    }
                    report.errors.push(e);
                }
            }
        }
        report
    }

    /// Waits until files and objects of swapped-in or discarded sessions, which are deleted in
    /// the background, are gone (e.g. before shutdown, or in tests).
    pub fn wait_for_cleanup(&self) {
        if let Some(disk) = &self.disk {
            disk.wait_for_cleanup();
        }
        if let Some(cold) = &self.cold {
            cold.wait_for_cleanup();
        }
    }

    pub fn status(&self) -> StoreStatus {
        let now = Instant::now();
        let index = self.lock();
        let mut sessions: Vec<SessionStatus> = index
            .sessions
            .iter()
            .map(|(&session, e)| SessionStatus {
                session,
                tier: e.tier,
                bytes: e.manifest.total_bytes(),
                allocations: e.manifest.allocations.len(),
                age: now.saturating_duration_since(e.swapped_at),
                busy: e.busy,
                damaged: e.damaged,
            })
            .collect();
        sessions.sort_by_key(|s| s.session);
        StoreStatus {
            host_budget: self.limits.host_budget,
            host_used: index.usage.host,
            disk_used: index.usage.disk,
            cold_bytes: index.cold_bytes,
            sessions,
        }
    }

    /// Moves one session down a tier if it is still where the plan saw it and not busy.
    fn demote(&self, step: Move) -> Result<Option<SwapEvent>> {
        let start = Instant::now();
        let Some(_busy) = self.try_acquire(step.session, step.from) else {
            return Ok(None);
        };
        let (manifest, _, mut host_chunks) = self.take_for_move(step.session);
        let moved = match (step.from, step.to) {
            (Tier::Host, Tier::Disk) => {
                if !self.reserve_disk(step.session) {
                    self.put_back_host_chunks(step.session, host_chunks);
                    return Ok(None);
                }
                moves::host_to_disk(self, &manifest, &mut host_chunks)
            }
            (Tier::Disk, Tier::Cold) => {
                moves::disk_to_cold(self, &manifest).map(|()| Manifest::clone(&manifest))
            }
            _ => Err(SwapError::Internal(format!(
                "unsupported demotion {step:?}"
            ))),
        };
        let moved_manifest = match moved {
            Ok(manifest) => manifest,
            Err(e) => {
                if step.from == Tier::Host {
                    let mut index = self.lock();
                    index.usage.disk -= index.sessions[&step.session].disk_bytes;
                }
                self.put_back_host_chunks(step.session, host_chunks);
                return Err(e);
            }
        };
        self.finish_demotion(step, moved_manifest, host_chunks);
        Ok(Some(SwapEvent {
            session: step.session,
            kind: EventKind::Demote,
            from: Place::Tier(step.from),
            to: Place::Tier(step.to),
            bytes: manifest.total_bytes(),
            duration: start.elapsed(),
        }))
    }

    fn finish_demotion(&self, step: Move, manifest: Manifest, freed_buffers: Vec<ChunkBuf>) {
        for buf in freed_buffers {
            self.pool.give(buf);
        }
        let mut index = self.lock();
        let index = &mut *index;
        let entry = index.sessions.get_mut(&step.session).expect("busy entry");
        entry.tier = step.to;
        entry.manifest = Arc::new(manifest);
        match step.to {
            Tier::Disk => index.usage.host -= entry.host_bytes,
            Tier::Cold => {
                index.usage.disk -= entry.disk_bytes;
                index.cold_bytes += entry.manifest.total_bytes();
            }
            Tier::Host => {}
        }
    }

    fn mark_damaged(&self, session: SessionId) {
        if let Some(entry) = self.lock().sessions.get_mut(&session) {
            entry.damaged = true;
        }
    }

    /// Chooses the tier for a new swap-out and reserves its space and the session id.
    fn reserve(
        &self,
        session: SessionId,
        skeleton: Manifest,
        host_bytes: u64,
        disk_bytes: u64,
    ) -> Result<Tier> {
        let total = skeleton.total_bytes();
        let mut index = self.lock();
        if index.sessions.contains_key(&session) {
            return Err(SwapError::AlreadySwappedOut(session));
        }
        let tier = policy::place(&self.limits, &index.usage, host_bytes, disk_bytes).map_err(
            |reason| SwapError::NoSpace {
                session,
                bytes: total,
                reason,
            },
        )?;
        match tier {
            Tier::Host => index.usage.host += host_bytes,
            _ => index.usage.disk += disk_bytes,
        }
        index.sessions.insert(
            session,
            Entry {
                manifest: Arc::new(skeleton),
                tier,
                host_chunks: Vec::new(),
                host_bytes,
                disk_bytes,
                swapped_at: Instant::now(),
                busy: true,
                damaged: false,
            },
        );
        Ok(tier)
    }

    /// Reserves disk space for a host session about to move there; false if it no longer fits.
    fn reserve_disk(&self, session: SessionId) -> bool {
        let mut index = self.lock();
        let bytes = index.sessions[&session].disk_bytes;
        let fits = self
            .limits
            .disk_budget
            .is_none_or(|budget| index.usage.disk + bytes <= budget);
        if fits {
            index.usage.disk += bytes;
        }
        fits
    }

    /// The session's manifest, tier and (for the host tier) its buffers, taken out of the index
    /// so they can be read without holding the lock. The caller holds the session busy.
    fn take_for_move(&self, session: SessionId) -> (Arc<Manifest>, Tier, Vec<ChunkBuf>) {
        let mut index = self.lock();
        let entry = index.sessions.get_mut(&session).expect("busy entry");
        (
            Arc::clone(&entry.manifest),
            entry.tier,
            std::mem::take(&mut entry.host_chunks),
        )
    }

    fn put_back_host_chunks(&self, session: SessionId, chunks: Vec<ChunkBuf>) {
        if chunks.is_empty() {
            return;
        }
        let mut index = self.lock();
        if let Some(entry) = index.sessions.get_mut(&session) {
            entry.host_chunks = chunks;
        }
    }

    /// Removes a session from the index and deletes its data in `tier` (files and objects in
    /// the background).
    fn forget(&self, manifest: &Manifest, tier: Tier, host_chunks: Vec<ChunkBuf>) {
        let session = manifest.session;
        {
            let mut index = self.lock();
            if let Some(entry) = index.sessions.remove(&session) {
                release_usage(&mut index, &entry);
            }
        }
        for buf in host_chunks {
            self.pool.give(buf);
        }
        // The data is already restored (or unwanted): a failed delete only leaves a file that
        // the next start of this worker removes.
        let deleted = match tier {
            Tier::Host => Ok(()),
            Tier::Disk => self.disk().and_then(|d| d.remove(session)),
            Tier::Cold => self.cold().map(|c| c.remove_in_background(manifest)),
        };
        if let Err(e) = deleted {
            tracing::warn!(%session, %tier, error = %e, "could not delete swapped-in data");
        }
    }

    /// Waits until the session is not busy, then marks it busy.
    fn acquire(&self, session: SessionId) -> Result<BusyGuard<'_>> {
        let mut index = self.lock();
        loop {
            match index.sessions.get_mut(&session) {
                None => return Err(SwapError::UnknownSession(session)),
                Some(entry) if entry.busy => {
                    index = self.released.wait(index).unwrap_or_else(|e| e.into_inner());
                }
                Some(entry) => {
                    entry.busy = true;
                    return Ok(BusyGuard {
                        store: self,
                        session,
                    });
                }
            }
        }
    }

    /// Marks the session busy if it is idle and still in `tier`.
    fn try_acquire(&self, session: SessionId, tier: Tier) -> Option<BusyGuard<'_>> {
        let mut index = self.lock();
        let entry = index.sessions.get_mut(&session)?;
        if entry.busy || entry.tier != tier {
            return None;
        }
        entry.busy = true;
        Some(BusyGuard {
            store: self,
            session,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // Index updates are single assignments; a panic elsewhere cannot leave it half-updated.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn disk(&self) -> Result<&DiskTier> {
        self.disk
            .as_ref()
            .ok_or_else(|| SwapError::Internal("no disk tier configured".into()))
    }

    fn cold(&self) -> Result<&ColdTier> {
        self.cold
            .as_ref()
            .ok_or_else(|| SwapError::Internal("no cold tier configured".into()))
    }
}

/// A swap-out's reservation: removed again unless the swap-out commits.
struct PendingSwapOut<'a> {
    store: &'a SwapStore,
    session: SessionId,
    committed: bool,
}

impl Drop for PendingSwapOut<'_> {
    fn drop(&mut self) {
        let mut index = self.store.lock();
        if !self.committed
            && let Some(entry) = index.sessions.remove(&self.session)
        {
            release_usage(&mut index, &entry);
        }
        drop(index);
        self.store.released.notify_all();
    }
}

/// Clears a session's busy mark when an operation ends (however it ends).
struct BusyGuard<'a> {
    store: &'a SwapStore,
    session: SessionId,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        let mut index = self.store.lock();
        if let Some(entry) = index.sessions.get_mut(&self.session) {
            entry.busy = false;
        }
        drop(index);
        self.store.released.notify_all();
    }
}

fn release_usage(index: &mut Index, entry: &Entry) {
    match entry.tier {
        Tier::Host => index.usage.host -= entry.host_bytes,
        Tier::Disk => index.usage.disk -= entry.disk_bytes,
        Tier::Cold => index.cold_bytes -= entry.manifest.total_bytes(),
    }
}

/// Total bytes, refusing allocations whose end address overflows.
fn validate_allocations(allocations: &[Allocation]) -> Result<u64> {
    if let Some(a) = allocations
        .iter()
        .find(|a| a.device_address.checked_add(a.len).is_none())
    {
        return Err(SwapError::InvalidRequest(format!(
            "allocation {a} extends past the end of the address space"
        )));
    }
    layout::total_bytes(allocations).ok_or_else(|| {
        SwapError::InvalidRequest("the session's allocation sizes overflow 64 bits".into())
    })
}
