//! The [`Pool`]: the state the gateway feeds events into and asks for decisions.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::command::{Command, SwapOutReason};
use crate::config::PoolConfig;
use crate::error::{ConfigError, PoolError, Rejection};
use crate::idle::{IdleAction, idle_action, prewarm_candidates};
use crate::ids::{DeviceRef, SessionId, TenantId, WorkerId};
use crate::inventory::{
    Device, DeviceLoad, Worker, WorkerSpec, WorkerStatus, WorkerUsage, duplicate_device_index,
};
use crate::lease::expired_workers;
use crate::placement::{Choice, Need, RoomIndex, choose_device, shortfall, victims_on};
use crate::quota::{QuotaExceeded, TenantQuota, TenantUsage, TokenBucket, check_usage};
use crate::session::{Session, SessionRequest, SessionState};
use crate::time::Millis;
use crate::view::{PoolView, build_view};

/// Where a new session was placed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// The new session.
    pub session: SessionId,
    /// Its device.
    pub device: DeviceRef,
    /// The worker's data-plane address, for the client.
    pub address: String,
    /// `true`: the session may use its memory now. `false`: memory is reserved but still held
    /// by sessions swapping out; start it when [`Command::Ready`] names it.
    pub ready: bool,
    /// Swap-outs to send first (reclaiming idle lower-QoS sessions); empty when it just fit.
    pub commands: Vec<Command>,
}

/// What placing a request would do, without doing it ([`Pool::plan_placement`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlacementPlan {
    /// The device that would be chosen.
    pub device: DeviceRef,
    /// Sessions that would be swapped out to make room.
    pub swap_out: Vec<SessionId>,
}

/// Answer to a swapped-out session's request for its memory back ([`Pool::request_swap_in`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum SwapInDecision {
    /// Memory was already reserved (resident, or waiting for [`Command::Ready`] if not `ready`).
    AlreadyReserved {
        /// Whether the memory is usable now.
        ready: bool,
    },
    /// Memory is reserved now. If not `ready`, wait for [`Command::Ready`] after `commands`
    /// (swap-outs of idle lower-QoS sessions) are carried out.
    Granted {
        /// Whether the memory is usable now.
        ready: bool,
        /// Swap-outs to send first.
        commands: Vec<Command>,
    },
    /// No memory can be freed for it now; it stays swapped out. Retry later.
    Denied {
        /// Why.
        rejection: Rejection,
    },
}

/// Answer to "an invocation for this function arrived" ([`Pool::prewarm`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum PrewarmDecision {
    /// A session of the function is resident or already has memory reserved.
    Warm {
        /// That session.
        session: SessionId,
    },
    /// A swapped-out session was granted memory. `commands` holds the swap-outs to send first
    /// and, if the memory is free now, the [`Command::SwapIn`]; otherwise a
    /// [`Command::Ready`] follows later.
    SwapIn {
        /// The session being warmed.
        session: SessionId,
        /// Commands to send.
        commands: Vec<Command>,
    },
    /// The only sessions of the function are still swapping out; prewarm again once the
    /// worker reports the swap-out.
    SwapOutInProgress {
        /// One such session.
        session: SessionId,
    },
    /// The tenant has no session of this function: start an instance (a cold start).
    NoInstance,
    /// Swapped-out sessions exist but none can get memory now.
    Denied {
        /// The session tried first.
        session: SessionId,
        /// Why it was refused.
        rejection: Rejection,
    },
}

/// A tenant's quota override, usage and rate bucket.
#[derive(Clone, Debug, Default)]
pub(crate) struct TenantState {
    pub quota: Option<TenantQuota>,
    pub usage: TenantUsage,
    pub bucket: Option<TokenBucket>,
}

