//! Errors: why a request was refused ([`Rejection`]) and misuse of the pool ([`PoolError`]).

use serde::Serialize;

use crate::ids::{SessionId, WorkerId};
use crate::inventory::Backend;
use crate::qos::Qos;
use crate::quota::QuotaExceeded;
use crate::session::SessionState;

/// Why a session (or a swap-in) could not be given memory. Returned to the client, so each
/// message says what was wrong and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Rejection {
    /// The request asked for more than a whole device's compute.
    #[error("compute share {percent}% is above 100%; ask for at most one whole device (100)")]
    ComputeShareTooLarge {
        /// The share asked for.
        percent: u8,
    },
    /// A live session already has this id.
    #[error("session {session} already exists; use a new session id")]
    DuplicateSession {
        /// The id in use.
        session: SessionId,
    },
    /// A tenant quota would be exceeded.
    #[error("{exceeded}")]
    Quota {
        /// Which quota.
        exceeded: QuotaExceeded,
    },
    /// No worker is registered at all.
    #[error("no GPU workers are registered; start one with `gpufn worker`")]
    NoWorkers,
    /// Workers exist but none may take a new session now.
    #[error(
        "no worker can take new sessions: {draining_workers} draining, {unhealthy_workers} unhealthy, {expired_workers} missed their heartbeats, {unavailable_devices} devices unhealthy or without memory, {other_backend_devices} devices of another backend; start or resume a worker{}",
        required_backend.map_or(String::new(), |b| format!(", or drop the `{b:?}` backend requirement"))
    )]
    NoEligibleDevice {
        /// Workers that are draining.
        draining_workers: u32,
        /// Workers that report themselves unhealthy.
        unhealthy_workers: u32,
        /// Workers whose lease ran out.
        expired_workers: u32,
        /// Devices (of otherwise eligible workers) that are unhealthy or report no memory.
        unavailable_devices: u32,
        /// Devices with a backend other than the required one.
        other_backend_devices: u32,
        /// The backend the request required, if any.
        required_backend: Option<Backend>,
    },
    /// The request is larger than any eligible device.
    #[error(
        "{requested_bytes} bytes of VRAM is more than the largest available device has ({largest_device_bytes} bytes); request less VRAM"
    )]
    TooLarge {
        /// VRAM asked for.
        requested_bytes: u64,
        /// Memory of the largest eligible device.
        largest_device_bytes: u64,
    },
    /// Eligible devices exist but are full, and no idle lower-QoS session could make room.
    #[error(
        "no device has {requested_bytes} bytes of VRAM and {requested_compute_percent}% compute free for a {qos} session (most unclaimed on one device: {largest_unclaimed_bytes} bytes); retry later, request less, or use a higher QoS to reclaim memory from idle lower-QoS sessions"
    )]
    NoCapacity {
        /// VRAM asked for.
        requested_bytes: u64,
        /// Compute share asked for.
        requested_compute_percent: u8,
        /// The requester's QoS.
        qos: Qos,
        /// The most unclaimed memory on any eligible device.
        largest_unclaimed_bytes: u64,
    },
}

impl From<QuotaExceeded> for Rejection {
    fn from(exceeded: QuotaExceeded) -> Self {
        Rejection::Quota { exceeded }
    }
}

/// An event or query the pool cannot apply: the caller's view of the pool is out of date or
/// the reporter broke the protocol. The pool's state is unchanged when one is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The worker is not registered (it never was, was removed, or its lease ran out).
    #[error("worker {worker} is not registered (or its lease ran out); register it again")]
    UnknownWorker {
        /// The worker named.
        worker: WorkerId,
    },
    /// A report named a device the worker did not register.
    #[error("worker {worker} has no device {index}; report only devices it registered")]
    UnknownDevice {
        /// The worker.
        worker: WorkerId,
        /// The device index named.
        index: u32,
    },
    /// A registration listed the same device index twice.
    #[error("worker {worker} lists device {index} twice; give each device a unique index")]
    DuplicateDevice {
        /// The worker.
        worker: WorkerId,
        /// The repeated index.
        index: u32,
    },
    /// The session is not live.
    #[error("session {session} is not live (it ended, was lost, or never existed)")]
    UnknownSession {
        /// The session named.
        session: SessionId,
    },
    /// The event does not apply to the session's current state.
    #[error("session {session} is {state} and cannot {action}")]
    InvalidTransition {
        /// The session.
        session: SessionId,
        /// Its current state.
        state: SessionState,
        /// What was attempted, with the fix (for example "swap in before its swap-out is
        /// reported; report the swap-out first").
        action: &'static str,
    },
}

/// A [`crate::PoolConfig`] the pool cannot run with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Overcommit below 100% would leave device memory unusable.
    #[error(
        "VRAM overcommit of {percent}% is below 100% and would leave device memory unusable; use 100 for no overcommit or more to let swapped-out sessions share devices"
    )]
    OvercommitBelowPhysical {
        /// The configured percentage.
        percent: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TenantId;

    #[test]
    fn rejections_serialize_with_a_reason_tag() {
        let quota = Rejection::from(QuotaExceeded::Sessions {
            tenant: TenantId::from("acme"),
            limit: 1,
            current: 1,
        });
        let json = serde_json::to_value(&quota).unwrap();
        assert_eq!(json["reason"], "quota");
        assert_eq!(json["exceeded"]["quota"], "sessions");
        assert_eq!(
            serde_json::to_value(Rejection::NoWorkers).unwrap()["reason"],
            "no_workers"
        );
    }

    #[test]
    fn messages_say_what_to_do() {
        let r = Rejection::NoEligibleDevice {
            draining_workers: 2,
            unhealthy_workers: 0,
            expired_workers: 1,
            unavailable_devices: 0,
            other_backend_devices: 3,
            required_backend: Some(Backend::Cuda),
        };
        let text = r.to_string();
        assert!(text.contains("2 draining"), "{text}");
        assert!(
            text.contains("drop the `Cuda` backend requirement"),
            "{text}"
        );
        let too_large = Rejection::TooLarge {
            requested_bytes: 10,
            largest_device_bytes: 5,
        };
        assert!(too_large.to_string().contains("request less VRAM"));
    }
}
