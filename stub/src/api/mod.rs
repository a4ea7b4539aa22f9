//! The hand-written driver API functions. Each `extern "C"` function runs its body inside
//! [`guard`], which traces the call under `GPUFN_LOG=debug` and turns a panic into
//! `CUDA_ERROR_UNKNOWN` (a panic must never unwind into the program).
//!
//! The functions take raw pointers under the CUDA API's contracts (out-parameters, images,
//! parameter arrays). They are entry points for C callers, not for Rust code, so they are not
//! marked `unsafe`; each dereference is an `unsafe` block naming the contract it relies on.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod context;
pub mod device;
pub mod init;
pub mod launch;
pub mod link;
pub mod memory;
pub mod module;
pub mod pool;
pub mod stream;
pub mod strided;
pub mod vmm;

pub use context::*;
pub use device::*;
pub use init::*;
pub use launch::*;
pub use link::*;
pub use memory::*;
pub use module::*;
pub use pool::*;
pub use stream::*;
pub use strided::*;
pub use vmm::*;

use gpufn_proto::CuResult;
use std::panic::AssertUnwindSafe;

/// Runs one driver call: catches panics, traces the result.
pub fn guard(name: &str, body: impl FnOnce() -> Result<(), CuResult>) -> CuResult {
    let result = match std::panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => CuResult::SUCCESS,
        Ok(Err(code)) => code,
        Err(_) => {
            crate::log::error(&format!(
                "internal error in {name} (a bug in gpufn; please report it)"
            ));
            CuResult::ERROR_UNKNOWN
        }
    };
    crate::log::call(name, result);
    result
}

/// Writes `value` through an out-parameter; a null pointer is `CUDA_ERROR_INVALID_VALUE`.
///
/// # Safety
/// `out` must be null or valid for a write of `T`.
pub unsafe fn write_out<T>(out: *mut T, value: T) -> Result<(), CuResult> {
    if out.is_null() {
        return Err(CuResult::ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null and valid per the caller's contract; unaligned-tolerant.
    unsafe { out.write_unaligned(value) };
    Ok(())
}

/// The session, or the error every call gets without one.
pub fn session() -> Result<&'static crate::client::Session, CuResult> {
    crate::client::session()
}
