//! Framing: a fixed 24-byte header, then the encoded message, then raw payload bytes.
//!
//! ```text
//! offset  size  field
//!      0     2  magic "GF"
//!      2     1  kind (1 call, 2 post, 3 reply, 4 bulk)
//!      3     1  flags (none defined yet; must be 0)
//!      4     4  message length, little-endian u32
//!      8     8  payload length, little-endian u64
//!     16     8  request id, little-endian u64
//! ```
//!
//! The message is encoded with postcard (see `docs/BENCHMARKS.md`, "Message encoding", for
//! the measurement behind that choice). The payload is never serialized: writers hand it to
//! the stream as it is, and readers read it straight into the caller's destination buffer.
//!
//! The pure functions ([`FrameHeader::encode`], [`FrameHeader::decode`], [`encode_message`],
//! [`decode_request`], [`decode_reply`]) hold all the validation and are what the property
//! tests and the fuzz target exercise; [`FrameReader`] and [`FrameWriter`] only move bytes.

use crate::message::{ReplyMessage, Request};
use serde::Serialize;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 24;

const MAGIC: [u8; 2] = *b"GF";

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A request whose sender waits for a [`FrameKind::Reply`] with the same id.
    Call,
    /// A request that gets no reply; its error, if any, is reported as a
    /// [`crate::message::DeferredError`] with the next reply.
    Post,
    /// The answer to a call.
    Reply,
    /// Raw bulk data (no message), referenced by its id from a call on another stream.
    Bulk,
}

impl FrameKind {
    fn to_byte(self) -> u8 {
        match self {
            FrameKind::Call => 1,
            FrameKind::Post => 2,
            FrameKind::Reply => 3,
            FrameKind::Bulk => 4,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(FrameKind::Call),
            2 => Some(FrameKind::Post),
            3 => Some(FrameKind::Reply),
            4 => Some(FrameKind::Bulk),
            _ => None,
        }
    }
}

/// Upper bounds a reader enforces before it allocates anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest encoded message accepted, in bytes.
    pub max_message: u32,
    /// Largest payload accepted, in bytes. Larger copies are split into several frames.
    pub max_payload: u64,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_message: 16 << 20,
            max_payload: 256 << 20,
        }
    }
}

/// The decoded fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    pub message_len: u32,
    pub payload_len: u64,
    pub id: u64,
}

/// Why bytes could not be read as a frame, or a frame could not be written.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("not a gpufn frame (magic {0:02x?}): is the peer speaking the gpufn protocol?")]
    BadMagic([u8; 2]),
    #[error("unknown frame kind {0}: the peer may run a newer gpufn version")]
    UnknownKind(u8),
    #[error("unknown frame flags {0:#04x}: the peer may run a newer gpufn version")]
    UnknownFlags(u8),
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge { len: u64, limit: u32 },
    #[error("payload of {len} bytes exceeds the limit of {limit} bytes; split large copies")]
    PayloadTooLarge { len: u64, limit: u64 },
    #[error("a bulk frame must not carry a message ({0} bytes found)")]
    BulkWithMessage(u32),
    #[error("a {0:?} frame must carry a message")]
    MissingMessage(FrameKind),
    #[error("expected a {expected} frame, got {got:?}")]
    UnexpectedKind {
        expected: &'static str,
        got: FrameKind,
    },
    #[error("payload destination holds {have} bytes but the frame carries {need}")]
    PayloadSizeMismatch { have: u64, need: u64 },
    #[error("malformed message: {0}")]
    Decode(#[from] postcard::Error),
    #[error("message has {0} trailing bytes after its end")]
    TrailingBytes(usize),
    #[error("connection closed by the peer")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameHeader {
    /// Encodes the header into its fixed 24 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..2].copy_from_slice(&MAGIC);
        out[2] = self.kind.to_byte();
        out[3] = 0;
        out[4..8].copy_from_slice(&self.message_len.to_le_bytes());
        out[8..16].copy_from_slice(&self.payload_len.to_le_bytes());
        out[16..24].copy_from_slice(&self.id.to_le_bytes());
        out
    }

    /// Decodes and validates a header against `limits`. Nothing is allocated.
    pub fn decode(bytes: &[u8; HEADER_LEN], limits: &FrameLimits) -> Result<Self, FrameError> {
        let magic = [bytes[0], bytes[1]];
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        let kind = FrameKind::from_byte(bytes[2]).ok_or(FrameError::UnknownKind(bytes[2]))?;
        if bytes[3] != 0 {
            return Err(FrameError::UnknownFlags(bytes[3]));
        }
        let message_len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let payload_len = u64::from_le_bytes(le8(&bytes[8..16]));
        let id = u64::from_le_bytes(le8(&bytes[16..24]));
        let header = FrameHeader {
            kind,
            message_len,
            payload_len,
            id,
        };
        header.check(limits)?;
        Ok(header)
    }

    fn check(&self, limits: &FrameLimits) -> Result<(), FrameError> {
        if self.message_len > limits.max_message {
            return Err(FrameError::MessageTooLarge {
                len: self.message_len.into(),
                limit: limits.max_message,
            });
        }
        if self.payload_len > limits.max_payload {
            return Err(FrameError::PayloadTooLarge {
                len: self.payload_len,
                limit: limits.max_payload,
            });
        }
        match (self.kind, self.message_len) {
            (FrameKind::Bulk, 0) => Ok(()),
            (FrameKind::Bulk, len) => Err(FrameError::BulkWithMessage(len)),
            (kind, 0) => Err(FrameError::MissingMessage(kind)),
            _ => Ok(()),
        }
    }
}

