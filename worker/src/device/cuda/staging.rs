//! Pinned host buffers for copies between host and device: a copy from pageable memory is
//! staged by the driver anyway, and slowly; copying through page-locked buffers runs at the
//! link's full speed and lets two chunks overlap (one on the DMA engine while the CPU fills
//! or drains the other).
//!
//! The buffers belong to the device (allocated once in its primary context, `PORTABLE` so
//! every session's context may use them) and are lent to one copy at a time.

use super::driver::{Current, check};
use crate::error::DeviceError;
use cudarc::driver::sys;
use std::sync::Mutex;

/// Bytes per staging buffer; two make a pair.
pub const CHUNK: usize = 8 << 20;
/// Idle pairs kept for reuse; more are freed when given back.
const IDLE_PAIRS: usize = 4;

/// One page-locked host buffer of [`CHUNK`] bytes.
pub struct PinnedBuffer {
    ptr: *mut u8,
}

impl PinnedBuffer {
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The buffer's first `len` bytes (at most [`CHUNK`]).
    ///
    /// # Safety
    /// No copy the driver runs may be writing into or reading from the buffer.
    pub unsafe fn slice_mut(&mut self, len: usize) -> &mut [u8] {
        // SAFETY: the buffer is CHUNK bytes; the caller guarantees no DMA is using it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, len.min(CHUNK)) }
    }
}

/// Two buffers: while the device copies one, the host works on the other.
pub type StagingPair = [PinnedBuffer; 2];

/// The device's staging buffers.
pub struct StagingPool {
    primary: sys::CUcontext,
    idle: Mutex<Vec<StagingPair>>,
}

// SAFETY: the pool only holds host pointers to pinned memory and the primary context
// handle; the driver lets any thread use both (each use makes the context current first),
// and the idle list is behind a mutex.
unsafe impl Send for StagingPool {}
// SAFETY: see above.
unsafe impl Sync for StagingPool {}

impl StagingPool {
    /// A pool whose buffers are allocated in `primary` (the device's primary context,
    /// retained for the pool's life).
    pub fn new(primary: sys::CUcontext) -> Self {
        StagingPool {
            primary,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle pair, or a new one.
    pub fn take(&self) -> Result<StagingPair, DeviceError> {
        if let Some(pair) = self.lock().pop() {
            return Ok(pair);
        }
        let _current = Current::enter(self.primary)?;
        let first = allocate()?;
        match allocate() {
            Ok(second) => Ok([first, second]),
            Err(e) => {
                free(first);
                Err(e)
            }
        }
    }

    /// Returns a pair once no copy uses it any more.
    pub fn give_back(&self, pair: StagingPair) {
        let mut idle = self.lock();
        if idle.len() < IDLE_PAIRS {
            idle.push(pair);
            return;
        }
        drop(idle);
        if let Ok(_current) = Current::enter(self.primary) {
            pair.into_iter().for_each(free);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<StagingPair>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for StagingPool {
    fn drop(&mut self) {
        let pairs = std::mem::take(&mut *self.lock());
        if let Ok(_current) = Current::enter(self.primary) {
            pairs.into_iter().flatten().for_each(free);
        }
    }
}

fn allocate() -> Result<PinnedBuffer, DeviceError> {
    let mut ptr: *mut std::ffi::c_void = std::ptr::null_mut();
    check(
        // SAFETY: a valid out-pointer; the primary context is current (caller).
        unsafe { sys::cuMemHostAlloc(&mut ptr, CHUNK, sys::CU_MEMHOSTALLOC_PORTABLE) },
        "allocating a pinned host staging buffer",
    )?;
    Ok(PinnedBuffer { ptr: ptr.cast() })
}

fn free(buffer: PinnedBuffer) {
    // SAFETY: the pointer came from cuMemHostAlloc and no copy uses it any more.
    let _ = unsafe { sys::cuMemFreeHost(buffer.ptr.cast()) };
}
