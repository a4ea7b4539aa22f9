//! Swap integrated into the worker: idle sessions' device memory goes to the
//! [`gpufn_swap::SwapStore`] and comes back at the same addresses before their next request.
//!
//! - Every open session lives in a [`Slot`]: the session behind a mutex (held while one of its
//!   requests runs or while it is swapped) and its swap state.
//! - [`Swapper`] is the worker's device memory budget (`device_memory` bytes for the resident
//!   memory of all hot sessions together, so the sum of session quotas may exceed it) and
//!   the [`MemoryGate`] every allocation passes: when an allocation does not fit, idle sessions
//!   are swapped out, lowest QoS first, then least recently used; if still nothing fits, the
//!   allocation fails with `CUDA_ERROR_OUT_OF_MEMORY`.
//! - A session whose requests stopped for its idle timeout is swapped out by [`Swapper::idle_tick`];
//!   its next request, or a `Prewarm`, swaps it in first. The timeout is the session's own
//!   (its ticket's, e.g. a function's) if it has one, else the worker's for its QoS
//!   ([`SessionTerms`], [`SwapSettings::idle_timeout_for`]).
//!
//! Locking: a thread that holds one session's mutex only ever `try_lock`s another's, so two
//! sessions evicting each other cannot deadlock; a busy session is simply not a victim.

use crate::device::DeviceSession;
use crate::session::{CallReply, Payload, Session};
use gpufn_proto::CuResult;
use gpufn_proto::frame::FrameKind;
use gpufn_proto::message::{
    CallError, MemoryRange, Qos, Reply, Request, SessionId, SessionUsage, SwapRecord, SwapState,
    WorkerStatus,
};
use gpufn_swap::{Allocation, DeviceIo, DeviceIoError, SwapConfig, SwapEvent, SwapStore, Tier};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Swap events kept for the status answer.
const RECENT_EVENTS: usize = 64;

/// How the worker swaps.
#[derive(Debug, Clone)]
pub struct SwapSettings {
    /// Names this worker's files in the disk directory and the cold store; a restarted worker
    /// with the same id removes what its previous run left there.
    pub worker_id: String,
    /// Device memory all hot sessions together may hold.
    pub device_memory: u64,
    /// A session with no request for this long is swapped out (unless its QoS or its ticket
    /// sets another timeout).
    pub idle_timeout: Duration,
    /// Idle timeouts that differ by QoS (QoS levels not listed use `idle_timeout`).
    pub idle_timeout_by_qos: BTreeMap<Qos, Duration>,
    /// Host RAM for swapped-out sessions.
    pub host_budget: u64,
    /// Disk tier directory (`None`: host tier only).
    pub disk_dir: Option<PathBuf>,
    /// Cold tier: `file:///dir`, `memory://` (needs `disk_dir`).
    pub cold_url: Option<String>,
    /// When swapped-out sessions move host → disk → cold.
    pub demotion: gpufn_swap::DemotionPolicy,
}

impl Default for SwapSettings {
    fn default() -> Self {
        SwapSettings {
            worker_id: "worker".into(),
            device_memory: 8 << 30,
            idle_timeout: Duration::from_secs(10),
            idle_timeout_by_qos: BTreeMap::new(),
            host_budget: 4 << 30,
            disk_dir: None,
            cold_url: None,
            demotion: gpufn_swap::DemotionPolicy::default(),
        }
    }
}

impl SwapSettings {
    /// The idle time after which a session with these terms is swapped out: its own timeout
    /// if it has one, else the one configured for its QoS, else `idle_timeout`.
    pub fn idle_timeout_for(&self, terms: SessionTerms) -> Duration {
        terms.idle_timeout.unwrap_or_else(|| {
            self.idle_timeout_by_qos
                .get(&terms.qos)
                .copied()
                .unwrap_or(self.idle_timeout)
        })
    }

    /// The shortest configured idle timeout of any QoS.
    fn shortest_idle_timeout(&self) -> Duration {
        self.idle_timeout_by_qos
            .values()
            .copied()
            .fold(self.idle_timeout, Duration::min)
    }

