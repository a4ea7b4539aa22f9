//! Replays the fuzz corpus (`proto/fuzz/corpus/decode_frame/`) through the fuzz target's
//! body, plus deterministic mutations of valid frames, so every `cargo test` exercises the
//! decoder on hostile input even where libFuzzer is not available.

use gpufn_proto::frame::{FrameBody, FrameKind, encode_frame, fuzz_one};
use gpufn_proto::message::{Channel, Credentials, Hello, Request, Role, SessionId};
use std::path::Path;

fn corpus_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_frame")
}

#[test]
fn committed_corpus_replays_without_panic() {
    let mut count = 0;
    for entry in std::fs::read_dir(corpus_dir()).expect("corpus directory exists") {
        let path = entry.expect("readable corpus entry").path();
        let data = std::fs::read(&path).expect("readable corpus file");
        fuzz_one(&data);
        count += 1;
    }
    assert!(count > 0, "the fuzz corpus must not be empty");
}

fn seed_frames() -> Vec<Vec<u8>> {
    let hello = Request::Hello(Hello {
        protocol_version: 1,
        role: Role::Stub,
        channel: Channel::Calls,
        credentials: Credentials::Ticket("ticket".into()),
        session: Some(SessionId(9)),
        client: "test".into(),
    });
    let requests = [
        hello,
        Request::Ping,
        Request::MemAlloc {
            address: Some(0x7000_0000_0000),
            size: 1 << 20,
        },
        Request::MemcpyDtoH {
            src: 0x7000_0000_0000,
            len: 64,
            stream: None,
        },
    ];
    requests
        .into_iter()
        .map(|r| encode_frame(FrameKind::Call, 1, &FrameBody::Request(r), b"payload").unwrap())
        .collect()
}

/// `GPUFN_WRITE_FUZZ_SEEDS=1 cargo test -p gpufn-proto --test fuzz_corpus` writes the valid
/// seed frames into the corpus directory (the fuzzer grows the corpus from them).
#[test]
fn write_seeds_when_asked() {
    if std::env::var_os("GPUFN_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    for (i, frame) in seed_frames().into_iter().enumerate() {
        std::fs::write(corpus_dir().join(format!("seed-{i}")), frame).expect("corpus is writable");
    }
}

/// A small deterministic generator, so failures reproduce exactly.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn mutated_valid_frames_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for seed in seed_frames() {
        fuzz_one(&seed);
        for _ in 0..2000 {
            let mut data = seed.clone();
            let edits = 1 + rng.next() % 4;
            for _ in 0..edits {
                let at = (rng.next() % data.len() as u64) as usize;
                match rng.next() % 3 {
                    0 => data[at] ^= 1 << (rng.next() % 8),
                    1 => data[at] = rng.next() as u8,
                    _ => data.truncate(at),
                }
                if data.is_empty() {
                    break;
                }
            }
            fuzz_one(&data);
        }
    }
}
