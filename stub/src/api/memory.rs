//! Device memory (allocation, copies in every direction, memsets, information), pinned host
//! memory (served locally: it never needs the device) and pointer attributes.

use super::{guard, session, write_out};
use crate::carve::{CarveError, Carver};
use crate::client::{COPY_CHUNK, ReplyData};
use crate::state;
use gpufn_proto::CuResult;
use gpufn_proto::message::{Reply, Request, StreamId};
use std::ffi::c_void;

/// Stream handles the program passes: 0 (legacy default), `CU_STREAM_LEGACY` (1) and
/// `CU_STREAM_PER_THREAD` (2) all mean the default stream. The worker runs a session's
/// work in order, so the per-thread default stream needs no separate treatment.
pub fn stream_of(handle: usize) -> Option<StreamId> {
    match handle {
        0..=2 => None,
        h => Some(StreamId(h as u64)),
    }
}

/// Allocates `size` bytes on the device. The address is carved locally from the client
/// half of the session's range and announced with a post; only when the session's usage
/// nears its quota is the allocation a call, so the worker's own accounting (which also
/// counts module variables) answers at once.
pub fn allocate(size: u64) -> Result<u64, CuResult> {
    if size == 0 {
        return Err(CuResult::ERROR_INVALID_VALUE);
    }
    let session = session()?;
    let Some(range) = session.memory else {
        return allocate_remotely(size);
    };
    let (address, near_quota) = {
        let mut st = state::state();
        if st.carver.is_none() {
            drop(st);
            let quota = memory_info()?.1;
            st = state::state();
            st.carver
                .get_or_insert_with(|| Carver::new(range.base, range.size, quota));
        }
        let carver = st.carver.as_mut().ok_or(CuResult::ERROR_UNKNOWN)?;
        let address = carver.allocate(size).map_err(|e| match e {
            CarveError::Zero => CuResult::ERROR_INVALID_VALUE,
            CarveError::Quota | CarveError::NoSpace => CuResult::ERROR_OUT_OF_MEMORY,
        })?;
        let (in_use, quota) = carver.usage();
        (address, in_use > quota / 4 * 3)
    };
    let request = Request::MemAlloc {
        address: Some(address),
        size,
    };
    let sent = if near_quota {
        session.call(&request, &[], ReplyData::None).map(|_| ())
    } else {
        session.post(&request, &[])
    };
    let mut st = state::state();
    if let Err(e) = sent {
        if let Some(carver) = st.carver.as_mut() {
            carver.free(address);
        }
        return Err(e);
    }
    st.device_allocations.insert(address, size);
    Ok(address)
}

/// Allocation by the worker (sessions without an address range).
fn allocate_remotely(size: u64) -> Result<u64, CuResult> {
    let reply = session()?.call(
        &Request::MemAlloc {
            address: None,
            size,
        },
        &[],
        ReplyData::None,
    )?;
    let Reply::Address(address) = reply else {
        return Err(CuResult::ERROR_UNKNOWN);
    };
    state::state().device_allocations.insert(address, size);
    Ok(address)
}

/// Free and total device memory of the session.
pub fn memory_info() -> Result<(u64, u64), CuResult> {
    match session()?.call(&Request::MemGetInfo, &[], ReplyData::None)? {
        Reply::MemInfo { free, total } => Ok((free, total)),
        _ => Err(CuResult::ERROR_UNKNOWN),
    }
}

/// Frees a device allocation (asynchronously).
pub fn free(address: u64) -> Result<(), CuResult> {
    if address == 0 {
        return Ok(());
    }
    {
        let mut st = state::state();
        if st.device_allocations.remove(&address).is_none() {
            return Err(CuResult::ERROR_INVALID_VALUE);
        }
        if let Some(carver) = st.carver.as_mut() {
            carver.free(address);
        }
    }
    session()?.post(&Request::MemFree { address }, &[])
}

/// Host → device without a round trip: small copies are copied into the outgoing batch,
/// large ones written to the connection from the program's buffer before this returns, so
/// either way the caller may reuse its buffer at once.
pub fn copy_to_device(
    dst: u64,
    src: *const c_void,
    len: usize,
    stream: Option<StreamId>,
) -> Result<(), CuResult> {
    if len == 0 {
        return Ok(());
    }
    if src.is_null() {
        return Err(CuResult::ERROR_INVALID_VALUE);
    }
    // SAFETY: the program passes `len` readable bytes at `src`.
    let bytes = unsafe { std::slice::from_raw_parts(src.cast::<u8>(), len) };
    let session = session()?;
    for (i, chunk) in bytes.chunks(COPY_CHUNK).enumerate() {
        let dst = dst + (i * COPY_CHUNK) as u64;
        session.post(&Request::MemcpyHtoD { dst, stream }, &[chunk])?;
    }
    Ok(())
}

