//! `gpufn-pool`: inventory, placement, QoS, quotas, leases, idle and prewarm decisions.
//!
//! Pure logic, no I/O: the gateway owns a [`Pool`], feeds it events (worker registered,
//! heartbeat, session requested, activity, swapped out, ended, …) with the current time as a
//! value ([`Millis`]), and carries out the [`Command`]s and decisions it returns. The pool
//! updates its own state as if every command it returns is carried out.
//!
//! Memory accounting per device (see [`SessionState`]):
//! * sessions whose memory is on the device (*resident*) always fit physical memory;
//! * the VRAM quotas of all sessions on a device, swapped out or not, fit
//!   `memory × overcommit` ([`PoolConfig::vram_overcommit_percent`]);
//! * a higher-QoS session may force idle lower-QoS sessions to swap out to make room.
//!
//! ```
//! use gpufn_pool::*;
//!
//! let mut pool = Pool::new(PoolConfig::default()).unwrap();
//! let gpu = DeviceSpec {
//!     index: 0,
//!     name: "H100".into(),
//!     backend: Backend::Cuda,
//!     memory_bytes: 80 << 30,
//!     compute_units: 132,
//! };
//! let worker = WorkerSpec { id: "w1".into(), address: "10.0.0.5:7001".into(), devices: vec![gpu] };
//! pool.register_worker(worker, Millis(0)).unwrap();
//! let request = SessionRequest {
//!     id: SessionId(1),
//!     tenant: "acme".into(),
//!     function: None,
//!     vram_bytes: 16 << 30,
//!     compute_percent: 50,
//!     qos: Qos::High,
//!     backend: None,
//!     strategy: None,
//! };
//! let placement = pool.request_session(request, Millis(10)).unwrap();
//! assert!(placement.ready);
//! assert_eq!(placement.address, "10.0.0.5:7001");
//! // Ten idle seconds later the session is swapped out.
//! let commands = pool.tick(Millis(10_010));
//! assert!(matches!(commands[0], Command::SwapOut { reason: SwapOutReason::Idle, .. }));
//! ```

pub mod bench;
mod command;
mod config;
mod error;
mod idle;
mod ids;
mod inventory;
mod lease;
mod placement;
mod pool;
mod qos;
mod quota;
mod session;
mod time;
mod view;

pub use command::{Command, SwapOutReason};
pub use config::PoolConfig;
pub use error::{ConfigError, PoolError, Rejection};
pub use ids::{DeviceRef, SessionId, TenantId, WorkerId};
pub use inventory::{Backend, DeviceSpec, DeviceUsage, WorkerSpec, WorkerStatus, WorkerUsage};
pub use placement::PlacementStrategy;
pub use pool::{Placement, PlacementPlan, Pool, PrewarmDecision, SwapInDecision};
pub use qos::{PerQos, Qos};
pub use quota::{QuotaExceeded, RateLimit, TenantQuota};
pub use session::{Session, SessionRequest, SessionState};
pub use time::Millis;
pub use view::{DeviceView, PoolView, SessionCounts, TenantView, WorkerView};
