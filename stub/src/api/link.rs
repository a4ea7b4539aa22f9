//! The JIT linker (`cuLinkCreate`, `cuLinkAddData`, `cuLinkAddFile`, `cuLinkComplete`,
//! `cuLinkDestroy`), as Numba and `cuda.core` use it: they compile a kernel to PTX and "link"
//! it into an image for `cuModuleLoadData`.
//!
//! The stub does not link machine code itself: the worker compiles what it loads (PTX for
//! its GPU, or into the CPU device's interpreter). So linking one image (PTX, cubin or
//! fatbin) hands back that image, which `cuModuleLoadData` then sends to the worker.
//! Linking several images (separate compilation, device libraries such as `cudadevrt`) is
//! refused with `CUDA_ERROR_NOT_SUPPORTED` and a message in the caller's error log.

use super::module::c_name;
use super::{guard, write_out};
use gpufn_proto::CuResult;
use std::collections::HashMap;
use std::ffi::{c_char, c_uint, c_void};
use std::sync::{Mutex, MutexGuard};

/// `CUjitInputType` values.
const INPUT_CUBIN: c_uint = 0;
const INPUT_PTX: c_uint = 1;
const INPUT_FATBINARY: c_uint = 2;

/// `CUjit_option` values of the log buffers the caller may pass.
const INFO_LOG_BUFFER: c_uint = 3;
const INFO_LOG_BUFFER_SIZE: c_uint = 4;
const ERROR_LOG_BUFFER: c_uint = 5;
const ERROR_LOG_BUFFER_SIZE: c_uint = 6;

/// The kind of one input image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Ptx,
    Cubin,
    Fatbinary,
}

impl InputKind {
    fn from_raw(kind: c_uint) -> Result<InputKind, String> {
        match kind {
            INPUT_PTX => Ok(InputKind::Ptx),
            INPUT_CUBIN => Ok(InputKind::Cubin),
            INPUT_FATBINARY => Ok(InputKind::Fatbinary),
            other => Err(format!(
                "gpufn links PTX, cubin and fatbin images only, not input type {other} (object \
                 files, libraries and NVVM IR need separate compilation, which the remote \
                 device does not support); compile to PTX instead"
            )),
        }
    }
}

/// What `cuLinkComplete` hands back for `inputs`: the single image, PTX with the NUL
/// `cuModuleLoadData` expects.
pub fn link_output(inputs: &[(InputKind, Vec<u8>)]) -> Result<Vec<u8>, String> {
    match inputs {
        [] => Err("nothing to link: add an image with cuLinkAddData first".into()),
        [(InputKind::Ptx, text)] => {
            let mut image = text.clone();
            // The caller's size may or may not count the NUL; exactly one must end the text.
            while image.last() == Some(&0) {
                image.pop();
            }
            image.push(0);
            Ok(image)
        }
        [(_, image)] => Ok(image.clone()),
        several => Err(format!(
            "gpufn links one image per module; {} were added (separate compilation across \
             images is not supported): compile the kernel and what it calls into one PTX",
            several.len()
        )),
    }
}

/// One `CUlinkState`.
struct LinkState {
    inputs: Vec<(InputKind, Vec<u8>)>,
    /// The completed image; `cuLinkComplete`'s pointer into it stays valid until destroy.
    output: Option<Vec<u8>>,
    logs: Logs,
}

/// The caller's log buffers from `cuLinkCreate`'s options.
#[derive(Default)]
struct Logs {
    error: Option<(usize, usize)>,
    info: Option<(usize, usize)>,
}

impl Logs {
    /// Reads the log buffers out of the option arrays and empties them.
    ///
    /// # Safety
    /// `options` and `values` must be null or hold `count` entries, as `cuLinkCreate`
    /// requires; buffer options must point to writable buffers of the given sizes.
    unsafe fn from_options(count: c_uint, options: *const c_uint, values: *const usize) -> Logs {
        let mut logs = Logs::default();
        if count == 0 || options.is_null() || values.is_null() {
            return logs;
        }
        // SAFETY: both arrays hold `count` entries (caller's contract).
        let (options, values) = unsafe {
            (
                std::slice::from_raw_parts(options, count as usize),
                std::slice::from_raw_parts(values, count as usize),
            )
        };
        let value_of = |option| options.iter().position(|&o| o == option).map(|i| values[i]);
        let buffer = |at, size| match (value_of(at), value_of(size)) {
            (Some(pointer), Some(size)) if pointer != 0 && size > 0 => Some((pointer, size)),
            _ => None,
        };
        logs.error = buffer(ERROR_LOG_BUFFER, ERROR_LOG_BUFFER_SIZE);
        logs.info = buffer(INFO_LOG_BUFFER, INFO_LOG_BUFFER_SIZE);
        for (pointer, _) in [logs.error, logs.info].into_iter().flatten() {
            // SAFETY: a writable buffer of at least one byte (size > 0 checked above).
            unsafe { (pointer as *mut u8).write(0) };
        }
        logs
    }

