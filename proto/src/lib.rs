//! `gpufn-proto`: the wire protocol between stub, worker and gateway.
//!
//! - [`frame`]: the fixed frame header, the encoding of messages and raw payloads.
//! - [`message`]: every request and reply that crosses the wire.
//! - [`cuda`]: CUDA types shared by all sides (`CUresult` codes, device attributes).
//! - [`transport`]: QUIC, TCP and Unix-socket connections behind one abstraction.

pub mod transport;
