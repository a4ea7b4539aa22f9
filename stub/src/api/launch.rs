//! Kernel launches (parameters packed from the kernel's layout, sent without waiting), host
//! callbacks (run on the client once the stream's earlier work is done) and occupancy.

use super::memory::stream_of;
use super::module::function_ref;
use super::{guard, session, write_out};
use crate::state::Function;
use gpufn_proto::message::{FunctionRef, LaunchAttribute, Request, StreamId};
use gpufn_proto::{CuResult, DeviceAttribute};
use std::ffi::{c_int, c_void};

const LAUNCH_PARAM_END: usize = 0;
const LAUNCH_PARAM_BUFFER_POINTER: usize = 1;
const LAUNCH_PARAM_BUFFER_SIZE: usize = 2;

/// The packed parameter buffer: either from `kernelParams` (one pointer per parameter,
/// copied at the kernel's offsets) or from `extra`'s ready-made buffer.
///
/// # Safety
/// `params` must hold one valid pointer per kernel parameter, or `extra` must be a valid
/// `CU_LAUNCH_PARAM_*` list, as the CUDA API requires.
unsafe fn pack_params(
    f: &Function,
    params: *const *const c_void,
    extra: *const *const c_void,
) -> Result<Vec<u8>, CuResult> {
    if !params.is_null() {
        let mut buffer = vec![0u8; f.params_size];
        for (i, p) in f.info.params.iter().enumerate() {
            // SAFETY: one pointer per parameter, each to `p.size` readable bytes.
            unsafe {
                let src = *params.add(i);
                if src.is_null() {
                    return Err(CuResult::ERROR_INVALID_VALUE);
                }
                std::ptr::copy_nonoverlapping(
                    src.cast::<u8>(),
                    buffer.as_mut_ptr().add(p.offset as usize),
                    p.size as usize,
                );
            }
        }
        return Ok(buffer);
    }
    if extra.is_null() {
        if f.info.params.is_empty() {
            return Ok(Vec::new());
        }
        return Err(CuResult::ERROR_INVALID_VALUE);
    }
    let (mut pointer, mut size): (*const u8, usize) = (std::ptr::null(), 0);
    let mut i = 0;
    loop {
        // SAFETY: `extra` is a key/value list ending with CU_LAUNCH_PARAM_END.
        let key = unsafe { *extra.add(i) } as usize;
        match key {
            LAUNCH_PARAM_END => break,
            // SAFETY: the value follows its key.
            LAUNCH_PARAM_BUFFER_POINTER => pointer = unsafe { *extra.add(i + 1) }.cast(),
            // SAFETY: the value points at a size_t.
            LAUNCH_PARAM_BUFFER_SIZE => size = unsafe { *(*extra.add(i + 1)).cast::<usize>() },
            _ => return Err(CuResult::ERROR_INVALID_VALUE),
        }
        i += 2;
    }
    if pointer.is_null() && size > 0 {
        return Err(CuResult::ERROR_INVALID_VALUE);
    }
    // SAFETY: the buffer holds `size` bytes.
    Ok(unsafe { std::slice::from_raw_parts(pointer, size) }.to_vec())
}

