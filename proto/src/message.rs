//! Every message that crosses the wire.
//!
//! A frame carries one message plus, optionally, a raw payload (see [`crate::frame`]). Byte
//! blobs — copy data, module images, packed kernel parameters, printf output — always travel
//! in the payload, never inside a message, so a message stays a few dozen bytes and bulk data
//! is never run through the serializer.
//!
//! Object handles (contexts, modules, streams, events) are chosen by the client. That lets
//! the stub create objects without waiting for a reply (creation cannot fail in a way the
//! program must see at once; a failure surfaces at the next synchronising call, exactly as
//! CUDA reports asynchronous errors).

use crate::cuda::{CuResult, DeviceAttribute};
use serde::{Deserialize, Serialize};

/// The protocol version spoken by this build. Peers with a different version are refused
/// during the handshake with a message naming both versions.
pub const PROTOCOL_VERSION: u16 = 1;

/// A session on a worker: one program's view of one device.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub u64);

/// A client-chosen context handle.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContextId(pub u64);

/// A client-chosen module handle (a loaded image; cuda "libraries" load as modules too).
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModuleId(pub u64);

/// A client-chosen stream handle. `None` where a stream is optional means the context's
/// default (legacy) stream.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamId(pub u64);

/// A client-chosen event handle.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventId(pub u64);

/// A kernel: the `index`-th kernel listed when `module` was loaded.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FunctionRef {
    pub module: ModuleId,
    pub index: u32,
}

/// SHA-256 of a module image: images are content-addressed so a worker that has one never
/// receives it twice.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageHash(pub [u8; 32]);

/// Who is speaking on a connection.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The `libcuda.so.1` stub inside a program.
    Stub,
    /// A worker registering with the gateway.
    Worker,
    /// The gateway talking to a worker (prewarm, reclaim, end session).
    Gateway,
    /// An operator tool (`gpufn status`, benchmarks).
    Cli,
}

/// What a stream of a connection is used for. Bulk copies get their own stream so they never
/// hold up small calls.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Channel {
    /// Ordered calls and their replies.
    Calls,
    /// Raw bulk data referenced by calls on the `Calls` channel.
    Bulk,
}

/// Credentials presented in the handshake.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Credentials {
    /// No credentials: accepted only by a worker that runs without a gateway (`gpufn run`).
    None,
    /// A tenant or worker JWT, presented to the gateway.
    Token(String),
    /// A short-lived session ticket issued by the gateway, presented to a worker.
    Ticket(String),
}

/// The first call on every stream ([`Request::Hello`]).
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u16,
    pub role: Role,
    pub channel: Channel,
    pub credentials: Credentials,
    /// Set on the second and later streams of a connection to join an existing session.
    pub session: Option<SessionId>,
    /// Free-form client description for logs (`gpufn-stub/0.1.0 pid=1234 ./vadd`).
    pub client: String,
}

/// The answer to a [`Hello`].
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol_version: u16,
    pub session: SessionId,
    /// The device address range reserved for the session: every allocation of the session
    /// lies inside it, so a client may carve addresses itself ([`Request::MemAlloc`] with an
    /// address) and pointers stay valid across swap-out and swap-in. `None` for connections
    /// that are not device sessions.
    pub memory: Option<MemoryRange>,
    /// Free-form server description for logs.
    pub server: String,
}

/// A range of device addresses.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRange {
    pub base: u64,
    pub size: u64,
}

/// How a session asks for resources.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRequest {
    /// Device memory quota in bytes; `cuMemGetInfo` reports this as the total.
    pub vram_bytes: u64,
    /// Share of the device's compute, in percent (1..=100).
    pub compute_percent: u8,
    pub qos: Qos,
    /// The function this session serves, when started by the function runner.
    pub function: Option<String>,
}

