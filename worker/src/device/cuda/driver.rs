//! Thin helpers over the CUDA driver API as cudarc loads it (`cudarc::driver::sys`, dynamic
//! loading): result checking with faithful error translation, the current-context guard,
//! and calls whose argument types cudarc's bindings make awkward.
//!
//! cudarc resolves each driver function on first call and *panics* if the symbol is
//! missing. [`missing_symbols`] lets the backend refuse an old driver up front, so no call
//! made afterwards can panic.

use crate::error::DeviceError;
use cudarc::driver::sys;
use gpufn_proto::CuResult;
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};

/// Oldest driver API version the backend drives: it lists a module's kernels and their
/// parameters with `cuModuleEnumerateFunctions` and `cuFuncGetParamInfo` (CUDA 12.4).
pub const MIN_DRIVER_VERSION: i32 = 12040;

/// Every driver function the backend calls.
pub const REQUIRED_SYMBOLS: &[&str] = &[
    "cuInit",
    "cuDriverGetVersion",
    "cuDeviceGet",
    "cuDeviceGetCount",
    "cuDeviceGetName",
    "cuDeviceGetUuid_v2",
    "cuDeviceTotalMem_v2",
    "cuDeviceGetAttribute",
    "cuDevicePrimaryCtxRetain",
    "cuDevicePrimaryCtxRelease_v2",
    "cuCtxCreate_v2",
    "cuCtxPushCurrent_v2",
    "cuCtxPopCurrent_v2",
    "cuCtxDestroy_v2",
    "cuStreamCreate",
    "cuStreamQuery",
    "cuStreamSynchronize",
    "cuStreamDestroy_v2",
    "cuEventCreate",
    "cuEventRecord",
    "cuEventSynchronize",
    "cuEventDestroy_v2",
    "cuMemHostAlloc",
    "cuMemFreeHost",
    "cuMemcpyHtoDAsync_v2",
    "cuMemcpyDtoHAsync_v2",
    "cuMemcpyDtoDAsync_v2",
    "cuMemsetD8Async",
    "cuMemsetD16Async",
    "cuMemsetD32Async",
    "cuMemAddressReserve",
    "cuMemAddressFree",
    "cuMemCreate",
    "cuMemRelease",
    "cuMemMap",
    "cuMemUnmap",
    "cuMemSetAccess",
    "cuMemGetAllocationGranularity",
    "cuModuleLoadData",
    "cuModuleUnload",
    "cuModuleGetGlobal_v2",
    "cuModuleGetFunctionCount",
    "cuModuleEnumerateFunctions",
    "cuFuncLoad",
    "cuFuncGetName",
    "cuFuncGetParamInfo",
    "cuFuncGetAttribute",
    "cuFuncSetAttribute",
    "cuLaunchKernel",
    "cuGetErrorName",
    "cuGetErrorString",
];

/// True if the loaded driver library exports `name`.
pub fn has_symbol(name: &str) -> bool {
    let mut symbol = name.as_bytes().to_vec();
    symbol.push(0);
    // SAFETY: `culib` is the library cudarc itself loaded (the caller checked it is present);
    // the symbol is only looked up, never called.
    unsafe { sys::culib().get::<*const c_void>(symbol.as_slice()).is_ok() }
}

/// The driver functions the backend needs that the loaded library lacks.
pub fn missing_symbols() -> Vec<&'static str> {
    REQUIRED_SYMBOLS
        .iter()
        .copied()
        .filter(|name| !has_symbol(name))
        .collect()
}

/// The CUDA code a driver result stands for: the same number, so the program sees
/// exactly what the driver said.
pub fn translate(result: sys::CUresult) -> CuResult {
    CuResult(result as u32)
}

/// `Ok` for `CUDA_SUCCESS`, else the driver's error for `what` the backend was doing.
pub fn check(result: sys::CUresult, what: &str) -> Result<(), DeviceError> {
    if result == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(error(result, what))
    }
}

/// The error for a failed driver call: its own code, named as `cuGetErrorName` names it.
pub fn error(result: sys::CUresult, what: &str) -> DeviceError {
    let code = translate(result);
    DeviceError::new(code, describe(code, driver_text(result), what))
}

/// The message for `code`: what failed, the code's name and the driver's description.
pub fn describe(code: CuResult, driver_description: Option<String>, what: &str) -> String {
    let name = code
        .name()
        .map_or_else(|| format!("CUresult {}", code.0), str::to_string);
    let description = driver_description
        .or_else(|| code.description().map(str::to_string))
        .unwrap_or_else(|| "no description".to_string());
    format!("{what} failed on the GPU: {name} ({description})")
}

