//! Choosing a device for a session: eligibility, fit, bin-packing or spreading, and reclaim.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::PoolConfig;
use crate::error::Rejection;
use crate::ids::{DeviceRef, SessionId, WorkerId};
use crate::inventory::{Backend, Device, Worker, WorkerStatus};
use crate::qos::{Qos, VictimCandidate, is_reclaimable, victim_prefix};
use crate::time::Millis;

/// How to choose among devices that can take a session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementStrategy {
    /// Fill the device with the least room left that fits (best fit), keeping whole devices
    /// free for large sessions and letting idle workers scale down. Room is the lesser of
    /// unclaimed memory and what the overcommit bound still allows.
    #[default]
    BinPack,
    /// Use the device with the most room, spreading load and failure impact.
    Spread,
}

/// What a session needs from a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Need {
    pub vram_bytes: u64,
    pub compute_percent: u8,
    pub qos: Qos,
}

/// The device chosen for a session, with the sessions to swap out first (empty if it fits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Choice {
    pub device: DeviceRef,
    pub victims: Vec<SessionId>,
}

/// Whether a worker may take new sessions at `now`; counts the reason if not.
fn worker_accepts(worker: &Worker, now: Millis, config: &PoolConfig, tally: &mut Tally) -> bool {
    if worker.lease_expired(now, config.lease_timeout) {
        tally.expired_workers += 1;
        false
    } else if worker.status == WorkerStatus::Draining {
        tally.draining_workers += 1;
        false
    } else if !worker.healthy {
        tally.unhealthy_workers += 1;
        false
    } else {
        true
    }
}

/// Whether a device of an accepting worker may take new sessions; counts the reason if not.
fn device_accepts(device: &Device, backend: Option<Backend>, tally: &mut Tally) -> bool {
    if backend.is_some_and(|b| b != device.spec.backend) {
        tally.other_backend_devices += 1;
        false
    } else if !device.healthy || device.spec.memory_bytes == 0 {
        tally.unavailable_devices += 1;
        false
    } else {
        tally.eligible_devices += 1;
        tally.largest_device_bytes = tally.largest_device_bytes.max(device.spec.memory_bytes);
        tally.largest_unclaimed_bytes = tally.largest_unclaimed_bytes.max(device.unclaimed_bytes());
        true
    }
}

/// Whether the device's overcommit bound allows one more quota of `vram_bytes`.
pub(crate) fn quota_allows(device: &Device, vram_bytes: u64) -> bool {
    device.load.quota_bytes.saturating_add(vram_bytes) <= device.quota_limit
}

/// Memory and compute still missing on `device` to claim `vram_bytes` and `compute_percent`.
pub(crate) fn shortfall(device: &Device, vram_bytes: u64, compute_percent: u8) -> (u64, u32) {
    let bytes = device
        .load
        .claimed_bytes
        .saturating_add(vram_bytes)
        .saturating_sub(device.spec.memory_bytes);
    let compute = (device.load.claimed_compute + u32::from(compute_percent)).saturating_sub(100);
    (bytes, compute)
}

/// Whether `need` fits on `device` without swapping anything out (eligibility aside).
fn fits_directly(device: &Device, need: &Need) -> bool {
    quota_allows(device, need.vram_bytes)
        && shortfall(device, need.vram_bytes, need.compute_percent) == (0, 0)
}

/// Sort key for a device that fits directly; the smallest key wins. The room left after
/// placing (the binding one of memory and overcommit bound) is what bin-packing minimises
/// and spreading maximises.
fn fit_key(strategy: PlacementStrategy, device: &Device, need: &Need) -> u64 {
    let room_after = device.room_bytes() - need.vram_bytes;
    match strategy {
        PlacementStrategy::BinPack => room_after,
        PlacementStrategy::Spread => u64::MAX - room_after,
    }
}

/// Victims to swap out on `device` so that `need` can be claimed there, or `None`: idle
/// resident sessions of a lower QoS (see [`victim_prefix`] for the order).
pub(crate) fn victims_on(
    device: &Device,
    need: &Need,
    now: Millis,
    config: &PoolConfig,
) -> Option<Vec<VictimCandidate>> {
    let mut candidates = Vec::new();
    let (_, count) = victim_prefix_on(device, need, now, config, &mut candidates)?;
    candidates.truncate(count);
    Some(candidates)
}

