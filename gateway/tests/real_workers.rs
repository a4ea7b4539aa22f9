//! Real workers (cpu backend, loopback) behind one gateway: registration, tickets enforced by
//! the worker, sessions placed and opened with their ticket, ended through the gateway, and a
//! killed worker leaving the pool while new sessions land on the other.

mod support;

use std::time::Duration;

use gpufn_gateway::auth::Scope;
use gpufn_proto::frame::{FrameLimits, FrameReader, FrameWriter};
use gpufn_proto::message::{Channel, Credentials, Hello, Role};
use gpufn_proto::transport::{Address, ClientOptions, Connection, connect};
use gpufn_proto::{CuResult, PROTOCOL_VERSION, Reply, Request};
use gpufn_worker::gateway_client::{GatewayOptions, register};
use gpufn_worker::{BackendChoice, Worker, WorkerConfig};
use serde_json::json;
use support::*;

struct RealWorker {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RealWorker {
    async fn start(g: &gpufn_gateway::RunningGateway, id: &str) -> RealWorker {
        let worker = Worker::new(WorkerConfig {
            backend: BackendChoice::Cpu,
            launch_threads: 1,
            ..WorkerConfig::default()
        })
        .unwrap();
        let listener = worker
            .bind(&"tcp://127.0.0.1:0".parse().unwrap(), None)
            .await
            .unwrap();
        let data_address = listener.local_address().to_string();
        let serving = {
            let worker = worker.clone();
            tokio::spawn(async move { worker.serve(listener).await })
        };
        let heartbeats = register(
            &worker,
            GatewayOptions {
                gateway: g.control_addr.clone(),
                token: token(g, "workers", &[Scope::Worker]),
                worker_id: id.to_owned(),
                data_address,
                device_memory: Some(1 << 30),
            },
        )
        .await
        .unwrap();
        RealWorker {
            tasks: vec![serving, heartbeats],
        }
    }

    fn kill(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for RealWorker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Opens a session on a worker as the stub does; returns the connection and the Welcome's
/// session id, or the refusal.
async fn open(
    address: &str,
    credentials: Credentials,
) -> (
    Connection,
    Result<Reply, gpufn_proto::CallError>,
    FrameWriter<gpufn_proto::transport::SendStream>,
    FrameReader<gpufn_proto::transport::RecvStream>,
) {
    let address: Address = address.parse().unwrap();
    let connection = connect(&address, &ClientOptions::default()).await.unwrap();
    let (send, recv) = connection.open_stream().await.unwrap();
    let (mut w, mut r) = (
        FrameWriter::new(send),
        FrameReader::new(recv, FrameLimits::default()),
    );
    let hello = Request::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        role: Role::Stub,
        channel: Channel::Calls,
        credentials,
        session: None,
        client: "test".into(),
    });
    let result = call(&mut w, &mut r, 1, &hello).await;
    (connection, result, w, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_workers_enforce_tickets_and_the_pool_follows_them() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path()).await;
    let mut w1 = RealWorker::start(&g, "w1").await;
    let _w2 = RealWorker::start(&g, "w2").await;
    let acme = token(&g, "acme", &[Scope::Session]);
    let (_, pool) = http(&g, "GET", "/v1/pool", Some(&acme), None).await;
    assert_eq!(pool["workers"].as_array().unwrap().len(), 2, "{pool}");

    let (s, a) = http(
        &g,
        "POST",
        "/v1/sessions",
        Some(&acme),
        Some(json!({"vram_bytes": 64u64 << 20})),
    )
    .await;
    assert_eq!(s, 201, "{a}");
    let address = a["worker_address"].as_str().unwrap().to_owned();
    let session = a["session"].as_u64().unwrap();

    // Without a ticket, or with a forged one, the worker refuses the session.
    let (_, refused, _, _) = open(&address, Credentials::None).await;
    let err = refused.unwrap_err();
    assert_eq!(err.code, CuResult::ERROR_NOT_PERMITTED);
    assert!(
        err.message.contains("attach through the gateway"),
        "{}",
        err.message
    );
    let (_, forged, _, _) = open(&address, Credentials::Ticket("x.y.z".into())).await;
    assert_eq!(forged.unwrap_err().code, CuResult::ERROR_NOT_PERMITTED);

    // With its ticket, the session opens under the gateway's id and VRAM quota.
    let ticket = a["ticket"].as_str().unwrap().to_owned();
    let (_conn, welcome, mut w, mut r) = open(&address, Credentials::Ticket(ticket.clone())).await;
    let Ok(Reply::Welcome(welcome)) = welcome else {
        panic!("{welcome:?}")
    };
    assert_eq!(welcome.session.0, session);
    let Ok(Reply::MemInfo { total, .. }) = call(&mut w, &mut r, 2, &Request::MemGetInfo).await
    else {
        panic!("MemGetInfo failed")
    };
    assert_eq!(total, 64 << 20);
    // A ticket opens its session once.
    let (_, again, _, _) = open(&address, Credentials::Ticket(ticket)).await;
    assert!(again.unwrap_err().message.contains("already open"));

    // The heartbeat reports it; its tenant ends it through the gateway and the worker stops it.
    eventually("the session's traffic is metered", || async {
        let (_, d) = http(
            &g,
            "GET",
            &format!("/v1/sessions/{session}"),
            Some(&acme),
            None,
        )
        .await;
        d["usage"]["bytes_moved"].as_u64().unwrap_or(0) > 0 || d["state"] == "resident"
    })
    .await;
    let (s, _) = http(
        &g,
        "DELETE",
        &format!("/v1/sessions/{session}"),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(s, 200);
    // The worker got EndSession: the program's stream ends (within a few calls).
    let mut ended = false;
    for id in 3..400u64 {
        let request = Request::MemGetInfo;
        if w.write_request(gpufn_proto::FrameKind::Call, id, &request, &[])
            .await
            .is_err()
            || w.flush().await.is_err()
        {
            ended = true;
            break;
        }
        match r.next_frame().await {
            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(25)).await,
            _ => {
                ended = true;
                break;
            }
        }
    }
    assert!(ended, "the worker kept serving a session the gateway ended");

    // Kill w1: /v1/pool drops it within the lease, sessions there fail with the reason, and
    // new sessions land on w2.
    let (_, b) = http(
        &g,
        "POST",
        "/v1/sessions",
        Some(&acme),
        Some(json!({"vram_bytes": 64u64 << 20})),
    )
    .await;
    let on_w1 = if b["worker"] == "w1" {
        b["session"].as_u64()
    } else {
        None
    };
    w1.kill();
    eventually("w1 leaves the pool", || async {
        let (_, pool) = http(&g, "GET", "/v1/pool", Some(&acme), None).await;
        pool["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["id"] != "w1")
    })
    .await;
    if let Some(lost) = on_w1 {
        let (_, d) = http(
            &g,
            "GET",
            &format!("/v1/sessions/{lost}"),
            Some(&acme),
            None,
        )
        .await;
        assert!(
            d["end_reason"].as_str().unwrap().contains("was lost"),
            "{d}"
        );
    }
    for _ in 0..3 {
        let (s, c) = http(
            &g,
            "POST",
            "/v1/sessions",
            Some(&acme),
            Some(json!({"vram_bytes": 64u64 << 20})),
        )
        .await;
        assert_eq!((s, c["worker"].as_str()), (201, Some("w2")), "{c}");
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
}