fn le8(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(bytes);
    out
}

/// Encodes a message body (a [`Request`] or a [`ReplyMessage`]), appending to `out`.
pub fn encode_message<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    // postcard appends to the vector it is given, so the buffer is reused across frames.
    let taken = std::mem::take(out);
    *out = postcard::to_extend(message, taken)?;
    Ok(())
}

/// Decodes a request message. Fails on malformed input and on trailing bytes; never panics.
pub fn decode_request(bytes: &[u8]) -> Result<Request, FrameError> {
    decode_exact(bytes)
}

/// Decodes a reply message. Fails on malformed input and on trailing bytes; never panics.
pub fn decode_reply(bytes: &[u8]) -> Result<ReplyMessage, FrameError> {
    decode_exact(bytes)
}

fn decode_exact<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, FrameError> {
    let (value, rest) = postcard::take_from_bytes(bytes)?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// Reads frames from a byte stream, reusing one buffer for messages.
///
/// The stream is read through a small buffer so that header and message of a small frame
/// cost one read system call, not three; payload reads larger than that buffer go straight
/// from the stream into the caller's destination.
pub struct FrameReader<R> {
    inner: BufReader<R>,
    limits: FrameLimits,
    message: Vec<u8>,
    /// Payload bytes of the current frame not yet consumed by the caller.
    pending_payload: u64,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, limits: FrameLimits) -> Self {
        FrameReader {
            inner: BufReader::with_capacity(16 << 10, inner),
            limits,
            message: Vec::new(),
            pending_payload: 0,
        }
    }

    /// Reads the next frame's header and message bytes. The payload stays in the stream
    /// until [`Self::read_payload`] or [`Self::skip_payload`]; an unconsumed payload is
    /// skipped automatically before the next frame. Returns `Ok(None)` on a clean end of
    /// stream between frames.
    pub async fn next_frame(&mut self) -> Result<Option<FrameHeader>, FrameError> {
        self.skip_payload().await?;
        let mut raw = [0u8; HEADER_LEN];
        match self.inner.read(&mut raw[..1]).await? {
            0 => return Ok(None),
            _ => self.read_exact(&mut raw[1..]).await?,
        }
        let header = FrameHeader::decode(&raw, &self.limits)?;
        self.message.clear();
        // Bounded by `limits.max_message`, checked in `decode`.
        self.message.resize(header.message_len as usize, 0);
        let mut message = std::mem::take(&mut self.message);
        let read = self.read_exact(&mut message).await;
        self.message = message;
        read?;
        self.pending_payload = header.payload_len;
        Ok(Some(header))
    }

    /// The message bytes of the current frame.
    pub fn message_bytes(&self) -> &[u8] {
        &self.message
    }

    /// Decodes the current frame's message as a request.
    pub fn request(&self) -> Result<Request, FrameError> {
        decode_request(&self.message)
    }

    /// Decodes the current frame's message as a reply.
    pub fn reply(&self) -> Result<ReplyMessage, FrameError> {
        decode_reply(&self.message)
    }

    /// Whether the next frame can be read whole (header, message and payload) without waiting
    /// for the stream: it is already buffered, or the header there is invalid, which
    /// [`Self::next_frame`] reports at once. A reader uses this to hand several small frames
    /// on together instead of one at a time.
    pub fn frame_buffered(&self) -> bool {
        if self.pending_payload != 0 {
            return false;
        }
        let buffered = self.inner.buffer();
        let Some(raw) = buffered.first_chunk::<HEADER_LEN>() else {
            return false;
        };
        match FrameHeader::decode(raw, &self.limits) {
            Ok(header) => {
                (buffered.len() - HEADER_LEN) as u64
                    >= u64::from(header.message_len) + header.payload_len
            }
            Err(_) => true,
        }
    }

    /// Payload bytes of the current frame not yet read.
    pub fn pending_payload(&self) -> u64 {
        self.pending_payload
    }

    /// Reads exactly `dst.len()` payload bytes into `dst`: the one copy from the stream to
    /// its destination. May be called several times to scatter one payload.
    pub async fn read_payload(&mut self, dst: &mut [u8]) -> Result<(), FrameError> {
        let need = dst.len() as u64;
        if need > self.pending_payload {
            return Err(FrameError::PayloadSizeMismatch {
                have: need,
                need: self.pending_payload,
            });
        }
        self.read_exact(dst).await?;
        self.pending_payload -= need;
        Ok(())
    }

    /// Reads the whole remaining payload into a new vector (bounded by the frame limits).
    pub async fn read_payload_vec(&mut self) -> Result<Vec<u8>, FrameError> {
        let mut buf = Vec::new();
        self.read_payload_into(&mut buf).await?;
        Ok(buf)
    }

    /// Appends the whole remaining payload to `buf` (bounded by the frame limits), e.g. a
    /// buffer kept from an earlier frame.
    pub async fn read_payload_into(&mut self, buf: &mut Vec<u8>) -> Result<(), FrameError> {
        // Bounded by `limits.max_payload`, checked when the header was decoded. Reads go
        // into the vector's spare capacity: no memset over bytes about to be overwritten.
        let end = buf.len() + self.pending_payload as usize;
        buf.reserve_exact(self.pending_payload as usize);
        while buf.len() < end {
            let missing = (end - buf.len()) as u64;
            let read = (&mut self.inner).take(missing).read_buf(buf).await?;
            if read == 0 {
                return Err(FrameError::Closed);
            }
            self.pending_payload -= read as u64;
        }
        Ok(())
    }

    /// Discards the rest of the current frame's payload.
    pub async fn skip_payload(&mut self) -> Result<(), FrameError> {
        if self.pending_payload == 0 {
            return Ok(());
        }
        let mut sink = tokio::io::sink();
        let mut limited = (&mut self.inner).take(self.pending_payload);
        let copied = tokio::io::copy(&mut limited, &mut sink).await?;
        if copied != self.pending_payload {
            return Err(FrameError::Closed);
        }
        self.pending_payload = 0;
        Ok(())
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), FrameError> {
        match self.inner.read_exact(buf).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Closed),
            Err(e) => Err(FrameError::Io(e)),
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &R {
        self.inner.get_ref()
    }

    /// Gives back the underlying stream. Bytes already buffered but not yet read are lost,
    /// so call this only at a frame boundary of a stream that carries nothing more.
    pub fn into_inner(self) -> R {
        self.inner.into_inner()
    }
}

