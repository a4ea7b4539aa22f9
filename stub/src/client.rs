//! The connection to the worker: connect and handshake, synchronous calls, batched posts.
//!
//! One current-thread tokio runtime drives the connection's I/O: the calling thread during
//! a call, and for QUIC a background thread (`gpufn-stub-io`) between calls (see
//! [`crate::driver`] and [`needs_background`]). Driver calls from any program thread take
//! the connection lock, append their frame to the outgoing batch and, for calls, write the
//! batch and wait for the reply on the runtime. Posts (launches, host-to-device copies, memsets, frees, stream and event
//! work) only append to the batch: they cost no round trip and are written with the next
//! call, or when the batch grows past [`BATCH_LIMIT`]. The worker executes frames in order,
//! so CUDA's ordering holds; errors of posts come back with the next reply.

use crate::driver::Driver;
use gpufn_proto::CuResult;
use gpufn_proto::frame::{
    FrameHeader, FrameKind, FrameLimits, FrameReader, HEADER_LEN, encode_message,
};
use gpufn_proto::message::{
    Channel, Credentials, DeviceProperties, Hello, MemoryRange, PROTOCOL_VERSION, Reply, Request,
    Role, SessionId,
};
use gpufn_proto::transport::{self, Address, ClientOptions, Connection, RecvStream, SendStream};
use std::io::Write;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Posts are written once this many bytes are waiting.
pub const BATCH_LIMIT: usize = 1 << 20;

/// Copies are split into frames of this many bytes, so the worker stores (or reads) one
/// chunk while the next crosses the network, and its buffers stay small enough for the
/// allocator to reuse instead of mapping fresh pages for every frame.
pub const COPY_CHUNK: usize = 4 << 20;

/// Payloads at least this large are written straight from the program's memory, before the
/// post returns, instead of being copied into the batch.
const DIRECT_PAYLOAD: usize = 64 << 10;

/// A call with at least this many bytes to send or receive leaves the driving to whichever
/// thread already drives the connection (the background thread, for QUIC), so the transport
/// runs on one thread while the caller copies on another. Smaller calls are driven by the
/// calling thread, so their reply wakes it directly.
const BULK: usize = 64 << 10;

/// The error every call returns once the worker is gone.
pub const LOST: CuResult = CuResult::ERROR_DEVICE_UNAVAILABLE;

/// A live session with a worker.
pub struct Session {
    driver: Driver,
    conn: Mutex<Conn>,
    pub address: String,
    pub session: SessionId,
    pub memory: Option<MemoryRange>,
    pub devices: Vec<DeviceProperties>,
    /// The process that connected; a forked child must not use the connection.
    pid: u32,
}

struct Conn {
    _connection: Connection,
    send: SendStream,
    reader: FrameReader<RecvStream>,
    batch: Vec<u8>,
    next_id: u64,
    /// Why the connection is unusable, once it is.
    lost: Option<String>,
    /// The first error of a post not yet reported to the program.
    deferred: Option<CuResult>,
    /// The worker's address, for messages.
    address: String,
    /// Device-to-host copies sent as calls whose replies are read later, in order.
    pending_reads: std::collections::VecDeque<PendingRead>,
    /// At least [`BULK`] bytes were written since the last reply.
    bulk_unanswered: bool,
}

/// An asynchronous device-to-host copy awaiting its reply.
struct PendingRead {
    id: u64,
    /// Destination address in the program (kept as an integer; written when the reply comes).
    dst: usize,
    len: usize,
}

/// Where to send the payload of a reply.
pub enum ReplyData<'a> {
    None,
    Into(&'a mut [u8]),
}

static SESSION: OnceLock<Result<Session, CuResult>> = OnceLock::new();

/// The session, connecting on first use (at `cuInit`). A failure is printed once, naming the
/// address and the fix, and then returned to every call.
pub fn session() -> Result<&'static Session, CuResult> {
    let session = SESSION
        .get_or_init(|| {
            Session::open().map_err(|message| {
                crate::log::error(&message);
                CuResult::ERROR_NO_DEVICE
            })
        })
        .as_ref()
        .map_err(|e| *e)?;
    if session.pid != std::process::id() {
        return Err(CuResult::ERROR_NOT_INITIALIZED);
    }
    Ok(session)
}

