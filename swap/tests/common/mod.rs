//! Helpers shared by the integration tests: sessions of random data on a `MemoryDevice`.
#![allow(dead_code)]

use std::path::Path;

use gpufn_swap::{Allocation, MemoryDevice, SessionId, SwapConfig};

/// Small chunks so tests exercise many chunks with little data.
pub const CHUNK: usize = 64 * 1024;

pub struct TestSession {
    pub id: SessionId,
    pub allocations: Vec<Allocation>,
    pub data: Vec<Vec<u8>>,
}

/// Deterministic pseudo-random bytes (splitmix64).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Maps allocations of the given sizes filled with random data for session `id`.
pub fn make_session(device: &mut MemoryDevice, id: u64, lens: &[usize]) -> TestSession {
    let mut allocations = Vec::new();
    let mut data = Vec::new();
    let mut address = 0x7f00_0000_0000 + (id << 32);
    for (i, &len) in lens.iter().enumerate() {
        let bytes = random_bytes(id * 1000 + i as u64, len);
        device.insert(address, bytes.clone());
        allocations.push(Allocation::new(address, len as u64));
        data.push(bytes);
        address += (len as u64).next_multiple_of(4096) + 4096;
    }
    TestSession {
        id: SessionId(id),
        allocations,
        data,
    }
}

/// What the worker does after a swap-out: unmap the session's device memory.
pub fn release(device: &mut MemoryDevice, s: &TestSession) {
    for a in &s.allocations {
        device.free(a.device_address);
    }
}

/// What the worker does before a swap-in: map zeroed memory at the same addresses.
pub fn remap(device: &mut MemoryDevice, s: &TestSession) {
    for a in &s.allocations {
        device.allocate(a.device_address, a.len as usize);
    }
}

pub fn assert_restored(device: &MemoryDevice, s: &TestSession) {
    for (a, expected) in s.allocations.iter().zip(&s.data) {
        let got = device.get(a.device_address).expect("allocation mapped");
        assert!(
            got == expected.as_slice(),
            "session {} allocation {a} differs after swap-in",
            s.id
        );
    }
}

pub fn config(worker: &str, host_budget: u64) -> SwapConfig {
    SwapConfig {
        chunk_size: CHUNK,
        ..SwapConfig::new(worker, host_budget)
    }
}

pub fn disk_config(worker: &str, dir: &Path, host_budget: u64) -> SwapConfig {
    config(worker, host_budget).with_disk(dir)
}
