//! One program session on the GPU: its own context, its address range reserved at the
//! session's fixed base, physical memory mapped into it allocation by allocation, its
//! modules, and two streams (kernels; copies through the pinned staging buffers).
//!
//! Every call runs to completion before it returns, like the cpu backend's: the session
//! layer above keeps CUDA's ordering and reports errors at the right call. Swap-out frees
//! every allocation (releasing all physical memory: see [`super::mapping`]) while the
//! reservation stays, so swap-in maps new memory at the very same addresses.

use super::Gpu;
use super::driver::{Current, check, error};
use super::image::variable_names;
use super::mapping::{ChunkMap, Span};
use super::staging::{CHUNK, StagingPair};
use crate::device::{
    DeviceSession, Fill, GlobalDesc, KernelDesc, Launch, LoadedModule, write_in_chunks,
};
use crate::error::DeviceError;
use cudarc::driver::sys;
use gpufn_proto::CuResult;
use gpufn_proto::message::{MemoryRange, ModuleId};
use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Dynamic shared memory a kernel may use without opting in (`cuFuncSetAttribute`).
const DEFAULT_SHARED_LIMIT: u32 = 48 << 10;

struct CudaModule {
    handle: sys::CUmodule,
    /// In the order of [`LoadedModule::kernels`].
    functions: Vec<sys::CUfunction>,
    kernels: Vec<KernelDesc>,
    /// Variables the driver placed: copies to and from them are allowed.
    variables: Vec<GlobalDesc>,
}

pub struct CudaSession {
    gpu: Arc<Gpu>,
    context: sys::CUcontext,
    kernels_stream: sys::CUstream,
    copy_stream: sys::CUstream,
    /// One per staging buffer: recorded after the copy that uses it.
    copy_done: [sys::CUevent; 2],
    /// The session's range, inside the device's reserved window (the reservation outlives
    /// the session: addresses stay the worker's).
    reservation: MemoryRange,
    chunks: ChunkMap,
    handles: HashMap<u64, sys::CUmemGenericAllocationHandle>,
    modules: HashMap<ModuleId, CudaModule>,
}

// SAFETY: the driver lets any thread use a context's handles once that context is current,
// and every method makes the session's context current first; the session is used by one
// thread at a time (the worker holds it behind a mutex).
unsafe impl Send for CudaSession {}

impl CudaSession {
    /// Creates the session's context and streams for `range` (inside the device's window).
    pub fn open(gpu: Arc<Gpu>, range: MemoryRange) -> Result<Self, DeviceError> {
        let context = create_context(gpu.device)?;
        let mut session = CudaSession {
            gpu,
            context,
            kernels_stream: std::ptr::null_mut(),
            copy_stream: std::ptr::null_mut(),
            copy_done: [std::ptr::null_mut(); 2],
            reservation: MemoryRange { base: 0, size: 0 },
            chunks: ChunkMap::new(1),
            handles: HashMap::new(),
            modules: HashMap::new(),
        };
        // On failure, dropping `session` destroys what was created so far.
        session.create_resources(range)?;
        Ok(session)
    }

    fn create_resources(&mut self, range: MemoryRange) -> Result<(), DeviceError> {
        let _current = Current::enter(self.context)?;
        for stream in [&mut self.kernels_stream, &mut self.copy_stream] {
            check(
                // SAFETY: valid out-pointer; the session's context is current.
                unsafe {
                    sys::cuStreamCreate(stream, sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32)
                },
                "creating a stream",
            )?;
        }
        for event in &mut self.copy_done {
            check(
                // SAFETY: valid out-pointer; the session's context is current.
                unsafe {
                    sys::cuEventCreate(event, sys::CUevent_flags::CU_EVENT_DISABLE_TIMING as u32)
                },
                "creating an event",
            )?;
        }
        let granularity = self.gpu.granularity;
        if !range.base.is_multiple_of(granularity) || !range.size.is_multiple_of(granularity) {
            return Err(DeviceError::invalid_value(format!(
                "session range 0x{:x}+0x{:x} is not aligned to the GPU's allocation granularity \
                 ({granularity} bytes)",
                range.base, range.size
            )));
        }
        let window = self.gpu.window;
        let inside = range.base >= window.base
            && range
                .base
                .checked_add(range.size)
                .is_some_and(|end| end <= window.base + window.size);
        if !inside {
            return Err(DeviceError::invalid_value(format!(
                "session range 0x{:x}+0x{:x} is outside the addresses the GPU reserved \
                 (0x{:x}+0x{:x})",
                range.base, range.size, window.base, window.size
            )));
        }
        self.reservation = range;
        self.chunks = ChunkMap::new(granularity);
        Ok(())
    }

