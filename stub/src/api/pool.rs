//! Stream-ordered allocation and memory pools: `cuMemAllocAsync`, `cuMemAllocFromPoolAsync`,
//! `cuMemFreeAsync` and `cuMemPool*`, on the bookkeeping of [`crate::pool`]. Pool blocks are
//! ordinary device allocations of the session ([`super::memory::allocate`]/[`free`]).

use super::device::checked;
use super::memory::{allocate, free};
use super::{guard, write_out};
use crate::pool::{Allocation, AttrValue, Free, Pools, attribute_is_int};
use gpufn_proto::CuResult;
use std::ffi::{c_int, c_void};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// The pools, locked. Lock order: this lock before the state lock (allocation and free take
/// the state lock while this one is held), never the other way round.
fn pools() -> MutexGuard<'static, Pools> {
    static POOLS: OnceLock<Mutex<Pools>> = OnceLock::new();
    POOLS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The device of the calling thread's current context.
fn current_device() -> Result<u32, CuResult> {
    super::context::context_device(0)
}

/// Allocates `size` bytes from `pool`: a cached block if one fits, else a new device
/// allocation. If the session is out of memory, the pool's cached blocks are released and
/// the allocation tried once more.
fn allocate_from(pool: u64, size: u64) -> Result<u64, CuResult> {
    let mut pools = pools();
    if let Allocation::Reused(address) = pools.allocate(pool, size)? {
        return Ok(address);
    }
    let address = match allocate(size) {
        Err(CuResult::ERROR_OUT_OF_MEMORY) => {
            for cached in pools.trim_to(pool, 0)? {
                free(cached)?;
            }
            allocate(size)?
        }
        other => other?,
    };
    pools.add_block(pool, address, size)?;
    Ok(address)
}

/// Frees a device address in stream order: a pool block goes back to its pool, anything
/// else is an ordinary free.
pub fn free_device(address: u64) -> Result<(), CuResult> {
    if address == 0 {
        return Ok(());
    }
    let mut pools = pools();
    match pools.free(address)? {
        Free::Cached => Ok(()),
        Free::NotPooled | Free::Release => free(address),
    }
}

/// At a synchronisation: releases cached blocks beyond each pool's release threshold.
pub fn release_after_synchronize() -> Result<(), CuResult> {
    let mut pools = pools();
    for address in pools.release_over_thresholds() {
        free(address)?;
    }
    Ok(())
}

/// After a context reset freed every allocation.
pub fn forget_blocks() {
    pools().forget_blocks();
}

