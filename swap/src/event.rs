//! Event records of data movements, for the worker's status API and metrics.

use std::time::Duration;

use serde::Serialize;

use crate::types::{Place, SessionId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum EventKind {
    SwapOut,
    SwapIn,
    Demote,
}

/// One completed movement of a session's data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SwapEvent {
    pub session: SessionId,
    pub kind: EventKind,
    pub from: Place,
    pub to: Place,
    /// Bytes of session data moved (allocation bytes, without padding).
    pub bytes: u64,
    pub duration: Duration,
}

impl SwapEvent {
    /// Throughput in bytes per second (0 for an instantaneous move).
    pub fn bytes_per_second(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            self.bytes as f64 / secs
        } else {
            0.0
        }
    }
}