    /// True if `address..+size` is exactly a variable of a loaded module.
    fn is_module_variable(&self, address: u64, size: u64) -> bool {
        self.modules
            .values()
            .flat_map(|m| &m.variables)
            .any(|v| v.address == address && v.size == size)
    }

    /// Copies must stay inside one allocation or one module variable of the session.
    fn check_access(&self, address: u64, len: u64) -> Result<(), DeviceError> {
        let in_variable = || {
            self.modules.values().flat_map(|m| &m.variables).any(|v| {
                address >= v.address
                    && address
                        .checked_add(len)
                        .is_some_and(|end| end <= v.address + v.size)
            })
        };
        if len == 0 || self.chunks.contains(address, len) || in_variable() {
            Ok(())
        } else {
            Err(DeviceError::invalid_value(format!(
                "0x{address:x}+{len} is not inside one allocation of this session"
            )))
        }
    }

    /// Creates and maps physical memory for `span`; returns its handle.
    fn map(&self, span: Span) -> Result<sys::CUmemGenericAllocationHandle, DeviceError> {
        let size = span.size as usize;
        let what = format!(
            "mapping {} bytes of device memory at 0x{:x}",
            span.size, span.start
        );
        let mut handle: sys::CUmemGenericAllocationHandle = 0;
        let prop = allocation_prop(self.gpu.device);
        check(
            // SAFETY: valid out-pointer and properties; size is a multiple of the granularity.
            unsafe { sys::cuMemCreate(&mut handle, size, &prop, 0) },
            &what,
        )?;
        let mapped = check(
            // SAFETY: the span lies in this session's reservation and is not mapped (the chunk
            // map says so); the handle is `size` bytes.
            unsafe { sys::cuMemMap(span.start, size, 0, handle, 0) },
            &what,
        )
        .and_then(|()| {
            let access = access_desc(self.gpu.device);
            check(
                // SAFETY: the span was just mapped.
                unsafe { sys::cuMemSetAccess(span.start, size, &access, 1) },
                &what,
            )
            .inspect_err(|_| {
                // SAFETY: unmaps the mapping made above.
                let _ = unsafe { sys::cuMemUnmap(span.start, size) };
            })
        });
        match mapped {
            Ok(()) => Ok(handle),
            Err(e) => {
                // SAFETY: the handle is no longer mapped anywhere.
                let _ = unsafe { sys::cuMemRelease(handle) };
                Err(e)
            }
        }
    }

    /// Unmaps a chunk and releases its physical memory.
    fn unmap(&mut self, span: Span) -> Result<(), DeviceError> {
        let what = format!("unmapping {} bytes at 0x{:x}", span.size, span.start);
        let unmapped = check(
            // SAFETY: the span is one whole mapping made by `map`; no work is in flight (every
            // call completes before it returns).
            unsafe { sys::cuMemUnmap(span.start, span.size as usize) },
            &what,
        );
        if let Some(handle) = self.handles.remove(&span.start) {
            // SAFETY: the handle's only mapping was just removed.
            check(unsafe { sys::cuMemRelease(handle) }, &what)?;
        }
        unmapped
    }

    /// Host → device through the staging pair: the host fills one buffer while the other
    /// is on its way.
    fn write_staged(
        &self,
        pair: &mut StagingPair,
        address: u64,
        data: &[u8],
    ) -> Result<(), DeviceError> {
        let mut in_flight = [false; 2];
        for (i, chunk) in data.chunks(CHUNK).enumerate() {
            let b = i % 2;
            if in_flight[b] {
                check(
                    // SAFETY: a live event of this session.
                    unsafe { sys::cuEventSynchronize(self.copy_done[b]) },
                    "waiting for a copy",
                )?;
            }
            // SAFETY: the event wait above means no copy uses buffer `b`.
            unsafe { pair[b].slice_mut(chunk.len()) }.copy_from_slice(chunk);
            let dst = address + (i * CHUNK) as u64;
            check(
                // SAFETY: `dst..+len` is inside an allocation (checked by the caller); the
                // buffer stays untouched until the event recorded next has completed.
                unsafe {
                    sys::cuMemcpyHtoDAsync_v2(
                        dst,
                        pair[b].as_ptr().cast(),
                        chunk.len(),
                        self.copy_stream,
                    )
                },
                "copying to the device",
            )?;
            check(
                // SAFETY: live event and stream of this session.
                unsafe { sys::cuEventRecord(self.copy_done[b], self.copy_stream) },
                "recording a copy",
            )?;
            in_flight[b] = true;
        }
        Ok(())
    }