/// Like [`victims_on`], but fills `candidates` (a reused buffer) and returns the bytes the
/// victims free and their number, the first `count` of `candidates`.
fn victim_prefix_on(
    device: &Device,
    need: &Need,
    now: Millis,
    config: &PoolConfig,
    candidates: &mut Vec<VictimCandidate>,
) -> Option<(u64, usize)> {
    if need.qos == Qos::Low {
        return None;
    }
    let (bytes, compute) = shortfall(device, need.vram_bytes, need.compute_percent);
    candidates.clear();
    candidates.extend(
        device
            .load
            .residents
            .values()
            .filter(|c| is_reclaimable(c, need.qos, now, config.reclaim_min_idle)),
    );
    victim_prefix(candidates, bytes, compute)
}

/// Counts of why devices were passed over, to explain a rejection.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    draining_workers: u32,
    unhealthy_workers: u32,
    expired_workers: u32,
    unavailable_devices: u32,
    other_backend_devices: u32,
    eligible_devices: u32,
    largest_device_bytes: u64,
    largest_unclaimed_bytes: u64,
}

/// Every device keyed by [`Device::room_bytes`], so placement visits only devices with room.
pub(crate) type RoomIndex = BTreeSet<(u64, DeviceRef)>;

/// Chooses a device for a new session.
///
/// 1. Among eligible devices (worker active, healthy and within its lease; device healthy,
///    with memory and the right backend) where the session fits without swapping anything
///    out, pick by `strategy`; ties go to the lowest worker id, then device index.
/// 2. Otherwise, if the session's QoS may reclaim, pick the device where swapping out idle
///    lower-QoS sessions frees enough with the fewest bytes (then fewest sessions) moved.
/// 3. Otherwise explain why nothing fits.
pub(crate) fn choose_device(
    workers: &BTreeMap<WorkerId, Worker>,
    index: &RoomIndex,
    need: &Need,
    backend: Option<Backend>,
    strategy: PlacementStrategy,
    now: Millis,
    config: &PoolConfig,
) -> Result<Choice, Rejection> {
    if need.compute_percent > 100 {
        return Err(Rejection::ComputeShareTooLarge {
            percent: need.compute_percent,
        });
    }
    if workers.is_empty() {
        return Err(Rejection::NoWorkers);
    }
    let direct = indexed_direct_fit(workers, index, need, backend, strategy, now, config);
    debug_assert_eq!(
        direct,
        scan(workers, need, backend, strategy, now, config).direct,
        "the room index disagrees with a full scan"
    );
    if let Some(device) = direct {
        return Ok(Choice {
            device,
            victims: Vec::new(),
        });
    }
    let scan = scan(workers, need, backend, strategy, now, config);
    if let Some(choice) = cheapest_reclaim(&scan.crowded, need, now, config) {
        return Ok(choice);
    }
    Err(explain(&scan.tally, need, backend))
}

/// The device `device` names, if it may take new sessions.
fn eligible_device<'a>(
    workers: &'a BTreeMap<WorkerId, Worker>,
    device: &DeviceRef,
    backend: Option<Backend>,
    now: Millis,
    config: &PoolConfig,
) -> Option<&'a Device> {
    let mut ignored = Tally::default();
    let worker = workers.get(&device.worker)?;
    if !worker_accepts(worker, now, config, &mut ignored) {
        return None;
    }
    worker
        .device(device.index)
        .filter(|d| device_accepts(d, backend, &mut ignored))
}

/// The best direct fit, found through `index` (equal to [`scan`]'s choice). The key only
/// depends on room, and ties go to the lowest device reference, which is also the index's
/// order within equal room. So bin-packing takes the first fit walking up from the least
/// room that could fit; spreading walks down to the most room that fits, then takes the
/// first fit of that room walking up.
fn indexed_direct_fit(
    workers: &BTreeMap<WorkerId, Worker>,
    index: &RoomIndex,
    need: &Need,
    backend: Option<Backend>,
    strategy: PlacementStrategy,
    now: Millis,
    config: &PoolConfig,
) -> Option<DeviceRef> {
    let fits = |entry: &&(u64, DeviceRef)| {
        eligible_device(workers, &entry.1, backend, now, config)
            .is_some_and(|device| fits_directly(device, need))
    };
    let from_room = |room: u64| {
        (
            room,
            DeviceRef {
                worker: WorkerId(String::new()),
                index: 0,
            },
        )
    };
    let lowest = from_room(need.vram_bytes);
    let found = match strategy {
        PlacementStrategy::BinPack => index.range(lowest..).find(fits),
        PlacementStrategy::Spread => {
            let (most_room, _) = index.range(lowest..).rev().find(fits)?;
            index.range(from_room(*most_room)..).find(fits)
        }
    };
    found.map(|(_, device_ref)| device_ref.clone())
}

