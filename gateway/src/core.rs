//! The gateway's shared state and the operations both front ends (HTTP and the control
//! endpoint) perform: attach, end, register, heartbeat, tick.
//!
//! The pool (pure decisions) sits behind one mutex that is never held across an await;
//! commands it returns are carried out afterwards ([`Gateway::apply`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gpufn_pool::{
    Command, DeviceSpec, IdleOverride, Millis, Pool, PoolView, Rejection, SessionRequest,
    SwapInDecision, SwapOutReason, TenantId, WorkerId, WorkerSpec, WorkerUsage,
};
use gpufn_proto::message::{
    Backend, DeviceInventory, DeviceProperties, DeviceUsage, Qos, ResourceRequest, SwapState,
};
use http::StatusCode;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::auth::{Authenticator, Principal, Scope, TokenMinter};
use crate::config::GatewayConfig;
use crate::error::{ApiError, GatewayError};
use crate::influx::{Field, InfluxBuffer, line};
use crate::metering::{Billing, Meter};
use crate::metrics::{DeviceLabels, Metrics, StateLabels, TenantLabels};
use crate::ratelimit::TenantRateLimiter;
use crate::store::{SessionRecord, Store, UsageDelta};
use crate::ticket::{SessionGrant, TicketIssuer};
use crate::worker_link::WorkerLinks;

/// Names of the secrets in the store.
pub const SECRET_HS256: &str = "jwt_hs256_secret";
pub const SECRET_TICKET_KEY: &str = "ticket_ed25519_pkcs8";

/// What a stub gets back from an attach.
#[derive(Clone, Debug, Serialize)]
pub struct Attached {
    pub session: u64,
    pub worker: String,
    pub worker_address: String,
    pub ticket: String,
    #[serde(skip)]
    pub device: DeviceProperties,
}

/// A worker as the gateway knows it beyond the pool: its inventory for device properties.
struct WorkerRecord {
    devices: Vec<DeviceInventory>,
}

/// A live session's billing and placement facts.
#[derive(Clone)]
struct LiveSession {
    billing: Billing,
    worker: String,
    /// When it was placed (pool time).
    created: Millis,
}

struct Core {
    pool: Pool,
    workers: BTreeMap<String, WorkerRecord>,
    live: BTreeMap<u64, LiveSession>,
    meter: Meter,
    next_session: u64,
}

/// The running gateway's state.
pub struct Gateway {
    pub config: GatewayConfig,
    pub store: Store,
    pub auth: Authenticator,
    pub minter: TokenMinter,
    pub tickets: TicketIssuer,
    pub metrics: Metrics,
    pub influx: InfluxBuffer,
    pub rate: TenantRateLimiter,
    /// Deployed functions and their instances.
    pub functions: crate::functions::Functions,
    links: WorkerLinks,
    started: Instant,
    core: Mutex<Core>,
    waiters: Mutex<HashMap<u64, oneshot::Sender<()>>>,
}