    fn store_config(&self) -> Result<SwapConfig, gpufn_swap::SwapError> {
        let mut config = SwapConfig::new(self.worker_id.clone(), self.host_budget);
        config.policy = self.demotion.clone();
        if let Some(dir) = &self.disk_dir {
            config = config.with_disk(dir);
        }
        if let Some(url) = &self.cold_url {
            let (store, prefix) = gpufn_swap::tier::cold::store_from_url(url)?;
            config = config.with_cold(store, prefix);
        }
        Ok(config)
    }
}

/// How the worker treats a session when it is idle and when memory is short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionTerms {
    /// Rank when device memory is reclaimed (lowest first) and which configured idle timeout
    /// applies.
    pub qos: Qos,
    /// The session's own idle timeout, overriding its QoS's.
    pub idle_timeout: Option<Duration>,
}

impl SessionTerms {
    /// From a gateway ticket's `qos` and `idle_timeout_ms` claims. A QoS this worker does not
    /// know (a newer gateway's, or none) counts as medium.
    pub fn from_ticket(qos: &str, idle_timeout_ms: Option<u64>) -> SessionTerms {
        let qos = crate::config::parse_qos(qos).unwrap_or_else(|_| {
            if !qos.is_empty() {
                tracing::warn!(
                    qos,
                    "unknown QoS in a session ticket; treating it as medium"
                );
            }
            Qos::Medium
        });
        SessionTerms {
            qos,
            idle_timeout: idle_timeout_ms.map(Duration::from_millis),
        }
    }
}

/// The order in which idle sessions are evicted for device memory: lowest QoS first, then
/// the longest idle. `candidates` are (QoS, idle time); returns their indices.
pub fn eviction_order(candidates: &[(Qos, Duration)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by_key(|&i| (candidates[i].0, std::cmp::Reverse(candidates[i].1)));
    order
}

/// Admits device memory into the worker's budget (see [`Swapper`]).
pub trait MemoryGate: Send + Sync {
    /// Takes `bytes` of device memory for `session`, evicting idle sessions if needed.
    fn reserve(&self, session: SessionId, bytes: u64) -> Result<(), CallError>;
    /// Gives back bytes taken with [`MemoryGate::reserve`].
    fn release(&self, bytes: u64);
}

/// Where a session's memory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    state: SwapState,
    /// Session bytes in the swap store.
    swapped_bytes: u64,
}

/// One open session.
pub struct Slot {
    id: SessionId,
    qos: Qos,
    /// Idle this long, the session is swapped out.
    idle_timeout: Duration,
    session: Mutex<Session>,
    place: Mutex<Place>,
    last_request: Mutex<Instant>,
    /// Device bytes the session holds, as of its last request or swap (read without waiting
    /// for a running request).
    resident: AtomicU64,
}

impl Slot {
    /// The session's buffer pool (see [`Session::buffers`]).
    pub fn buffers(&self) -> Arc<crate::buffers::Buffers> {
        lock(&self.session).buffers()
    }

    fn place(&self) -> Place {
        *lock(&self.place)
    }

    fn set_place(&self, state: SwapState, swapped_bytes: u64) {
        *lock(&self.place) = Place {
            state,
            swapped_bytes,
        };
    }

    fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(*lock(&self.last_request))
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    /// Whether the session's memory is on the device (a request needs no swap-in first).
    pub fn is_hot(&self) -> bool {
        self.place().state == SwapState::Hot
    }
}

/// One session in the status answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSwapStatus {
    pub session: SessionId,
    pub qos: Qos,
    /// Idle this long, the session is swapped out.
    pub idle_timeout: Duration,
    pub state: SwapState,
    pub resident_bytes: u64,
    pub swapped_bytes: u64,
    pub idle: Duration,
}

