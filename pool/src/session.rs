//! Sessions: what a client asks for, and what the pool knows about each live session.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceRef, SessionId, TenantId};
use crate::inventory::Backend;
use crate::placement::PlacementStrategy;
use crate::qos::{Qos, VictimCandidate};
use crate::time::Millis;

/// A request for a new session, as the gateway received it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRequest {
    /// The id the session will have; must not belong to a live session.
    pub id: SessionId,
    /// The tenant whose quotas apply.
    pub tenant: TenantId,
    /// The function this session serves, if it is a function instance (enables prewarm and
    /// scale-to-zero for it).
    pub function: Option<String>,
    /// The session's VRAM quota: the most device memory it may hold.
    pub vram_bytes: u64,
    /// Share of one device's compute reserved while resident, 0–100 (0: best effort).
    pub compute_percent: u8,
    /// Quality of service.
    pub qos: Qos,
    /// Required backend; `None` accepts any.
    pub backend: Option<Backend>,
    /// Overrides the pool's placement strategy for this request.
    pub strategy: Option<PlacementStrategy>,
    /// Overrides the pool's idle timeouts for this session (a function's own).
    #[serde(default)]
    pub idle: Option<IdleOverride>,
}

/// A session's own idle timeouts, in place of the pool's per-QoS ones. Functions set these from
/// their manifest, so a function idle 60 s is not swapped out by the pool's 10 s default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleOverride {
    /// Swap out a resident session idle this long; `None` keeps the pool's per-QoS timeout.
    pub swap_out_after: Option<Duration>,
    /// End a swapped-out function session idle this long; `None` keeps the pool's delay.
    pub end_after: Option<Duration>,
}

/// Where a session's memory is.
///
/// | state        | occupies device memory now | memory promised to it | counts against overcommit |
/// |--------------|:--:|:--:|:--:|
/// | `Resident`   | yes | yes | yes |
/// | `Waiting`    | no  | yes | yes |
/// | `SwappingOut`| yes | no  | yes |
/// | `SwappedOut` | no  | no  | yes |
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Its memory is on the device; it may run.
    Resident,
    /// Memory is reserved for it but still held by sessions that are swapping out; it may run
    /// (or swap in) once [`crate::Command::Ready`] names it.
    Waiting,
    /// A swap-out was ordered; its memory is freed once the worker reports it swapped out.
    SwappingOut,
    /// Its memory is in the swap store; it must be granted memory before it runs again.
    SwappedOut,
}

impl SessionState {
    /// Whether the session's memory is physically on the device now.
    pub fn occupies_memory(self) -> bool {
        matches!(self, SessionState::Resident | SessionState::SwappingOut)
    }

    /// Whether device memory (and compute share) is promised to the session.
    pub fn claims_memory(self) -> bool {
        matches!(self, SessionState::Resident | SessionState::Waiting)
    }

    /// The state's snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            SessionState::Resident => "resident",
            SessionState::Waiting => "waiting",
            SessionState::SwappingOut => "swapping_out",
            SessionState::SwappedOut => "swapped_out",
        }
    }
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A live session as the pool tracks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Session {
    /// The session's id.
    pub id: SessionId,
    /// Its tenant.
    pub tenant: TenantId,
    /// The function it serves, if any.
    pub function: Option<String>,
    /// Its VRAM quota.
    pub vram_bytes: u64,
    /// Its reserved compute share.
    pub compute_percent: u8,
    /// Its QoS.
    pub qos: Qos,
    /// The device it lives on (it never moves).
    pub device: DeviceRef,
    /// Where its memory is.
    pub state: SessionState,
    /// When it was admitted.
    pub created_at: Millis,
    /// Its last reported activity (admission, a call, a swap-in).
    pub last_active: Millis,
    /// Its own idle timeouts, if it has any.
    pub idle: Option<IdleOverride>,
    /// Admission order among waiting sessions (first come, first served).
    #[serde(skip)]
    pub(crate) waiting_since: u64,
}

impl Session {
    /// What device accounting and reclaim need to know about the session.
    pub(crate) fn load(&self) -> VictimCandidate {
        VictimCandidate {
            id: self.id,
            qos: self.qos,
            last_active: self.last_active,
            vram_bytes: self.vram_bytes,
            compute_percent: self.compute_percent,
        }
    }
}
