//! The device a worker drives, behind one trait, and the choice of backend.
//!
//! A [`Device`] describes itself and opens one [`DeviceSession`] per program session. A
//! session's memory operations take the addresses the worker chose (see
//! [`crate::address_space`]): the device never picks device addresses itself, so addresses
//! stay stable across swap-out and swap-in and every backend behaves alike.

pub mod cpu;
pub mod cuda;

use crate::config::BackendChoice;
use crate::error::{DeviceError, WorkerError};
use gpufn_proto::message::{Backend, DeviceProperties, MemoryRange, ModuleId};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// A kernel as a loaded module lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelDesc {
    pub name: String,
    /// `(offset, size, align)` of every parameter in the packed parameter buffer.
    pub params: Vec<(u32, u32, u32)>,
    pub shared_bytes: u32,
    pub max_threads_per_block: u32,
}

/// A module-scope variable the device placed in the session's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalDesc {
    pub name: String,
    pub address: u64,
    pub size: u64,
}

/// What loading a module produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedModule {
    pub kernels: Vec<KernelDesc>,
    pub globals: Vec<GlobalDesc>,
    /// The `.version` of the PTX that was used, as `major * 10 + minor` (0 if unknown).
    pub ptx_version: u32,
}

/// A kernel launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch<'a> {
    pub module: ModuleId,
    pub kernel: u32,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
    /// The packed parameter buffer.
    pub params: &'a [u8],
}

/// A live reading of a GPU (NVML); every figure the device does not report is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTelemetry {
    pub name: Option<String>,
    /// As NVML writes it: `GPU-xxxxxxxx-…`.
    pub uuid: String,
    pub memory_total: Option<u64>,
    pub memory_used: Option<u64>,
    pub gpu_utilization_percent: Option<u32>,
    pub memory_utilization_percent: Option<u32>,
    pub temperature_celsius: Option<u32>,
    pub power_milliwatts: Option<u32>,
    pub pcie_tx_kib_per_s: Option<u32>,
    pub pcie_rx_kib_per_s: Option<u32>,
}

/// A device and what it tells programs about itself.
pub trait Device: Send + Sync {
    /// The properties every session is shown; `total_memory` is replaced by the session's
    /// quota.
    fn properties(&self) -> &DeviceProperties;

    /// Opens a session's view of the device: its own memory and modules, within `range`
    /// and `quota` bytes.
    fn open_session(
        &self,
        range: MemoryRange,
        quota: u64,
        worker_half: u64,
    ) -> Result<Box<dyn DeviceSession>, DeviceError>;

    /// Where session address ranges must lie, if the device decides that (a GPU: the
    /// virtual addresses its driver reserved); `None` for the worker's default layout.
    fn session_window(&self) -> Option<MemoryRange> {
        None
    }

    /// A live reading of the device for metrics, where the device has one (a GPU with NVML).
    fn telemetry(&self) -> Option<DeviceTelemetry> {
        None
    }
}

/// One session's memory and modules on a device. Every call runs to completion before it
/// returns (the CPU device is synchronous), in the order the session's requests arrived.
pub trait DeviceSession: Send {
    /// Allocates `size` zeroed bytes at `address` (which the worker checked is free).
    fn allocate_at(&mut self, address: u64, size: u64) -> Result<(), DeviceError>;
    fn free(&mut self, address: u64) -> Result<(), DeviceError>;
    fn read(&self, address: u64, out: &mut [u8]) -> Result<(), DeviceError>;
    fn write(&self, address: u64, data: &[u8]) -> Result<(), DeviceError>;

    /// Writes the `len` bytes at `address` that `fill` supplies: each call fills the whole
    /// slice it is given with the next bytes, in order (a host-to-device copy whose payload
    /// is read straight from the network). An invalid range fails like [`Self::write`];
    /// bytes `fill` was not asked for are left to the caller, and an error from `fill` ends
    /// the write with that error.
    fn write_from(&self, address: u64, len: u64, fill: &mut Fill<'_>) -> Result<(), DeviceError> {
        write_in_chunks(self, address, len, fill)
    }

    /// Loads a module image; its variables are placed in the session's memory, in the
    /// worker's half of the range.
    fn load_module(&mut self, id: ModuleId, image: &[u8]) -> Result<LoadedModule, DeviceError>;
    fn unload_module(&mut self, id: ModuleId) -> Result<(), DeviceError>;