/// Writes frames to a byte stream, reusing one buffer for header and message.
pub struct FrameWriter<W> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        FrameWriter {
            inner,
            buf: Vec::with_capacity(256),
        }
    }

    /// Writes a call (the caller waits for a reply with the same id) or a post.
    pub async fn write_request(
        &mut self,
        kind: FrameKind,
        id: u64,
        request: &Request,
        payload: &[&[u8]],
    ) -> Result<(), FrameError> {
        if !matches!(kind, FrameKind::Call | FrameKind::Post) {
            return Err(FrameError::UnexpectedKind {
                expected: "call or post",
                got: kind,
            });
        }
        self.write_frame(kind, id, Some(request), payload).await
    }

    /// Writes the reply to call `id`. `payload` parts are written back to back.
    pub async fn write_reply(
        &mut self,
        id: u64,
        reply: &ReplyMessage,
        payload: &[&[u8]],
    ) -> Result<(), FrameError> {
        self.write_frame(FrameKind::Reply, id, Some(reply), payload)
            .await
    }

    /// Writes raw bulk data tagged with `id`.
    pub async fn write_bulk(&mut self, id: u64, data: &[u8]) -> Result<(), FrameError> {
        self.write_frame::<()>(FrameKind::Bulk, id, None, &[data])
            .await
    }

    async fn write_frame<T: Serialize>(
        &mut self,
        kind: FrameKind,
        id: u64,
        message: Option<&T>,
        payload: &[&[u8]],
    ) -> Result<(), FrameError> {
        self.buf.clear();
        self.buf.resize(HEADER_LEN, 0);
        if let Some(message) = message {
            encode_message(message, &mut self.buf)?;
        }
        let message_len = self.buf.len() - HEADER_LEN;
        let header = FrameHeader {
            kind,
            message_len: u32::try_from(message_len).map_err(|_| FrameError::MessageTooLarge {
                len: message_len as u64,
                limit: u32::MAX,
            })?,
            payload_len: payload.iter().map(|p| p.len() as u64).sum(),
            id,
        };
        self.buf[..HEADER_LEN].copy_from_slice(&header.encode());
        // Small payloads ride in the same write as the header (one syscall / one QUIC
        // chunk); large ones go to the stream as they are, without a copy.
        if header.payload_len <= 4096 {
            for part in payload {
                self.buf.extend_from_slice(part);
            }
            self.inner.write_all(&self.buf).await?;
        } else {
            self.inner.write_all(&self.buf).await?;
            for part in payload {
                self.inner.write_all(part).await?;
            }
        }
        Ok(())
    }

    /// Flushes buffered bytes to the peer.
    pub async fn flush(&mut self) -> Result<(), FrameError> {
        self.inner.flush().await?;
        Ok(())
    }

    /// Gives back the underlying stream.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// The decoded message of a frame held entirely in memory.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameBody {
    Request(Request),
    Reply(ReplyMessage),
    Bulk,
}

