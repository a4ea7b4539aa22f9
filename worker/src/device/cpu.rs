//! The `cpu` backend: kernels run as PTX on the host through `gpufn-ptx`, with real,
//! bounds-checked device memory per session.

use super::{Device, DeviceSession, Fill, GlobalDesc, KernelDesc, Launch, LoadedModule};
use crate::error::DeviceError;
use gpufn_proto::message::{Backend, DeviceProperties, MemoryRange, ModuleId};
use gpufn_proto::{CuResult, DeviceAttribute as A};
use gpufn_ptx::{DeviceMemory, LaunchConfig, MemoryError, Module};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

/// Compute capability the CPU device reports: at least the newest PTX target nvcc embeds
/// (`-arch=all-major` embeds PTX for compute_120 only), so every program finds PTX to run.
pub const COMPUTE_CAPABILITY: (u32, u32) = (12, 0);
/// Most threads per block, as on every current GPU.
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
/// Static plus dynamic shared memory a block may use by default (48 KiB, as on a GPU).
pub const DEFAULT_SHARED_PER_BLOCK: u32 = 48 << 10;
/// Shared memory a block may opt into.
pub const MAX_SHARED_PER_BLOCK_OPTIN: u32 = 227 << 10;

/// The host CPU presented as a CUDA device.
#[derive(Debug)]
pub struct CpuDevice {
    properties: DeviceProperties,
    threads: usize,
}

impl CpuDevice {
    /// A CPU device whose launches use up to `threads` host threads.
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        CpuDevice {
            properties: cpu_properties(threads),
            threads,
        }
    }
}

impl Device for CpuDevice {
    fn properties(&self) -> &DeviceProperties {
        &self.properties
    }

    fn open_session(
        &self,
        _range: MemoryRange,
        quota: u64,
        worker_half: u64,
    ) -> Result<Box<dyn DeviceSession>, DeviceError> {
        let memory = DeviceMemory::new(quota);
        // gpufn-ptx places module variables above the highest address it has seen. A
        // zero-byte placeholder at the start of the worker's half of the session's range
        // moves that point there, so module variables land inside the session's range and
        // never where the client carves its own addresses.
        memory
            .allocate_at(worker_half, 0)
            .and_then(|()| memory.free(worker_half))
            .map_err(|e| DeviceError::new(CuResult::ERROR_UNKNOWN, e.to_string()))?;
        Ok(Box::new(CpuSession {
            memory,
            modules: HashMap::new(),
            threads: self.threads,
        }))
    }
}

struct CpuSession {
    memory: DeviceMemory,
    modules: HashMap<ModuleId, Module>,
    threads: usize,
}

impl DeviceSession for CpuSession {
    fn allocate_at(&mut self, address: u64, size: u64) -> Result<(), DeviceError> {
        self.memory.allocate_at(address, size).map_err(memory_error)
    }

    fn free(&mut self, address: u64) -> Result<(), DeviceError> {
        self.memory.free(address).map_err(memory_error)
    }

    fn read(&self, address: u64, out: &mut [u8]) -> Result<(), DeviceError> {
        self.memory.read(address, out).map_err(memory_error)
    }

    fn write(&self, address: u64, data: &[u8]) -> Result<(), DeviceError> {
        self.memory.write(address, data).map_err(memory_error)
    }

    /// Fills the allocation's bytes directly: one copy from the source, none through a
    /// host buffer.
    fn write_from(&self, address: u64, len: u64, fill: &mut Fill<'_>) -> Result<(), DeviceError> {
        // SAFETY: nothing else touches this session's memory while `fill` runs. The worker
        // runs a session's requests one at a time under the session's lock (this write is
        // one of them), the session's kernels run only inside its launch requests, and
        // swap-out and swap-in take the same lock.
        unsafe {
            self.memory
                .with_bytes_mut(address, len, |bytes| fill(bytes))
        }
        .map_err(memory_error)?
    }

