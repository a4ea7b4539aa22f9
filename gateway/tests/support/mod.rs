//! Test support: a gateway on loopback, an HTTP helper, and a *protocol-level* worker that
//! registers, heartbeats and answers the gateway's control calls — enough to drive the
//! gateway's pool logic end to end. It runs no kernels; the real worker's tests cover that.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gpufn_gateway::auth::Scope;
use gpufn_gateway::{GatewayConfig, RunningGateway};
use gpufn_proto::frame::{FrameKind, FrameLimits, FrameReader, FrameWriter};
use gpufn_proto::message::{
    Backend, Channel, Credentials, DeviceInventory, DeviceUsage, Hello, Role, SessionId,
    SessionUsage, SwapState, Welcome,
};
use gpufn_proto::transport::{Address, ClientOptions, Listener, ServerOptions, connect};
use gpufn_proto::{PROTOCOL_VERSION, Reply, ReplyMessage, Request};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

pub const GIB: u64 = 1 << 30;

pub fn config(dir: &Path) -> GatewayConfig {
    let mut c = GatewayConfig::new(dir);
    c.http_addr = "127.0.0.1:0".parse().unwrap();
    c.control_addr = "tcp://127.0.0.1:0".to_owned();
    c.heartbeat_interval = Duration::from_millis(100);
    c.tick_interval = Duration::from_millis(50);
    c.pool.lease_timeout = Duration::from_millis(1000);
    c.pool.reclaim_min_idle = Duration::ZERO;
    c
}

pub async fn start(dir: &Path) -> RunningGateway {
    gpufn_gateway::start(config(dir)).await.unwrap()
}

pub fn token(g: &RunningGateway, tenant: &str, scopes: &[Scope]) -> String {
    g.gateway
        .minter
        .mint(tenant, scopes, Duration::from_secs(600))
}

/// One HTTP request; returns status, parsed JSON body (or the text as a JSON string) and
/// the Retry-After header.
pub async fn http(
    g: &RunningGateway,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, body, _) = http_full(g.http_addr, method, path, token, body).await;
    (status, body)
}

pub async fn http_full(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, Option<String>) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let resp = client
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value, retry)
}

/// Polls `check` every 50 ms for up to 30 s (a generous bound, not a timing assertion).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// What the worker reports for one session.
#[derive(Clone, Debug)]
pub struct Reported {
    pub state: SwapState,
    pub resident_bytes: u64,
    pub bytes_moved: u64,
    pub swap_events: u32,
    pub idle_ms: u64,
}

