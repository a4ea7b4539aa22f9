//! The session server: accepts connections on a [`Listener`], checks each stream's
//! handshake and serves one session per `Calls` stream.
//!
//! Per session, three parts run at once: a reader task decodes frames, an executor on a
//! blocking thread runs the requests in order (kernels take CPU time), and a writer task
//! sends replies. A cheap synchronous call that finds the executor idle runs on the reader
//! itself, so it does not pay two thread hand-offs. A large host-to-device copy goes the
//! other way: the reader lends the stream to the executor, which reads the payload straight
//! into device memory, then gives the stream back. When the client goes away the reader
//! cancels any running kernel, the executor stops, and dropping the session frees its
//! memory. A client that sends bad
//! frames loses its own connection, with a log line; nothing it sends can panic the worker
//! or touch another session.

use crate::address_space::RangePool;
use crate::buffers::Buffers;
use crate::cache::ModuleCache;
use crate::config::WorkerConfig;
use crate::device::{self, Device};
use crate::error::{DeviceError, WorkerError};
use crate::gateway_client::{self, OpenSessions, SessionCounters, TicketVerifier};
use crate::session::{CallReply, Payload, Session};
use crate::swap::{MemoryGate, SessionTerms, Slot, SwapStatus, Swapper};
use gpufn_proto::frame::{FrameError, FrameKind, FrameReader, FrameWriter};
use gpufn_proto::message::{
    CallError, Channel, Credentials, Hello, MemoryRange, PROTOCOL_VERSION, Reply, ReplyMessage,
    Request, Role, SessionId, Welcome,
};
use gpufn_proto::transport::{
    Address, Connection, Listener, RecvStream, SendStream, ServerOptions,
};
use gpufn_proto::{CuResult, FrameLimits};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

/// Batches of requests read ahead of the executor per session. A batch holds at most one
/// payload (it ends after a frame that carries one), so this bounds a session's buffered
/// memory to a few frame limits. A large host-to-device copy is not buffered at all: the
/// executor reads its payload from the stream straight into device memory (see [`Body`]).
const READ_AHEAD: usize = 4;
/// Requests handed to the executor at once, at most. The reader hands on every request that is
/// already buffered, so a stream of small posts (kernel launches) costs one thread hand-off
/// per batch instead of one per post.
const BATCH_MAX: usize = 512;
/// Pause after a failed accept.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// A worker: one device, its sessions and the module cache they share.
#[derive(Clone)]
pub struct Worker {
    shared: Arc<Shared>,
}

struct Shared {
    config: WorkerConfig,
    device: Arc<dyn Device>,
    cache: Arc<ModuleCache>,
    ranges: Mutex<RangePool>,
    next_session: AtomicU64,
    open_sessions: AtomicUsize,
    /// Set once registered with a gateway: sessions then need its tickets.
    gateway: std::sync::RwLock<Option<Arc<TicketVerifier>>>,
    /// Open sessions' counters, for heartbeats and the gateway's control calls.
    sessions: OpenSessions,
    /// Device memory budget, idle swap-out and swap-in.
    swapper: Arc<Swapper>,
    idle_ticker_started: AtomicBool,
}

impl Worker {
    /// A worker on the backend `config` asks for (see [`device::select`]).
    pub fn new(config: WorkerConfig) -> Result<Self, WorkerError> {
        let device = device::select(config.backend, config.launch_threads)?;
        Worker::with_device(config, device)
    }

    /// A worker on a given device. Opens the swap store, which removes swap files a previous
    /// run of the same worker id left behind.
    pub fn with_device(config: WorkerConfig, device: Arc<dyn Device>) -> Result<Self, WorkerError> {
        let swapper = Swapper::open(config.swap.clone())
            .map_err(|e| WorkerError::Config(format!("cannot open the swap store: {e}")))?;
        Ok(Worker {
            shared: Arc::new(Shared {
                swapper,
                idle_ticker_started: AtomicBool::new(false),
                cache: Arc::new(ModuleCache::new(config.module_cache_bytes)),
                ranges: Mutex::new(match device.session_window() {
                    Some(window) => RangePool::within(window, config.max_sessions),
                    None => RangePool::new(config.max_sessions),
                }),
                next_session: AtomicU64::new(1),
                open_sessions: AtomicUsize::new(0),
                gateway: std::sync::RwLock::new(None),
                sessions: OpenSessions::default(),
                device,
                config,
            }),
        })
    }

    /// Every session's swap state and bytes, tier usage and recent swap events.
    pub fn swap_status(&self) -> SwapStatus {
        self.shared.swapper.status()
    }

    /// [`Worker::swap_status`] as the control stream's `Reply::WorkerStatus` carries it.
    pub fn worker_status(&self) -> gpufn_proto::message::WorkerStatus {
        self.shared.swapper.wire_status(|session| {
            self.shared
                .sessions
                .get(session.0)
                .map_or(0, |c| c.bytes_moved.load(Ordering::Relaxed))
        })
    }

