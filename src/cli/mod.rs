//! `gpufn worker`, `gpufn run`, `gpufn gateway`, `gpufn token`, `gpufn status`.

pub mod attach;
pub mod functions;
pub mod gateway;
pub mod run;
pub mod status;
pub mod token;
pub mod up;
pub mod worker;

use tracing_subscriber::EnvFilter;

/// Logs to stderr at the level `GPUFN_LOG` names (`debug` traces every executed call),
/// `default` otherwise.
pub fn init_logging(default: &str) {
    let filter = EnvFilter::try_from_env("GPUFN_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
