//! A client for the functions API (`gpufn deploy`, `invoke`, `functions`, `logs`, the
//! benchmark and the tests).

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use super::registry::DeployRequest;
use crate::client::ClientError;

/// An answer: status, headers and body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// A timing header (`x-gpufn-*-ms`) in milliseconds.
    pub fn timing_ms(&self, name: &str) -> Option<f64> {
        self.headers.get(name)?.to_str().ok()?.parse().ok()
    }

    /// The answer as JSON, or `Null`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// `Ok` for 2xx, else the API error (code and message) as a [`ClientError`].
    pub fn ok(self) -> Result<Answer, ClientError> {
        if self.status.is_success() {
            return Ok(self);
        }
        let v = self.json();
        Err(ClientError::Api {
            status: self.status.as_u16(),
            code: v["error"]["code"].as_str().unwrap_or("unknown").to_owned(),
            message: v["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned()),
        })
    }
}

/// Talks to one gateway with one token; keeps connections alive between calls.
#[derive(Clone)]
pub struct FunctionsClient {
    base: String,
    token: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl FunctionsClient {
    pub fn new(base_url: &str, token: &str) -> FunctionsClient {
        FunctionsClient {
            base: base_url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http: Client::builder(hyper_util::rt::TokioExecutor::new()).build_http(),
        }
    }

    /// Any request to the API; the answer whatever its status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = http::Request::builder()
            .method(method)
            .uri(&url)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|_| ClientError::Url(self.base.clone()))?;
        let unreachable = |reason: String| ClientError::Unreachable {
            url: url.clone(),
            reason,
        };
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Deploys a manifest (its text) with its artifact's bytes.
    pub async fn deploy(
        &self,
        manifest: &str,
        artifact: Option<&[u8]>,
    ) -> Result<Answer, ClientError> {
        let body = DeployRequest::encode(manifest, artifact);
        self.send(
            Method::POST,
            "/v1/functions",
            Some("application/json"),
            body.into(),
        )
        .await
    }

    /// Invokes `name` (`path` is passed to `http` functions, e.g. `/generate`).
    pub async fn invoke(&self, name: &str, path: &str, body: Bytes) -> Result<Answer, ClientError> {
        let path = format!("/v1/functions/{name}/invoke{path}");
        self.send(Method::POST, &path, Some("application/octet-stream"), body)
            .await
    }

    pub async fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.send(Method::GET, path, None, Bytes::new()).await
    }

    pub async fn delete(&self, path: &str) -> Result<Answer, ClientError> {
        self.send(Method::DELETE, path, None, Bytes::new()).await
    }
}
