//! A real worker driven over Unix sockets, TCP and QUIC by a small protocol client: the
//! behaviour a program behind the stub sees.

mod support;

use gpufn_proto::message::{
    CallError, Credentials, EventId, FunctionRef, ImageHash, ModuleId, Reply, Request, StreamId,
};
use gpufn_proto::{CuResult, DeviceAttribute};
use gpufn_worker::address_space::RANGE_SIZE;
use support::*;

const MIB: u64 = 1 << 20;

fn launch(module: u64, grid: u32, block: u32) -> Request {
    Request::LaunchKernel {
        function: FunctionRef {
            module: ModuleId(module),
            index: 0,
        },
        grid: [grid, 1, 1],
        block: [block, 1, 1],
        shared_bytes: 0,
        stream: None,
        attributes: Vec::new(),
    }
}

fn store_params(ptr: u64, offset: u64, value: u32) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&ptr.to_le_bytes());
    p.extend_from_slice(&offset.to_le_bytes());
    p.extend_from_slice(&value.to_le_bytes());
    p
}

#[tokio::test]
async fn handshake_gives_each_session_its_own_range_and_the_device_properties() {
    let w = start_worker("unix", config(64 * MIB)).await;
    let mut a = Client::connect(&w.address).await;
    let mut b = Client::connect(&w.address).await;
    let (ra, rb) = (a.welcome.memory.unwrap(), b.welcome.memory.unwrap());
    assert_ne!(a.welcome.session, b.welcome.session);
    assert_eq!(ra.size, RANGE_SIZE);
    assert!(ra.base + ra.size <= rb.base || rb.base + rb.size <= ra.base);

    assert_eq!(
        a.call(Request::DeviceGetCount, &[]).await.ok(),
        Reply::Count(1)
    );
    let Reply::Device(props) = a
        .call(Request::DeviceGetProperties { device: 0 }, &[])
        .await
        .ok()
    else {
        panic!("no properties")
    };
    assert_eq!(
        props.total_memory,
        64 * MIB,
        "the quota is the device's memory"
    );
    assert!(props.name.starts_with("gpufn CPU device"), "{}", props.name);
    let warp = a
        .call(
            Request::DeviceGetAttribute {
                device: 0,
                attribute: DeviceAttribute::WARP_SIZE,
            },
            &[],
        )
        .await
        .ok();
    assert_eq!(warp, Reply::Value(32));
    let missing = a
        .call(Request::DeviceGetProperties { device: 1 }, &[])
        .await
        .err();
    assert_eq!(missing.code, CuResult::ERROR_INVALID_DEVICE);
    assert_eq!(
        b.call(Request::MemGetInfo, &[]).await.ok(),
        Reply::MemInfo {
            free: 64 * MIB,
            total: 64 * MIB
        }
    );
}

#[tokio::test]
async fn bad_handshakes_are_refused_with_a_reason() {
    let w = start_worker("unix", config(MIB)).await;
    let mut old = hello();
    old.protocol_version = 999;
    let e = open(&w.address, old).await.0.err().unwrap();
    assert_eq!(e.code, CuResult::ERROR_NOT_SUPPORTED);
    assert!(e.message.contains("999"), "{}", e.message);

    let mut ticket = hello();
    ticket.credentials = Credentials::Ticket("t".into());
    let e = open(&w.address, ticket).await.0.err().unwrap();
    assert_eq!(e.code, CuResult::ERROR_NOT_PERMITTED);
    assert_eq!(w.worker.open_sessions(), 0);
}

