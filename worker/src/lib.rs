//! `gpufn-worker`: the session server that executes forwarded CUDA calls on a device.
//!
//! - [`server`]: accepts connections on any [`gpufn_proto::transport::Listener`], checks the
//!   handshake of every stream (see [`server::authorize`]) and runs one session per `Calls`
//!   stream.
//! - [`session`]: one program's state — its device address range, allocations, modules,
//!   streams, events, deferred and sticky errors — executing requests in arrival order.
//! - [`address_space`]: where a session's allocations lie and how much of its quota they use
//!   (pure bookkeeping, no device access).
//! - [`device`]: the [`device::Device`] trait and its backends (`cpu` over `gpufn-ptx`;
//!   `cuda` detection).
//! - [`cache`]: module images by SHA-256, shared by all sessions.
//! - [`buffers`]: a session's payload and reply buffers, reused from frame to frame.
//! - [`swap`]: the device memory budget, idle swap-out and swap-in over `gpufn-swap`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use gpufn_worker::{Worker, WorkerConfig};
//! let worker = Worker::new(WorkerConfig::default())?;
//! let listener = worker.bind(&"tcp://127.0.0.1:7070".parse()?, None).await?;
//! worker.serve(listener).await;
//! # Ok(()) }
//! ```

pub mod address_space;
pub mod buffers;
pub mod cache;
pub mod config;
pub mod device;
pub mod error;
pub mod gateway_client;
pub mod server;
pub mod session;
pub mod swap;

pub use config::{BackendChoice, WorkerConfig};
pub use error::WorkerError;
pub use server::Worker;