fn driver_text(result: sys::CUresult) -> Option<String> {
    let mut text: *const c_char = std::ptr::null();
    // SAFETY: cuGetErrorString writes a pointer to a static string (or leaves it null).
    let ok = unsafe { sys::cuGetErrorString(result, &mut text) };
    if ok != sys::CUresult::CUDA_SUCCESS || text.is_null() {
        return None;
    }
    Some(
        // SAFETY: the driver's error strings are static and NUL-terminated.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// Makes a context current on this thread until dropped (push/pop, so a caller's current
/// context survives).
pub struct Current(());

impl Current {
    pub fn enter(context: sys::CUcontext) -> Result<Current, DeviceError> {
        check(
            // SAFETY: `context` is a live context owned by the caller.
            unsafe { sys::cuCtxPushCurrent_v2(context) },
            "making the session's context current",
        )?;
        Ok(Current(()))
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        let mut popped: sys::CUcontext = std::ptr::null_mut();
        // SAFETY: pops the context `enter` pushed on this same thread.
        let _ = unsafe { sys::cuCtxPopCurrent_v2(&mut popped) };
    }
}

/// `cuDeviceGetAttribute` with the attribute as a plain number: the wire carries
/// attributes this build may not know, and cudarc types the attribute as a Rust enum, which
/// must never hold a value outside its variants. `None` if the driver rejects it.
pub fn device_attribute(device: sys::CUdevice, attribute: u32) -> Option<i32> {
    type GetAttribute = unsafe extern "C" fn(*mut c_int, c_uint, sys::CUdevice) -> c_uint;
    // SAFETY: the symbol has exactly this C signature (CUdevice_attribute is a C enum,
    // passed as an unsigned int).
    let function = unsafe {
        sys::culib()
            .get::<GetAttribute>(b"cuDeviceGetAttribute\0")
            .ok()?
    };
    let mut value: c_int = 0;
    // SAFETY: `value` is a valid out-pointer; the driver validates the attribute number.
    let result = unsafe { function(&mut value, attribute, device) };
    (result == 0).then_some(value)
}

/// `cuCtxCreate_v2`: cudarc's CUDA 13 bindings only declare `_v4`, whose parameter block
/// older drivers lack; every driver keeps exporting `_v2` for programs built against older
/// toolkits.
pub fn create_context(device: sys::CUdevice) -> Result<sys::CUcontext, DeviceError> {
    type CreateContext = unsafe extern "C" fn(*mut sys::CUcontext, c_uint, sys::CUdevice) -> c_uint;
    // SAFETY: the symbol has exactly this C signature.
    let function =
        unsafe { sys::culib().get::<CreateContext>(b"cuCtxCreate_v2\0") }.map_err(|e| {
            DeviceError::not_supported(format!("the CUDA driver has no cuCtxCreate_v2: {e}"))
        })?;
    let mut context: sys::CUcontext = std::ptr::null_mut();
    // SAFETY: valid out-pointer; flags 0 (automatic scheduling).
    let result = unsafe { function(&mut context, 0, device) };
    if result != 0 {
        let code = CuResult(result);
        return Err(DeviceError::new(
            code,
            describe(code, None, "creating the session's context"),
        ));
    }
    Ok(context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sys::CUresult as R;

    #[test]
    fn driver_codes_keep_their_number_and_name() {
        for (driver, ours) in [
            (R::CUDA_ERROR_INVALID_VALUE, CuResult::ERROR_INVALID_VALUE),
            (R::CUDA_ERROR_OUT_OF_MEMORY, CuResult::ERROR_OUT_OF_MEMORY),
            (
                R::CUDA_ERROR_NO_BINARY_FOR_GPU,
                CuResult::ERROR_NO_BINARY_FOR_GPU,
            ),
            (
                R::CUDA_ERROR_ILLEGAL_ADDRESS,
                CuResult::ERROR_ILLEGAL_ADDRESS,
            ),
            (
                R::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES,
                CuResult::ERROR_LAUNCH_OUT_OF_RESOURCES,
            ),
            (R::CUDA_ERROR_NOT_FOUND, CuResult::ERROR_NOT_FOUND),
            (R::CUDA_ERROR_UNKNOWN, CuResult::ERROR_UNKNOWN),
        ] {
            assert_eq!(translate(driver), ours);
            assert_eq!(ours.name(), Some(format!("{driver:?}").as_str()));
        }
    }

    #[test]
    fn messages_say_what_failed_and_why() {
        let m = describe(
            CuResult::ERROR_OUT_OF_MEMORY,
            None,
            "mapping 2 MiB at 0x7f0000000000",
        );
        assert_eq!(
            m,
            "mapping 2 MiB at 0x7f0000000000 failed on the GPU: CUDA_ERROR_OUT_OF_MEMORY \
             (out of memory)"
        );
        let m = describe(
            CuResult(12345),
            Some("new thing".into()),
            "loading a module",
        );
        assert!(m.contains("CUresult 12345 (new thing)"), "{m}");
    }
}
