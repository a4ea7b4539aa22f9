//! Typed errors of module loading and kernel launches, named after the CUDA driver codes the
//! worker reports for them.

use thiserror::Error;

/// Why a module image could not be loaded. Each variant maps to one `CUresult` (see
/// [`LoadError::cuda_code`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LoadError {
    /// The image holds no PTX this device can run (only machine code, or only PTX for a newer
    /// architecture).
    #[error("no binary for this device: {0}")]
    NoBinaryForGpu(String),
    /// The bytes are not a fatbin, cubin or PTX text, or a container is damaged.
    #[error("invalid module image: {0}")]
    InvalidImage(String),
    /// The PTX text does not parse or refers to undeclared names.
    #[error("invalid PTX at line {line}: {message}")]
    InvalidPtx { line: u32, message: String },
    /// The PTX uses something the CPU interpreter does not implement.
    #[error("not supported by the CPU device: {what} (line {line})")]
    NotSupported { what: String, line: u32 },
    /// Module-scope variables could not be placed in device memory.
    #[error("out of device memory while placing module variables: {0}")]
    OutOfMemory(String),
}

impl LoadError {
    /// The CUDA driver error code name for this error.
    pub fn cuda_code(&self) -> CudaCode {
        match self {
            LoadError::NoBinaryForGpu(_) => CudaCode::NoBinaryForGpu,
            LoadError::InvalidImage(_) => CudaCode::InvalidImage,
            LoadError::InvalidPtx { .. } => CudaCode::InvalidPtx,
            LoadError::NotSupported { .. } => CudaCode::NotSupported,
            LoadError::OutOfMemory(_) => CudaCode::OutOfMemory,
        }
    }
}

/// The subset of `CUresult` codes this crate produces, with their numeric values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CudaCode {
    InvalidValue = 1,
    OutOfMemory = 2,
    NoBinaryForGpu = 209,
    InvalidImage = 200,
    InvalidPtx = 218,
    NotFound = 500,
    IllegalAddress = 700,
    LaunchOutOfResources = 701,
    LaunchTimeout = 702,
    MisalignedAddress = 716,
    IllegalInstruction = 715,
    Assert = 710,
    LaunchFailed = 719,
    NotSupported = 801,
}

/// Where in a launch a fault happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultSite {
    pub kernel: String,
    pub block: [u32; 3],
    pub thread: [u32; 3],
}

impl std::fmt::Display for FaultSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [bx, by, bz] = self.block;
        let [tx, ty, tz] = self.thread;
        write!(
            f,
            "kernel {} block ({bx},{by},{bz}) thread ({tx},{ty},{tz})",
            self.kernel
        )
    }
}

/// Why a launch failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LaunchError {
    /// The launch configuration or parameter buffer is wrong.
    #[error("invalid launch: {0}")]
    InvalidValue(String),
    /// The kernel name is not in the module.
    #[error("no kernel named {0} in this module")]
    NotFound(String),
    /// A load, store or atomic touched memory outside every allocation.
    #[error("illegal address 0x{address:x} ({space}) in {site}")]
    IllegalAddress {
        site: FaultSite,
        address: u64,
        space: &'static str,
    },
    /// A load, store or atomic used an address not aligned to its size.
    #[error("misaligned address 0x{address:x} in {site}")]
    MisalignedAddress { site: FaultSite, address: u64 },
    /// `trap`, `brkpt` or a failed device-side `assert`.
    #[error("{what} in {site}")]
    Trap { site: FaultSite, what: String },
    /// An instruction the interpreter cannot execute was reached.
    #[error("not supported by the CPU device: {what} in {site}")]
    NotSupported { site: FaultSite, what: String },
    /// The launch was cancelled (session closed, or the worker's time limit).
    #[error("launch cancelled while running {site}")]
    Cancelled { site: FaultSite },
    /// The launch could not continue (barrier deadlock, stack overflow, ...).
    #[error("launch failed: {what} in {site}")]
    Failed { site: FaultSite, what: String },
}

impl LaunchError {
    /// The CUDA driver error code name for this error.
    pub fn cuda_code(&self) -> CudaCode {
        match self {
            LaunchError::InvalidValue(_) => CudaCode::InvalidValue,
            LaunchError::NotFound(_) => CudaCode::NotFound,
            LaunchError::IllegalAddress { .. } => CudaCode::IllegalAddress,
            LaunchError::MisalignedAddress { .. } => CudaCode::MisalignedAddress,
            LaunchError::Trap { what, .. } if what.starts_with("assert") => CudaCode::Assert,
            LaunchError::Trap { .. } => CudaCode::IllegalInstruction,
            LaunchError::NotSupported { .. } => CudaCode::NotSupported,
            LaunchError::Failed { .. } => CudaCode::LaunchFailed,
            LaunchError::Cancelled { .. } => CudaCode::LaunchTimeout,
        }
    }
}