    /// Device → host through the staging pair: the next chunk is on its way while the host
    /// drains the previous one.
    fn read_staged(
        &self,
        pair: &mut StagingPair,
        address: u64,
        out: &mut [u8],
    ) -> Result<(), DeviceError> {
        let total = out.len();
        let count = total.div_ceil(CHUNK);
        let issue = |pair: &mut StagingPair, i: usize| -> Result<(), DeviceError> {
            let len = (total - i * CHUNK).min(CHUNK);
            let b = i % 2;
            check(
                // SAFETY: `address + i * CHUNK ..+len` is inside an allocation (checked by the
                // caller); buffer `b` was drained before this copy is issued.
                unsafe {
                    sys::cuMemcpyDtoHAsync_v2(
                        pair[b].as_ptr().cast(),
                        address + (i * CHUNK) as u64,
                        len,
                        self.copy_stream,
                    )
                },
                "copying from the device",
            )?;
            check(
                // SAFETY: live event and stream of this session.
                unsafe { sys::cuEventRecord(self.copy_done[b], self.copy_stream) },
                "recording a copy",
            )
        };
        issue(pair, 0)?;
        for i in 0..count {
            if i + 1 < count {
                issue(pair, i + 1)?;
            }
            let b = i % 2;
            check(
                // SAFETY: a live event of this session.
                unsafe { sys::cuEventSynchronize(self.copy_done[b]) },
                "waiting for a copy",
            )?;
            let start = i * CHUNK;
            let len = (out.len() - start).min(CHUNK);
            // SAFETY: the copy into buffer `b` has completed and the next one into it is
            // only issued after this read.
            out[start..start + len].copy_from_slice(unsafe { pair[b].slice_mut(len) });
        }
        Ok(())
    }

    /// Runs `copy` with a staging pair and gives the pair back only once the copy stream is
    /// idle, even when the copy failed half-way.
    fn with_staging(
        &self,
        copy: impl FnOnce(&mut StagingPair) -> Result<(), DeviceError>,
    ) -> Result<(), DeviceError> {
        let _current = Current::enter(self.context)?;
        let mut pair = self.gpu.staging.take()?;
        let copied = copy(&mut pair);
        let drained = check(
            // SAFETY: a live stream of this session.
            unsafe { sys::cuStreamSynchronize(self.copy_stream) },
            "finishing a copy",
        );
        // If the stream is broken a copy may still target the buffers: they are leaked
        // (never freed) rather than handed to another copy.
        if drained.is_ok() {
            self.gpu.staging.give_back(pair);
        }
        copied.and(drained)
    }

    fn sync_copy_stream(&self, what: &str) -> Result<(), DeviceError> {
        // SAFETY: a live stream of this session.
        check(unsafe { sys::cuStreamSynchronize(self.copy_stream) }, what)
    }