    fn load_module(&mut self, id: ModuleId, image: &[u8]) -> Result<LoadedModule, DeviceError> {
        let (major, minor) = COMPUTE_CAPABILITY;
        let module = Module::load(image, major * 10 + minor, &self.memory)
            .map_err(|e| DeviceError::new(CuResult(e.cuda_code() as u32), e.to_string()))?;
        let shared_bytes = module.static_shared_bytes();
        let loaded = LoadedModule {
            kernels: module
                .kernels()
                .iter()
                .map(|k| KernelDesc {
                    name: k.name.clone(),
                    params: k
                        .params
                        .iter()
                        .map(|p| (p.offset, p.size, p.align))
                        .collect(),
                    shared_bytes,
                    max_threads_per_block: MAX_THREADS_PER_BLOCK,
                })
                .collect(),
            globals: module
                .globals()
                .iter()
                .map(|g| GlobalDesc {
                    name: g.name.clone(),
                    address: g.address,
                    size: g.size,
                })
                .collect(),
            ptx_version: module.ptx_version().map_or(0, |(a, b)| a * 10 + b),
        };
        if let Some(old) = self.modules.insert(id, module) {
            old.unload(&self.memory);
        }
        Ok(loaded)
    }

    fn unload_module(&mut self, id: ModuleId) -> Result<(), DeviceError> {
        let module = self
            .modules
            .remove(&id)
            .ok_or_else(|| DeviceError::invalid_handle(format!("no module {}", id.0)))?;
        module.unload(&self.memory);
        Ok(())
    }

    fn launch(&self, launch: Launch<'_>, cancel: &AtomicBool) -> Result<Vec<u8>, DeviceError> {
        let module = self.modules.get(&launch.module).ok_or_else(|| {
            DeviceError::invalid_handle(format!("no module {} is loaded", launch.module.0))
        })?;
        let kernel = module
            .kernels()
            .get(launch.kernel as usize)
            .ok_or_else(|| {
                DeviceError::invalid_handle(format!(
                    "module {} has no kernel number {}",
                    launch.module.0, launch.kernel
                ))
            })?;
        let config = LaunchConfig {
            grid: launch.grid,
            block: launch.block,
            dynamic_shared: launch.shared_bytes,
        };
        let output = module
            .launch_cancellable(
                &kernel.name,
                config,
                launch.params,
                &self.memory,
                self.threads,
                cancel,
            )
            .map_err(|e| DeviceError::new(CuResult(e.cuda_code() as u32), e.to_string()))?;
        Ok(output.printf)
    }
}

fn memory_error(e: MemoryError) -> DeviceError {
    match e {
        MemoryError::OutOfMemory { .. } => {
            DeviceError::new(CuResult::ERROR_OUT_OF_MEMORY, e.to_string())
        }
        MemoryError::InvalidAddress { .. }
        | MemoryError::NotAllocated(_)
        | MemoryError::Overlap { .. } => DeviceError::invalid_value(e.to_string()),
    }
}