    /// Answers `GetSwapState`, `SwapOut` or `Prewarm` for any open session (for the
    /// gateway's control stream). Blocks while the session swaps: call it from a blocking
    /// thread.
    pub fn swap_control(&self, request: &Request) -> Result<Reply, CallError> {
        self.shared.swapper.control(request)
    }

    pub fn device(&self) -> &dyn Device {
        &*self.shared.device
    }

    /// Sessions currently open.
    pub fn open_sessions(&self) -> usize {
        self.shared.open_sessions.load(Ordering::SeqCst)
    }

    /// From now on, sessions need tickets `verifier` accepts (see [`gateway_client`]).
    pub fn use_gateway(&self, verifier: Arc<TicketVerifier>) {
        *self
            .shared
            .gateway
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(verifier);
    }

    fn ticket_verifier(&self) -> Option<Arc<TicketVerifier>> {
        self.shared
            .gateway
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What heartbeats report about open sessions.
    pub fn open_session_usage(&self) -> Vec<gpufn_proto::message::SessionUsage> {
        self.shared.sessions.usage()
    }

    /// Stops an open session (the gateway ended it); false if it is not open here.
    pub fn end_session(&self, session: u64) -> bool {
        self.shared.sessions.cancel(session)
    }

    /// Listens on `address`. QUIC keeps its development certificate in `data_dir`
    /// (default: the current directory's `.gpufn`).
    pub async fn bind(
        &self,
        address: &Address,
        data_dir: Option<&Path>,
    ) -> Result<Listener, WorkerError> {
        let dir = data_dir.map_or_else(|| Path::new(".gpufn").to_path_buf(), Path::to_path_buf);
        let options = ServerOptions::dev_certificate_in(dir);
        Ok(Listener::bind(address, &options).await?)
    }

    /// Serves connections from `listener` until it stops.
    pub async fn serve(&self, listener: Listener) {
        self.start_idle_ticker();
        loop {
            match listener.accept().await {
                Ok(connection) => {
                    let worker = self.clone();
                    tokio::spawn(async move { worker.serve_connection(connection).await });
                }
                Err(gpufn_proto::transport::TransportError::Closed { .. }) => {
                    tracing::info!("listener stopped");
                    return;
                }
                Err(e) => {
                    tracing::warn!("a client could not connect: {e}");
                    // Errors such as "too many open files" repeat at once; do not spin.
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    /// Starts (once per worker) the task that swaps out idle sessions and demotes swapped
    /// ones between tiers. It ends when the worker is gone.
    fn start_idle_ticker(&self) {
        if self.shared.idle_ticker_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let swapper = Arc::downgrade(&self.shared.swapper);
        tokio::spawn(async move {
            loop {
                // Sessions with their own idle timeouts come and go: re-read it every time.
                let Some(period) = swapper.upgrade().map(|s| s.tick_period()) else {
                    return;
                };
                tokio::time::sleep(period).await;
                let Some(swapper) = swapper.upgrade() else {
                    return;
                };
                let _ = tokio::task::spawn_blocking(move || swapper.idle_tick()).await;
            }
        });
    }

    async fn serve_connection(&self, connection: Connection) {
        let peer = connection.peer();
        tracing::debug!(%peer, "connection opened");
        while let Ok((send, recv)) = connection.accept_stream().await {
            let worker = self.clone();
            let peer = peer.clone();
            tokio::spawn(async move { worker.serve_stream(send, recv, &peer).await });
        }
        tracing::debug!(%peer, "connection closed");
    }

    async fn serve_stream(&self, send: SendStream, recv: RecvStream, peer: &str) {
        let mut reader = FrameReader::new(recv, FrameLimits::default());
        let mut writer = FrameWriter::new(send);
        let (id, hello) = match read_hello(&mut reader).await {
            Ok(Some(hello)) => hello,
            Ok(None) => return,
            Err(HelloError::Frame(e)) => {
                tracing::warn!(%peer, "closing a stream that did not start with a handshake: {e}");
                return;
            }
            Err(HelloError::Refused { id, error }) => {
                tracing::warn!(%peer, "refused handshake: {}", error.message);
                let _ = refuse(&mut writer, id, error).await;
                return;
            }
        };
        if hello.role == Role::Gateway && self.ticket_verifier().is_none() {
            match authorize_control(&hello) {
                Ok(()) => self.serve_swap_control(id, reader, writer).await,
                Err(error) => {
                    let _ = refuse(&mut writer, id, error).await;
                }
            }
            return;
        }
        if hello.role == Role::Gateway {
            let verified = match self.ticket_verifier() {
                Some(v) => v
                    .verify(&hello.credentials)
                    .and_then(|claims| match claims.session {
                        None => Ok(()),
                        Some(_) => Err(call_error(
                            CuResult::ERROR_NOT_PERMITTED,
                            "a session ticket cannot be used for gateway control calls",
                        )),
                    }),
                None => Err(call_error(
                    CuResult::ERROR_NOT_PERMITTED,
                    "this worker is not registered with a gateway",
                )),
            };
            match verified {
                Ok(()) => gateway_client::serve_control(self, id, reader, writer).await,
                Err(error) => {
                    let _ = refuse(&mut writer, id, error).await;
                }
            }
            return;
        }
        let (session, terms) = match self.open_session(&hello) {
            Ok(opened) => opened,
            Err(error) => {
                tracing::warn!(%peer, client = %hello.client, "refused session: {}", error.message);
                let _ = refuse(&mut writer, id, error).await;
                return;
            }
        };
        let session_id = session.id();
        tracing::info!(
            %peer, session = session_id.0, client = %hello.client,
            range = format_args!("0x{:x}+0x{:x}", session.range().base, session.range().size),
            "session opened"
        );
        let welcome = Reply::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            session: session_id,
            memory: Some(session.range()),
            server: format!(
                "gpufn-worker/{} {}",
                env!("CARGO_PKG_VERSION"),
                self.device().properties().name
            ),
        });
        if let Err(e) = write_reply(&mut writer, id, ok_reply(welcome)).await {
            tracing::warn!(%peer, session = session_id.0, "could not answer the handshake: {e}");
            self.close_session(session);
            return;
        }
        let slot = self.shared.swapper.register(session, terms);
        self.run_session(slot, reader, writer, peer).await;
    }

    /// Serves a control stream of a worker without a gateway: swap state, swap-out and
    /// prewarm of any open session, and ending sessions.
    async fn serve_swap_control(
        &self,
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
        if write_reply(&mut writer, hello_id, ok_reply(welcome))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let header = match reader.next_frame().await {
                Ok(Some(h)) if h.kind == FrameKind::Call => h,
                Ok(Some(h)) => {
                    tracing::warn!("control stream sent a {:?} frame; closing it", h.kind);
                    return;
                }
                _ => return,
            };
            let result = match reader.request() {
                Ok(Request::Ping) => Ok(Reply::Pong),
                Ok(Request::GetWorkerStatus) => {
                    Ok(Reply::WorkerStatus(Box::new(self.worker_status())))
                }
                Ok(Request::EndSession { session }) => {
                    if self.end_session(session.0) {
                        Ok(Reply::Done)
                    } else {
                        Err(call_error(
                            CuResult::ERROR_INVALID_VALUE,
                            format!("session {} is not open on this worker", session.0),
                        ))
                    }
                }
                Ok(
                    request @ (Request::GetSwapState { .. }
                    | Request::SwapOut { .. }
                    | Request::Prewarm { .. }),
                ) => {
                    let swapper = self.shared.swapper.clone();
                    tokio::task::spawn_blocking(move || swapper.control(&request))
                        .await
                        .unwrap_or_else(|e| {
                            Err(call_error(
                                CuResult::ERROR_UNKNOWN,
                                format!("swap failed: {e}"),
                            ))
                        })
                }
                Ok(other) => Err(call_error(
                    CuResult::ERROR_NOT_SUPPORTED,
                    format!(
                        "a control stream takes Ping, GetWorkerStatus, GetSwapState, SwapOut, \
                         Prewarm and EndSession, not {other:?}"
                    ),
                )),
                Err(e) => {
                    tracing::warn!("closing a control stream after a bad frame: {e}");
                    return;
                }
            };
            let message = match result {
                Ok(reply) => ok_reply(reply),
                Err(error) => ReplyMessage {
                    deferred: Vec::new(),
                    result: Err(error),
                    printf_bytes: 0,
                },
            };
            if write_reply(&mut writer, header.id, message).await.is_err() {
                return;
            }
        }
    }

    /// The attach step: checks a stream's handshake and opens its session. The gateway
    /// issue replaces the credential check with ticket verification.
    /// Returns the session and, from its ticket, how it is treated when idle.
    fn open_session(&self, hello: &Hello) -> Result<(Session, SessionTerms), CallError> {
        let ticket = match self.ticket_verifier() {
            Some(verifier) => {
                check_handshake(hello)?;
                let claims = verifier.verify(&hello.credentials)?;
                let Some(session) = claims.session else {
                    return Err(call_error(
                        CuResult::ERROR_NOT_PERMITTED,
                        "a gateway control ticket cannot open a session",
                    ));
                };
                if self.shared.sessions.get(session).is_some() {
                    return Err(call_error(
                        CuResult::ERROR_NOT_PERMITTED,
                        format!(
                            "session {session} is already open; a ticket opens its session once"
                        ),
                    ));
                }
                Some(claims)
            }
            None => {
                authorize(hello)?;
                None
            }
        };
        let range = self
            .shared
            .ranges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| {
                call_error(
                    CuResult::ERROR_DEVICE_UNAVAILABLE,
                    format!(
                        "the worker already serves its maximum of {} sessions; try again later \
                         or start it with a higher --max-sessions",
                        self.shared.config.max_sessions
                    ),
                )
            })?;
        // With a gateway, the ticket names the session, its quota, QoS and idle timeout.
        let terms = ticket.as_ref().map_or_else(SessionTerms::default, |t| {
            SessionTerms::from_ticket(&t.qos, t.idle_timeout_ms)
        });
        let (id, quota) = match &ticket {
            Some(t) => (SessionId(t.session.unwrap_or_default()), t.vram_bytes),
            None => (
                SessionId(self.shared.next_session.fetch_add(1, Ordering::SeqCst)),
                self.shared.config.session_memory,
            ),
        };
        match Session::open(
            id,
            range,
            quota,
            self.shared.device.clone(),
            self.shared.cache.clone(),
            self.shared.swapper.clone() as Arc<dyn MemoryGate>,
        ) {
            Ok(session) => {
                self.shared.open_sessions.fetch_add(1, Ordering::SeqCst);
                self.shared.sessions.insert(id.0, session.cancel_flag());
                Ok((session, terms))
            }
            Err(e) => {
                self.give_back_range(range);
                Err(e.into())
            }
        }
    }

    fn give_back_range(&self, range: MemoryRange) {
        self.shared
            .ranges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .give_back(range);
    }

    fn close_session(&self, session: Session) {
        let range = session.range();
        let id = session.id();
        let used = session.used_memory();
        drop(session);
        self.shared.sessions.remove(id.0);
        self.give_back_range(range);
        self.shared.open_sessions.fetch_sub(1, Ordering::SeqCst);
        tracing::info!(session = id.0, freed_bytes = used, "session closed");
    }

    /// Ends a registered session: its swapped data and device memory are given back.
    fn close_slot(&self, slot: Arc<Slot>) {
        let id = slot.id();
        let (used, range) = self.shared.swapper.unregister(&slot);
        // The session (and its device memory) goes with the last reference to its slot.
        drop(slot);
        self.shared.sessions.remove(id.0);
        self.give_back_range(range);
        self.shared.open_sessions.fetch_sub(1, Ordering::SeqCst);
        tracing::info!(session = id.0, freed_bytes = used, "session closed");
    }

    async fn run_session(
        &self,
        slot: Arc<Slot>,
        reader: FrameReader<RecvStream>,
        writer: FrameWriter<SendStream>,
        peer: &str,
    ) {
        let session_id = slot.id().0;
        let cancel = self
            .shared
            .sessions
            .get(session_id)
            .map(|c| c.cancel.clone());
        let (request_tx, request_rx) = mpsc::channel::<Vec<Incoming>>(READ_AHEAD);
        let (reply_tx, reply_rx) = mpsc::unbounded_channel::<(u64, CallReply)>();
        let counters = self.shared.sessions.get(session_id);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let buffers = slot.buffers();
        let inline = Inline {
            worker: self,
            slot: &slot,
            buffers: buffers.clone(),
            replies: reply_tx.clone(),
            counters: counters.clone(),
            in_flight: in_flight.clone(),
        };
        let worker = self.clone();
        let executed = slot.clone();
        let runtime = Handle::current();
        let mut executor = tokio::task::spawn_blocking(move || {
            let session = Executor {
                worker: &worker,
                slot: &executed,
                counters: counters.as_deref(),
                buffers: &buffers,
                runtime: &runtime,
            };
            session.run(request_rx, reply_tx, &in_flight)
        });
        let replies = tokio::spawn(write_replies(writer, reply_rx, inline.buffers.clone()));

        let mut finished = None;
        let ended = tokio::select! {
            ended = read_requests(reader, &request_tx, &inline) => ended,
            // The executor stops by itself when the session detaches.
            done = &mut executor => {
                finished = Some(done);
                ReadEnd::ExecutorDone
            }
        };
        match &ended {
            ReadEnd::Closed => {
                tracing::debug!(%peer, session = session_id, "client closed the stream")
            }
            ReadEnd::ExecutorDone => {}
            ReadEnd::BadFrame(e) => tracing::warn!(
                %peer, session = session_id,
                "closing the connection after a bad frame: {e}"
            ),
        }
        if !matches!(ended, ReadEnd::ExecutorDone)
            && let Some(cancel) = &cancel
        {
            // The client is gone or misbehaved: stop a running kernel, drop queued work.
            cancel.store(true, Ordering::SeqCst);
        }
        drop(request_tx);
        drop(inline);
        let done = match finished {
            Some(done) => done,
            None => executor.await,
        };
        if let Err(e) = done {
            tracing::error!(session = session_id, "session executor failed: {e}");
        }
        self.close_slot(slot);
        let _ = replies.await;
    }
}

/// Who may send swap and session control calls to a worker that runs without a gateway: a
/// `Gateway`-role stream without credentials (tests, `gpufn status` on the same host). With a
/// gateway, control streams need its control ticket instead (see `gateway_client`).
pub fn authorize_control(hello: &Hello) -> Result<(), CallError> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(call_error(
            CuResult::ERROR_NOT_SUPPORTED,
            format!(
                "protocol version {} is not supported; this worker speaks version \
                 {PROTOCOL_VERSION}",
                hello.protocol_version
            ),
        ));
    }
    match &hello.credentials {
        Credentials::None => Ok(()),
        _ => Err(call_error(
            CuResult::ERROR_NOT_PERMITTED,
            "this worker runs without a gateway and cannot verify control credentials; \
             connect without credentials",
        )),
    }
}

