//! The `cuda` backend: detection of a real CUDA driver and GPU.
//!
//! Only detection exists so far; executing sessions on a real GPU is not built yet, so a
//! worker that finds a GPU says so and serves sessions on the CPU device (see
//! [`super::select`]). Detection is careful in three ways:
//! - cudarc (with dynamic loading) panics instead of returning an error when no `libcuda`
//!   is found, so presence is checked first and every driver call runs inside
//!   `catch_unwind`;
//! - the `libcuda.so.1` found may be gpufn's own stub (a worker started with the stub's
//!   directory on `LD_LIBRARY_PATH`): it exports `gpufn_stub_version`, and is refused;
//! - a driver without devices is reported as such, not as an error.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// The symbol only gpufn's stub exports; a `libcuda` carrying it is not a real driver.
pub const STUB_MARKER_SYMBOL: &[u8] = b"gpufn_stub_version\0";

/// What looking for a real GPU found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detection {
    /// No `libcuda` on the library path.
    NoDriver,
    /// The `libcuda` found is gpufn's stub, not a driver.
    StubLibrary,
    /// The driver loaded but failed or panicked.
    DriverError(String),
    /// The driver works but reports no device.
    NoDevice,
    /// The driver reports `count` devices.
    Devices { count: u32 },
}

impl Detection {
    /// Why the cuda backend is not serving sessions, for the operator.
    pub fn why_not_used(&self) -> String {
        match self {
            Detection::NoDriver => "no CUDA driver (libcuda.so) was found".to_string(),
            Detection::StubLibrary => "the libcuda.so.1 on the library path is gpufn's own \
                stub, not a driver; remove the stub's directory from LD_LIBRARY_PATH"
                .to_string(),
            Detection::DriverError(e) => format!("the CUDA driver failed: {e}"),
            Detection::NoDevice => "the CUDA driver reports no device".to_string(),
            Detection::Devices { count } => format!(
                "found {count} CUDA device(s), but this build of the worker has no cuda \
                 execution backend yet"
            ),
        }
    }
}

/// Looks for a real CUDA driver and its devices. Never panics.
pub fn detect() -> Detection {
    // SAFETY: only dlopens the candidate library names and closes them again; loading a
    // driver runs its initialisers, which is what using it would do anyway.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Detection::NoDriver;
    }
    let probe = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `culib` returns the library cudarc itself uses (present, checked above);
        // the symbol is only looked up, never called.
        let is_stub = unsafe {
            cudarc::driver::sys::culib()
                .get::<*const std::ffi::c_void>(STUB_MARKER_SYMBOL)
                .is_ok()
        };
        if is_stub {
            return Detection::StubLibrary;
        }
        match cudarc::driver::result::init()
            .and_then(|()| cudarc::driver::result::device::get_count())
        {
            Ok(0) => Detection::NoDevice,
            Ok(count) => Detection::Devices {
                count: count.max(0) as u32,
            },
            Err(e) if e.0 == cudarc::driver::sys::cudaError_enum::CUDA_ERROR_NO_DEVICE => {
                Detection::NoDevice
            }
            Err(e) => Detection::DriverError(e.to_string()),
        }
    }));
    probe.unwrap_or_else(|panic| {
        let text = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the driver library panicked".to_string());
        Detection::DriverError(text)
    })
}
