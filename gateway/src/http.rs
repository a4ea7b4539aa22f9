//! The HTTP API (hyper 1 + tower): timeouts, a global concurrency limit with load shedding,
//! per-tenant rate limits, JSON errors with a stable code and a human message.
//!
//! | route | scope | what |
//! |---|---|---|
//! | `GET /healthz` | none | the process is up |
//! | `GET /readyz` | none | the state store answers |
//! | `GET /metrics` | none | Prometheus / OpenMetrics text |
//! | `GET /v1/pool` | any | workers, devices, sessions and their swap state (own sessions only unless admin) |
//! | `GET /v1/sessions[?all=true&tenant=T]` | session | sessions (own unless admin) |
//! | `POST /v1/sessions` | session | attach over HTTP: `{vram_bytes, compute_percent, qos, function}` |
//! | `GET /v1/sessions/{id}` | session | one session with its swap state and usage |
//! | `DELETE /v1/sessions/{id}` | session | end it |
//! | `GET /v1/usage[?tenant&function&from&to&window]` | any | the usage ledger, aggregated |
//! | `GET /v1/tenants` | admin | tenants and quotas |
//! | `GET/PUT/DELETE /v1/tenants/{name}` | admin (GET: own too) | one tenant's quota |
//! | `POST /v1/tokens` | admin | mint a token `{tenant, scopes, ttl_seconds}` |
//! | `/v1/functions…` | deploy, invoke | deploy, list, get, delete, invoke, logs: see `functions::api` |

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gpufn_pool::{RateLimit, TenantQuota};
use gpufn_proto::message::{Qos, ResourceRequest};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::{BoxError, ServiceBuilder, ServiceExt};

use crate::auth::{Principal, Scope};
use crate::core::{Gateway, unix_ms};
use crate::error::ApiError;
use crate::metrics::RouteLabels;
use crate::store::UsageQuery;

type Resp = Response<Full<Bytes>>;

/// Serves HTTP on `listener` until the task is dropped.
pub async fn serve(gateway: Arc<Gateway>, listener: TcpListener) {
    let limits = gateway.config.limits.clone();
    let metrics_gateway = gateway.clone();
    // Boxed: erases the stack's type, which also sidesteps a higher-ranked lifetime
    // inference problem of `BoxError` futures inside `tokio::spawn`.
    let service: tower::util::BoxCloneSyncService<Request<Incoming>, Resp, BoxError> =
        tower::util::BoxCloneSyncService::new(
            ServiceBuilder::new()
                .load_shed()
                .concurrency_limit(limits.max_concurrent)
                .service_fn(move |req: Request<Incoming>| {
                    let gateway = gateway.clone();
                    let timeout = request_timeout(&limits, req.uri().path());
                    async move {
                        match tokio::time::timeout(timeout, handle(gateway, req)).await {
                            Ok(response) => Ok::<_, BoxError>(response),
                            Err(_) => Err(Box::new(tower::timeout::error::Elapsed::new()).into()),
                        }
                    }
                }),
        );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("HTTP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let gateway = metrics_gateway.clone();
        // Overload (load shedding) and timeouts come back as errors: answer them as JSON.
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let service = service.clone();
            let gateway = gateway.clone();
            async move {
                let response = match service.oneshot(req).await {
                    Ok(r) => r,
                    Err(e) => {
                        let error = overload_error(&e);
                        gateway
                            .metrics
                            .http_requests
                            .get_or_create(&RouteLabels {
                                route: "overload",
                                status: error.status.as_u16(),
                            })
                            .inc();
                        error_response(&error)
                    }
                };
                Ok::<_, Infallible>(response)
            }
        });
        tokio::spawn(async move {
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!("HTTP connection ended: {e}");
            }
        });
    }
}

/// How long a request to `path` may take: function routes are bounded by the function's own
/// limits (queue wait, startup and run timeouts), so only a generous outer bound applies.
fn request_timeout(limits: &crate::config::HttpLimits, path: &str) -> Duration {
    if path == "/v1/functions" || path.starts_with("/v1/functions/") {
        limits.function_request_timeout
    } else {
        limits.request_timeout
    }
}