/// The credential check of the attach step. A worker started without a gateway accepts
/// only clients without credentials; tickets need the gateway (issue 7) to verify them.
pub fn authorize(hello: &Hello) -> Result<(), CallError> {
    check_handshake(hello)?;
    match &hello.credentials {
        Credentials::None => Ok(()),
        Credentials::Ticket(_) | Credentials::Token(_) => Err(call_error(
            CuResult::ERROR_NOT_PERMITTED,
            "this worker runs without a gateway and cannot verify tickets or tokens; \
             connect without credentials, or start the worker with --gateway",
        )),
    }
}

/// Version, role and channel of a session's handshake.
fn check_handshake(hello: &Hello) -> Result<(), CallError> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(call_error(
            CuResult::ERROR_NOT_SUPPORTED,
            format!(
                "protocol version {} is not supported; this worker speaks version \
                 {PROTOCOL_VERSION}: use a gpufn stub of the same release",
                hello.protocol_version
            ),
        ));
    }
    if !matches!(hello.role, Role::Stub | Role::Cli) {
        return Err(call_error(
            CuResult::ERROR_NOT_PERMITTED,
            format!("a {:?} cannot open a session on a worker", hello.role),
        ));
    }
    if hello.channel != Channel::Calls || hello.session.is_some() {
        return Err(call_error(
            CuResult::ERROR_NOT_SUPPORTED,
            "this worker serves one Calls stream per session; bulk streams and joining \
             an existing session are not supported yet",
        ));
    }
    Ok(())
}

