//! The export tables of `cuGetExportTable` ("dark API") that the CUDA runtime (static and
//! shared cudart 12.x/13.x) and cuBLAS need. Layouts and slot meanings are documented in
//! `shared/research/remoting.md` §1; unknown slots hold functions that answer
//! `CUDA_ERROR_NOT_SUPPORTED` so no caller ever jumps to NULL where the driver has code.
//!
//! The tables are `static`: the integrity check hashes their addresses.

pub mod integrity;

use crate::api::{guard, write_out};
use crate::state::{self, ClsDestructor};
use gpufn_proto::CuResult;
use std::ffi::c_void;

/// An export table: pointer-sized slots.
#[repr(C)]
pub struct Table<const N: usize>(pub [*const c_void; N]);

// SAFETY: the tables are immutable and hold sizes and addresses of functions.
unsafe impl<const N: usize> Sync for Table<N> {}

const fn size<const N: usize>() -> *const c_void {
    (N * std::mem::size_of::<usize>()) as *const c_void
}

const NONE: *const c_void = std::ptr::null();

/// The UUIDs of the tables served (byte order as in `CUuuid`).
mod uuid {
    pub const CUDART_INTERFACE: [u8; 16] = [
        0x6b, 0xd5, 0xfb, 0x6c, 0x5b, 0xf4, 0xe7, 0x4a, 0x89, 0x87, 0xd9, 0x39, 0x12, 0xfd, 0x9d,
        0xf9,
    ];
    pub const TOOLS_RUNTIME_CALLBACK_HOOKS: [u8; 16] = [
        0xa0, 0x94, 0x79, 0x8c, 0x2e, 0x74, 0x2e, 0x74, 0x93, 0xf2, 0x08, 0x00, 0x20, 0x0c, 0x0a,
        0x66,
    ];
    pub const TOOLS_TLS: [u8; 16] = [
        0x42, 0xd8, 0x5a, 0x81, 0x23, 0xf6, 0xcb, 0x47, 0x82, 0x98, 0xf6, 0xe7, 0x8a, 0x3a, 0xec,
        0xdc,
    ];
    pub const CONTEXT_LOCAL_STORAGE: [u8; 16] = [
        0xc6, 0x93, 0x33, 0x6e, 0x11, 0x21, 0xdf, 0x11, 0xa8, 0xc3, 0x68, 0xf3, 0x55, 0xd8, 0x95,
        0x93,
    ];
    pub const CONTEXT_CHECKS: [u8; 16] = [
        0x26, 0x3e, 0x88, 0x60, 0x7c, 0xd2, 0x61, 0x43, 0x92, 0xf6, 0xbb, 0xd5, 0x00, 0x6d, 0xfa,
        0x7e,
    ];
    pub const TOOLS_CONTEXT: [u8; 16] = [
        0x21, 0x31, 0x8c, 0x60, 0x97, 0x14, 0x32, 0x48, 0x8c, 0xa6, 0x41, 0xff, 0x73, 0x24, 0xc8,
        0xf2,
    ];
    pub const INTEGRITY_CHECK: [u8; 16] = [
        0xd4, 0x08, 0x20, 0x55, 0xbd, 0xe6, 0x70, 0x4b, 0x8d, 0x34, 0xba, 0x12, 0x3c, 0x66, 0xe1,
        0xf2,
    ];
}

/// The table for `id`, or `None` (the caller answers `CUDA_ERROR_INVALID_VALUE`, which the
/// runtime accepts for optional tables, including `f8cff951…` that must be refused).
pub fn table(id: &[u8; 16]) -> Option<*const c_void> {
    let table: *const c_void = match *id {
        uuid::CUDART_INTERFACE => (&raw const CUDART_INTERFACE).cast(),
        uuid::TOOLS_RUNTIME_CALLBACK_HOOKS => (&raw const TOOLS_RUNTIME_CALLBACK_HOOKS).cast(),
        uuid::TOOLS_TLS => (&raw const TOOLS_TLS).cast(),
        uuid::CONTEXT_LOCAL_STORAGE => (&raw const CONTEXT_LOCAL_STORAGE).cast(),
        uuid::CONTEXT_CHECKS => (&raw const CONTEXT_CHECKS).cast(),
        uuid::INTEGRITY_CHECK => (&raw const INTEGRITY_CHECK).cast(),
        uuid::TOOLS_CONTEXT => (&raw const TOOLS_CONTEXT).cast(),
        _ => return None,
    };
    Some(table)
}

// --- CUDART_INTERFACE (6bd5fb6c…): 13 slots in CUDA 13 (10 before) ---