/// The pool: workers, devices, sessions and tenants, and every decision about them.
///
/// All methods are deterministic functions of the pool's state and their arguments; time is
/// always passed in, never read. Iteration is in id order everywhere, so the same sequence
/// of calls always yields the same decisions.
#[derive(Clone, Debug)]
pub struct Pool {
    config: PoolConfig,
    pub(crate) workers: BTreeMap<WorkerId, Worker>,
    pub(crate) sessions: BTreeMap<SessionId, Session>,
    pub(crate) tenants: BTreeMap<TenantId, TenantState>,
    /// Every device by [`Device::room_bytes`], kept in step with each device's load.
    by_room: RoomIndex,
    /// Issues first-come-first-served tickets to sessions entering [`SessionState::Waiting`].
    next_waiting_ticket: u64,
}

impl Pool {
    /// An empty pool with `config`.
    pub fn new(config: PoolConfig) -> Result<Pool, ConfigError> {
        config.validate()?;
        Ok(Pool {
            config,
            workers: BTreeMap::new(),
            sessions: BTreeMap::new(),
            tenants: BTreeMap::new(),
            by_room: RoomIndex::new(),
            next_waiting_ticket: 0,
        })
    }

    /// The pool's configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    // ----- workers -------------------------------------------------------------------------

    /// Registers a worker, starting its lease at `now`.
    ///
    /// A worker registering again under the same id has restarted: its old sessions are lost
    /// (returned as [`Command::WorkerLost`]) and its inventory is replaced.
    pub fn register_worker(
        &mut self,
        spec: WorkerSpec,
        now: Millis,
    ) -> Result<Vec<Command>, PoolError> {
        if let Some(index) = duplicate_device_index(&spec) {
            return Err(PoolError::DuplicateDevice {
                worker: spec.id,
                index,
            });
        }
        let mut commands = Vec::new();
        if let Some(lost) = self.forget_worker(&spec.id)
            && let Command::WorkerLost { sessions, .. } = &lost
            && !sessions.is_empty()
        {
            commands.push(lost);
        }
        let worker = Worker::new(spec, now, self.config.vram_overcommit_percent);
        for device in &worker.devices {
            let device_ref = DeviceRef {
                worker: worker.spec.id.clone(),
                index: device.spec.index,
            };
            self.by_room.insert((device.room_bytes(), device_ref));
        }
        self.workers.insert(worker.spec.id.clone(), worker);
        Ok(commands)
    }

    /// Records a heartbeat: renews the lease and stores health and usage.
    pub fn heartbeat(
        &mut self,
        worker: &WorkerId,
        usage: WorkerUsage,
        now: Millis,
    ) -> Result<(), PoolError> {
        let entry = self.worker_mut(worker)?;
        if let Some(unknown) = usage
            .devices
            .iter()
            .find(|d| entry.device(d.index).is_none())
        {
            return Err(PoolError::UnknownDevice {
                worker: worker.clone(),
                index: unknown.index,
            });
        }
        entry.last_heartbeat = entry.last_heartbeat.max(now);
        entry.healthy = usage.healthy;
        for report in usage.devices {
            if let Some(device) = entry.device_mut(report.index) {
                device.healthy = report.healthy;
                device.reported = Some(report);
            }
        }
        Ok(())
    }

    /// Stops placing new sessions on a worker; its sessions carry on. Once it holds none,
    /// [`Pool::tick`] reports [`Command::WorkerDrained`].
    pub fn drain_worker(&mut self, worker: &WorkerId) -> Result<(), PoolError> {
        let entry = self.worker_mut(worker)?;
        entry.status = WorkerStatus::Draining;
        Ok(())
    }

    /// Lets a draining worker take new sessions again.
    pub fn resume_worker(&mut self, worker: &WorkerId) -> Result<(), PoolError> {
        let entry = self.worker_mut(worker)?;
        entry.status = WorkerStatus::Active;
        entry.drained_reported = false;
        Ok(())
    }

    /// Removes a worker at once (it disconnected or an operator removed it); its sessions are
    /// lost.
    pub fn remove_worker(&mut self, worker: &WorkerId) -> Result<Command, PoolError> {
        self.forget_worker(worker)
            .ok_or_else(|| PoolError::UnknownWorker {
                worker: worker.clone(),
            })
    }