/// One request read from the stream, with its payload.
struct Incoming {
    id: u64,
    kind: FrameKind,
    request: Request,
    payload: Body,
}

/// A request's payload as the reader hands it on.
enum Body {
    /// Read already, into a buffer from the session's pool (empty: the request has none).
    Read(Vec<u8>),
    /// Still in the stream: a host-to-device copy larger than [`INLINE_COPY_BYTES`]. The
    /// executor reads it straight into device memory, saving a copy through a buffer, and
    /// gives the stream back; the reader waits for it before it reads the next frame.
    InStream(Box<LentReader>),
}

/// The session's stream, lent to the executor while it reads a copy's payload.
struct LentReader {
    reader: FrameReader<RecvStream>,
    back: oneshot::Sender<ReturnedReader>,
}

/// The stream given back to the reader, positioned in or after the copy's payload (the next
/// `next_frame` skips what was not read), with the error that reading it met, if any.
struct ReturnedReader {
    reader: FrameReader<RecvStream>,
    error: Option<FrameError>,
}

enum HelloError {
    Frame(FrameError),
    Refused { id: u64, error: CallError },
}

/// Reads the first frame, which must be a `Hello` call. `Ok(None)`: the stream ended first.
async fn read_hello(
    reader: &mut FrameReader<RecvStream>,
) -> Result<Option<(u64, Hello)>, HelloError> {
    let Some(header) = reader.next_frame().await.map_err(HelloError::Frame)? else {
        return Ok(None);
    };
    if header.kind != FrameKind::Call {
        return Err(HelloError::Frame(FrameError::UnexpectedKind {
            expected: "a Hello call",
            got: header.kind,
        }));
    }
    match reader.request().map_err(HelloError::Frame)? {
        Request::Hello(hello) => Ok(Some((header.id, hello))),
        other => Err(HelloError::Refused {
            id: header.id,
            error: call_error(
                CuResult::ERROR_NOT_INITIALIZED,
                format!("the first call of a stream must be Hello, not {other:?}"),
            ),
        }),
    }
}