static CUDART_INTERFACE: Table<13> = Table([
    size::<13>(),
    cudart_load_wrapper as *const c_void,
    cudart_primary_context as *const c_void,
    unknown_slot as *const c_void,
    unknown_slot as *const c_void,
    unknown_slot as *const c_void,
    cudart_load_wrapper_ext as *const c_void,
    cudart_noop as *const c_void,
    cudart_load_fatbin_ext as *const c_void,
    unknown_slot as *const c_void,
    unknown_slot as *const c_void,
    unknown_slot as *const c_void,
    cudart_load_compilers as *const c_void,
]);

extern "C" fn unknown_slot() -> CuResult {
    crate::exports::not_supported("export table slot (unknown)")
}

extern "C" fn cudart_load_wrapper(module: *mut u64, wrapper: *const c_void) -> CuResult {
    guard("cudart.get_module_from_cubin", || {
        let handle = crate::api::module::load_image(wrapper)?;
        // SAFETY: `module` is the runtime's out-parameter.
        unsafe { write_out(module, handle) }
    })
}

extern "C" fn cudart_load_wrapper_ext(
    module: *mut u64,
    wrapper: *const c_void,
    _a3: *mut c_void,
    _a4: *mut c_void,
    _a5: u32,
) -> CuResult {
    cudart_load_wrapper(module, wrapper)
}

extern "C" fn cudart_load_fatbin_ext(
    fatbin: *const c_void,
    module: *mut u64,
    _a3: *mut c_void,
    _a4: *mut c_void,
    _a5: u32,
) -> CuResult {
    cudart_load_wrapper(module, fatbin)
}

/// The device's primary context, without retaining or activating it.
extern "C" fn cudart_primary_context(ctx: *mut u64, device: i32) -> CuResult {
    guard("cudart.get_primary_context", || {
        let device = crate::api::device::checked(device)?;
        let handle = state::state().primary_handle(device);
        // SAFETY: `ctx` is the runtime's out-parameter.
        unsafe { write_out(ctx, handle) }
    })
}

extern "C" fn cudart_noop(_arg: usize) -> CuResult {
    CuResult::SUCCESS
}

extern "C" fn cudart_load_compilers() -> CuResult {
    CuResult::SUCCESS
}

// --- TOOLS_RUNTIME_CALLBACK_HOOKS (a094798c…): zeroed buffers mean "no tool attached" ---

static TOOLS_RUNTIME_CALLBACK_HOOKS: Table<7> = Table([
    size::<7>(),
    tools_noop as *const c_void,
    tools_buffer1 as *const c_void,
    tools_noop as *const c_void,
    tools_query as *const c_void,
    tools_noop as *const c_void,
    tools_buffer2 as *const c_void,
]);

struct ToolsBuffer<const N: usize>(std::cell::UnsafeCell<[u32; N]>);
// SAFETY: the runtime reads these buffers; the stub never writes them after creation.
unsafe impl<const N: usize> Sync for ToolsBuffer<N> {}
static TOOLS_BUFFER1: ToolsBuffer<1024> = ToolsBuffer(std::cell::UnsafeCell::new([0; 1024]));
static TOOLS_BUFFER2: ToolsBuffer<14> = ToolsBuffer(std::cell::UnsafeCell::new([0; 14]));

extern "C" fn tools_noop() -> CuResult {
    CuResult::SUCCESS
}

extern "C" fn tools_buffer1(ptr: *mut *mut c_void, size: *mut usize) {
    // SAFETY: out-parameters of the runtime; null ones are skipped.
    unsafe {
        let _ = write_out(ptr, TOOLS_BUFFER1.0.get().cast());
        let _ = write_out(size, 1024);
    }
}

extern "C" fn tools_buffer2(ptr: *mut *mut c_void, size: *mut usize) {
    // SAFETY: as in `tools_buffer1`.
    unsafe {
        let _ = write_out(ptr, TOOLS_BUFFER2.0.get().cast());
        let _ = write_out(size, 14);
    }
}

extern "C" fn tools_query(_input: *const c_void, out: *mut u64) -> CuResult {
    // SAFETY: out-parameter of the runtime.
    let _ = unsafe { write_out(out, 0) };
    CuResult::SUCCESS
}

// --- TOOLS_TLS (42d85a81…): only the size is needed ---

static TOOLS_TLS: Table<4> = Table([size::<4>(), NONE, NONE, NONE]);

// --- CONTEXT_LOCAL_STORAGE_INTERFACE_V0301 (c693336e…): no size header ---