    /// Writes `message` (cut to fit, NUL-terminated) into the error log, if one was given.
    fn error(&self, message: &str) {
        crate::log::debug(|| format!("cuLink: {message}"));
        let Some((pointer, size)) = self.error else {
            return;
        };
        let n = message.len().min(size - 1);
        // SAFETY: the caller gave a writable buffer of `size` bytes in cuLinkCreate and
        // keeps it until cuLinkDestroy; `n + 1 <= size`.
        unsafe {
            std::ptr::copy_nonoverlapping(message.as_ptr(), pointer as *mut u8, n);
            (pointer as *mut u8).add(n).write(0);
        }
    }
}

/// Open link states by handle. Handles are numbers, never pointers the stub would follow,
/// so a stale or made-up handle is an error, not a crash.
struct Registry {
    next: usize,
    states: HashMap<usize, LinkState>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn registry() -> MutexGuard<'static, Option<Registry>> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

fn with_state<T>(
    handle: usize,
    f: impl FnOnce(&mut LinkState) -> Result<T, CuResult>,
) -> Result<T, CuResult> {
    let mut registry = registry();
    let state = registry
        .as_mut()
        .and_then(|r| r.states.get_mut(&handle))
        .ok_or(CuResult::ERROR_INVALID_HANDLE)?;
    f(state)
}

fn create(
    count: c_uint,
    options: *const c_uint,
    values: *const usize,
    out: *mut usize,
) -> Result<(), CuResult> {
    if out.is_null() {
        return Err(CuResult::ERROR_INVALID_VALUE);
    }
    // SAFETY: cuLinkCreate's contract on the option arrays.
    let logs = unsafe { Logs::from_options(count, options, values) };
    let mut registry = registry();
    let registry = registry.get_or_insert_with(|| Registry {
        next: 1,
        states: HashMap::new(),
    });
    let handle = registry.next;
    registry.next += 1;
    registry.states.insert(
        handle,
        LinkState {
            inputs: Vec::new(),
            output: None,
            logs,
        },
    );
    // SAFETY: out-parameter, checked non-null above.
    unsafe { write_out(out, handle) }
}

fn add(handle: usize, kind: c_uint, bytes: Vec<u8>) -> Result<(), CuResult> {
    with_state(handle, |state| match InputKind::from_raw(kind) {
        Ok(kind) => {
            state.inputs.push((kind, bytes));
            Ok(())
        }
        Err(message) => {
            state.logs.error(&message);
            Err(CuResult::ERROR_NOT_SUPPORTED)
        }
    })
}

fn add_data(handle: usize, kind: c_uint, data: *const c_void, size: usize) -> Result<(), CuResult> {
    if data.is_null() || size == 0 {
        return Err(CuResult::ERROR_INVALID_VALUE);
    }
    // SAFETY: the caller passes `size` readable bytes at `data`.
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), size) }.to_vec();
    add(handle, kind, bytes)
}

fn add_file(handle: usize, kind: c_uint, path: *const c_char) -> Result<(), CuResult> {
    let path = c_name(path)?;
    let bytes = std::fs::read(&*path).map_err(|e| {
        crate::log::debug(|| format!("cuLinkAddFile: cannot read {path}: {e}"));
        CuResult::ERROR_FILE_NOT_FOUND
    })?;
    add(handle, kind, bytes)
}

fn complete(
    handle: usize,
    image_out: *mut *const c_void,
    size_out: *mut usize,
) -> Result<(), CuResult> {
    if image_out.is_null() {
        return Err(CuResult::ERROR_INVALID_VALUE);
    }
    with_state(handle, |state| {
        let image = match link_output(&state.inputs) {
            Ok(image) => image,
            Err(message) => {
                state.logs.error(&message);
                return Err(if state.inputs.is_empty() {
                    CuResult::ERROR_INVALID_VALUE
                } else {
                    CuResult::ERROR_NOT_SUPPORTED
                });
            }
        };
        let image = state.output.insert(image);
        // SAFETY: out-parameters; `size_out` may be null. The image lives in the state
        // until cuLinkDestroy, as the API promises.
        unsafe {
            write_out(image_out, image.as_ptr().cast::<c_void>())?;
            if !size_out.is_null() {
                write_out(size_out, image.len())?;
            }
        }
        Ok(())
    })
}