enum ReadEnd {
    /// The client ended the stream.
    Closed,
    /// The executor stopped taking requests (the session detached).
    ExecutorDone,
    /// The client sent something that is not a valid frame.
    BadFrame(FrameError),
}

/// What the reader needs to run a cheap call itself (see [`Inline::try_run`]).
struct Inline<'a> {
    worker: &'a Worker,
    slot: &'a Slot,
    /// The session's buffer pool: payloads are read into its buffers.
    buffers: Arc<Buffers>,
    replies: mpsc::UnboundedSender<(u64, CallReply)>,
    counters: Option<Arc<SessionCounters>>,
    /// Requests handed to the executor whose replies are not yet queued for the writer.
    in_flight: Arc<AtomicUsize>,
}

impl Inline<'_> {
    /// Runs `incoming` on the reader if that keeps the session's order and cannot hold the
    /// reader up for long: a request from [`runs_inline`], on a session whose memory is on
    /// the device (no swap-in), with nothing handed to the executor still unanswered. A
    /// synchronous call or a small copy with nothing queued then costs no hand-off to the
    /// executor's thread and back.
    fn try_run(&self, incoming: Incoming) -> Inlined {
        let (id, kind, request, payload) = match incoming {
            Incoming {
                id,
                kind,
                request,
                payload: Body::Read(payload),
            } => (id, kind, request, payload),
            // Reading a payload from the stream here would block the reader's own task.
            streamed => return Inlined::ForExecutor(streamed),
        };
        let cancelled = self
            .counters
            .as_ref()
            .is_some_and(|c| c.cancel.load(Ordering::SeqCst));
        let eligible = runs_inline(&request, payload.len())
            && !cancelled
            && self.slot.is_hot()
            // Acquire: the executor's earlier requests and their replies happened before.
            && self.in_flight.load(Ordering::Acquire) == 0;
        if !eligible {
            return Inlined::ForExecutor(Incoming {
                id,
                kind,
                request,
                payload: Body::Read(payload),
            });
        }
        let (reply, _) = execute_read(
            self.worker,
            self.slot,
            (id, kind, request),
            payload,
            self.counters.as_deref(),
            &self.buffers,
        );
        let Some(reply) = reply else {
            return Inlined::Answered;
        };
        // The writer is gone only when the client is.
        match self.replies.send((id, reply)) {
            Ok(()) => Inlined::Answered,
            Err(_) => Inlined::ClientGone,
        }
    }
}

