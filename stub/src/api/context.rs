//! Primary and regular contexts. Contexts are client-side objects; the worker learns of
//! them through posts (`PrimaryContextRetain`, `ContextCreate`), so no call waits.

use super::{guard, session, write_out};
use crate::state::{self, Context};
use gpufn_proto::CuResult;
use gpufn_proto::message::{ContextId, Request};
use std::ffi::{c_int, c_void};

/// The context a call acts on: the thread's current one, else device 0's primary context.
pub fn active_context() -> u64 {
    match state::current_context() {
        0 => state::state().primary_handle(0),
        ctx => ctx,
    }
}

/// Tells the worker about a device's primary context the first time it is retained.
fn announce_primary(device: u32) -> Result<u64, CuResult> {
    let mut st = state::state();
    let handle = st.primary_handle(device);
    let primary = st.primaries.entry(device).or_default();
    primary.retained += 1;
    if !primary.announced {
        primary.announced = true;
        drop(st);
        session()?.post(
            &Request::PrimaryContextRetain {
                device,
                context: ContextId(handle),
            },
            &[],
        )?;
    }
    Ok(handle)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxRetain(ctx: *mut u64, device: c_int) -> CuResult {
    guard("cuDevicePrimaryCtxRetain", || {
        let handle = announce_primary(super::device::checked(device)?)?;
        // SAFETY: out-parameter.
        unsafe { write_out(ctx, handle) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxRelease_v2(device: c_int) -> CuResult {
    guard("cuDevicePrimaryCtxRelease_v2", || {
        let device = super::device::checked(device)?;
        let mut st = state::state();
        let primary = st.primaries.entry(device).or_default();
        if primary.retained == 0 {
            return Err(CuResult::ERROR_INVALID_CONTEXT);
        }
        primary.retained -= 1;
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxRelease(device: c_int) -> CuResult {
    cuDevicePrimaryCtxRelease_v2(device)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxReset_v2(device: c_int) -> CuResult {
    guard("cuDevicePrimaryCtxReset_v2", || {
        let device = super::device::checked(device)?;
        // A reset frees every allocation of the context, as cudaDeviceReset promises.
        let (handle, destructors, allocations) = {
            let mut st = state::state();
            let handle = st.primary_handle(device);
            let destructors = st.take_cls(handle);
            let primary = st.primaries.entry(device).or_default();
            let was_announced = primary.announced;
            *primary = state::Primary {
                handle,
                ..Default::default()
            };
            let allocations: Vec<u64> = std::mem::take(&mut st.device_allocations)
                .into_keys()
                .collect();
            if let Some(carver) = st.carver.as_mut() {
                carver.reset();
            }
            (was_announced.then_some(handle), destructors, allocations)
        };
        super::pool::forget_blocks();
        if let Some(handle) = handle {
            state::run_cls_destructors(handle, destructors);
            let session = session()?;
            for address in allocations {
                session.post(&Request::MemFree { address }, &[])?;
            }
            session.call(
                &Request::PrimaryContextReset { device },
                &[],
                crate::client::ReplyData::None,
            )?;
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxReset(device: c_int) -> CuResult {
    cuDevicePrimaryCtxReset_v2(device)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxGetState(
    device: c_int,
    flags: *mut u32,
    active: *mut c_int,
) -> CuResult {
    guard("cuDevicePrimaryCtxGetState", || {
        let device = super::device::checked(device)?;
        let primary = state::state()
            .primaries
            .get(&device)
            .copied()
            .unwrap_or_default();
        // SAFETY: out-parameters.
        unsafe {
            write_out(flags, primary.flags)?;
            write_out(active, c_int::from(primary.retained > 0))
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxSetFlags_v2(device: c_int, flags: u32) -> CuResult {
    guard("cuDevicePrimaryCtxSetFlags_v2", || {
        let device = super::device::checked(device)?;
        let mut st = state::state();
        let handle = st.primary_handle(device);
        st.primaries.entry(device).or_default().flags = flags;
        if let Some(ctx) = st.contexts.get_mut(&handle) {
            ctx.flags = flags;
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxSetFlags(device: c_int, flags: u32) -> CuResult {
    cuDevicePrimaryCtxSetFlags_v2(device, flags)
}

fn create_context(ctx: *mut u64, flags: u32, device: c_int) -> Result<(), CuResult> {
    let device = super::device::checked(device)?;
    let handle = state::next_id();
    state::state().contexts.insert(
        handle,
        Context {
            device,
            primary: false,
            flags,
        },
    );
    session()?.post(
        &Request::ContextCreate {
            context: ContextId(handle),
            device,
            flags,
        },
        &[],
    )?;
    state::push_context(handle);
    // SAFETY: out-parameter.
    unsafe { write_out(ctx, handle) }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxCreate_v2(ctx: *mut u64, flags: u32, device: c_int) -> CuResult {
    guard("cuCtxCreate_v2", || create_context(ctx, flags, device))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxCreate_v3(
    ctx: *mut u64,
    _affinity: *mut c_void,
    _n: c_int,
    flags: u32,
    device: c_int,
) -> CuResult {
    guard("cuCtxCreate_v3", || create_context(ctx, flags, device))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxCreate_v4(
    ctx: *mut u64,
    _params: *mut c_void,
    flags: u32,
    device: c_int,
) -> CuResult {
    guard("cuCtxCreate_v4", || create_context(ctx, flags, device))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxDestroy_v2(ctx: u64) -> CuResult {
    guard("cuCtxDestroy_v2", || {
        let destructors = {
            let mut st = state::state();
            match st.contexts.get(&ctx) {
                Some(c) if !c.primary => {}
                _ => return Err(CuResult::ERROR_INVALID_CONTEXT),
            }
            st.contexts.remove(&ctx);
            st.take_cls(ctx)
        };
        state::run_cls_destructors(ctx, destructors);
        if state::current_context() == ctx {
            state::pop_context();
        }
        session()?.post(
            &Request::ContextDestroy {
                context: ContextId(ctx),
            },
            &[],
        )
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxGetCurrent(ctx: *mut u64) -> CuResult {
    // SAFETY: out-parameter.
    guard("cuCtxGetCurrent", || unsafe {
        write_out(ctx, state::current_context())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSetCurrent(ctx: u64) -> CuResult {
    guard("cuCtxSetCurrent", || {
        if ctx != 0 && !state::state().contexts.contains_key(&ctx) {
            return Err(CuResult::ERROR_INVALID_CONTEXT);
        }
        state::set_current_context(ctx);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxPushCurrent_v2(ctx: u64) -> CuResult {
    guard("cuCtxPushCurrent_v2", || {
        if !state::state().contexts.contains_key(&ctx) {
            return Err(CuResult::ERROR_INVALID_CONTEXT);
        }
        state::push_context(ctx);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxPopCurrent_v2(ctx: *mut u64) -> CuResult {
    guard("cuCtxPopCurrent_v2", || {
        let popped = state::pop_context();
        if popped == 0 {
            return Err(CuResult::ERROR_INVALID_CONTEXT);
        }
        if !ctx.is_null() {
            // SAFETY: out-parameter.
            unsafe { write_out(ctx, popped)? };
        }
        Ok(())
    })
}

pub(crate) fn context_device(ctx: u64) -> Result<u32, CuResult> {
    let ctx = if ctx == 0 {
        state::current_context()
    } else {
        ctx
    };
    state::state()
        .contexts
        .get(&ctx)
        .map(|c| c.device)
        .ok_or(CuResult::ERROR_INVALID_CONTEXT)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxGetDevice(device: *mut c_int) -> CuResult {
    guard("cuCtxGetDevice", || {
        let d = context_device(0)?;
        // SAFETY: out-parameter.
        unsafe { write_out(device, d as c_int) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxGetDevice_v2(device: *mut c_int, ctx: u64) -> CuResult {
    guard("cuCtxGetDevice_v2", || {
        let d = context_device(ctx)?;
        // SAFETY: out-parameter.
        unsafe { write_out(device, d as c_int) }
    })
}

/// Waits for all work of the session (the worker runs a session's work in order).
pub fn synchronize(ctx: u64) -> Result<(), CuResult> {
    session()?.call(
        &Request::ContextSynchronize {
            context: ContextId(ctx),
        },
        &[],
        crate::client::ReplyData::None,
    )?;
    super::pool::release_after_synchronize()
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSynchronize() -> CuResult {
    guard("cuCtxSynchronize", || synchronize(active_context()))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSynchronize_v2(ctx: u64) -> CuResult {
    guard("cuCtxSynchronize_v2", || {
        synchronize(if ctx == 0 { active_context() } else { ctx })
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxGetFlags(flags: *mut u32) -> CuResult {
    guard("cuCtxGetFlags", || {
        let ctx = active_context();
        let f = state::state()
            .contexts
            .get(&ctx)
            .map(|c| c.flags)
            .unwrap_or(0);
        // SAFETY: out-parameter.
        unsafe { write_out(flags, f) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSetFlags(flags: u32) -> CuResult {
    guard("cuCtxSetFlags", || {
        let ctx = active_context();
        if let Some(c) = state::state().contexts.get_mut(&ctx) {
            c.flags = flags;
        }
        Ok(())
    })
}

/// Defaults of `cuCtxGetLimit`, by `CUlimit`.
fn default_limit(limit: u32) -> Option<usize> {
    Some(match limit {
        0 => 1024,    // stack size
        1 => 1 << 20, // printf FIFO
        2 => 8 << 20, // malloc heap
        3 => 2,       // device runtime sync depth
        4 => 2048,    // pending launches
        5 => 64,      // max L2 fetch granularity
        6 => 0,       // persisting L2 cache
        7 | 8 => 0,   // shmem size / CIG
        _ => return None,
    })
}

fn limits() -> std::sync::MutexGuard<'static, std::collections::HashMap<u32, usize>> {
    static LIMITS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<u32, usize>>> =
        std::sync::OnceLock::new();
    LIMITS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxGetLimit(value: *mut usize, limit: u32) -> CuResult {
    guard("cuCtxGetLimit", || {
        let v = limits()
            .get(&limit)
            .copied()
            .or_else(|| default_limit(limit))
            .ok_or(CuResult::ERROR_UNSUPPORTED_LIMIT)?;
        // SAFETY: out-parameter.
        unsafe { write_out(value, v) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSetLimit(limit: u32, value: usize) -> CuResult {
    guard("cuCtxSetLimit", || {
        default_limit(limit).ok_or(CuResult::ERROR_UNSUPPORTED_LIMIT)?;
        limits().insert(limit, value);
        session()?.post(
            &Request::ContextSetLimit {
                context: ContextId(active_context()),
                limit,
                value: value as u64,
            },
            &[],
        )
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxGetStreamPriorityRange(least: *mut c_int, greatest: *mut c_int) -> CuResult {
    guard("cuCtxGetStreamPriorityRange", || {
        // SAFETY: out-parameters; either may be null.
        unsafe {
            if !least.is_null() {
                write_out(least, 0)?;
            }
            if !greatest.is_null() {
                write_out(greatest, -5)?;
            }
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxGetApiVersion(_ctx: u64, version: *mut u32) -> CuResult {
    // SAFETY: out-parameter.
    guard("cuCtxGetApiVersion", || unsafe { write_out(version, 3020) })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxGetId(ctx: u64, id: *mut u64) -> CuResult {
    guard("cuCtxGetId", || {
        let ctx = if ctx == 0 { active_context() } else { ctx };
        // SAFETY: out-parameter.
        unsafe { write_out(id, ctx) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxGetCacheConfig(config: *mut u32) -> CuResult {
    // SAFETY: out-parameter.
    guard("cuCtxGetCacheConfig", || unsafe { write_out(config, 0) })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSetCacheConfig(_config: u32) -> CuResult {
    guard("cuCtxSetCacheConfig", || Ok(()))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxResetPersistingL2Cache() -> CuResult {
    guard("cuCtxResetPersistingL2Cache", || Ok(()))
}
