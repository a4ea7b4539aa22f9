//! Message encoding: postcard (what the protocol uses) against wincode, the fastest
//! alternative measured in `shared/research/crates.md`, on the two messages that dominate
//! traffic: a kernel launch and a copy header. Payload bytes are not part of either message
//! (they travel raw after the frame), so this measures exactly what the codec costs per call.
//!
//! Run: `cargo bench -p gpufn-proto --bench encoding`.

use criterion::{Criterion, criterion_group, criterion_main};
use gpufn_proto::frame::{decode_request, encode_message};
use gpufn_proto::message::{FunctionRef, ModuleId, Request, StreamId};
use std::hint::black_box;

/// The same shape as `Request::LaunchKernel`, for wincode (which has its own derive).
#[derive(wincode::SchemaWrite, wincode::SchemaRead, Debug, PartialEq)]
enum WireRequest {
    Launch {
        module: u64,
        index: u32,
        grid: [u32; 3],
        block: [u32; 3],
        shared_bytes: u32,
        stream: Option<u64>,
        attributes: Vec<u32>,
    },
    MemcpyHtoD {
        dptr: u64,
        stream: Option<u64>,
    },
}

fn launch() -> Request {
    Request::LaunchKernel {
        function: FunctionRef {
            module: ModuleId(3),
            index: 7,
        },
        grid: [4096, 1, 1],
        block: [256, 1, 1],
        shared_bytes: 0,
        stream: Some(StreamId(2)),
        attributes: Vec::new(),
    }
}

fn memcpy() -> Request {
    Request::MemcpyHtoD {
        dst: 0x7f00_0000_1000,
        stream: None,
    }
}

fn bench_postcard(c: &mut Criterion) {
    for (name, request) in [("launch", launch()), ("memcpy_header", memcpy())] {
        let mut buf = Vec::with_capacity(256);
        c.bench_function(&format!("postcard/{name}/encode+decode"), |b| {
            b.iter(|| {
                buf.clear();
                encode_message(black_box(&request), &mut buf).unwrap();
                black_box(decode_request(&buf).unwrap())
            })
        });
    }
}

fn bench_wincode(c: &mut Criterion) {
    let messages = [
        (
            "launch",
            WireRequest::Launch {
                module: 3,
                index: 7,
                grid: [4096, 1, 1],
                block: [256, 1, 1],
                shared_bytes: 0,
                stream: Some(2),
                attributes: Vec::new(),
            },
        ),
        (
            "memcpy_header",
            WireRequest::MemcpyHtoD {
                dptr: 0x7f00_0000_1000,
                stream: None,
            },
        ),
    ];
    for (name, request) in messages {
        c.bench_function(&format!("wincode/{name}/encode+decode"), |b| {
            b.iter(|| {
                let bytes = wincode::serialize(black_box(&request)).unwrap();
                black_box(wincode::deserialize::<WireRequest>(&bytes).unwrap())
            })
        });
    }
}

criterion_group!(benches, bench_postcard, bench_wincode);
criterion_main!(benches);
