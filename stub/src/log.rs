//! `GPUFN_LOG=debug`: one line per driver call on stderr, with its result.

use gpufn_proto::CuResult;
use std::io::Write;
use std::sync::OnceLock;

/// Whether calls are traced (`GPUFN_LOG` is `debug` or `trace`).
pub fn debug_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        std::env::var("GPUFN_LOG")
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "debug" | "trace"))
            .unwrap_or(false)
    })
}

/// Traces one call and its result.
pub fn call(name: &str, result: CuResult) {
    if debug_enabled() {
        let label = result.name().unwrap_or("CUDA_ERROR_UNRECOGNISED");
        let _ = writeln!(std::io::stderr(), "gpufn: {name} -> {label}");
    }
}

/// Traces a free-form debug message.
pub fn debug(message: impl FnOnce() -> String) {
    if debug_enabled() {
        let _ = writeln!(std::io::stderr(), "gpufn: {}", message());
    }
}

/// A message every user must see (connection problems): always printed.
pub fn error(message: &str) {
    let _ = writeln!(std::io::stderr(), "gpufn: {message}");
}