/// A worker speaking the control protocol.
pub struct ProtocolWorker {
    pub id: String,
    pub sessions: Arc<Mutex<BTreeMap<u64, Reported>>>,
    /// Control calls received from the gateway, with the verified ticket's subject.
    pub control_calls: Arc<Mutex<Vec<Request>>>,
    pub ticket_key: Arc<Mutex<String>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ProtocolWorker {
    /// Registers with one device of `memory` bytes and heartbeats every 100 ms.
    pub async fn start(g: &RunningGateway, id: &str, memory: u64) -> ProtocolWorker {
        let token = token(g, "workers", &[Scope::Worker]);
        let sessions: Arc<Mutex<BTreeMap<u64, Reported>>> = Arc::default();
        let control_calls: Arc<Mutex<Vec<Request>>> = Arc::default();
        let ticket_key: Arc<Mutex<String>> = Arc::default();

        // The data address the gateway calls back on.
        let listener = Listener::bind(
            &"tcp://127.0.0.1:0".parse().unwrap(),
            &ServerOptions::dev_certificate_in(std::env::temp_dir()),
        )
        .await
        .unwrap();
        let data_address = listener.local_address().to_string();
        let mut tasks = Vec::new();
        {
            let sessions = sessions.clone();
            let calls = control_calls.clone();
            let key = ticket_key.clone();
            let id = id.to_owned();
            tasks.push(tokio::spawn(async move {
                while let Ok(conn) = listener.accept().await {
                    let (sessions, calls, key, id) =
                        (sessions.clone(), calls.clone(), key.clone(), id.clone());
                    tokio::spawn(async move {
                        while let Ok((send, recv)) = conn.accept_stream().await {
                            serve_control(send, recv, &sessions, &calls, &key, &id).await;
                        }
                    });
                }
            }));
        }

        let address: Address = g.control_addr.clone();
        let connection = connect(&address, &ClientOptions::default()).await.unwrap();
        let (send, recv) = connection.open_stream().await.unwrap();
        let mut writer = FrameWriter::new(send);
        let mut reader = FrameReader::new(recv, FrameLimits::default());
        let hello = Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            role: Role::Worker,
            channel: Channel::Calls,
            credentials: Credentials::Token(token),
            session: None,
            client: "test-worker".into(),
        });
        call(&mut writer, &mut reader, 1, &hello).await.unwrap();
        let register = Request::RegisterWorker {
            worker_id: id.to_owned(),
            data_address,
            devices: vec![DeviceInventory {
                index: 0,
                name: "test device".into(),
                uuid: [7; 16],
                total_memory: memory,
                compute_capability: (8, 0),
                backend: Backend::Cpu,
                attributes: vec![(gpufn_proto::DeviceAttribute::MULTIPROCESSOR_COUNT, 4)],
            }],
            version: "test".into(),
        };
        match call(&mut writer, &mut reader, 2, &register).await.unwrap() {
            Reply::Registered {
                ticket_public_key, ..
            } => *ticket_key.lock().unwrap() = ticket_public_key,
            other => panic!("unexpected {other:?}"),
        }
        {
            let sessions = sessions.clone();
            let id = id.to_owned();
            tasks.push(tokio::spawn(async move {
                let _connection = connection;
                let mut request_id = 3;
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let reported: Vec<SessionUsage> = sessions
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|(s, r)| SessionUsage {
                            session: SessionId(*s),
                            state: r.state,
                            resident_bytes: r.resident_bytes,
                            swapped_bytes: 0,
                            idle_ms: r.idle_ms,
                            bytes_moved: r.bytes_moved,
                            swap_events: r.swap_events,
                        })
                        .collect();
                    let hb = Request::Heartbeat {
                        worker_id: id.clone(),
                        devices: vec![DeviceUsage {
                            index: 0,
                            used_memory: 0,
                            utilization_percent: 0,
                            sessions: reported,
                        }],
                    };
                    if call(&mut writer, &mut reader, request_id, &hb)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    request_id += 1;
                }
            }));
        }
        ProtocolWorker {
            id: id.to_owned(),
            sessions,
            control_calls,
            ticket_key,
            tasks,
        }
    }

    /// Simulates the program opening its session on this worker.
    pub fn open_session(&self, session: u64, resident: u64) {
        self.sessions.lock().unwrap().insert(
            session,
            Reported {
                state: SwapState::Hot,
                resident_bytes: resident,
                bytes_moved: 0,
                swap_events: 0,
                idle_ms: 60_000,
            },
        );
    }

    /// Kills the worker: no more heartbeats, no more answers.
    pub fn kill(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for ProtocolWorker {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn call<W, R>(
    writer: &mut FrameWriter<W>,
    reader: &mut FrameReader<R>,
    id: u64,
    request: &Request,
) -> Result<Reply, gpufn_proto::CallError>
where
    W: tokio::io::AsyncWrite + Unpin,
    R: tokio::io::AsyncRead + Unpin,
{
    writer
        .write_request(FrameKind::Call, id, request, &[])
        .await
        .unwrap();
    writer.flush().await.unwrap();
    let header = reader.next_frame().await.unwrap().expect("reply");
    assert_eq!(header.id, id);
    reader.reply().unwrap().result
}

async fn serve_control(
    send: gpufn_proto::transport::SendStream,
    recv: gpufn_proto::transport::RecvStream,
    sessions: &Mutex<BTreeMap<u64, Reported>>,
    calls: &Mutex<Vec<Request>>,
    key: &Mutex<String>,
    worker: &str,
) {
    let mut reader = FrameReader::new(recv, FrameLimits::default());
    let mut writer = FrameWriter::new(send);
    while let Ok(Some(header)) = reader.next_frame().await {
        let request = reader.request().unwrap();
        let result = match &request {
            Request::Hello(hello) => {
                let Credentials::Ticket(ticket) = &hello.credentials else {
                    panic!("the gateway must present a control ticket")
                };
                let public = key.lock().unwrap().clone();
                let claims = gpufn_gateway::ticket::verify_ticket(ticket, &public, worker)
                    .expect("the control ticket verifies with the registered key");
                assert_eq!(claims.sub, "gateway");
                Ok(Reply::Welcome(Welcome {
                    protocol_version: PROTOCOL_VERSION,
                    session: SessionId(0),
                    memory: None,
                    server: "test-worker".into(),
                }))
            }
            Request::SwapOut { session } => {
                if let Some(s) = sessions.lock().unwrap().get_mut(&session.0) {
                    s.state = SwapState::Host;
                    s.resident_bytes = 0;
                    s.swap_events += 1;
                }
                calls.lock().unwrap().push(request.clone());
                Ok(Reply::Done)
            }
            Request::EndSession { session } => {
                sessions.lock().unwrap().remove(&session.0);
                calls.lock().unwrap().push(request.clone());
                Ok(Reply::Done)
            }
            other => {
                calls.lock().unwrap().push(other.clone());
                Ok(Reply::Done)
            }
        };
        let reply = ReplyMessage {
            deferred: vec![],
            result,
            printf_bytes: 0,
        };
        writer.write_reply(header.id, &reply, &[]).await.unwrap();
        writer.flush().await.unwrap();
    }
}
