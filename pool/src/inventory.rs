//! Workers, their devices, and what each device holds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::{SessionId, WorkerId};
use crate::qos::VictimCandidate;
use crate::session::SessionState;
use crate::time::Millis;

/// How a device runs kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A real NVIDIA GPU through the CUDA driver.
    Cuda,
    /// PTX interpreted on the worker's CPU.
    Cpu,
}

/// A device as the worker describes it when it registers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpec {
    /// The device's index on its worker; unique per worker.
    pub index: u32,
    /// Marketing name, for display (for example "NVIDIA H100 80GB HBM3").
    pub name: String,
    /// How the device runs kernels.
    pub backend: Backend,
    /// Physical device memory in bytes. A device reporting zero is never given sessions.
    pub memory_bytes: u64,
    /// Streaming multiprocessors (or CPU threads for the `cpu` backend), for display.
    pub compute_units: u32,
}

/// A worker's registration: who it is, where to reach it, and its devices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// The worker's identity.
    pub id: WorkerId,
    /// The data-plane address stubs connect to (opaque to the pool).
    pub address: String,
    /// The devices the worker offers.
    pub devices: Vec<DeviceSpec>,
}

/// One device's usage as reported in a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceUsage {
    /// Which device of the worker this is.
    pub index: u32,
    /// Device memory in use as the driver sees it (for display; placement uses the pool's
    /// own accounting, which cannot lag behind a heartbeat).
    pub used_bytes: u64,
    /// Recent compute utilisation, 0–100.
    pub utilization_percent: u8,
    /// Whether the device works; an unhealthy device gets no new sessions.
    pub healthy: bool,
}

/// A heartbeat's payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerUsage {
    /// Whether the worker as a whole is healthy; an unhealthy worker gets no new sessions.
    pub healthy: bool,
    /// Per-device usage; devices not listed keep their previous report.
    pub devices: Vec<DeviceUsage>,
}

/// Whether a worker takes new sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStatus {
    /// Takes new sessions.
    Active,
    /// Keeps its sessions but takes no new ones; reported drained once it holds none.
    Draining,
}

/// What the sessions placed on a device add up to.
///
/// * `hot_bytes`: memory physically occupied now (resident and swapping-out sessions).
/// * `claimed_bytes`: memory promised once in-flight swaps settle (resident and waiting).
/// * `quota_bytes`: every session's VRAM quota, swapped out or not; bounded by the overcommit.
/// * `residents`: the resident sessions as reclaim sees them, kept here so choosing victims
///   never has to look sessions up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DeviceLoad {
    pub hot_bytes: u64,
    pub claimed_bytes: u64,
    pub quota_bytes: u64,
    pub claimed_compute: u32,
    pub sessions: BTreeSet<SessionId>,
    pub residents: BTreeMap<SessionId, VictimCandidate>,
}

impl DeviceLoad {
    /// Adds a session in `state` to the totals.
    pub fn add(&mut self, session: &VictimCandidate, state: SessionState) {
        self.sessions.insert(session.id);
        self.quota_bytes += session.vram_bytes;
        self.count(state, session, true);
    }

    /// Removes a session in `state` from the totals.
    pub fn remove(&mut self, session: &VictimCandidate, state: SessionState) {
        self.sessions.remove(&session.id);
        self.quota_bytes -= session.vram_bytes;
        self.count(state, session, false);
    }

    /// Moves a session from one state to another.
    pub fn transition(&mut self, from: SessionState, to: SessionState, session: &VictimCandidate) {
        self.count(from, session, false);
        self.count(to, session, true);
    }

    /// Records a resident session's latest activity.
    pub fn touch(&mut self, session: SessionId, last_active: Millis) {
        if let Some(resident) = self.residents.get_mut(&session) {
            resident.last_active = last_active;
        }
    }

