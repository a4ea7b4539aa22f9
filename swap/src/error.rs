//! Errors of the swap store. Each names the session, tier and chunk concerned and what to do.

use std::path::PathBuf;

use crate::types::{SessionId, Tier};

/// An error reported by the device side ([`crate::DeviceIo`]).
pub type DeviceIoError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("invalid swap configuration: {0}")]
    Config(String),

    #[error(
        "swap directory {dir} is in use by another running worker with id {worker_id:?} \
         (lock file {lock} is held); give each worker on this host its own worker id"
    )]
    WorkerDirInUse {
        dir: PathBuf,
        worker_id: String,
        lock: PathBuf,
    },

    #[error("invalid swap request: {0}")]
    InvalidRequest(String),

    #[error("session {0} is already swapped out; swap it in or discard it first")]
    AlreadySwappedOut(SessionId),

    #[error("session {0} is not swapped out (unknown to the swap store)")]
    UnknownSession(SessionId),

    #[error(
        "no room to swap out session {session} ({bytes} bytes): {reason}; \
         raise the host budget, configure or enlarge the disk tier"
    )]
    NoSpace {
        session: SessionId,
        bytes: u64,
        reason: String,
    },

    #[error(
        "session {session}: chunk {chunk} in the {tier} tier is corrupted ({detail}; it holds \
         {covers}); the session's data cannot be restored"
    )]
    ChunkCorrupted {
        session: SessionId,
        tier: Tier,
        chunk: u32,
        /// Which allocations (and byte ranges) the chunk holds.
        covers: String,
        /// `checksum mismatch` or what else is wrong.
        detail: String,
    },

    #[error(
        "session {session}: chunk {chunk} is missing from the {tier} tier ({detail}; it holds \
         {covers}); the session's data cannot be restored"
    )]
    ChunkMissing {
        session: SessionId,
        tier: Tier,
        chunk: u32,
        covers: String,
        detail: String,
    },

    #[error(
        "the manifest of session {session} in the {tier} tier is missing or corrupted ({detail}); \
         the session's data cannot be restored"
    )]
    ManifestInvalid {
        session: SessionId,
        tier: Tier,
        detail: String,
    },

    #[error("device copy for session {session} failed at {address:#x} (+{len} bytes): {source}")]
    Device {
        session: SessionId,
        address: u64,
        len: u64,
        #[source]
        source: DeviceIoError,
    },

    #[error("internal error in the swap store: {0}")]
    Internal(String),

    #[error("{op} {path} failed: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cold tier (object store) {op} {location} failed: {source}")]
    Cold {
        op: &'static str,
        location: String,
        #[source]
        source: object_store::Error,
    },
}

impl SwapError {
    /// The stored data itself is damaged or missing (retrying will not help).
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            SwapError::ChunkCorrupted { .. }
                | SwapError::ChunkMissing { .. }
                | SwapError::ManifestInvalid { .. }
        )
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SwapError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = SwapError> = std::result::Result<T, E>;
