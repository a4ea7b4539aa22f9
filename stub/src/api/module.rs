//! Modules, libraries, kernels and functions. A library loads as a module; `CUlibrary` and
//! `CUmodule` handles are the same id, and `CUkernel` and `CUfunction` handles point at the
//! same [`Function`], so the runtime may pass either where the other is expected.

use super::{guard, session, write_out};
use crate::client::ReplyData;
use crate::state::{self, Function, Module};
use gpufn_proto::CuResult;
use gpufn_proto::message::{ImageHash, KernelInfo, ModuleId, Reply, Request};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::{Mutex, OnceLock};

/// Images up to this size are sent with the first load; larger ones are first offered by
/// hash (the worker keeps images across sessions).
const INLINE_FIRST_LIMIT: usize = 64 << 10;

/// Hashes of images this process has already sent.
fn sent_images() -> std::sync::MutexGuard<'static, HashSet<[u8; 32]>> {
    static SENT: OnceLock<Mutex<HashSet<[u8; 32]>>> = OnceLock::new();
    SENT.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Loads the image at `image` (PTX, cubin, fatbin or fatbin wrapper) and returns the module
/// handle.
pub fn load_image(image: *const c_void) -> Result<u64, CuResult> {
    // SAFETY: the program passes a complete image that outlives this call.
    let bytes = unsafe { crate::image::image_bytes(image) }.ok_or(CuResult::ERROR_INVALID_IMAGE)?;
    load_bytes(bytes)
}

/// Under `GPUFN_DUMP_MODULES=DIR`, writes each module image the program loads to
/// `DIR/<sha256>.ptx` (or `.fatbin`, `.cubin`), so that a kernel the worker cannot run can be
/// looked at and reported. Failing to write is logged, never an error for the program.
fn dump_image(bytes: &[u8], hash: &[u8; 32]) {
    let Some(dir) = std::env::var_os("GPUFN_DUMP_MODULES") else {
        return;
    };
    let extension = if bytes.starts_with(b"\x7fELF") {
        "cubin"
    } else if bytes.starts_with(&0xBA55_ED50u32.to_le_bytes())
        || bytes.starts_with(&0x4662_43B1u32.to_le_bytes())
    {
        "fatbin"
    } else {
        "ptx"
    };
    let name: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    let path = std::path::Path::new(&dir).join(format!("{name}.{extension}"));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, bytes)) {
        crate::log::error(&format!(
            "GPUFN_DUMP_MODULES: cannot write {}: {e}",
            path.display()
        ));
    }
}

fn load_bytes(bytes: &[u8]) -> Result<u64, CuResult> {
    let session = session()?;
    let hash: [u8; 32] = Sha256::digest(bytes).into();
    dump_image(bytes, &hash);
    let id = state::next_id();
    let request = |inline| Request::ModuleLoad {
        module: ModuleId(id),
        hash: ImageHash(hash),
        inline,
    };
    let by_hash_first = bytes.len() > INLINE_FIRST_LIMIT || sent_images().contains(&hash);
    let reply = if by_hash_first {
        match session.call(&request(false), &[], ReplyData::None) {
            Err(CuResult::ERROR_NOT_FOUND) => {
                session.call(&request(true), &[bytes], ReplyData::None)
            }
            other => other,
        }
    } else {
        session.call(&request(true), &[bytes], ReplyData::None)
    }?;
    sent_images().insert(hash);
    let Reply::ModuleLoaded { kernels, globals } = reply else {
        return Err(CuResult::ERROR_UNKNOWN);
    };
    let kernels = kernels
        .into_iter()
        .enumerate()
        .map(|(index, info)| &*Box::leak(Box::new(function(ModuleId(id), index as u32, info))))
        .collect();
    state::state().modules.insert(
        id,
        Module {
            id: ModuleId(id),
            kernels,
            globals,
        },
    );
    Ok(id)
}

fn function(module: ModuleId, index: u32, info: KernelInfo) -> Function {
    let params_size = info
        .params
        .iter()
        .map(|p| (p.offset + p.size) as usize)
        .max()
        .unwrap_or(0);
    Function {
        module,
        index,
        name_c: CString::new(info.name.clone()).unwrap_or_default(),
        params_size,
        info,
        max_dynamic_shared: std::sync::atomic::AtomicI32::new(0),
    }
}

/// The function behind a `CUfunction`/`CUkernel` handle.
///
/// # Safety
/// `handle` must be null or a handle this stub gave out (they live for the process).
pub unsafe fn function_ref<'a>(handle: *const Function) -> Result<&'a Function, CuResult> {
    // SAFETY: per the contract, a non-null handle points at a leaked `Function`.
    unsafe { handle.as_ref() }.ok_or(CuResult::ERROR_INVALID_HANDLE)
}

