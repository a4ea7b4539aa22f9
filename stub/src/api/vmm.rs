//! The virtual memory management API (`cuMemAddressReserve`, `cuMemCreate`, `cuMemMap`, …)
//! over the session protocol, for callers that place memory at addresses they choose —
//! foremost a gpufn worker whose cuda backend runs on the stub (the CI check of that
//! backend: program → stub → worker on the cuda backend → stub → worker on the cpu backend).
//!
//! A reservation is bookkeeping in the stub: it must lie inside the session's address range
//! (the requested address is honoured or the call fails: callers rely on fixed addresses), so
//! a reservation without an address is not supported. Physical memory exists on the worker
//! only while mapped: `cuMemMap` is a `MemAlloc` at the mapped address, `cuMemUnmap` a
//! `MemFree`, so the contents of unmapped memory are not kept (CUDA keeps them with the
//! handle; gpufn's callers never remap a handle). The stub's own `cuMemAlloc` placement does
//! not avoid reservations, so a caller mixing both is not supported. Devices report
//! `VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED = 0` to programs, so well-behaved programs do not
//! come here.

use super::{guard, session, write_out};
use crate::client::ReplyData;
use crate::state;
use gpufn_proto::CuResult;
use gpufn_proto::message::Request;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

/// What the stub reports as allocation granularity (a GPU's usual one).
pub const GRANULARITY: u64 = 2 << 20;

/// `CU_MEM_ALLOCATION_TYPE_PINNED`, `CU_MEM_LOCATION_TYPE_DEVICE`.
const TYPE_PINNED: u32 = 1;
const LOCATION_DEVICE: u32 = 1;
/// `CU_MEM_ACCESS_FLAGS_PROT_*`.
const ACCESS_MAX: u32 = 3;

/// A physical allocation: its size and where it is mapped.
struct Handle {
    size: u64,
    mapped_at: Option<u64>,
}

struct Vmm {
    /// start → size.
    reservations: BTreeMap<u64, u64>,
    handles: BTreeMap<u64, Handle>,
    /// start → (size, handle).
    mappings: BTreeMap<u64, (u64, u64)>,
}

impl Vmm {
    fn reservation_of(&self, start: u64, size: u64) -> Option<(u64, u64)> {
        let end = start.checked_add(size)?;
        let (&base, &len) = self.reservations.range(..=start).next_back()?;
        (end <= base + len).then_some((base, len))
    }

    fn overlaps_mapping(&self, start: u64, size: u64) -> bool {
        let end = start.saturating_add(size);
        self.mappings
            .range(..end)
            .next_back()
            .is_some_and(|(&s, &(len, _))| s + len > start)
    }
}

fn vmm() -> MutexGuard<'static, Vmm> {
    static VMM: Mutex<Vmm> = Mutex::new(Vmm {
        reservations: BTreeMap::new(),
        handles: BTreeMap::new(),
        mappings: BTreeMap::new(),
    });
    VMM.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks a `CUmemAllocationProp`: pinned device memory on device 0.
