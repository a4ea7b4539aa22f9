//! The control endpoint (QUIC by default; TCP and Unix sockets too): stubs attach, workers
//! register and heartbeat. Same frames and messages as the data plane (`gpufn-proto`).

use std::sync::Arc;

use gpufn_proto::frame::{FrameKind, FrameLimits, FrameReader, FrameWriter};
use gpufn_proto::message::{Credentials, Hello, Role, SessionId, Welcome};
use gpufn_proto::transport::{Connection, Listener, RecvStream, SendStream};
use gpufn_proto::{CallError, CuResult, PROTOCOL_VERSION, Reply, ReplyMessage, Request};
use http::StatusCode;

use crate::auth::{Principal, Scope};
use crate::core::Gateway;
use crate::error::ApiError;

/// Accepts connections until the task is dropped.
pub async fn serve(gateway: Arc<Gateway>, listener: Listener) {
    loop {
        match listener.accept().await {
            Ok(connection) => {
                tokio::spawn(serve_connection(gateway.clone(), connection));
            }
            Err(e) => tracing::debug!("control endpoint: a connection failed to open: {e}"),
        }
    }
}

async fn serve_connection(gateway: Arc<Gateway>, connection: Connection) {
    let connection = Arc::new(connection);
    while let Ok((send, recv)) = connection.accept_stream().await {
        tokio::spawn(serve_stream(gateway.clone(), send, recv));
    }
}

/// The error a control client sees for an [`ApiError`]: a CUDA code a stub can return from
/// `cuInit`, and the code name plus message.
pub fn call_error(e: &ApiError) -> CallError {
    let code = match e.status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if e.code != "quota_exceeded" => {
            CuResult::ERROR_NOT_PERMITTED
        }
        StatusCode::BAD_REQUEST => CuResult::ERROR_INVALID_VALUE,
        StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS => CuResult::ERROR_OUT_OF_MEMORY,
        StatusCode::SERVICE_UNAVAILABLE if e.code == "no_workers" => CuResult::ERROR_NO_DEVICE,
        StatusCode::SERVICE_UNAVAILABLE => CuResult::ERROR_OUT_OF_MEMORY,
        _ => CuResult::ERROR_UNKNOWN,
    };
    CallError {
        code,
        message: format!("gateway: {} ({})", e.message, e.code),
    }
}

async fn serve_stream(gateway: Arc<Gateway>, send: SendStream, recv: RecvStream) {
    let mut reader = FrameReader::new(recv, FrameLimits::default());
    let mut writer = FrameWriter::new(send);
    let mut principal: Option<Arc<Principal>> = None;
    loop {
        let header = match reader.next_frame().await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("control stream closed: {e}");
                return;
            }
        };
        if header.kind != FrameKind::Call {
            // The gateway defines no posts; ignore them (and bulk frames).
            continue;
        }
        let result = match reader.request() {
            Err(e) => Err(CallError {
                code: CuResult::ERROR_INVALID_VALUE,
                message: format!(
                    "gateway: undecodable request ({e}); use a matching gpufn version"
                ),
            }),
            Ok(request) => match (&principal, request) {
                (None, Request::Hello(hello)) => match hello_reply(&gateway, &hello).await {
                    Ok((p, welcome)) => {
                        principal = Some(p);
                        Ok(welcome)
                    }
                    Err(e) => Err(e),
                },
                (None, _) => Err(CallError {
                    code: CuResult::ERROR_NOT_PERMITTED,
                    message: "gateway: the first call on a stream must be Hello with a token"
                        .into(),
                }),
                (Some(p), request) => dispatch(&gateway, p, request)
                    .await
                    .map_err(|e| call_error(&e)),
            },
        };
        let refused_hello = principal.is_none();
        let reply = ReplyMessage {
            deferred: Vec::new(),
            result,
            printf_bytes: 0,
        };
        if writer.write_reply(header.id, &reply, &[]).await.is_err()
            || writer.flush().await.is_err()
        {
            return;
        }
        if refused_hello {
            // A refused handshake ends the stream, as the session protocol says.
            let mut send = writer.into_inner();
            let _ = send.finish().await;
            return;
        }
    }
}

async fn hello_reply(
    gateway: &Arc<Gateway>,
    hello: &Hello,
) -> Result<(Arc<Principal>, Reply), CallError> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(CallError {
            code: CuResult::ERROR_NOT_SUPPORTED,
            message: format!(
                "gateway: protocol version {} is not supported (this gateway speaks {PROTOCOL_VERSION}); use matching gpufn versions",
                hello.protocol_version
            ),
        });
    }
    let Credentials::Token(token) = &hello.credentials else {
        return Err(call_error(&ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "the gateway needs a token: set GPUFN_TOKEN (create one with `gpufn token create`)",
        )));
    };
    let principal = gateway
        .auth
        .verify(token)
        .await
        .map_err(|e| call_error(&e))?;
    let scope = match hello.role {
        Role::Worker => Scope::Worker,
        _ => Scope::Session,
    };
    principal.require(scope).map_err(|e| call_error(&e))?;
    Ok((
        principal,
        Reply::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            session: SessionId(0),
            memory: None,
            server: format!("gpufn-gateway/{}", env!("CARGO_PKG_VERSION")),
        }),
    ))
}

async fn dispatch(
    gateway: &Arc<Gateway>,
    principal: &Principal,
    request: Request,
) -> Result<Reply, ApiError> {
    match request {
        Request::Ping => Ok(Reply::Pong),
        Request::Hello(_) => Err(ApiError::bad_request(
            "Hello was already sent on this stream",
        )),
        Request::RegisterWorker {
            worker_id,
            data_address,
            devices,
            version,
        } => {
            principal.require(Scope::Worker)?;
            tracing::info!("worker {worker_id} ({version}) registered at {data_address}");
            gateway.register_worker(&worker_id, &data_address, devices)?;
            Ok(Reply::Registered {
                heartbeat_interval_ms: gateway.config.heartbeat_interval.as_millis() as u32,
                lease_ms: gateway.config.pool.lease_timeout.as_millis() as u32,
                ticket_public_key: gateway.tickets.public_key_pem().to_owned(),
            })
        }
        Request::Heartbeat { worker_id, devices } => {
            principal.require(Scope::Worker)?;
            gateway.heartbeat(&worker_id, devices)?;
            Ok(Reply::HeartbeatAck)
        }
        Request::Attach(resources) => {
            let attached = gateway.attach(principal, &resources).await?;
            Ok(Reply::Attached {
                session: SessionId(attached.session),
                worker_address: attached.worker_address,
                ticket: attached.ticket,
                device: Box::new(attached.device),
            })
        }
        other => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_supported",
            format!(
                "the gateway does not handle {}; send device calls to the worker named in Attached",
                request_name(&other)
            ),
        )),
    }
}

fn request_name(request: &Request) -> String {
    let text = format!("{request:?}");
    text.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("")
        .to_owned()
}