fn overload_error(e: &BoxError) -> ApiError {
    if e.is::<tower::load_shed::error::Overloaded>() {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the gateway is at its concurrent request limit; retry shortly",
        )
    } else if e.is::<tower::timeout::error::Elapsed>() {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the request took longer than the gateway's request timeout",
        )
    } else {
        ApiError::internal(e.to_string())
    }
}

/// A JSON error response.
pub fn error_response(e: &ApiError) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(e.body())));
    *r.status_mut() = e.status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    if let Some(s) = e.retry_after_s
        && let Ok(v) = header::HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn json_response(status: StatusCode, value: &Value) -> Resp {
    json_bytes(status, value.to_string().into_bytes())
}

fn json_bytes(status: StatusCode, body: Vec<u8>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(gateway: Arc<Gateway>, req: Request<Incoming>) -> Resp {
    let (route, result) = route(&gateway, req).await;
    let response = result.unwrap_or_else(|e| error_response(&e));
    gateway
        .metrics
        .http_requests
        .get_or_create(&RouteLabels {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

async fn route(
    gateway: &Arc<Gateway>,
    req: Request<Incoming>,
) -> (&'static str, Result<Resp, ApiError>) {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let open = match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => Some((
            "healthz",
            Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
        )),
        (&Method::GET, ["readyz"]) => Some(("readyz", readyz(gateway))),
        (&Method::GET, ["metrics"]) => Some(("metrics", Ok(metrics(gateway, &req)))),
        _ => None,
    };
    if let Some(answer) = open {
        return answer;
    }
    if segments.first() != Some(&"v1") {
        return (
            "unknown",
            Err(ApiError::not_found(format!(
                "no route {path}; the API lives under /v1"
            ))),
        );
    }
    let auth_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let principal = match gateway.auth.verify_header(auth_header.as_deref()).await {
        Ok(p) => p,
        Err(e) => return ("auth", Err(e)),
    };
    if let Err(wait) = gateway.rate.check(&principal.tenant) {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "tenant {} sent more than {} requests per second (burst {}); retry after {wait} s",
                principal.tenant,
                gateway.config.limits.tenant_rate_per_second,
                gateway.config.limits.tenant_burst
            ),
        );
        e.retry_after_s = Some(wait);
        return ("rate_limited", Err(e));
    }
    let q = Query::parse(&query);
    // Function deploys carry the program and invocations carry the function's input.
    let functions_route = segments.get(1) == Some(&"functions");
    let body_limit = match functions_route {
        true => crate::functions::MAX_BODY_BYTES.max(gateway.config.limits.max_body_bytes),
        false => gateway.config.limits.max_body_bytes,
    };
    let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
    let body = if matches!(method, Method::POST | Method::PUT) {
        match read_body(req, body_limit).await {
            Ok(b) => b,
            Err(e) => return ("body", Err(e)),
        }
    } else {
        Bytes::new()
    };
    let p = &principal;
    match (&method, &segments[1..]) {
        (&Method::GET, ["pool"]) => ("pool", Ok(pool(gateway, p))),
        (&Method::GET, ["sessions"]) => ("sessions", list_sessions(gateway, p, &q)),
        (&Method::POST, ["sessions"]) => ("attach", attach(gateway, p, &body).await),
        (&Method::GET, ["sessions", id]) => ("session", session_detail(gateway, p, id)),
        (&Method::DELETE, ["sessions", id]) => ("session_end", end_session(gateway, p, id)),
        (&Method::GET, ["usage"]) => ("usage", usage(gateway, p, &q)),
        (&Method::GET, ["tenants"]) => ("tenants", list_tenants(gateway, p)),
        (&Method::GET, ["tenants", name]) => ("tenant", get_tenant(gateway, p, name)),
        (&Method::PUT, ["tenants", name]) => ("tenant_put", put_tenant(gateway, p, name, &body)),
        (&Method::DELETE, ["tenants", name]) => ("tenant_delete", delete_tenant(gateway, p, name)),
        (&Method::POST, ["tokens"]) => ("tokens", mint_token(gateway, p, &body)),
        (_, ["functions", rest @ ..]) => {
            let incoming = crate::functions::api::Incoming {
                method: &method,
                rest,
                query: &query,
                content_type,
                body,
            };
            crate::functions::api::route(gateway, p, incoming).await
        }
        _ => (
            "unknown",
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route {method} {path}; see the API list in the gateway docs"),
            )),
        ),
    }
}