    fn describe_module(
        &self,
        handle: sys::CUmodule,
        image: &[u8],
    ) -> Result<CudaModule, DeviceError> {
        let mut count: u32 = 0;
        check(
            // SAFETY: valid out-pointer and a loaded module.
            unsafe { sys::cuModuleGetFunctionCount(&mut count, handle) },
            "counting kernels",
        )?;
        let mut functions: Vec<sys::CUfunction> = vec![std::ptr::null_mut(); count as usize];
        check(
            // SAFETY: room for `count` handles.
            unsafe { sys::cuModuleEnumerateFunctions(functions.as_mut_ptr(), count, handle) },
            "listing kernels",
        )?;
        let kernels = functions
            .iter()
            .map(|&f| describe_kernel(f))
            .collect::<Result<Vec<_>, _>>()?;
        let mut variables = Vec::new();
        for name in variable_names(image) {
            let Ok(c_name) = CString::new(name.as_str()) else {
                continue;
            };
            let (mut address, mut size): (sys::CUdeviceptr, usize) = (0, 0);
            // SAFETY: valid out-pointers and a NUL-terminated name.
            let found = unsafe {
                sys::cuModuleGetGlobal_v2(&mut address, &mut size, handle, c_name.as_ptr())
            };
            if found == sys::CUresult::CUDA_SUCCESS {
                variables.push(GlobalDesc {
                    name,
                    address,
                    size: size as u64,
                });
            }
        }
        Ok(CudaModule {
            handle,
            functions,
            kernels,
            variables,
        })
    }

    fn unload(&mut self, id: ModuleId) -> Result<(), DeviceError> {
        let module = self
            .modules
            .remove(&id)
            .ok_or_else(|| DeviceError::invalid_handle(format!("no module {}", id.0)))?;
        let _current = Current::enter(self.context)?;
        check(
            // SAFETY: a module this session loaded; no kernel of it is running.
            unsafe { sys::cuModuleUnload(module.handle) },
            "unloading a module",
        )
    }
}

impl DeviceSession for CudaSession {
    fn allocate_at(&mut self, address: u64, size: u64) -> Result<(), DeviceError> {
        if self.is_module_variable(address, size) {
            // Swap-in of a variable the driver placed inside the range: it never left.
            return Ok(());
        }
        let end = address.checked_add(size);
        if end.is_none_or(|end| {
            address < self.reservation.base || end > self.reservation.base + self.reservation.size
        }) {
            return Err(DeviceError::invalid_value(format!(
                "0x{address:x}+{size} is outside the session's range"
            )));
        }
        let plan = self
            .chunks
            .plan_allocate(address, size)
            .map_err(|e| DeviceError::invalid_value(e.to_string()))?;
        let _current = Current::enter(self.context)?;
        let mut created: Vec<Span> = Vec::new();
        for &span in &plan {
            match self.map(span) {
                Ok(handle) => {
                    self.handles.insert(span.start, handle);
                    created.push(span);
                }
                Err(e) => {
                    for span in created {
                        let _ = self.unmap(span);
                    }
                    return Err(e);
                }
            }
        }
        self.chunks
            .commit_allocate(address, size, &plan)
            .map_err(|e| DeviceError::invalid_value(e.to_string()))?;
        check(
            // New allocations read as zeros, on every backend.
            // SAFETY: the range was just mapped for this session.
            unsafe { sys::cuMemsetD8Async(address, 0, size as usize, self.copy_stream) },
            "zeroing new device memory",
        )?;
        self.sync_copy_stream("zeroing new device memory")
    }

    fn free(&mut self, address: u64) -> Result<(), DeviceError> {
        let variable = self
            .modules
            .values()
            .flat_map(|m| &m.variables)
            .any(|v| v.address == address);
        let unused = match self.chunks.free(address) {
            Ok(unused) => unused,
            // Swap-out of a variable the driver placed inside the range: it stays with its
            // module (unloading the module frees it).
            Err(_) if variable => return Ok(()),
            Err(e) => return Err(DeviceError::invalid_value(e.to_string())),
        };
        let _current = Current::enter(self.context)?;
        let mut result = Ok(());
        for span in unused {
            result = result.and(self.unmap(span));
        }
        result
    }

    fn read(&self, address: u64, out: &mut [u8]) -> Result<(), DeviceError> {
        self.check_access(address, out.len() as u64)?;
        if out.is_empty() {
            return Ok(());
        }
        self.with_staging(|pair| self.read_staged(pair, address, out))
    }