/// The worker's swap status: sessions, device memory, tiers and recent events.
#[derive(Debug, Clone)]
pub struct SwapStatus {
    pub device_memory: u64,
    pub resident_bytes: u64,
    pub sessions: Vec<SessionSwapStatus>,
    pub store: gpufn_swap::StoreStatus,
    pub recent_events: Vec<SwapEvent>,
}

/// The worker's device memory budget and swap store.
pub struct Swapper {
    settings: SwapSettings,
    store: SwapStore,
    /// Device bytes held by hot sessions.
    resident: Mutex<u64>,
    slots: Mutex<BTreeMap<u64, Arc<Slot>>>,
    events: Mutex<VecDeque<SwapEvent>>,
}

impl Swapper {
    /// Opens the swap store (removing stale files of a previous run of this worker id).
    pub fn open(settings: SwapSettings) -> Result<Arc<Self>, gpufn_swap::SwapError> {
        let config = settings.store_config()?;
        // The cold tier's cleanup runs its own async runtime, which cannot start on a thread
        // that drives one (a worker created inside `#[tokio::main]`): open on a plain thread.
        let opened = std::thread::scope(|scope| {
            scope
                .spawn(move || SwapStore::open(config))
                .join()
                .unwrap_or_else(|_| {
                    Err(gpufn_swap::SwapError::Internal(
                        "opening the swap store panicked".into(),
                    ))
                })
        });
        let (store, report) = opened?;
        if report.stale_files_removed + report.stale_objects_removed > 0 {
            tracing::info!(
                worker_id = %settings.worker_id,
                files = report.stale_files_removed,
                objects = report.stale_objects_removed,
                "removed swap data left by a previous run of this worker"
            );
        }
        Ok(Arc::new(Swapper {
            settings,
            store,
            resident: Mutex::new(0),
            slots: Mutex::new(BTreeMap::new()),
            events: Mutex::new(VecDeque::new()),
        }))
    }

    pub fn settings(&self) -> &SwapSettings {
        &self.settings
    }