///
/// # Safety
/// `prop` must be null or point at a `CUmemAllocationProp` (at least 16 readable bytes).
unsafe fn check_prop(prop: *const u32) -> Result<(), CuResult> {
    if prop.is_null() {
        return Err(CuResult::ERROR_INVALID_VALUE);
    }
    // SAFETY: { u32 type, u32 handle types, { u32 location type, i32 id }, … } per the caller.
    let (kind, location, id) = unsafe {
        (
            prop.read_unaligned(),
            prop.add(2).read_unaligned(),
            prop.add(3).read_unaligned(),
        )
    };
    if kind != TYPE_PINNED || location != LOCATION_DEVICE {
        return Err(CuResult::ERROR_INVALID_VALUE);
    }
    if id != 0 {
        return Err(CuResult::ERROR_INVALID_DEVICE);
    }
    Ok(())
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemGetAllocationGranularity(
    granularity: *mut usize,
    prop: *const u32,
    _option: u32,
) -> CuResult {
    guard("cuMemGetAllocationGranularity", || {
        // SAFETY: a CUmemAllocationProp per the API contract.
        unsafe { check_prop(prop)? };
        // SAFETY: out-parameter.
        unsafe { write_out(granularity, GRANULARITY as usize) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemAddressReserve(
    ptr: *mut u64,
    size: usize,
    alignment: usize,
    addr: u64,
    _flags: u64,
) -> CuResult {
    guard("cuMemAddressReserve", || {
        let size = size as u64;
        let aligned = |v: u64| v.is_multiple_of(GRANULARITY);
        let alignment_ok = alignment == 0
            || (alignment.is_power_of_two() && addr.is_multiple_of(alignment as u64));
        if size == 0 || !aligned(size) || !aligned(addr) || !alignment_ok {
            return Err(CuResult::ERROR_INVALID_VALUE);
        }
        if addr == 0 {
            crate::log::error(
                "cuMemAddressReserve without an address is not supported through gpufn; \
                 reserve at an address inside the session's range",
            );
            return Err(CuResult::ERROR_NOT_SUPPORTED);
        }
        let range = session()?.memory.ok_or(CuResult::ERROR_NOT_SUPPORTED)?;
        let end = addr
            .checked_add(size)
            .ok_or(CuResult::ERROR_INVALID_VALUE)?;
        if addr < range.base || end > range.base + range.size {
            return Err(CuResult::ERROR_OUT_OF_MEMORY);
        }
        let mut v = vmm();
        let taken = v
            .reservations
            .range(..end)
            .next_back()
            .is_some_and(|(&s, &len)| s + len > addr);
        let allocated = state::state()
            .device_allocations
            .range(..end)
            .next_back()
            .is_some_and(|(&s, &len)| s + len > addr);
        if taken || allocated {
            return Err(CuResult::ERROR_OUT_OF_MEMORY);
        }
        v.reservations.insert(addr, size);
        drop(v);
        // SAFETY: out-parameter.
        unsafe { write_out(ptr, addr) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemAddressFree(ptr: u64, size: usize) -> CuResult {
    guard("cuMemAddressFree", || {
        let mut v = vmm();
        if v.reservations.get(&ptr) != Some(&(size as u64)) || v.overlaps_mapping(ptr, size as u64)
        {
            return Err(CuResult::ERROR_INVALID_VALUE);
        }
        v.reservations.remove(&ptr);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemCreate(
    handle: *mut u64,
    size: usize,
    prop: *const u32,
    _flags: u64,
) -> CuResult {
    guard("cuMemCreate", || {
        // SAFETY: a CUmemAllocationProp per the API contract.
        unsafe { check_prop(prop)? };
        let size = size as u64;
        if size == 0 || !size.is_multiple_of(GRANULARITY) {
            return Err(CuResult::ERROR_INVALID_VALUE);
        }
        let id = state::next_id();
        vmm().handles.insert(
            id,
            Handle {
                size,
                mapped_at: None,
            },
        );
        // SAFETY: out-parameter.
        unsafe { write_out(handle, id) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemRelease(handle: u64) -> CuResult {
    guard("cuMemRelease", || {
        // A mapped handle's memory lives until it is unmapped (as in CUDA).
        vmm()
            .handles
            .remove(&handle)
            .map(|_| ())
            .ok_or(CuResult::ERROR_INVALID_VALUE)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemMap(
    ptr: u64,
    size: usize,
    offset: usize,
    handle: u64,
    _flags: u64,
) -> CuResult {
    guard("cuMemMap", || {
        let size = size as u64;
        {
            let v = vmm();
            let physical = v
                .handles
                .get(&handle)
                .ok_or(CuResult::ERROR_INVALID_HANDLE)?;
            if offset != 0 || physical.size != size {
                // Partial mappings of a handle are not supported.
                return Err(CuResult::ERROR_NOT_SUPPORTED);
            }
            if physical.mapped_at.is_some() {
                // One handle mapped twice would need shared memory on the worker.
                return Err(CuResult::ERROR_NOT_SUPPORTED);
            }
            if v.reservation_of(ptr, size).is_none() || v.overlaps_mapping(ptr, size) {
                return Err(CuResult::ERROR_INVALID_VALUE);
            }
        }
        session()?.call(
            &Request::MemAlloc {
                address: Some(ptr),
                size,
            },
            &[],
            ReplyData::None,
        )?;
        let mut v = vmm();
        v.mappings.insert(ptr, (size, handle));
        if let Some(physical) = v.handles.get_mut(&handle) {
            physical.mapped_at = Some(ptr);
        }
        drop(v);
        state::state().device_allocations.insert(ptr, size);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemSetAccess(
    ptr: u64,
    size: usize,
    desc: *const u32,
    count: usize,
) -> CuResult {
    guard("cuMemSetAccess", || {
        if desc.is_null() || count == 0 {
            return Err(CuResult::ERROR_INVALID_VALUE);
        }
        for i in 0..count {
            // SAFETY: `count` CUmemAccessDesc of { { u32 type, i32 id }, u32 flags }.
            let (location, id, flags) = unsafe {
                let d = desc.add(i * 3);
                (
                    d.read_unaligned(),
                    d.add(1).read_unaligned(),
                    d.add(2).read_unaligned(),
                )
            };
            if location != LOCATION_DEVICE || id != 0 || flags > ACCESS_MAX {
                return Err(CuResult::ERROR_INVALID_VALUE);
            }
        }
        // Every mapping is readable and writable by the one device.
        let v = vmm();
        let end = ptr
            .checked_add(size as u64)
            .ok_or(CuResult::ERROR_INVALID_VALUE)?;
        let covered: u64 = v
            .mappings
            .range(ptr..end)
            .filter(|(s, (len, _))| **s + *len <= end)
            .map(|(_, (len, _))| *len)
            .sum();
        if covered != size as u64 {
            return Err(CuResult::ERROR_INVALID_VALUE);
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemUnmap(ptr: u64, size: usize) -> CuResult {
    guard("cuMemUnmap", || {
        let end = ptr
            .checked_add(size as u64)
            .ok_or(CuResult::ERROR_INVALID_VALUE)?;
        let unmapped: Vec<(u64, u64)> = {
            let mut v = vmm();
            let whole: Vec<(u64, u64, u64)> = v
                .mappings
                .range(ptr..end)
                .map(|(&s, &(len, handle))| (s, len, handle))
                .collect();
            let covered: u64 = whole.iter().map(|m| m.1).sum();
            if whole.is_empty() || covered != size as u64 || whole.iter().any(|m| m.0 + m.1 > end) {
                return Err(CuResult::ERROR_INVALID_VALUE);
            }
            for &(start, _, handle) in &whole {
                v.mappings.remove(&start);
                if let Some(physical) = v.handles.get_mut(&handle) {
                    physical.mapped_at = None;
                }
            }
            whole.into_iter().map(|(s, len, _)| (s, len)).collect()
        };
        let session = session()?;
        for (start, _) in unmapped {
            state::state().device_allocations.remove(&start);
            session.post(&Request::MemFree { address: start }, &[])?;
        }
        Ok(())
    })
}
