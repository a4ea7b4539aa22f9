//! The `/v1/functions` routes.
//!
//! | route | scope | what |
//! |---|---|---|
//! | `POST /v1/functions` | deploy | deploy or redeploy `{"manifest": "<toml>", "artifact": "<base64>"}` |
//! | `GET /v1/functions` | deploy or invoke | the tenant's functions with their instances |
//! | `GET /v1/functions/{name}` | deploy or invoke | one function |
//! | `DELETE /v1/functions/{name}` | deploy | drain running requests, stop instances, remove |
//! | `POST /v1/functions/{name}/invoke[/PATH]` | invoke | run it (`http` functions get `/PATH`) |
//! | `GET /v1/functions/{name}/logs[?tail=N&instance=I]` | deploy | its instances' output |
//!
//! A function belongs to the token's tenant; admins may name another with `?tenant=T`.
//! Another tenant's function reads as missing (404), as sessions do.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

use super::FunctionKey;
use super::invoke::{InvokeRequest, invoke};
use crate::auth::{Principal, Scope};
use crate::core::Gateway;
use crate::error::ApiError;

type Resp = Response<Full<Bytes>>;

/// What the HTTP front end hands over for a `/v1/functions…` request.
pub struct Incoming<'a> {
    pub method: &'a Method,
    /// Path segments after `functions`.
    pub rest: &'a [&'a str],
    pub query: &'a str,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

/// Routes a request under `/v1/functions`; returns the metrics label and the answer.
pub async fn route(
    gateway: &Arc<Gateway>,
    p: &Principal,
    req: Incoming<'_>,
) -> (&'static str, Result<Resp, ApiError>) {
    let tenant = match tenant(p, req.query) {
        Ok(t) => t,
        Err(e) => return ("functions", Err(e)),
    };
    match (req.method, req.rest) {
        (&Method::POST, []) => ("function_deploy", deploy(gateway, p, &tenant, &req.body)),
        (&Method::GET, []) => ("functions", list(gateway, p, &tenant, req.query)),
        (&Method::GET, [name]) => ("function", get(gateway, p, &tenant, name)),
        (&Method::DELETE, [name]) => ("function_delete", delete(gateway, p, &tenant, name).await),
        (&Method::POST, [name, "invoke", path @ ..]) => {
            let path = format!("/{}{}", path.join("/"), forwarded_query(req.query));
            let request = InvokeRequest {
                method: Method::POST,
                path,
                content_type: req.content_type,
                body: req.body,
            };
            (
                "function_invoke",
                invoke_route(gateway, p, &tenant, name, request).await,
            )
        }
        (&Method::GET, [name, "logs"]) => {
            ("function_logs", logs(gateway, p, &tenant, name, req.query))
        }
        _ => (
            "unknown",
            Err(ApiError::not_found(format!(
                "no route {} /v1/functions/{}; see the functions API in the gateway docs",
                req.method,
                req.rest.join("/")
            ))),
        ),
    }
}

fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