    /// Registers an opened session (hot, its memory already admitted).
    pub fn register(&self, session: Session, terms: SessionTerms) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            id: session.id(),
            qos: terms.qos,
            idle_timeout: self.settings.idle_timeout_for(terms),
            session: Mutex::new(session),
            place: Mutex::new(Place {
                state: SwapState::Hot,
                swapped_bytes: 0,
            }),
            last_request: Mutex::new(Instant::now()),
            resident: AtomicU64::new(0),
        });
        lock(&self.slots).insert(slot.id.0, slot.clone());
        slot
    }

    /// Removes a session that ended: its swapped data is discarded and its device memory given
    /// back to the budget. Returns the bytes it held and its address range.
    pub fn unregister(&self, slot: &Slot) -> (u64, MemoryRange) {
        lock(&self.slots).remove(&slot.id.0);
        let session = lock(&slot.session);
        if slot.place().state == SwapState::Hot {
            self.release(session.used_memory());
        } else if let Err(e) = self.store.discard(swap_id(slot.id)) {
            tracing::warn!(session = slot.id.0, "could not discard swapped data: {e}");
        }
        (session.used_memory(), session.range())
    }

    /// Runs one request of `slot`'s session: swap requests are answered from the swap state;
    /// any other request first brings the session's memory back if it is swapped out.
    /// Returns the reply (for a call), whether the session detached and its resident bytes.
    pub fn execute(
        &self,
        slot: &Slot,
        id: u64,
        kind: FrameKind,
        request: Request,
        payload: Payload<'_>,
    ) -> (Option<CallReply>, bool, u64) {
        let mut session = lock(&slot.session);
        let answer = match &request {
            Request::GetSwapState { session: s } if *s == slot.id => {
                Some(Ok(self.swap_state(slot, &session)))
            }
            Request::SwapOut { session: s } if *s == slot.id => {
                Some(self.swap_out(slot, &mut session).map(|()| Reply::Done))
            }
            Request::Prewarm { session: s } if *s == slot.id => {
                Some(self.swap_in(slot, &mut session).map(|()| Reply::Done))
            }
            _ => None,
        };
        let reply = match answer {
            Some(Ok(reply)) => session.answer(kind, reply),
            Some(Err(error)) => session.reject(id, kind, error),
            // Ending or pinging a swapped-out session does not need its memory back.
            None if matches!(request, Request::Detach | Request::Ping) => {
                session.execute(id, kind, request, payload)
            }
            None => match self.swap_in(slot, &mut session) {
                Ok(()) => session.execute(id, kind, request, payload),
                Err(error) => session.reject(id, kind, error),
            },
        };
        *lock(&slot.last_request) = Instant::now();
        let resident = match slot.place().state {
            SwapState::Hot => session.used_memory(),
            _ => 0,
        };
        slot.resident.store(resident, Ordering::Relaxed);
        (reply, session.is_detached(), resident)
    }

    fn swap_state(&self, slot: &Slot, session: &Session) -> Reply {
        let place = slot.place();
        let resident_bytes = if place.state == SwapState::Hot {
            session.used_memory()
        } else {
            0
        };
        Reply::SwapState {
            state: place.state,
            resident_bytes,
            swapped_bytes: place.swapped_bytes,
        }
    }

    /// `Request::SwapOut` / `Prewarm` / `GetSwapState` from a control connection.
    pub fn control(&self, request: &Request) -> Result<Reply, CallError> {
        let (Request::GetSwapState { session: id }
        | Request::SwapOut { session: id }
        | Request::Prewarm { session: id }) = request
        else {
            return Err(error(CuResult::ERROR_NOT_SUPPORTED, "not a swap request"));
        };
        let slot = lock(&self.slots).get(&id.0).cloned().ok_or_else(|| {
            error(
                CuResult::ERROR_INVALID_VALUE,
                format!("session {} is not open on this worker", id.0),
            )
        })?;
        let mut session = lock(&slot.session);
        match request {
            Request::SwapOut { .. } => self.swap_out(&slot, &mut session).map(|()| Reply::Done),
            Request::Prewarm { .. } => self.swap_in(&slot, &mut session).map(|()| Reply::Done),
            _ => Ok(self.swap_state(&slot, &session)),
        }
    }

    /// How often [`Swapper::idle_tick`] should run: a quarter of the shortest idle timeout
    /// configured or held by an open session, between 20 ms and 1 s.
    pub fn tick_period(&self) -> Duration {
        let shortest = self
            .snapshot()
            .iter()
            .map(|slot| slot.idle_timeout)
            .fold(self.settings.shortest_idle_timeout(), Duration::min);
        (shortest / 4).clamp(Duration::from_millis(20), Duration::from_secs(1))
    }

    /// Swaps out every hot session idle past its timeout, then lets the store demote
    /// swapped sessions between tiers. Blocks; run it on a blocking thread.
    pub fn idle_tick(&self) {
        let now = Instant::now();
        for slot in self.snapshot() {
            if slot.place().state != SwapState::Hot || slot.idle_for(now) < slot.idle_timeout {
                continue;
            }
            // A session running a request is not idle.
            if let Ok(mut session) = slot.session.try_lock()
                && let Err(e) = self.swap_out(&slot, &mut session)
            {
                tracing::warn!(session = slot.id.0, "idle swap-out failed: {}", e.message);
            }
        }
        let report = self.store.tick(Instant::now());
        for event in report.events {
            self.demoted(event);
        }
        for e in report.errors {
            tracing::warn!("swap demotion failed: {e}");
        }
    }

    fn demoted(&self, event: SwapEvent) {
        if let (Some(slot), gpufn_swap::Place::Tier(tier)) =
            (lock(&self.slots).get(&event.session.0).cloned(), event.to)
        {
            let swapped = slot.place().swapped_bytes;
            slot.set_place(tier_state(tier), swapped);
        }
        self.record(event);
    }

    /// The status answer: every session's state and bytes, tiers, recent events.
    pub fn status(&self) -> SwapStatus {
        let now = Instant::now();
        let sessions = self
            .snapshot()
            .iter()
            .map(|slot| {
                let place = slot.place();
                let resident_bytes = match place.state {
                    SwapState::Hot => slot.resident.load(Ordering::Relaxed),
                    _ => 0,
                };
                SessionSwapStatus {
                    session: slot.id,
                    qos: slot.qos,
                    idle_timeout: slot.idle_timeout,
                    state: place.state,
                    resident_bytes,
                    swapped_bytes: place.swapped_bytes,
                    idle: slot.idle_for(now),
                }
            })
            .collect();
        SwapStatus {
            device_memory: self.settings.device_memory,
            resident_bytes: *lock(&self.resident),
            sessions,
            store: self.store.status(),
            recent_events: lock(&self.events).iter().cloned().collect(),
        }
    }

    /// The status answer in wire form; `bytes_moved` of a session comes from `moved`.
    pub fn wire_status(&self, moved: impl Fn(SessionId) -> u64) -> WorkerStatus {
        let status = self.status();
        let events = lock(&self.events).clone();
        WorkerStatus {
            device_memory: status.device_memory,
            resident_bytes: status.resident_bytes,
            host_swap_budget: status.store.host_budget,
            host_swap_bytes: status.store.host_used,
            disk_swap_bytes: status.store.disk_used,
            cold_swap_bytes: status.store.cold_bytes,
            sessions: status
                .sessions
                .iter()
                .map(|s| SessionUsage {
                    session: s.session,
                    state: s.state,
                    resident_bytes: s.resident_bytes,
                    swapped_bytes: s.swapped_bytes,
                    idle_ms: u64::try_from(s.idle.as_millis()).unwrap_or(u64::MAX),
                    bytes_moved: moved(s.session),
                    swap_events: events.iter().filter(|e| e.session.0 == s.session.0).count()
                        as u32,
                })
                .collect(),
            recent_swaps: events
                .iter()
                .map(|e| SwapRecord {
                    session: SessionId(e.session.0),
                    from: place_state(e.from),
                    to: place_state(e.to),
                    bytes: e.bytes,
                    duration_us: u64::try_from(e.duration.as_micros()).unwrap_or(u64::MAX),
                })
                .collect(),
        }
    }

    /// The swap state of one open session.
    pub fn session_state(&self, id: SessionId) -> Option<SwapState> {
        lock(&self.slots).get(&id.0).map(|slot| slot.place().state)
    }

    fn snapshot(&self) -> Vec<Arc<Slot>> {
        lock(&self.slots).values().cloned().collect()
    }

    /// Copies a hot session's allocations to the store and frees its device memory.
    fn swap_out(&self, slot: &Slot, session: &mut Session) -> Result<(), CallError> {
        if slot.place().state != SwapState::Hot {
            return Ok(());
        }
        let (memory, space) = session.memory_and_space();
        let allocations: Vec<Allocation> = space
            .allocations()
            .map(|a| Allocation::new(a.address, a.size))
            .collect();
        let bytes: u64 = allocations.iter().map(|a| a.len).sum();
        slot.set_place(SwapState::InFlight, 0);
        let receipt =
            match self
                .store
                .swap_out(swap_id(slot.id), &allocations, &mut SessionIo(memory))
            {
                Ok(receipt) => receipt,
                Err(e) => {
                    slot.set_place(SwapState::Hot, 0);
                    return Err(error(
                        CuResult::ERROR_OUT_OF_MEMORY,
                        format!("session {} could not be swapped out: {e}", slot.id.0),
                    ));
                }
            };
        for a in &allocations {
            if let Err(e) = memory.free(a.device_address) {
                tracing::warn!(session = slot.id.0, "freeing swapped memory failed: {e}");
            }
        }
        self.release(bytes);
        slot.resident.store(0, Ordering::Relaxed);
        slot.set_place(tier_state(receipt.tier), bytes);
        self.record(receipt.event);
        Ok(())
    }

    /// Maps a swapped session's allocations again and restores their bytes. A damaged swap
    /// copy poisons the session (its memory is lost); lack of device memory does not.
    fn swap_in(&self, slot: &Slot, session: &mut Session) -> Result<(), CallError> {
        let place = slot.place();
        if place.state == SwapState::Hot {
            return Ok(());
        }
        let key = swap_id(slot.id);
        let allocations = self.store.allocations(key).map_err(|e| lost(slot, &e))?;
        let bytes: u64 = allocations.iter().map(|a| a.len).sum();
        self.reserve_except(slot.id, bytes)?;
        slot.set_place(SwapState::InFlight, place.swapped_bytes);
        let (memory, _) = session.memory_and_space();
        let restored = allocations
            .iter()
            .try_for_each(|a| memory.allocate_at(a.device_address, a.len))
            .map_err(|e| e.to_string())
            .and_then(|()| {
                self.store
                    .swap_in(key, &mut SessionIo(memory))
                    .map_err(|e| e.to_string())
            });
        let receipt = match restored {
            Ok(receipt) => receipt,
            Err(e) => {
                let message = format!(
                    "session {}'s device memory could not be restored from swap: {e}; the \
                     session's data is lost, start the program again",
                    slot.id.0
                );
                tracing::error!(session = slot.id.0, "{message}");
                let _ = self.store.discard(key);
                let failure = error(CuResult::ERROR_ILLEGAL_STATE, message);
                session.poison(failure.clone());
                // The memory is mapped again (zeroed or partly restored) and counted.
                slot.set_place(SwapState::Hot, 0);
                return Err(failure);
            }
        };
        slot.resident.store(bytes, Ordering::Relaxed);
        slot.set_place(SwapState::Hot, 0);
        // A prewarmed session's call is on its way: it is not idle from now.
        *lock(&slot.last_request) = Instant::now();
        self.record(receipt.event);
        Ok(())
    }

    fn record(&self, event: SwapEvent) {
        tracing::info!(
            session = event.session.0,
            kind = ?event.kind,
            from = %event.from,
            to = %event.to,
            bytes = event.bytes,
            duration_ms = event.duration.as_secs_f64() * 1e3,
            "swap"
        );
        let mut events = lock(&self.events);
        if events.len() == RECENT_EVENTS {
            events.pop_front();
        }
        events.push_back(event);
    }

    fn reserve_except(&self, requester: SessionId, bytes: u64) -> Result<(), CallError> {
        loop {
            {
                let mut resident = lock(&self.resident);
                if resident.saturating_add(bytes) <= self.settings.device_memory {
                    *resident += bytes;
                    return Ok(());
                }
            }
            if !self.evict_one(requester) {
                let resident = *lock(&self.resident);
                return Err(error(
                    CuResult::ERROR_OUT_OF_MEMORY,
                    format!(
                        "the device has no room for {bytes} more bytes: {resident} of {} bytes \
                         are held by active sessions; try again later or use less memory",
                        self.settings.device_memory
                    ),
                ));
            }
        }
    }

    /// Swaps out one idle hot session other than `requester` (lowest QoS, then least recently
    /// used); false if there is none.
    fn evict_one(&self, requester: SessionId) -> bool {
        let now = Instant::now();
        let hot: Vec<Arc<Slot>> = self
            .snapshot()
            .into_iter()
            .filter(|s| s.id != requester && s.place().state == SwapState::Hot)
            .collect();
        let ranks: Vec<(Qos, Duration)> = hot.iter().map(|s| (s.qos, s.idle_for(now))).collect();
        for slot in eviction_order(&ranks).into_iter().map(|i| &hot[i]) {
            let Ok(mut session) = slot.session.try_lock() else {
                continue;
            };
            if session.used_memory() == 0 {
                continue;
            }
            match self.swap_out(slot, &mut session) {
                Ok(()) => {
                    tracing::info!(session = slot.id.0, "evicted for device memory");
                    return true;
                }
                Err(e) => tracing::warn!(session = slot.id.0, "eviction failed: {}", e.message),
            }
        }
        false
    }
}

