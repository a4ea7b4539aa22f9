//! The identifiers the store is keyed by: sessions, allocations and tiers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A worker-local session id. Rendered as 16 hex digits in file and object names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One device allocation of a session: `len` bytes at `device_address`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub device_address: u64,
    pub len: u64,
}

impl Allocation {
    pub fn new(device_address: u64, len: u64) -> Self {
        Self {
            device_address,
            len,
        }
    }
}

impl fmt::Display for Allocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}+{}", self.device_address, self.len)
    }
}

/// The storage tiers, fastest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Tier {
    /// Chunk buffers in the worker's memory, within the host budget.
    Host,
    /// One file per session in the disk directory.
    Disk,
    /// Objects in an `object_store` (local filesystem, S3-compatible, in-memory).
    Cold,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Host => "host",
            Tier::Disk => "disk",
            Tier::Cold => "cold",
        })
    }
}

/// Where bytes are, for event records: on the device or in a tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Place {
    Device,
    Tier(Tier),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Device => f.write_str("device"),
            Place::Tier(tier) => tier.fmt(f),
        }
    }
}
