//! Client-side objects: contexts (with the runtime's context-local storage), modules and
//! their kernels, streams, events, device and pinned host allocations.
//!
//! Handles given to the program are ids the stub chooses (the protocol lets the client name
//! contexts, modules, streams and events), so creating an object needs no round trip. Kernel
//! handles (`CUfunction`/`CUkernel`) point at a [`Function`] that lives as long as the
//! process, so a launch reads its parameter layout without a lookup.

use gpufn_proto::message::{EventId, GlobalInfo, KernelInfo, ModuleId, StreamId};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// The destructor cudart registers with a context-local storage entry.
pub type ClsDestructor =
    unsafe extern "C" fn(ctx: *mut c_void, key: *mut c_void, value: *mut c_void);

/// A context known to the stub.
#[derive(Debug, Clone)]
pub struct Context {
    pub device: u32,
    pub primary: bool,
    pub flags: u32,
}

/// A device's primary context.
#[derive(Debug, Clone, Copy, Default)]
pub struct Primary {
    pub handle: u64,
    pub retained: u32,
    pub flags: u32,
    /// Whether the worker has been told about it since the last reset.
    pub announced: bool,
}

/// A kernel of a loaded module; `CUfunction` and `CUkernel` handles point at one.
#[derive(Debug)]
pub struct Function {
    pub module: ModuleId,
    pub index: u32,
    pub info: KernelInfo,
    /// Total size of the packed parameter buffer.
    pub params_size: usize,
    pub name_c: std::ffi::CString,
    /// Set by `cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)`.
    pub max_dynamic_shared: std::sync::atomic::AtomicI32,
}

/// A loaded module (or library).
#[derive(Debug)]
pub struct Module {
    pub id: ModuleId,
    pub kernels: Vec<&'static Function>,
    pub globals: Vec<GlobalInfo>,
}

/// A stream created by the program.
#[derive(Debug, Clone, Copy)]
pub struct Stream {
    pub id: StreamId,
    pub context: u64,
    pub flags: u32,
    pub priority: i32,
}

/// An event created by the program.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub id: EventId,
    pub flags: u32,
}

/// Everything the stub tracks.
#[derive(Default)]
pub struct State {
    pub contexts: HashMap<u64, Context>,
    pub primaries: HashMap<u32, Primary>,
    pub cls: HashMap<(u64, usize), (usize, Option<ClsDestructor>)>,
    pub modules: HashMap<u64, Module>,
    pub streams: HashMap<u64, Stream>,
    pub events: HashMap<u64, Event>,
    /// Device allocations: address → size.
    pub device_allocations: BTreeMap<u64, u64>,
    /// Where new device allocations go (created at the first allocation).
    pub carver: Option<crate::carve::Carver>,
    /// Pinned host allocations and registrations: address → (size, flags, owned by the stub).
    pub host_allocations: BTreeMap<usize, (usize, u32, bool)>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0x1000);

/// A fresh, process-unique, non-null handle value.
pub fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// The stub's state, locked.
pub fn state() -> MutexGuard<'static, State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

thread_local! {
    static CONTEXT_STACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// The calling thread's current context (0 if none).
pub fn current_context() -> u64 {
    CONTEXT_STACK.with(|s| s.borrow().last().copied().unwrap_or(0))
}

/// `cuCtxSetCurrent`: replaces the top of the thread's stack (0 unbinds).
pub fn set_current_context(ctx: u64) {
    CONTEXT_STACK.with(|s| {
        let mut stack = s.borrow_mut();
        stack.pop();
        if ctx != 0 {
            stack.push(ctx);
        }
    });
}

/// `cuCtxPushCurrent`.
pub fn push_context(ctx: u64) {
    CONTEXT_STACK.with(|s| s.borrow_mut().push(ctx));
}

/// `cuCtxPopCurrent`: the popped context, 0 if the stack was empty.
pub fn pop_context() -> u64 {
    CONTEXT_STACK.with(|s| s.borrow_mut().pop().unwrap_or(0))
}

impl State {
    /// The primary context handle of `device`, created (not retained) on first request.
    pub fn primary_handle(&mut self, device: u32) -> u64 {
        let primary = self.primaries.entry(device).or_default();
        if primary.handle == 0 {
            primary.handle = next_id();
            self.contexts.insert(
                primary.handle,
                Context {
                    device,
                    primary: true,
                    flags: 0,
                },
            );
        }
        primary.handle
    }

    /// Removes the context-local storage of `ctx` and returns the destructors to run (the
    /// caller runs them without holding the state lock).
    pub fn take_cls(&mut self, ctx: u64) -> Vec<(usize, usize, ClsDestructor)> {
        let keys: Vec<_> = self
            .cls
            .keys()
            .filter(|(c, _)| *c == ctx)
            .copied()
            .collect();
        keys.into_iter()
            .filter_map(|k| {
                let (value, dtor) = self.cls.remove(&k)?;
                dtor.map(|d| (k.1, value, d))
            })
            .collect()
    }

    /// The device allocation containing `address`: (start, size).
    pub fn device_allocation(&self, address: u64) -> Option<(u64, u64)> {
        let (&start, &size) = self.device_allocations.range(..=address).next_back()?;
        (address < start + size.max(1)).then_some((start, size))
    }

    /// The pinned host range containing `address`: (start, size, flags).
    pub fn host_allocation(&self, address: usize) -> Option<(usize, usize, u32)> {
        let (&start, &(size, flags, _)) = self.host_allocations.range(..=address).next_back()?;
        (address < start + size.max(1)).then_some((start, size, flags))
    }
}

/// Runs context-local storage destructors collected by [`State::take_cls`].
pub fn run_cls_destructors(ctx: u64, destructors: Vec<(usize, usize, ClsDestructor)>) {
    for (key, value, dtor) in destructors {
        // SAFETY: the runtime registered `dtor` for exactly this (context, key, value) and
        // expects it to be called once when the context goes away.
        unsafe { dtor(ctx as *mut c_void, key as *mut c_void, value as *mut c_void) };
    }
}
