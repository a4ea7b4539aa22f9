//! Errors of the worker: startup errors for the operator ([`WorkerError`]) and call errors
//! for the program ([`DeviceError`], carried to the stub as a [`CallError`]).

use gpufn_proto::CuResult;
use gpufn_proto::message::CallError;
use gpufn_proto::transport::TransportError;
use thiserror::Error;

/// Why the worker could not start or listen.
#[derive(Debug, Error)]
pub enum WorkerError {
    #[error("{0}")]
    Transport(#[from] TransportError),
    #[error("invalid worker configuration: {0}")]
    Config(String),
    #[error(
        "the cuda backend was requested but {0}; start the worker with --backend cpu \
         (or auto) to use the CPU device"
    )]
    CudaUnavailable(String),
}

/// A failed device operation: the CUDA code the program sees and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{code:?}: {message}")]
pub struct DeviceError {
    pub code: CuResult,
    pub message: String,
}

impl DeviceError {
    pub fn new(code: CuResult, message: impl Into<String>) -> Self {
        DeviceError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_value(message: impl Into<String>) -> Self {
        DeviceError::new(CuResult::ERROR_INVALID_VALUE, message)
    }

    pub fn invalid_handle(message: impl Into<String>) -> Self {
        DeviceError::new(CuResult::ERROR_INVALID_HANDLE, message)
    }

    pub fn not_supported(message: impl Into<String>) -> Self {
        DeviceError::new(CuResult::ERROR_NOT_SUPPORTED, message)
    }
}

impl From<DeviceError> for CallError {
    fn from(e: DeviceError) -> Self {
        CallError {
            code: e.code,
            message: e.message,
        }
    }
}