    /// The data-plane address of a registered worker.
    pub fn worker_address(&self, worker: &WorkerId) -> Option<&str> {
        self.workers.get(worker).map(|w| w.spec.address.as_str())
    }

    /// Ids of registered workers, in order.
    pub fn worker_ids(&self) -> impl Iterator<Item = &WorkerId> {
        self.workers.keys()
    }

    // ----- tenants -------------------------------------------------------------------------

    /// Sets a tenant's quota, replacing the default. Lowering it below current usage ends no
    /// session; it only refuses new ones.
    pub fn set_tenant_quota(&mut self, tenant: TenantId, quota: TenantQuota) {
        self.tenants.entry(tenant).or_default().quota = Some(quota);
    }

    /// Returns a tenant to the default quota.
    pub fn clear_tenant_quota(&mut self, tenant: &TenantId) {
        if let Some(state) = self.tenants.get_mut(tenant) {
            state.quota = None;
        }
    }

    /// A tenant's own quota, if one was set (`None`: the default applies).
    pub fn own_tenant_quota(&self, tenant: &TenantId) -> Option<TenantQuota> {
        self.tenants.get(tenant).and_then(|t| t.quota)
    }

    /// The quota that applies to a tenant.
    pub fn tenant_quota(&self, tenant: &TenantId) -> TenantQuota {
        self.tenants
            .get(tenant)
            .and_then(|t| t.quota)
            .unwrap_or(self.config.default_quota)
    }

    // ----- sessions ------------------------------------------------------------------------

    /// Decides where `request` would go, without changing anything (no rate token is taken).
    pub fn plan_placement(
        &self,
        request: &SessionRequest,
        now: Millis,
    ) -> Result<PlacementPlan, Rejection> {
        let choice = self.choose(request, now)?;
        Ok(PlacementPlan {
            device: choice.device,
            swap_out: choice.victims,
        })
    }

    /// Admits and places a new session, or says why not.
    ///
    /// Checks, in order: the compute share is at most 100%; the id is unused; the tenant's
    /// session, VRAM and rate quotas (a rate token is taken only on success); then capacity:
    ///
    /// 1. Among eligible devices (worker active, healthy and within its lease; device healthy,
    ///    with memory and the requested backend) where the session fits without swapping
    ///    anything out, pick by the [`PlacementStrategy`](crate::PlacementStrategy); ties go to the lowest worker id,
    ///    then the lowest device index.
    /// 2. Otherwise, if its QoS may reclaim, pick the device where swapping out idle
    ///    lower-QoS sessions frees enough while moving the fewest bytes (then sessions).
    /// 3. Otherwise reject, naming the missing capacity.
    ///
    /// On success the session is live at once; its memory is usable when
    /// [`Placement::ready`] is true, otherwise after [`Command::Ready`].
    pub fn request_session(
        &mut self,
        request: SessionRequest,
        now: Millis,
    ) -> Result<Placement, Rejection> {
        let choice = self.choose(&request, now)?;
        let quota = self.tenant_quota(&request.tenant);
        let tenant = self.tenants.entry(request.tenant.clone()).or_default();
        if let Some(limit) = quota.rate {
            tenant
                .bucket
                .get_or_insert(TokenBucket::full(limit, now))
                .take(limit, now);
        }
        tenant.usage.sessions += 1;
        tenant.usage.vram_bytes += request.vram_bytes;

        let commands = self.swap_out_for(request.id, &choice);
        let session = Session {
            id: request.id,
            tenant: request.tenant,
            function: request.function,
            vram_bytes: request.vram_bytes,
            compute_percent: request.compute_percent,
            qos: request.qos,
            device: choice.device.clone(),
            state: SessionState::Waiting,
            created_at: now,
            last_active: now,
            idle: request.idle,
            waiting_since: 0,
        };
        let id = session.id;
        let load = session.load();
        self.update_load(&choice.device, |device| {
            device.add(&load, SessionState::Waiting)
        });
        self.sessions.insert(id, session);
        let ready = self.claim(id);
        let address = self
            .worker_address(&choice.device.worker)
            .unwrap_or_default()
            .to_owned();
        Ok(Placement {
            session: id,
            device: choice.device,
            address,
            ready,
            commands,
        })
    }

