//! The worker's side of the gateway protocol (ARCHITECTURE.md, "Gateway protocol"):
//! registration and heartbeats, session-ticket verification, and the gateway's control calls.
//!
//! A worker started with a gateway ([`register`]) accepts a session only with a ticket the
//! gateway signed for it: the signature verifies with the key from `Registered`, `aud` names
//! this worker, it has not expired. The session takes the ticket's id and VRAM quota.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpufn_proto::frame::{FrameKind, FrameLimits, FrameReader, FrameWriter};
use gpufn_proto::message::{
    Channel, Credentials, DeviceInventory, DeviceUsage, Hello, Role, SessionId, SessionUsage,
    SwapState, Welcome, WorkerStatus,
};
use gpufn_proto::transport::{Address, ClientOptions, RecvStream, SendStream, connect};
use gpufn_proto::{CallError, CuResult, PROTOCOL_VERSION, Reply, ReplyMessage, Request};
use serde::Deserialize;

use crate::server::Worker;

/// The claims of a gateway ticket the worker relies on.
#[derive(Clone, Debug, Deserialize)]
pub struct TicketClaims {
    pub sub: String,
    pub worker: String,
    /// The session the ticket opens; `None` for the gateway's control ticket.
    pub session: Option<u64>,
    pub tenant: String,
    pub vram_bytes: u64,
    /// The session's QoS (absent in tickets of older gateways: medium).
    #[serde(default)]
    pub qos: String,
    /// The session's own idle timeout (e.g. its function's), overriding the QoS's.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
}

/// Verifies tickets for one worker with the gateway's public key.
pub struct TicketVerifier {
    worker_id: String,
    key: jsonwebtoken::DecodingKey,
}

impl TicketVerifier {
    pub fn new(worker_id: &str, public_key_pem: &str) -> Result<Self, String> {
        let key = jsonwebtoken::DecodingKey::from_ed_pem(public_key_pem.as_bytes())
            .map_err(|e| format!("the gateway's ticket key is not an Ed25519 PEM key: {e}"))?;
        Ok(TicketVerifier {
            worker_id: worker_id.to_owned(),
            key,
        })
    }

    /// Checks a `Hello`'s credentials; refusals say why.
    pub fn verify(&self, credentials: &Credentials) -> Result<TicketClaims, CallError> {
        let Credentials::Ticket(ticket) = credentials else {
            return Err(refused(
                "this worker serves sessions placed by its gateway: attach through the gateway \
                 (set GPUFN_GATEWAY and GPUFN_TOKEN) to get a session ticket"
                    .to_owned(),
            ));
        };
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.set_audience(&[format!("gpufn-worker:{}", self.worker_id)]);
        validation.set_issuer(&["gpufn-gateway"]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = 5;
        jsonwebtoken::decode::<TicketClaims>(ticket, &self.key, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                let why = match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        "the session ticket expired; attach again".to_owned()
                    }
                    jsonwebtoken::errors::ErrorKind::InvalidAudience => format!(
                        "the session ticket is for another worker, not {}",
                        self.worker_id
                    ),
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                        "the session ticket was not signed by this worker's gateway".to_owned()
                    }
                    other => format!("invalid session ticket ({other:?})"),
                };
                refused(why)
            })
    }
}

fn refused(message: String) -> CallError {
    CallError {
        code: CuResult::ERROR_NOT_PERMITTED,
        message,
    }
}

/// What the worker tracks of an open session for heartbeats and control calls.
#[derive(Default)]
pub struct SessionCounters {
    pub used_bytes: AtomicU64,
    pub bytes_moved: AtomicU64,
    /// Milliseconds since the worker started, at the session's last request.
    pub last_call_ms: AtomicU64,
    pub cancel: Arc<AtomicBool>,
    /// The session closed; it is reported once more (with its final counters) and then
    /// dropped, so the gateway bills all of it and sees it end.
    pub closed: AtomicBool,
}

/// Open sessions by id.
#[derive(Default)]
pub struct OpenSessions {
    started: std::sync::OnceLock<Instant>,
    map: Mutex<BTreeMap<u64, Arc<SessionCounters>>>,
}

