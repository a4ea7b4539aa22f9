//! A small HTTP client for the gateway's JSON API (`gpufn status`, tests, benchmarks).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

/// Why a call to the API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid gateway URL `{0}`; use http://HOST:PORT")]
    Url(String),
    #[error(
        "cannot reach the gateway at {url}: {reason}; is `gpufn gateway` (or `gpufn up`) running?"
    )]
    Unreachable { url: String, reason: String },
    #[error("the gateway answered {status}: {message} ({code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
}

/// `GET base_url + path` with a bearer token; the JSON body on success.
pub async fn get_json(
    base_url: &str,
    path: &str,
    token: Option<&str>,
) -> Result<Value, ClientError> {
    let url = format!("{}{path}", base_url.trim_end_matches('/'));
    let mut request = http::Request::get(&url);
    if let Some(t) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let request = request
        .body(Full::<Bytes>::default())
        .map_err(|_| ClientError::Url(base_url.to_owned()))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let unreachable = |reason: String| ClientError::Unreachable {
        url: url.clone(),
        reason,
    };
    let response = client
        .request(request)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        return Ok(value);
    }
    Err(ClientError::Api {
        status,
        code: value["error"]["code"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned(),
        message: value["error"]["message"]
            .as_str()
            .unwrap_or("no message")
            .to_owned(),
    })
}