    /// Runs a kernel to completion; returns its `printf` output. `cancel` stops it early
    /// (the session ended).
    fn launch(&self, launch: Launch<'_>, cancel: &AtomicBool) -> Result<Vec<u8>, DeviceError>;

    /// Copies `len` bytes within device memory, in bounded chunks.
    fn copy(&self, dst: u64, src: u64, len: u64) -> Result<(), DeviceError> {
        let mut chunk = vec![0u8; len.min(COPY_CHUNK) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(COPY_CHUNK) as usize;
            self.read(src + done, &mut chunk[..n])?;
            self.write(dst + done, &chunk[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    /// Fills `count` elements of `element_size` (1, 2 or 4) bytes with `value`.
    fn memset(
        &self,
        dst: u64,
        value: u32,
        element_size: u8,
        count: u64,
    ) -> Result<(), DeviceError> {
        let pattern: Vec<u8> = match element_size {
            1 => vec![value as u8],
            2 => (value as u16).to_le_bytes().to_vec(),
            4 => value.to_le_bytes().to_vec(),
            other => {
                return Err(DeviceError::invalid_value(format!(
                    "memset element size {other} is not 1, 2 or 4"
                )));
            }
        };
        let len = count
            .checked_mul(u64::from(element_size))
            .ok_or_else(|| DeviceError::invalid_value("memset size overflows"))?;
        let chunk_len = len.min(COPY_CHUNK) as usize;
        let chunk: Vec<u8> = pattern.iter().copied().cycle().take(chunk_len).collect();
        let mut done = 0;
        while done < len {
            let n = (len - done).min(COPY_CHUNK) as usize;
            self.write(dst + done, &chunk[..n])?;
            done += n as u64;
        }
        Ok(())
    }
}

/// Device-to-device copies and memsets move at most this much through host memory at once.
const COPY_CHUNK: u64 = 4 << 20;

/// Supplies the bytes of [`DeviceSession::write_from`]: fills the whole slice it is given.
pub type Fill<'a> = dyn FnMut(&mut [u8]) -> Result<(), DeviceError> + 'a;

/// [`DeviceSession::write_from`] through a temporary host buffer of at most [`COPY_CHUNK`]
/// bytes, written with [`DeviceSession::write`] chunk by chunk.
pub(crate) fn write_in_chunks<S: DeviceSession + ?Sized>(
    session: &S,
    address: u64,
    len: u64,
    fill: &mut Fill<'_>,
) -> Result<(), DeviceError> {
    let mut chunk = vec![0u8; len.min(COPY_CHUNK) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(COPY_CHUNK) as usize;
        let at = address.checked_add(done).ok_or_else(|| {
            DeviceError::invalid_value(format!("address range 0x{address:x}+{len} overflows"))
        })?;
        fill(&mut chunk[..n])?;
        session.write(at, &chunk[..n])?;
        done += n as u64;
    }
    Ok(())
}

/// Picks the backend: a real GPU when asked for or (with `Auto`) when one is present and the
/// cuda backend can open it, else the CPU device (see [`cuda::decide`]).
pub fn select(
    choice: BackendChoice,
    launch_threads: usize,
) -> Result<Arc<dyn Device>, WorkerError> {
    let detection = match choice {
        BackendChoice::Cpu => None,
        BackendChoice::Auto | BackendChoice::Cuda => Some(cuda::detect()),
    };
    let cpu = || -> Arc<dyn Device> { Arc::new(cpu::CpuDevice::new(launch_threads)) };
    match cuda::decide(choice, detection.as_ref()) {
        cuda::Decision::UseGpu => match cuda::CudaDevice::open(0) {
            Ok(gpu) => Ok(Arc::new(gpu)),
            Err(e) if choice == BackendChoice::Cuda => Err(WorkerError::CudaUnavailable(e)),
            Err(e) => {
                tracing::warn!(
                    "the GPU could not be opened: {e}; serving sessions on the cpu device instead"
                );
                Ok(cpu())
            }
        },
        cuda::Decision::UseCpu { reason, warn } => {
            if warn {
                tracing::warn!("{reason}; serving sessions on the cpu device instead");
            } else if detection.is_some() {
                tracing::info!("no GPU in use: {reason}; serving sessions on the cpu device");
            }
            Ok(cpu())
        }
        cuda::Decision::Refuse(reason) => Err(WorkerError::CudaUnavailable(reason)),
    }
}

/// Which backend a device is, for logs.
pub fn backend_name(device: &dyn Device) -> &'static str {
    match device.properties().backend {
        Backend::Cpu => "cpu",
        Backend::Cuda => "cuda",
    }
}
