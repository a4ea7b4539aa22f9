//! Identifiers of workers, devices, sessions and tenants.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A worker's identity, chosen by the worker (or the gateway) at registration.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(pub String);

/// A tenant's identity, as named in its auth token.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(pub String);

/// A session's identity, chosen by the gateway; unique among live sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub u64);

/// One device of one worker: the place a session lives.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct DeviceRef {
    /// The worker that owns the device.
    pub worker: WorkerId,
    /// The device's index on that worker (as the worker reported it).
    pub index: u32,
}

impl From<&str> for WorkerId {
    fn from(id: &str) -> Self {
        WorkerId(id.to_owned())
    }
}

impl From<&str> for TenantId {
    fn from(id: &str) -> Self {
        TenantId(id.to_owned())
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/gpu{}", self.worker, self.index)
    }
}
