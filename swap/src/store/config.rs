//! Configuration of a swap store.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;

use crate::error::{Result, SwapError};
use crate::layout::ALIGN;
use crate::manifest::MAX_CHUNK_SIZE;
use crate::policy::DemotionPolicy;

/// Default chunk size: large enough for sequential disk bandwidth, small enough that a few
/// staging buffers per pipeline cost little memory.
pub const DEFAULT_CHUNK_SIZE: usize = 8 << 20;
/// Default number of chunks in flight between the device stage and the tier stage.
pub const DEFAULT_PIPELINE_DEPTH: usize = 4;

#[derive(Clone, Debug)]
pub struct SwapConfig {
    /// Identifies this worker's files in shared directories and object stores; unique per host
    /// (per disk directory) and per cold prefix. Letters, digits, `.`, `_`, `-`.
    pub worker_id: String,
    /// Host RAM the host tier may hold, in bytes. Its chunk buffers are kept for reuse once
    /// allocated (up to this budget), so steady-state swaps do not fault in fresh memory.
    pub host_budget: u64,
    /// Chunk size in bytes: a multiple of 4096, at most 1 GiB.
    pub chunk_size: usize,
    /// Chunks in flight per swap (≥ 1).
    pub pipeline_depth: usize,
    /// Touch the whole host budget at open, so the first swap-outs don't pay page faults.
    pub prefault_host: bool,
    /// Checksum chunks already when they enter the host tier and verify them on swap-in from
    /// it. Off by default: that costs a second pass over the data on the swap critical path,
    /// and host-tier data never leaves the worker's memory. Chunks are always checksummed
    /// before they leave it (swap-out to disk, demotion to disk) and verified when read back.
    pub host_checksums: bool,
    pub disk: Option<DiskConfig>,
    /// Needs `disk` (demotion goes host → disk → cold).
    pub cold: Option<ColdConfig>,
    pub policy: DemotionPolicy,
}

#[derive(Clone, Debug)]
pub struct DiskConfig {
    /// Directory on local NVMe, shared by the workers of a host (each uses a subdirectory).
    pub dir: PathBuf,
    /// Open swap files with O_DIRECT (bypasses the page cache entirely).
    pub direct_io: bool,
    /// Most bytes the disk tier may hold (`None`: the filesystem's free space).
    pub budget: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct ColdConfig {
    /// See [`crate::tier::cold::store_from_url`] to build one from a URL.
    pub store: Arc<dyn ObjectStore>,
    /// Path prefix inside the store (may be empty).
    pub prefix: String,
}

impl SwapConfig {
    /// A host-only configuration with default chunk size, pipeline depth and policy.
    pub fn new(worker_id: impl Into<String>, host_budget: u64) -> Self {
        Self {
            worker_id: worker_id.into(),
            host_budget,
            chunk_size: DEFAULT_CHUNK_SIZE,
            pipeline_depth: DEFAULT_PIPELINE_DEPTH,
            prefault_host: false,
            host_checksums: false,
            disk: None,
            cold: None,
            policy: DemotionPolicy::default(),
        }
    }

    pub fn with_disk(mut self, dir: impl Into<PathBuf>) -> Self {
        self.disk = Some(DiskConfig {
            dir: dir.into(),
            direct_io: false,
            budget: None,
        });
        self
    }

    pub fn with_cold(mut self, store: Arc<dyn ObjectStore>, prefix: impl Into<String>) -> Self {
        self.cold = Some(ColdConfig {
            store,
            prefix: prefix.into(),
        });
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let id = &self.worker_id;
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id != "."
            && id != ".."
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !id_ok {
            return Err(SwapError::Config(format!(
                "worker id {id:?} must be 1-64 letters, digits, '.', '_' or '-'"
            )));
        }
        if self.chunk_size == 0
            || !self.chunk_size.is_multiple_of(ALIGN)
            || self.chunk_size > MAX_CHUNK_SIZE
        {
            return Err(SwapError::Config(format!(
                "chunk size {} must be a positive multiple of {ALIGN} up to {MAX_CHUNK_SIZE}",
                self.chunk_size
            )));
        }
        if self.pipeline_depth == 0 {
            return Err(SwapError::Config(
                "pipeline depth must be at least 1".into(),
            ));
        }
        if self.cold.is_some() && self.disk.is_none() {
            return Err(SwapError::Config(
                "the cold tier needs a disk tier (sessions reach it through the disk); \
                 configure a disk directory"
                    .into(),
            ));
        }
        Ok(())
    }
}
