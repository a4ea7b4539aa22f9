//! Errors: [`ApiError`] is what an HTTP or control-plane client sees (a status, a stable
//! machine-readable code and a human message); [`GatewayError`] is why a gateway could not
//! start.

use http::StatusCode;
use serde::Serialize;

/// An error answered to a client. Serialized as
/// `{"error": {"code": "...", "message": "...", "details": {...}}}`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, snake_case: clients may match on it.
    pub code: &'static str,
    /// What went wrong and what to do.
    pub message: String,
    /// Structured facts (e.g. which quota was exceeded).
    pub details: Option<serde_json::Value>,
    /// For 429: seconds until a retry may succeed.
    pub retry_after_s: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after_s: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::to_string(&Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                details: self.details.as_ref(),
            },
        })
        .unwrap_or_else(|_| format!(r#"{{"error":{{"code":"{}"}}}}"#, self.code))
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!("state store: {e}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!(
                "the gateway's state store failed ({e}); retry, and check the gateway's data directory and logs"
            ),
        )
    }
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot create the data directory {path}: {source}; pick a writable --data-dir")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot listen for HTTP on {addr}: {source}; pick another --http address")]
    HttpBind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid control address: {0}")]
    ControlAddress(#[from] gpufn_proto::transport::AddressParseError),
    #[error("cannot listen for stubs and workers: {0}")]
    ControlBind(#[from] gpufn_proto::transport::TransportError),
    #[error("invalid pool configuration: {0}")]
    Pool(#[from] gpufn_pool::ConfigError),
    #[error("invalid key: {0}")]
    Key(String),
}
