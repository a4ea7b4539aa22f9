//! The `cuda` backend: sessions on a real NVIDIA GPU through the CUDA driver API (cudarc,
//! dynamically loaded: nothing CUDA is needed to build, and a machine without a driver
//! runs the cpu backend).
//!
//! - **Contexts.** Each session gets its own context, so a kernel fault (which poisons its
//!   context for good) ends only that session; the device's primary context is retained
//!   for device-wide resources: the pinned staging buffers ([`staging`]).
//! - **Memory.** At start the device reserves virtual addresses for all session ranges
//!   (`cuMemAddressReserve`), kept for the worker's life; the worker hands out session ranges
//!   inside that window ([`Device::session_window`]). Each allocation maps physical memory
//!   (`cuMemCreate`, `cuMemMap`, `cuMemSetAccess`) at the address the worker chose
//!   ([`mapping`]). Swap-out frees every allocation, releasing the physical memory but
//!   keeping the reservation; swap-in maps new memory at the same addresses.
//! - **Modules** go to the driver as they come (fatbin, cubin or PTX); kernels and their
//!   parameter layouts come from the driver, module variables from the image's own symbol
//!   names ([`image`]).
//! - **Errors** keep the driver's own `CUresult` ([`driver`]).
//! - **Inventory** comes from NVML when it is there ([`nvml`]).
//!
//! Detection ([`detect`]) is careful in three ways: cudarc panics instead of returning an
//! error when no `libcuda` is found, so presence is checked first and the first driver calls
//! run inside `catch_unwind`; the `libcuda.so.1` found may be gpufn's own stub (it exports
//! `gpufn_stub_version`) and is refused; and a driver older than the calls the backend
//! makes is refused with its version.

mod driver;
mod image;
mod mapping;
mod nvml;
mod properties;
mod session;
mod staging;

use super::{Device, DeviceSession, DeviceTelemetry};
use crate::address_space::{RANGE_SIZE, RANGES_BASE};
use crate::config::BackendChoice;
use crate::error::DeviceError;
use cudarc::driver::sys;
use driver::{Current, check};
use gpufn_proto::message::{DeviceProperties, MemoryRange};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

pub use driver::MIN_DRIVER_VERSION;

/// The symbol only gpufn's stub exports; a `libcuda` carrying it is not a real driver.
pub const STUB_MARKER_SYMBOL: &[u8] = b"gpufn_stub_version\0";

/// Test setups only: with this set to `1`, gpufn's own stub is accepted as the driver, so
/// the cuda backend can run without a GPU against a stub that forwards to a second worker
/// on the cpu backend (`tests/cuda_backend_via_stub.rs`).
pub const ALLOW_STUB_ENV: &str = "GPUFN_CUDA_ALLOW_STUB";

fn stub_allowed() -> bool {
    std::env::var(ALLOW_STUB_ENV).is_ok_and(|v| v == "1")
}

/// What looking for a real GPU found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detection {
    /// No `libcuda` on the library path.
    NoDriver,
    /// The `libcuda` found is gpufn's stub, not a driver.
    StubLibrary,
    /// The driver loaded but failed or panicked.
    DriverError(String),
    /// The driver is older than the backend needs (`version` as `cuDriverGetVersion`
    /// reports it, e.g. 12020).
    UnsupportedDriver { version: i32 },
    /// The driver works but reports no device.
    NoDevice,
    /// The driver reports `count` devices.
    Devices { count: u32, driver_version: i32 },
}

impl Detection {
    /// What was found, for the operator.
    pub fn describe(&self) -> String {
        match self {
            Detection::NoDriver => "no CUDA driver (libcuda.so) was found".to_string(),
            Detection::StubLibrary => "the libcuda.so.1 on the library path is gpufn's own \
                stub, not a driver; remove the stub's directory from LD_LIBRARY_PATH"
                .to_string(),
            Detection::DriverError(e) => format!("the CUDA driver failed: {e}"),
            Detection::UnsupportedDriver { version } => format!(
                "the CUDA driver supports CUDA {}, the cuda backend needs {} or newer; \
                 update the NVIDIA driver",
                version_text(*version),
                version_text(MIN_DRIVER_VERSION)
            ),
            Detection::NoDevice => "the CUDA driver reports no device".to_string(),
            Detection::Devices {
                count,
                driver_version,
            } => format!(
                "found {count} CUDA device(s) (driver supports CUDA {})",
                version_text(*driver_version)
            ),
        }
    }
}