impl MemoryGate for Swapper {
    fn reserve(&self, session: SessionId, bytes: u64) -> Result<(), CallError> {
        self.reserve_except(session, bytes)
    }

    fn release(&self, bytes: u64) {
        let mut resident = lock(&self.resident);
        *resident = resident.saturating_sub(bytes);
    }
}

/// The swap store's view of a session's device memory.
struct SessionIo<'a>(&'a mut dyn DeviceSession);

impl DeviceIo for SessionIo<'_> {
    fn read(&mut self, address: u64, dst: &mut [u8]) -> Result<(), DeviceIoError> {
        Ok(self.0.read(address, dst)?)
    }

    fn write(&mut self, address: u64, src: &[u8]) -> Result<(), DeviceIoError> {
        Ok(self.0.write(address, src)?)
    }
}

/// The store's key for a session.
fn swap_id(session: SessionId) -> gpufn_swap::SessionId {
    gpufn_swap::SessionId(session.0)
}

fn place_state(place: gpufn_swap::Place) -> SwapState {
    match place {
        gpufn_swap::Place::Device => SwapState::Hot,
        gpufn_swap::Place::Tier(tier) => tier_state(tier),
    }
}

fn tier_state(tier: Tier) -> SwapState {
    match tier {
        Tier::Host => SwapState::Host,
        Tier::Disk => SwapState::Disk,
        Tier::Cold => SwapState::Cold,
    }
}

