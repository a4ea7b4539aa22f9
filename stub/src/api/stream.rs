//! Streams and events. Creation, records and waits are posts; synchronisation, queries and
//! elapsed times are calls.

use super::memory::stream_of;
use super::{guard, session, write_out};
use crate::client::ReplyData;
use crate::state::{self, Event, Stream};
use gpufn_proto::CuResult;
use gpufn_proto::message::{EventId, Reply, Request, StreamId};
use std::ffi::c_int;

fn create_stream(out: *mut usize, flags: u32, priority: c_int) -> Result<(), CuResult> {
    let id = state::next_id();
    let context = super::context::active_context();
    session()?.post(
        &Request::StreamCreate {
            stream: StreamId(id),
            flags,
            priority,
        },
        &[],
    )?;
    state::state().streams.insert(
        id,
        Stream {
            id: StreamId(id),
            context,
            flags,
            priority,
        },
    );
    // SAFETY: out-parameter.
    unsafe { write_out(out, id as usize) }
}

fn stream(handle: usize) -> Result<Option<Stream>, CuResult> {
    match stream_of(handle) {
        None => Ok(None),
        Some(id) => state::state()
            .streams
            .get(&id.0)
            .copied()
            .map(Some)
            .ok_or(CuResult::ERROR_INVALID_HANDLE),
    }
}

/// Waits for a stream's work (the default stream: all work).
pub fn synchronize_stream(handle: usize) -> Result<(), CuResult> {
    match stream(handle)? {
        None => super::context::synchronize(super::context::active_context()),
        Some(s) => {
            session()?.call(
                &Request::StreamSynchronize { stream: s.id },
                &[],
                ReplyData::None,
            )?;
            super::pool::release_after_synchronize()
        }
    }
}

