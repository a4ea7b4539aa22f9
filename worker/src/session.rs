//! One program's session: its address range and allocations, modules, contexts, streams,
//! events, pending (deferred) errors and sticky error. [`Session::execute`] runs one request
//! to completion; the server feeds requests in the order they arrived.
//!
//! The CPU device runs every operation synchronously, so streams and events only need to
//! exist (and events to carry the time they were recorded): by the time a later request
//! runs, everything before it has finished.

use crate::address_space::{AddressError, AddressSpace, Owner};
use crate::buffers::Buffers;
use crate::cache::{ModuleCache, hash_image};
use crate::device::{Device, DeviceSession, Fill, KernelDesc, Launch};
use crate::error::DeviceError;
use crate::swap::MemoryGate;
use gpufn_proto::frame::FrameKind;
use gpufn_proto::message::{
    CallError, ContextId, CopyDirection, DeferredError, DeviceRegion, EventId, FunctionRef,
    GlobalInfo, ImageHash, KernelInfo, LaunchAttribute, MemoryRange, ModuleId, ParamLayout, Reply,
    ReplyMessage, Request, SessionId, StreamId, SwapState,
};
use gpufn_proto::{CuResult, DeviceAttribute, FrameLimits};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// `CU_EVENT_DISABLE_TIMING`.
const EVENT_DISABLE_TIMING: u32 = 0x2;

/// `CUlimit` values and their defaults (as a current driver reports them).
const LIMIT_DEFAULTS: [(u32, u64); 7] = [
    (0, 1024),    // CU_LIMIT_STACK_SIZE
    (1, 1 << 20), // CU_LIMIT_PRINTF_FIFO_SIZE
    (2, 8 << 20), // CU_LIMIT_MALLOC_HEAP_SIZE
    (3, 2),       // CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH
    (4, 2048),    // CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT
    (5, 32),      // CU_LIMIT_MAX_L2_FETCH_GRANULARITY
    (6, 0),       // CU_LIMIT_PERSISTING_L2_CACHE_SIZE
];
const LIMIT_PRINTF_FIFO_SIZE: u32 = 1;

/// `CUfunction_attribute` values the worker answers.
mod func_attr {
    pub const MAX_THREADS_PER_BLOCK: i32 = 0;
    pub const SHARED_SIZE_BYTES: i32 = 1;
    pub const CONST_SIZE_BYTES: i32 = 2;
    pub const LOCAL_SIZE_BYTES: i32 = 3;
    pub const NUM_REGS: i32 = 4;
    pub const PTX_VERSION: i32 = 5;
    pub const BINARY_VERSION: i32 = 6;
    pub const CACHE_MODE_CA: i32 = 7;
    pub const MAX_DYNAMIC_SHARED_SIZE_BYTES: i32 = 8;
    pub const PREFERRED_SHARED_MEMORY_CARVEOUT: i32 = 9;
    /// 10..=15: cluster attributes, all 0 on a device without cluster launch.
    pub const CLUSTER_FIRST: i32 = 10;
    pub const CLUSTER_LAST: i32 = 15;
}

/// Registers per thread reported for every kernel (the CPU device has no register limit).
const REPORTED_REGISTERS: i64 = 32;

/// A loaded module as the session knows it.
struct ModuleState {
    kernels: Vec<KernelDesc>,
    ptx_version: u32,
    /// Values set with `cuFuncSetAttribute`, by kernel index and attribute.
    function_attributes: HashMap<(u32, i32), i32>,
}

struct EventState {
    flags: u32,
    recorded: Option<Instant>,
}

/// What a call sends back: its reply message and the reply's payload parts (the call's own
/// data, then kernel printf output).
#[derive(Debug)]
pub struct CallReply {
    pub message: ReplyMessage,
    pub data: Vec<u8>,
    pub printf: Vec<u8>,
}

/// A request's payload as [`Session::execute`] gets it.
pub enum Payload<'a> {
    /// Read already (empty: the request has none).
    Bytes(&'a [u8]),
    /// Still in the stream: `len` bytes of a host-to-device copy, which `fill` reads
    /// straight into device memory (see [`DeviceSession::write_from`]). A request that
    /// fails before reading leaves them in the stream.
    Stream { len: u64, fill: &'a mut Fill<'a> },
}