/// Quality of service: higher levels may reclaim memory from idle lower ones.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
pub enum Qos {
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

/// Where a session's device memory currently lives.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SwapState {
    /// Resident in device memory.
    Hot,
    /// Swapped out to host RAM.
    Host,
    /// Swapped out to local disk.
    Disk,
    /// Swapped out to the object store.
    Cold,
    /// Moving between device and a swap tier.
    InFlight,
}

/// Which way a copy goes.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyDirection {
    HostToDevice,
    DeviceToHost,
    DeviceToDevice,
}

/// One side of a strided (2D/3D) copy, as seen by the worker. Host sides are packed densely
/// in the payload, so only device sides carry an address and pitches.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRegion {
    pub address: u64,
    /// Bytes between the starts of two rows.
    pub pitch: u64,
    /// Rows between the starts of two slices (3D copies); equal to the height for 2D.
    pub rows_per_slice: u64,
}

/// Kernel launch attributes the worker must honour (`cuLaunchKernelEx`).
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LaunchAttribute {
    ClusterDims([u32; 3]),
    Cooperative(bool),
    Priority(i32),
}

/// A byte-range parameter of a kernel, for launch marshalling.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamLayout {
    pub offset: u32,
    pub size: u32,
    pub align: u32,
}

/// A kernel of a loaded module.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    pub name: String,
    pub params: Vec<ParamLayout>,
    /// Static shared memory in bytes.
    pub shared_bytes: u32,
    pub max_threads_per_block: u32,
}

/// A module-scope variable (`__device__`/`__constant__`), reachable via `cuModuleGetGlobal`.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalInfo {
    pub name: String,
    pub address: u64,
    pub size: u64,
}

/// Everything the stub reports about a device. Sent once per session and cached by the
/// stub, so attribute queries never cost a round trip.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceProperties {
    pub name: String,
    pub uuid: [u8; 16],
    /// Total memory reported to the program: the session's quota.
    pub total_memory: u64,
    /// Attribute values; `(attribute, value)` pairs, attributes not listed read as 0.
    pub attributes: Vec<(DeviceAttribute, i32)>,
    /// Which backend serves the device.
    pub backend: Backend,
}

/// The kind of device a worker drives.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backend {
    /// A real NVIDIA GPU through the CUDA driver.
    Cuda,
    /// The PTX interpreter on the host CPU.
    Cpu,
}

/// A device as a worker registers it with the gateway.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInventory {
    pub index: u32,
    pub name: String,
    pub uuid: [u8; 16],
    pub total_memory: u64,
    pub compute_capability: (u32, u32),
    pub backend: Backend,
    /// Device attributes as the driver reports them, so the gateway can hand a session's
    /// device properties to the stub in [`Reply::Attached`] without asking the worker.
    pub attributes: Vec<(DeviceAttribute, i32)>,
}

/// Live usage of one device, carried by heartbeats.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceUsage {
    pub index: u32,
    pub used_memory: u64,
    pub utilization_percent: u8,
    pub sessions: Vec<SessionUsage>,
}

/// One session's footprint on a device.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionUsage {
    pub session: SessionId,
    pub state: SwapState,
    pub resident_bytes: u64,
    pub swapped_bytes: u64,
    /// Milliseconds since the session's last call.
    pub idle_ms: u64,
    /// Bytes copied between host and device for the session so far (copies, module images,
    /// swap traffic), cumulative: the gateway meters the difference between heartbeats.
    pub bytes_moved: u64,
    /// Swap-outs and swap-ins of the session so far, cumulative.
    pub swap_events: u32,
}

