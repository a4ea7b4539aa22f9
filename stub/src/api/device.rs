//! Devices: count, names, memory, UUIDs, PCI location and attributes. All answers come from
//! the properties the worker sent at connect (no round trip per query).

use super::{guard, session, write_out};
use crate::dark::integrity::DeviceIdentity;
use gpufn_proto::message::DeviceProperties;
use gpufn_proto::{CuResult, DeviceAttribute};
use std::ffi::{c_char, c_int};

/// The properties of `device`, checked.
pub fn properties(device: u32) -> Result<&'static DeviceProperties, CuResult> {
    session()?
        .devices
        .get(device as usize)
        .ok_or(CuResult::ERROR_INVALID_DEVICE)
}

/// A device ordinal from the program, checked against the session's devices.
pub fn checked(device: c_int) -> Result<u32, CuResult> {
    let device = u32::try_from(device).map_err(|_| CuResult::ERROR_INVALID_DEVICE)?;
    properties(device)?;
    Ok(device)
}

/// An attribute of `device` (0 when the worker did not list it).
pub fn attribute(device: u32, attribute: DeviceAttribute) -> Result<i32, CuResult> {
    let props = properties(device)?;
    if attribute == DeviceAttribute::MEMORY_POOLS_SUPPORTED {
        // Stream-ordered pools are the stub's own (`crate::pool`), whatever the backend.
        return Ok(1);
    }
    Ok(props
        .attributes
        .iter()
        .find(|(a, _)| *a == attribute)
        .map(|(_, v)| *v)
        .unwrap_or(0))
}

/// UUID and PCI location of every device, for the runtime's integrity check.
pub fn identities() -> Result<Vec<DeviceIdentity>, CuResult> {
    let count = session()?.devices.len() as u32;
    (0..count)
        .map(|d| {
            Ok(DeviceIdentity {
                uuid: properties(d)?.uuid,
                pci_domain: attribute(d, DeviceAttribute::PCI_DOMAIN_ID)?,
                pci_bus: attribute(d, DeviceAttribute::PCI_BUS_ID)?,
                pci_device: attribute(d, DeviceAttribute::PCI_DEVICE_ID)?,
            })
        })
        .collect()
}

