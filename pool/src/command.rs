//! Commands: what the pool asks the gateway to do. The pool has already updated its own state
//! as if each command will be carried out.

use serde::Serialize;

use crate::ids::{DeviceRef, SessionId, WorkerId};

/// One instruction for the gateway (and through it, a worker or a function runner).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Tell the worker to swap the session's memory out. The session stays on the device and
    /// its memory counts as used until the worker reports it swapped out.
    SwapOut {
        /// The session.
        session: SessionId,
        /// Where it lives.
        device: DeviceRef,
        /// Why.
        reason: SwapOutReason,
    },
    /// Tell the worker to swap the session back in (a prewarm). Memory is already reserved.
    SwapIn {
        /// The session.
        session: SessionId,
        /// Where it lives.
        device: DeviceRef,
    },
    /// A waiting session's memory is now free: it may start (new session) or swap in.
    Ready {
        /// The session.
        session: SessionId,
        /// Where it lives.
        device: DeviceRef,
    },
    /// The session has been idle and swapped out long enough: stop its function instance and
    /// drop its swapped memory. The pool has already forgotten it.
    ScaleToZero {
        /// The session.
        session: SessionId,
        /// Where it lived.
        device: DeviceRef,
    },
    /// The worker is gone (missed heartbeats, re-registered after a restart, or removed); its
    /// sessions are lost and the pool has forgotten them. Tell their clients.
    WorkerLost {
        /// The worker.
        worker: WorkerId,
        /// Its sessions, in id order.
        sessions: Vec<SessionId>,
    },
    /// A draining worker holds no sessions any more and may be shut down.
    WorkerDrained {
        /// The worker.
        worker: WorkerId,
    },
}

/// Why a swap-out was ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SwapOutReason {
    /// The session was idle for its QoS level's idle timeout.
    Idle,
    /// A higher-QoS session needs the memory.
    Reclaim {
        /// The session the memory is for.
        for_session: SessionId,
    },
}
