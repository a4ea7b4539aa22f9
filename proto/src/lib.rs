//! `gpufn-proto`: the wire protocol between stub, worker and gateway.
//!
//! - [`frame`]: the fixed frame header, the encoding of messages and raw payloads.
//! - [`message`]: every request and reply that crosses the wire.
//! - [`cuda`]: CUDA types shared by all sides (`CUresult` codes, device attributes).
//! - [`transport`]: QUIC, TCP and Unix-socket connections behind one abstraction.
//!
//! A call is a [`frame::FrameKind::Call`] frame carrying a [`message::Request`]; the peer
//! answers with a [`frame::FrameKind::Reply`] frame with the same id. A
//! [`frame::FrameKind::Post`] gets no reply: if it fails, the error travels as a
//! [`message::DeferredError`] in the next reply, the way CUDA reports asynchronous errors.

pub mod cuda;
pub mod frame;
pub mod message;
#[cfg(feature = "transport")]
pub mod transport;

pub use cuda::{CuResult, DeviceAttribute};
pub use frame::{FrameError, FrameHeader, FrameKind, FrameLimits, FrameReader, FrameWriter};
pub use message::{CallError, DeferredError, PROTOCOL_VERSION, Reply, ReplyMessage, Request};