/// Copies `text` into a C buffer of `len` bytes, truncating, always NUL-terminated.
///
/// # Safety
/// `out` must be valid for `len` bytes.
unsafe fn write_c_string(out: *mut c_char, len: c_int, text: &str) -> Result<(), CuResult> {
    if out.is_null() || len <= 0 {
        return Err(CuResult::ERROR_INVALID_VALUE);
    }
    let n = text.len().min(len as usize - 1);
    // SAFETY: `out` holds `len` bytes; we write `n + 1 <= len`.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), out.cast::<u8>(), n);
        out.add(n).write(0);
    }
    Ok(())
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDeviceGetCount(count: *mut c_int) -> CuResult {
    guard("cuDeviceGetCount", || {
        let n = session()?.devices.len() as c_int;
        // SAFETY: out-parameter.
        unsafe { write_out(count, n) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDeviceGet(device: *mut c_int, ordinal: c_int) -> CuResult {
    guard("cuDeviceGet", || {
        checked(ordinal)?;
        // SAFETY: out-parameter.
        unsafe { write_out(device, ordinal) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, device: c_int) -> CuResult {
    guard("cuDeviceGetName", || {
        let props = properties(checked(device)?)?;
        // SAFETY: `name` holds `len` bytes.
        unsafe { write_c_string(name, len, &props.name) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, device: c_int) -> CuResult {
    guard("cuDeviceTotalMem_v2", || {
        let props = properties(checked(device)?)?;
        // SAFETY: out-parameter.
        unsafe { write_out(bytes, props.total_memory as usize) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDeviceTotalMem(bytes: *mut u32, device: c_int) -> CuResult {
    guard("cuDeviceTotalMem", || {
        let props = properties(checked(device)?)?;
        // SAFETY: out-parameter.
        unsafe { write_out(bytes, props.total_memory.min(u32::MAX.into()) as u32) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDeviceGetUuid(uuid: *mut [u8; 16], device: c_int) -> CuResult {
    guard("cuDeviceGetUuid", || {
        let props = properties(checked(device)?)?;
        // SAFETY: out-parameter.
        unsafe { write_out(uuid, props.uuid) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDeviceGetUuid_v2(uuid: *mut [u8; 16], device: c_int) -> CuResult {
    cuDeviceGetUuid(uuid, device)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDeviceGetAttribute(value: *mut c_int, attrib: u32, device: c_int) -> CuResult {
    guard("cuDeviceGetAttribute", || {
        let v = attribute(checked(device)?, DeviceAttribute(attrib))?;
        // SAFETY: out-parameter.
        unsafe { write_out(value, v) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDeviceComputeCapability(
    major: *mut c_int,
    minor: *mut c_int,
    device: c_int,
) -> CuResult {
    guard("cuDeviceComputeCapability", || {
        let d = checked(device)?;
        // SAFETY: out-parameters.
        unsafe {
            write_out(
                major,
                attribute(d, DeviceAttribute::COMPUTE_CAPABILITY_MAJOR)?,
            )?;
            write_out(
                minor,
                attribute(d, DeviceAttribute::COMPUTE_CAPABILITY_MINOR)?,
            )
        }
    })
}

fn pci_bus_id(device: u32) -> Result<String, CuResult> {
    Ok(format!(
        "{:08x}:{:02x}:{:02x}.0",
        attribute(device, DeviceAttribute::PCI_DOMAIN_ID)?,
        attribute(device, DeviceAttribute::PCI_BUS_ID)?,
        attribute(device, DeviceAttribute::PCI_DEVICE_ID)?
    ))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDeviceGetPCIBusId(out: *mut c_char, len: c_int, device: c_int) -> CuResult {
    guard("cuDeviceGetPCIBusId", || {
        let text = pci_bus_id(checked(device)?)?;
        // SAFETY: `out` holds `len` bytes.
        unsafe { write_c_string(out, len, &text) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDeviceGetByPCIBusId(device: *mut c_int, id: *const c_char) -> CuResult {
    guard("cuDeviceGetByPCIBusId", || {
        if id.is_null() {
            return Err(CuResult::ERROR_INVALID_VALUE);
        }
        // SAFETY: NUL-terminated string from the caller.
        let wanted = unsafe { std::ffi::CStr::from_ptr(id) }
            .to_string_lossy()
            .to_ascii_lowercase();
        let count = session()?.devices.len() as u32;
        for d in 0..count {
            let own = pci_bus_id(d)?;
            if own.ends_with(wanted.trim_start_matches('0')) || own == wanted {
                // SAFETY: out-parameter.
                return unsafe { write_out(device, d as c_int) };
            }
        }
        Err(CuResult::ERROR_INVALID_DEVICE)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDeviceCanAccessPeer(can: *mut c_int, device: c_int, peer: c_int) -> CuResult {
    guard("cuDeviceCanAccessPeer", || {
        checked(device)?;
        checked(peer)?;
        // SAFETY: out-parameter.
        unsafe { write_out(can, 0) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDeviceGetP2PAttribute(
    value: *mut c_int,
    _attrib: u32,
    src: c_int,
    dst: c_int,
) -> CuResult {
    guard("cuDeviceGetP2PAttribute", || {
        checked(src)?;
        checked(dst)?;
        // SAFETY: out-parameter.
        unsafe { write_out(value, 0) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDeviceGetExecAffinitySupport(
    supported: *mut c_int,
    _kind: u32,
    device: c_int,
) -> CuResult {
    guard("cuDeviceGetExecAffinitySupport", || {
        checked(device)?;
        // SAFETY: out-parameter.
        unsafe { write_out(supported, 0) }
    })
}