/// Unix milliseconds now.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Gateway {
    /// Opens the state store (creating keys on first start) and restores tenants' quotas.
    pub fn open(config: GatewayConfig) -> Result<Arc<Gateway>, GatewayError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| GatewayError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let store = Store::open(&config.data_dir)?;
        let secret = store.secret_or_create(SECRET_HS256, crate::auth::generate_secret)?;
        let ticket_key = store.secret_or_create(SECRET_TICKET_KEY, TicketIssuer::generate_key)?;
        let ended = store.end_open_sessions(unix_ms(), "the gateway restarted")?;
        if ended > 0 {
            tracing::info!("{ended} sessions of the previous run marked ended");
        }
        let mut pool = Pool::new(config.pool.clone())?;
        for tenant in store.tenants()? {
            pool.set_tenant_quota(TenantId(tenant.name), tenant.quota);
        }
        let next_session = store.next_session_id()?;
        Ok(Arc::new(Gateway {
            auth: Authenticator::new(&secret, &config.auth)?,
            minter: TokenMinter::new(&secret, &config.auth),
            tickets: TicketIssuer::new(&ticket_key, config.ticket_ttl)?,
            metrics: Metrics::new(),
            influx: InfluxBuffer::default(),
            rate: TenantRateLimiter::new(
                config.limits.tenant_rate_per_second,
                config.limits.tenant_burst,
            ),
            functions: crate::functions::Functions::new(&config.data_dir, &config.functions),
            links: WorkerLinks::default(),
            started: Instant::now(),
            core: Mutex::new(Core {
                pool,
                workers: BTreeMap::new(),
                live: BTreeMap::new(),
                meter: Meter::default(),
                next_session,
            }),
            waiters: Mutex::new(HashMap::new()),
            store,
            config,
        }))
    }

    /// Pool time: milliseconds since start.
    pub fn now(&self) -> Millis {
        Millis(self.started.elapsed().as_millis() as u64)
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock would be a bug; the state is still consistent
        // enough to serve (pool methods are all-or-nothing), so recover the guard.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ----- workers -------------------------------------------------------------------------

    /// A worker joined (or rejoined after a restart).
    pub fn register_worker(
        self: &Arc<Self>,
        worker_id: &str,
        data_address: &str,
        devices: Vec<DeviceInventory>,
    ) -> Result<(), ApiError> {
        if worker_id.is_empty() || devices.is_empty() {
            return Err(ApiError::bad_request(
                "a worker must register with an id and at least one device",
            ));
        }
        let spec = WorkerSpec {
            id: WorkerId(worker_id.to_owned()),
            address: data_address.to_owned(),
            devices: devices
                .iter()
                .map(|d| DeviceSpec {
                    index: d.index,
                    name: d.name.clone(),
                    backend: pool_backend(d.backend),
                    memory_bytes: d.total_memory,
                    compute_units: multiprocessors(d),
                })
                .collect(),
        };
        let commands = {
            let mut core = self.core();
            let now = self.now();
            let commands = core
                .pool
                .register_worker(spec, now)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            core.workers
                .insert(worker_id.to_owned(), WorkerRecord { devices });
            commands
        };
        self.links.forget(worker_id);
        self.scheduling_event("worker_registered", "registered", worker_id, None, None);
        self.apply(commands);
        Ok(())
    }

    /// A heartbeat: renews the lease, reconciles swap states, meters usage.
    pub fn heartbeat(
        self: &Arc<Self>,
        worker_id: &str,
        devices: Vec<DeviceUsage>,
    ) -> Result<(), ApiError> {
        let now = self.now();
        let now_ms = unix_ms();
        let max_interval_ms = self.config.pool.lease_timeout.as_millis() as i64;
        let mut commands = Vec::new();
        let mut deltas = Vec::new();
        let mut swaps = Vec::new();
        {
            let mut core = self.core();
            let core = &mut *core;
            let worker = WorkerId(worker_id.to_owned());
            let usage = WorkerUsage {
                healthy: true,
                devices: devices
                    .iter()
                    .map(|d| gpufn_pool::DeviceUsage {
                        index: d.index,
                        used_bytes: d.used_memory,
                        utilization_percent: d.utilization_percent,
                        healthy: true,
                    })
                    .collect(),
            };
            core.pool.heartbeat(&worker, usage, now).map_err(|e| {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_worker", e.to_string())
            })?;
            let mut reported = std::collections::BTreeSet::new();
            for report in devices.iter().flat_map(|d| &d.sessions) {
                let id = report.session.0;
                let Some(live) = core.live.get(&id) else {
                    continue;
                };
                if live.worker != worker_id {
                    continue;
                }
                reported.insert(id);
                deltas.push(
                    core.meter
                        .record(report, &live.billing, now_ms, max_interval_ms),
                );
                let sid = gpufn_pool::SessionId(id);
                if report.idle_ms < self.config.heartbeat_interval.as_millis() as u64 * 2 {
                    let _ = core
                        .pool
                        .session_activity(sid, Millis(now.0.saturating_sub(report.idle_ms)));
                }
                let pool_state = core.pool.session(sid).map(|s| s.state);
                use gpufn_pool::SessionState as P;
                match (pool_state, report.state) {
                    (
                        Some(P::Resident | P::SwappingOut),
                        SwapState::Host | SwapState::Disk | SwapState::Cold,
                    ) => {
                        if let Ok(more) = core.pool.session_swapped_out(sid, now) {
                            commands.extend(more);
                        }
                        swaps.push(("swap_out", "worker_reported", id));
                    }
                    (Some(P::SwappedOut), SwapState::Hot) => {
                        // The worker woke the session on its own (its next call): account
                        // for the memory it took back.
                        if let Ok(SwapInDecision::Granted { commands: more, .. }) =
                            core.pool.request_swap_in(sid, now)
                        {
                            commands.extend(more);
                        }
                        let _ = core.pool.session_swapped_in(sid, now);
                        swaps.push(("swap_in", "wake", id));
                    }
                    _ => {}
                }
            }
            // Sessions the worker reported before and no longer reports have ended there;
            // sessions never reported long after their ticket expired were never opened.
            let open_deadline = self.config.ticket_ttl + self.config.pool.lease_timeout;
            let gone: Vec<(u64, &'static str)> = core
                .live
                .iter()
                .filter(|(id, s)| s.worker == worker_id && !reported.contains(id))
                .filter_map(|(id, s)| {
                    if core.meter.has_reported(*id) {
                        Some((*id, "detached"))
                    } else if now.since(s.created) > open_deadline {
                        Some((*id, "never_opened"))
                    } else {
                        None
                    }
                })
                .collect();
            for (id, reason) in gone {
                if let Ok(more) = core.pool.end_session(gpufn_pool::SessionId(id), now) {
                    commands.extend(more);
                }
                core.live.remove(&id);
                core.meter.forget(id);
                swaps.push(("session_end", reason, id));
            }
        }
        for (event, reason, session) in swaps {
            if event == "session_end" {
                let why = if reason == "detached" {
                    "the program detached"
                } else {
                    "the program never opened the session on its worker before its ticket expired"
                };
                let _ = self.store.end_session(session, now_ms, why);
            }
            self.scheduling_event(event, reason, worker_id, Some(session), None);
        }
        self.bill(&deltas, worker_id);
        self.apply(commands);
        Ok(())
    }

    fn bill(&self, deltas: &[UsageDelta], worker: &str) {
        if let Err(e) = self.store.add_usage(deltas) {
            tracing::error!("cannot record usage in the ledger: {e}");
        }
        let at = unix_ms();
        for d in deltas {
            let labels = TenantLabels {
                tenant: d.tenant.clone(),
            };
            self.metrics
                .gpu_seconds
                .get_or_create(&labels)
                .inc_by(d.gpu_seconds);
            self.metrics
                .vram_gib_seconds
                .get_or_create(&labels)
                .inc_by(d.vram_gib_seconds);
            self.metrics
                .bytes_moved
                .get_or_create(&labels)
                .inc_by(d.bytes_moved);
            self.metrics
                .swap_events
                .get_or_create(&labels)
                .inc_by(d.swap_events);
            let session = d.session.to_string();
            self.influx.push(line(
                "gpufn_session",
                &[
                    ("tenant", &d.tenant),
                    ("session", &session),
                    ("function", d.function.as_deref().unwrap_or("")),
                    ("worker", worker),
                ],
                &[
                    ("gpu_seconds", Field::Float(d.gpu_seconds)),
                    ("vram_gib_seconds", Field::Float(d.vram_gib_seconds)),
                    ("bytes_moved", Field::Int(d.bytes_moved as i64)),
                    ("swap_events", Field::Int(d.swap_events as i64)),
                ],
                at,
            ));
        }
    }

    // ----- sessions ------------------------------------------------------------------------

    /// Places a session and issues its ticket.
    pub async fn attach(
        self: &Arc<Self>,
        principal: &Principal,
        request: &ResourceRequest,
    ) -> Result<Attached, ApiError> {
        self.attach_with_idle(principal, request, None).await
    }

    /// Places a session with its own idle timeouts (a function's, from its manifest) in place
    /// of the pool's per-QoS ones; both the pool and the worker's ticket get them, so neither
    /// swaps the session out early.
    pub async fn attach_with_idle(
        self: &Arc<Self>,
        principal: &Principal,
        request: &ResourceRequest,
        idle: Option<IdleOverride>,
    ) -> Result<Attached, ApiError> {
        principal.require(Scope::Session)?;
        if request.vram_bytes == 0 {
            return Err(ApiError::bad_request(
                "vram_bytes must be above zero: ask for the device memory the program needs",
            ));
        }
        let (placement, id, ready_rx) = {
            let mut core = self.core();
            let id = core.next_session;
            core.next_session += 1;
            let pool_request = SessionRequest {
                id: gpufn_pool::SessionId(id),
                tenant: TenantId(principal.tenant.clone()),
                function: request.function.clone(),
                vram_bytes: request.vram_bytes,
                compute_percent: request.compute_percent,
                qos: pool_qos(request.qos),
                backend: None,
                strategy: None,
                idle,
            };
            let placement = core
                .pool
                .request_session(pool_request, self.now())
                .map_err(|r| {
                    let reason = rejection_reason(&r);
                    self.metrics.event("placement_rejected", reason);
                    rejection_error(r)
                })?;
            core.live.insert(
                id,
                LiveSession {
                    billing: Billing {
                        tenant: principal.tenant.clone(),
                        function: request.function.clone(),
                        compute_percent: request.compute_percent,
                    },
                    worker: placement.device.worker.0.clone(),
                    created: self.now(),
                },
            );
            let ready_rx = (!placement.ready).then(|| {
                let (tx, rx) = oneshot::channel();
                self.waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, tx);
                rx
            });
            (placement, id, ready_rx)
        };
        let worker = placement.device.worker.0.clone();
        let record = SessionRecord {
            id,
            tenant: principal.tenant.clone(),
            function: request.function.clone(),
            worker: worker.clone(),
            device: placement.device.index,
            vram_bytes: request.vram_bytes,
            compute_percent: request.compute_percent,
            qos: qos_name(request.qos).to_owned(),
            created_at_ms: unix_ms(),
            ended_at_ms: None,
            end_reason: None,
        };
        if let Err(e) = self.store.insert_session(&record) {
            self.forget_session(id, "the state store failed");
            return Err(e.into());
        }
        let reason = if placement.commands.is_empty() {
            "fit"
        } else {
            "reclaim"
        };
        self.scheduling_event(
            "placement",
            reason,
            &worker,
            Some(id),
            Some(&principal.tenant),
        );
        self.apply(placement.commands.clone());
        if let Some(rx) = ready_rx {
            let ready = tokio::time::timeout(Duration::from_secs(30), rx).await;
            if !matches!(ready, Ok(Ok(()))) {
                self.end_session_internal(id, "memory could not be reclaimed in time");
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "reclaim_timeout",
                    "idle sessions did not swap out in time to make room; retry",
                ));
            }
        }
        let device = self
            .device_properties(&worker, placement.device.index, request.vram_bytes)
            .ok_or_else(|| ApiError::internal("the placed worker has no such device"))?;
        let ticket = self.tickets.grant(&SessionGrant {
            worker: worker.clone(),
            session: id,
            tenant: principal.tenant.clone(),
            vram_bytes: request.vram_bytes,
            compute_percent: request.compute_percent,
            qos: request.qos,
            idle_timeout: idle.and_then(|i| i.swap_out_after),
        });
        Ok(Attached {
            session: id,
            worker,
            worker_address: placement.address,
            ticket,
            device,
        })
    }

    fn device_properties(&self, worker: &str, index: u32, vram: u64) -> Option<DeviceProperties> {
        let core = self.core();
        let d = core
            .workers
            .get(worker)?
            .devices
            .iter()
            .find(|d| d.index == index)?;
        Some(DeviceProperties {
            name: d.name.clone(),
            uuid: d.uuid,
            total_memory: vram.min(d.total_memory),
            attributes: d.attributes.clone(),
            backend: d.backend,
        })
    }

    /// A session's record, if `principal` may see it (others' sessions read as missing).
    pub fn session_record(
        &self,
        principal: &Principal,
        id: u64,
    ) -> Result<SessionRecord, ApiError> {
        match self.store.session(id)? {
            Some(s) if principal.is_admin() || s.tenant == principal.tenant => Ok(s),
            _ => Err(ApiError::not_found(format!(
                "no session {id} of tenant {}; list yours with GET /v1/sessions",
                principal.tenant
            ))),
        }
    }

    /// The pool state of a live session (`None` when ended).
    pub fn session_state(&self, id: u64) -> Option<&'static str> {
        self.core()
            .pool
            .session(gpufn_pool::SessionId(id))
            .map(|s| s.state.name())
    }

    /// Ends a session on behalf of `principal`.
    pub fn end_session(self: &Arc<Self>, principal: &Principal, id: u64) -> Result<(), ApiError> {
        principal.require(Scope::Session)?;
        let record = self.session_record(principal, id)?;
        if record.ended_at_ms.is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "session_ended",
                format!(
                    "session {id} already ended ({})",
                    record.end_reason.unwrap_or_default()
                ),
            ));
        }
        let worker = record.worker.clone();
        self.end_session_internal(id, &format!("ended by {}", principal.tenant));
        let gateway = self.clone();
        tokio::spawn(async move {
            gateway
                .links
                .call(
                    &gateway,
                    &worker,
                    gpufn_proto::Request::EndSession {
                        session: gpufn_proto::message::SessionId(id),
                    },
                )
                .await
        });
        Ok(())
    }

    /// A session's program is gone (a function instance exited): forget it now rather than
    /// at the worker's next heartbeat. Nothing is sent to the worker, which saw it close.
    pub fn session_closed(self: &Arc<Self>, id: u64, reason: &str) {
        let live = self.core().live.contains_key(&id);
        if live {
            self.end_session_internal(id, reason);
        }
    }

    /// Brings a swapped-out session's memory back before its next call (a request for its
    /// function arrived). Returns how long the swap-in took, or `None` when the session was
    /// not swapped out (or is unknown). Waits for the worker.
    pub async fn prewarm_session(self: &Arc<Self>, id: u64) -> Option<Duration> {
        let started = Instant::now();
        let sid = gpufn_pool::SessionId(id);
        let (worker, device_ready, commands, waiter) = {
            let mut core = self.core();
            let worker = core.live.get(&id)?.worker.clone();
            let (ready, commands) = match core.pool.request_swap_in(sid, self.now()) {
                Ok(SwapInDecision::Granted { ready, commands }) => (ready, commands),
                _ => return None,
            };
            let waiter = (!ready).then(|| {
                let (tx, rx) = oneshot::channel();
                self.waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, tx);
                rx
            });
            (worker, ready, commands, waiter)
        };
        self.scheduling_event("swap_in", "prewarm", &worker, Some(id), None);
        self.apply(commands);
        if !device_ready && let Some(rx) = waiter {
            let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
        }
        let request = gpufn_proto::Request::Prewarm {
            session: gpufn_proto::message::SessionId(id),
        };
        if self.links.call(self, &worker, request).await {
            let _ = self.core().pool.session_swapped_in(sid, self.now());
        }
        Some(started.elapsed())
    }

    fn end_session_internal(self: &Arc<Self>, id: u64, reason: &str) {
        let commands = self.forget_session(id, reason);
        self.apply(commands);
    }

    fn forget_session(&self, id: u64, reason: &str) -> Vec<Command> {
        let commands = {
            let mut core = self.core();
            core.live.remove(&id);
            core.meter.forget(id);
            core.pool
                .end_session(gpufn_pool::SessionId(id), self.now())
                .unwrap_or_default()
        };
        if let Err(e) = self.store.end_session(id, unix_ms(), reason) {
            tracing::error!("cannot record the end of session {id}: {e}");
        }
        commands
    }

    // ----- pool ----------------------------------------------------------------------------

    /// The pool snapshot.
    pub fn pool_view(&self) -> PoolView {
        self.core().pool.view(self.now())
    }

    /// Live sessions with their pool state, optionally of one tenant.
    pub fn live_sessions(&self, tenant: Option<&str>) -> Vec<gpufn_pool::Session> {
        self.core()
            .pool
            .sessions()
            .filter(|s| tenant.is_none_or(|t| s.tenant.0 == t))
            .cloned()
            .collect()
    }

    /// A tenant's quota and whether it is its own (`false`: the default applies). Read from
    /// the pool, which mirrors the stored quotas: no database read on this path.
    pub fn tenant_quota(&self, tenant: &str) -> (gpufn_pool::TenantQuota, bool) {
        let core = self.core();
        let id = TenantId(tenant.to_owned());
        match core.pool.own_tenant_quota(&id) {
            Some(quota) => (quota, true),
            None => (core.pool.tenant_quota(&id), false),
        }
    }

    /// Applies a tenant's quota to the pool (after it was stored).
    pub fn set_quota(&self, tenant: &str, quota: Option<gpufn_pool::TenantQuota>) {
        let mut core = self.core();
        match quota {
            Some(q) => core.pool.set_tenant_quota(TenantId(tenant.to_owned()), q),
            None => core.pool.clear_tenant_quota(&TenantId(tenant.to_owned())),
        }
    }

    /// Time-driven decisions; call about once a second.
    pub fn tick(self: &Arc<Self>) {
        let (commands, view) = {
            let mut core = self.core();
            let now = self.now();
            let commands = core.pool.tick(now);
            (commands, core.pool.view(now))
        };
        self.apply(commands);
        self.observe(&view);
    }

    fn observe(&self, view: &PoolView) {
        let at = unix_ms();
        self.metrics.workers.set(view.workers.len() as i64);
        for (state, n) in [
            ("resident", view.sessions.resident),
            ("waiting", view.sessions.waiting),
            ("swapping_out", view.sessions.swapping_out),
            ("swapped_out", view.sessions.swapped_out),
        ] {
            self.metrics
                .sessions
                .get_or_create(&StateLabels { state })
                .set(i64::from(n));
        }
        self.metrics.device_memory_bytes.clear();
        self.metrics.device_resident_bytes.clear();
        for w in &view.workers {
            for d in &w.devices {
                let labels = DeviceLabels {
                    worker: w.id.0.clone(),
                    device: d.index.to_string(),
                };
                self.metrics
                    .device_memory_bytes
                    .get_or_create(&labels)
                    .set(d.memory_bytes as i64);
                self.metrics
                    .device_resident_bytes
                    .get_or_create(&labels)
                    .set(d.resident_bytes as i64);
                if self.config.influx.is_some() {
                    let backend = format!("{:?}", d.backend).to_lowercase();
                    self.influx.push(line(
                        "gpufn_device",
                        &[
                            ("worker", &w.id.0),
                            ("device", &labels.device),
                            ("backend", &backend),
                        ],
                        &[
                            ("memory_bytes", Field::Int(d.memory_bytes as i64)),
                            ("resident_bytes", Field::Int(d.resident_bytes as i64)),
                            ("claimed_bytes", Field::Int(d.claimed_bytes as i64)),
                            (
                                "used_bytes",
                                Field::Int(d.reported_used_bytes.unwrap_or(0) as i64),
                            ),
                            (
                                "utilization_percent",
                                Field::Int(i64::from(d.reported_utilization_percent.unwrap_or(0))),
                            ),
                            ("sessions", Field::Int(i64::from(d.sessions.total()))),
                        ],
                        at,
                    ));
                }
            }
        }
    }

    /// Records a scheduling event in metrics and the line-protocol buffer.
    pub fn scheduling_event(
        &self,
        event: &'static str,
        reason: &str,
        worker: &str,
        session: Option<u64>,
        tenant: Option<&str>,
    ) {
        self.metrics.event(event, reason);
        if self.config.influx.is_none() {
            return;
        }
        let mut fields = vec![("reason", Field::Str(reason))];
        if let Some(s) = session {
            fields.push(("session", Field::Int(s as i64)));
        }
        self.influx.push(line(
            "gpufn_scheduling",
            &[
                ("event", event),
                ("worker", worker),
                ("tenant", tenant.unwrap_or("")),
            ],
            &fields,
            unix_ms(),
        ));
    }

    /// Carries out pool commands: swap-outs and swap-ins go to workers, lost workers end their
    /// sessions, ready sessions wake their attach.
    pub fn apply(self: &Arc<Self>, commands: Vec<Command>) {
        for command in commands {
            match command {
                Command::SwapOut {
                    session,
                    device,
                    reason,
                } => {
                    let reason_name = match reason {
                        SwapOutReason::Idle => "idle",
                        SwapOutReason::Reclaim { .. } => "reclaim",
                    };
                    self.scheduling_event(
                        "swap_out",
                        reason_name,
                        &device.worker.0,
                        Some(session.0),
                        None,
                    );
                    let gateway = self.clone();
                    tokio::spawn(async move {
                        let request = gpufn_proto::Request::SwapOut {
                            session: gpufn_proto::message::SessionId(session.0),
                        };
                        if gateway
                            .links
                            .call(&gateway, &device.worker.0, request)
                            .await
                        {
                            let more = gateway
                                .core()
                                .pool
                                .session_swapped_out(session, gateway.now())
                                .unwrap_or_default();
                            gateway.apply(more);
                        }
                    });
                }
                Command::SwapIn { session, device } => {
                    self.scheduling_event(
                        "swap_in",
                        "prewarm",
                        &device.worker.0,
                        Some(session.0),
                        None,
                    );
                    let gateway = self.clone();
                    tokio::spawn(async move {
                        let request = gpufn_proto::Request::Prewarm {
                            session: gpufn_proto::message::SessionId(session.0),
                        };
                        if gateway
                            .links
                            .call(&gateway, &device.worker.0, request)
                            .await
                        {
                            let _ = gateway
                                .core()
                                .pool
                                .session_swapped_in(session, gateway.now());
                        }
                    });
                }
                Command::Ready { session, .. } => {
                    let waiter = self
                        .waiters
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&session.0);
                    if let Some(tx) = waiter {
                        let _ = tx.send(());
                    }
                }
                Command::ScaleToZero { session, device } => {
                    self.scheduling_event(
                        "scale_down",
                        "scale_to_zero",
                        &device.worker.0,
                        Some(session.0),
                        None,
                    );
                    self.forget_session(session.0, "scaled to zero after idling");
                    let gateway = self.clone();
                    tokio::spawn(async move {
                        let request = gpufn_proto::Request::EndSession {
                            session: gpufn_proto::message::SessionId(session.0),
                        };
                        gateway
                            .links
                            .call(&gateway, &device.worker.0, request)
                            .await
                    });
                }
                Command::WorkerLost { worker, sessions } => {
                    tracing::warn!("worker {worker} lost with {} sessions", sessions.len());
                    self.scheduling_event(
                        "worker_lost",
                        "missed_heartbeats",
                        &worker.0,
                        None,
                        None,
                    );
                    let reason = format!(
                        "worker {worker} was lost (it stopped heartbeating); the session's device memory is gone"
                    );
                    {
                        let mut core = self.core();
                        core.workers.remove(&worker.0);
                        for s in &sessions {
                            core.live.remove(&s.0);
                            core.meter.forget(s.0);
                        }
                    }
                    for s in sessions {
                        if let Err(e) = self.store.end_session(s.0, unix_ms(), &reason) {
                            tracing::error!("cannot record the end of session {s}: {e}");
                        }
                    }
                    self.links.forget(&worker.0);
                }
                Command::WorkerDrained { worker } => {
                    self.scheduling_event("scale_down", "worker_drained", &worker.0, None, None);
                }
            }
        }
    }
}