    /// Records activity of a session (a call reached it), postponing its idle decisions.
    pub fn session_activity(&mut self, session: SessionId, now: Millis) -> Result<(), PoolError> {
        self.session_mut(session)?;
        self.touch(session, now);
        Ok(())
    }

    /// The worker finished swapping a session out: its memory is free. Returns
    /// [`Command::Ready`] for waiting sessions on that device that now fit.
    ///
    /// Also accepted for a resident session the worker swapped out on its own, and repeated
    /// reports are ignored.
    pub fn session_swapped_out(
        &mut self,
        session: SessionId,
        _now: Millis,
    ) -> Result<Vec<Command>, PoolError> {
        let entry = self.session_mut(session)?;
        match entry.state {
            SessionState::SwappedOut => Ok(Vec::new()),
            SessionState::Waiting => Err(PoolError::InvalidTransition {
                session,
                state: entry.state,
                action: "be swapped out: it holds no device memory yet (wait for Ready)",
            }),
            SessionState::Resident | SessionState::SwappingOut => {
                let device = entry.device.clone();
                self.set_state(session, SessionState::SwappedOut);
                Ok(self.start_waiting(&device))
            }
        }
    }

    /// A swapped-out session needs its memory back (its next call arrived). Reserves memory on
    /// its device, forcing idle lower-QoS sessions out if needed.
    pub fn request_swap_in(
        &mut self,
        session: SessionId,
        now: Millis,
    ) -> Result<SwapInDecision, PoolError> {
        let state = self.session_mut(session)?.state;
        if state == SessionState::SwappingOut {
            return Err(PoolError::InvalidTransition {
                session,
                state,
                action: "be swapped in before its swap-out is reported; report the swap-out first",
            });
        }
        self.touch(session, now);
        match state {
            SessionState::Resident => Ok(SwapInDecision::AlreadyReserved { ready: true }),
            SessionState::Waiting | SessionState::SwappingOut => {
                Ok(SwapInDecision::AlreadyReserved { ready: false })
            }
            SessionState::SwappedOut => Ok(match self.reserve_swapped(session, now) {
                Ok((ready, commands)) => SwapInDecision::Granted { ready, commands },
                Err(rejection) => SwapInDecision::Denied { rejection },
            }),
        }
    }

    /// The worker finished swapping a session in (after a grant or [`Command::Ready`]).
    pub fn session_swapped_in(&mut self, session: SessionId, now: Millis) -> Result<(), PoolError> {
        let entry = self.session_mut(session)?;
        if entry.state != SessionState::Resident {
            return Err(PoolError::InvalidTransition {
                session,
                state: entry.state,
                action: "be swapped in without reserved memory; call request_swap_in and wait until it is ready",
            });
        }
        self.touch(session, now);
        Ok(())
    }

    /// An invocation for `function` of `tenant` arrived: make sure an instance's memory is (or
    /// is becoming) resident, so swap-in overlaps request handling.
    pub fn prewarm(&mut self, tenant: &TenantId, function: &str, now: Millis) -> PrewarmDecision {
        let candidates = prewarm_candidates(self.sessions.values(), tenant, function);
        if let Some(session) = candidates.warm {
            return PrewarmDecision::Warm { session };
        }
        let mut first_denial = None;
        for session in candidates.swapped_out {
            match self.reserve_swapped(session, now) {
                Ok((ready, mut commands)) => {
                    self.touch(session, now);
                    if ready && let Some(entry) = self.sessions.get(&session) {
                        let device = entry.device.clone();
                        commands.push(Command::SwapIn { session, device });
                    }
                    return PrewarmDecision::SwapIn { session, commands };
                }
                Err(rejection) => {
                    first_denial.get_or_insert((session, rejection));
                }
            }
        }
        if let Some((session, rejection)) = first_denial {
            return PrewarmDecision::Denied { session, rejection };
        }
        match candidates.swapping_out {
            Some(session) => PrewarmDecision::SwapOutInProgress { session },
            None => PrewarmDecision::NoInstance,
        }
    }