fn lost(slot: &Slot, e: &gpufn_swap::SwapError) -> CallError {
    error(
        CuResult::ERROR_ILLEGAL_STATE,
        format!(
            "session {} is swapped out but its swap data is gone: {e}",
            slot.id.0
        ),
    )
}

fn error(code: CuResult, message: impl Into<String>) -> CallError {
    CallError {
        code,
        message: message.into(),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SwapSettings {
        SwapSettings {
            idle_timeout: Duration::from_secs(10),
            idle_timeout_by_qos: [(Qos::Low, Duration::from_secs(2))].into(),
            ..SwapSettings::default()
        }
    }

    fn terms(qos: Qos, idle_timeout: Option<Duration>) -> SessionTerms {
        SessionTerms { qos, idle_timeout }
    }

    #[test]
    fn a_session_idles_for_its_own_timeout_else_its_qos_else_the_default() {
        let s = settings();
        assert_eq!(
            s.idle_timeout_for(terms(Qos::Low, None)),
            Duration::from_secs(2)
        );
        assert_eq!(
            s.idle_timeout_for(terms(Qos::High, None)),
            Duration::from_secs(10)
        );
        let own = Some(Duration::from_millis(1500));
        assert_eq!(
            s.idle_timeout_for(terms(Qos::Low, own)),
            Duration::from_millis(1500)
        );
        assert_eq!(
            s.idle_timeout_for(terms(Qos::Critical, own)),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn ticket_claims_become_terms_and_unknown_qos_is_medium() {
        assert_eq!(
            SessionTerms::from_ticket("critical", Some(250)),
            terms(Qos::Critical, Some(Duration::from_millis(250)))
        );
        assert_eq!(
            SessionTerms::from_ticket("low", None),
            terms(Qos::Low, None)
        );
        // Tickets of older gateways (no QoS) and of newer ones (a QoS not known here).
        assert_eq!(
            SessionTerms::from_ticket("", None),
            terms(Qos::Medium, None)
        );
        assert_eq!(
            SessionTerms::from_ticket("urgent", None),
            terms(Qos::Medium, None)
        );
    }

    #[test]
    fn eviction_takes_the_lowest_qos_first_then_the_longest_idle() {
        let secs = Duration::from_secs;
        let candidates = [
            (Qos::High, secs(100)),
            (Qos::Low, secs(1)),
            (Qos::Medium, secs(50)),
            (Qos::Low, secs(30)),
            (Qos::Critical, secs(500)),
            (Qos::Medium, secs(60)),
        ];
        assert_eq!(eviction_order(&candidates), vec![3, 1, 5, 2, 0, 4]);
        assert!(eviction_order(&[]).is_empty());
    }
}