/// The pool of a live block (0 if none), for pointer attributes.
pub fn pool_of(address: u64) -> u64 {
    pools().owner_of_live(address)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemAllocAsync(dptr: *mut u64, size: usize, _stream: usize) -> CuResult {
    guard("cuMemAllocAsync", || {
        let pool = pools().current_pool(current_device()?);
        let address = allocate_from(pool, size as u64)?;
        // SAFETY: out-parameter.
        unsafe { write_out(dptr, address) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemAllocAsync_ptsz(dptr: *mut u64, size: usize, stream: usize) -> CuResult {
    cuMemAllocAsync(dptr, size, stream)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemAllocFromPoolAsync(
    dptr: *mut u64,
    size: usize,
    pool: usize,
    _stream: usize,
) -> CuResult {
    guard("cuMemAllocFromPoolAsync", || {
        let address = allocate_from(pool as u64, size as u64)?;
        // SAFETY: out-parameter.
        unsafe { write_out(dptr, address) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemAllocFromPoolAsync_ptsz(
    dptr: *mut u64,
    size: usize,
    pool: usize,
    stream: usize,
) -> CuResult {
    cuMemAllocFromPoolAsync(dptr, size, pool, stream)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemFreeAsync(dptr: u64, _stream: usize) -> CuResult {
    guard("cuMemFreeAsync", || free_device(dptr))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemFreeAsync_ptsz(dptr: u64, _stream: usize) -> CuResult {
    guard("cuMemFreeAsync_ptsz", || free_device(dptr))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDeviceGetDefaultMemPool(pool: *mut usize, device: c_int) -> CuResult {
    guard("cuDeviceGetDefaultMemPool", || {
        let handle = pools().default_pool(checked(device)?);
        // SAFETY: out-parameter.
        unsafe { write_out(pool, handle as usize) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDeviceGetMemPool(pool: *mut usize, device: c_int) -> CuResult {
    guard("cuDeviceGetMemPool", || {
        let handle = pools().current_pool(checked(device)?);
        // SAFETY: out-parameter.
        unsafe { write_out(pool, handle as usize) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDeviceSetMemPool(device: c_int, pool: usize) -> CuResult {
    guard("cuDeviceSetMemPool", || {
        pools().set_current_pool(checked(device)?, pool as u64)
    })
}

/// `CUmemLocation`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MemLocation {
    pub kind: u32,
    pub id: c_int,
}

/// `CUmemPoolProps` (the fields the stub reads; the rest is reserved).
#[repr(C)]
pub struct MemPoolProps {
    pub alloc_type: u32,
    pub handle_types: u32,
    pub location: MemLocation,
    pub win32_security_attributes: *mut c_void,
    pub max_size: usize,
    pub usage: u16,
}

const ALLOCATION_TYPE_PINNED: u32 = 1;
const LOCATION_TYPE_DEVICE: u32 = 1;

/// The device a `CUmemLocation` names, for pinned device memory (the only kind of pool the
/// stub serves; host and exportable pools are not supported).
///
/// # Safety
/// `location` must be null or point at a `CUmemLocation`.
unsafe fn device_location(location: *const MemLocation, alloc_type: u32) -> Result<u32, CuResult> {
    if location.is_null() {
        return Err(CuResult::ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null, a `CUmemLocation` per the contract.
    let location = unsafe { location.read_unaligned() };
    if alloc_type != ALLOCATION_TYPE_PINNED || location.kind != LOCATION_TYPE_DEVICE {
        return Err(CuResult::ERROR_NOT_SUPPORTED);
    }
    checked(location.id)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemGetDefaultMemPool(
    pool: *mut usize,
    location: *const MemLocation,
    alloc_type: u32,
) -> CuResult {
    guard("cuMemGetDefaultMemPool", || {
        // SAFETY: `location` is a `CUmemLocation`, as the API requires.
        let device = unsafe { device_location(location, alloc_type)? };
        let handle = pools().default_pool(device);
        // SAFETY: out-parameter.
        unsafe { write_out(pool, handle as usize) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemGetMemPool(
    pool: *mut usize,
    location: *const MemLocation,
    alloc_type: u32,
) -> CuResult {
    guard("cuMemGetMemPool", || {
        // SAFETY: `location` is a `CUmemLocation`, as the API requires.
        let device = unsafe { device_location(location, alloc_type)? };
        let handle = pools().current_pool(device);
        // SAFETY: out-parameter.
        unsafe { write_out(pool, handle as usize) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemSetMemPool(
    location: *const MemLocation,
    alloc_type: u32,
    pool: usize,
) -> CuResult {
    guard("cuMemSetMemPool", || {
        // SAFETY: `location` is a `CUmemLocation`, as the API requires.
        let device = unsafe { device_location(location, alloc_type)? };
        pools().set_current_pool(device, pool as u64)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemPoolCreate(pool: *mut usize, props: *const MemPoolProps) -> CuResult {
    guard("cuMemPoolCreate", || {
        if props.is_null() {
            return Err(CuResult::ERROR_INVALID_VALUE);
        }
        // SAFETY: non-null; the program passes a `CUmemPoolProps`. Fields are read in place
        // (the struct's tail is reserved bytes the stub does not need).
        let (alloc_type, handle_types, location, max_size) = unsafe {
            let p = &*props;
            (
                p.alloc_type,
                p.handle_types,
                &raw const p.location,
                p.max_size,
            )
        };
        if handle_types != 0 {
            // Exportable (IPC) pools need shareable handles across processes.
            return Err(CuResult::ERROR_NOT_SUPPORTED);
        }
        // SAFETY: `location` points into the caller's props.
        let device = unsafe { device_location(location, alloc_type)? };
        let handle = pools().create(device, max_size as u64);
        // SAFETY: out-parameter.
        unsafe { write_out(pool, handle as usize) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemPoolDestroy(pool: usize) -> CuResult {
    guard("cuMemPoolDestroy", || {
        let mut pools = pools();
        for address in pools.destroy(pool as u64)? {
            free(address)?;
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemPoolTrimTo(pool: usize, keep: usize) -> CuResult {
    guard("cuMemPoolTrimTo", || {
        let mut pools = pools();
        for address in pools.trim_to(pool as u64, keep as u64)? {
            free(address)?;
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemPoolGetAttribute(
    pool: usize,
    attribute: u32,
    value: *mut c_void,
) -> CuResult {
    guard("cuMemPoolGetAttribute", || {
        let v = pools().get_attribute(pool as u64, attribute)?;
        // SAFETY: `value` holds the attribute's type (`int` or `cuuint64_t`), as the API
        // requires.
        unsafe {
            match v {
                AttrValue::Int(v) => write_out(value.cast::<i32>(), v),
                AttrValue::U64(v) => write_out(value.cast::<u64>(), v),
            }
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemPoolSetAttribute(
    pool: usize,
    attribute: u32,
    value: *mut c_void,
) -> CuResult {
    guard("cuMemPoolSetAttribute", || {
        let is_int = attribute_is_int(attribute).ok_or(CuResult::ERROR_INVALID_VALUE)?;
        if value.is_null() {
            return Err(CuResult::ERROR_INVALID_VALUE);
        }
        // SAFETY: non-null; `value` holds the attribute's type, as the API requires.
        let v = unsafe {
            if is_int {
                value.cast::<i32>().read_unaligned() as u64
            } else {
                value.cast::<u64>().read_unaligned()
            }
        };
        pools().set_attribute(pool as u64, attribute, v)
    })
}

/// `CUmemAccessDesc`.
#[repr(C)]
pub struct MemAccessDesc {
    pub location: MemLocation,
    pub flags: u32,
}

const ACCESS_READ_WRITE: u32 = 3;

#[unsafe(no_mangle)]
pub extern "C" fn cuMemPoolSetAccess(
    pool: usize,
    map: *const MemAccessDesc,
    count: usize,
) -> CuResult {
    guard("cuMemPoolSetAccess", || {
        let owner = pools()
            .pool(pool as u64)
            .map(|p| p.device)
            .ok_or(CuResult::ERROR_INVALID_VALUE)?;
        if count > 0 && map.is_null() {
            return Err(CuResult::ERROR_INVALID_VALUE);
        }
        for i in 0..count {
            // SAFETY: `map` holds `count` descriptors.
            let desc = unsafe { map.add(i).read_unaligned() };
            let device = checked(desc.location.id)?;
            // The pool's own device always has read-write access; there are no peers.
            if desc.location.kind != LOCATION_TYPE_DEVICE
                || device != owner
                || desc.flags != ACCESS_READ_WRITE
            {
                return Err(CuResult::ERROR_NOT_SUPPORTED);
            }
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemPoolGetAccess(
    flags: *mut u32,
    pool: usize,
    location: *const MemLocation,
) -> CuResult {
    guard("cuMemPoolGetAccess", || {
        let owner = pools()
            .pool(pool as u64)
            .map(|p| p.device)
            .ok_or(CuResult::ERROR_INVALID_VALUE)?;
        if location.is_null() {
            return Err(CuResult::ERROR_INVALID_VALUE);
        }
        // SAFETY: non-null `CUmemLocation`.
        let location = unsafe { location.read_unaligned() };
        let access = if location.kind == LOCATION_TYPE_DEVICE && location.id == owner as c_int {
            ACCESS_READ_WRITE
        } else {
            0
        };
        // SAFETY: out-parameter.
        unsafe { write_out(flags, access) }
    })
}