async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request bodies are limited to {limit} bytes"),
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Query-string parameters (`a=1&b=x`, percent-decoded).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Query {
        Query(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "query parameter {key} must be an integer, got `{v}`"
                    ))
                })
            })
            .transpose()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn readyz(gateway: &Gateway) -> Result<Resp, ApiError> {
    gateway.store.ping()?;
    let workers = gateway.pool_view().workers.len();
    Ok(json_response(
        StatusCode::OK,
        &json!({"ready": true, "workers": workers}),
    ))
}

/// OpenMetrics when the scraper asks for it (Prometheus does), else the Prometheus text
/// format.
fn metrics(gateway: &Gateway, req: &Request<Incoming>) -> Resp {
    let openmetrics = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let (body, content_type) = if openmetrics {
        (
            gateway.metrics.render(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            gateway.metrics.render_prometheus(),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

/// `GET /v1/pool`, serialized straight from the pool's view (no intermediate JSON tree).
#[derive(Serialize)]
struct PoolAnswer<'a> {
    now_ms: u64,
    workers: &'a [gpufn_pool::WorkerView],
    totals: &'a gpufn_pool::SessionCounts,
    tenants: Vec<&'a gpufn_pool::TenantView>,
    sessions: Vec<SessionAnswer<'a>>,
}

/// A live session in `GET /v1/pool`.
#[derive(Serialize)]
struct SessionAnswer<'a> {
    id: u64,
    tenant: &'a str,
    function: Option<&'a str>,
    worker: &'a str,
    device: u32,
    state: &'static str,
    vram_bytes: u64,
    compute_percent: u8,
    qos: gpufn_pool::Qos,
    last_active_ms: u64,
}

impl<'a> From<&'a gpufn_pool::Session> for SessionAnswer<'a> {
    fn from(s: &'a gpufn_pool::Session) -> Self {
        SessionAnswer {
            id: s.id.0,
            tenant: &s.tenant.0,
            function: s.function.as_deref(),
            worker: &s.device.worker.0,
            device: s.device.index,
            state: s.state.name(),
            vram_bytes: s.vram_bytes,
            compute_percent: s.compute_percent,
            qos: s.qos,
            last_active_ms: s.last_active.0,
        }
    }
}

fn pool(gateway: &Gateway, p: &Principal) -> Resp {
    let view = gateway.pool_view();
    let own = (!p.is_admin()).then_some(p.tenant.as_str());
    let sessions = gateway.live_sessions(own);
    let answer = PoolAnswer {
        now_ms: view.now.0,
        workers: &view.workers,
        totals: &view.sessions,
        tenants: view
            .tenants
            .iter()
            .filter(|t| own.is_none_or(|o| t.tenant.0 == o))
            .collect(),
        sessions: sessions.iter().map(SessionAnswer::from).collect(),
    };
    match serde_json::to_vec(&answer) {
        Ok(body) => json_bytes(StatusCode::OK, body),
        Err(e) => error_response(&ApiError::internal(format!(
            "cannot encode the pool view: {e}"
        ))),
    }
}

fn list_sessions(gateway: &Gateway, p: &Principal, q: &Query) -> Result<Resp, ApiError> {
    p.require(Scope::Session)?;
    let tenant = match (p.is_admin(), q.get("tenant")) {
        (true, t) => t.map(str::to_owned),
        (false, Some(t)) => {
            p.require_tenant(t)?;
            Some(t.to_owned())
        }
        (false, None) => Some(p.tenant.clone()),
    };
    let include_ended = q.get("all") == Some("true");
    let limit = q.int("limit")?.unwrap_or(1000).clamp(1, 10_000) as u32;
    let records = gateway
        .store
        .sessions(tenant.as_deref(), include_ended, limit)?;
    let list: Vec<Value> = records
        .into_iter()
        .map(|r| {
            let state = gateway.session_state(r.id).unwrap_or("ended");
            let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
            v["state"] = json!(state);
            v
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "sessions": list })))
}