#[tokio::test]
async fn memory_copies_memsets_and_client_carved_addresses_over_tcp() {
    let w = start_worker("tcp", config(16 * MIB)).await;
    let mut c = Client::connect(&w.address).await;
    let range = c.welcome.memory.unwrap();

    let a = c.alloc(1000).await;
    assert!(a >= range.base && a + 1000 <= range.base + range.size);
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    c.post(
        Request::MemcpyHtoD {
            dst: a,
            stream: None,
        },
        &data,
    )
    .await;
    assert_eq!(c.read(a, 1000).await.data, data);

    // Client-carved allocation, sent without waiting.
    let carved = range.base + 0x1000;
    c.post(
        Request::MemAlloc {
            address: Some(carved),
            size: 4096,
        },
        &[],
    )
    .await;
    c.post(
        Request::Memset {
            dst: carved,
            value: 0xABCD,
            element_size: 2,
            count: 2048,
            stream: None,
        },
        &[],
    )
    .await;
    c.post(
        Request::MemcpyDtoD {
            dst: carved,
            src: a,
            len: 10,
            stream: None,
        },
        &[],
    )
    .await;
    let r = c.read(carved, 14).await;
    assert!(r.deferred.is_empty(), "{:?}", r.deferred);
    assert_eq!(&r.data[..10], &data[..10]);
    assert_eq!(&r.data[10..], &[0xCD, 0xAB, 0xCD, 0xAB]);

    // Outside the range, or overlapping: the post's error comes with the next reply.
    let bad = c
        .post(
            Request::MemAlloc {
                address: Some(range.base + range.size),
                size: 16,
            },
            &[],
        )
        .await;
    let overlap = c
        .post(
            Request::MemAlloc {
                address: Some(carved + 8),
                size: 16,
            },
            &[],
        )
        .await;
    let r = c.call(Request::MemGetInfo, &[]).await;
    let ids: Vec<(u64, CuResult)> = r
        .deferred
        .iter()
        .map(|d| (d.request, d.error.code))
        .collect();
    assert_eq!(
        ids,
        vec![
            (bad, CuResult::ERROR_INVALID_VALUE),
            (overlap, CuResult::ERROR_INVALID_VALUE)
        ]
    );
    assert_eq!(
        r.ok(),
        Reply::MemInfo {
            free: 16 * MIB - 1000 - 4096,
            total: 16 * MIB
        }
    );

    // Reading past an allocation is refused, freeing works once.
    assert_eq!(
        c.read(a, 1001).await.err().code,
        CuResult::ERROR_INVALID_VALUE
    );
    c.call(Request::MemFree { address: a }, &[]).await.ok();
    let again = c.call(Request::MemFree { address: a }, &[]).await.err();
    assert_eq!(again.code, CuResult::ERROR_INVALID_VALUE);
}

#[tokio::test]
async fn strided_copies_move_rows_with_pitch() {
    use gpufn_proto::message::{CopyDirection, DeviceRegion};
    let w = start_worker("unix", config(MIB)).await;
    let mut c = Client::connect(&w.address).await;
    let dev = c.alloc(64).await;
    // 3 rows of 4 bytes into a 16-byte pitch.
    let rows: Vec<u8> = (1..=12).collect();
    let region = DeviceRegion {
        address: dev,
        pitch: 16,
        rows_per_slice: 3,
    };
    c.call(
        Request::MemcpyStrided {
            direction: CopyDirection::HostToDevice,
            dst: Some(region),
            src: None,
            extent: [4, 3, 1],
            stream: None,
        },
        &rows,
    )
    .await
    .ok();
    let all = c.read(dev, 48).await.data;
    assert_eq!(&all[0..4], &[1, 2, 3, 4]);
    assert_eq!(&all[16..20], &[5, 6, 7, 8]);
    assert_eq!(&all[32..36], &[9, 10, 11, 12]);
    assert_eq!(&all[4..16], &[0; 12]);
    let back = c
        .call(
            Request::MemcpyStrided {
                direction: CopyDirection::DeviceToHost,
                dst: None,
                src: Some(region),
                extent: [4, 3, 1],
                stream: None,
            },
            &[],
        )
        .await;
    assert_eq!(back.data, rows);
}

