//! Host-to-device copies larger than the worker runs on its reader: their payload goes from
//! the stream straight into device memory on the executor. Over real transports: the bytes
//! land exactly and in order with the session's other requests, a copy that cannot land
//! still consumes its payload and leaves the session working, and a client that stops in
//! the middle of a payload loses only its own session.

mod support;

use gpufn_proto::frame::{FrameBody, FrameKind, encode_frame};
use gpufn_proto::message::{FunctionRef, ModuleId, Reply, Request, StreamId};
use gpufn_proto::{CuResult, FrameLimits};
use support::*;

const MIB: u64 = 1 << 20;

fn htod(dst: u64) -> Request {
    Request::MemcpyHtoD { dst, stream: None }
}

/// Bytes that differ from their neighbours and from any shifted copy of themselves.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

async fn read_all(c: &mut Client, src: u64, len: u64) -> Vec<u8> {
    match c.read(src, len).await {
        r if r.result.is_ok() => r.data,
        r => panic!("reading back failed: {:?}", r.result),
    }
}

async fn large_copies_land_exactly(scheme: &str) {
    let w = start_worker(scheme, config(64 * MIB)).await;
    let mut c = Client::connect(&w.address).await;
    let size = 12 * MIB;
    let base = c.alloc(size).await;

    // An unaligned address and length, as a call.
    let first = pattern(5 * MIB as usize + 3, 1);
    c.write(base + 7, &first).await;
    let mut expected = vec![0u8; size as usize];
    expected[7..7 + first.len()].copy_from_slice(&first);
    assert_eq!(read_all(&mut c, base, size).await, expected);

    // Posts, run in order: a large copy, a small one over its start, a large one over its
    // end, then a frame of the largest size the stub sends.
    let second = pattern(2 * MIB as usize + 1, 2);
    let small = pattern(1000, 3);
    let third = pattern(3 * MIB as usize - 5, 4);
    let fourth = pattern(4 * MIB as usize, 5);
    c.post(htod(base + 1), &second).await;
    c.post(htod(base + 11), &small).await;
    c.post(htod(base + MIB + 13), &third).await;
    c.post(htod(base + 8 * MIB), &fourth).await;
    expected[1..1 + second.len()].copy_from_slice(&second);
    expected[11..11 + small.len()].copy_from_slice(&small);
    expected[(MIB + 13) as usize..(MIB + 13) as usize + third.len()].copy_from_slice(&third);
    expected[8 * MIB as usize..].copy_from_slice(&fourth);
    let r = c.read(base, size).await;
    assert!(r.deferred.is_empty(), "{:?}", r.deferred);
    assert!(r.data == expected, "the copies landed differently");
}