/// A session's state on a worker.
pub struct Session {
    id: SessionId,
    device: Arc<dyn Device>,
    memory: Box<dyn DeviceSession>,
    space: AddressSpace,
    cache: Arc<ModuleCache>,
    modules: HashMap<ModuleId, ModuleState>,
    contexts: HashSet<ContextId>,
    streams: HashSet<StreamId>,
    events: HashMap<EventId, EventState>,
    limits: HashMap<u32, u64>,
    deferred: Vec<DeferredError>,
    sticky: Option<CallError>,
    printf: Vec<u8>,
    cancel: Arc<AtomicBool>,
    detached: bool,
    /// Admits the session's device memory into the worker's device memory budget.
    gate: Arc<dyn MemoryGate>,
    /// Where device-to-host reply data comes from and returns to once sent.
    buffers: Arc<Buffers>,
}

impl Session {
    /// A new session with its own address range and memory quota on `device`.
    pub fn open(
        id: SessionId,
        range: MemoryRange,
        quota: u64,
        device: Arc<dyn Device>,
        cache: Arc<ModuleCache>,
        gate: Arc<dyn MemoryGate>,
    ) -> Result<Self, DeviceError> {
        let space = AddressSpace::new(range, quota);
        let memory = device.open_session(range, quota, space.worker_half())?;
        Ok(Session {
            id,
            device,
            memory,
            space,
            cache,
            modules: HashMap::new(),
            contexts: HashSet::new(),
            streams: HashSet::new(),
            events: HashMap::new(),
            limits: LIMIT_DEFAULTS.into_iter().collect(),
            deferred: Vec::new(),
            sticky: None,
            printf: Vec::new(),
            cancel: Arc::new(AtomicBool::new(false)),
            detached: false,
            gate,
            buffers: Arc::default(),
        })
    }