/// The CPU device's name, UUID and attribute table: plausible values for a current GPU
/// where a program reads them to size its work, the host's own where they describe it.
fn cpu_properties(threads: usize) -> DeviceProperties {
    let (major, minor) = COMPUTE_CAPABILITY;
    let sms = i32::try_from(threads).unwrap_or(i32::MAX);
    let uuid = device_uuid();
    let attributes = vec![
        (A::MAX_THREADS_PER_BLOCK, MAX_THREADS_PER_BLOCK as i32),
        (A::MAX_BLOCK_DIM_X, 1024),
        (A::MAX_BLOCK_DIM_Y, 1024),
        (A::MAX_BLOCK_DIM_Z, 64),
        (A::MAX_GRID_DIM_X, i32::MAX),
        (A::MAX_GRID_DIM_Y, 65535),
        (A::MAX_GRID_DIM_Z, 65535),
        (
            A::MAX_SHARED_MEMORY_PER_BLOCK,
            DEFAULT_SHARED_PER_BLOCK as i32,
        ),
        (A::TOTAL_CONSTANT_MEMORY, 64 << 10),
        (A::WARP_SIZE, 32),
        (A::MAX_PITCH, i32::MAX),
        (A::MAX_REGISTERS_PER_BLOCK, 65536),
        (A::CLOCK_RATE, 2_000_000),
        (A::TEXTURE_ALIGNMENT, 512),
        (A::GPU_OVERLAP, 1),
        (A::MULTIPROCESSOR_COUNT, sms),
        (A::KERNEL_EXEC_TIMEOUT, 0),
        (A::INTEGRATED, 0),
        (A::CAN_MAP_HOST_MEMORY, 1),
        (A::COMPUTE_MODE, 0),
        (A::SURFACE_ALIGNMENT, 512),
        (A::CONCURRENT_KERNELS, 1),
        (A::ECC_ENABLED, 0),
        (A::PCI_BUS_ID, 0),
        (A::PCI_DEVICE_ID, 0),
        (A::PCI_DOMAIN_ID, 0),
        (A::TCC_DRIVER, 0),
        (A::MEMORY_CLOCK_RATE, 3_200_000),
        (A::GLOBAL_MEMORY_BUS_WIDTH, 256),
        (A::L2_CACHE_SIZE, 4 << 20),
        (A::MAX_THREADS_PER_MULTIPROCESSOR, 2048),
        (A::ASYNC_ENGINE_COUNT, 1),
        (A::UNIFIED_ADDRESSING, 1),
        (A::TEXTURE_PITCH_ALIGNMENT, 32),
        (A::COMPUTE_CAPABILITY_MAJOR, major as i32),
        (A::COMPUTE_CAPABILITY_MINOR, minor as i32),
        (A::STREAM_PRIORITIES_SUPPORTED, 1),
        (A::GLOBAL_L1_CACHE_SUPPORTED, 1),
        (A::LOCAL_L1_CACHE_SUPPORTED, 1),
        (A::MAX_SHARED_MEMORY_PER_MULTIPROCESSOR, 228 << 10),
        (A::MAX_REGISTERS_PER_MULTIPROCESSOR, 65536),
        (A::MANAGED_MEMORY, 0),
        (A::MULTI_GPU_BOARD, 0),
        (A::MULTI_GPU_BOARD_GROUP_ID, 0),
        (A::HOST_NATIVE_ATOMIC_SUPPORTED, 0),
        (A::SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO, 2),
        (A::PAGEABLE_MEMORY_ACCESS, 0),
        (A::CONCURRENT_MANAGED_ACCESS, 0),
        (A::COMPUTE_PREEMPTION_SUPPORTED, 1),
        (A::CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM, 0),
        (A::COOPERATIVE_LAUNCH, 0),
        (
            A::MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            MAX_SHARED_PER_BLOCK_OPTIN as i32,
        ),
        (A::CAN_FLUSH_REMOTE_WRITES, 0),
        (A::HOST_REGISTER_SUPPORTED, 0),
        (A::VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, 0),
        (A::MAX_BLOCKS_PER_MULTIPROCESSOR, 32),
        (A::MAX_PERSISTING_L2_CACHE_SIZE, 0),
        (A::MAX_ACCESS_POLICY_WINDOW_SIZE, 0),
        (A::RESERVED_SHARED_MEMORY_PER_BLOCK, 1024),
        (A::MEMORY_POOLS_SUPPORTED, 0),
        (A::CLUSTER_LAUNCH, 0),
        (A::MEM_SYNC_DOMAIN_COUNT, 1),
        (A::NUMA_CONFIG, 0),
        (A::NUMA_ID, -1),
        (A::HOST_NUMA_ID, -1),
    ];
    DeviceProperties {
        name: format!(
            "gpufn CPU device ({}, {threads} core{})",
            std::env::consts::ARCH,
            if threads == 1 { "" } else { "s" }
        ),
        uuid,
        total_memory: 0,
        attributes,
        backend: Backend::Cpu,
    }
}

/// A UUID that stays the same for this machine across worker restarts.
fn device_uuid() -> [u8; 16] {
    let machine = std::fs::read_to_string("/etc/machine-id")
        .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname"))
        .unwrap_or_default();
    let digest = Sha256::digest(format!("gpufn cpu device\n{}", machine.trim()));
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&digest[..16]);
    uuid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_describe_a_capable_device() {
        let device = CpuDevice::new(3);
        let p = device.properties();
        let get = |a: A| p.attributes.iter().find(|(k, _)| *k == a).map(|(_, v)| *v);
        assert_eq!(get(A::WARP_SIZE), Some(32));
        assert_eq!(get(A::MULTIPROCESSOR_COUNT), Some(3));
        assert_eq!(get(A::COMPUTE_CAPABILITY_MAJOR), Some(12));
        assert_eq!(get(A::UNIFIED_ADDRESSING), Some(1));
        assert_eq!(get(A::MANAGED_MEMORY), Some(0));
        assert!(p.name.contains("3 cores"), "{}", p.name);
        assert_eq!(p.uuid, CpuDevice::new(1).properties().uuid, "stable UUID");
        let mut keys: Vec<A> = p.attributes.iter().map(|(k, _)| *k).collect();
        keys.dedup();
        assert_eq!(keys.len(), p.attributes.len(), "no attribute listed twice");
    }
}