impl OpenSessions {
    pub fn now_ms(&self) -> u64 {
        self.started.get_or_init(Instant::now).elapsed().as_millis() as u64
    }

    pub fn insert(&self, id: u64, cancel: Arc<AtomicBool>) -> Arc<SessionCounters> {
        let counters = Arc::new(SessionCounters {
            cancel,
            last_call_ms: AtomicU64::new(self.now_ms()),
            ..SessionCounters::default()
        });
        self.lock().insert(id, counters.clone());
        counters
    }

    pub fn get(&self, id: u64) -> Option<Arc<SessionCounters>> {
        self.lock().get(&id).cloned()
    }

    /// The session closed: kept for one last heartbeat.
    pub fn remove(&self, id: u64) {
        if let Some(c) = self.lock().get(&id) {
            c.closed.store(true, Ordering::SeqCst);
        }
    }

    /// Whether a session with this id is open (not closed).
    pub fn is_open(&self, id: u64) -> bool {
        self.lock()
            .get(&id)
            .is_some_and(|c| !c.closed.load(Ordering::SeqCst))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<SessionCounters>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The heartbeat's view of every open session (swap state and bytes are filled in from
    /// the swapper by the heartbeat).
    pub fn usage(&self) -> Vec<SessionUsage> {
        let now = self.now_ms();
        let mut map = self.lock();
        let usage = map
            .iter()
            .map(|(id, c)| SessionUsage {
                session: SessionId(*id),
                state: SwapState::Hot,
                resident_bytes: c.used_bytes.load(Ordering::Relaxed),
                swapped_bytes: 0,
                idle_ms: now.saturating_sub(c.last_call_ms.load(Ordering::Relaxed)),
                bytes_moved: c.bytes_moved.load(Ordering::Relaxed),
                swap_events: 0,
            })
            .collect();
        map.retain(|_, c| !c.closed.load(Ordering::SeqCst));
        usage
    }

    /// Stops a session (the gateway ended it): its running kernel and queued work are
    /// dropped and its stream closes.
    pub fn cancel(&self, id: u64) -> bool {
        match self.lock().get(&id) {
            Some(c) => {
                c.cancel.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }
}

/// How a worker joins a gateway.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// The gateway's control endpoint.
    pub gateway: Address,
    /// A token with the `worker` scope.
    pub token: String,
    /// This worker's id (stable across restarts of the same machine).
    pub worker_id: String,
    /// Where stubs reach this worker.
    pub data_address: String,
    /// Device memory to offer the pool; `None`: the worker's device memory budget (capped by
    /// what the device reports).
    pub device_memory: Option<u64>,
}

/// The memory a device offers the pool: the configured amount, else the worker's device
/// memory budget (what its sessions may hold at once), capped by what the device reports.
fn offered_memory(reported: u64, configured: Option<u64>, budget: u64) -> u64 {
    match (configured, reported) {
        (Some(bytes), _) => bytes,
        (None, 0) => budget,
        (None, reported) => reported.min(budget),
    }
}

/// Registers `worker` with its gateway and heartbeats until the returned task is dropped or
/// the gateway goes away (then it retries registration every few seconds).
pub async fn register(
    worker: &Worker,
    options: GatewayOptions,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let mut link = Link::open(worker, &options).await?;
    let worker = worker.clone();
    Ok(tokio::spawn(async move {
        loop {
            tokio::time::sleep(link.interval).await;
            if let Err(e) = link.heartbeat(&worker, &options).await {
                tracing::warn!("heartbeat to the gateway failed: {e}; registering again");
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    match Link::open(&worker, &options).await {
                        Ok(l) => {
                            link = l;
                            break;
                        }
                        Err(e) => tracing::warn!("cannot register with the gateway: {e}"),
                    }
                }
            }
        }
    }))
}

struct Link {
    _connection: gpufn_proto::transport::Connection,
    writer: FrameWriter<SendStream>,
    reader: FrameReader<RecvStream>,
    next_id: u64,
    interval: Duration,
    /// Swap events last reported per session (heartbeats report a cumulative count).
    swap_events: BTreeMap<u64, u32>,
}

/// Puts each session's swap state and bytes from the worker's swap status into its
/// heartbeat report. `reported` keeps the swap-event counts reported before, so the count
/// never goes down when the worker's list of recent swaps drops old ones.
fn with_swap_state(
    sessions: &mut [SessionUsage],
    status: &WorkerStatus,
    reported: &mut BTreeMap<u64, u32>,
) {
    for usage in sessions.iter_mut() {
        if let Some(swap) = status.sessions.iter().find(|s| s.session == usage.session) {
            usage.state = swap.state;
            usage.resident_bytes = swap.resident_bytes;
            usage.swapped_bytes = swap.swapped_bytes;
            usage.swap_events = swap.swap_events;
        }
        let before = reported.get(&usage.session.0).copied().unwrap_or(0);
        usage.swap_events = usage.swap_events.max(before);
    }
    reported.retain(|id, _| sessions.iter().any(|s| s.session.0 == *id));
    for usage in sessions.iter() {
        reported.insert(usage.session.0, usage.swap_events);
    }
}

impl Link {
    async fn open(worker: &Worker, options: &GatewayOptions) -> Result<Link, String> {
        let connection = connect(&options.gateway, &ClientOptions::default())
            .await
            .map_err(|e| format!("cannot reach the gateway at {}: {e}", options.gateway))?;
        let (send, recv) = connection.open_stream().await.map_err(|e| e.to_string())?;
        let mut link = Link {
            _connection: connection,
            writer: FrameWriter::new(send),
            reader: FrameReader::new(recv, FrameLimits::default()),
            next_id: 1,
            interval: Duration::from_secs(2),
            swap_events: BTreeMap::new(),
        };
        link.call(&Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            role: Role::Worker,
            channel: Channel::Calls,
            credentials: Credentials::Token(options.token.clone()),
            session: None,
            client: format!(
                "gpufn-worker/{} {}",
                env!("CARGO_PKG_VERSION"),
                options.worker_id
            ),
        }))
        .await?;
        let properties = worker.device().properties();
        let inventory = DeviceInventory {
            index: 0,
            name: properties.name.clone(),
            uuid: properties.uuid,
            total_memory: offered_memory(
                properties.total_memory,
                options.device_memory,
                worker.swap_status().device_memory,
            ),
            compute_capability: compute_capability(properties),
            backend: properties.backend,
            attributes: properties.attributes.clone(),
        };
        let reply = link
            .call(&Request::RegisterWorker {
                worker_id: options.worker_id.clone(),
                data_address: options.data_address.clone(),
                devices: vec![inventory],
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .await?;
        let Reply::Registered {
            heartbeat_interval_ms,
            ticket_public_key,
            ..
        } = reply
        else {
            return Err(format!("unexpected answer to RegisterWorker: {reply:?}"));
        };
        link.interval = Duration::from_millis(u64::from(heartbeat_interval_ms.max(10)));
        worker.use_gateway(Arc::new(TicketVerifier::new(
            &options.worker_id,
            &ticket_public_key,
        )?));
        tracing::info!("registered with the gateway at {}", options.gateway);
        Ok(link)
    }

    async fn heartbeat(&mut self, worker: &Worker, options: &GatewayOptions) -> Result<(), String> {
        // Status first: a session that closes in between is reported with its final
        // counters from the open-session list alone.
        let status = worker.worker_status();
        let mut sessions = worker.open_session_usage();
        with_swap_state(&mut sessions, &status, &mut self.swap_events);
        let used = sessions.iter().map(|s| s.resident_bytes).sum();
        // A GPU with NVML reports its utilisation (a few quick driver queries); else 0.
        let utilization = worker
            .device()
            .telemetry()
            .and_then(|t| t.gpu_utilization_percent)
            .map_or(0, |u| u.min(100) as u8);
        self.call(&Request::Heartbeat {
            worker_id: options.worker_id.clone(),
            devices: vec![DeviceUsage {
                index: 0,
                used_memory: used,
                utilization_percent: utilization,
                sessions,
            }],
        })
        .await
        .map(|_| ())
    }

    async fn call(&mut self, request: &Request) -> Result<Reply, String> {
        let id = self.next_id;
        self.next_id += 1;
        self.writer
            .write_request(FrameKind::Call, id, request, &[])
            .await
            .map_err(|e| e.to_string())?;
        self.writer.flush().await.map_err(|e| e.to_string())?;
        let header = self
            .reader
            .next_frame()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the gateway closed the connection")?;
        if header.id != id {
            return Err(format!("the gateway answered call {} for {id}", header.id));
        }
        let reply = self.reader.reply().map_err(|e| e.to_string())?;
        reply.result.map_err(|e| e.message)
    }
}

fn compute_capability(p: &gpufn_proto::message::DeviceProperties) -> (u32, u32) {
    let get = |a| {
        p.attributes
            .iter()
            .find(|(attr, _)| *attr == a)
            .map_or(0, |(_, v)| (*v).max(0) as u32)
    };
    (
        get(gpufn_proto::DeviceAttribute::COMPUTE_CAPABILITY_MAJOR),
        get(gpufn_proto::DeviceAttribute::COMPUTE_CAPABILITY_MINOR),
    )
}

/// Serves a stream the gateway opened (`Hello { role: Gateway }`, already verified):
/// `EndSession` stops a session; `SwapOut`, `Prewarm` and `GetSwapState` go to the worker's
/// swapper; `GetWorkerStatus` answers every session's swap state and the tiers' usage.
pub async fn serve_control(
    worker: &Worker,
    hello_id: u64,
    mut reader: FrameReader<RecvStream>,
    mut writer: FrameWriter<SendStream>,
) {
    let welcome = Reply::Welcome(Welcome {
        protocol_version: PROTOCOL_VERSION,
        session: SessionId(0),
        memory: None,
        server: format!("gpufn-worker/{}", env!("CARGO_PKG_VERSION")),
    });
    let mut next = Some((hello_id, Ok(welcome)));
    loop {
        if let Some((id, result)) = next.take() {
            let message = ReplyMessage {
                deferred: Vec::new(),
                result,
                printf_bytes: 0,
            };
            if writer.write_reply(id, &message, &[]).await.is_err() || writer.flush().await.is_err()
            {
                return;
            }
        }
        let header = match reader.next_frame().await {
            Ok(Some(h)) if h.kind == FrameKind::Call => h,
            Ok(Some(_)) => continue,
            _ => return,
        };
        let result = match reader.request() {
            Ok(request) => control_call(worker, request).await,
            Err(e) => Err(CallError {
                code: CuResult::ERROR_INVALID_VALUE,
                message: format!("undecodable request: {e}"),
            }),
        };
        next = Some((header.id, result));
    }
}

/// Answers one control call of the gateway.
async fn control_call(worker: &Worker, request: Request) -> Result<Reply, CallError> {
    match request {
        Request::EndSession { session } => {
            if worker.end_session(session.0) {
                Ok(Reply::Done)
            } else {
                Err(CallError {
                    code: CuResult::ERROR_INVALID_VALUE,
                    message: format!("session {} is not open on this worker", session.0),
                })
            }
        }
        Request::Ping => Ok(Reply::Pong),
        Request::GetWorkerStatus => Ok(Reply::WorkerStatus(Box::new(worker.worker_status()))),
        request @ (Request::SwapOut { .. }
        | Request::Prewarm { .. }
        | Request::GetSwapState { .. }) => {
            // Swapping copies the session's memory and waits for a running request: keep it
            // off the async threads.
            let worker = worker.clone();
            tokio::task::spawn_blocking(move || worker.swap_control(&request))
                .await
                .unwrap_or_else(|e| {
                    Err(CallError {
                        code: CuResult::ERROR_UNKNOWN,
                        message: format!("the swap failed inside the worker: {e}"),
                    })
                })
        }
        other => Err(CallError {
            code: CuResult::ERROR_NOT_SUPPORTED,
            message: format!(
                "a gateway control stream takes Ping, GetWorkerStatus, GetSwapState, SwapOut, \
                 Prewarm and EndSession, not {}",
                request_name(&other)
            ),
        }),
    }
}

/// The variant name of a request, for messages (without its possibly large payload).
fn request_name(request: &Request) -> String {
    let text = format!("{request:?}");
    let end = text.find([' ', '(', '{']).unwrap_or(text.len());
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(id: u64, state: SwapState, resident: u64, swap_events: u32) -> SessionUsage {
        SessionUsage {
            session: SessionId(id),
            state,
            resident_bytes: resident,
            swapped_bytes: 0,
            idle_ms: 5,
            bytes_moved: 100,
            swap_events,
        }
    }

    fn status(sessions: Vec<SessionUsage>) -> WorkerStatus {
        WorkerStatus {
            device_memory: 1 << 30,
            resident_bytes: 0,
            host_swap_budget: 0,
            host_swap_bytes: 0,
            disk_swap_bytes: 0,
            cold_swap_bytes: 0,
            sessions,
            recent_swaps: Vec::new(),
        }
    }

    #[test]
    fn heartbeats_report_the_swap_state_and_bytes_of_each_session() {
        let mut sessions = vec![
            usage(1, SwapState::Hot, 64 << 20, 0),
            usage(2, SwapState::Hot, 8 << 20, 0),
        ];
        let mut swapped = usage(1, SwapState::Disk, 0, 1);
        swapped.swapped_bytes = 64 << 20;
        let mut reported = BTreeMap::new();
        with_swap_state(
            &mut sessions,
            &status(vec![swapped, usage(2, SwapState::Hot, 8 << 20, 0)]),
            &mut reported,
        );
        assert_eq!(sessions[0].state, SwapState::Disk);
        assert_eq!(
            (sessions[0].resident_bytes, sessions[0].swapped_bytes),
            (0, 64 << 20)
        );
        assert_eq!(sessions[0].swap_events, 1);
        // The worker's own counters (bytes moved, idle time) are kept.
        assert_eq!((sessions[0].bytes_moved, sessions[0].idle_ms), (100, 5));
        assert_eq!(sessions[1].state, SwapState::Hot);
    }

    #[test]
    fn swap_event_counts_never_go_down_and_closed_sessions_are_forgotten() {
        let mut reported = BTreeMap::new();
        let mut first = vec![usage(1, SwapState::Hot, 0, 0)];
        with_swap_state(
            &mut first,
            &status(vec![usage(1, SwapState::Hot, 0, 4)]),
            &mut reported,
        );
        assert_eq!(first[0].swap_events, 4);
        // The recent-swaps list dropped some of the session's events.
        let mut second = vec![usage(1, SwapState::Hot, 0, 0)];
        with_swap_state(
            &mut second,
            &status(vec![usage(1, SwapState::Hot, 0, 1)]),
            &mut reported,
        );
        assert_eq!(second[0].swap_events, 4);
        // A session that closed (absent from the swap status) keeps its last count once more,
        // then is forgotten.
        let mut closing = vec![usage(1, SwapState::Hot, 0, 0)];
        with_swap_state(&mut closing, &status(Vec::new()), &mut reported);
        assert_eq!(closing[0].swap_events, 4);
        with_swap_state(&mut [], &status(Vec::new()), &mut reported);
        assert!(reported.is_empty());
    }

    #[test]
    fn a_worker_offers_its_device_memory_budget_unless_told_otherwise() {
        assert_eq!(offered_memory(0, None, 8 << 30), 8 << 30);
        assert_eq!(offered_memory(4 << 30, None, 8 << 30), 4 << 30);
        assert_eq!(offered_memory(80 << 30, None, 8 << 30), 8 << 30);
        assert_eq!(offered_memory(80 << 30, Some(1 << 30), 8 << 30), 1 << 30);
    }
}