/// What became of a request the reader offered to run itself.
enum Inlined {
    /// Run, and (for a call) its reply queued for the writer.
    Answered,
    /// Run, but the client is gone.
    ClientGone,
    /// It has to go to the executor.
    ForExecutor(Incoming),
}

/// Host-to-device copies with a payload up to this size, and device-to-host copies up to
/// it, may run on the reader: a memory copy this small holds the reader up for well under a
/// millisecond, and a one-frame copy then skips the hand-off to the executor and back.
const INLINE_COPY_BYTES: u64 = 1 << 20;

/// Requests the reader may run itself when nothing is queued before them: calls that only
/// read the session's state (the executor runs requests to completion, so nothing is left
/// to wait for), and small copies.
fn runs_inline(request: &Request, payload_len: usize) -> bool {
    match request {
        Request::Ping
        | Request::ContextSynchronize { .. }
        | Request::StreamSynchronize { .. }
        | Request::StreamQuery { .. }
        | Request::EventSynchronize { .. }
        | Request::EventQuery { .. }
        | Request::MemGetInfo => payload_len == 0,
        Request::MemcpyHtoD { .. } => payload_len as u64 <= INLINE_COPY_BYTES,
        Request::MemcpyDtoH { len, .. } => payload_len == 0 && *len <= INLINE_COPY_BYTES,
        _ => false,
    }
}

/// Whether a request's payload stays in the stream for the executor to read straight into
/// device memory: a host-to-device copy too large to run on the reader, on a TCP or Unix
/// socket. (A QUIC stream hands its data over a packet's worth at a time; read from the
/// executor's thread, each would cost a wake-up, so QUIC payloads are read on the reader.)
fn streams_to_device(stream: &RecvStream, request: &Request, payload_len: u64) -> bool {
    matches!(request, Request::MemcpyHtoD { .. })
        && payload_len > INLINE_COPY_BYTES
        && matches!(stream, RecvStream::Tcp(_) | RecvStream::Unix(_))
}