pub(super) fn c_name<'a>(name: *const c_char) -> Result<std::borrow::Cow<'a, str>, CuResult> {
    if name.is_null() {
        return Err(CuResult::ERROR_INVALID_VALUE);
    }
    // SAFETY: NUL-terminated name from the program.
    Ok(unsafe { CStr::from_ptr(name) }.to_string_lossy())
}

fn find_kernel(module: u64, name: *const c_char) -> Result<*const Function, CuResult> {
    let name = c_name(name)?;
    let st = state::state();
    let module = st
        .modules
        .get(&module)
        .ok_or(CuResult::ERROR_INVALID_HANDLE)?;
    module
        .kernels
        .iter()
        .find(|k| k.info.name == name)
        .map(|k| *k as *const Function)
        .ok_or(CuResult::ERROR_NOT_FOUND)
}

fn find_global(module: u64, name: *const c_char) -> Result<(u64, u64), CuResult> {
    let name = c_name(name)?;
    let st = state::state();
    let module = st
        .modules
        .get(&module)
        .ok_or(CuResult::ERROR_INVALID_HANDLE)?;
    module
        .globals
        .iter()
        .find(|g| g.name == name)
        .map(|g| (g.address, g.size))
        .ok_or(CuResult::ERROR_NOT_FOUND)
}

fn unload(module: u64) -> Result<(), CuResult> {
    state::state()
        .modules
        .remove(&module)
        .ok_or(CuResult::ERROR_INVALID_HANDLE)?;
    session()?.post(
        &Request::ModuleUnload {
            module: ModuleId(module),
        },
        &[],
    )
}