#[tokio::test]
async fn large_copies_land_exactly_over_a_unix_socket() {
    large_copies_land_exactly("unix").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_copies_land_exactly_over_tcp() {
    large_copies_land_exactly("tcp").await;
}

#[tokio::test]
async fn large_copies_land_exactly_over_quic() {
    large_copies_land_exactly("quic").await;
}

#[tokio::test]
async fn a_large_copy_that_cannot_land_fails_and_the_session_keeps_working() {
    let w = start_worker("unix", config(64 * MIB)).await;
    let mut c = Client::connect(&w.address).await;
    let base = c.alloc(2 * MIB).await;
    let data = pattern(3 * MIB as usize, 6);

    // Past the end of the allocation, as a call: the error names the range.
    let e = c.call(htod(base), &data).await.err();
    assert_eq!(e.code, CuResult::ERROR_INVALID_VALUE, "{}", e.message);
    assert!(
        e.message.contains("not inside one allocation"),
        "{}",
        e.message
    );
    // The payload was consumed: the next call is read and answered as itself.
    assert_eq!(c.call(Request::Ping, &[]).await.ok(), Reply::Pong);

    // Not allocated at all, and on a stream that does not exist, as posts: reported with
    // the next call, which still runs.
    let unallocated = c.post(htod(base + 64 * MIB), &data).await;
    let bad_stream = c
        .post(
            Request::MemcpyHtoD {
                dst: base,
                stream: Some(StreamId(77)),
            },
            &data[..2 * MIB as usize],
        )
        .await;
    let good = pattern(2 * MIB as usize, 7);
    let r = c.call(htod(base), &good).await;
    let failed: Vec<_> = r.deferred.iter().map(|d| d.request).collect();
    assert_eq!(failed, [unallocated, bad_stream]);
    assert_eq!(r.deferred[0].error.code, CuResult::ERROR_INVALID_VALUE);
    assert_eq!(r.ok(), Reply::Done);
    assert_eq!(read_all(&mut c, base, 2 * MIB).await, good);
}

#[tokio::test]
async fn a_large_copy_after_a_sticky_error_reports_it_and_later_calls_are_answered() {
    let w = start_worker("unix", config(64 * MIB)).await;
    let mut c = Client::connect(&w.address).await;
    c.load_ptx(1, STORE_PTX).await;
    let buf = c.alloc(4 * MIB).await;
    // A kernel store far out of bounds: the context is lost.
    let mut params = Vec::new();
    params.extend_from_slice(&buf.to_le_bytes());
    params.extend_from_slice(&(64 * MIB).to_le_bytes());
    params.extend_from_slice(&1u32.to_le_bytes());
    let launch = Request::LaunchKernel {
        function: FunctionRef {
            module: ModuleId(1),
            index: 0,
        },
        grid: [1, 1, 1],
        block: [1, 1, 1],
        shared_bytes: 0,
        stream: None,
        attributes: Vec::new(),
    };
    c.post(launch, &params).await;
    let e = c.call(htod(buf), &pattern(3 * MIB as usize, 8)).await.err();
    assert_eq!(e.code, CuResult::ERROR_ILLEGAL_ADDRESS);
    assert_eq!(
        c.call(Request::DeviceGetCount, &[]).await.ok(),
        Reply::Count(1)
    );
}

#[tokio::test]
async fn a_client_that_stops_inside_a_large_payload_loses_only_its_session() {
    let w = start_worker("unix", config(64 * MIB)).await;
    let mut other = Client::connect(&w.address).await;
    let kept = other.alloc(MIB).await;
    other.write(kept, &[5; 64]).await;

    let mut c = Client::connect(&w.address).await;
    let base = c.alloc(4 * MIB).await;
    let frame = encode_frame(
        FrameKind::Call,
        100,
        &FrameBody::Request(htod(base)),
        &pattern(4 * MIB as usize, 9),
    )
    .unwrap();
    assert!(4 * MIB <= FrameLimits::default().max_payload);
    // Half the payload, then the client goes away.
    let raw = c.send_raw(&frame[..frame.len() / 2]).await;
    drop(raw);
    eventually("the session closed", || w.worker.open_sessions() == 1).await;
    assert_eq!(read_all(&mut other, kept, 64).await, vec![5; 64]);
}

/// A whole copy frame of `len` bytes to `dst`, as raw bytes.
fn copy_frame(id: u64, dst: u64, len: usize) -> Vec<u8> {
    encode_frame(
        FrameKind::Post,
        id,
        &FrameBody::Request(htod(dst)),
        &pattern(len, 12),
    )
    .unwrap()
}

#[tokio::test]
async fn detach_then_a_large_copy_closes_the_session() {
    let w = start_worker("unix", config(64 * MIB)).await;
    let mut c = Client::connect(&w.address).await;
    let base = c.alloc(4 * MIB).await;
    let mut bytes = encode_frame(
        FrameKind::Post,
        50,
        &FrameBody::Request(Request::Detach),
        &[],
    )
    .unwrap();
    bytes.extend(copy_frame(51, base, 4 * MIB as usize));
    let mut raw = c.send_raw(&bytes).await;
    assert!(raw.is_closed_by_worker().await);
    eventually("the session closed", || w.worker.open_sessions() == 0).await;
}

#[tokio::test]
async fn a_large_copy_to_an_ended_session_closes_it() {
    let w = start_worker("tcp", config(64 * MIB)).await;
    let mut c = Client::connect(&w.address).await;
    let base = c.alloc(4 * MIB).await;
    assert!(w.worker.end_session(c.welcome.session.0));
    let mut raw = c.send_raw(&copy_frame(60, base, 4 * MIB as usize)).await;
    assert!(raw.is_closed_by_worker().await);
    eventually("the session closed", || w.worker.open_sessions() == 0).await;
}