/// A request from a client to a server. Calls marked *(payload)* carry their bytes in the
/// frame payload.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    // --- connection and session control ---
    /// The first call on every stream: version, role, channel and credentials.
    Hello(Hello),
    /// The minimal synchronous call: used for liveness and round-trip measurements.
    Ping,
    /// Stub → gateway: place a session and return where to find it.
    Attach(ResourceRequest),
    /// End the session and free everything it holds.
    Detach,
    /// Report the session's swap state.
    GetSwapState {
        session: SessionId,
    },
    /// Gateway → worker: swap the session out now (memory reclaim by a higher QoS).
    SwapOut {
        session: SessionId,
    },
    /// Gateway → worker: swap the session in now, a call is on its way.
    Prewarm {
        session: SessionId,
    },
    /// Worker → gateway: join the pool.
    RegisterWorker {
        worker_id: String,
        /// Where stubs reach this worker (`quic://…`, `tcp://…`, `unix://…`).
        data_address: String,
        devices: Vec<DeviceInventory>,
        version: String,
    },
    /// Worker → gateway: still alive, and what it holds.
    Heartbeat {
        worker_id: String,
        devices: Vec<DeviceUsage>,
    },

    // --- devices ---
    DeviceGetCount,
    DeviceGetProperties {
        device: u32,
    },
    DeviceGetAttribute {
        device: u32,
        attribute: DeviceAttribute,
    },

    // --- contexts ---
    PrimaryContextRetain {
        device: u32,
        context: ContextId,
    },
    PrimaryContextRelease {
        device: u32,
    },
    PrimaryContextReset {
        device: u32,
    },
    ContextCreate {
        context: ContextId,
        device: u32,
        flags: u32,
    },
    ContextDestroy {
        context: ContextId,
    },
    ContextSynchronize {
        context: ContextId,
    },
    ContextSetLimit {
        context: ContextId,
        limit: u32,
        value: u64,
    },
    ContextGetLimit {
        context: ContextId,
        limit: u32,
    },

    // --- memory ---
    /// Allocate `size` bytes. With `address` set, the client carved the address out of the
    /// session's range itself and the call may be sent without waiting.
    MemAlloc {
        address: Option<u64>,
        size: u64,
    },
    MemFree {
        address: u64,
    },
    MemGetInfo,
    /// *(payload)* copy the payload to `dst`.
    MemcpyHtoD {
        dst: u64,
        stream: Option<StreamId>,
    },
    /// Copy `len` bytes from `src`; the reply carries them as its payload.
    MemcpyDtoH {
        src: u64,
        len: u64,
        stream: Option<StreamId>,
    },
    MemcpyDtoD {
        dst: u64,
        src: u64,
        len: u64,
        stream: Option<StreamId>,
    },
    /// A 2D/3D copy. `extent` is (width in bytes, height in rows, depth in slices). The host
    /// side, if any, travels densely packed in the payload (HtoD) or the reply payload (DtoH).
    MemcpyStrided {
        direction: CopyDirection,
        dst: Option<DeviceRegion>,
        src: Option<DeviceRegion>,
        extent: [u64; 3],
        stream: Option<StreamId>,
    },
    /// Fill `count` elements of `element_size` bytes (1, 2 or 4) with `value`.
    Memset {
        dst: u64,
        value: u32,
        element_size: u8,
        count: u64,
        stream: Option<StreamId>,
    },

    // --- modules ---
    /// *(payload when `inline`)* load an image. Without `inline`, the worker loads the image
    /// from its content-addressed cache, or answers `CUDA_ERROR_NOT_FOUND` so the client
    /// resends it inline.
    ModuleLoad {
        module: ModuleId,
        hash: ImageHash,
        inline: bool,
    },
    ModuleUnload {
        module: ModuleId,
    },
    FunctionGetAttribute {
        function: FunctionRef,
        attribute: i32,
    },
    FunctionSetAttribute {
        function: FunctionRef,
        attribute: i32,
        value: i32,
    },

    // --- launches ---
    /// *(payload: the packed parameter buffer)* launch a kernel.
    LaunchKernel {
        function: FunctionRef,
        grid: [u32; 3],
        block: [u32; 3],
        shared_bytes: u32,
        stream: Option<StreamId>,
        attributes: Vec<LaunchAttribute>,
    },

    // --- streams ---
    StreamCreate {
        stream: StreamId,
        flags: u32,
        priority: i32,
    },
    StreamDestroy {
        stream: StreamId,
    },
    StreamSynchronize {
        stream: StreamId,
    },
    StreamQuery {
        stream: StreamId,
    },
    StreamWaitEvent {
        stream: StreamId,
        event: EventId,
    },

    // --- events ---
    EventCreate {
        event: EventId,
        flags: u32,
    },
    EventDestroy {
        event: EventId,
    },
    EventRecord {
        event: EventId,
        stream: Option<StreamId>,
    },
    EventQuery {
        event: EventId,
    },
    EventSynchronize {
        event: EventId,
    },
    EventElapsedTime {
        start: EventId,
        end: EventId,
    },

    // --- gateway control (gateway → worker) ---
    /// End a session now (an operator or its tenant ended it through the gateway); its
    /// stub's next call fails.
    EndSession {
        session: SessionId,
    },
    /// Control stream → worker: every session's swap state and bytes, swap tier usage and
    /// recent swap events; answered with [`Reply::WorkerStatus`].
    GetWorkerStatus,
}

