//! Clients that misbehave or vanish: the worker closes only their connection and frees
//! their sessions.

mod support;

use gpufn_proto::frame::FrameKind;
use gpufn_proto::message::{Reply, Request};
use gpufn_proto::transport::{ClientOptions, connect};
use support::*;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn garbage_and_malformed_frames_close_only_that_connection() {
    let w = start_worker("unix", config(1 << 20)).await;
    let mut good = Client::connect(&w.address).await;

    // Raw garbage instead of a handshake.
    let connection = connect(&w.address, &ClientOptions::default())
        .await
        .unwrap();
    let (mut send, _recv) = connection.open_stream().await.unwrap();
    send.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    send.flush().await.unwrap();

    // A valid session that then sends a frame header with an unknown kind.
    let mut bad = Client::connect(&w.address).await;
    bad.alloc(100).await;
    let mut undecodable = Client::connect(&w.address).await;
    undecodable.alloc(100).await;
    let raw = gpufn_proto::frame::encode_frame(
        FrameKind::Post,
        9,
        &gpufn_proto::frame::FrameBody::Request(Request::Ping),
        &[],
    )
    .unwrap();
    let mut corrupted = raw.clone();
    corrupted[2] = 77; // unknown frame kind
    let mut bad = bad.send_raw(&corrupted).await;
    assert!(bad.is_closed_by_worker().await);
    // A message that does not decode.
    let mut frame = raw;
    let len = frame.len();
    frame[len - 1] = 0xff;
    frame[24] = 0xfe; // enum tag out of range
    let mut undecodable = undecodable.send_raw(&frame).await;
    assert!(undecodable.is_closed_by_worker().await);

    eventually("the bad sessions are freed", || {
        w.worker.open_sessions() == 1
    })
    .await;
    assert_eq!(good.call(Request::Ping, &[]).await.ok(), Reply::Pong);
    let a = good.alloc(16).await;
    good.write(a, &[1; 16]).await;
}

#[tokio::test]
async fn a_vanished_client_frees_its_session_and_range() {
    let w = start_worker("tcp", config(1 << 20)).await;
    let first_range = {
        let mut c = Client::connect(&w.address).await;
        c.alloc(1 << 20).await;
        c.welcome.memory.unwrap()
    };
    eventually("the session is freed", || w.worker.open_sessions() == 0).await;
    // The range and the full quota are available to the next session.
    let mut next = Client::connect(&w.address).await;
    assert_eq!(next.welcome.memory.unwrap(), first_range);
    next.alloc(1 << 20).await;
}

#[tokio::test]
async fn detach_ends_the_session() {
    let w = start_worker("unix", config(1 << 20)).await;
    let mut c = Client::connect(&w.address).await;
    c.alloc(100).await;
    assert_eq!(c.call(Request::Detach, &[]).await.ok(), Reply::Done);
    assert!(c.is_closed_by_worker().await);
    eventually("the session is freed", || w.worker.open_sessions() == 0).await;
}

#[tokio::test]
async fn a_session_over_the_limit_is_refused_with_a_reason() {
    let mut cfg = config(1 << 20);
    cfg.max_sessions = 1;
    let w = start_worker("unix", cfg).await;
    let _first = Client::connect(&w.address).await;
    let e = open(&w.address, hello()).await.0.err().unwrap();
    assert_eq!(e.code, gpufn_proto::CuResult::ERROR_DEVICE_UNAVAILABLE);
    assert!(e.message.contains("max-sessions"), "{}", e.message);
}

/// Spins forever.
const SPIN_PTX: &str = r#"
.version 8.0
.target sm_80
.address_size 64

.visible .entry spin()
{
LOOP:
    bra.uni LOOP;
}
"#;

#[tokio::test]
async fn a_client_that_leaves_during_an_endless_kernel_frees_its_session() {
    let w = start_worker("unix", config(1 << 20)).await;
    let mut c = Client::connect(&w.address).await;
    c.load_ptx(1, SPIN_PTX).await;
    c.post(
        Request::LaunchKernel {
            function: gpufn_proto::message::FunctionRef {
                module: gpufn_proto::message::ModuleId(1),
                index: 0,
            },
            grid: [1, 1, 1],
            block: [32, 1, 1],
            shared_bytes: 0,
            stream: None,
            attributes: Vec::new(),
        },
        &[],
    )
    .await;
    drop(c);
    eventually(
        "the endless kernel is cancelled and the session freed",
        || w.worker.open_sessions() == 0,
    )
    .await;
    // The worker still serves new sessions.
    let mut next = Client::connect(&w.address).await;
    assert_eq!(next.call(Request::Ping, &[]).await.ok(), Reply::Pong);
}