    /// The session's buffer pool: device-to-host replies take their data from it, and
    /// whoever is done with a request's payload or a reply's data gives it back.
    pub fn buffers(&self) -> Arc<Buffers> {
        self.buffers.clone()
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    pub fn range(&self) -> MemoryRange {
        self.space.range()
    }

    /// Set it to stop a running kernel and make the session refuse further work (the
    /// client is gone).
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// True once the client sent `Detach`.
    pub fn is_detached(&self) -> bool {
        self.detached
    }

    /// Bytes of device memory the session holds.
    pub fn used_memory(&self) -> u64 {
        self.space.used()
    }

    /// Device memory and the allocations in it, for swap-out and swap-in.
    pub(crate) fn memory_and_space(&mut self) -> (&mut dyn DeviceSession, &AddressSpace) {
        (&mut *self.memory, &self.space)
    }

    /// Makes every later call fail with `error` (the session's device memory is lost).
    pub(crate) fn poison(&mut self, error: CallError) {
        self.sticky = Some(error);
    }

    /// Answers a request the worker handled outside the session (swap control) with `reply`.
    pub(crate) fn answer(&mut self, kind: FrameKind, reply: Reply) -> Option<CallReply> {
        match kind {
            FrameKind::Call => Some(CallReply {
                message: ReplyMessage {
                    deferred: std::mem::take(&mut self.deferred),
                    result: Ok(reply),
                    printf_bytes: 0,
                },
                data: Vec::new(),
                printf: Vec::new(),
            }),
            _ => None,
        }
    }

    /// Answers a request that could not run (e.g. its session could not be swapped in) with
    /// `error`, like [`Session::execute`] answers a failed request.
    pub(crate) fn reject(
        &mut self,
        id: u64,
        kind: FrameKind,
        error: CallError,
    ) -> Option<CallReply> {
        match kind {
            FrameKind::Call => Some(CallReply {
                message: ReplyMessage {
                    deferred: std::mem::take(&mut self.deferred),
                    result: Err(error),
                    printf_bytes: 0,
                },
                data: Vec::new(),
                printf: Vec::new(),
            }),
            _ => {
                self.deferred.push(DeferredError { request: id, error });
                None
            }
        }
    }

    /// Runs one request. A call returns its reply; a post returns `None`, and its error (if
    /// any) travels with the next call's reply.
    pub fn execute(
        &mut self,
        id: u64,
        kind: FrameKind,
        request: Request,
        payload: Payload<'_>,
    ) -> Option<CallReply> {
        let sticky_before = self.sticky.is_some();
        let result = match &self.sticky {
            Some(sticky) if !ignores_sticky_errors(&request) => Err(sticky.clone()),
            _ => self.handle(&request, payload),
        };
        match &result {
            Ok((reply, data)) => tracing::debug!(
                session = self.id.0,
                id,
                ?kind,
                ?request,
                ?reply,
                data_bytes = data.len(),
                "executed"
            ),
            Err(e) => tracing::debug!(
                session = self.id.0, id, ?kind, ?request, code = ?e.code, message = %e.message,
                "failed"
            ),
        }
        match kind {
            FrameKind::Call => {
                let (result, data) = match result {
                    Ok((reply, data)) => (Ok(reply), data),
                    Err(e) => (Err(e), Vec::new()),
                };
                let printf = std::mem::take(&mut self.printf);
                Some(CallReply {
                    message: ReplyMessage {
                        deferred: std::mem::take(&mut self.deferred),
                        result,
                        // `printf` is bounded by the printf FIFO limit, a u32.
                        printf_bytes: u32::try_from(printf.len()).unwrap_or(u32::MAX),
                    },
                    data,
                    printf,
                })
            }
            _ => {
                // Once the session has a sticky error, later posts are not run and not
                // reported one by one: every later call reports the sticky error.
                if let Err(error) = result
                    && !sticky_before
                {
                    self.deferred.push(DeferredError { request: id, error });
                }
                None
            }
        }
    }

    fn handle(
        &mut self,
        request: &Request,
        payload: Payload<'_>,
    ) -> Result<(Reply, Vec<u8>), CallError> {
        let payload = match payload {
            Payload::Bytes(bytes) => bytes,
            Payload::Stream { len, fill } => {
                return self
                    .write_streamed(request, len, fill)
                    .map(|r| (r, Vec::new()));
            }
        };
        let reply = match request {
            Request::Hello(_) => {
                return Err(invalid("Hello is only valid as the first call of a stream"));
            }
            Request::Ping => Reply::Pong,
            Request::Detach => {
                self.detached = true;
                Reply::Done
            }
            Request::Attach(_) | Request::RegisterWorker { .. } | Request::Heartbeat { .. } => {
                return Err(not_supported(
                    "this is a worker; Attach, RegisterWorker and Heartbeat go to the gateway",
                ));
            }
            Request::GetSwapState { session } => {
                self.check_own_session(*session)?;
                Reply::SwapState {
                    state: SwapState::Hot,
                    resident_bytes: self.space.used(),
                    swapped_bytes: 0,
                }
            }
            Request::SwapOut { .. } | Request::Prewarm { .. } => {
                return Err(not_supported("this worker does not swap sessions yet"));
            }
            Request::GetWorkerStatus => {
                return Err(not_supported(
                    "GetWorkerStatus is a control call; send it on a control stream",
                ));
            }
            Request::EndSession { .. } => {
                return Err(not_supported(
                    "EndSession is a gateway control call; a stub ends its session with Detach",
                ));
            }
            Request::DeviceGetCount => Reply::Count(1),
            Request::DeviceGetProperties { device } => {
                check_device(*device)?;
                let mut properties = self.device.properties().clone();
                properties.total_memory = self.space.quota();
                Reply::Device(Box::new(properties))
            }
            Request::DeviceGetAttribute { device, attribute } => {
                check_device(*device)?;
                let value = self
                    .device
                    .properties()
                    .attributes
                    .iter()
                    .find(|(a, _)| a == attribute)
                    .map_or(0, |(_, v)| *v);
                Reply::Value(value.into())
            }
            Request::PrimaryContextRetain { device, context } => {
                check_device(*device)?;
                self.contexts.insert(*context);
                Reply::Done
            }
            Request::PrimaryContextRelease { device } | Request::PrimaryContextReset { device } => {
                check_device(*device)?;
                Reply::Done
            }
            Request::ContextCreate {
                context, device, ..
            } => {
                check_device(*device)?;
                self.contexts.insert(*context);
                Reply::Done
            }
            Request::ContextDestroy { context } => {
                if !self.contexts.remove(context) {
                    return Err(error(
                        CuResult::ERROR_INVALID_CONTEXT,
                        format!("no context {}", context.0),
                    ));
                }
                Reply::Done
            }
            Request::ContextSynchronize { .. } => Reply::Done,
            Request::ContextSetLimit { limit, value, .. } => {
                self.check_limit(*limit)?;
                self.limits.insert(*limit, *value);
                Reply::Done
            }
            Request::ContextGetLimit { limit, .. } => {
                self.check_limit(*limit)?;
                Reply::Value(i64::try_from(self.limits[limit]).unwrap_or(i64::MAX))
            }
            Request::MemAlloc { address, size } => Reply::Address(self.allocate(*address, *size)?),
            Request::MemFree { address } => {
                self.free(*address)?;
                Reply::Done
            }
            Request::MemGetInfo => Reply::MemInfo {
                free: self.space.available(),
                total: self.space.quota(),
            },
            Request::MemcpyHtoD { dst, stream } => {
                self.check_stream(*stream)?;
                self.memory.write(*dst, payload)?;
                Reply::Done
            }
            Request::MemcpyDtoH { src, len, stream } => {
                self.check_stream(*stream)?;
                let len = check_reply_len(*len)?;
                let mut data = self.buffers.take_filled(len);
                self.memory.read(*src, &mut data)?;
                return Ok((Reply::Data, data));
            }
            Request::MemcpyDtoD {
                dst,
                src,
                len,
                stream,
            } => {
                self.check_stream(*stream)?;
                self.memory.copy(*dst, *src, *len)?;
                Reply::Done
            }
            Request::MemcpyStrided {
                direction,
                dst,
                src,
                extent,
                stream,
            } => {
                self.check_stream(*stream)?;
                let data = self.copy_strided(*direction, *dst, *src, *extent, payload)?;
                return Ok(match data {
                    Some(data) => (Reply::Data, data),
                    None => (Reply::Done, Vec::new()),
                });
            }
            Request::Memset {
                dst,
                value,
                element_size,
                count,
                stream,
            } => {
                self.check_stream(*stream)?;
                self.memory.memset(*dst, *value, *element_size, *count)?;
                Reply::Done
            }
            Request::ModuleLoad {
                module,
                hash,
                inline,
            } => self.load_module(*module, hash, *inline, payload)?,
            Request::ModuleUnload { module } => {
                if self.modules.remove(module).is_none() {
                    return Err(invalid_handle(format!("no module {} is loaded", module.0)));
                }
                self.memory.unload_module(*module)?;
                self.remove_module_variables(*module);
                Reply::Done
            }
            Request::FunctionGetAttribute {
                function,
                attribute,
            } => Reply::Value(self.function_attribute(*function, *attribute)?),
            Request::FunctionSetAttribute {
                function,
                attribute,
                value,
            } => {
                self.set_function_attribute(*function, *attribute, *value)?;
                Reply::Done
            }
            Request::LaunchKernel {
                function,
                grid,
                block,
                shared_bytes,
                stream,
                attributes,
            } => {
                self.check_stream(*stream)?;
                self.launch(*function, *grid, *block, *shared_bytes, attributes, payload)?;
                Reply::Done
            }
            Request::StreamCreate { stream, .. } => {
                self.streams.insert(*stream);
                Reply::Done
            }
            Request::StreamDestroy { stream } => {
                if !self.streams.remove(stream) {
                    return Err(invalid_handle(format!("no stream {}", stream.0)));
                }
                Reply::Done
            }
            Request::StreamSynchronize { stream } | Request::StreamQuery { stream } => {
                self.check_stream(Some(*stream))?;
                Reply::Done
            }
            Request::StreamWaitEvent { stream, event } => {
                self.check_stream(Some(*stream))?;
                self.event(*event)?;
                Reply::Done
            }
            Request::EventCreate { event, flags } => {
                self.events.insert(
                    *event,
                    EventState {
                        flags: *flags,
                        recorded: None,
                    },
                );
                Reply::Done
            }
            Request::EventDestroy { event } => {
                if self.events.remove(event).is_none() {
                    return Err(invalid_handle(format!("no event {}", event.0)));
                }
                Reply::Done
            }
            Request::EventRecord { event, stream } => {
                self.check_stream(*stream)?;
                let state = self
                    .events
                    .get_mut(event)
                    .ok_or_else(|| invalid_handle(format!("no event {}", event.0)))?;
                state.recorded = Some(Instant::now());
                Reply::Done
            }
            Request::EventQuery { event } | Request::EventSynchronize { event } => {
                self.event(*event)?;
                Reply::Done
            }
            Request::EventElapsedTime { start, end } => {
                let start = self.recorded_time(*start)?;
                let end = self.recorded_time(*end)?;
                let ms = if end >= start {
                    (end - start).as_secs_f64() * 1e3
                } else {
                    -((start - end).as_secs_f64() * 1e3)
                };
                Reply::ElapsedMs(ms as f32)
            }
        };
        Ok((reply, Vec::new()))
    }

    /// A host-to-device copy whose payload is still in the stream: checked like one whose
    /// payload was read, then read straight into device memory.
    fn write_streamed(
        &mut self,
        request: &Request,
        len: u64,
        fill: &mut Fill<'_>,
    ) -> Result<Reply, CallError> {
        let Request::MemcpyHtoD { dst, stream } = request else {
            return Err(error(
                CuResult::ERROR_UNKNOWN,
                format!("the worker read a {request:?} as a streamed copy; please report this"),
            ));
        };
        self.check_stream(*stream)?;
        self.memory.write_from(*dst, len, fill)?;
        Ok(Reply::Done)
    }

    fn check_own_session(&self, session: SessionId) -> Result<(), CallError> {
        if session != self.id {
            return Err(invalid(format!(
                "session {} is not this connection's session ({})",
                session.0, self.id.0
            )));
        }
        Ok(())
    }

    fn check_limit(&self, limit: u32) -> Result<(), CallError> {
        if !self.limits.contains_key(&limit) {
            return Err(error(
                CuResult::ERROR_UNSUPPORTED_LIMIT,
                format!("limit {limit} is not supported"),
            ));
        }
        Ok(())
    }

    fn check_stream(&self, stream: Option<StreamId>) -> Result<(), CallError> {
        match stream {
            Some(s) if !self.streams.contains(&s) => Err(invalid_handle(format!(
                "no stream {} (create it first)",
                s.0
            ))),
            _ => Ok(()),
        }
    }

    fn event(&self, event: EventId) -> Result<&EventState, CallError> {
        self.events
            .get(&event)
            .ok_or_else(|| invalid_handle(format!("no event {}", event.0)))
    }

    fn recorded_time(&self, event: EventId) -> Result<Instant, CallError> {
        let state = self.event(event)?;
        if state.flags & EVENT_DISABLE_TIMING != 0 {
            return Err(invalid_handle(format!(
                "event {} was created with CU_EVENT_DISABLE_TIMING",
                event.0
            )));
        }
        state
            .recorded
            .ok_or_else(|| invalid_handle(format!("event {} has not been recorded", event.0)))
    }

    fn allocate(&mut self, address: Option<u64>, size: u64) -> Result<u64, CallError> {
        let address = match address {
            Some(a) => {
                self.space.check_at(a, size).map_err(address_error)?;
                a
            }
            None => self.space.choose(size).map_err(address_error)?,
        };
        self.gate.reserve(self.id, size)?;
        if let Err(e) = self.memory.allocate_at(address, size) {
            self.gate.release(size);
            return Err(e.into());
        }
        if let Err(e) = self.space.insert_at(address, size, Owner::Program) {
            // Checked above; keep device and bookkeeping in step regardless.
            let _ = self.memory.free(address);
            self.gate.release(size);
            return Err(address_error(e));
        }
        Ok(address)
    }

    /// Forgets a module's variables and gives their device memory back to the budget.
    fn remove_module_variables(&mut self, module: ModuleId) {
        let before = self.space.used();
        self.space.remove_module(module);
        self.gate.release(before - self.space.used());
    }

    fn free(&mut self, address: u64) -> Result<(), CallError> {
        if address == 0 {
            // cuMemFree(0) frees nothing, like free(NULL).
            return Ok(());
        }
        let size = self.space.remove(address).map_err(address_error)?;
        self.gate.release(size);
        self.memory.free(address)?;
        Ok(())
    }

    fn copy_strided(
        &mut self,
        direction: CopyDirection,
        dst: Option<DeviceRegion>,
        src: Option<DeviceRegion>,
        extent: [u64; 3],
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, CallError> {
        let [width, height, depth] = extent;
        let rows = height
            .checked_mul(depth)
            .ok_or_else(|| invalid("copy extent overflows"))?;
        let dense = width
            .checked_mul(rows)
            .ok_or_else(|| invalid("copy extent overflows"))?;
        let row_address = |region: &DeviceRegion, y: u64, z: u64| -> Result<u64, CallError> {
            let row = z
                .checked_mul(region.rows_per_slice)
                .and_then(|r| r.checked_add(y))
                .and_then(|r| r.checked_mul(region.pitch))
                .and_then(|off| off.checked_add(region.address));
            row.ok_or_else(|| invalid("strided copy address overflows"))
        };
        let missing = |side: &str| invalid(format!("a {direction:?} copy needs a device {side}"));
        let rows_iter = (0..depth).flat_map(|z| (0..height).map(move |y| (y, z)));
        match direction {
            CopyDirection::HostToDevice => {
                let dst = dst.ok_or_else(|| missing("destination"))?;
                if payload.len() as u64 != dense {
                    return Err(invalid(format!(
                        "strided copy carries {} bytes, the extent needs {dense}",
                        payload.len()
                    )));
                }
                for (i, (y, z)) in rows_iter.enumerate() {
                    let start = i * width as usize;
                    self.memory.write(
                        row_address(&dst, y, z)?,
                        &payload[start..start + width as usize],
                    )?;
                }
                Ok(None)
            }
            CopyDirection::DeviceToHost => {
                let src = src.ok_or_else(|| missing("source"))?;
                let mut out = self.buffers.take_filled(check_reply_len(dense)?);
                for (i, (y, z)) in rows_iter.enumerate() {
                    let start = i * width as usize;
                    self.memory.read(
                        row_address(&src, y, z)?,
                        &mut out[start..start + width as usize],
                    )?;
                }
                Ok(Some(out))
            }
            CopyDirection::DeviceToDevice => {
                let dst = dst.ok_or_else(|| missing("destination"))?;
                let src = src.ok_or_else(|| missing("source"))?;
                for (y, z) in rows_iter {
                    self.memory
                        .copy(row_address(&dst, y, z)?, row_address(&src, y, z)?, width)?;
                }
                Ok(None)
            }
        }
    }

    fn load_module(
        &mut self,
        module: ModuleId,
        hash: &ImageHash,
        inline: bool,
        payload: &[u8],
    ) -> Result<Reply, CallError> {
        let image: Arc<[u8]> = if inline {
            if hash_image(payload) != *hash {
                return Err(invalid(
                    "the module image does not match its SHA-256 hash; send sha256(image)",
                ));
            }
            let image: Arc<[u8]> = Arc::from(payload);
            self.cache.insert(*hash, image.clone());
            image
        } else {
            self.cache.get(hash).ok_or_else(|| {
                error(
                    CuResult::ERROR_NOT_FOUND,
                    "the worker does not have this module image; send it inline",
                )
            })?
        };
        if self.modules.remove(&module).is_some() {
            self.memory.unload_module(module)?;
            self.remove_module_variables(module);
        }
        let loaded = self.memory.load_module(module, &image)?;
        // Variables in the session's range are its memory (counted, swapped). A GPU driver
        // places module variables itself, outside the range: they stay with the loaded
        // module, resident, and are not the session's allocations.
        let range = self.space.range();
        let in_range = |g: &&crate::device::GlobalDesc| {
            g.size > 0 && g.address >= range.base && g.address - range.base < range.size
        };
        let variables: u64 = loaded.globals.iter().filter(in_range).map(|g| g.size).sum();
        if let Err(e) = self.gate.reserve(self.id, variables) {
            let _ = self.memory.unload_module(module);
            return Err(e);
        }
        for g in loaded.globals.iter().filter(in_range) {
            if let Err(e) = self
                .space
                .insert_at(g.address, g.size, Owner::Module(module))
            {
                let _ = self.memory.unload_module(module);
                self.space.remove_module(module);
                self.gate.release(variables);
                return Err(address_error(e));
            }
        }
        let reply = Reply::ModuleLoaded {
            kernels: loaded
                .kernels
                .iter()
                .map(|k| KernelInfo {
                    name: k.name.clone(),
                    params: k
                        .params
                        .iter()
                        .map(|&(offset, size, align)| ParamLayout {
                            offset,
                            size,
                            align,
                        })
                        .collect(),
                    shared_bytes: k.shared_bytes,
                    max_threads_per_block: k.max_threads_per_block,
                })
                .collect(),
            globals: loaded
                .globals
                .iter()
                .map(|g| GlobalInfo {
                    name: g.name.clone(),
                    address: g.address,
                    size: g.size,
                })
                .collect(),
        };
        self.modules.insert(
            module,
            ModuleState {
                kernels: loaded.kernels,
                ptx_version: loaded.ptx_version,
                function_attributes: HashMap::new(),
            },
        );
        Ok(reply)
    }

    fn kernel(&self, function: FunctionRef) -> Result<(&ModuleState, &KernelDesc), CallError> {
        let module = self
            .modules
            .get(&function.module)
            .ok_or_else(|| invalid_handle(format!("no module {} is loaded", function.module.0)))?;
        let kernel = module.kernels.get(function.index as usize).ok_or_else(|| {
            invalid_handle(format!(
                "module {} has no kernel number {}",
                function.module.0, function.index
            ))
        })?;
        Ok((module, kernel))
    }

    /// A device attribute as the device reports it (0 if it does not), for limits that
    /// differ between GPUs.
    fn device_attribute(&self, attribute: DeviceAttribute) -> u32 {
        self.device
            .properties()
            .attributes
            .iter()
            .find(|(a, _)| *a == attribute)
            .map_or(0, |(_, v)| u32::try_from(*v).unwrap_or(0))
    }

    /// The most dynamic shared memory a launch of `function` may ask for.
    fn max_dynamic_shared(&self, function: FunctionRef) -> Result<u32, CallError> {
        let (module, kernel) = self.kernel(function)?;
        let set = module
            .function_attributes
            .get(&(function.index, func_attr::MAX_DYNAMIC_SHARED_SIZE_BYTES));
        Ok(match set {
            Some(v) => *v as u32,
            None => self
                .device_attribute(DeviceAttribute::MAX_SHARED_MEMORY_PER_BLOCK)
                .saturating_sub(kernel.shared_bytes),
        })
    }

    fn function_attribute(&self, function: FunctionRef, attribute: i32) -> Result<i64, CallError> {
        use func_attr::*;
        let (module, kernel) = self.kernel(function)?;
        let set = module.function_attributes.get(&(function.index, attribute));
        Ok(match attribute {
            MAX_THREADS_PER_BLOCK => kernel.max_threads_per_block.into(),
            SHARED_SIZE_BYTES => kernel.shared_bytes.into(),
            CONST_SIZE_BYTES | LOCAL_SIZE_BYTES | CACHE_MODE_CA => 0,
            NUM_REGS => REPORTED_REGISTERS,
            PTX_VERSION => module.ptx_version.into(),
            BINARY_VERSION => {
                let major = self.device_attribute(DeviceAttribute::COMPUTE_CAPABILITY_MAJOR);
                let minor = self.device_attribute(DeviceAttribute::COMPUTE_CAPABILITY_MINOR);
                (major * 10 + minor).into()
            }
            MAX_DYNAMIC_SHARED_SIZE_BYTES => self.max_dynamic_shared(function)?.into(),
            PREFERRED_SHARED_MEMORY_CARVEOUT => set.copied().unwrap_or(-1).into(),
            CLUSTER_FIRST..=CLUSTER_LAST => set.copied().unwrap_or(0).into(),
            other => return Err(invalid(format!("unknown function attribute {other}"))),
        })
    }

    fn set_function_attribute(
        &mut self,
        function: FunctionRef,
        attribute: i32,
        value: i32,
    ) -> Result<(), CallError> {
        use func_attr::*;
        let (_, kernel) = self.kernel(function)?;
        let shared = kernel.shared_bytes;
        match attribute {
            MAX_DYNAMIC_SHARED_SIZE_BYTES => {
                let max = self
                    .device_attribute(DeviceAttribute::MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
                    .saturating_sub(shared);
                if value < 0 || value as u32 > max {
                    return Err(invalid(format!(
                        "dynamic shared memory of {value} bytes is above the device's {max}"
                    )));
                }
            }
            PREFERRED_SHARED_MEMORY_CARVEOUT if (-1..=100).contains(&value) => {}
            CLUSTER_FIRST..=CLUSTER_LAST => {}
            other => {
                return Err(invalid(format!(
                    "function attribute {other} cannot be set to {value}"
                )));
            }
        }
        if let Some(module) = self.modules.get_mut(&function.module) {
            module
                .function_attributes
                .insert((function.index, attribute), value);
        }
        Ok(())
    }

    fn launch(
        &mut self,
        function: FunctionRef,
        grid: [u32; 3],
        block: [u32; 3],
        shared_bytes: u32,
        attributes: &[LaunchAttribute],
        params: &[u8],
    ) -> Result<(), CallError> {
        check_launch_shape(grid, block)?;
        let max_shared = self.max_dynamic_shared(function)?;
        if shared_bytes > max_shared {
            return Err(invalid(format!(
                "the launch asks for {shared_bytes} bytes of dynamic shared memory; the kernel \
                 may use {max_shared} (raise it with cuFuncSetAttribute)"
            )));
        }
        for attribute in attributes {
            match attribute {
                LaunchAttribute::ClusterDims(dims) if dims.iter().any(|&d| d > 1) => {
                    return Err(not_supported("the CPU device has no thread block clusters"));
                }
                LaunchAttribute::Cooperative(true) => {
                    return Err(not_supported("the CPU device has no cooperative launches"));
                }
                _ => {}
            }
        }
        let launch = Launch {
            module: function.module,
            kernel: function.index,
            grid,
            block,
            shared_bytes,
            params,
        };
        match self.memory.launch(launch, &self.cancel) {
            Ok(printf) => {
                self.collect_printf(&printf);
                Ok(())
            }
            Err(e) => {
                let e = CallError::from(e);
                if corrupts_context(e.code) {
                    self.sticky = Some(e.clone());
                }
                Err(e)
            }
        }
    }

    /// Keeps printf output for the next reply, up to the printf FIFO size (like the device's
    /// FIFO, output beyond it is lost).
    fn collect_printf(&mut self, output: &[u8]) {
        let fifo = self.limits[&LIMIT_PRINTF_FIFO_SIZE].min(u64::from(u32::MAX)) as usize;
        let room = fifo.saturating_sub(self.printf.len());
        if output.len() > room {
            tracing::warn!(
                session = self.id.0,
                "kernel printf output beyond the {fifo}-byte printf FIFO was dropped \
                 (raise cudaLimitPrintfFifoSize)"
            );
        }
        self.printf
            .extend_from_slice(&output[..output.len().min(room)]);
    }
}

/// Requests answered even after a sticky error: they do not touch the context.
fn ignores_sticky_errors(request: &Request) -> bool {
    matches!(
        request,
        Request::Ping
            | Request::Detach
            | Request::DeviceGetCount
            | Request::DeviceGetProperties { .. }
            | Request::DeviceGetAttribute { .. }
    )
}

/// Launch errors after which CUDA refuses every further call of the context.
fn corrupts_context(code: CuResult) -> bool {
    matches!(
        code,
        CuResult::ERROR_ILLEGAL_ADDRESS
            | CuResult::ERROR_MISALIGNED_ADDRESS
            | CuResult::ERROR_ILLEGAL_INSTRUCTION
            | CuResult::ERROR_ASSERT
            | CuResult::ERROR_LAUNCH_FAILED
            | CuResult::ERROR_LAUNCH_TIMEOUT
            | CuResult::ERROR_HARDWARE_STACK_ERROR
    )
}

fn check_device(device: u32) -> Result<(), CallError> {
    if device != 0 {
        return Err(error(
            CuResult::ERROR_INVALID_DEVICE,
            format!("device {device} does not exist; this worker serves device 0"),
        ));
    }
    Ok(())
}

fn check_launch_shape(grid: [u32; 3], block: [u32; 3]) -> Result<(), CallError> {
    let threads = block.iter().map(|&d| u64::from(d)).product::<u64>();
    let bad = grid.contains(&0)
        || block.contains(&0)
        || grid[1] > 65535
        || grid[2] > 65535
        || block[0] > 1024
        || block[1] > 1024
        || block[2] > 64
        || threads > u64::from(crate::device::cpu::MAX_THREADS_PER_BLOCK);
    if bad {
        return Err(invalid(format!(
            "invalid launch shape: grid {grid:?}, block {block:?} (every dimension at least 1, \
             at most 1024 threads per block)"
        )));
    }
    Ok(())
}

/// Length of data a reply may carry.
fn check_reply_len(len: u64) -> Result<usize, CallError> {
    let limit = FrameLimits::default().max_payload;
    if len > limit {
        return Err(invalid(format!(
            "a copy of {len} bytes to the host is larger than one reply carries ({limit}); \
             split it"
        )));
    }
    Ok(len as usize)
}

fn address_error(e: AddressError) -> CallError {
    let code = match e {
        AddressError::Quota { .. } | AddressError::RangeFull(_) => CuResult::ERROR_OUT_OF_MEMORY,
        _ => CuResult::ERROR_INVALID_VALUE,
    };
    error(code, e.to_string())
}

fn error(code: CuResult, message: impl Into<String>) -> CallError {
    CallError {
        code,
        message: message.into(),
    }
}

fn invalid(message: impl Into<String>) -> CallError {
    error(CuResult::ERROR_INVALID_VALUE, message)
}

fn invalid_handle(message: impl Into<String>) -> CallError {
    error(CuResult::ERROR_INVALID_HANDLE, message)
}

fn not_supported(message: impl Into<String>) -> CallError {
    error(CuResult::ERROR_NOT_SUPPORTED, message)
}
