//! `gpufn-ptx`: runs CUDA kernels on the CPU for the worker's `cpu` backend.
//!
//! - [`fatbin`] recognises the images programs hand the driver (fatbin wrapper, raw fatbin,
//!   PTX text, cubin), decompresses entries (LZ4, ZSTD) and picks the PTX to run.
//! - [`Module`] parses that PTX, places its module variables in a session's
//!   [`DeviceMemory`], translates each function once into a compact register-resolved form,
//!   and launches kernels: blocks in parallel over host threads, warps in lockstep.
//! - Every memory access is bounds-checked; faults come back as [`LaunchError`] with the
//!   kernel, block, thread and address, never as a panic.
//!
//! ```no_run
//! use gpufn_ptx::{DeviceMemory, LaunchConfig, Module};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let image: Vec<u8> = Vec::new();
//! let memory = DeviceMemory::new(1 << 30);
//! let module = Module::load(&image, 90, &memory)?;
//! let out = memory.allocate(4 * 256)?;
//! let params = out.to_le_bytes();
//! let config = LaunchConfig { grid: [1, 1, 1], block: [256, 1, 1], dynamic_shared: 0 };
//! let result = module.launch("fill", config, &params, &memory, 2)?;
//! print!("{}", String::from_utf8_lossy(&result.printf));
//! # Ok(()) }
//! ```

mod alu;
mod ast;
pub mod bench;
mod compile;
mod error;
mod exec;
pub mod fatbin;
mod float;
mod ir;
mod lexer;
mod memory;
mod module;
mod parser;
mod printf;

pub use compile::{LOCAL_WINDOW, ParamLayout, SHARED_WINDOW};
pub use error::{CudaCode, FaultSite, LaunchError, LoadError};
pub use exec::{LaunchConfig, LaunchOutput};
pub use memory::{DeviceMemory, MemoryError};
pub use module::{GlobalInfo, KernelInfo, Module};

/// Parses PTX text without loading it (syntax check; used by tests and tools).
pub fn check_ptx_syntax(text: &str) -> Result<(), LoadError> {
    parser::parse(text).map(|_| ())
}