/// Decodes one complete frame from `bytes`: header, message, and the payload slice. The
/// in-memory counterpart of [`FrameReader`], used by tests and the fuzz target.
pub fn decode_frame<'a>(
    bytes: &'a [u8],
    limits: &FrameLimits,
) -> Result<(FrameHeader, FrameBody, &'a [u8]), FrameError> {
    let (raw, rest) = bytes
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(FrameError::Closed)?;
    let header = FrameHeader::decode(raw, limits)?;
    let message_len = header.message_len as usize;
    let message = rest.get(..message_len).ok_or(FrameError::Closed)?;
    let payload_len = usize::try_from(header.payload_len).map_err(|_| FrameError::Closed)?;
    let payload = rest
        .get(message_len..)
        .and_then(|p| p.get(..payload_len))
        .ok_or(FrameError::Closed)?;
    let body = match header.kind {
        FrameKind::Call | FrameKind::Post => FrameBody::Request(decode_request(message)?),
        FrameKind::Reply => FrameBody::Reply(decode_reply(message)?),
        FrameKind::Bulk => FrameBody::Bulk,
    };
    Ok((header, body, payload))
}

/// Encodes one complete frame into memory (the in-memory counterpart of [`FrameWriter`]).
pub fn encode_frame(
    kind: FrameKind,
    id: u64,
    body: &FrameBody,
    payload: &[u8],
) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; HEADER_LEN];
    match (kind, body) {
        (FrameKind::Call | FrameKind::Post, FrameBody::Request(r)) => encode_message(r, &mut out)?,
        (FrameKind::Reply, FrameBody::Reply(r)) => encode_message(r, &mut out)?,
        (FrameKind::Bulk, FrameBody::Bulk) => {}
        (got, _) => {
            return Err(FrameError::UnexpectedKind {
                expected: "a kind matching the body",
                got,
            });
        }
    }
    let message_len = out.len() - HEADER_LEN;
    let header = FrameHeader {
        kind,
        message_len: u32::try_from(message_len).map_err(|_| FrameError::MessageTooLarge {
            len: message_len as u64,
            limit: u32::MAX,
        })?,
        payload_len: payload.len() as u64,
        id,
    };
    out[..HEADER_LEN].copy_from_slice(&header.encode());
    out.extend_from_slice(payload);
    Ok(out)
}

#[cfg(test)]
mod tests;

/// The body of the fuzz target, shared with the corpus-replay test: decodes `data` as a
/// frame and as bare messages, and re-encodes whatever decodes. Must never panic.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    let limits = FrameLimits {
        max_message: 1 << 20,
        max_payload: 1 << 20,
    };
    if let Ok((header, body, payload)) = decode_frame(data, &limits) {
        // Whatever decodes must encode again.
        let _ = encode_frame(header.kind, header.id, &body, payload);
    }
    let _ = decode_request(data);
    let _ = decode_reply(data);
}
