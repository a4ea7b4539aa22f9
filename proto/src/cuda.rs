//! CUDA types shared by stub, worker and gateway: `CUresult` codes and device attributes.
//!
//! Both are open sets on the wire: a code or attribute this build does not know still
//! round-trips unchanged (a newer driver may report it), it just has no name here.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A CUDA driver API result code (`CUresult`).
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
#[repr(transparent)]
pub struct CuResult(pub u32);

macro_rules! cu_results {
    ($( $name:ident = $value:literal, $text:literal; )*) => {
        impl CuResult {
            $( #[doc = $text] pub const $name: CuResult = CuResult($value); )*

            /// Every code this build knows, in numeric order.
            pub const ALL: &'static [CuResult] = &[$( CuResult::$name ),*];

            /// The name as `cuGetErrorName` reports it (`CUDA_ERROR_INVALID_VALUE`), if known.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some(concat!("CUDA_", stringify!($name))), )*
                    _ => None,
                }
            }

            /// The description as `cuGetErrorString` reports it, if known.
            pub fn description(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some($text), )*
                    _ => None,
                }
            }
        }
    };
}

cu_results! {
    SUCCESS = 0, "no error";
    ERROR_INVALID_VALUE = 1, "invalid argument";
    ERROR_OUT_OF_MEMORY = 2, "out of memory";
    ERROR_NOT_INITIALIZED = 3, "initialization error";
    ERROR_DEINITIALIZED = 4, "driver shutting down";
    ERROR_PROFILER_DISABLED = 5, "profiler disabled while using external profiling tool";
    ERROR_PROFILER_NOT_INITIALIZED = 6, "profiler not initialized: call cudaProfilerInitialize()";
    ERROR_PROFILER_ALREADY_STARTED = 7, "profiler already started";
    ERROR_PROFILER_ALREADY_STOPPED = 8, "profiler already stopped";
    ERROR_STUB_LIBRARY = 34, "CUDA driver is a stub library";
    ERROR_DEVICE_UNAVAILABLE = 46, "CUDA-capable device(s) is/are busy or unavailable";
    ERROR_NO_DEVICE = 100, "no CUDA-capable device is detected";
    ERROR_INVALID_DEVICE = 101, "invalid device ordinal";
    ERROR_DEVICE_NOT_LICENSED = 102, "device doesn't have valid Grid license";
    ERROR_INVALID_IMAGE = 200, "device kernel image is invalid";
    ERROR_INVALID_CONTEXT = 201, "invalid device context";
    ERROR_CONTEXT_ALREADY_CURRENT = 202, "context already current";
    ERROR_MAP_FAILED = 205, "mapping of buffer object failed";
    ERROR_UNMAP_FAILED = 206, "unmapping of buffer object failed";
    ERROR_ARRAY_IS_MAPPED = 207, "array is mapped";
    ERROR_ALREADY_MAPPED = 208, "resource already mapped";
    ERROR_NO_BINARY_FOR_GPU = 209, "no kernel image is available for execution on the device";
    ERROR_ALREADY_ACQUIRED = 210, "resource already acquired";
    ERROR_NOT_MAPPED = 211, "resource not mapped";
    ERROR_NOT_MAPPED_AS_ARRAY = 212, "resource not mapped as array";
    ERROR_NOT_MAPPED_AS_POINTER = 213, "resource not mapped as pointer";
    ERROR_ECC_UNCORRECTABLE = 214, "uncorrectable ECC error encountered";
    ERROR_UNSUPPORTED_LIMIT = 215, "limit is not supported on this architecture";
    ERROR_CONTEXT_ALREADY_IN_USE = 216, "exclusive-thread device already in use by a different thread";
    ERROR_PEER_ACCESS_UNSUPPORTED = 217, "peer access is not supported between these two devices";
    ERROR_INVALID_PTX = 218, "a PTX JIT compilation failed";
    ERROR_INVALID_GRAPHICS_CONTEXT = 219, "invalid OpenGL or DirectX context";
    ERROR_NVLINK_UNCORRECTABLE = 220, "uncorrectable NVLink error detected during the execution";
    ERROR_JIT_COMPILER_NOT_FOUND = 221, "PTX JIT compiler library not found";
    ERROR_UNSUPPORTED_PTX_VERSION = 222, "the provided PTX was compiled with an unsupported toolchain";
    ERROR_JIT_COMPILATION_DISABLED = 223, "PTX JIT compilation was disabled";
    ERROR_UNSUPPORTED_EXEC_AFFINITY = 224, "the provided execution affinity is not supported";
    ERROR_UNSUPPORTED_DEVSIDE_SYNC = 225, "the provided PTX contains unsupported call to cudaDeviceSynchronize";
    ERROR_CONTAINED = 226, "an exception occurred on the device that is now contained by the GPU's error containment capability";
    ERROR_INVALID_SOURCE = 300, "device kernel image is invalid";
    ERROR_FILE_NOT_FOUND = 301, "file not found";
    ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND = 302, "shared object symbol not found";
    ERROR_SHARED_OBJECT_INIT_FAILED = 303, "shared object initialization failed";
    ERROR_OPERATING_SYSTEM = 304, "OS call failed or operation not supported on this OS";
    ERROR_INVALID_HANDLE = 400, "invalid resource handle";
    ERROR_ILLEGAL_STATE = 401, "the operation cannot be performed in the present state";
    ERROR_LOSSY_QUERY = 402, "attempted introspection would be semantically lossy";
    ERROR_NOT_FOUND = 500, "named symbol not found";
    ERROR_NOT_READY = 600, "device not ready";
    ERROR_ILLEGAL_ADDRESS = 700, "an illegal memory access was encountered";
    ERROR_LAUNCH_OUT_OF_RESOURCES = 701, "too many resources requested for launch";
    ERROR_LAUNCH_TIMEOUT = 702, "the launch timed out and was terminated";
    ERROR_LAUNCH_INCOMPATIBLE_TEXTURING = 703, "launch uses incompatible texturing mode";
    ERROR_PEER_ACCESS_ALREADY_ENABLED = 704, "peer access is already enabled";
    ERROR_PEER_ACCESS_NOT_ENABLED = 705, "peer access has not been enabled";
    ERROR_PRIMARY_CONTEXT_ACTIVE = 708, "cannot set while device is active in this process";
    ERROR_CONTEXT_IS_DESTROYED = 709, "context is destroyed";
    ERROR_ASSERT = 710, "device-side assert triggered";
    ERROR_TOO_MANY_PEERS = 711, "peer mapping resources exhausted";
    ERROR_HOST_MEMORY_ALREADY_REGISTERED = 712, "part or all of the requested memory range is already mapped";
    ERROR_HOST_MEMORY_NOT_REGISTERED = 713, "pointer does not correspond to a registered memory region";
    ERROR_HARDWARE_STACK_ERROR = 714, "hardware stack error";
    ERROR_ILLEGAL_INSTRUCTION = 715, "an illegal instruction was encountered";
    ERROR_MISALIGNED_ADDRESS = 716, "misaligned address";
    ERROR_INVALID_ADDRESS_SPACE = 717, "operation not supported on global/shared address space";
    ERROR_INVALID_PC = 718, "invalid program counter";
    ERROR_LAUNCH_FAILED = 719, "unspecified launch failure";
    ERROR_COOPERATIVE_LAUNCH_TOO_LARGE = 720, "too many blocks in cooperative launch";
    ERROR_NOT_PERMITTED = 800, "operation not permitted";
    ERROR_NOT_SUPPORTED = 801, "operation not supported";
    ERROR_SYSTEM_NOT_READY = 802, "system not yet initialized";
    ERROR_SYSTEM_DRIVER_MISMATCH = 803, "system has unsupported display driver / cuda driver combination";
    ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE = 804, "forward compatibility was attempted on non supported HW";
    ERROR_MPS_CONNECTION_FAILED = 805, "MPS client failed to connect to the MPS control daemon or the MPS server";
    ERROR_MPS_RPC_FAILURE = 806, "the remote procedural call between the MPS server and the MPS client failed";
    ERROR_MPS_SERVER_NOT_READY = 807, "MPS server is not ready to accept new MPS client requests";
    ERROR_MPS_MAX_CLIENTS_REACHED = 808, "the hardware resources required to create MPS client have been exhausted";
    ERROR_MPS_MAX_CONNECTIONS_REACHED = 809, "the hardware resources required to support device connections have been exhausted";
    ERROR_MPS_CLIENT_TERMINATED = 810, "the MPS client has been terminated by the server";
    ERROR_CDP_NOT_SUPPORTED = 811, "the module is using CUDA Dynamic Parallelism, but the current configuration does not support it";
    ERROR_CDP_VERSION_MISMATCH = 812, "the module is using CUDA Dynamic Parallelism with an unsupported version";
    ERROR_STREAM_CAPTURE_UNSUPPORTED = 900, "operation not permitted when stream is capturing";
    ERROR_STREAM_CAPTURE_INVALIDATED = 901, "operation failed due to a previous error during capture";
    ERROR_STREAM_CAPTURE_MERGE = 902, "operation would result in a merge of separate capture sequences";
    ERROR_STREAM_CAPTURE_UNMATCHED = 903, "capture was not ended in the same stream as it began";
    ERROR_STREAM_CAPTURE_UNJOINED = 904, "capturing stream has unjoined work";
    ERROR_STREAM_CAPTURE_ISOLATION = 905, "dependency created on uncaptured work in another stream";
    ERROR_STREAM_CAPTURE_IMPLICIT = 906, "operation would make the legacy stream depend on a capturing blocking stream";
    ERROR_CAPTURED_EVENT = 907, "operation not permitted on an event last recorded in a capturing stream";
    ERROR_STREAM_CAPTURE_WRONG_THREAD = 908, "attempt to terminate a thread-local capture sequence from another thread";
    ERROR_TIMEOUT = 909, "wait operation timed out";
    ERROR_GRAPH_EXEC_UPDATE_FAILURE = 910, "the graph update was not performed because it included changes which violated constraints specific to instantiated graph update";
    ERROR_EXTERNAL_DEVICE = 911, "an async error has occurred in an external entity outside of CUDA";
    ERROR_INVALID_CLUSTER_SIZE = 912, "a kernel launch error has occurred due to cluster misconfiguration";
    ERROR_FUNCTION_NOT_LOADED = 913, "the function handle is not loaded when calling an API that requires a loaded function";
    ERROR_INVALID_RESOURCE_TYPE = 914, "one or more resources passed in are not valid resource types for the operation";
    ERROR_INVALID_RESOURCE_CONFIGURATION = 915, "one or more resources are insufficient or non-applicable for the operation";
    ERROR_KEY_ROTATION = 916, "an error happened during the key rotation sequence";
    ERROR_UNKNOWN = 999, "unknown error";
}

