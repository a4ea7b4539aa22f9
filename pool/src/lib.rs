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
//! | the gateway learns / wants                  | it calls                          | and gets |
//! |---------------------------------------------|-----------------------------------|----------|
//! | worker registered (with its devices)        | [`Pool::register_worker`]         | [`Command::WorkerLost`] if it restarted |
//! | heartbeat (health, usage)                   | [`Pool::heartbeat`]               | — |
//! | drain / resume / remove a worker            | [`Pool::drain_worker`], [`Pool::resume_worker`], [`Pool::remove_worker`] | [`Command::WorkerLost`] on removal |
//! | a client asks for a session                 | [`Pool::request_session`]         | [`Placement`] (with reclaim swap-outs) or [`Rejection`] |
//! | "where would it go?" (no change)            | [`Pool::plan_placement`]          | [`PlacementPlan`] or [`Rejection`] |
//! | a call reached a session                    | [`Pool::session_activity`]        | — |
//! | the worker swapped a session out            | [`Pool::session_swapped_out`]     | [`Command::Ready`] for waiters |
//! | a swapped-out session needs memory back     | [`Pool::request_swap_in`]         | [`SwapInDecision`] |
//! | the worker swapped a session in             | [`Pool::session_swapped_in`]      | — |
//! | an invocation for a function arrived        | [`Pool::prewarm`]                 | [`PrewarmDecision`] |
//! | a session ended                             | [`Pool::end_session`]             | [`Command::Ready`] for waiters |
//! | time passed (call about once a second)      | [`Pool::tick`]                    | lost workers, idle swap-outs, scale-to-zero, drained workers |
//! | `/v1/pool`, `gpufn status`                  | [`Pool::view`]                    | [`PoolView`] (serializable) |
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
//!     idle: None,
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
pub use session::{IdleOverride, Session, SessionRequest, SessionState};
pub use time::Millis;
pub use view::{DeviceView, PoolView, SessionCounts, TenantView, WorkerView};
