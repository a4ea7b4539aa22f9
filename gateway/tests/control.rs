//! The control endpoint over QUIC: a stub attaches with its token and gets a worker address,
//! a ticket bound to session and worker, and the device properties; bad tokens are refused.

mod support;

use gpufn_gateway::auth::Scope;
use gpufn_proto::frame::{FrameLimits, FrameReader, FrameWriter};
use gpufn_proto::message::{Channel, Credentials, Hello, Qos, ResourceRequest, Role};
use gpufn_proto::transport::{ClientOptions, connect};
use gpufn_proto::{CuResult, PROTOCOL_VERSION, Reply, Request};
use support::*;

fn hello(role: Role, token: &str) -> Request {
    Request::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        role,
        channel: Channel::Calls,
        credentials: Credentials::Token(token.to_owned()),
        session: None,
        client: "test-stub".into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stubs_attach_over_quic_and_get_a_ticket_for_their_worker() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.control_addr = "quic://127.0.0.1:0".to_owned();
    let g = gpufn_gateway::start(c).await.unwrap();
    let worker = ProtocolWorker::start(&g, "w1", 2 * GIB).await;

    let connection = connect(&g.control_addr, &ClientOptions::default())
        .await
        .unwrap();
    let (send, recv) = connection.open_stream().await.unwrap();
    let (mut w, mut r) = (
        FrameWriter::new(send),
        FrameReader::new(recv, FrameLimits::default()),
    );
    let token = token(&g, "acme", &[Scope::Session]);
    assert!(matches!(
        call(&mut w, &mut r, 1, &hello(Role::Stub, &token)).await,
        Ok(Reply::Welcome(_))
    ));
    let attach = Request::Attach(ResourceRequest {
        vram_bytes: GIB,
        compute_percent: 25,
        qos: Qos::High,
        function: None,
    });
    let Ok(Reply::Attached {
        session,
        worker_address,
        ticket,
        device,
    }) = call(&mut w, &mut r, 2, &attach).await
    else {
        panic!("attach failed")
    };
    assert!(worker_address.starts_with("tcp://127.0.0.1:"));
    assert_eq!(device.name, "test device");
    assert_eq!(
        device.total_memory, GIB,
        "the stub reports the session's quota"
    );
    let key = worker.ticket_key.lock().unwrap().clone();
    let claims = gpufn_gateway::ticket::verify_ticket(&ticket, &key, "w1").unwrap();
    assert_eq!(
        (claims.session, claims.tenant.as_str()),
        (Some(session.0), "acme")
    );
    assert_eq!((claims.vram_bytes, claims.compute_percent), (GIB, 25));

    // Device calls belong to the worker, not the gateway.
    let err = call(&mut w, &mut r, 3, &Request::DeviceGetCount)
        .await
        .unwrap_err();
    assert!(
        err.message.contains("send device calls to the worker"),
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_endpoint_refuses_bad_tokens_and_wrong_roles() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path()).await;
    let session_token = token(&g, "acme", &[Scope::Session]);
    for (role, token, expect) in [
        (Role::Stub, "forged.token.here", "malformed_token"),
        (Role::Worker, session_token.as_str(), "missing_scope"),
    ] {
        let connection = connect(&g.control_addr, &ClientOptions::default())
            .await
            .unwrap();
        let (send, recv) = connection.open_stream().await.unwrap();
        let (mut w, mut r) = (
            FrameWriter::new(send),
            FrameReader::new(recv, FrameLimits::default()),
        );
        let err = call(&mut w, &mut r, 1, &hello(role, token))
            .await
            .unwrap_err();
        assert_eq!(err.code, CuResult::ERROR_NOT_PERMITTED);
        assert!(err.message.contains(expect), "{}", err.message);
    }
    // With no workers, an attach names the problem.
    let connection = connect(&g.control_addr, &ClientOptions::default())
        .await
        .unwrap();
    let (send, recv) = connection.open_stream().await.unwrap();
    let (mut w, mut r) = (
        FrameWriter::new(send),
        FrameReader::new(recv, FrameLimits::default()),
    );
    call(&mut w, &mut r, 1, &hello(Role::Stub, &session_token))
        .await
        .unwrap();
    let attach = Request::Attach(ResourceRequest {
        vram_bytes: GIB,
        compute_percent: 0,
        qos: Qos::Medium,
        function: None,
    });
    let err = call(&mut w, &mut r, 2, &attach).await.unwrap_err();
    assert_eq!(err.code, CuResult::ERROR_NO_DEVICE);
    assert!(err.message.contains("gpufn worker"), "{}", err.message);
}