    fn count(&mut self, state: SessionState, session: &VictimCandidate, adding: bool) {
        let vram_bytes = session.vram_bytes;
        let compute = u32::from(session.compute_percent);
        let apply = |total: &mut u64| {
            if adding {
                *total += vram_bytes
            } else {
                *total -= vram_bytes
            }
        };
        if state.occupies_memory() {
            apply(&mut self.hot_bytes);
        }
        if state.claims_memory() {
            apply(&mut self.claimed_bytes);
            if adding {
                self.claimed_compute += compute;
            } else {
                self.claimed_compute -= compute;
            }
        }
        if state == SessionState::Resident {
            if adding {
                self.residents.insert(session.id, *session);
            } else {
                self.residents.remove(&session.id);
            }
        }
    }
}

/// A registered device with its health, last report and load.
#[derive(Clone, Debug)]
pub(crate) struct Device {
    pub spec: DeviceSpec,
    pub healthy: bool,
    pub reported: Option<DeviceUsage>,
    pub load: DeviceLoad,
    /// The most VRAM quota the device may hold, `memory × overcommit` (fixed per pool, so
    /// computed once: placement reads it for every device).
    pub quota_limit: u64,
}

/// `memory_bytes × overcommit_percent / 100`, saturating.
pub(crate) fn quota_limit(memory_bytes: u64, overcommit_percent: u32) -> u64 {
    let limit = u128::from(memory_bytes) * u128::from(overcommit_percent) / 100;
    u64::try_from(limit).unwrap_or(u64::MAX)
}

impl Device {
    /// Physical memory not promised to any session.
    pub fn unclaimed_bytes(&self) -> u64 {
        self.spec
            .memory_bytes
            .saturating_sub(self.load.claimed_bytes)
    }

    /// The largest session that could be placed here without a swap-out, as far as memory
    /// goes: the lesser of unclaimed memory and room under the overcommit bound.
    pub fn room_bytes(&self) -> u64 {
        let quota_room = self.quota_limit.saturating_sub(self.load.quota_bytes);
        self.unclaimed_bytes().min(quota_room)
    }
}

/// A registered worker.
#[derive(Clone, Debug)]
pub(crate) struct Worker {
    pub spec: WorkerSpec,
    pub status: WorkerStatus,
    pub healthy: bool,
    pub last_heartbeat: Millis,
    /// Set once [`crate::Command::WorkerDrained`] has been issued, so it is issued once.
    pub drained_reported: bool,
    /// Devices sorted by index.
    pub devices: Vec<Device>,
}

impl Worker {
    /// A freshly registered, healthy, active worker on a pool with `overcommit_percent`.
    pub fn new(mut spec: WorkerSpec, now: Millis, overcommit_percent: u32) -> Worker {
        spec.devices.sort_by_key(|d| d.index);
        let devices = spec
            .devices
            .iter()
            .map(|d| Device {
                spec: d.clone(),
                healthy: true,
                reported: None,
                load: DeviceLoad::default(),
                quota_limit: quota_limit(d.memory_bytes, overcommit_percent),
            })
            .collect();
        Worker {
            spec,
            status: WorkerStatus::Active,
            healthy: true,
            last_heartbeat: now,
            drained_reported: false,
            devices,
        }
    }

    /// The device with `index`.
    pub fn device(&self, index: u32) -> Option<&Device> {
        self.devices
            .binary_search_by_key(&index, |d| d.spec.index)
            .ok()
            .map(|i| &self.devices[i])
    }

    /// The device with `index`, mutably.
    pub fn device_mut(&mut self, index: u32) -> Option<&mut Device> {
        match self.devices.binary_search_by_key(&index, |d| d.spec.index) {
            Ok(i) => Some(&mut self.devices[i]),
            Err(_) => None,
        }
    }

    /// When the lease runs out unless a heartbeat arrives.
    pub fn lease_expires_at(&self, lease_timeout: Duration) -> Millis {
        self.last_heartbeat.after(lease_timeout)
    }

    /// Whether the worker has missed its heartbeats at `now`.
    pub fn lease_expired(&self, now: Millis, lease_timeout: Duration) -> bool {
        now.since(self.last_heartbeat) > lease_timeout
    }

    /// Number of sessions on all devices.
    pub fn session_count(&self) -> usize {
        self.devices.iter().map(|d| d.load.sessions.len()).sum()
    }
}