/// Everything a full pass over the devices learns.
struct Scan<'a> {
    /// The best direct fit.
    direct: Option<DeviceRef>,
    /// Eligible devices where only a reclaim could make room, in id order.
    crowded: Vec<(&'a WorkerId, &'a Device)>,
    /// Why devices were passed over.
    tally: Tally,
}

/// Visits every device: the reference placement rule, and the input to reclaim and to
/// rejection messages.
fn scan<'a>(
    workers: &'a BTreeMap<WorkerId, Worker>,
    need: &Need,
    backend: Option<Backend>,
    strategy: PlacementStrategy,
    now: Millis,
    config: &PoolConfig,
) -> Scan<'a> {
    let mut tally = Tally::default();
    let mut best: Option<(u64, &WorkerId, u32)> = None;
    let mut crowded = Vec::new();
    for (worker_id, worker) in workers {
        if !worker_accepts(worker, now, config, &mut tally) {
            continue;
        }
        for device in &worker.devices {
            if !device_accepts(device, backend, &mut tally)
                || !quota_allows(device, need.vram_bytes)
                || need.vram_bytes > device.spec.memory_bytes
            {
                continue;
            }
            if !fits_directly(device, need) {
                crowded.push((worker_id, device));
                continue;
            }
            let key = fit_key(strategy, device, need);
            if best.is_none_or(|(best_key, _, _)| key < best_key) {
                best = Some((key, worker_id, device.spec.index));
            }
        }
    }
    let direct = best.map(|(_, worker, index)| DeviceRef {
        worker: worker.clone(),
        index,
    });
    Scan {
        direct,
        crowded,
        tally,
    }
}

/// The crowded device where reclaim moves the fewest bytes, then the fewest sessions; ties
/// go to the first in id order.
fn cheapest_reclaim(
    crowded: &[(&WorkerId, &Device)],
    need: &Need,
    now: Millis,
    config: &PoolConfig,
) -> Option<Choice> {
    let mut buffer = Vec::new();
    let mut best: Option<((u64, usize), usize)> = None;
    for (position, (_, device)) in crowded.iter().enumerate() {
        // Victims free at least the shortfall: a device short of more than the best cost so
        // far cannot win, and needs no candidate list.
        let (short_bytes, _) = shortfall(device, need.vram_bytes, need.compute_percent);
        if best.is_some_and(|((moved, _), _)| short_bytes > moved) {
            continue;
        }
        let Some(key) = victim_prefix_on(device, need, now, config, &mut buffer) else {
            continue;
        };
        if best.is_none_or(|(best_key, _)| key < best_key) {
            best = Some((key, position));
        }
    }
    let (worker, device) = crowded[best?.1];
    let victims = victims_on(device, need, now, config)?;
    Some(Choice {
        device: DeviceRef {
            worker: worker.clone(),
            index: device.spec.index,
        },
        victims: victims.iter().map(|v| v.id).collect(),
    })
}

/// The most useful reason for a placement that found no device.
fn explain(tally: &Tally, need: &Need, backend: Option<Backend>) -> Rejection {
    if tally.eligible_devices == 0 {
        return Rejection::NoEligibleDevice {
            draining_workers: tally.draining_workers,
            unhealthy_workers: tally.unhealthy_workers,
            expired_workers: tally.expired_workers,
            unavailable_devices: tally.unavailable_devices,
            other_backend_devices: tally.other_backend_devices,
            required_backend: backend,
        };
    }
    if need.vram_bytes > tally.largest_device_bytes {
        return Rejection::TooLarge {
            requested_bytes: need.vram_bytes,
            largest_device_bytes: tally.largest_device_bytes,
        };
    }
    Rejection::NoCapacity {
        requested_bytes: need.vram_bytes,
        requested_compute_percent: need.compute_percent,
        qos: need.qos,
        largest_unclaimed_bytes: tally.largest_unclaimed_bytes,
    }
}