    fn write(&self, address: u64, data: &[u8]) -> Result<(), DeviceError> {
        self.check_access(address, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        self.with_staging(|pair| self.write_staged(pair, address, data))
    }

    /// Checks the whole range first, so an invalid one fails before any byte is written or
    /// read from `fill`, like [`DeviceSession::write`]. The bytes pass through a temporary
    /// host buffer; the natural target is the pinned staging pair instead (one copy less).
    fn write_from(&self, address: u64, len: u64, fill: &mut Fill<'_>) -> Result<(), DeviceError> {
        self.check_access(address, len)?;
        write_in_chunks(self, address, len, fill)
    }

    fn copy(&self, dst: u64, src: u64, len: u64) -> Result<(), DeviceError> {
        self.check_access(dst, len)?;
        self.check_access(src, len)?;
        if len == 0 {
            return Ok(());
        }
        let _current = Current::enter(self.context)?;
        check(
            // SAFETY: both ranges are inside the session's memory (checked above).
            unsafe { sys::cuMemcpyDtoDAsync_v2(dst, src, len as usize, self.copy_stream) },
            "copying within the device",
        )?;
        self.sync_copy_stream("copying within the device")
    }

    fn memset(
        &self,
        dst: u64,
        value: u32,
        element_size: u8,
        count: u64,
    ) -> Result<(), DeviceError> {
        let len = count
            .checked_mul(u64::from(element_size))
            .ok_or_else(|| DeviceError::invalid_value("memset size overflows"))?;
        self.check_access(dst, len)?;
        let _current = Current::enter(self.context)?;
        let n = count as usize;
        let stream = self.copy_stream;
        let result = match element_size {
            // SAFETY: `dst..+len` is inside the session's memory (checked above).
            1 => unsafe { sys::cuMemsetD8Async(dst, value as u8, n, stream) },
            // SAFETY: as above.
            2 => unsafe { sys::cuMemsetD16Async(dst, value as u16, n, stream) },
            // SAFETY: as above.
            4 => unsafe { sys::cuMemsetD32Async(dst, value, n, stream) },
            other => {
                return Err(DeviceError::invalid_value(format!(
                    "memset element size {other} is not 1, 2 or 4"
                )));
            }
        };
        check(result, "setting device memory")?;
        self.sync_copy_stream("setting device memory")
    }

    fn load_module(&mut self, id: ModuleId, image: &[u8]) -> Result<LoadedModule, DeviceError> {
        let data = driver_image(image);
        let _current = Current::enter(self.context)?;
        let mut handle: sys::CUmodule = std::ptr::null_mut();
        check(
            // SAFETY: `data` is the whole image (PTX NUL-terminated) and outlives the call.
            unsafe { sys::cuModuleLoadData(&mut handle, data.as_ptr().cast()) },
            "loading the module",
        )?;
        let module = match self.describe_module(handle, image) {
            Ok(module) => module,
            Err(e) => {
                // SAFETY: the module just loaded; nothing else refers to it.
                let _ = unsafe { sys::cuModuleUnload(handle) };
                return Err(e);
            }
        };
        let loaded = LoadedModule {
            kernels: module.kernels.clone(),
            globals: module.variables.clone(),
            ptx_version: module.functions.first().map_or(0, |&f| {
                function_attribute(f, sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_PTX_VERSION)
                    .unwrap_or(0) as u32
            }),
        };
        drop(_current);
        if self.modules.contains_key(&id) {
            self.unload(id)?;
        }
        self.modules.insert(id, module);
        Ok(loaded)
    }

    fn unload_module(&mut self, id: ModuleId) -> Result<(), DeviceError> {
        self.unload(id)
    }

    fn launch(&self, launch: Launch<'_>, cancel: &AtomicBool) -> Result<Vec<u8>, DeviceError> {
        let module = self.modules.get(&launch.module).ok_or_else(|| {
            DeviceError::invalid_handle(format!("no module {} is loaded", launch.module.0))
        })?;
        let index = launch.kernel as usize;
        let (Some(&function), Some(kernel)) =
            (module.functions.get(index), module.kernels.get(index))
        else {
            return Err(DeviceError::invalid_handle(format!(
                "module {} has no kernel number {}",
                launch.module.0, launch.kernel
            )));
        };
        // The driver copies each parameter from its own pointer: keep the packed buffer in
        // 8-byte aligned storage and point into it.
        let mut storage = vec![0u64; launch.params.len().div_ceil(8)];
        // SAFETY: `storage` has at least `params.len()` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                launch.params.as_ptr(),
                storage.as_mut_ptr().cast::<u8>(),
                launch.params.len(),
            );
        }
        let base = storage.as_mut_ptr().cast::<u8>();
        let mut pointers = Vec::with_capacity(kernel.params.len());
        for &(offset, size, _) in &kernel.params {
            if u64::from(offset) + u64::from(size) > launch.params.len() as u64 {
                return Err(DeviceError::invalid_value(format!(
                    "the parameter buffer holds {} bytes; kernel {} needs {} bytes at offset {offset}",
                    launch.params.len(),
                    kernel.name,
                    size
                )));
            }
            // SAFETY: in bounds (checked above).
            pointers.push(unsafe { base.add(offset as usize) }.cast::<c_void>());
        }
        let _current = Current::enter(self.context)?;
        if launch.shared_bytes.saturating_add(kernel.shared_bytes) > DEFAULT_SHARED_LIMIT {
            check(
                // The session layer checked the program opted in (cuFuncSetAttribute), which it
                // answered itself; the driver must hear of it too.
                // SAFETY: a live function of this session.
                unsafe {
                    sys::cuFuncSetAttribute(
                        function,
                        sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        launch.shared_bytes as i32,
                    )
                },
                "raising the kernel's dynamic shared memory limit",
            )?;
        }
        let [gx, gy, gz] = launch.grid;
        let [bx, by, bz] = launch.block;
        check(
            // SAFETY: one pointer per parameter, each to `size` readable bytes of `storage`,
            // which outlives the launch (the kernel is waited for below).
            unsafe {
                sys::cuLaunchKernel(
                    function,
                    gx,
                    gy,
                    gz,
                    bx,
                    by,
                    bz,
                    launch.shared_bytes,
                    self.kernels_stream,
                    pointers.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            },
            &format!("launching {}", kernel.name),
        )?;
        wait(self.kernels_stream, cancel, &kernel.name)?;
        // Device printf goes to the worker's stdout (the driver prints it at synchronisation).
        Ok(Vec::new())
    }
}