async fn vector_add_on(scheme: &str) {
    let w = start_worker(scheme, config(16 * MIB)).await;
    let mut c = Client::connect(&w.address).await;
    let Reply::ModuleLoaded { kernels, .. } = c.load_ptx(1, VECTOR_ADD_PTX).await else {
        panic!("not loaded")
    };
    assert_eq!(kernels[0].name, "vadd");
    let offsets: Vec<u32> = kernels[0].params.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, vec![0, 8, 16, 24]);

    let n = 1000u32;
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| (2 * i) as f32 + 0.5).collect();
    let bytes = u64::from(n) * 4;
    let (da, db, dc) = (
        c.alloc(bytes).await,
        c.alloc(bytes).await,
        c.alloc(bytes).await,
    );
    c.post(
        Request::MemcpyHtoD {
            dst: da,
            stream: None,
        },
        &f32s(&a),
    )
    .await;
    c.post(
        Request::MemcpyHtoD {
            dst: db,
            stream: None,
        },
        &f32s(&b),
    )
    .await;
    let mut params = Vec::new();
    for p in [da, db, dc] {
        params.extend_from_slice(&p.to_le_bytes());
    }
    params.extend_from_slice(&n.to_le_bytes());
    params.extend_from_slice(&[0; 4]);
    c.post(launch(1, n.div_ceil(256), 256), &params).await;
    let r = c.read(dc, bytes).await;
    assert!(r.deferred.is_empty(), "{:?}", r.deferred);
    let expected: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_eq!(to_f32s(&r.data), expected);
}

#[tokio::test]
async fn vector_add_runs_over_a_unix_socket() {
    vector_add_on("unix").await;
}

#[tokio::test]
async fn vector_add_runs_over_tcp() {
    vector_add_on("tcp").await;
}

#[tokio::test]
async fn sessions_work_over_quic() {
    let w = start_worker("quic", config(MIB)).await;
    let mut c = Client::connect(&w.address).await;
    assert_eq!(c.call(Request::Ping, &[]).await.ok(), Reply::Pong);
    let a = c.alloc(8).await;
    c.write(a, &[1, 2, 3, 4, 5, 6, 7, 8]).await;
    assert_eq!(c.read(a, 8).await.data, vec![1, 2, 3, 4, 5, 6, 7, 8]);
}

#[tokio::test]
async fn printf_output_follows_the_next_reply_and_module_variables_lie_in_the_range() {
    let w = start_worker("unix", config(MIB)).await;
    let mut c = Client::connect(&w.address).await;
    let range = c.welcome.memory.unwrap();
    let Reply::ModuleLoaded { globals, .. } = c.load_ptx(3, PRINTF_PTX).await else {
        panic!("not loaded")
    };
    let counter = globals.iter().find(|g| g.name == "counter").unwrap();
    assert!(
        counter.address >= range.base + range.size / 2,
        "worker half"
    );
    assert!(counter.address + counter.size <= range.base + range.size);
    assert_eq!(c.read(counter.address, 4).await.data, 7u32.to_le_bytes());
    // The program cannot free a module variable.
    let e = c
        .call(
            Request::MemFree {
                address: counter.address,
            },
            &[],
        )
        .await
        .err();
    assert_eq!(e.code, CuResult::ERROR_INVALID_VALUE);

    c.post(launch(3, 1, 2), &[]).await;
    let r = c
        .call(
            Request::ContextSynchronize {
                context: gpufn_proto::message::ContextId(1),
            },
            &[],
        )
        .await;
    assert_eq!(
        String::from_utf8_lossy(&r.printf),
        "hello from thread 0\nhello from thread 1\n"
    );
    assert!(r.deferred.is_empty());
    // Printed once only.
    assert!(c.call(Request::Ping, &[]).await.printf.is_empty());
}