fn query_stream(handle: usize) -> Result<(), CuResult> {
    let reply = match stream(handle)? {
        None => {
            return super::context::synchronize(super::context::active_context());
        }
        Some(s) => session()?.call(&Request::StreamQuery { stream: s.id }, &[], ReplyData::None)?,
    };
    match reply {
        Reply::NotReady => Err(CuResult::ERROR_NOT_READY),
        _ => Ok(()),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamCreate(out: *mut usize, flags: u32) -> CuResult {
    guard("cuStreamCreate", || create_stream(out, flags, 0))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamCreateWithPriority(
    out: *mut usize,
    flags: u32,
    priority: c_int,
) -> CuResult {
    guard("cuStreamCreateWithPriority", || {
        create_stream(out, flags, priority.clamp(-5, 0))
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamDestroy_v2(handle: usize) -> CuResult {
    guard("cuStreamDestroy_v2", || {
        let s = stream(handle)?.ok_or(CuResult::ERROR_INVALID_HANDLE)?;
        state::state().streams.remove(&s.id.0);
        session()?.post(&Request::StreamDestroy { stream: s.id }, &[])
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamSynchronize(handle: usize) -> CuResult {
    guard("cuStreamSynchronize", || synchronize_stream(handle))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamSynchronize_ptsz(handle: usize) -> CuResult {
    guard("cuStreamSynchronize_ptsz", || synchronize_stream(handle))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamQuery(handle: usize) -> CuResult {
    guard("cuStreamQuery", || query_stream(handle))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamQuery_ptsz(handle: usize) -> CuResult {
    guard("cuStreamQuery_ptsz", || query_stream(handle))
}

fn wait_event(handle: usize, event: usize) -> Result<(), CuResult> {
    let e = event_of(event)?;
    match stream(handle)? {
        // The worker runs a session's work in order: the default stream already follows
        // every earlier record.
        None => Ok(()),
        Some(s) => session()?.post(
            &Request::StreamWaitEvent {
                stream: s.id,
                event: e.id,
            },
            &[],
        ),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamWaitEvent(handle: usize, event: usize, _flags: u32) -> CuResult {
    guard("cuStreamWaitEvent", || wait_event(handle, event))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamWaitEvent_ptsz(handle: usize, event: usize, _flags: u32) -> CuResult {
    guard("cuStreamWaitEvent_ptsz", || wait_event(handle, event))
}

macro_rules! stream_getter {
    ($name:ident, $ptsz:ident, $ty:ty, |$s:ident| $value:expr, $default:expr) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn $name(handle: usize, out: *mut $ty) -> CuResult {
            guard(stringify!($name), || {
                let value = match stream(handle)? {
                    Some($s) => $value,
                    None => $default,
                };
                // SAFETY: out-parameter.
                unsafe { write_out(out, value) }
            })
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn $ptsz(handle: usize, out: *mut $ty) -> CuResult {
            $name(handle, out)
        }
    };
}

stream_getter!(
    cuStreamGetPriority,
    cuStreamGetPriority_ptsz,
    c_int,
    |s| s.priority,
    0
);
stream_getter!(cuStreamGetFlags, cuStreamGetFlags_ptsz, u32, |s| s.flags, 0);
stream_getter!(cuStreamGetId, cuStreamGetId_ptsz, u64, |s| s.id.0, 0);
stream_getter!(
    cuStreamGetCtx,
    cuStreamGetCtx_ptsz,
    u64,
    |s| s.context,
    super::context::active_context()
);
stream_getter!(cuStreamGetDevice, cuStreamGetDevice_ptsz, c_int, |_s| 0, 0);
stream_getter!(
    cuStreamIsCapturing,
    cuStreamIsCapturing_ptsz,
    u32,
    |_s| 0,
    0
);

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamGetCtx_v2(handle: usize, ctx: *mut u64, green: *mut u64) -> CuResult {
    guard("cuStreamGetCtx_v2", || {
        let c = match stream(handle)? {
            Some(s) => s.context,
            None => super::context::active_context(),
        };
        // SAFETY: out-parameters; `green` may be null.
        unsafe {
            write_out(ctx, c)?;
            if !green.is_null() {
                write_out(green, 0)?;
            }
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamGetCaptureInfo_v3(
    handle: usize,
    status: *mut u32,
    id: *mut u64,
) -> CuResult {
    guard("cuStreamGetCaptureInfo_v3", || {
        stream(handle)?;
        // SAFETY: out-parameters; streams never capture here (CU_STREAM_CAPTURE_STATUS_NONE).
        unsafe {
            write_out(status, 0)?;
            if !id.is_null() {
                write_out(id, 0)?;
            }
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamGetCaptureInfo_v3_ptsz(
    handle: usize,
    status: *mut u32,
    id: *mut u64,
) -> CuResult {
    cuStreamGetCaptureInfo_v3(handle, status, id)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamGetCtx_v2_ptsz(
    handle: usize,
    ctx: *mut u64,
    green: *mut u64,
) -> CuResult {
    cuStreamGetCtx_v2(handle, ctx, green)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuThreadExchangeStreamCaptureMode(mode: *mut u32) -> CuResult {
    guard("cuThreadExchangeStreamCaptureMode", || {
        if mode.is_null() {
            return Err(CuResult::ERROR_INVALID_VALUE);
        }
        Ok(())
    })
}

// --- events ---

fn event_of(handle: usize) -> Result<Event, CuResult> {
    state::state()
        .events
        .get(&(handle as u64))
        .copied()
        .ok_or(CuResult::ERROR_INVALID_HANDLE)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventCreate(out: *mut usize, flags: u32) -> CuResult {
    guard("cuEventCreate", || {
        let id = state::next_id();
        session()?.post(
            &Request::EventCreate {
                event: EventId(id),
                flags,
            },
            &[],
        )?;
        state::state().events.insert(
            id,
            Event {
                id: EventId(id),
                flags,
            },
        );
        // SAFETY: out-parameter.
        unsafe { write_out(out, id as usize) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventDestroy_v2(handle: usize) -> CuResult {
    guard("cuEventDestroy_v2", || {
        let e = event_of(handle)?;
        state::state().events.remove(&e.id.0);
        session()?.post(&Request::EventDestroy { event: e.id }, &[])
    })
}

fn record(event: usize, handle: usize) -> Result<(), CuResult> {
    let e = event_of(event)?;
    let s = stream(handle)?;
    session()?.post(
        &Request::EventRecord {
            event: e.id,
            stream: s.map(|s| s.id),
        },
        &[],
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventRecord(event: usize, stream: usize) -> CuResult {
    guard("cuEventRecord", || record(event, stream))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventRecord_ptsz(event: usize, stream: usize) -> CuResult {
    guard("cuEventRecord_ptsz", || record(event, stream))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventRecordWithFlags(event: usize, stream: usize, _flags: u32) -> CuResult {
    guard("cuEventRecordWithFlags", || record(event, stream))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventRecordWithFlags_ptsz(
    event: usize,
    stream: usize,
    _flags: u32,
) -> CuResult {
    guard("cuEventRecordWithFlags_ptsz", || record(event, stream))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventQuery(event: usize) -> CuResult {
    guard("cuEventQuery", || {
        let e = event_of(event)?;
        match session()?.call(&Request::EventQuery { event: e.id }, &[], ReplyData::None)? {
            Reply::NotReady => Err(CuResult::ERROR_NOT_READY),
            _ => Ok(()),
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventSynchronize(event: usize) -> CuResult {
    guard("cuEventSynchronize", || {
        let e = event_of(event)?;
        session()?.call(
            &Request::EventSynchronize { event: e.id },
            &[],
            ReplyData::None,
        )?;
        super::pool::release_after_synchronize()
    })
}

fn elapsed(ms: *mut f32, start: usize, end: usize) -> Result<(), CuResult> {
    let (start, end) = (event_of(start)?, event_of(end)?);
    let reply = session()?.call(
        &Request::EventElapsedTime {
            start: start.id,
            end: end.id,
        },
        &[],
        ReplyData::None,
    )?;
    let Reply::ElapsedMs(value) = reply else {
        return Err(CuResult::ERROR_UNKNOWN);
    };
    // SAFETY: out-parameter.
    unsafe { write_out(ms, value) }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventElapsedTime(ms: *mut f32, start: usize, end: usize) -> CuResult {
    guard("cuEventElapsedTime", || elapsed(ms, start, end))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventElapsedTime_v2(ms: *mut f32, start: usize, end: usize) -> CuResult {
    guard("cuEventElapsedTime_v2", || elapsed(ms, start, end))
}