    /// A session ended (the client closed it or its instance stopped). Frees its quota and
    /// memory; returns [`Command::Ready`] for waiting sessions that now fit.
    pub fn end_session(
        &mut self,
        session: SessionId,
        _now: Millis,
    ) -> Result<Vec<Command>, PoolError> {
        let device = self.session_mut(session)?.device.clone();
        self.forget_session(session);
        Ok(self.start_waiting(&device))
    }

    /// A live session.
    pub fn session(&self, session: SessionId) -> Option<&Session> {
        self.sessions.get(&session)
    }

    /// All live sessions, in id order.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    // ----- time ----------------------------------------------------------------------------

    /// Applies every time-driven decision due at `now`, in this order:
    /// 1. workers past their lease are removed and their sessions lost ([`Command::WorkerLost`]);
    /// 2. resident sessions past their idle timeout are swapped out ([`Command::SwapOut`]);
    /// 3. swapped-out function sessions past the scale-to-zero delay end ([`Command::ScaleToZero`]);
    /// 4. draining workers that hold no sessions are reported once ([`Command::WorkerDrained`]).
    pub fn tick(&mut self, now: Millis) -> Vec<Command> {
        let mut commands = Vec::new();
        for worker in expired_workers(&self.workers, now, self.config.lease_timeout) {
            commands.extend(self.forget_worker(&worker));
        }
        let due: Vec<(SessionId, IdleAction)> = self
            .sessions
            .values()
            .filter_map(|s| idle_action(s, now, &self.config).map(|action| (s.id, action)))
            .collect();
        for (session, action) in due {
            let Some(device) = self.sessions.get(&session).map(|s| s.device.clone()) else {
                continue;
            };
            match action {
                IdleAction::SwapOut => {
                    self.set_state(session, SessionState::SwappingOut);
                    commands.push(Command::SwapOut {
                        session,
                        device,
                        reason: SwapOutReason::Idle,
                    });
                }
                IdleAction::ScaleToZero => {
                    self.forget_session(session);
                    commands.push(Command::ScaleToZero { session, device });
                }
            }
        }
        for (id, worker) in &mut self.workers {
            if worker.status == WorkerStatus::Draining
                && !worker.drained_reported
                && worker.session_count() == 0
            {
                worker.drained_reported = true;
                commands.push(Command::WorkerDrained { worker: id.clone() });
            }
        }
        commands
    }

    /// A serializable snapshot for `/v1/pool` and `gpufn status`.
    pub fn view(&self, now: Millis) -> PoolView {
        build_view(self, now)
    }

    // ----- internals -----------------------------------------------------------------------

