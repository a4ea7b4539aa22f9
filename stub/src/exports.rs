//! The exported symbol table and the `cuGetProcAddress` lookup.
//!
//! The tables themselves are generated ([`crate::generated`]); this module holds their types,
//! the export macro for unimplemented functions and the pure lookup logic.

use gpufn_proto::CuResult;
use std::ffi::c_void;

/// A function pointer as stored in the tables.
pub type Symbol = *const c_void;

/// Symbols sorted by name.
pub struct SymbolList(pub &'static [(&'static str, Symbol)]);

// SAFETY: the list holds addresses of functions in this library, immutable and valid for
// the life of the process.
unsafe impl Sync for SymbolList {}

/// Whether a `cuGetProcAddress` entry is the legacy-stream or per-thread-default-stream form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flavour {
    Plain,
    PerThread,
}

/// One ABI variant of a driver function: `base` as requested at CUDA `version` or later
/// resolves to `symbol`.
#[derive(Debug, Clone, Copy)]
pub struct ProcEntry {
    pub base: &'static str,
    pub version: u32,
    pub flavour: Flavour,
    pub symbol: &'static str,
}

/// Defines an exported function per name that logs its name and returns
/// `CUDA_ERROR_NOT_SUPPORTED`. Callers may pass any arguments: on x86-64 System V extra
/// arguments are harmless to a function that ignores them.
#[macro_export]
macro_rules! not_supported_exports {
    ($($name:ident),* $(,)?) => {
        /// Driver functions gpufn does not implement.
        pub mod not_supported {
            $(
                #[unsafe(no_mangle)]
                pub extern "C" fn $name() -> gpufn_proto::CuResult {
                    $crate::exports::not_supported(stringify!($name))
                }
            )*
        }
    };
}
pub use not_supported_exports;

/// What an unimplemented function does: trace and refuse.
pub fn not_supported(name: &str) -> CuResult {
    crate::log::call(name, CuResult::ERROR_NOT_SUPPORTED);
    CuResult::ERROR_NOT_SUPPORTED
}

/// The address of an exported symbol by its exact name.
pub fn symbol(name: &str) -> Option<Symbol> {
    let list = crate::generated::SYMBOLS.0;
    list.binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| list[i].1)
}

/// Why `cuGetProcAddress` found nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcMiss {
    /// No such driver function.
    NotFound,
    /// The function exists, but only from a newer CUDA version than requested.
    VersionNotSufficient,
}

/// Resolves `name` as requested by a program built for CUDA `version`: the newest ABI
/// variant introduced at or before `version`, in its per-thread-default-stream form when
/// `per_thread` is set and one exists. Names with no versioned entry resolve to the symbol
/// of the same name.
pub fn resolve_proc(name: &str, version: u32, per_thread: bool) -> Result<&'static str, ProcMiss> {
    let table = crate::generated::PROC_TABLE;
    let start = table.partition_point(|e| e.base < name);
    let entries = table[start..].iter().take_while(|e| e.base == name);
    let best = |flavour: Flavour| {
        entries
            .clone()
            .filter(|e| e.flavour == flavour && e.version <= version)
            .max_by_key(|e| e.version)
    };
    let plain = best(Flavour::Plain);
    // A per-thread entry only counts if it is at least as new as the plain one.
    if let Some(entry) = best(Flavour::PerThread).filter(|_| per_thread)
        && plain.is_none_or(|p| entry.version >= p.version)
    {
        return Ok(entry.symbol);
    }
    if let Some(entry) = plain {
        return Ok(entry.symbol);
    }
    if entries.clone().next().is_some() {
        return Err(ProcMiss::VersionNotSufficient);
    }
    match crate::generated::SYMBOLS
        .0
        .binary_search_by(|(n, _)| (*n).cmp(name))
    {
        Ok(i) => Ok(crate::generated::SYMBOLS.0[i].0),
        Err(_) => Err(ProcMiss::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_names_resolve_to_their_abi_variant() {
        assert_eq!(
            resolve_proc("cuMemAlloc", 13000, false),
            Ok("cuMemAlloc_v2")
        );
        assert_eq!(resolve_proc("cuMemAlloc", 2000, false), Ok("cuMemAlloc"));
        assert_eq!(
            resolve_proc("cuCtxCreate", 3020, false),
            Ok("cuCtxCreate_v2")
        );
        assert_eq!(
            resolve_proc("cuCtxCreate", 11040, false),
            Ok("cuCtxCreate_v3")
        );
        assert_eq!(
            resolve_proc("cuCtxCreate", 13000, false),
            Ok("cuCtxCreate_v4")
        );
        assert_eq!(
            resolve_proc("cuGetProcAddress", 12000, false),
            Ok("cuGetProcAddress_v2")
        );
        assert_eq!(
            resolve_proc("cuGetProcAddress", 11030, false),
            Ok("cuGetProcAddress")
        );
        assert_eq!(
            resolve_proc("cuEventElapsedTime", 12080, false),
            Ok("cuEventElapsedTime_v2")
        );
        assert_eq!(
            resolve_proc("cuDevicePrimaryCtxRelease", 13000, false),
            Ok("cuDevicePrimaryCtxRelease_v2")
        );
    }

    #[test]
    fn per_thread_flag_selects_ptds_and_ptsz_variants() {
        assert_eq!(
            resolve_proc("cuMemcpyHtoD", 13000, true),
            Ok("cuMemcpyHtoD_v2_ptds")
        );
        assert_eq!(
            resolve_proc("cuLaunchKernel", 13000, true),
            Ok("cuLaunchKernel_ptsz")
        );
        assert_eq!(
            resolve_proc("cuLaunchKernel", 13000, false),
            Ok("cuLaunchKernel")
        );
        // No per-thread form: the plain one.
        assert_eq!(resolve_proc("cuMemAlloc", 13000, true), Ok("cuMemAlloc_v2"));
    }

    #[test]
    fn unknown_and_too_new_names_are_refused() {
        assert_eq!(
            resolve_proc("cuNoSuchThing", 13000, false),
            Err(ProcMiss::NotFound)
        );
        assert_eq!(
            resolve_proc("cuCtxCreate", 1000, false),
            Err(ProcMiss::VersionNotSufficient)
        );
    }

    #[test]
    fn every_table_symbol_is_exported() {
        for entry in crate::generated::PROC_TABLE {
            assert!(
                symbol(entry.symbol).is_some(),
                "{} is not exported",
                entry.symbol
            );
        }
        let names: Vec<_> = crate::generated::SYMBOLS
            .0
            .iter()
            .map(|(n, _)| *n)
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "SYMBOLS must be sorted for binary search");
    }
}