fn load_file(path: *const c_char) -> Result<u64, CuResult> {
    let path = c_name(path)?;
    let mut bytes = std::fs::read(&*path).map_err(|_| CuResult::ERROR_FILE_NOT_FOUND)?;
    if !bytes.starts_with(&[0x7f, b'E', b'L', b'F'])
        && !bytes.starts_with(&0xBA55_ED50u32.to_le_bytes())
    {
        // PTX text: the loader expects its NUL.
        bytes.push(0);
    }
    let image = bytes.as_ptr().cast::<c_void>();
    let handle = load_image(image)?;
    Ok(handle)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuModuleLoadData(module: *mut u64, image: *const c_void) -> CuResult {
    guard("cuModuleLoadData", || {
        let handle = load_image(image)?;
        // SAFETY: out-parameter.
        unsafe { write_out(module, handle) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuModuleLoadDataEx(
    module: *mut u64,
    image: *const c_void,
    _n: u32,
    _opts: *mut c_void,
    _vals: *mut c_void,
) -> CuResult {
    guard("cuModuleLoadDataEx", || {
        let handle = load_image(image)?;
        // SAFETY: out-parameter.
        unsafe { write_out(module, handle) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuModuleLoadFatBinary(module: *mut u64, fatbin: *const c_void) -> CuResult {
    guard("cuModuleLoadFatBinary", || {
        let handle = load_image(fatbin)?;
        // SAFETY: out-parameter.
        unsafe { write_out(module, handle) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuModuleLoad(module: *mut u64, path: *const c_char) -> CuResult {
    guard("cuModuleLoad", || {
        let handle = load_file(path)?;
        // SAFETY: out-parameter.
        unsafe { write_out(module, handle) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuModuleUnload(module: u64) -> CuResult {
    guard("cuModuleUnload", || unload(module))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuModuleGetFunction(
    f: *mut *const Function,
    module: u64,
    name: *const c_char,
) -> CuResult {
    guard("cuModuleGetFunction", || {
        let found = find_kernel(module, name)?;
        // SAFETY: out-parameter.
        unsafe { write_out(f, found) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuModuleGetGlobal_v2(
    dptr: *mut u64,
    bytes: *mut usize,
    module: u64,
    name: *const c_char,
) -> CuResult {
    guard("cuModuleGetGlobal_v2", || {
        let (address, size) = find_global(module, name)?;
        // SAFETY: out-parameters; either may be null.
        unsafe {
            if !dptr.is_null() {
                write_out(dptr, address)?;
            }
            if !bytes.is_null() {
                write_out(bytes, size as usize)?;
            }
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuModuleGetLoadingMode(mode: *mut u32) -> CuResult {
    // CU_MODULE_LAZY_LOADING, the Linux default.
    // SAFETY: out-parameter.
    guard("cuModuleGetLoadingMode", || unsafe { write_out(mode, 2) })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuModuleGetFunctionCount(count: *mut u32, module: u64) -> CuResult {
    guard("cuModuleGetFunctionCount", || {
        let n = state::state()
            .modules
            .get(&module)
            .ok_or(CuResult::ERROR_INVALID_HANDLE)?
            .kernels
            .len();
        // SAFETY: out-parameter.
        unsafe { write_out(count, n as u32) }
    })
}

fn enumerate(out: *mut *const Function, capacity: u32, module: u64) -> Result<(), CuResult> {
    let st = state::state();
    let module = st
        .modules
        .get(&module)
        .ok_or(CuResult::ERROR_INVALID_HANDLE)?;
    if out.is_null() {
        return Err(CuResult::ERROR_INVALID_VALUE);
    }
    for (i, k) in module.kernels.iter().take(capacity as usize).enumerate() {
        // SAFETY: `out` holds `capacity` entries.
        unsafe { out.add(i).write(*k as *const Function) };
    }
    Ok(())
}

#[unsafe(no_mangle)]
pub extern "C" fn cuModuleEnumerateFunctions(
    out: *mut *const Function,
    capacity: u32,
    module: u64,
) -> CuResult {
    guard("cuModuleEnumerateFunctions", || {
        enumerate(out, capacity, module)
    })
}

// --- libraries ---

#[unsafe(no_mangle)]
pub extern "C" fn cuLibraryLoadData(
    library: *mut u64,
    code: *const c_void,
    _jit_options: *mut c_void,
    _jit_values: *mut c_void,
    _jit_count: u32,
    _options: *mut c_void,
    _values: *mut c_void,
    _count: u32,
) -> CuResult {
    guard("cuLibraryLoadData", || {
        let handle = load_image(code)?;
        // SAFETY: out-parameter.
        unsafe { write_out(library, handle) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLibraryLoadFromFile(
    library: *mut u64,
    path: *const c_char,
    _jit_options: *mut c_void,
    _jit_values: *mut c_void,
    _jit_count: u32,
    _options: *mut c_void,
    _values: *mut c_void,
    _count: u32,
) -> CuResult {
    guard("cuLibraryLoadFromFile", || {
        let handle = load_file(path)?;
        // SAFETY: out-parameter.
        unsafe { write_out(library, handle) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLibraryUnload(library: u64) -> CuResult {
    guard("cuLibraryUnload", || unload(library))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLibraryGetKernel(
    kernel: *mut *const Function,
    library: u64,
    name: *const c_char,
) -> CuResult {
    guard("cuLibraryGetKernel", || {
        let found = find_kernel(library, name)?;
        // SAFETY: out-parameter.
        unsafe { write_out(kernel, found) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLibraryGetModule(module: *mut u64, library: u64) -> CuResult {
    guard("cuLibraryGetModule", || {
        if !state::state().modules.contains_key(&library) {
            return Err(CuResult::ERROR_INVALID_HANDLE);
        }
        // SAFETY: out-parameter.
        unsafe { write_out(module, library) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLibraryGetGlobal(
    dptr: *mut u64,
    bytes: *mut usize,
    library: u64,
    name: *const c_char,
) -> CuResult {
    cuModuleGetGlobal_v2(dptr, bytes, library, name)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLibraryGetKernelCount(count: *mut u32, library: u64) -> CuResult {
    cuModuleGetFunctionCount(count, library)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLibraryEnumerateKernels(
    out: *mut *const Function,
    capacity: u32,
    library: u64,
) -> CuResult {
    guard("cuLibraryEnumerateKernels", || {
        enumerate(out, capacity, library)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuKernelGetFunction(
    f: *mut *const Function,
    kernel: *const Function,
) -> CuResult {
    guard("cuKernelGetFunction", || {
        // SAFETY: a handle this stub gave out.
        unsafe { function_ref(kernel)? };
        // SAFETY: out-parameter.
        unsafe { write_out(f, kernel) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuKernelGetLibrary(library: *mut u64, kernel: *const Function) -> CuResult {
    guard("cuKernelGetLibrary", || {
        // SAFETY: a handle this stub gave out.
        let k = unsafe { function_ref(kernel)? };
        // SAFETY: out-parameter.
        unsafe { write_out(library, k.module.0) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuFuncGetModule(module: *mut u64, f: *const Function) -> CuResult {
    cuKernelGetLibrary(module, f)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuKernelGetName(name: *mut *const c_char, kernel: *const Function) -> CuResult {
    guard("cuKernelGetName", || {
        // SAFETY: a handle this stub gave out.
        let k = unsafe { function_ref(kernel)? };
        // SAFETY: out-parameter.
        unsafe { write_out(name, k.name_c.as_ptr()) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuFuncGetName(name: *mut *const c_char, f: *const Function) -> CuResult {
    cuKernelGetName(name, f)
}

fn param_info(
    f: *const Function,
    index: usize,
    offset: *mut usize,
    size: *mut usize,
) -> Result<(), CuResult> {
    // SAFETY: a handle this stub gave out.
    let k = unsafe { function_ref(f)? };
    let p = k
        .info
        .params
        .get(index)
        .ok_or(CuResult::ERROR_INVALID_VALUE)?;
    // SAFETY: out-parameters; either may be null.
    unsafe {
        if !offset.is_null() {
            write_out(offset, p.offset as usize)?;
        }
        if !size.is_null() {
            write_out(size, p.size as usize)?;
        }
    }
    Ok(())
}

#[unsafe(no_mangle)]
pub extern "C" fn cuFuncGetParamInfo(
    f: *const Function,
    index: usize,
    offset: *mut usize,
    size: *mut usize,
) -> CuResult {
    guard("cuFuncGetParamInfo", || param_info(f, index, offset, size))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuKernelGetParamInfo(
    k: *const Function,
    index: usize,
    offset: *mut usize,
    size: *mut usize,
) -> CuResult {
    guard("cuKernelGetParamInfo", || {
        param_info(k, index, offset, size)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuFuncGetParamCount(f: *const Function, count: *mut usize) -> CuResult {
    guard("cuFuncGetParamCount", || {
        // SAFETY: a handle this stub gave out.
        let k = unsafe { function_ref(f)? };
        // SAFETY: out-parameter.
        unsafe { write_out(count, k.info.params.len()) }
    })
}

/// A `CUfunction_attribute` of a kernel.
fn function_attribute(k: &Function, attribute: c_int) -> Result<c_int, CuResult> {
    use gpufn_proto::DeviceAttribute as D;
    let device = |a| super::device::attribute(0, a);
    let cc = device(D::COMPUTE_CAPABILITY_MAJOR)? * 10 + device(D::COMPUTE_CAPABILITY_MINOR)?;
    let optin = device(D(97))?; // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
    Ok(match attribute {
        0 => k.info.max_threads_per_block as c_int,
        1 => k.info.shared_bytes as c_int,
        2 | 3 => 0,
        4 => 32,
        5 | 6 => cc,
        7 => 0,
        8 => match k
            .max_dynamic_shared
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => (optin - k.info.shared_bytes as c_int).max(0),
            v => v,
        },
        9 => -1,
        10..=16 => 0,
        _ => return Err(CuResult::ERROR_INVALID_VALUE),
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuFuncGetAttribute(
    value: *mut c_int,
    attribute: c_int,
    f: *const Function,
) -> CuResult {
    guard("cuFuncGetAttribute", || {
        // SAFETY: a handle this stub gave out.
        let k = unsafe { function_ref(f)? };
        let v = function_attribute(k, attribute)?;
        // SAFETY: out-parameter.
        unsafe { write_out(value, v) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuKernelGetAttribute(
    value: *mut c_int,
    attribute: c_int,
    k: *const Function,
    _device: c_int,
) -> CuResult {
    cuFuncGetAttribute(value, attribute, k)
}

fn set_attribute(f: *const Function, attribute: c_int, value: c_int) -> Result<(), CuResult> {
    // SAFETY: a handle this stub gave out.
    let k = unsafe { function_ref(f)? };
    if attribute == 8 {
        k.max_dynamic_shared
            .store(value, std::sync::atomic::Ordering::Relaxed);
    }
    session()?.post(
        &Request::FunctionSetAttribute {
            function: gpufn_proto::message::FunctionRef {
                module: k.module,
                index: k.index,
            },
            attribute,
            value,
        },
        &[],
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn cuFuncSetAttribute(
    f: *const Function,
    attribute: c_int,
    value: c_int,
) -> CuResult {
    guard("cuFuncSetAttribute", || set_attribute(f, attribute, value))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuKernelSetAttribute(
    attribute: c_int,
    value: c_int,
    k: *const Function,
    _device: c_int,
) -> CuResult {
    guard("cuKernelSetAttribute", || {
        set_attribute(k, attribute, value)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuFuncSetCacheConfig(_f: *const Function, _config: u32) -> CuResult {
    guard("cuFuncSetCacheConfig", || Ok(()))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuKernelSetCacheConfig(
    _k: *const Function,
    _config: u32,
    _device: c_int,
) -> CuResult {
    guard("cuKernelSetCacheConfig", || Ok(()))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuFuncSetSharedMemConfig(_f: *const Function, _config: u32) -> CuResult {
    guard("cuFuncSetSharedMemConfig", || Ok(()))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuFuncIsLoaded(loaded: *mut u32, f: *const Function) -> CuResult {
    guard("cuFuncIsLoaded", || {
        // SAFETY: a handle this stub gave out.
        unsafe { function_ref(f)? };
        // SAFETY: out-parameter. CU_FUNCTION_LOADING_STATE_LOADED.
        unsafe { write_out(loaded, 1) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuFuncLoad(f: *const Function) -> CuResult {
    // SAFETY: a handle this stub gave out.
    guard("cuFuncLoad", || unsafe { function_ref(f) }.map(|_| ()))
}