static CONTEXT_LOCAL_STORAGE: Table<4> = Table([
    cls_put as *const c_void,
    cls_delete as *const c_void,
    cls_get as *const c_void,
    NONE,
]);

fn cls_context(ctx: u64) -> Result<u64, CuResult> {
    match ctx {
        0 => match state::current_context() {
            0 => Err(CuResult::ERROR_INVALID_CONTEXT),
            current => Ok(current),
        },
        ctx => Ok(ctx),
    }
}

extern "C" fn cls_put(
    ctx: u64,
    key: *mut c_void,
    value: *mut c_void,
    dtor: Option<ClsDestructor>,
) -> CuResult {
    guard("cls.put", || {
        let ctx = cls_context(ctx)?;
        state::state()
            .cls
            .insert((ctx, key as usize), (value as usize, dtor));
        Ok(())
    })
}

extern "C" fn cls_delete(ctx: u64, key: *mut c_void) -> CuResult {
    guard("cls.delete", || {
        let ctx = cls_context(ctx)?;
        state::state().cls.remove(&(ctx, key as usize));
        Ok(())
    })
}

extern "C" fn cls_get(value: *mut *mut c_void, ctx: u64, key: *mut c_void) -> CuResult {
    // A miss is normal (the runtime then creates its per-context state): not traced as a
    // failure by `guard`.
    let ctx = match cls_context(ctx) {
        Ok(ctx) => ctx,
        Err(e) => return e,
    };
    let found = state::state().cls.get(&(ctx, key as usize)).map(|v| v.0);
    match found {
        Some(found) => {
            // SAFETY: out-parameter of the runtime.
            match unsafe { write_out(value, found as *mut c_void) } {
                Ok(()) => CuResult::SUCCESS,
                Err(e) => e,
            }
        }
        None => CuResult::ERROR_INVALID_HANDLE,
    }
}

// --- CONTEXT_CHECKS (263e8860…) ---

static CONTEXT_CHECKS: Table<4> = Table([
    size::<4>(),
    unknown_slot as *const c_void,
    context_check as *const c_void,
    context_check_flag as *const c_void,
]);

extern "C" fn context_check(_ctx: u64, is_wrapped: *mut u32, unwrapped: *mut u64) -> CuResult {
    // SAFETY: out-parameters of the runtime; contexts are never wrapped here.
    unsafe {
        let _ = write_out(is_wrapped, 0);
        if !unwrapped.is_null() {
            let _ = write_out(unwrapped, 0);
        }
    }
    CuResult::SUCCESS
}

extern "C" fn context_check_flag() -> u32 {
    0
}

// --- INTEGRITY_CHECK (d4082055…) ---

static INTEGRITY_CHECK: Table<3> = Table([
    size::<3>(),
    integrity_check as *const c_void,
    integrity_enable as *const c_void,
]);

extern "C" fn integrity_check(version: u32, unix_seconds: u64, out: *mut [u64; 2]) -> CuResult {
    guard("integrity_check", || {
        let devices = crate::api::device::identities()?;
        let input = integrity::CheckInput {
            driver_version: crate::api::init::DRIVER_VERSION as u32,
            version,
            pid: std::process::id(),
            // SAFETY: pthread_self has no preconditions.
            thread: unsafe { libc::pthread_self() } as u32,
            cudart_table: (&raw const CUDART_INTERFACE) as usize,
            integrity_table: (&raw const INTEGRITY_CHECK) as usize,
            function: integrity_check as *const () as usize,
            unix_seconds,
        };
        let answer = integrity::answer(&input, &devices);
        // SAFETY: `out` is the runtime's 16-byte out-parameter.
        unsafe { write_out(out, answer) }
    })
}

extern "C" fn integrity_enable(_enabled: i32) -> CuResult {
    CuResult::SUCCESS
}

// --- TOOLS_CONTEXT (21318c60…): requested by CUDA 13.4+ runtimes at start; a size header and
// 94 slots, all non-null in the real driver. Their meaning is unknown; each slot traces its
// index and arguments under GPUFN_LOG=debug and refuses. ---

extern "C" fn tools_context_slot<const I: usize>(a: u64, b: u64, c: u64, d: u64) -> CuResult {
    crate::log::debug(|| {
        format!("export table 21318c60 slot {I} ({a:#x}, {b:#x}, {c:#x}, {d:#x})")
    });
    CuResult::ERROR_NOT_SUPPORTED
}

macro_rules! slots {
    ($($i:literal)*) => { [size::<95>(), $(tools_context_slot::<$i> as *const c_void),*] };
}

static TOOLS_CONTEXT: Table<95> = Table(slots!(
    1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33
    34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63 64
    65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90 91 92 93 94
));