impl CuResult {
    /// True for `CUDA_SUCCESS`.
    pub fn is_success(self) -> bool {
        self == CuResult::SUCCESS
    }
}

impl fmt::Debug for CuResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}({})", self.0),
            None => write!(f, "CUresult({})", self.0),
        }
    }
}

impl fmt::Display for CuResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.name(), self.description()) {
            (Some(name), Some(text)) => write!(f, "{name}: {text}"),
            _ => write!(f, "unrecognised CUDA error code {}", self.0),
        }
    }
}

/// A device attribute (`CUdevice_attribute`).
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
#[repr(transparent)]
pub struct DeviceAttribute(pub u32);

macro_rules! device_attributes {
    ($( $name:ident = $value:literal; )*) => {
        impl DeviceAttribute {
            $( #[allow(missing_docs)] pub const $name: DeviceAttribute = DeviceAttribute($value); )*

            /// Every attribute this build knows, in numeric order.
            pub const ALL: &'static [DeviceAttribute] = &[$( DeviceAttribute::$name ),*];

            /// The name without its `CU_DEVICE_ATTRIBUTE_` prefix, if known.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some(stringify!($name)), )*
                    _ => None,
                }
            }
        }
    };
}

device_attributes! {
    MAX_THREADS_PER_BLOCK = 1;
    MAX_BLOCK_DIM_X = 2;
    MAX_BLOCK_DIM_Y = 3;
    MAX_BLOCK_DIM_Z = 4;
    MAX_GRID_DIM_X = 5;
    MAX_GRID_DIM_Y = 6;
    MAX_GRID_DIM_Z = 7;
    MAX_SHARED_MEMORY_PER_BLOCK = 8;
    TOTAL_CONSTANT_MEMORY = 9;
    WARP_SIZE = 10;
    MAX_PITCH = 11;
    MAX_REGISTERS_PER_BLOCK = 12;
    CLOCK_RATE = 13;
    TEXTURE_ALIGNMENT = 14;
    GPU_OVERLAP = 15;
    MULTIPROCESSOR_COUNT = 16;
    KERNEL_EXEC_TIMEOUT = 17;
    INTEGRATED = 18;
    CAN_MAP_HOST_MEMORY = 19;
    COMPUTE_MODE = 20;
    MAXIMUM_TEXTURE1D_WIDTH = 21;
    MAXIMUM_TEXTURE2D_WIDTH = 22;
    MAXIMUM_TEXTURE2D_HEIGHT = 23;
    MAXIMUM_TEXTURE3D_WIDTH = 24;
    MAXIMUM_TEXTURE3D_HEIGHT = 25;
    MAXIMUM_TEXTURE3D_DEPTH = 26;
    MAXIMUM_TEXTURE2D_LAYERED_WIDTH = 27;
    MAXIMUM_TEXTURE2D_LAYERED_HEIGHT = 28;
    MAXIMUM_TEXTURE2D_LAYERED_LAYERS = 29;
    SURFACE_ALIGNMENT = 30;
    CONCURRENT_KERNELS = 31;
    ECC_ENABLED = 32;
    PCI_BUS_ID = 33;
    PCI_DEVICE_ID = 34;
    TCC_DRIVER = 35;
    MEMORY_CLOCK_RATE = 36;
    GLOBAL_MEMORY_BUS_WIDTH = 37;
    L2_CACHE_SIZE = 38;
    MAX_THREADS_PER_MULTIPROCESSOR = 39;
    ASYNC_ENGINE_COUNT = 40;
    UNIFIED_ADDRESSING = 41;
    MAXIMUM_TEXTURE1D_LAYERED_WIDTH = 42;
    MAXIMUM_TEXTURE1D_LAYERED_LAYERS = 43;
    CAN_TEX2D_GATHER = 44;
    MAXIMUM_TEXTURE2D_GATHER_WIDTH = 45;
    MAXIMUM_TEXTURE2D_GATHER_HEIGHT = 46;
    MAXIMUM_TEXTURE3D_WIDTH_ALTERNATE = 47;
    MAXIMUM_TEXTURE3D_HEIGHT_ALTERNATE = 48;
    MAXIMUM_TEXTURE3D_DEPTH_ALTERNATE = 49;
    PCI_DOMAIN_ID = 50;
    TEXTURE_PITCH_ALIGNMENT = 51;
    MAXIMUM_TEXTURECUBEMAP_WIDTH = 52;
    MAXIMUM_TEXTURECUBEMAP_LAYERED_WIDTH = 53;
    MAXIMUM_TEXTURECUBEMAP_LAYERED_LAYERS = 54;
    MAXIMUM_SURFACE1D_WIDTH = 55;
    MAXIMUM_SURFACE2D_WIDTH = 56;
    MAXIMUM_SURFACE2D_HEIGHT = 57;
    MAXIMUM_SURFACE3D_WIDTH = 58;
    MAXIMUM_SURFACE3D_HEIGHT = 59;
    MAXIMUM_SURFACE3D_DEPTH = 60;
    MAXIMUM_SURFACE1D_LAYERED_WIDTH = 61;
    MAXIMUM_SURFACE1D_LAYERED_LAYERS = 62;
    MAXIMUM_SURFACE2D_LAYERED_WIDTH = 63;
    MAXIMUM_SURFACE2D_LAYERED_HEIGHT = 64;
    MAXIMUM_SURFACE2D_LAYERED_LAYERS = 65;
    MAXIMUM_SURFACECUBEMAP_WIDTH = 66;
    MAXIMUM_SURFACECUBEMAP_LAYERED_WIDTH = 67;
    MAXIMUM_SURFACECUBEMAP_LAYERED_LAYERS = 68;
    MAXIMUM_TEXTURE1D_LINEAR_WIDTH = 69;
    MAXIMUM_TEXTURE2D_LINEAR_WIDTH = 70;
    MAXIMUM_TEXTURE2D_LINEAR_HEIGHT = 71;
    MAXIMUM_TEXTURE2D_LINEAR_PITCH = 72;
    MAXIMUM_TEXTURE2D_MIPMAPPED_WIDTH = 73;
    MAXIMUM_TEXTURE2D_MIPMAPPED_HEIGHT = 74;
    COMPUTE_CAPABILITY_MAJOR = 75;
    COMPUTE_CAPABILITY_MINOR = 76;
    MAXIMUM_TEXTURE1D_MIPMAPPED_WIDTH = 77;
    STREAM_PRIORITIES_SUPPORTED = 78;
    GLOBAL_L1_CACHE_SUPPORTED = 79;
    LOCAL_L1_CACHE_SUPPORTED = 80;
    MAX_SHARED_MEMORY_PER_MULTIPROCESSOR = 81;
    MAX_REGISTERS_PER_MULTIPROCESSOR = 82;
    MANAGED_MEMORY = 83;
    MULTI_GPU_BOARD = 84;
    MULTI_GPU_BOARD_GROUP_ID = 85;
    HOST_NATIVE_ATOMIC_SUPPORTED = 86;
    SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO = 87;
    PAGEABLE_MEMORY_ACCESS = 88;
    CONCURRENT_MANAGED_ACCESS = 89;
    COMPUTE_PREEMPTION_SUPPORTED = 90;
    CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM = 91;
    CAN_USE_STREAM_MEM_OPS_V1 = 92;
    CAN_USE_64_BIT_STREAM_MEM_OPS_V1 = 93;
    CAN_USE_STREAM_WAIT_VALUE_NOR_V1 = 94;
    COOPERATIVE_LAUNCH = 95;
    COOPERATIVE_MULTI_DEVICE_LAUNCH = 96;
    MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;
    CAN_FLUSH_REMOTE_WRITES = 98;
    HOST_REGISTER_SUPPORTED = 99;
    PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES = 100;
    DIRECT_MANAGED_MEM_ACCESS_FROM_HOST = 101;
    VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED = 102;
    HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED = 103;
    HANDLE_TYPE_WIN32_HANDLE_SUPPORTED = 104;
    HANDLE_TYPE_WIN32_KMT_HANDLE_SUPPORTED = 105;
    MAX_BLOCKS_PER_MULTIPROCESSOR = 106;
    GENERIC_COMPRESSION_SUPPORTED = 107;
    MAX_PERSISTING_L2_CACHE_SIZE = 108;
    MAX_ACCESS_POLICY_WINDOW_SIZE = 109;
    GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED = 110;
    RESERVED_SHARED_MEMORY_PER_BLOCK = 111;
    SPARSE_CUDA_ARRAY_SUPPORTED = 112;
    READ_ONLY_HOST_REGISTER_SUPPORTED = 113;
    TIMELINE_SEMAPHORE_INTEROP_SUPPORTED = 114;
    MEMORY_POOLS_SUPPORTED = 115;
    GPU_DIRECT_RDMA_SUPPORTED = 116;
    GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS = 117;
    GPU_DIRECT_RDMA_WRITES_ORDERING = 118;
    MEMPOOL_SUPPORTED_HANDLE_TYPES = 119;
    CLUSTER_LAUNCH = 120;
    DEFERRED_MAPPING_CUDA_ARRAY_SUPPORTED = 121;
    CAN_USE_64_BIT_STREAM_MEM_OPS = 122;
    CAN_USE_STREAM_WAIT_VALUE_NOR = 123;
    DMA_BUF_SUPPORTED = 124;
    IPC_EVENT_SUPPORTED = 125;
    MEM_SYNC_DOMAIN_COUNT = 126;
    TENSOR_MAP_ACCESS_SUPPORTED = 127;
    HANDLE_TYPE_FABRIC_SUPPORTED = 128;
    UNIFIED_FUNCTION_POINTERS = 129;
    NUMA_CONFIG = 130;
    NUMA_ID = 131;
    MULTICAST_SUPPORTED = 132;
    MPS_ENABLED = 133;
    HOST_NUMA_ID = 134;
}

impl fmt::Debug for DeviceAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}({})", self.0),
            None => write!(f, "DeviceAttribute({})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_driver_spelling() {
        assert_eq!(
            CuResult::ERROR_ILLEGAL_ADDRESS.name(),
            Some("CUDA_ERROR_ILLEGAL_ADDRESS")
        );
        assert_eq!(CuResult::SUCCESS.name(), Some("CUDA_SUCCESS"));
        assert_eq!(CuResult(12345).name(), None);
        assert_eq!(
            CuResult::ERROR_OUT_OF_MEMORY.to_string(),
            "CUDA_ERROR_OUT_OF_MEMORY: out of memory"
        );
    }

    #[test]
    fn tables_are_sorted_and_unique() {
        assert!(CuResult::ALL.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(DeviceAttribute::ALL.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(DeviceAttribute::COMPUTE_CAPABILITY_MAJOR.0, 75);
    }
}