/// The session if it is already open, without connecting.
pub fn existing_session() -> Option<&'static Session> {
    SESSION.get().and_then(|s| s.as_ref().ok())
}

impl Session {
    /// Connects to `GPUFN_WORKER` and performs the handshake. (The gateway path, which first
    /// asks `GPUFN_GATEWAY` for a worker, replaces only this function.)
    fn open() -> Result<Session, String> {
        let address_text = std::env::var("GPUFN_WORKER").map_err(|_| {
            "GPUFN_WORKER is not set, so there is no worker to send CUDA calls to: run the \
             program with `gpufn run -- PROGRAM`, or set GPUFN_WORKER to a worker's address \
             (e.g. unix:///tmp/gpufn/worker.sock)"
                .to_string()
        })?;
        let address: Address = address_text
            .parse()
            .map_err(|e| format!("GPUFN_WORKER: {e}"))?;
        let credentials = match std::env::var("GPUFN_TICKET") {
            Ok(ticket) if !ticket.is_empty() => Credentials::Ticket(ticket),
            _ => Credentials::None,
        };
        let mut driver =
            Driver::new().map_err(|e| format!("cannot start the stub's I/O runtime: {e}"))?;
        let options = ClientOptions {
            connect_timeout: Duration::from_secs(10),
            ..ClientOptions::default()
        };
        let cannot_reach = |e: &dyn std::fmt::Display| {
            format!("cannot reach the worker at {address_text} (GPUFN_WORKER): {e}")
        };
        let (connection, send, recv) = driver
            .block_on(async {
                let connection = transport::connect(&address, &options).await?;
                let (send, recv) = connection.open_stream().await?;
                Ok::<_, transport::TransportError>((connection, send, recv))
            })
            .map_err(|e| cannot_reach(&e))?;
        let mut conn = Conn {
            _connection: connection,
            send,
            reader: FrameReader::new(recv, FrameLimits::default()),
            batch: Vec::with_capacity(64 << 10),
            next_id: 1,
            lost: None,
            deferred: None,
            address: address_text.clone(),
            pending_reads: std::collections::VecDeque::new(),
            bulk_unanswered: false,
        };
        let hello = Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            role: Role::Stub,
            channel: Channel::Calls,
            credentials,
            session: None,
            client: client_description(),
        });
        let welcome = match conn.call(&driver, &hello, &[], ReplyData::None) {
            Ok(Reply::Welcome(welcome)) => welcome,
            Ok(other) => return Err(cannot_reach(&format!("unexpected answer {other:?}"))),
            Err(_) => {
                let why = conn.lost.clone().unwrap_or_else(|| "refused".into());
                return Err(format!(
                    "the worker at {address_text} refused the session: {why}"
                ));
            }
        };
        let count = match conn.call(&driver, &Request::DeviceGetCount, &[], ReplyData::None) {
            Ok(Reply::Count(n)) => n,
            other => {
                return Err(format!(
                    "worker at {address_text}: device count failed: {other:?}"
                ));
            }
        };
        let mut devices = Vec::new();
        for device in 0..count {
            match conn.call(
                &driver,
                &Request::DeviceGetProperties { device },
                &[],
                ReplyData::None,
            ) {
                Ok(Reply::Device(props)) => devices.push(*props),
                other => {
                    return Err(format!(
                        "worker at {address_text}: properties of device {device} failed: {other:?}"
                    ));
                }
            }
        }
        if needs_background(&address) {
            driver
                .start_background("gpufn-stub-io")
                .map_err(|e| format!("cannot start the stub's I/O thread: {e}"))?;
        }
        crate::log::debug(|| {
            format!(
                "connected to {address_text}: session {}, {count} device(s), memory {:?}",
                welcome.session.0, welcome.memory
            )
        });
        Ok(Session {
            driver,
            conn: Mutex::new(conn),
            address: address_text,
            session: welcome.session,
            memory: welcome.memory,
            devices,
            pid: std::process::id(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        // A panic while holding the lock leaves the batch consistent (frames are appended
        // whole), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `request` and waits for its reply. Errors of earlier posts take precedence over
    /// the call's own result, as CUDA reports asynchronous errors at the next call.
    pub fn call(
        &self,
        request: &Request,
        payload: &[&[u8]],
        data: ReplyData<'_>,
    ) -> Result<Reply, CuResult> {
        let mut conn = self.lock();
        let _turn = conn
            .drive_myself(payload, &data)
            .then(|| self.driver.enter());
        let result = conn.call(&self.driver, request, payload, data);
        if let Some(error) = conn.deferred.take() {
            return Err(error);
        }
        if conn.lost.is_some() {
            return Err(LOST);
        }
        result
    }

    /// Queues `request` without waiting for an answer.
    pub fn post(&self, request: &Request, payload: &[&[u8]]) -> Result<(), CuResult> {
        let mut conn = self.lock();
        if conn.lost.is_some() {
            return Err(LOST);
        }
        let payload_len: usize = payload.iter().map(|p| p.len()).sum();
        if payload_len >= DIRECT_PAYLOAD {
            conn.append_header(FrameKind::Post, request, payload_len as u64);
            conn.flush_with(&self.driver, payload);
            self.driver.queued();
        } else {
            conn.append(FrameKind::Post, request, payload);
            if conn.batch.len() >= BATCH_LIMIT {
                conn.flush(&self.driver);
                self.driver.queued();
            }
        }
        match conn.lost {
            Some(_) => Err(LOST),
            None => Ok(()),
        }
    }

    /// Sends a device-to-host copy without waiting: its reply is read (into `dst`) while
    /// waiting for a later call, e.g. the synchronisation the program must make before it
    /// reads `dst`.
    ///
    /// # Safety
    /// `dst` must stay valid for `len` bytes of writes until the program's next synchronising
    /// call returns, as CUDA requires of asynchronous copies.
    pub unsafe fn call_deferred(
        &self,
        request: &Request,
        dst: *mut u8,
        len: usize,
    ) -> Result<(), CuResult> {
        let mut conn = self.lock();
        if conn.lost.is_some() {
            return Err(LOST);
        }
        let id = conn.append(FrameKind::Call, request, &[]);
        conn.pending_reads.push_back(PendingRead {
            id,
            dst: dst as usize,
            len,
        });
        if conn.batch.len() >= BATCH_LIMIT {
            conn.flush(&self.driver);
            self.driver.queued();
        }
        match conn.lost {
            Some(_) => Err(LOST),
            None => Ok(()),
        }
    }

    /// Waits until at most `keep` deferred device-to-host copies are unanswered (their
    /// data in place), so that a long copy keeps a window of chunk requests in flight
    /// instead of stopping at the end of each window. Errors they report, and any earlier
    /// post's, are returned.
    pub fn complete_reads(&self, keep: usize) -> Result<(), CuResult> {
        let mut conn = self.lock();
        let _turn = conn
            .drive_myself(&[], &ReplyData::None)
            .then(|| self.driver.enter());
        conn.complete_reads(&self.driver, keep);
        if let Some(error) = conn.deferred.take() {
            return Err(error);
        }
        match conn.lost {
            Some(_) => Err(LOST),
            None => Ok(()),
        }
    }

    /// Writes all queued posts now (before the program blocks on something else, e.g. a
    /// host callback).
    pub fn flush(&self) {
        if self.lock().flush(&self.driver) {
            self.driver.queued();
        }
    }
}

impl Conn {
    /// Whether a call should drive the connection on the calling thread (see [`BULK`]).
    fn drive_myself(&self, payload: &[&[u8]], data: &ReplyData<'_>) -> bool {
        let sending: usize = payload.iter().map(|p| p.len()).sum();
        let own_reply = match data {
            ReplyData::None => 0,
            ReplyData::Into(dst) => dst.len(),
        };
        let deferred: usize = self.pending_reads.iter().map(|p| p.len).sum();
        !self.bulk_unanswered && sending < BULK && own_reply + deferred < BULK
    }

    /// Appends a whole frame (header, message, payload) to the batch.
    fn append(&mut self, kind: FrameKind, request: &Request, payload: &[&[u8]]) -> u64 {
        let payload_len = payload.iter().map(|p| p.len() as u64).sum();
        let id = self.append_header(kind, request, payload_len);
        for part in payload {
            self.batch.extend_from_slice(part);
        }
        id
    }

    /// Appends a frame's header and message; its `payload_len` bytes of payload must follow.
    fn append_header(&mut self, kind: FrameKind, request: &Request, payload_len: u64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let start = self.batch.len();
        self.batch.resize(start + HEADER_LEN, 0);
        if let Err(e) = encode_message(request, &mut self.batch) {
            // Encoding a request cannot fail for well-formed values; treat it as fatal.
            self.batch.truncate(start);
            self.lose(format!("cannot encode a request: {e}"));
            return id;
        }
        let message_len = (self.batch.len() - start - HEADER_LEN) as u32;
        let header = FrameHeader {
            kind,
            message_len,
            payload_len,
            id,
        };
        self.batch[start..start + HEADER_LEN].copy_from_slice(&header.encode());
        id
    }

    /// Writes the batch; returns whether there was anything to write.
    fn flush(&mut self, driver: &Driver) -> bool {
        if self.batch.is_empty() {
            return false;
        }
        self.flush_with(driver, &[]);
        true
    }

    /// Writes the batch followed by `tail` (the payload of the batch's last frame, written
    /// from the program's memory without a copy).
    fn flush_with(&mut self, driver: &Driver, tail: &[&[u8]]) {
        if self.lost.is_some() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let bytes = batch.len() + tail.iter().map(|p| p.len()).sum::<usize>();
        self.bulk_unanswered |= bytes >= BULK;
        let written = driver.block_on(async {
            self.send.write_all(&batch).await?;
            for part in tail {
                self.send.write_all(part).await?;
            }
            self.send.flush().await
        });
        self.batch = batch;
        self.batch.clear();
        if let Err(e) = written {
            self.lose(format!("cannot send: {e}"));
        }
    }

    fn call(
        &mut self,
        driver: &Driver,
        request: &Request,
        payload: &[&[u8]],
        mut data: ReplyData<'_>,
    ) -> Result<Reply, CuResult> {
        if self.lost.is_some() {
            return Err(LOST);
        }
        let id = self.append(FrameKind::Call, request, payload);
        self.flush(driver);
        if self.lost.is_some() {
            return Err(LOST);
        }
        let received = driver.block_on(async {
            loop {
                let Some(header) = self.reader.next_frame().await? else {
                    return Err(gpufn_proto::FrameError::Closed);
                };
                if header.kind != FrameKind::Reply {
                    continue;
                }
                if header.id == id {
                    return self.read_reply(header, &mut data).await;
                }
                // Replies come in order: an earlier one belongs to a deferred read.
                self.land_deferred_read(header).await?;
            }
        });
        let message = match received {
            // The reply follows everything written before the call on the same stream, so
            // the worker has received it all.
            Ok(message) => {
                self.bulk_unanswered = false;
                message
            }
            Err(e) => {
                self.lose(format!("cannot receive: {e}"));
                return Err(LOST);
            }
        };
        self.note_deferred(&message);
        message.result.map_err(|e| {
            crate::log::debug(|| format!("worker: {} ({})", e.code, e.message));
            if matches!(request, Request::Hello(_)) {
                self.lost = Some(e.message.clone());
            }
            e.code
        })
    }

    /// Reads replies until at most `keep` deferred reads are still unanswered.
    fn complete_reads(&mut self, driver: &Driver, keep: usize) {
        if self.pending_reads.len() <= keep || self.lost.is_some() {
            return;
        }
        self.flush(driver);
        let received = driver.block_on(async {
            while self.pending_reads.len() > keep && self.lost.is_none() {
                let Some(header) = self.reader.next_frame().await? else {
                    return Err(gpufn_proto::FrameError::Closed);
                };
                if header.kind == FrameKind::Reply {
                    self.land_deferred_read(header).await?;
                }
            }
            Ok(())
        });
        if let Err(e) = received {
            self.lose(format!("cannot receive: {e}"));
        }
    }

    /// If `header` answers the oldest deferred read, reads its data into place (an error it
    /// reports is kept for the program's next call). Other replies are skipped.
    async fn land_deferred_read(
        &mut self,
        header: gpufn_proto::FrameHeader,
    ) -> Result<(), gpufn_proto::FrameError> {
        if self.pending_reads.front().is_none_or(|p| p.id != header.id) {
            return Ok(());
        }
        let pending = self.pending_reads.pop_front().expect("checked above");
        // SAFETY: the program promised `len` writable bytes at `dst` that stay valid until
        // it synchronises, which happens no earlier than this reply.
        let dst = unsafe { std::slice::from_raw_parts_mut(pending.dst as *mut u8, pending.len) };
        let message = self.read_reply(header, &mut ReplyData::Into(dst)).await?;
        if let Err(e) = &message.result {
            self.deferred.get_or_insert(e.code);
        }
        self.note_deferred(&message);
        Ok(())
    }

    /// Reads the rest of a reply frame: its own payload into `data`, kernel printf output to
    /// stdout.
    async fn read_reply(
        &mut self,
        header: gpufn_proto::FrameHeader,
        data: &mut ReplyData<'_>,
    ) -> Result<gpufn_proto::ReplyMessage, gpufn_proto::FrameError> {
        let message = self.reader.reply()?;
        let printf = u64::from(message.printf_bytes);
        let own = header.payload_len.saturating_sub(printf);
        if let (Ok(_), ReplyData::Into(dst)) = (&message.result, data) {
            let n = (own as usize).min(dst.len());
            self.reader.read_payload(&mut dst[..n]).await?;
        }
        let skip = self.reader.pending_payload().saturating_sub(printf);
        if skip > 0 {
            let mut sink = vec![0u8; skip as usize];
            self.reader.read_payload(&mut sink).await?;
        }
        if self.reader.pending_payload() > 0 {
            let printed = self.reader.read_payload_vec().await?;
            let mut stdout = std::io::stdout();
            let _ = stdout.write_all(&printed);
            let _ = stdout.flush();
        }
        Ok(message)
    }

    /// Remembers the first error of earlier posts that a reply reports.
    fn note_deferred(&mut self, message: &gpufn_proto::ReplyMessage) {
        for deferred in &message.deferred {
            crate::log::debug(|| {
                format!(
                    "asynchronous request {} failed: {} ({})",
                    deferred.request, deferred.error.code, deferred.error.message
                )
            });
            self.deferred.get_or_insert(deferred.error.code);
        }
    }

    fn lose(&mut self, why: String) {
        if self.lost.is_none() {
            crate::log::error(&format!(
                "lost the worker at {}: {why}; every further CUDA call of this program fails \
                 with CUDA_ERROR_DEVICE_UNAVAILABLE (did the worker stop or get killed?)",
                self.address
            ));
            self.lost = Some(why);
            self.pending_reads.clear();
        }
    }
}

/// Whether the connection needs driving between calls. The thread that makes a call always
/// drives it during the call, so its reply wakes that thread directly. QUIC also needs work
/// between calls (ACKs, keep-alives, sending queued posts) even while the program computes,
/// so it gets a background thread (`gpufn-stub-io`) for that; a TCP or Unix socket needs
/// nothing between calls.
fn needs_background(address: &Address) -> bool {
    matches!(address, Address::Quic { .. })
}

fn client_description() -> String {
    let program = std::env::args().next().unwrap_or_default();
    format!(
        "gpufn-stub/{} pid={} {program}",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    )
}