/// Chunks of a device-to-host copy requested before the stub waits for their data: the
/// worker reads the next chunks while earlier ones cross the network, and at most this many
/// chunks' replies are in flight.
const READ_WINDOW: usize = 8;

/// Device → host: waits for the data. Up to [`READ_WINDOW`] chunk requests are in flight:
/// each time a chunk's data is in place the next chunk is requested, so the worker never
/// runs out of work in the middle of a copy.
pub fn copy_to_host(
    dst: *mut c_void,
    src: u64,
    len: usize,
    stream: Option<StreamId>,
) -> Result<(), CuResult> {
    if len == 0 {
        return Ok(());
    }
    if dst.is_null() {
        return Err(CuResult::ERROR_INVALID_VALUE);
    }
    // SAFETY: the program passes `len` writable bytes at `dst`.
    let out = unsafe { std::slice::from_raw_parts_mut(dst.cast::<u8>(), len) };
    let session = session()?;
    let chunks = len.div_ceil(COPY_CHUNK);
    for (i, chunk) in out.chunks_mut(COPY_CHUNK).enumerate() {
        let request = Request::MemcpyDtoH {
            src: src + (i * COPY_CHUNK) as u64,
            len: chunk.len() as u64,
            stream,
        };
        if i + 1 == chunks {
            // The call reads every earlier chunk's reply before its own.
            return session
                .call(&request, &[], ReplyData::Into(chunk))
                .map(drop);
        }
        // SAFETY: `chunk` stays valid until its reply is read: by `complete_reads` below, by
        // the final call, or, on an error, by the `complete_reads(0)` before returning (a
        // lost session drops the pending reads).
        unsafe { session.call_deferred(&request, chunk.as_mut_ptr(), chunk.len())? };
        if let Err(error) = session.complete_reads(READ_WINDOW - 1) {
            // No reply may land in `dst` after this copy has returned.
            let _ = session.complete_reads(0);
            return Err(error);
        }
    }
    Ok(())
}

/// Device → host on a stream. Into pinned (page-locked) memory it is sent without waiting:
/// the bytes land in `dst` by the time a later synchronising call returns, and the program
/// must synchronise before it reads them. Into pageable memory CUDA returns only once the
/// copy is done (programs such as cudarc rely on that), so it waits.
pub fn copy_to_host_async(
    dst: *mut c_void,
    src: u64,
    len: usize,
    stream: Option<StreamId>,
) -> Result<(), CuResult> {
    if len == 0 {
        return Ok(());
    }
    if dst.is_null() {
        return Err(CuResult::ERROR_INVALID_VALUE);
    }
    let pinned = state::state()
        .host_allocation(dst as usize)
        .is_some_and(|(start, size, _)| dst as usize + len <= start + size);
    if !pinned {
        return copy_to_host(dst, src, len, stream);
    }
    let session = session()?;
    let mut offset = 0;
    while offset < len {
        let n = COPY_CHUNK.min(len - offset);
        let request = Request::MemcpyDtoH {
            src: src + offset as u64,
            len: n as u64,
            stream,
        };
        // SAFETY: the program passes `len` writable bytes at `dst` and keeps them valid until
        // it synchronises, as CUDA requires of asynchronous copies.
        unsafe { session.call_deferred(&request, dst.cast::<u8>().add(offset), n)? };
        offset += n;
    }
    Ok(())
}

/// Device → device, asynchronously.
pub fn copy_on_device(
    dst: u64,
    src: u64,
    len: usize,
    stream: Option<StreamId>,
) -> Result<(), CuResult> {
    if len == 0 {
        return Ok(());
    }
    session()?.post(
        &Request::MemcpyDtoD {
            dst,
            src,
            len: len as u64,
            stream,
        },
        &[],
    )
}

/// Whether `address` is device memory of this session.
pub fn is_device_address(address: u64) -> bool {
    if state::state().device_allocation(address).is_some() {
        return true;
    }
    crate::client::existing_session()
        .and_then(|s| s.memory)
        .is_some_and(|m| address >= m.base && address - m.base < m.size)
}