fn multiprocessors(d: &DeviceInventory) -> u32 {
    d.attributes
        .iter()
        .find(|(a, _)| *a == gpufn_proto::DeviceAttribute::MULTIPROCESSOR_COUNT)
        .map_or(0, |(_, v)| (*v).max(0) as u32)
}

pub fn pool_backend(b: Backend) -> gpufn_pool::Backend {
    match b {
        Backend::Cuda => gpufn_pool::Backend::Cuda,
        Backend::Cpu => gpufn_pool::Backend::Cpu,
    }
}

pub fn pool_qos(q: Qos) -> gpufn_pool::Qos {
    match q {
        Qos::Low => gpufn_pool::Qos::Low,
        Qos::Medium => gpufn_pool::Qos::Medium,
        Qos::High => gpufn_pool::Qos::High,
        Qos::Critical => gpufn_pool::Qos::Critical,
    }
}

pub fn qos_name(q: Qos) -> &'static str {
    match q {
        Qos::Low => "low",
        Qos::Medium => "medium",
        Qos::High => "high",
        Qos::Critical => "critical",
    }
}

fn rejection_reason(r: &Rejection) -> &'static str {
    match r {
        Rejection::ComputeShareTooLarge { .. } => "compute_share_too_large",
        Rejection::DuplicateSession { .. } => "duplicate_session",
        Rejection::Quota { .. } => "quota",
        Rejection::NoWorkers => "no_workers",
        Rejection::NoEligibleDevice { .. } => "no_eligible_device",
        Rejection::TooLarge { .. } => "too_large",
        Rejection::NoCapacity { .. } => "no_capacity",
    }
}

/// Maps a pool rejection to an HTTP-style error: quotas are 403 (sessions, VRAM) or 429
/// (rate), capacity problems 503, bad requests 400.
pub fn rejection_error(r: Rejection) -> ApiError {
    let details = serde_json::to_value(&r).ok();
    let message = r.to_string();
    let mut error = match &r {
        Rejection::Quota { exceeded } => match exceeded {
            gpufn_pool::QuotaExceeded::Rate { retry_after_ms, .. } => {
                let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", message);
                e.retry_after_s = retry_after_ms.map(|ms| ms.div_ceil(1000).max(1));
                e
            }
            _ => ApiError::new(StatusCode::FORBIDDEN, "quota_exceeded", message),
        },
        Rejection::ComputeShareTooLarge { .. } | Rejection::TooLarge { .. } => {
            ApiError::bad_request(message)
        }
        Rejection::NoWorkers => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_workers", message)
        }
        Rejection::NoEligibleDevice { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_eligible_device",
            message,
        ),
        Rejection::NoCapacity { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_capacity", message)
        }
        Rejection::DuplicateSession { .. } => ApiError::internal(message),
    };
    error.details = details;
    error
}