fn query_get<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query_pairs(query).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// The query string minus the gateway's own `tenant` parameter, for the function.
fn forwarded_query(query: &str) -> String {
    let kept: Vec<String> = query_pairs(query)
        .filter(|(k, _)| *k != "tenant")
        .map(|(k, v)| {
            if v.is_empty() {
                k.to_owned()
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    }
}

/// The tenant a request acts for: its own, or (admins only) `?tenant=`.
fn tenant(p: &Principal, query: &str) -> Result<String, ApiError> {
    match query_get(query, "tenant") {
        Some(t) => {
            p.require_tenant(t)?;
            Ok(t.to_owned())
        }
        None => Ok(p.tenant.clone()),
    }
}

fn require_any(p: &Principal, scopes: &[Scope]) -> Result<(), ApiError> {
    let mut last = Ok(());
    for scope in scopes {
        last = p.require(*scope);
        if last.is_ok() {
            return last;
        }
    }
    last
}

fn json_response(status: StatusCode, value: &Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn key(tenant: &str, name: &str) -> FunctionKey {
    FunctionKey {
        tenant: tenant.to_owned(),
        name: name.to_owned(),
    }
}

fn deploy(
    gateway: &Arc<Gateway>,
    p: &Principal,
    tenant: &str,
    body: &[u8],
) -> Result<Resp, ApiError> {
    p.require(Scope::Deploy)?;
    let function = gateway.functions.deploy(gateway, tenant, body)?;
    tracing::info!(tenant, function = %function.record.name, version = function.record.version, "function deployed");
    Ok(json_response(StatusCode::CREATED, &function.describe()))
}

fn list(
    gateway: &Arc<Gateway>,
    p: &Principal,
    tenant: &str,
    query: &str,
) -> Result<Resp, ApiError> {
    require_any(p, &[Scope::Deploy, Scope::Invoke])?;
    let all = p.is_admin() && query_get(query, "all") == Some("true");
    let functions = gateway.functions.list(gateway, (!all).then_some(tenant))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "functions": functions }),
    ))
}

fn get(gateway: &Arc<Gateway>, p: &Principal, tenant: &str, name: &str) -> Result<Resp, ApiError> {
    require_any(p, &[Scope::Deploy, Scope::Invoke])?;
    let function = gateway.functions.get(gateway, &key(tenant, name))?;
    Ok(json_response(StatusCode::OK, &function.describe()))
}

async fn delete(
    gateway: &Arc<Gateway>,
    p: &Principal,
    tenant: &str,
    name: &str,
) -> Result<Resp, ApiError> {
    p.require(Scope::Deploy)?;
    let drained = gateway
        .functions
        .delete(gateway, &key(tenant, name))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"name": name, "tenant": tenant, "deleted": true, "drained_requests": drained}),
    ))
}

async fn invoke_route(
    gateway: &Arc<Gateway>,
    p: &Principal,
    tenant: &str,
    name: &str,
    request: InvokeRequest,
) -> Result<Resp, ApiError> {
    p.require(Scope::Invoke)?;
    let function = gateway.functions.get(gateway, &key(tenant, name))?;
    invoke(gateway, &function, request).await
}

fn logs(
    gateway: &Arc<Gateway>,
    p: &Principal,
    tenant: &str,
    name: &str,
    query: &str,
) -> Result<Resp, ApiError> {
    p.require(Scope::Deploy)?;
    let number = |k: &str| -> Result<Option<u64>, ApiError> {
        query_get(query, k)
            .map(|v| {
                v.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "query parameter {k} must be a whole number, got `{v}`"
                    ))
                })
            })
            .transpose()
    };
    let tail = number("tail")?.unwrap_or(200) as usize;
    let instance = number("instance")?;
    let function = gateway.functions.get(gateway, &key(tenant, name))?;
    let lines = function.logs.tail(tail, instance);
    Ok(json_response(
        StatusCode::OK,
        &json!({ "name": name, "lines": lines }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_parameter_is_not_forwarded_to_the_function() {
        assert_eq!(forwarded_query(""), "");
        assert_eq!(forwarded_query("tenant=a"), "");
        assert_eq!(forwarded_query("steps=4&tenant=a&x"), "?steps=4&x");
    }

    #[test]
    fn only_admins_act_for_another_tenant() {
        let user = Principal {
            tenant: "a".into(),
            scopes: vec![Scope::Invoke],
            expires_at: u64::MAX,
        };
        assert_eq!(tenant(&user, "").unwrap(), "a");
        assert_eq!(tenant(&user, "tenant=a").unwrap(), "a");
        assert_eq!(tenant(&user, "tenant=b").unwrap_err().code, "other_tenant");
        let admin = Principal {
            scopes: vec![Scope::Admin],
            ..user
        };
        assert_eq!(tenant(&admin, "tenant=b").unwrap(), "b");
    }
}