#[tokio::test]
async fn allocations_beyond_the_quota_fail_with_out_of_memory() {
    let w = start_worker("unix", config(MIB)).await;
    let mut c = Client::connect(&w.address).await;
    let e = c
        .call(
            Request::MemAlloc {
                address: None,
                size: MIB + 1,
            },
            &[],
        )
        .await
        .err();
    assert_eq!(e.code, CuResult::ERROR_OUT_OF_MEMORY);
    assert!(e.message.contains("quota"), "{}", e.message);
    let half = c.alloc(MIB / 2).await;
    let base = c.welcome.memory.unwrap().base;
    let post = c
        .post(
            Request::MemAlloc {
                address: Some(base),
                size: MIB / 2 + 1,
            },
            &[],
        )
        .await;
    let r = c.call(Request::Ping, &[]).await;
    assert_eq!(r.deferred[0].request, post);
    assert_eq!(r.deferred[0].error.code, CuResult::ERROR_OUT_OF_MEMORY);
    // Freeing makes room again.
    c.call(Request::MemFree { address: half }, &[]).await.ok();
    c.alloc(MIB).await;
}

#[tokio::test]
async fn an_out_of_bounds_kernel_is_reported_then_sticky() {
    let w = start_worker("unix", config(MIB)).await;
    let mut c = Client::connect(&w.address).await;
    c.load_ptx(1, STORE_PTX).await;
    let buf = c.alloc(16).await;
    c.post(launch(1, 1, 1), &store_params(buf, 4, 42)).await;
    let bad = c
        .post(launch(1, 1, 1), &store_params(buf, 1 << 20, 1))
        .await;
    let after = c
        .post(
            Request::MemcpyHtoD {
                dst: buf,
                stream: None,
            },
            &[9; 4],
        )
        .await;

    let r = c
        .call(
            Request::ContextSynchronize {
                context: gpufn_proto::message::ContextId(1),
            },
            &[],
        )
        .await;
    assert_eq!(
        r.deferred.len(),
        1,
        "only the launch is reported: {:?}",
        r.deferred
    );
    assert_eq!(r.deferred[0].request, bad);
    assert_eq!(r.deferred[0].error.code, CuResult::ERROR_ILLEGAL_ADDRESS);
    assert!(after > bad);
    assert_eq!(r.err().code, CuResult::ERROR_ILLEGAL_ADDRESS, "sticky");
    // Every later call fails the same way; device queries still answer.
    assert_eq!(
        c.read(buf, 4).await.err().code,
        CuResult::ERROR_ILLEGAL_ADDRESS
    );
    assert_eq!(
        c.call(Request::DeviceGetCount, &[]).await.ok(),
        Reply::Count(1)
    );
}

#[tokio::test]
async fn two_sessions_cannot_touch_each_others_memory() {
    let w = start_worker("unix", config(MIB)).await;
    let mut a = Client::connect(&w.address).await;
    let mut b = Client::connect(&w.address).await;
    let secret = a.alloc(64).await;
    a.write(secret, &[0x5e; 64]).await;

    let read = b.read(secret, 64).await;
    let e: CallError = read.err();
    assert_eq!(e.code, CuResult::ERROR_INVALID_VALUE);

    b.post(
        Request::MemcpyHtoD {
            dst: secret,
            stream: None,
        },
        &[0; 64],
    )
    .await;
    b.post(
        Request::Memset {
            dst: secret,
            value: 0,
            element_size: 1,
            count: 64,
            stream: None,
        },
        &[],
    )
    .await;
    let r = b.call(Request::Ping, &[]).await;
    assert_eq!(r.deferred.len(), 2, "{:?}", r.deferred);

    // A kernel of B storing through A's pointer faults in B only.
    b.load_ptx(1, STORE_PTX).await;
    b.post(launch(1, 1, 1), &store_params(secret, 0, 0)).await;
    let r = b.call(Request::Ping, &[]).await;
    assert_eq!(r.deferred[0].error.code, CuResult::ERROR_ILLEGAL_ADDRESS);

    assert_eq!(a.read(secret, 64).await.data, vec![0x5e; 64]);
    // B cannot free A's allocation either.
    let e = b.call(Request::MemFree { address: secret }, &[]).await;
    assert_eq!(
        e.err().code,
        CuResult::ERROR_ILLEGAL_ADDRESS,
        "B is sticky now"
    );
}

