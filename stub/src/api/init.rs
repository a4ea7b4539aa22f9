//! Initialisation, versions, symbol lookup, export tables and error texts.

use super::{guard, write_out};
use crate::exports::{ProcMiss, resolve_proc, symbol};
use gpufn_proto::CuResult;
use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::OnceLock;

/// The driver version reported (`cuDriverGetVersion`): CUDA 13.5. It must be at least the
/// runtime's version, and it enters the runtime's integrity check.
pub const DRIVER_VERSION: c_int = 13050;

const GET_PROC_PER_THREAD_DEFAULT_STREAM: u64 = 2;

#[unsafe(no_mangle)]
pub extern "C" fn cuInit(_flags: u32) -> CuResult {
    guard("cuInit", || super::session().map(|_| ()))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDriverGetVersion(version: *mut c_int) -> CuResult {
    // SAFETY: out-parameter.
    guard("cuDriverGetVersion", || unsafe {
        write_out(version, DRIVER_VERSION)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuGetProcAddress(
    name: *const c_char,
    pfn: *mut *const c_void,
    version: c_int,
    flags: u64,
) -> CuResult {
    cuGetProcAddress_v2(name, pfn, version, flags, std::ptr::null_mut())
}

#[unsafe(no_mangle)]
pub extern "C" fn cuGetProcAddress_v2(
    name: *const c_char,
    pfn: *mut *const c_void,
    version: c_int,
    flags: u64,
    status: *mut c_int,
) -> CuResult {
    if name.is_null() || pfn.is_null() {
        return CuResult::ERROR_INVALID_VALUE;
    }
    // SAFETY: `name` is a NUL-terminated symbol name from the caller.
    let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
    let per_thread = flags & GET_PROC_PER_THREAD_DEFAULT_STREAM != 0;
    let resolved = resolve_proc(&name, version.max(0) as u32, per_thread);
    let (result, code, address) = match resolved.map(|s| (s, symbol(s))) {
        Ok((resolved, Some(address))) => {
            crate::log::debug(|| format!("cuGetProcAddress({name}, {version}) = {resolved}"));
            (CuResult::SUCCESS, 0, address)
        }
        Ok((_, None)) | Err(ProcMiss::NotFound) => {
            crate::log::debug(|| format!("cuGetProcAddress({name}, {version}): not found"));
            (CuResult::ERROR_NOT_FOUND, 1, std::ptr::null())
        }
        Err(ProcMiss::VersionNotSufficient) => {
            crate::log::debug(|| format!("cuGetProcAddress({name}, {version}): too old"));
            (CuResult::ERROR_NOT_FOUND, 2, std::ptr::null())
        }
    };
    // SAFETY: out-parameters checked for null above (status may be null).
    unsafe {
        pfn.write(address);
        if !status.is_null() {
            status.write(code);
        }
    }
    result
}

#[unsafe(no_mangle)]
pub extern "C" fn cuGetExportTable(table: *mut *const c_void, id: *const [u8; 16]) -> CuResult {
    if table.is_null() || id.is_null() {
        return CuResult::ERROR_INVALID_VALUE;
    }
    // SAFETY: `id` points at a 16-byte CUuuid.
    let id = unsafe { *id };
    let found = crate::dark::table(&id);
    crate::log::debug(|| {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "cuGetExportTable({hex}) -> {}",
            if found.is_some() { "served" } else { "refused" }
        )
    });
    // SAFETY: out-parameter checked above.
    unsafe { table.write(found.unwrap_or(std::ptr::null())) };
    match found {
        Some(_) => CuResult::SUCCESS,
        None => CuResult::ERROR_INVALID_VALUE,
    }
}

fn error_texts() -> &'static HashMap<u32, (CString, CString)> {
    static TEXTS: OnceLock<HashMap<u32, (CString, CString)>> = OnceLock::new();
    TEXTS.get_or_init(|| {
        CuResult::ALL
            .iter()
            .filter_map(|code| {
                let name = CString::new(code.name()?).ok()?;
                let text = CString::new(code.description()?).ok()?;
                Some((code.0, (name, text)))
            })
            .collect()
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuGetErrorName(error: CuResult, out: *mut *const c_char) -> CuResult {
    let found = error_texts().get(&error.0).map(|t| t.0.as_ptr());
    // SAFETY: out-parameter.
    let _ = unsafe { write_out(out, found.unwrap_or(std::ptr::null())) };
    if found.is_some() {
        CuResult::SUCCESS
    } else {
        CuResult::ERROR_INVALID_VALUE
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuGetErrorString(error: CuResult, out: *mut *const c_char) -> CuResult {
    let found = error_texts().get(&error.0).map(|t| t.1.as_ptr());
    // SAFETY: out-parameter.
    let _ = unsafe { write_out(out, found.unwrap_or(std::ptr::null())) };
    if found.is_some() {
        CuResult::SUCCESS
    } else {
        CuResult::ERROR_INVALID_VALUE
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuProfilerStart() -> CuResult {
    CuResult::SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn cuProfilerStop() -> CuResult {
    CuResult::SUCCESS
}