impl Drop for CudaSession {
    fn drop(&mut self) {
        let Ok(current) = Current::enter(self.context) else {
            return;
        };
        for stream in [self.kernels_stream, self.copy_stream] {
            if !stream.is_null() {
                // SAFETY: live streams of this session; waits for anything still running.
                let _ = unsafe { sys::cuStreamSynchronize(stream) };
            }
        }
        for module in std::mem::take(&mut self.modules).into_values() {
            // SAFETY: modules this session loaded; nothing runs any more.
            let _ = unsafe { sys::cuModuleUnload(module.handle) };
        }
        let chunks: Vec<Span> = self.chunks.chunks().collect();
        for span in chunks {
            let _ = self.unmap(span);
        }
        for event in self.copy_done {
            if !event.is_null() {
                // SAFETY: a live event of this session.
                let _ = unsafe { sys::cuEventDestroy_v2(event) };
            }
        }
        for stream in [self.kernels_stream, self.copy_stream] {
            if !stream.is_null() {
                // SAFETY: a live, idle stream of this session.
                let _ = unsafe { sys::cuStreamDestroy_v2(stream) };
            }
        }
        drop(current);
        // SAFETY: the session's own context, no longer current anywhere.
        let _ = unsafe { sys::cuCtxDestroy_v2(self.context) };
    }
}

/// A new context on `device`, not left current on this thread.
fn create_context(device: sys::CUdevice) -> Result<sys::CUcontext, DeviceError> {
    let context = super::driver::create_context(device)?;
    let mut popped: sys::CUcontext = std::ptr::null_mut();
    // SAFETY: creating the context made it current on this thread; pop it again.
    let _ = unsafe { sys::cuCtxPopCurrent_v2(&mut popped) };
    Ok(context)
}

