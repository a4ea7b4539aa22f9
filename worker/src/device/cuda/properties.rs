//! What a session is told about the GPU: the device's own name, UUID, memory and
//! attributes (so libraries pick machine code for the real compute capability), except
//! where an attribute describes a feature programs reach through gpufn's stub rather than
//! the device itself.

use super::driver::{check, device_attribute};
use crate::error::DeviceError;
use cudarc::driver::sys;
use gpufn_proto::DeviceAttribute as A;
use gpufn_proto::message::{Backend, DeviceProperties};
use std::ffi::{CStr, c_char};

/// Attributes whose value depends on what the stub implements (managed and host-registered
/// memory, IPC and export handles, the VMM and pool APIs, cooperative and cluster launches),
/// not on the GPU: a program must not plan on a feature the stub does not forward. The
/// values are the cpu backend's, so a program sees the same features on either backend.
pub const STUB_DEFINED: &[(A, i32)] = &[
    (A::INTEGRATED, 0),
    (A::CAN_MAP_HOST_MEMORY, 1),
    (A::MANAGED_MEMORY, 0),
    (A::MULTI_GPU_BOARD, 0),
    (A::MULTI_GPU_BOARD_GROUP_ID, 0),
    (A::HOST_NATIVE_ATOMIC_SUPPORTED, 0),
    (A::PAGEABLE_MEMORY_ACCESS, 0),
    (A::CONCURRENT_MANAGED_ACCESS, 0),
    (A::CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM, 0),
    (A::CAN_USE_STREAM_MEM_OPS_V1, 0),
    (A::CAN_USE_64_BIT_STREAM_MEM_OPS_V1, 0),
    (A::CAN_USE_STREAM_WAIT_VALUE_NOR_V1, 0),
    (A::COOPERATIVE_LAUNCH, 0),
    (A::COOPERATIVE_MULTI_DEVICE_LAUNCH, 0),
    (A::CAN_FLUSH_REMOTE_WRITES, 0),
    (A::HOST_REGISTER_SUPPORTED, 0),
    (A::PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES, 0),
    (A::DIRECT_MANAGED_MEM_ACCESS_FROM_HOST, 0),
    (A::VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, 0),
    (A::HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED, 0),
    (A::HANDLE_TYPE_WIN32_HANDLE_SUPPORTED, 0),
    (A::HANDLE_TYPE_WIN32_KMT_HANDLE_SUPPORTED, 0),
    (A::GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED, 0),
    (A::READ_ONLY_HOST_REGISTER_SUPPORTED, 0),
    (A::TIMELINE_SEMAPHORE_INTEROP_SUPPORTED, 0),
    (A::MEMORY_POOLS_SUPPORTED, 0),
    (A::GPU_DIRECT_RDMA_SUPPORTED, 0),
    (A::GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS, 0),
    (A::GPU_DIRECT_RDMA_WRITES_ORDERING, 0),
    (A::MEMPOOL_SUPPORTED_HANDLE_TYPES, 0),
    (A::CLUSTER_LAUNCH, 0),
    (A::CAN_USE_64_BIT_STREAM_MEM_OPS, 0),
    (A::CAN_USE_STREAM_WAIT_VALUE_NOR, 0),
    (A::DMA_BUF_SUPPORTED, 0),
    (A::IPC_EVENT_SUPPORTED, 0),
    (A::HANDLE_TYPE_FABRIC_SUPPORTED, 0),
    (A::MULTICAST_SUPPORTED, 0),
    (A::NUMA_CONFIG, 0),
    (A::NUMA_ID, -1),
    (A::HOST_NUMA_ID, -1),
];

/// The device's properties as sessions see them; `total_memory` is the device's.
pub fn read(device: sys::CUdevice) -> Result<DeviceProperties, DeviceError> {
    let mut name = [0 as c_char; 256];
    check(
        // SAFETY: the buffer is 256 bytes and the driver NUL-terminates within `len`.
        unsafe { sys::cuDeviceGetName(name.as_mut_ptr(), name.len() as i32, device) },
        "reading the device name",
    )?;
    // SAFETY: NUL-terminated by the driver (and the buffer was zeroed).
    let name = unsafe { CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: all-zero is a valid CUuuid (a byte array).
    let mut uuid: sys::CUuuid = unsafe { std::mem::zeroed() };
    check(
        // SAFETY: valid out-pointer.
        unsafe { sys::cuDeviceGetUuid_v2(&mut uuid, device) },
        "reading the device UUID",
    )?;
    let mut total: usize = 0;
    check(
        // SAFETY: valid out-pointer.
        unsafe { sys::cuDeviceTotalMem_v2(&mut total, device) },
        "reading the device memory size",
    )?;
    let attributes = A::ALL
        .iter()
        .filter_map(|&a| device_attribute(device, a.0).map(|v| (a, v)))
        .collect();
    Ok(DeviceProperties {
        name,
        uuid: uuid.bytes.map(|b| b as u8),
        total_memory: total as u64,
        attributes: with_stub_defined(attributes),
        backend: Backend::Cuda,
    })
}

/// The device's attribute values with [`STUB_DEFINED`] ones replaced (or added).
pub fn with_stub_defined(mut attributes: Vec<(A, i32)>) -> Vec<(A, i32)> {
    for &(attribute, value) in STUB_DEFINED {
        match attributes.iter_mut().find(|(a, _)| *a == attribute) {
            Some(entry) => entry.1 = value,
            None => attributes.push((attribute, value)),
        }
    }
    attributes.sort_by_key(|(a, _)| a.0);
    attributes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;
    use crate::device::cpu::CpuDevice;

    #[test]
    fn stub_defined_features_match_the_cpu_backend() {
        let cpu = CpuDevice::new(1);
        for &(attribute, value) in STUB_DEFINED {
            if let Some((_, cpu_value)) = cpu
                .properties()
                .attributes
                .iter()
                .find(|(a, _)| *a == attribute)
            {
                assert_eq!(*cpu_value, value, "{:?}", attribute.name());
            }
        }
    }

    #[test]
    fn device_values_stay_unless_the_stub_defines_them() {
        let device = vec![
            (A::COMPUTE_CAPABILITY_MAJOR, 9),
            (A::MANAGED_MEMORY, 1),
            (A::MULTIPROCESSOR_COUNT, 132),
        ];
        let seen = with_stub_defined(device);
        let get = |a: A| seen.iter().find(|(k, _)| *k == a).map(|(_, v)| *v);
        assert_eq!(get(A::COMPUTE_CAPABILITY_MAJOR), Some(9));
        assert_eq!(get(A::MULTIPROCESSOR_COUNT), Some(132));
        assert_eq!(
            get(A::MANAGED_MEMORY),
            Some(0),
            "the stub has no managed memory"
        );
        assert_eq!(
            get(A::CLUSTER_LAUNCH),
            Some(0),
            "added when the device omits it"
        );
        let mut keys: Vec<u32> = seen.iter().map(|(a, _)| a.0).collect();
        keys.dedup();
        assert_eq!(keys.len(), seen.len(), "no attribute twice");
    }
}