fn destroy(handle: usize) -> Result<(), CuResult> {
    registry()
        .as_mut()
        .and_then(|r| r.states.remove(&handle))
        .map(drop)
        .ok_or(CuResult::ERROR_INVALID_HANDLE)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLinkCreate_v2(
    count: c_uint,
    options: *const c_uint,
    values: *const usize,
    state: *mut usize,
) -> CuResult {
    guard("cuLinkCreate_v2", || create(count, options, values, state))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLinkCreate(
    count: c_uint,
    options: *const c_uint,
    values: *const usize,
    state: *mut usize,
) -> CuResult {
    guard("cuLinkCreate", || create(count, options, values, state))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLinkAddData_v2(
    state: usize,
    kind: c_uint,
    data: *const c_void,
    size: usize,
    _name: *const c_char,
    _count: c_uint,
    _options: *const c_uint,
    _values: *const usize,
) -> CuResult {
    guard("cuLinkAddData_v2", || add_data(state, kind, data, size))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLinkAddData(
    state: usize,
    kind: c_uint,
    data: *const c_void,
    size: usize,
    _name: *const c_char,
    _count: c_uint,
    _options: *const c_uint,
    _values: *const usize,
) -> CuResult {
    guard("cuLinkAddData", || add_data(state, kind, data, size))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLinkAddFile_v2(
    state: usize,
    kind: c_uint,
    path: *const c_char,
    _count: c_uint,
    _options: *const c_uint,
    _values: *const usize,
) -> CuResult {
    guard("cuLinkAddFile_v2", || add_file(state, kind, path))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLinkAddFile(
    state: usize,
    kind: c_uint,
    path: *const c_char,
    _count: c_uint,
    _options: *const c_uint,
    _values: *const usize,
) -> CuResult {
    guard("cuLinkAddFile", || add_file(state, kind, path))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLinkComplete(
    state: usize,
    image: *mut *const c_void,
    size: *mut usize,
) -> CuResult {
    guard("cuLinkComplete", || complete(state, image, size))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLinkDestroy(state: usize) -> CuResult {
    guard("cuLinkDestroy", || destroy(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ptx_image_comes_back_with_one_nul() {
        for text in [&b".version 8.0"[..], b".version 8.0\0", b".version 8.0\0\0"] {
            let out = link_output(&[(InputKind::Ptx, text.to_vec())]).unwrap();
            assert_eq!(out, b".version 8.0\0");
        }
    }

    #[test]
    fn one_binary_image_comes_back_unchanged() {
        let fatbin = vec![0x50, 0xed, 0x55, 0xba, 0, 0];
        let out = link_output(&[(InputKind::Fatbinary, fatbin.clone())]).unwrap();
        assert_eq!(out, fatbin);
    }

    #[test]
    fn nothing_or_several_images_are_refused_with_a_reason() {
        assert!(link_output(&[]).unwrap_err().contains("nothing to link"));
        let two = [
            (InputKind::Ptx, b"a".to_vec()),
            (InputKind::Ptx, b"b".to_vec()),
        ];
        assert!(link_output(&two).unwrap_err().contains("2 were added"));
        assert!(
            InputKind::from_raw(4)
                .unwrap_err()
                .contains("compile to PTX")
        );
    }

    #[test]
    fn the_api_round_trip_fills_the_error_log_and_refuses_stale_handles() {
        let mut log = [0xffu8; 64];
        let options = [ERROR_LOG_BUFFER, ERROR_LOG_BUFFER_SIZE];
        let values = [log.as_mut_ptr() as usize, log.len()];
        let mut state = 0usize;
        assert_eq!(
            cuLinkCreate_v2(2, options.as_ptr(), values.as_ptr(), &mut state),
            CuResult::SUCCESS
        );
        assert_eq!(log[0], 0, "the log starts empty");
        let mut image = std::ptr::null();
        let mut size = 0usize;
        assert_eq!(
            cuLinkComplete(state, &mut image, &mut size),
            CuResult::ERROR_INVALID_VALUE
        );
        let text = std::ffi::CStr::from_bytes_until_nul(&log).unwrap();
        assert!(text.to_str().unwrap().starts_with("nothing to link"));
        let ptx = b".version 8.0\n";
        assert_eq!(
            cuLinkAddData_v2(
                state,
                INPUT_PTX,
                ptx.as_ptr().cast(),
                ptx.len(),
                std::ptr::null(),
                0,
                std::ptr::null(),
                std::ptr::null()
            ),
            CuResult::SUCCESS
        );
        assert_eq!(
            cuLinkComplete(state, &mut image, &mut size),
            CuResult::SUCCESS
        );
        // SAFETY: the state holds `size` bytes at `image` until destroyed.
        let linked = unsafe { std::slice::from_raw_parts(image.cast::<u8>(), size) };
        assert_eq!(linked, b".version 8.0\n\0");
        assert_eq!(cuLinkDestroy(state), CuResult::SUCCESS);
        assert_eq!(cuLinkDestroy(state), CuResult::ERROR_INVALID_HANDLE);
    }
}