#[tokio::test]
async fn module_images_are_shared_across_sessions_by_hash() {
    let w = start_worker("unix", config(MIB)).await;
    let mut a = Client::connect(&w.address).await;
    let mut b = Client::connect(&w.address).await;
    let hash = image_hash(VECTOR_ADD_PTX);
    let unknown = b
        .call(
            Request::ModuleLoad {
                module: ModuleId(1),
                hash,
                inline: false,
            },
            &[],
        )
        .await
        .err();
    assert_eq!(unknown.code, CuResult::ERROR_NOT_FOUND);

    a.load_ptx(5, VECTOR_ADD_PTX).await;
    let cached = b
        .call(
            Request::ModuleLoad {
                module: ModuleId(1),
                hash,
                inline: false,
            },
            &[],
        )
        .await
        .ok();
    assert!(matches!(cached, Reply::ModuleLoaded { ref kernels, .. } if kernels[0].name == "vadd"));

    let wrong = b
        .call(
            Request::ModuleLoad {
                module: ModuleId(2),
                hash: ImageHash([0; 32]),
                inline: true,
            },
            &nul_terminated(VECTOR_ADD_PTX),
        )
        .await
        .err();
    assert_eq!(wrong.code, CuResult::ERROR_INVALID_VALUE);

    let garbage = b
        .call(
            Request::ModuleLoad {
                module: ModuleId(3),
                hash: gpufn_worker::cache::hash_image(b"not a module"),
                inline: true,
            },
            b"not a module",
        )
        .await
        .err();
    assert_ne!(garbage.code, CuResult::SUCCESS);
}

#[tokio::test]
async fn streams_events_limits_and_function_attributes() {
    let w = start_worker("unix", config(MIB)).await;
    let mut c = Client::connect(&w.address).await;
    c.load_ptx(1, VECTOR_ADD_PTX).await;
    c.post(
        Request::StreamCreate {
            stream: StreamId(4),
            flags: 1,
            priority: 0,
        },
        &[],
    )
    .await;
    c.post(
        Request::EventCreate {
            event: EventId(1),
            flags: 0,
        },
        &[],
    )
    .await;
    c.post(
        Request::EventCreate {
            event: EventId(2),
            flags: 0,
        },
        &[],
    )
    .await;
    c.post(
        Request::EventRecord {
            event: EventId(1),
            stream: Some(StreamId(4)),
        },
        &[],
    )
    .await;
    c.post(
        Request::EventRecord {
            event: EventId(2),
            stream: Some(StreamId(4)),
        },
        &[],
    )
    .await;
    let r = c
        .call(
            Request::EventElapsedTime {
                start: EventId(1),
                end: EventId(2),
            },
            &[],
        )
        .await;
    assert!(r.deferred.is_empty(), "{:?}", r.deferred);
    assert!(matches!(r.ok(), Reply::ElapsedMs(ms) if ms >= 0.0));
    c.call(
        Request::StreamSynchronize {
            stream: StreamId(4),
        },
        &[],
    )
    .await
    .ok();
    let e = c
        .call(
            Request::StreamSynchronize {
                stream: StreamId(5),
            },
            &[],
        )
        .await
        .err();
    assert_eq!(e.code, CuResult::ERROR_INVALID_HANDLE);

    let fifo = Request::ContextGetLimit {
        context: gpufn_proto::message::ContextId(1),
        limit: 1,
    };
    assert_eq!(c.call(fifo, &[]).await.ok(), Reply::Value(1 << 20));
    let f = FunctionRef {
        module: ModuleId(1),
        index: 0,
    };
    let threads = c
        .call(
            Request::FunctionGetAttribute {
                function: f,
                attribute: 0,
            },
            &[],
        )
        .await;
    assert_eq!(threads.ok(), Reply::Value(1024));
    let bad_shape = c.post(launch(1, 1, 2048), &[0; 32]).await;
    let r = c.call(Request::Ping, &[]).await;
    assert_eq!(r.deferred[0].request, bad_shape);
    assert_eq!(r.deferred[0].error.code, CuResult::ERROR_INVALID_VALUE);
    // A bad launch shape does not poison the session.
    c.call(Request::MemGetInfo, &[]).await.ok();
}