/// Waits for `stream` to drain; gives up (the session ended) when `cancel` is set.
fn wait(stream: sys::CUstream, cancel: &AtomicBool, kernel: &str) -> Result<(), DeviceError> {
    let mut pause = Duration::from_micros(0);
    loop {
        // SAFETY: a live stream of the current context.
        let state = unsafe { sys::cuStreamQuery(stream) };
        match state {
            sys::CUresult::CUDA_SUCCESS => return Ok(()),
            sys::CUresult::CUDA_ERROR_NOT_READY => {}
            other => return Err(error(other, &format!("running {kernel}"))),
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(DeviceError::new(
                CuResult::ERROR_LAUNCH_TIMEOUT,
                format!("{kernel} was still running when its session ended"),
            ));
        }
        // Short kernels finish within microseconds: yield first, then back off to 1 ms.
        if pause.is_zero() {
            std::thread::yield_now();
            pause = Duration::from_micros(5);
        } else {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }
}

fn describe_kernel(function: sys::CUfunction) -> Result<KernelDesc, DeviceError> {
    // SAFETY: a function of a loaded module.
    check(unsafe { sys::cuFuncLoad(function) }, "loading a kernel")?;
    let mut name: *const c_char = std::ptr::null();
    check(
        // SAFETY: valid out-pointer; the name lives as long as the module.
        unsafe { sys::cuFuncGetName(&mut name, function) },
        "reading a kernel's name",
    )?;
    let name = if name.is_null() {
        String::new()
    } else {
        // SAFETY: NUL-terminated, owned by the driver.
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    };
    let mut params = Vec::new();
    for index in 0.. {
        let (mut offset, mut size) = (0usize, 0usize);
        // SAFETY: valid out-pointers; an index past the last parameter is an error, not UB.
        let result = unsafe { sys::cuFuncGetParamInfo(function, index, &mut offset, &mut size) };
        if result != sys::CUresult::CUDA_SUCCESS {
            break;
        }
        let (offset, size) = (offset as u32, size as u32);
        params.push((offset, size, param_align(offset, size)));
    }
    use sys::CUfunction_attribute as F;
    Ok(KernelDesc {
        name,
        params,
        shared_bytes: function_attribute(function, F::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)? as u32,
        max_threads_per_block: function_attribute(
            function,
            F::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK,
        )? as u32,
    })
}

fn function_attribute(
    function: sys::CUfunction,
    attribute: sys::CUfunction_attribute,
) -> Result<i32, DeviceError> {
    let mut value = 0;
    check(
        // SAFETY: valid out-pointer; a function of a loaded module.
        unsafe { sys::cuFuncGetAttribute(&mut value, attribute, function) },
        "reading a kernel attribute",
    )?;
    Ok(value)
}

/// A parameter's alignment, which the driver does not report: the largest power of two (up
/// to 16) that divides both its offset and its size.
pub fn param_align(offset: u32, size: u32) -> u32 {
    let natural = if size == 0 {
        1
    } else {
        1 << size.trailing_zeros().min(4)
    };
    let by_offset = if offset == 0 {
        16
    } else {
        1 << offset.trailing_zeros().min(4)
    };
    natural.min(by_offset)
}

/// The image as the driver takes it: PTX text must end with a NUL; binary images are
/// passed as they are.
pub fn driver_image(image: &[u8]) -> Vec<u8> {
    const FATBIN: [u8; 4] = 0xBA55_ED50u32.to_le_bytes();
    const WRAPPER: [u8; 4] = 0x4662_43B1u32.to_le_bytes();
    let binary =
        image.starts_with(b"\x7fELF") || image.starts_with(&FATBIN) || image.starts_with(&WRAPPER);
    let mut data = image.to_vec();
    if !binary && data.last() != Some(&0) {
        data.push(0);
    }
    data
}

fn allocation_prop(device: sys::CUdevice) -> sys::CUmemAllocationProp {
    // SAFETY: all-zero is a valid value of this plain C struct (null pointer, zero-valued
    // enum variants).
    let mut prop: sys::CUmemAllocationProp = unsafe { std::mem::zeroed() };
    prop.type_ = sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type_ = sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = device;
    prop
}

fn access_desc(device: sys::CUdevice) -> sys::CUmemAccessDesc {
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut desc: sys::CUmemAccessDesc = unsafe { std::mem::zeroed() };
    desc.location.type_ = sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
    desc.location.id = device;
    desc.flags = sys::CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    desc
}

/// The allocation granularity of `device`'s memory.
pub fn granularity(device: sys::CUdevice) -> Result<u64, DeviceError> {
    let prop = allocation_prop(device);
    let mut granularity = 0usize;
    check(
        // SAFETY: valid out-pointer and properties.
        unsafe {
            sys::cuMemGetAllocationGranularity(
                &mut granularity,
                &prop,
                sys::CUmemAllocationGranularity_flags::CU_MEM_ALLOC_GRANULARITY_MINIMUM,
            )
        },
        "reading the allocation granularity",
    )?;
    Ok(granularity as u64)
}