fn version_text(version: i32) -> String {
    format!("{}.{}", version / 1000, version % 1000 / 10)
}

/// What the worker does with what detection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Open the GPU (and, with `--backend auto`, fall back to the cpu device if that fails).
    UseGpu,
    /// Serve sessions on the cpu device; `warn` when the operator has something to fix.
    UseCpu { reason: String, warn: bool },
    /// `--backend cuda` cannot be honoured.
    Refuse(String),
}

/// Pure choice of backend from the operator's wish and what detection found (`None` when
/// detection did not run: `--backend cpu`).
pub fn decide(choice: BackendChoice, detection: Option<&Detection>) -> Decision {
    match (choice, detection) {
        (BackendChoice::Cpu, _) | (_, None) => Decision::UseCpu {
            reason: "the cpu backend was requested".to_string(),
            warn: false,
        },
        (_, Some(Detection::Devices { .. })) => Decision::UseGpu,
        (BackendChoice::Cuda, Some(found)) => Decision::Refuse(found.describe()),
        (BackendChoice::Auto, Some(found)) => Decision::UseCpu {
            reason: found.describe(),
            // Nothing to fix on a machine without a GPU.
            warn: !matches!(found, Detection::NoDriver | Detection::NoDevice),
        },
    }
}

/// Looks for a real CUDA driver and its devices. Never panics.
pub fn detect() -> Detection {
    // SAFETY: only dlopens the candidate library names and closes them again; loading a
    // driver runs its initialisers, which is what using it would do anyway.
    if !unsafe { sys::is_culib_present() } {
        return Detection::NoDriver;
    }
    let probe = catch_unwind(AssertUnwindSafe(|| {
        if driver::has_symbol("gpufn_stub_version") {
            if !stub_allowed() {
                return Detection::StubLibrary;
            }
            tracing::warn!(
                "{ALLOW_STUB_ENV} is set: the cuda backend drives gpufn's own stub, which \
                 forwards to another worker (a test setup, not a GPU)"
            );
        }
        // SAFETY: cuInit takes flags 0.
        let init = unsafe { sys::cuInit(0) };
        match init {
            sys::CUresult::CUDA_SUCCESS => {}
            sys::CUresult::CUDA_ERROR_NO_DEVICE => return Detection::NoDevice,
            other => return Detection::DriverError(driver::error(other, "cuInit").message),
        }
        let mut version = 0;
        if let Err(e) = check(
            // SAFETY: valid out-pointer.
            unsafe { sys::cuDriverGetVersion(&mut version) },
            "cuDriverGetVersion",
        ) {
            return Detection::DriverError(e.message);
        }
        let mut count = 0;
        // SAFETY: valid out-pointer.
        match unsafe { sys::cuDeviceGetCount(&mut count) } {
            sys::CUresult::CUDA_SUCCESS if count > 0 => {}
            sys::CUresult::CUDA_SUCCESS | sys::CUresult::CUDA_ERROR_NO_DEVICE => {
                return Detection::NoDevice;
            }
            other => {
                return Detection::DriverError(driver::error(other, "cuDeviceGetCount").message);
            }
        }
        if version < MIN_DRIVER_VERSION {
            return Detection::UnsupportedDriver { version };
        }
        Detection::Devices {
            count: count as u32,
            driver_version: version,
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

/// A GPU and the resources its sessions share.
struct Gpu {
    device: sys::CUdevice,
    /// Virtual addresses reserved for all sessions' ranges, for the worker's life.
    window: MemoryRange,
    /// Allocation granularity of the device's memory (bytes).
    granularity: u64,
    primary: sys::CUcontext,
    /// Declared after `primary`'s owner fields but dropped before the primary context is
    /// released (see `Drop`).
    staging: std::mem::ManuallyDrop<staging::StagingPool>,
}

// SAFETY: the handles are plain driver handles usable from any thread (each use makes the
// right context current first); the staging pool is thread-safe.
unsafe impl Send for Gpu {}
// SAFETY: see above.
unsafe impl Sync for Gpu {}

impl Drop for Gpu {
    fn drop(&mut self) {
        // SAFETY: dropped exactly once, here, while the primary context is still retained.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.staging) };
        if let Ok(_current) = Current::enter(self.primary) {
            // SAFETY: the window reserved in `CudaDevice::open`; every session (each holds
            // an `Arc<Gpu>`) has unmapped its memory and ended.
            let _ = unsafe { sys::cuMemAddressFree(self.window.base, self.window.size as usize) };
        }
        // SAFETY: releases the retain made in `CudaDevice::open`.
        let _ = unsafe { sys::cuDevicePrimaryCtxRelease_v2(self.device) };
    }
}

/// A real GPU serving sessions.
pub struct CudaDevice {
    gpu: Arc<Gpu>,
    properties: DeviceProperties,
    monitor: Option<nvml::GpuMonitor>,
}

impl CudaDevice {
    /// Opens GPU `ordinal`. Call only after [`detect`] found devices.
    pub fn open(ordinal: u32) -> Result<Self, String> {
        catch_unwind(|| Self::open_checked(ordinal)).unwrap_or_else(|_| {
            Err("the CUDA driver library panicked while opening the GPU".to_string())
        })
    }

    fn open_checked(ordinal: u32) -> Result<Self, String> {
        let missing = driver::missing_symbols();
        if !missing.is_empty() {
            return Err(format!(
                "the CUDA driver lacks functions the cuda backend calls ({}); update the \
                 NVIDIA driver",
                missing.join(", ")
            ));
        }
        let opened = (|| -> Result<Self, DeviceError> {
            let mut device: sys::CUdevice = 0;
            check(
                // SAFETY: valid out-pointer; the driver validates the ordinal.
                unsafe { sys::cuDeviceGet(&mut device, ordinal as i32) },
                "opening the device",
            )?;
            let properties = properties::read(device)?;
            let mut primary: sys::CUcontext = std::ptr::null_mut();
            check(
                // SAFETY: valid out-pointer; released in `Gpu::drop` (or below on failure).
                unsafe { sys::cuDevicePrimaryCtxRetain(&mut primary, device) },
                "retaining the primary context",
            )?;
            // The virtual memory calls run with the primary context current.
            let layout = Current::enter(primary).and_then(|_current| {
                let granularity = session::granularity(device)?;
                Ok((granularity, reserve_window(granularity)?))
            });
            let (granularity, window) = match layout {
                Ok(layout) => layout,
                Err(e) => {
                    // SAFETY: releases the retain made above.
                    let _ = unsafe { sys::cuDevicePrimaryCtxRelease_v2(device) };
                    return Err(e);
                }
            };
            let gpu = Gpu {
                device,
                window,
                granularity,
                primary,
                staging: std::mem::ManuallyDrop::new(staging::StagingPool::new(primary)),
            };
            let monitor = match nvml::GpuMonitor::open(properties.uuid) {
                Ok(monitor) => Some(monitor),
                Err(e) => {
                    tracing::warn!("{e}; GPU utilisation, temperature and power are not reported");
                    None
                }
            };
            Ok(CudaDevice {
                gpu: Arc::new(gpu),
                properties,
                monitor,
            })
        })();
        let device = opened.map_err(|e| e.message)?;
        // Exercise the context and the staging path once, so a broken setup fails here and
        // not in the first session.
        {
            let _current = Current::enter(device.gpu.primary).map_err(|e| e.message)?;
            let pair = device.gpu.staging.take().map_err(|e| e.message)?;
            device.gpu.staging.give_back(pair);
        }
        tracing::info!(
            name = %device.properties.name,
            memory_bytes = device.properties.total_memory,
            granularity = device.gpu.granularity,
            telemetry = ?device.telemetry(),
            "serving sessions on the GPU"
        );
        Ok(device)
    }
}

/// Session ranges the worker asks a GPU to reserve at first; fewer if the driver refuses.
const WINDOW_RANGES: u32 = 32;

/// Reserves virtual addresses for every session's range, once, at worker start: a session
/// range must be an address range the driver can reserve (with unified addressing it must
/// also be free in the worker's own address space), which a fixed layout cannot promise. The
/// worker then hands out session ranges inside it (`Device::session_window`). The worker's
/// usual base is passed as a hint; the driver may place the window elsewhere.
fn reserve_window(granularity: u64) -> Result<MemoryRange, DeviceError> {
    let mut ranges = WINDOW_RANGES;
    loop {
        let size = u64::from(ranges) * RANGE_SIZE;
        let mut base: sys::CUdeviceptr = 0;
        // SAFETY: valid out-pointer; reserves virtual addresses only.
        let result = unsafe {
            sys::cuMemAddressReserve(
                &mut base,
                size as usize,
                granularity as usize,
                RANGES_BASE,
                0,
            )
        };
        match result {
            sys::CUresult::CUDA_SUCCESS => {
                tracing::info!(
                    base = format!("0x{base:x}"),
                    sessions = ranges,
                    "reserved the sessions' device address ranges"
                );
                return Ok(MemoryRange { base, size });
            }
            _ if ranges > 1 => ranges /= 2,
            other => {
                return Err(driver::error(
                    other,
                    "reserving virtual addresses for one session range (1 TiB)",
                ));
            }
        }
    }
}

impl Device for CudaDevice {
    fn properties(&self) -> &DeviceProperties {
        &self.properties
    }

    fn open_session(
        &self,
        range: MemoryRange,
        _quota: u64,
        _worker_half: u64,
    ) -> Result<Box<dyn DeviceSession>, DeviceError> {
        // The quota is enforced by the worker's address space; module variables are placed
        // by the driver (outside the range), so the worker half needs no marker here.
        Ok(Box::new(session::CudaSession::open(
            self.gpu.clone(),
            range,
        )?))
    }

    fn session_window(&self) -> Option<MemoryRange> {
        Some(self.gpu.window)
    }

    fn telemetry(&self) -> Option<DeviceTelemetry> {
        let monitor = self.monitor.as_ref()?;
        monitor
            .sample()
            .inspect_err(|e| tracing::debug!("NVML reading failed: {e}"))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_choice_follows_the_operator_and_the_machine() {
        let gpu = Detection::Devices {
            count: 1,
            driver_version: 13000,
        };
        assert_eq!(decide(BackendChoice::Auto, Some(&gpu)), Decision::UseGpu);
        assert_eq!(decide(BackendChoice::Cuda, Some(&gpu)), Decision::UseGpu);
        assert!(matches!(
            decide(BackendChoice::Cpu, None),
            Decision::UseCpu { warn: false, .. }
        ));
        for quiet in [Detection::NoDriver, Detection::NoDevice] {
            assert!(matches!(
                decide(BackendChoice::Auto, Some(&quiet)),
                Decision::UseCpu { warn: false, .. }
            ));
        }
        for fixable in [
            Detection::StubLibrary,
            Detection::DriverError("CUDA_ERROR_UNKNOWN".into()),
            Detection::UnsupportedDriver { version: 12020 },
        ] {
            let Decision::UseCpu { reason, warn: true } =
                decide(BackendChoice::Auto, Some(&fixable))
            else {
                panic!("{fixable:?} must fall back to the cpu device with a warning");
            };
            assert_eq!(reason, fixable.describe());
            assert_eq!(
                decide(BackendChoice::Cuda, Some(&fixable)),
                Decision::Refuse(fixable.describe())
            );
        }
    }

    #[test]
    fn reasons_name_the_fix() {
        assert!(
            Detection::StubLibrary
                .describe()
                .contains("LD_LIBRARY_PATH")
        );
        let old = Detection::UnsupportedDriver { version: 12020 }.describe();
        assert!(
            old.contains("CUDA 12.2") && old.contains("12.4") && old.contains("update"),
            "{old}"
        );
    }

    #[test]
    fn param_alignment_follows_offset_and_size() {
        use session::param_align;
        assert_eq!(param_align(0, 8), 8);
        assert_eq!(param_align(8, 4), 4);
        assert_eq!(param_align(12, 4), 4);
        assert_eq!(
            param_align(4, 8),
            4,
            "an 8-byte struct of floats at offset 4"
        );
        assert_eq!(param_align(16, 16), 16);
        assert_eq!(param_align(0, 1), 1);
        assert_eq!(param_align(0, 12), 4, "three floats");
    }

    #[test]
    fn ptx_gets_its_nul_and_binaries_stay_as_they_are() {
        use session::driver_image;
        assert_eq!(driver_image(b".version 8.5"), b".version 8.5\0");
        assert_eq!(driver_image(b".version 8.5\0"), b".version 8.5\0");
        let fatbin = [0x50, 0xed, 0x55, 0xba, 1, 0, 16, 0];
        assert_eq!(driver_image(&fatbin), fatbin);
        assert_eq!(driver_image(b"\x7fELF\x02\x01"), b"\x7fELF\x02\x01");
    }
}