    /// Runs every admission check and chooses a device, changing nothing.
    fn choose(&self, request: &SessionRequest, now: Millis) -> Result<Choice, Rejection> {
        if request.compute_percent > 100 {
            return Err(Rejection::ComputeShareTooLarge {
                percent: request.compute_percent,
            });
        }
        if self.sessions.contains_key(&request.id) {
            return Err(Rejection::DuplicateSession {
                session: request.id,
            });
        }
        let quota = self.tenant_quota(&request.tenant);
        let tenant = self.tenants.get(&request.tenant);
        let usage = tenant.map(|t| t.usage).unwrap_or_default();
        check_usage(&request.tenant, &quota, usage, request.vram_bytes)?;
        if let Some(limit) = quota.rate {
            let bucket = tenant
                .and_then(|t| t.bucket)
                .unwrap_or(TokenBucket::full(limit, now));
            bucket
                .check(limit, now)
                .map_err(|wait| QuotaExceeded::Rate {
                    tenant: request.tenant.clone(),
                    per_second: limit.per_second,
                    burst: limit.burst,
                    retry_after_ms: wait.map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX)),
                })?;
        }
        let need = Need {
            vram_bytes: request.vram_bytes,
            compute_percent: request.compute_percent,
            qos: request.qos,
        };
        let strategy = request.strategy.unwrap_or(self.config.strategy);
        choose_device(
            &self.workers,
            &self.by_room,
            &need,
            request.backend,
            strategy,
            now,
            &self.config,
        )
    }

    /// Orders the swap-outs `choice` needs for `session`.
    fn swap_out_for(&mut self, session: SessionId, choice: &Choice) -> Vec<Command> {
        let mut commands = Vec::with_capacity(choice.victims.len());
        for victim in &choice.victims {
            self.set_state(*victim, SessionState::SwappingOut);
            commands.push(Command::SwapOut {
                session: *victim,
                device: choice.device.clone(),
                reason: SwapOutReason::Reclaim {
                    for_session: session,
                },
            });
        }
        commands
    }

    /// Reserves memory for a swapped-out session on its own device; returns whether it is
    /// usable now and the swap-outs to send.
    fn reserve_swapped(
        &mut self,
        session: SessionId,
        now: Millis,
    ) -> Result<(bool, Vec<Command>), Rejection> {
        let Some(entry) = self.sessions.get(&session) else {
            return Err(Rejection::NoWorkers);
        };
        let need = Need {
            vram_bytes: entry.vram_bytes,
            compute_percent: entry.compute_percent,
            qos: entry.qos,
        };
        let no_capacity = |device: &Device| Rejection::NoCapacity {
            requested_bytes: need.vram_bytes,
            requested_compute_percent: need.compute_percent,
            qos: need.qos,
            largest_unclaimed_bytes: device.unclaimed_bytes(),
        };
        let device_ref = entry.device.clone();
        let Some(device) = self
            .workers
            .get(&device_ref.worker)
            .and_then(|w| w.device(device_ref.index))
        else {
            return Err(Rejection::NoWorkers);
        };
        let victims = if shortfall(device, need.vram_bytes, need.compute_percent) == (0, 0) {
            Vec::new()
        } else {
            victims_on(device, &need, now, &self.config)
                .ok_or_else(|| no_capacity(device))?
                .iter()
                .map(|v| v.id)
                .collect()
        };
        let choice = Choice {
            device: device_ref,
            victims,
        };
        let commands = self.swap_out_for(session, &choice);
        self.set_state(session, SessionState::Waiting);
        Ok((self.claim(session), commands))
    }

    /// Makes a waiting session resident if its memory is physically free now; returns whether
    /// it did. Otherwise the session keeps waiting, first come first served.
    fn claim(&mut self, session: SessionId) -> bool {
        let fits = self.sessions.get(&session).is_some_and(|s| {
            self.workers
                .get(&s.device.worker)
                .and_then(|w| w.device(s.device.index))
                .is_some_and(|d| {
                    d.load.hot_bytes.saturating_add(s.vram_bytes) <= d.spec.memory_bytes
                })
        });
        if fits {
            self.set_state(session, SessionState::Resident);
        } else if let Some(entry) = self.sessions.get_mut(&session) {
            entry.waiting_since = self.next_waiting_ticket;
            self.next_waiting_ticket += 1;
        }
        fits
    }

    /// Makes waiting sessions on `device` resident, oldest first, while they fit.
    fn start_waiting(&mut self, device_ref: &DeviceRef) -> Vec<Command> {
        let Some(device) = self
            .workers
            .get(&device_ref.worker)
            .and_then(|w| w.device(device_ref.index))
        else {
            return Vec::new();
        };
        let mut waiting: Vec<&Session> = device
            .load
            .sessions
            .iter()
            .filter_map(|id| self.sessions.get(id))
            .filter(|s| s.state == SessionState::Waiting)
            .collect();
        waiting.sort_by_key(|s| s.waiting_since);
        let mut hot = device.load.hot_bytes;
        let mut ready = Vec::new();
        for session in waiting {
            if hot.saturating_add(session.vram_bytes) > device.spec.memory_bytes {
                break;
            }
            hot += session.vram_bytes;
            ready.push(session.id);
        }
        ready
            .into_iter()
            .map(|session| {
                self.set_state(session, SessionState::Resident);
                Command::Ready {
                    session,
                    device: device_ref.clone(),
                }
            })
            .collect()
    }

    /// Changes a session's state and its device's totals together.
    fn set_state(&mut self, session: SessionId, to: SessionState) {
        let Some(entry) = self.sessions.get_mut(&session) else {
            return;
        };
        let from = std::mem::replace(&mut entry.state, to);
        let (load, device) = (entry.load(), entry.device.clone());
        self.update_load(&device, |device| device.transition(from, to, &load));
    }

    /// Removes a session and releases everything it held.
    fn forget_session(&mut self, session: SessionId) {
        let Some(entry) = self.sessions.remove(&session) else {
            return;
        };
        self.update_load(&entry.device, |device| {
            device.remove(&entry.load(), entry.state)
        });
        release_tenant(&mut self.tenants, &entry);
    }

    /// Removes a worker and its sessions; `None` if it was not registered.
    fn forget_worker(&mut self, worker: &WorkerId) -> Option<Command> {
        let removed = self.workers.remove(worker)?;
        for device in &removed.devices {
            let device_ref = DeviceRef {
                worker: worker.clone(),
                index: device.spec.index,
            };
            self.by_room.remove(&(device.room_bytes(), device_ref));
        }
        let mut sessions: Vec<SessionId> = removed
            .devices
            .iter()
            .flat_map(|d| d.load.sessions.iter().copied())
            .collect();
        sessions.sort();
        for session in &sessions {
            if let Some(entry) = self.sessions.remove(session) {
                release_tenant(&mut self.tenants, &entry);
            }
        }
        Some(Command::WorkerLost {
            worker: worker.clone(),
            sessions,
        })
    }

    /// Records activity at `now` on the session and in its device's view of residents.
    fn touch(&mut self, session: SessionId, now: Millis) {
        let Some(entry) = self.sessions.get_mut(&session) else {
            return;
        };
        entry.last_active = entry.last_active.max(now);
        let (last_active, device) = (entry.last_active, entry.device.clone());
        if let Some(device) = device_mut(&mut self.workers, &device) {
            device.load.touch(session, last_active);
        }
    }

    /// Changes a device's load and keeps the room index in step.
    fn update_load(&mut self, device_ref: &DeviceRef, change: impl FnOnce(&mut DeviceLoad)) {
        let Some(device) = device_mut(&mut self.workers, device_ref) else {
            return;
        };
        let before = device.room_bytes();
        change(&mut device.load);
        let after = device.room_bytes();
        if before != after {
            self.by_room.remove(&(before, device_ref.clone()));
            self.by_room.insert((after, device_ref.clone()));
        }
    }

    fn worker_mut(&mut self, worker: &WorkerId) -> Result<&mut Worker, PoolError> {
        self.workers
            .get_mut(worker)
            .ok_or_else(|| PoolError::UnknownWorker {
                worker: worker.clone(),
            })
    }

    fn session_mut(&mut self, session: SessionId) -> Result<&mut Session, PoolError> {
        self.sessions
            .get_mut(&session)
            .ok_or(PoolError::UnknownSession { session })
    }
}

/// The device a reference names, mutably.
fn device_mut<'a>(
    workers: &'a mut BTreeMap<WorkerId, Worker>,
    device: &DeviceRef,
) -> Option<&'a mut Device> {
    workers.get_mut(&device.worker)?.device_mut(device.index)
}

/// Returns a departed session's share of its tenant's usage.
fn release_tenant(tenants: &mut BTreeMap<TenantId, TenantState>, session: &Session) {
    if let Some(tenant) = tenants.get_mut(&session.tenant) {
        tenant.usage.sessions -= 1;
        tenant.usage.vram_bytes -= session.vram_bytes;
    }
}

#[cfg(test)]
mod tests;