/// A successful answer to a synchronous call.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// The call succeeded and returns nothing.
    Done,
    Pong,
    Welcome(Welcome),
    Count(u32),
    Value(i64),
    Address(u64),
    MemInfo {
        free: u64,
        total: u64,
    },
    Device(Box<DeviceProperties>),
    /// The call's data is the frame payload (`MemcpyDtoH`, strided DtoH).
    Data,
    ModuleLoaded {
        kernels: Vec<KernelInfo>,
        globals: Vec<GlobalInfo>,
    },
    ElapsedMs(f32),
    /// A query answered "not yet" (`cuStreamQuery`, `cuEventQuery`).
    NotReady,
    Attached {
        session: SessionId,
        worker_address: String,
        ticket: String,
        device: Box<DeviceProperties>,
    },
    SwapState {
        state: SwapState,
        resident_bytes: u64,
        swapped_bytes: u64,
    },
    Registered {
        heartbeat_interval_ms: u32,
        lease_ms: u32,
        /// PEM (SPKI) of the gateway's Ed25519 ticket key: the worker verifies session tickets
        /// and gateway control tickets with it (see "Gateway protocol" in ARCHITECTURE.md).
        ticket_public_key: String,
    },
    HeartbeatAck,
    WorkerStatus(Box<WorkerStatus>),
}

/// A worker's memory and swap status (the answer to `GetWorkerStatus`).
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Device memory all hot sessions share.
    pub device_memory: u64,
    /// Device bytes hot sessions hold now.
    pub resident_bytes: u64,
    pub host_swap_budget: u64,
    /// Host RAM held by swapped-out sessions.
    pub host_swap_bytes: u64,
    /// Disk space held by swapped-out sessions.
    pub disk_swap_bytes: u64,
    /// Session bytes in the cold store.
    pub cold_swap_bytes: u64,
    pub sessions: Vec<SessionUsage>,
    /// The latest swap events, oldest first.
    pub recent_swaps: Vec<SwapRecord>,
}

/// One completed swap: a session's bytes moved between the device and a tier or between tiers.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapRecord {
    pub session: SessionId,
    /// Where the bytes were (`Hot`: on the device).
    pub from: SwapState,
    /// Where they are now.
    pub to: SwapState,
    pub bytes: u64,
    pub duration_us: u64,
}

/// Why a call failed: a real CUDA code for the program, and a message for humans.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallError {
    pub code: CuResult,
    pub message: String,
}

/// An error of an earlier asynchronous call, reported with the next synchronous reply.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeferredError {
    /// The request id of the asynchronous call that failed.
    pub request: u64,
    pub error: CallError,
}

/// What a reply frame carries: the call's own result plus errors of earlier asynchronous
/// calls that have not been reported yet.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyMessage {
    pub deferred: Vec<DeferredError>,
    pub result: Result<Reply, CallError>,
    /// Output of kernel `printf` produced since the last reply, carried after the call's
    /// own payload data.
    pub printf_bytes: u32,
}