async fn read_requests(
    mut reader: FrameReader<RecvStream>,
    requests: &mpsc::Sender<Vec<Incoming>>,
    inline: &Inline<'_>,
) -> ReadEnd {
    let mut batch = Vec::new();
    loop {
        let incoming = match read_request(&mut reader, &inline.buffers).await {
            Ok(Frame::Read(incoming)) => incoming,
            Ok(Frame::PayloadInStream { id, kind, request }) => {
                // Lend the stream with the copy, after everything read before it, and read
                // on once the executor has read the payload.
                let (back, returned) = oneshot::channel();
                let lent = Box::new(LentReader { reader, back });
                inline.in_flight.fetch_add(1, Ordering::AcqRel);
                batch.push(Incoming {
                    id,
                    kind,
                    request,
                    payload: Body::InStream(lent),
                });
                if requests.send(std::mem::take(&mut batch)).await.is_err() {
                    return ReadEnd::ExecutorDone;
                }
                match returned.await {
                    Ok(ReturnedReader {
                        reader: given_back,
                        error: None,
                    }) => {
                        reader = given_back;
                        continue;
                    }
                    Ok(ReturnedReader { error: Some(e), .. }) => return read_end(e),
                    // The executor stopped before the copy (the session detached or was
                    // cancelled) and dropped the stream with it.
                    Err(_) => return ReadEnd::ExecutorDone,
                }
            }
            Err(end) => return end,
        };
        // A call may run on the reader only if nothing read before it waits in the batch.
        let incoming = if batch.is_empty() {
            match inline.try_run(incoming) {
                Inlined::Answered => continue,
                Inlined::ClientGone => return ReadEnd::Closed,
                Inlined::ForExecutor(incoming) => incoming,
            }
        } else {
            incoming
        };
        let carries_payload = !matches!(&incoming.payload, Body::Read(p) if p.is_empty());
        inline.in_flight.fetch_add(1, Ordering::AcqRel);
        batch.push(incoming);
        if !carries_payload && batch.len() < BATCH_MAX && reader.frame_buffered() {
            continue;
        }
        if requests.send(std::mem::take(&mut batch)).await.is_err() {
            return ReadEnd::ExecutorDone;
        }
    }
}

/// A frame as [`read_request`] read it.
enum Frame {
    /// A call or post with its payload read.
    Read(Incoming),
    /// A call or post whose payload is still in the stream (see [`streams_to_device`]).
    PayloadInStream {
        id: u64,
        kind: FrameKind,
        request: Request,
    },
}

/// How a stream error while reading a frame ends the session.
fn read_end(error: FrameError) -> ReadEnd {
    match error {
        FrameError::Closed => ReadEnd::Closed,
        e => ReadEnd::BadFrame(e),
    }
}

/// Reads one call or post with its payload (into a buffer from the session's pool), or
/// without it when the executor is to read it from the stream.
async fn read_request(
    reader: &mut FrameReader<RecvStream>,
    buffers: &Buffers,
) -> Result<Frame, ReadEnd> {
    let header = match reader.next_frame().await {
        Ok(Some(header)) => header,
        Ok(None) => return Err(ReadEnd::Closed),
        Err(e) => return Err(read_end(e)),
    };
    if !matches!(header.kind, FrameKind::Call | FrameKind::Post) {
        return Err(ReadEnd::BadFrame(FrameError::UnexpectedKind {
            expected: "a call or post",
            got: header.kind,
        }));
    }
    let request = reader.request().map_err(ReadEnd::BadFrame)?;
    if streams_to_device(reader.get_ref(), &request, reader.pending_payload()) {
        return Ok(Frame::PayloadInStream {
            id: header.id,
            kind: header.kind,
            request,
        });
    }
    let mut payload = match reader.pending_payload() {
        0 => Vec::new(),
        // Bounded by the frame limits, checked when the header was decoded.
        len => buffers.take_empty(len as usize),
    };
    reader
        .read_payload_into(&mut payload)
        .await
        .map_err(read_end)?;
    Ok(Frame::Read(Incoming {
        id: header.id,
        kind: header.kind,
        request,
        payload: Body::Read(payload),
    }))
}

/// What the executor needs to run a session's requests.
struct Executor<'a> {
    worker: &'a Worker,
    slot: &'a Slot,
    counters: Option<&'a SessionCounters>,
    buffers: &'a Buffers,
    /// The worker's runtime: the executor's blocking thread reads streamed payloads with it.
    runtime: &'a Handle,
}