/// The first device index that appears twice in `spec`, if any.
pub(crate) fn duplicate_device_index(spec: &WorkerSpec) -> Option<u32> {
    let mut seen = BTreeSet::new();
    spec.devices
        .iter()
        .map(|d| d.index)
        .find(|index| !seen.insert(*index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(index: u32, memory_bytes: u64) -> DeviceSpec {
        DeviceSpec {
            index,
            name: format!("gpu{index}"),
            backend: Backend::Cuda,
            memory_bytes,
            compute_units: 100,
        }
    }

    #[test]
    fn devices_are_kept_sorted_by_index() {
        let spec = WorkerSpec {
            id: "w".into(),
            address: "a".into(),
            devices: vec![device(3, 1), device(0, 2), device(1, 3)],
        };
        let worker = Worker::new(spec, Millis(0), 100);
        let indices: Vec<u32> = worker.devices.iter().map(|d| d.spec.index).collect();
        assert_eq!(indices, [0, 1, 3]);
        assert_eq!(worker.device(3).unwrap().spec.memory_bytes, 1);
        assert!(worker.device(2).is_none());
    }

    #[test]
    fn duplicate_indices_are_found() {
        let mut spec = WorkerSpec {
            id: "w".into(),
            address: "a".into(),
            devices: vec![],
        };
        assert_eq!(duplicate_device_index(&spec), None);
        spec.devices = vec![device(0, 1), device(1, 1), device(0, 1)];
        assert_eq!(duplicate_device_index(&spec), Some(0));
    }

    #[test]
    fn quota_limit_applies_the_overcommit_without_overflow() {
        assert_eq!(quota_limit(1000, 100), 1000);
        assert_eq!(quota_limit(1000, 250), 2500);
        assert_eq!(quota_limit(u64::MAX, 300), u64::MAX);
        let spec = WorkerSpec {
            id: "w".into(),
            address: "a".into(),
            devices: vec![device(0, 1000)],
        };
        assert_eq!(
            Worker::new(spec, Millis(0), 150).devices[0].quota_limit,
            1500
        );
    }

    #[test]
    fn lease_expires_strictly_after_the_timeout() {
        let worker = Worker::new(
            WorkerSpec {
                id: "w".into(),
                address: "a".into(),
                devices: vec![],
            },
            Millis(1_000),
            100,
        );
        let timeout = Duration::from_secs(15);
        assert!(!worker.lease_expired(Millis(16_000), timeout));
        assert!(worker.lease_expired(Millis(16_001), timeout));
        assert_eq!(worker.lease_expires_at(timeout), Millis(16_000));
    }

    fn load(id: u64, vram_bytes: u64, compute_percent: u8) -> VictimCandidate {
        use crate::qos::Qos;
        VictimCandidate {
            id: SessionId(id),
            qos: Qos::Low,
            last_active: Millis(0),
            vram_bytes,
            compute_percent,
        }
    }

    #[test]
    fn load_counts_each_state_in_the_right_totals() {
        let (a, b, c) = (load(1, 10, 20), load(2, 5, 10), load(3, 7, 50));
        let mut total = DeviceLoad::default();
        total.add(&a, SessionState::Resident);
        total.add(&b, SessionState::Waiting);
        total.add(&c, SessionState::SwappedOut);
        assert_eq!(
            (total.hot_bytes, total.claimed_bytes, total.quota_bytes),
            (10, 15, 22)
        );
        assert_eq!(total.claimed_compute, 30);
        assert_eq!(
            total.residents.keys().copied().collect::<Vec<_>>(),
            [SessionId(1)]
        );
        total.touch(SessionId(1), Millis(7));
        assert_eq!(total.residents[&SessionId(1)].last_active, Millis(7));
        total.transition(SessionState::Resident, SessionState::SwappingOut, &a);
        assert_eq!(
            (total.hot_bytes, total.claimed_bytes, total.claimed_compute),
            (10, 5, 10)
        );
        assert!(total.residents.is_empty());
        total.transition(SessionState::SwappingOut, SessionState::SwappedOut, &a);
        assert_eq!((total.hot_bytes, total.claimed_bytes), (0, 5));
        total.remove(&b, SessionState::Waiting);
        total.remove(&a, SessionState::SwappedOut);
        total.remove(&c, SessionState::SwappedOut);
        assert_eq!(total, DeviceLoad::default());
    }
}