#[derive(Deserialize)]
struct AttachBody {
    vram_bytes: u64,
    /// Reserved share of the device's compute; 0 (the default) is best effort.
    #[serde(default)]
    compute_percent: u8,
    #[serde(default)]
    qos: Option<String>,
    #[serde(default)]
    function: Option<String>,
}

pub fn parse_qos(name: &str) -> Result<Qos, ApiError> {
    match name {
        "low" => Ok(Qos::Low),
        "medium" => Ok(Qos::Medium),
        "high" => Ok(Qos::High),
        "critical" => Ok(Qos::Critical),
        other => Err(ApiError::bad_request(format!(
            "unknown qos `{other}`; use low, medium, high or critical"
        ))),
    }
}

async fn attach(gateway: &Arc<Gateway>, p: &Principal, body: &[u8]) -> Result<Resp, ApiError> {
    let b: AttachBody = parse_json(body)?;
    let request = ResourceRequest {
        vram_bytes: b.vram_bytes,
        compute_percent: b.compute_percent,
        qos: b
            .qos
            .as_deref()
            .map(parse_qos)
            .transpose()?
            .unwrap_or_default(),
        function: b.function,
    };
    let attached = gateway.attach(p, &request).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({
            "session": attached.session,
            "worker": attached.worker,
            "worker_address": attached.worker_address,
            "ticket": attached.ticket,
            "device": {
                "name": attached.device.name,
                "total_memory": attached.device.total_memory,
                "backend": format!("{:?}", attached.device.backend).to_lowercase(),
            },
        }),
    ))
}

fn parse_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("session ids are numbers, got `{id}`")))
}

fn session_detail(gateway: &Gateway, p: &Principal, id: &str) -> Result<Resp, ApiError> {
    p.require(Scope::Session)?;
    let id = parse_id(id)?;
    let record = gateway.session_record(p, id)?;
    let usage = gateway.store.session_usage(id)?;
    let mut v = serde_json::to_value(&record).unwrap_or(Value::Null);
    v["state"] = json!(gateway.session_state(id).unwrap_or("ended"));
    v["usage"] = json!({
        "gpu_seconds": usage.as_ref().map_or(0.0, |u| u.gpu_seconds),
        "vram_gib_seconds": usage.as_ref().map_or(0.0, |u| u.vram_gib_seconds),
        "bytes_moved": usage.as_ref().map_or(0, |u| u.bytes_moved),
        "swap_events": usage.as_ref().map_or(0, |u| u.swap_events),
    });
    Ok(json_response(StatusCode::OK, &v))
}

fn end_session(gateway: &Arc<Gateway>, p: &Principal, id: &str) -> Result<Resp, ApiError> {
    let id = parse_id(id)?;
    gateway.end_session(p, id)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"session": id, "ended": true}),
    ))
}

fn usage(gateway: &Gateway, p: &Principal, q: &Query) -> Result<Resp, ApiError> {
    let tenant = match q.get("tenant") {
        Some(t) => {
            p.require_tenant(t)?;
            Some(t.to_owned())
        }
        None if p.is_admin() => None,
        None => Some(p.tenant.clone()),
    };
    let window = q.int("window")?;
    if let Some(w) = window
        && (w <= 0 || w % crate::store::LEDGER_BUCKET_S != 0)
    {
        return Err(ApiError::bad_request(format!(
            "window must be a positive multiple of {} seconds",
            crate::store::LEDGER_BUCKET_S
        )));
    }
    let rows = gateway.store.usage(&UsageQuery {
        tenant,
        function: q.get("function").map(str::to_owned),
        from_s: q.int("from")?,
        to_s: q.int("to")?,
        window_s: window,
    })?;
    Ok(json_response(StatusCode::OK, &json!({ "usage": rows })))
}