/// One launch, as a post.
#[allow(clippy::too_many_arguments)]
fn launch(
    f: *const Function,
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: u32,
    stream: Option<StreamId>,
    params: *const *const c_void,
    extra: *const *const c_void,
    attributes: Vec<LaunchAttribute>,
) -> Result<(), CuResult> {
    // SAFETY: a handle this stub gave out.
    let f = unsafe { function_ref(f)? };
    if grid.contains(&0) || block.contains(&0) {
        return Err(CuResult::ERROR_INVALID_VALUE);
    }
    // SAFETY: forwarded from the program per the launch API's contract.
    let buffer = unsafe { pack_params(f, params, extra)? };
    session()?.post(
        &Request::LaunchKernel {
            function: FunctionRef {
                module: f.module,
                index: f.index,
            },
            grid,
            block,
            shared_bytes,
            stream,
            attributes,
        },
        &[&buffer],
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLaunchKernel(
    f: *const Function,
    gx: u32,
    gy: u32,
    gz: u32,
    bx: u32,
    by: u32,
    bz: u32,
    shared: u32,
    stream: usize,
    params: *const *const c_void,
    extra: *const *const c_void,
) -> CuResult {
    guard("cuLaunchKernel", || {
        launch(
            f,
            [gx, gy, gz],
            [bx, by, bz],
            shared,
            stream_of(stream),
            params,
            extra,
            Vec::new(),
        )
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLaunchKernel_ptsz(
    f: *const Function,
    gx: u32,
    gy: u32,
    gz: u32,
    bx: u32,
    by: u32,
    bz: u32,
    shared: u32,
    stream: usize,
    params: *const *const c_void,
    extra: *const *const c_void,
) -> CuResult {
    cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shared, stream, params, extra)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLaunchCooperativeKernel(
    f: *const Function,
    gx: u32,
    gy: u32,
    gz: u32,
    bx: u32,
    by: u32,
    bz: u32,
    shared: u32,
    stream: usize,
    params: *const *const c_void,
) -> CuResult {
    guard("cuLaunchCooperativeKernel", || {
        let attributes = vec![LaunchAttribute::Cooperative(true)];
        launch(
            f,
            [gx, gy, gz],
            [bx, by, bz],
            shared,
            stream_of(stream),
            params,
            std::ptr::null(),
            attributes,
        )
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLaunchCooperativeKernel_ptsz(
    f: *const Function,
    gx: u32,
    gy: u32,
    gz: u32,
    bx: u32,
    by: u32,
    bz: u32,
    shared: u32,
    stream: usize,
    params: *const *const c_void,
) -> CuResult {
    cuLaunchCooperativeKernel(f, gx, gy, gz, bx, by, bz, shared, stream, params)
}

/// `CUlaunchConfig`.
#[repr(C)]
pub struct LaunchConfig {
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: u32,
    stream: usize,
    attrs: *const LaunchAttributeRaw,
    num_attrs: u32,
}

/// `CUlaunchAttribute`: an id, padding, and a 64-byte value union.
#[repr(C)]
pub struct LaunchAttributeRaw {
    id: u32,
    _pad: u32,
    value: [u32; 16],
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLaunchKernelEx(
    config: *const LaunchConfig,
    f: *const Function,
    params: *const *const c_void,
    extra: *const *const c_void,
) -> CuResult {
    guard("cuLaunchKernelEx", || {
        // SAFETY: `config` points at a CUlaunchConfig from the program.
        let config = unsafe { config.as_ref() }.ok_or(CuResult::ERROR_INVALID_VALUE)?;
        let mut attributes = Vec::new();
        for i in 0..config.num_attrs as usize {
            // SAFETY: `attrs` holds `num_attrs` entries.
            let attr = unsafe { &*config.attrs.add(i) };
            match attr.id {
                2 => attributes.push(LaunchAttribute::Cooperative(attr.value[0] != 0)),
                4 => attributes.push(LaunchAttribute::ClusterDims([
                    attr.value[0],
                    attr.value[1],
                    attr.value[2],
                ])),
                8 => attributes.push(LaunchAttribute::Priority(attr.value[0] as i32)),
                _ => {} // scheduling hints without effect on results
            }
        }
        launch(
            f,
            config.grid,
            config.block,
            config.shared_bytes,
            stream_of(config.stream),
            params,
            extra,
            attributes,
        )
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLaunchKernelEx_ptsz(
    config: *const LaunchConfig,
    f: *const Function,
    params: *const *const c_void,
    extra: *const *const c_void,
) -> CuResult {
    cuLaunchKernelEx(config, f, params, extra)
}

// --- host callbacks ---

/// Waits until the stream's earlier work is done, so a host function sees its results.
fn wait_for(stream: usize) -> Result<(), CuResult> {
    match stream_of(stream) {
        None => super::context::synchronize(super::context::active_context()),
        Some(_) => super::stream::synchronize_stream(stream),
    }
}

type HostFn = unsafe extern "C" fn(*mut c_void);
type StreamCallback = unsafe extern "C" fn(usize, CuResult, *mut c_void);

#[unsafe(no_mangle)]
pub extern "C" fn cuLaunchHostFunc(
    stream: usize,
    f: Option<HostFn>,
    data: *mut c_void,
) -> CuResult {
    guard("cuLaunchHostFunc", || {
        let f = f.ok_or(CuResult::ERROR_INVALID_VALUE)?;
        wait_for(stream)?;
        // SAFETY: the program's callback with the program's data.
        unsafe { f(data) };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLaunchHostFunc_ptsz(
    stream: usize,
    f: Option<HostFn>,
    data: *mut c_void,
) -> CuResult {
    cuLaunchHostFunc(stream, f, data)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLaunchHostFunc_v2(
    stream: usize,
    f: Option<HostFn>,
    data: *mut c_void,
    _sync_mode: u32,
) -> CuResult {
    cuLaunchHostFunc(stream, f, data)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuLaunchHostFunc_v2_ptsz(
    stream: usize,
    f: Option<HostFn>,
    data: *mut c_void,
    _sync_mode: u32,
) -> CuResult {
    cuLaunchHostFunc(stream, f, data)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamAddCallback(
    stream: usize,
    f: Option<StreamCallback>,
    data: *mut c_void,
    _flags: u32,
) -> CuResult {
    guard("cuStreamAddCallback", || {
        let f = f.ok_or(CuResult::ERROR_INVALID_VALUE)?;
        let status = match wait_for(stream) {
            Ok(()) => CuResult::SUCCESS,
            Err(e) => e,
        };
        // SAFETY: the program's callback with the program's data.
        unsafe { f(stream, status, data) };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamAddCallback_ptsz(
    stream: usize,
    f: Option<StreamCallback>,
    data: *mut c_void,
    flags: u32,
) -> CuResult {
    cuStreamAddCallback(stream, f, data, flags)
}

// --- occupancy (computed from the device's limits and the kernel's needs) ---

fn blocks_per_sm(
    f: &Function,
    block_size: c_int,
    dynamic_shared: usize,
) -> Result<c_int, CuResult> {
    if block_size <= 0 {
        return Err(CuResult::ERROR_INVALID_VALUE);
    }
    let attr = |a| super::device::attribute(0, a);
    let threads_per_sm = attr(DeviceAttribute::MAX_THREADS_PER_MULTIPROCESSOR)?.max(1);
    let max_blocks = attr(DeviceAttribute(106))?.max(1); // MAX_BLOCKS_PER_MULTIPROCESSOR
    let shared_per_sm =
        attr(DeviceAttribute::MAX_SHARED_MEMORY_PER_MULTIPROCESSOR)?.max(0) as usize;
    let warps = (block_size + 31) / 32 * 32;
    let mut blocks = (threads_per_sm / warps).min(max_blocks);
    let shared = f.info.shared_bytes as usize + dynamic_shared;
    if shared > 0 && shared_per_sm > 0 {
        blocks = blocks.min((shared_per_sm / shared) as c_int);
    }
    if block_size as u32 > f.info.max_threads_per_block.max(1) {
        blocks = 0;
    }
    Ok(blocks)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessor(
    n: *mut c_int,
    f: *const Function,
    block_size: c_int,
    dynamic_shared: usize,
) -> CuResult {
    guard("cuOccupancyMaxActiveBlocksPerMultiprocessor", || {
        // SAFETY: a handle this stub gave out.
        let f = unsafe { function_ref(f)? };
        let blocks = blocks_per_sm(f, block_size, dynamic_shared)?;
        // SAFETY: out-parameter.
        unsafe { write_out(n, blocks) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
    n: *mut c_int,
    f: *const Function,
    block_size: c_int,
    dynamic_shared: usize,
    _flags: u32,
) -> CuResult {
    cuOccupancyMaxActiveBlocksPerMultiprocessor(n, f, block_size, dynamic_shared)
}

type SharedForBlock = unsafe extern "C" fn(c_int) -> usize;

#[unsafe(no_mangle)]
pub extern "C" fn cuOccupancyMaxPotentialBlockSize(
    min_grid: *mut c_int,
    block_size: *mut c_int,
    f: *const Function,
    shared_for_block: Option<SharedForBlock>,
    dynamic_shared: usize,
    limit: c_int,
) -> CuResult {
    guard("cuOccupancyMaxPotentialBlockSize", || {
        // SAFETY: a handle this stub gave out.
        let f = unsafe { function_ref(f)? };
        let sms = super::device::attribute(0, DeviceAttribute::MULTIPROCESSOR_COUNT)?.max(1);
        let mut cap = (f.info.max_threads_per_block.max(32) as c_int).min(1024);
        if limit > 0 {
            cap = cap.min(limit);
        }
        let (mut best_size, mut best_threads) = (cap.max(1), 0);
        let mut size = cap - cap % 32;
        while size >= 32 {
            // SAFETY: the program's callback, if any.
            let shared = shared_for_block.map_or(dynamic_shared, |cb| unsafe { cb(size) });
            let blocks = blocks_per_sm(f, size, shared)?;
            if blocks * size > best_threads {
                best_threads = blocks * size;
                best_size = size;
            }
            size -= 32;
        }
        let shared = shared_for_block.map_or(dynamic_shared, |cb| {
            // SAFETY: the program's callback.
            unsafe { cb(best_size) }
        });
        let blocks = blocks_per_sm(f, best_size, shared)?.max(1);
        // SAFETY: out-parameters.
        unsafe {
            write_out(min_grid, blocks * sms)?;
            write_out(block_size, best_size)
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuOccupancyMaxPotentialBlockSizeWithFlags(
    min_grid: *mut c_int,
    block_size: *mut c_int,
    f: *const Function,
    shared_for_block: Option<SharedForBlock>,
    dynamic_shared: usize,
    limit: c_int,
    _flags: u32,
) -> CuResult {
    cuOccupancyMaxPotentialBlockSize(
        min_grid,
        block_size,
        f,
        shared_for_block,
        dynamic_shared,
        limit,
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn cuOccupancyAvailableDynamicSMemPerBlock(
    size: *mut usize,
    f: *const Function,
    _blocks: c_int,
    _block_size: c_int,
) -> CuResult {
    guard("cuOccupancyAvailableDynamicSMemPerBlock", || {
        // SAFETY: a handle this stub gave out.
        let f = unsafe { function_ref(f)? };
        let per_block = super::device::attribute(0, DeviceAttribute::MAX_SHARED_MEMORY_PER_BLOCK)?
            .max(0) as usize;
        // SAFETY: out-parameter.
        unsafe { write_out(size, per_block.saturating_sub(f.info.shared_bytes as usize)) }
    })
}
