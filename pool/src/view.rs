//! A serializable snapshot of the pool, for `/v1/pool` and `gpufn status`.

use serde::Serialize;

use crate::ids::{TenantId, WorkerId};
use crate::inventory::{Backend, Device, Worker, WorkerStatus};
use crate::pool::Pool;
use crate::quota::TenantQuota;
use crate::session::SessionState;
use crate::time::Millis;

/// The whole pool at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolView {
    /// When the snapshot was taken.
    pub now: Millis,
    /// Registered workers, in id order.
    pub workers: Vec<WorkerView>,
    /// Tenants that have (or had) sessions or a quota, in id order.
    pub tenants: Vec<TenantView>,
    /// Live sessions by state, over all devices.
    pub sessions: SessionCounts,
}

/// One worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkerView {
    /// Its id.
    pub id: WorkerId,
    /// Its data-plane address.
    pub address: String,
    /// Whether it takes new sessions.
    pub status: WorkerStatus,
    /// Whether it reports itself healthy.
    pub healthy: bool,
    /// Its last heartbeat (or registration).
    pub last_heartbeat: Millis,
    /// When it is considered lost without another heartbeat.
    pub lease_expires_at: Millis,
    /// Its devices, by index.
    pub devices: Vec<DeviceView>,
}

/// One device and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceView {
    /// Its index on the worker.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// How it runs kernels.
    pub backend: Backend,
    /// Physical memory.
    pub memory_bytes: u64,
    /// Streaming multiprocessors (or CPU threads).
    pub compute_units: u32,
    /// Whether it reports itself healthy.
    pub healthy: bool,
    /// Memory in use as the worker last reported it.
    pub reported_used_bytes: Option<u64>,
    /// Utilisation as the worker last reported it.
    pub reported_utilization_percent: Option<u8>,
    /// Memory on the device now (resident and swapping-out sessions); at most `memory_bytes`.
    pub resident_bytes: u64,
    /// Memory promised to resident and waiting sessions; at most `memory_bytes`.
    pub claimed_bytes: u64,
    /// VRAM quota of all sessions on the device, swapped out or not.
    pub quota_bytes: u64,
    /// The most `quota_bytes` may reach (`memory_bytes × overcommit`).
    pub quota_limit_bytes: u64,
    /// Compute share promised to resident and waiting sessions; at most 100.
    pub claimed_compute_percent: u32,
    /// Its sessions by state.
    pub sessions: SessionCounts,
}

/// Session counts by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SessionCounts {
    /// Resident sessions.
    pub resident: u32,
    /// Sessions waiting for memory being freed.
    pub waiting: u32,
    /// Sessions swapping out.
    pub swapping_out: u32,
    /// Swapped-out sessions.
    pub swapped_out: u32,
}

impl SessionCounts {
    fn count(&mut self, state: SessionState) {
        match state {
            SessionState::Resident => self.resident += 1,
            SessionState::Waiting => self.waiting += 1,
            SessionState::SwappingOut => self.swapping_out += 1,
            SessionState::SwappedOut => self.swapped_out += 1,
        }
    }

    fn add(&mut self, other: SessionCounts) {
        self.resident += other.resident;
        self.waiting += other.waiting;
        self.swapping_out += other.swapping_out;
        self.swapped_out += other.swapped_out;
    }

    /// All sessions counted.
    pub fn total(&self) -> u32 {
        self.resident + self.waiting + self.swapping_out + self.swapped_out
    }
}

/// One tenant's usage against its quota.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TenantView {
    /// The tenant.
    pub tenant: TenantId,
    /// Its live sessions.
    pub sessions: u32,
    /// VRAM quota held by its live sessions.
    pub vram_bytes: u64,
    /// The quota that applies.
    pub quota: TenantQuota,
}

/// Builds the snapshot.
pub(crate) fn build_view(pool: &Pool, now: Millis) -> PoolView {
    let mut total = SessionCounts::default();
    let workers = pool
        .workers
        .values()
        .map(|worker| {
            let view = worker_view(pool, worker);
            for device in &view.devices {
                total.add(device.sessions);
            }
            view
        })
        .collect();
    let tenants = pool
        .tenants
        .iter()
        .map(|(tenant, state)| TenantView {
            tenant: tenant.clone(),
            sessions: state.usage.sessions,
            vram_bytes: state.usage.vram_bytes,
            quota: pool.tenant_quota(tenant),
        })
        .collect();
    PoolView {
        now,
        workers,
        tenants,
        sessions: total,
    }
}

fn worker_view(pool: &Pool, worker: &Worker) -> WorkerView {
    WorkerView {
        id: worker.spec.id.clone(),
        address: worker.spec.address.clone(),
        status: worker.status,
        healthy: worker.healthy,
        last_heartbeat: worker.last_heartbeat,
        lease_expires_at: worker.lease_expires_at(pool.config().lease_timeout),
        devices: worker
            .devices
            .iter()
            .map(|d| device_view(pool, d))
            .collect(),
    }
}

fn device_view(pool: &Pool, device: &Device) -> DeviceView {
    let mut sessions = SessionCounts::default();
    for id in &device.load.sessions {
        if let Some(session) = pool.session(*id) {
            sessions.count(session.state);
        }
    }
    DeviceView {
        index: device.spec.index,
        name: device.spec.name.clone(),
        backend: device.spec.backend,
        memory_bytes: device.spec.memory_bytes,
        compute_units: device.spec.compute_units,
        healthy: device.healthy,
        reported_used_bytes: device.reported.map(|r| r.used_bytes),
        reported_utilization_percent: device.reported.map(|r| r.utilization_percent),
        resident_bytes: device.load.hot_bytes,
        claimed_bytes: device.load.claimed_bytes,
        quota_bytes: device.load.quota_bytes,
        quota_limit_bytes: device.quota_limit,
        claimed_compute_percent: device.load.claimed_compute,
        sessions,
    }
}