fn list_tenants(gateway: &Gateway, p: &Principal) -> Result<Resp, ApiError> {
    p.require(Scope::Admin)?;
    let tenants = gateway.store.tenants()?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "tenants": tenants }),
    ))
}

fn get_tenant(gateway: &Gateway, p: &Principal, name: &str) -> Result<Resp, ApiError> {
    p.require_tenant(name)?;
    let (quota, own) = gateway.tenant_quota(name);
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "name": name,
            "quota": quota,
            "default_quota": !own,
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaBody {
    #[serde(default)]
    max_sessions: Option<u32>,
    #[serde(default)]
    max_vram_bytes: Option<u64>,
    #[serde(default)]
    rate: Option<RateLimit>,
}

fn valid_tenant_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid tenant name `{name}`: use 1-64 letters, digits, `-`, `_` or `.`"
        )))
    }
}

fn put_tenant(gateway: &Gateway, p: &Principal, name: &str, body: &[u8]) -> Result<Resp, ApiError> {
    p.require(Scope::Admin)?;
    valid_tenant_name(name)?;
    let b: QuotaBody = if body.is_empty() {
        QuotaBody {
            max_sessions: None,
            max_vram_bytes: None,
            rate: None,
        }
    } else {
        parse_json(body)?
    };
    let quota = TenantQuota {
        max_sessions: b.max_sessions,
        max_vram_bytes: b.max_vram_bytes,
        rate: b.rate,
    };
    gateway.store.put_tenant(name, quota, unix_ms())?;
    gateway.set_quota(name, Some(quota));
    Ok(json_response(
        StatusCode::OK,
        &json!({"name": name, "quota": quota}),
    ))
}

fn delete_tenant(gateway: &Gateway, p: &Principal, name: &str) -> Result<Resp, ApiError> {
    p.require(Scope::Admin)?;
    if !gateway.store.delete_tenant(name)? {
        return Err(ApiError::not_found(format!("no tenant {name}")));
    }
    gateway.set_quota(name, None);
    Ok(json_response(
        StatusCode::OK,
        &json!({"name": name, "deleted": true}),
    ))
}

#[derive(Deserialize)]
struct TokenBody {
    tenant: String,
    scopes: Vec<String>,
    #[serde(default = "default_ttl")]
    ttl_seconds: u64,
}

fn default_ttl() -> u64 {
    3600
}

fn mint_token(gateway: &Gateway, p: &Principal, body: &[u8]) -> Result<Resp, ApiError> {
    p.require(Scope::Admin)?;
    let b: TokenBody = parse_json(body)?;
    valid_tenant_name(&b.tenant)?;
    let scopes = b
        .scopes
        .iter()
        .map(|s| s.parse::<Scope>().map_err(ApiError::bad_request))
        .collect::<Result<Vec<_>, _>>()?;
    let token = gateway
        .minter
        .mint(&b.tenant, &scopes, Duration::from_secs(b.ttl_seconds));
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "token": token }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HttpLimits;

    #[test]
    fn function_routes_are_bounded_by_the_functions_own_timeouts() {
        let limits = HttpLimits::default();
        // A cold start or a long run must not be cut off at the API's 10 s.
        for path in [
            "/v1/functions",
            "/v1/functions/lab/invoke",
            "/v1/functions/lab",
        ] {
            assert_eq!(
                request_timeout(&limits, path),
                limits.function_request_timeout
            );
        }
        for path in ["/v1/pool", "/v1/functionsX", "/v1/sessions/1", "/healthz"] {
            assert_eq!(request_timeout(&limits, path), limits.request_timeout);
        }
    }
}