impl Executor<'_> {
    /// Runs a session's requests in order until the stream ends, the client detaches or the
    /// session is cancelled. Returning drops the requests not run, and with them a stream
    /// lent with a copy, which tells the reader the executor is done.
    fn run(
        &self,
        mut requests: mpsc::Receiver<Vec<Incoming>>,
        replies: mpsc::UnboundedSender<(u64, CallReply)>,
        in_flight: &AtomicUsize,
    ) {
        while let Some(batch) = requests.blocking_recv() {
            for Incoming {
                id,
                kind,
                request,
                payload,
            } in batch
            {
                if self
                    .counters
                    .is_some_and(|c| c.cancel.load(Ordering::SeqCst))
                {
                    return;
                }
                let header = (id, kind, request);
                let (reply, detached) = match payload {
                    Body::Read(payload) => execute_read(
                        self.worker,
                        self.slot,
                        header,
                        payload,
                        self.counters,
                        self.buffers,
                    ),
                    Body::InStream(lent) => self.execute_streamed(header, *lent),
                };
                if let Some(reply) = reply
                    && replies.send((id, reply)).is_err()
                {
                    return;
                }
                // Release: the reply is queued before the reader may run a call itself.
                in_flight.fetch_sub(1, Ordering::Release);
                if detached {
                    return;
                }
            }
        }
    }

    /// Runs a host-to-device copy whose payload is still in the stream: the session reads it
    /// straight into device memory, then the stream goes back to the reader.
    fn execute_streamed(
        &self,
        (id, kind, request): (u64, FrameKind, Request),
        lent: LentReader,
    ) -> (Option<CallReply>, bool) {
        let LentReader { mut reader, back } = lent;
        let len = reader.pending_payload();
        let mut stream_error = None;
        let mut fill = |dst: &mut [u8]| {
            // A blocking thread, not one of the runtime's: it may wait on the runtime here.
            self.runtime
                .block_on(reader.read_payload(dst))
                .map_err(|e| {
                    let error = DeviceError::new(
                        CuResult::ERROR_UNKNOWN,
                        format!("the copy's data did not arrive: {e}"),
                    );
                    stream_error = Some(e);
                    error
                })
        };
        let payload = Payload::Stream {
            len,
            fill: &mut fill,
        };
        let (reply, detached, resident) = self
            .worker
            .shared
            .swapper
            .execute(self.slot, id, kind, request, payload);
        // The reader waits for the stream; it is gone only if the session is ending anyway.
        let _ = back.send(ReturnedReader {
            reader,
            error: stream_error,
        });
        count_usage(self.worker, self.counters, len, reply.as_ref(), resident);
        (reply, detached)
    }
}

/// Runs one request whose payload was read; the payload buffer goes back to the pool.
/// Returns the reply (for a call) and whether the session detached.
fn execute_read(
    worker: &Worker,
    slot: &Slot,
    (id, kind, request): (u64, FrameKind, Request),
    payload: Vec<u8>,
    counters: Option<&SessionCounters>,
    buffers: &Buffers,
) -> (Option<CallReply>, bool) {
    let (reply, detached, resident) =
        worker
            .shared
            .swapper
            .execute(slot, id, kind, request, Payload::Bytes(&payload));
    let moved = payload.len() as u64;
    buffers.give_back(payload);
    count_usage(worker, counters, moved, reply.as_ref(), resident);
    (reply, detached)
}

/// Counts a request's bytes (`payload` in, the reply's data out) and the session's
/// resident memory in its usage.
fn count_usage(
    worker: &Worker,
    counters: Option<&SessionCounters>,
    payload: u64,
    reply: Option<&CallReply>,
    resident: u64,
) {
    if let Some(c) = counters {
        let moved = payload + reply.map_or(0, |r| r.data.len() as u64);
        c.bytes_moved.fetch_add(moved, Ordering::Relaxed);
        c.used_bytes.store(resident, Ordering::Relaxed);
        c.last_call_ms
            .store(worker.shared.sessions.now_ms(), Ordering::Relaxed);
    }
}

async fn write_replies(
    mut writer: FrameWriter<SendStream>,
    mut replies: mpsc::UnboundedReceiver<(u64, CallReply)>,
    buffers: Arc<Buffers>,
) {
    while let Some((id, reply)) = replies.recv().await {
        let parts: [&[u8]; 2] = [&reply.data, &reply.printf];
        let written = match writer.write_reply(id, &reply.message, &parts).await {
            Ok(()) => writer.flush().await,
            Err(e) => Err(e),
        };
        buffers.give_back(reply.data);
        if let Err(e) = written {
            tracing::debug!("could not send a reply, the client is gone: {e}");
            return;
        }
    }
    let mut send = writer.into_inner();
    let _ = send.finish().await;
}

async fn write_reply(
    writer: &mut FrameWriter<SendStream>,
    id: u64,
    message: ReplyMessage,
) -> Result<(), FrameError> {
    writer.write_reply(id, &message, &[]).await?;
    writer.flush().await
}

/// Answers a refused handshake and ends the stream.
async fn refuse(
    writer: &mut FrameWriter<SendStream>,
    id: u64,
    error: CallError,
) -> Result<(), FrameError> {
    let message = ReplyMessage {
        deferred: Vec::new(),
        result: Err(error),
        printf_bytes: 0,
    };
    write_reply(writer, id, message).await
}

fn ok_reply(reply: Reply) -> ReplyMessage {
    ReplyMessage {
        deferred: Vec::new(),
        result: Ok(reply),
        printf_bytes: 0,
    }
}

fn call_error(code: CuResult, message: impl Into<String>) -> CallError {
    CallError {
        code,
        message: message.into(),
    }
}