/// `cuMemcpy` and `cuMemcpyAsync` (`asynchronous`): unified addressing decides the direction.
fn copy_any(
    dst: u64,
    src: u64,
    len: usize,
    stream: Option<StreamId>,
    asynchronous: bool,
) -> Result<(), CuResult> {
    match (is_device_address(dst), is_device_address(src)) {
        (true, true) => copy_on_device(dst, src, len, stream),
        (true, false) => copy_to_device(dst, src as *const c_void, len, stream),
        (false, true) if asynchronous => copy_to_host_async(dst as *mut c_void, src, len, stream),
        (false, true) => copy_to_host(dst as *mut c_void, src, len, stream),
        (false, false) => {
            // SAFETY: two host buffers of `len` bytes, as the program promises.
            unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, len) };
            Ok(())
        }
    }
}

fn memset(
    dst: u64,
    value: u32,
    element_size: u8,
    count: usize,
    stream: Option<StreamId>,
) -> Result<(), CuResult> {
    if count == 0 {
        return Ok(());
    }
    session()?.post(
        &Request::Memset {
            dst,
            value,
            element_size,
            count: count as u64,
            stream,
        },
        &[],
    )
}

fn memset_2d(
    dst: u64,
    pitch: usize,
    value: u32,
    element_size: u8,
    width: usize,
    height: usize,
    stream: Option<StreamId>,
) -> Result<(), CuResult> {
    for row in 0..height {
        memset(
            dst + (row * pitch) as u64,
            value,
            element_size,
            width,
            stream,
        )?;
    }
    Ok(())
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemAlloc_v2(dptr: *mut u64, size: usize) -> CuResult {
    guard("cuMemAlloc_v2", || {
        let address = allocate(size as u64)?;
        // SAFETY: out-parameter.
        unsafe { write_out(dptr, address) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemAllocPitch_v2(
    dptr: *mut u64,
    pitch: *mut usize,
    width: usize,
    height: usize,
    _element: u32,
) -> CuResult {
    guard("cuMemAllocPitch_v2", || {
        let row = width.div_ceil(512) * 512;
        let address = allocate((row * height) as u64)?;
        // SAFETY: out-parameters.
        unsafe {
            write_out(pitch, row)?;
            write_out(dptr, address)
        }
    })
}

/// Frees any device allocation, a stream-ordered pool block included (CUDA allows that).
#[unsafe(no_mangle)]
pub extern "C" fn cuMemFree_v2(dptr: u64) -> CuResult {
    guard("cuMemFree_v2", || super::pool::free_device(dptr))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CuResult {
    guard("cuMemGetInfo_v2", || {
        let Reply::MemInfo { free: f, total: t } =
            session()?.call(&Request::MemGetInfo, &[], ReplyData::None)?
        else {
            return Err(CuResult::ERROR_UNKNOWN);
        };
        // SAFETY: out-parameters.
        unsafe {
            write_out(free, f as usize)?;
            write_out(total, t as usize)
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemGetAddressRange_v2(base: *mut u64, size: *mut usize, dptr: u64) -> CuResult {
    guard("cuMemGetAddressRange_v2", || {
        let (start, len) = state::state()
            .device_allocation(dptr)
            .ok_or(CuResult::ERROR_NOT_FOUND)?;
        // SAFETY: out-parameters; either may be null.
        unsafe {
            if !base.is_null() {
                write_out(base, start)?;
            }
            if !size.is_null() {
                write_out(size, len as usize)?;
            }
        }
        Ok(())
    })
}

macro_rules! copy_exports {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ) => $body:expr; )*) => {
        $(
            #[unsafe(no_mangle)]
            pub extern "C" fn $name($($arg: $ty),*) -> CuResult {
                guard(stringify!($name), || $body)
            }
        )*
    };
}

copy_exports! {
    cuMemcpyHtoD_v2(dst: u64, src: *const c_void, n: usize) => copy_to_device(dst, src, n, None);
    cuMemcpyHtoD_v2_ptds(dst: u64, src: *const c_void, n: usize) => copy_to_device(dst, src, n, None);
    cuMemcpyHtoDAsync_v2(dst: u64, src: *const c_void, n: usize, s: usize) => copy_to_device(dst, src, n, stream_of(s));
    cuMemcpyHtoDAsync_v2_ptsz(dst: u64, src: *const c_void, n: usize, s: usize) => copy_to_device(dst, src, n, stream_of(s));
    cuMemcpyDtoH_v2(dst: *mut c_void, src: u64, n: usize) => copy_to_host(dst, src, n, None);
    cuMemcpyDtoH_v2_ptds(dst: *mut c_void, src: u64, n: usize) => copy_to_host(dst, src, n, None);
    cuMemcpyDtoHAsync_v2(dst: *mut c_void, src: u64, n: usize, s: usize) => copy_to_host_async(dst, src, n, stream_of(s));
    cuMemcpyDtoHAsync_v2_ptsz(dst: *mut c_void, src: u64, n: usize, s: usize) => copy_to_host_async(dst, src, n, stream_of(s));
    cuMemcpyDtoD_v2(dst: u64, src: u64, n: usize) => copy_on_device(dst, src, n, None);
    cuMemcpyDtoD_v2_ptds(dst: u64, src: u64, n: usize) => copy_on_device(dst, src, n, None);
    cuMemcpyDtoDAsync_v2(dst: u64, src: u64, n: usize, s: usize) => copy_on_device(dst, src, n, stream_of(s));
    cuMemcpyDtoDAsync_v2_ptsz(dst: u64, src: u64, n: usize, s: usize) => copy_on_device(dst, src, n, stream_of(s));
    cuMemcpy(dst: u64, src: u64, n: usize) => copy_any(dst, src, n, None, false);
    cuMemcpy_ptds(dst: u64, src: u64, n: usize) => copy_any(dst, src, n, None, false);
    cuMemcpyAsync(dst: u64, src: u64, n: usize, s: usize) => copy_any(dst, src, n, stream_of(s), true);
    cuMemcpyAsync_ptsz(dst: u64, src: u64, n: usize, s: usize) => copy_any(dst, src, n, stream_of(s), true);
    cuMemsetD8_v2(dst: u64, v: u8, n: usize) => memset(dst, v.into(), 1, n, None);
    cuMemsetD8_v2_ptds(dst: u64, v: u8, n: usize) => memset(dst, v.into(), 1, n, None);
    cuMemsetD16_v2(dst: u64, v: u16, n: usize) => memset(dst, v.into(), 2, n, None);
    cuMemsetD16_v2_ptds(dst: u64, v: u16, n: usize) => memset(dst, v.into(), 2, n, None);
    cuMemsetD32_v2(dst: u64, v: u32, n: usize) => memset(dst, v, 4, n, None);
    cuMemsetD32_v2_ptds(dst: u64, v: u32, n: usize) => memset(dst, v, 4, n, None);
    cuMemsetD8Async(dst: u64, v: u8, n: usize, s: usize) => memset(dst, v.into(), 1, n, stream_of(s));
    cuMemsetD8Async_ptsz(dst: u64, v: u8, n: usize, s: usize) => memset(dst, v.into(), 1, n, stream_of(s));
    cuMemsetD16Async(dst: u64, v: u16, n: usize, s: usize) => memset(dst, v.into(), 2, n, stream_of(s));
    cuMemsetD16Async_ptsz(dst: u64, v: u16, n: usize, s: usize) => memset(dst, v.into(), 2, n, stream_of(s));
    cuMemsetD32Async(dst: u64, v: u32, n: usize, s: usize) => memset(dst, v, 4, n, stream_of(s));
    cuMemsetD32Async_ptsz(dst: u64, v: u32, n: usize, s: usize) => memset(dst, v, 4, n, stream_of(s));
    cuMemsetD2D8_v2(dst: u64, p: usize, v: u8, w: usize, h: usize) => memset_2d(dst, p, v.into(), 1, w, h, None);
    cuMemsetD2D16_v2(dst: u64, p: usize, v: u16, w: usize, h: usize) => memset_2d(dst, p, v.into(), 2, w, h, None);
    cuMemsetD2D32_v2(dst: u64, p: usize, v: u32, w: usize, h: usize) => memset_2d(dst, p, v, 4, w, h, None);
    cuMemsetD2D8_v2_ptds(dst: u64, p: usize, v: u8, w: usize, h: usize) => memset_2d(dst, p, v.into(), 1, w, h, None);
    cuMemsetD2D16_v2_ptds(dst: u64, p: usize, v: u16, w: usize, h: usize) => memset_2d(dst, p, v.into(), 2, w, h, None);
    cuMemsetD2D32_v2_ptds(dst: u64, p: usize, v: u32, w: usize, h: usize) => memset_2d(dst, p, v, 4, w, h, None);
    cuMemsetD2D8Async_ptsz(dst: u64, p: usize, v: u8, w: usize, h: usize, s: usize) => memset_2d(dst, p, v.into(), 1, w, h, stream_of(s));
    cuMemsetD2D16Async_ptsz(dst: u64, p: usize, v: u16, w: usize, h: usize, s: usize) => memset_2d(dst, p, v.into(), 2, w, h, stream_of(s));
    cuMemsetD2D32Async_ptsz(dst: u64, p: usize, v: u32, w: usize, h: usize, s: usize) => memset_2d(dst, p, v, 4, w, h, stream_of(s));
    cuMemcpyPeer(dst: u64, _dc: u64, src: u64, _sc: u64, n: usize) => copy_on_device(dst, src, n, None);
    cuMemcpyPeer_ptds(dst: u64, _dc: u64, src: u64, _sc: u64, n: usize) => copy_on_device(dst, src, n, None);
    cuMemcpyPeerAsync(dst: u64, _dc: u64, src: u64, _sc: u64, n: usize, s: usize) => copy_on_device(dst, src, n, stream_of(s));
    cuMemcpyPeerAsync_ptsz(dst: u64, _dc: u64, src: u64, _sc: u64, n: usize, s: usize) => copy_on_device(dst, src, n, stream_of(s));
    cuMemsetD2D8Async(dst: u64, p: usize, v: u8, w: usize, h: usize, s: usize) => memset_2d(dst, p, v.into(), 1, w, h, stream_of(s));
    cuMemsetD2D16Async(dst: u64, p: usize, v: u16, w: usize, h: usize, s: usize) => memset_2d(dst, p, v.into(), 2, w, h, stream_of(s));
    cuMemsetD2D32Async(dst: u64, p: usize, v: u32, w: usize, h: usize, s: usize) => memset_2d(dst, p, v, 4, w, h, stream_of(s));
}

// --- pinned host memory: plain page-aligned host memory, tracked for pointer queries ---

fn host_allocate(size: usize, flags: u32) -> Result<*mut c_void, CuResult> {
    let mut ptr: *mut c_void = std::ptr::null_mut();
    // SAFETY: posix_memalign writes an allocation of `size.max(1)` bytes to `ptr`.
    let rc = unsafe { libc::posix_memalign(&mut ptr, 4096, size.max(1)) };
    if rc != 0 || ptr.is_null() {
        return Err(CuResult::ERROR_OUT_OF_MEMORY);
    }
    state::state()
        .host_allocations
        .insert(ptr as usize, (size, flags, true));
    Ok(ptr)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemAllocHost_v2(pp: *mut *mut c_void, size: usize) -> CuResult {
    guard("cuMemAllocHost_v2", || {
        let ptr = host_allocate(size, 0)?;
        // SAFETY: out-parameter.
        unsafe { write_out(pp, ptr) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemHostAlloc(pp: *mut *mut c_void, size: usize, flags: u32) -> CuResult {
    guard("cuMemHostAlloc", || {
        let ptr = host_allocate(size, flags)?;
        // SAFETY: out-parameter.
        unsafe { write_out(pp, ptr) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemFreeHost(ptr: *mut c_void) -> CuResult {
    guard("cuMemFreeHost", || {
        match state::state().host_allocations.remove(&(ptr as usize)) {
            Some((_, _, true)) => {
                // SAFETY: allocated by posix_memalign in `host_allocate`, freed once.
                unsafe { libc::free(ptr) };
                Ok(())
            }
            _ => Err(CuResult::ERROR_INVALID_VALUE),
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemHostRegister_v2(ptr: *mut c_void, size: usize, flags: u32) -> CuResult {
    guard("cuMemHostRegister_v2", || {
        state::state()
            .host_allocations
            .insert(ptr as usize, (size, flags, false));
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemHostUnregister(ptr: *mut c_void) -> CuResult {
    guard("cuMemHostUnregister", || {
        match state::state().host_allocations.remove(&(ptr as usize)) {
            Some((_, _, false)) => Ok(()),
            Some(owned) => {
                state::state().host_allocations.insert(ptr as usize, owned);
                Err(CuResult::ERROR_HOST_MEMORY_NOT_REGISTERED)
            }
            None => Err(CuResult::ERROR_HOST_MEMORY_NOT_REGISTERED),
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemHostGetFlags(flags: *mut u32, ptr: *mut c_void) -> CuResult {
    guard("cuMemHostGetFlags", || {
        let (_, _, f) = state::state()
            .host_allocation(ptr as usize)
            .ok_or(CuResult::ERROR_INVALID_VALUE)?;
        // SAFETY: out-parameter.
        unsafe { write_out(flags, f) }
    })
}

// --- pointer attributes ---

const MEMORY_TYPE_HOST: u32 = 1;
const MEMORY_TYPE_DEVICE: u32 = 2;

/// What the stub knows about an address.
enum Pointer {
    Device { start: u64, size: u64 },
    Host { start: usize, size: usize },
    Unknown,
}

fn classify(address: u64) -> Pointer {
    let st = state::state();
    if let Some((start, size)) = st.device_allocation(address) {
        return Pointer::Device { start, size };
    }
    if let Some((start, size, _)) = st.host_allocation(address as usize) {
        return Pointer::Host { start, size };
    }
    Pointer::Unknown
}

/// Writes one `CUpointer_attribute` value. Returns `false` for an unknown pointer.
///
/// # Safety
/// `data` must be valid for the attribute's value type.
unsafe fn write_pointer_attribute(
    data: *mut c_void,
    attribute: u32,
    address: u64,
) -> Result<bool, CuResult> {
    let pointer = classify(address);
    let known = !matches!(pointer, Pointer::Unknown);
    let (memory_type, start, size) = match pointer {
        Pointer::Device { start, size } => (MEMORY_TYPE_DEVICE, start, size),
        Pointer::Host { start, size } => (MEMORY_TYPE_HOST, start as u64, size as u64),
        Pointer::Unknown => (0, 0, 0),
    };
    let context = if known {
        super::context::active_context()
    } else {
        0
    };
    // SAFETY: per the caller's contract, `data` holds the attribute's type.
    unsafe {
        match attribute {
            1 => write_out(data.cast::<u64>(), context)?, // CONTEXT
            2 => write_out(data.cast::<u32>(), memory_type)?, // MEMORY_TYPE
            3 | 4 => write_out(data.cast::<u64>(), if known { address } else { 0 })?, // DEVICE/HOST_POINTER
            6 => write_out(data.cast::<u32>(), 1)?,                                   // SYNC_MEMOPS
            7 => write_out(data.cast::<u64>(), start)?,                               // BUFFER_ID
            8 => write_out(data.cast::<u32>(), 0)?,                                   // IS_MANAGED
            9 => write_out(data.cast::<i32>(), 0)?, // DEVICE_ORDINAL
            10 | 15 => write_out(data.cast::<u32>(), 0)?, // IPC / RDMA capable
            11 => write_out(data.cast::<u64>(), start)?, // RANGE_START_ADDR
            12 => write_out(data.cast::<usize>(), size as usize)?, // RANGE_SIZE
            13 => write_out(data.cast::<u32>(), u32::from(known))?, // MAPPED
            14 | 16 => write_out(data.cast::<u64>(), 0)?, // handle types / access flags
            17 => write_out(data.cast::<u64>(), super::pool::pool_of(address))?, // MEMPOOL_HANDLE
            18 => write_out(data.cast::<usize>(), size as usize)?, // MAPPING_SIZE
            19 => write_out(data.cast::<u64>(), start)?, // MAPPING_BASE_ADDR
            20 => write_out(data.cast::<u64>(), start)?, // MEMORY_BLOCK_ID
            _ => return Err(CuResult::ERROR_INVALID_VALUE),
        }
    }
    Ok(known)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuPointerGetAttribute(data: *mut c_void, attribute: u32, ptr: u64) -> CuResult {
    guard("cuPointerGetAttribute", || {
        // SAFETY: `data` holds the attribute's type, as the API requires.
        match unsafe { write_pointer_attribute(data, attribute, ptr)? } {
            true => Ok(()),
            false => Err(CuResult::ERROR_INVALID_VALUE),
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuPointerGetAttributes(
    count: u32,
    attributes: *const u32,
    data: *const *mut c_void,
    ptr: u64,
) -> CuResult {
    guard("cuPointerGetAttributes", || {
        if attributes.is_null() || data.is_null() {
            return Err(CuResult::ERROR_INVALID_VALUE);
        }
        for i in 0..count as usize {
            // SAFETY: both arrays hold `count` entries; each data slot fits its attribute.
            unsafe {
                let attribute = *attributes.add(i);
                let slot = *data.add(i);
                if !slot.is_null() {
                    write_pointer_attribute(slot, attribute, ptr)?;
                }
            }
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuPointerSetAttribute(
    _value: *const c_void,
    _attribute: u32,
    _ptr: u64,
) -> CuResult {
    guard("cuPointerSetAttribute", || Ok(()))
}
