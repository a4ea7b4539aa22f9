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
    SwapState, Welcome,
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

    /// The heartbeat's view of every open session.
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
    /// Device memory to offer the pool; `None`: what the device reports (for the `cpu`
    /// device, which reports none, half the host's memory).
    pub device_memory: Option<u64>,
}

/// The memory a device offers the pool.
fn offered_memory(reported: u64, configured: Option<u64>) -> u64 {
    if let Some(bytes) = configured {
        return bytes;
    }
    if reported > 0 {
        return reported;
    }
    let host = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(32 << 30);
    host / 2
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
            total_memory: offered_memory(properties.total_memory, options.device_memory),
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
        let sessions = worker.open_session_usage();
        let used = sessions.iter().map(|s| s.resident_bytes).sum();
        self.call(&Request::Heartbeat {
            worker_id: options.worker_id.clone(),
            devices: vec![DeviceUsage {
                index: 0,
                used_memory: used,
                utilization_percent: 0,
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
/// `EndSession` stops a session; swap calls are refused until the worker swaps.
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
            Ok(Request::EndSession { session }) => {
                if worker.end_session(session.0) {
                    Ok(Reply::Done)
                } else {
                    Err(CallError {
                        code: CuResult::ERROR_INVALID_VALUE,
                        message: format!("session {} is not open on this worker", session.0),
                    })
                }
            }
            Ok(Request::Ping) => Ok(Reply::Pong),
            Ok(other) => Err(CallError {
                code: CuResult::ERROR_NOT_SUPPORTED,
                message: format!(
                    "this worker does not handle {:?} from the gateway yet (swap is not wired into the worker)",
                    std::mem::discriminant(&other)
                ),
            }),
            Err(e) => Err(CallError {
                code: CuResult::ERROR_INVALID_VALUE,
                message: format!("undecodable request: {e}"),
            }),
        };
        next = Some((header.id, result));
    }
}
