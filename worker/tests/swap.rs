//! Swap integrated into the worker, driven over the protocol: idle sessions are swapped out
//! (observed through a control stream's `GetSwapState`), come back at the same addresses with
//! every byte intact, and device memory is oversubscribed through swap.

mod support;

use gpufn_proto::CuResult;
use gpufn_proto::message::{
    Credentials, FunctionRef, Hello, ModuleId, Reply, Request, Role, SessionId, SwapState,
};
use gpufn_swap::EventKind;
use gpufn_worker::WorkerConfig;
use gpufn_worker::swap::SwapSettings;
use std::path::Path;
use std::time::Duration;
use support::*;

const MIB: u64 = 1 << 20;

fn swap_config(session_memory: u64, swap: SwapSettings) -> WorkerConfig {
    WorkerConfig {
        swap,
        ..config(session_memory)
    }
}

/// Settings where nothing swaps by itself (tests swap with explicit control calls).
fn no_idle_swap(worker_id: &str) -> SwapSettings {
    SwapSettings {
        worker_id: worker_id.into(),
        idle_timeout: Duration::from_secs(3600),
        ..SwapSettings::default()
    }
}

/// A control stream (`Hello { role: Gateway }` without credentials: a worker without a
/// gateway accepts it).
async fn control(w: &TestWorker) -> Client {
    let hello = Hello {
        role: Role::Gateway,
        ..hello()
    };
    open(&w.address, hello).await.0.expect("control handshake")
}

async fn swap_state(control: &mut Client, session: SessionId) -> (SwapState, u64, u64) {
    match control
        .call(Request::GetSwapState { session }, &[])
        .await
        .ok()
    {
        Reply::SwapState {
            state,
            resident_bytes,
            swapped_bytes,
        } => (state, resident_bytes, swapped_bytes),
        other => panic!("GetSwapState answered {other:?}"),
    }
}

/// Polls the swap state until it is `wanted` (bounded, so a bug fails instead of hanging).
async fn wait_for_state(control: &mut Client, session: SessionId, wanted: SwapState) {
    for _ in 0..3000 {
        if swap_state(control, session).await.0 == wanted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("session {} never reached {wanted:?}", session.0);
}

async fn swap_out(control: &mut Client, session: SessionId) {
    control.call(Request::SwapOut { session }, &[]).await.ok();
}

/// Bytes that differ at every position and between sessions.
fn pattern(seed: u8, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8) ^ ((i >> 8) as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// Allocates `len` bytes and fills them with `pattern(seed, len)`.
async fn filled(c: &mut Client, seed: u8, len: u64) -> u64 {
    let address = c.alloc(len).await;
    c.write(address, &pattern(seed, len)).await;
    address
}

async fn assert_holds(c: &mut Client, address: u64, seed: u8, len: u64) {
    let r = c.read(address, len).await;
    assert!(r.deferred.is_empty(), "{:?}", r.deferred);
    let data = r.ok_data();
    assert!(
        data == pattern(seed, len),
        "the {len} bytes at 0x{address:x} changed"
    );
}

trait OkData {
    fn ok_data(self) -> Vec<u8>;
}

impl OkData for Response {
    fn ok_data(self) -> Vec<u8> {
        match self.result {
            Ok(_) => self.data,
            Err(e) => panic!("call failed: {e:?}"),
        }
    }
}

fn vadd(module: u64, n: u32) -> Request {
    Request::LaunchKernel {
        function: FunctionRef {
            module: ModuleId(module),
            index: 0,
        },
        grid: [n.div_ceil(256), 1, 1],
        block: [256, 1, 1],
        shared_bytes: 0,
        stream: None,
        attributes: Vec::new(),
    }
}

fn vadd_params(a: u64, b: u64, c: u64, n: u32) -> Vec<u8> {
    let mut params = Vec::new();
    for p in [a, b, c] {
        params.extend_from_slice(&p.to_le_bytes());
    }
    params.extend_from_slice(&n.to_le_bytes());
    params.extend_from_slice(&[0; 4]);
    params
}

#[tokio::test]
async fn an_idle_session_is_swapped_out_then_resumes_with_every_byte_and_runs_a_kernel() {
    let swap = SwapSettings {
        idle_timeout: Duration::from_millis(300),
        ..no_idle_swap("idle")
    };
    let w = start_worker("unix", swap_config(64 * MIB, swap)).await;
    let mut c = Client::connect(&w.address).await;
    let session = c.welcome.session;
    c.load_ptx(1, VECTOR_ADD_PTX).await;
    let n: u32 = 1 << 20;
    let bytes = u64::from(n) * 4;
    let a: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| (i % 777) as f32 * 0.5).collect();
    let (da, db, dc) = (
        c.alloc(bytes).await,
        c.alloc(bytes).await,
        c.alloc(bytes).await,
    );
    c.write(da, &f32s(&a)).await;
    c.write(db, &f32s(&b)).await;
    let extra = filled(&mut c, 7, 5 * MIB + 3).await;

    let mut ctl = control(&w).await;
    wait_for_state(&mut ctl, session, SwapState::Host).await;
    let (_, resident, swapped) = swap_state(&mut ctl, session).await;
    assert_eq!(resident, 0, "swapped-out memory is released");
    assert_eq!(swapped, 3 * bytes + 5 * MIB + 3);
    let Reply::WorkerStatus(status) = ctl.call(Request::GetWorkerStatus, &[]).await.ok() else {
        panic!("GetWorkerStatus answered something else")
    };
    assert_eq!(
        status.resident_bytes, 0,
        "the device budget shows the memory free"
    );
    assert!(status.host_swap_bytes >= swapped);
    let usage = status
        .sessions
        .iter()
        .find(|s| s.session == session)
        .unwrap();
    assert_eq!(
        (usage.state, usage.resident_bytes, usage.swapped_bytes),
        (SwapState::Host, 0, swapped)
    );
    assert!(status.recent_swaps.iter().any(|e| e.session == session
        && (e.from, e.to, e.bytes) == (SwapState::Hot, SwapState::Host, swapped)));

    // The next call swaps the session in first, at the same addresses.
    let r = c.read(da, bytes).await;
    assert_eq!(to_f32s(&r.ok_data()), a);
    assert_eq!(swap_state(&mut ctl, session).await.0, SwapState::Hot);
    assert_holds(&mut c, extra, 7, 5 * MIB + 3).await;
    let r = c.read(db, bytes).await;
    assert_eq!(to_f32s(&r.ok_data()), b);
    c.post(vadd(1, n), &vadd_params(da, db, dc, n)).await;
    let r = c.read(dc, bytes).await;
    assert!(r.deferred.is_empty(), "{:?}", r.deferred);
    let expected: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_eq!(to_f32s(&r.ok_data()), expected);
    assert!(
        w.worker
            .swap_status()
            .recent_events
            .iter()
            .any(|e| e.kind == EventKind::SwapIn && e.bytes == swapped)
    );
}

#[tokio::test]
async fn two_sessions_whose_quotas_exceed_the_device_memory_both_finish_correctly() {
    // Each session may use 32 MiB; the device has 48 MiB: both fit only through swap.
    let swap = SwapSettings {
        device_memory: 48 * MIB,
        ..no_idle_swap("oversubscribed")
    };
    let w = start_worker("unix", swap_config(32 * MIB, swap)).await;
    let mut ctl = control(&w).await;
    let mut first = Client::connect(&w.address).await;
    let mut second = Client::connect(&w.address).await;
    let a1 = filled(&mut first, 1, 16 * MIB).await;
    let a2 = filled(&mut first, 2, 16 * MIB).await;
    let b1 = filled(&mut second, 3, 16 * MIB).await;
    // No room left: the idle first session is evicted to make room.
    let b2 = filled(&mut second, 4, 16 * MIB).await;
    assert_eq!(
        swap_state(&mut ctl, first.welcome.session).await.0,
        SwapState::Host
    );
    for _ in 0..2 {
        assert_holds(&mut first, a1, 1, 16 * MIB).await;
        assert_holds(&mut first, a2, 2, 16 * MIB).await;
        assert_holds(&mut second, b1, 3, 16 * MIB).await;
        assert_holds(&mut second, b2, 4, 16 * MIB).await;
    }
    assert!(w.worker.swap_status().resident_bytes <= 48 * MIB);
}

#[tokio::test]
async fn an_allocation_that_does_not_fit_even_after_eviction_is_out_of_memory() {
    let swap = SwapSettings {
        device_memory: 48 * MIB,
        ..no_idle_swap("full")
    };
    let w = start_worker("unix", swap_config(64 * MIB, swap)).await;
    let mut c = Client::connect(&w.address).await;
    let kept = filled(&mut c, 9, 40 * MIB).await;
    let e = c
        .call(
            Request::MemAlloc {
                address: None,
                size: 16 * MIB,
            },
            &[],
        )
        .await
        .err();
    assert_eq!(e.code, CuResult::ERROR_OUT_OF_MEMORY);
    assert!(e.message.contains("device"), "{}", e.message);
    assert_holds(&mut c, kept, 9, 40 * MIB).await;
}

#[tokio::test]
async fn a_tiny_host_budget_sends_the_session_to_disk() {
    let dir = tempfile::tempdir().unwrap();
    let swap = SwapSettings {
        host_budget: MIB,
        disk_dir: Some(dir.path().to_path_buf()),
        ..no_idle_swap("tiny-host")
    };
    let w = start_worker("unix", swap_config(64 * MIB, swap)).await;
    let mut ctl = control(&w).await;
    let mut c = Client::connect(&w.address).await;
    let a = filled(&mut c, 5, 9 * MIB + 1).await;
    swap_out(&mut ctl, c.welcome.session).await;
    let (state, _, swapped) = swap_state(&mut ctl, c.welcome.session).await;
    assert_eq!((state, swapped), (SwapState::Disk, 9 * MIB + 1));
    assert!(w.worker.swap_status().store.disk_used >= 9 * MIB);
    assert_holds(&mut c, a, 5, 9 * MIB + 1).await;
}

#[tokio::test]
async fn sessions_idle_long_enough_are_demoted_to_a_cold_store_on_the_local_filesystem() {
    let disk = tempfile::tempdir().unwrap();
    let cold = tempfile::tempdir().unwrap();
    let swap = SwapSettings {
        disk_dir: Some(disk.path().to_path_buf()),
        cold_url: Some(format!("file://{}", cold.path().display())),
        demotion: gpufn_swap::DemotionPolicy {
            host_idle: Duration::ZERO,
            disk_idle: Some(Duration::ZERO),
            ..gpufn_swap::DemotionPolicy::default()
        },
        idle_timeout: Duration::from_millis(200),
        ..no_idle_swap("cold")
    };
    let w = start_worker("unix", swap_config(64 * MIB, swap)).await;
    let mut ctl = control(&w).await;
    let mut c = Client::connect(&w.address).await;
    let a = filled(&mut c, 6, 3 * MIB + 5).await;
    wait_for_state(&mut ctl, c.welcome.session, SwapState::Cold).await;
    assert!(
        files_under(cold.path()) > 0,
        "the cold store holds the session's objects"
    );
    assert_holds(&mut c, a, 6, 3 * MIB + 5).await;
}

#[tokio::test]
async fn a_corrupted_swap_file_fails_only_its_own_session_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let swap = SwapSettings {
        host_budget: 0,
        disk_dir: Some(dir.path().to_path_buf()),
        ..no_idle_swap("corrupt")
    };
    let w = start_worker("unix", swap_config(64 * MIB, swap)).await;
    let mut ctl = control(&w).await;
    let mut damaged = Client::connect(&w.address).await;
    let mut healthy = Client::connect(&w.address).await;
    let d = filled(&mut damaged, 11, 4 * MIB).await;
    let h = filled(&mut healthy, 12, 4 * MIB).await;
    swap_out(&mut ctl, damaged.welcome.session).await;
    swap_out(&mut ctl, healthy.welcome.session).await;
    assert_eq!(
        swap_state(&mut ctl, damaged.welcome.session).await.0,
        SwapState::Disk
    );

    let file = dir
        .path()
        .join("corrupt")
        .join(format!("{:016x}.data", damaged.welcome.session.0));
    let mut bytes = std::fs::read(&file).expect("the session's swap file");
    bytes[MIB as usize + 17] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();

    let e = damaged.read(d, 4 * MIB).await.err();
    assert_eq!(e.code, CuResult::ERROR_ILLEGAL_STATE);
    assert!(
        e.message.contains("could not be restored") && e.message.contains("lost"),
        "{}",
        e.message
    );
    // Every later call of that session reports the loss; the other session is untouched.
    let again = damaged.call(Request::MemGetInfo, &[]).await.err();
    assert_eq!(again.code, CuResult::ERROR_ILLEGAL_STATE);
    assert_holds(&mut healthy, h, 12, 4 * MIB).await;
}

#[tokio::test]
async fn a_restarted_worker_removes_stale_swap_files_of_its_previous_run() {
    let dir = tempfile::tempdir().unwrap();
    // What a crashed worker "restart" left, and a file of another worker on the same host.
    let stale = dir.path().join("restart").join("00000000000000ff.data");
    let other = dir.path().join("neighbour").join("0000000000000001.data");
    for file in [&stale, &other] {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, b"left behind").unwrap();
    }
    let swap = SwapSettings {
        disk_dir: Some(dir.path().to_path_buf()),
        ..no_idle_swap("restart")
    };
    let w = start_worker("unix", swap_config(16 * MIB, swap)).await;
    assert!(!stale.exists(), "the previous run's swap file is removed");
    assert!(other.exists(), "another worker's files are not touched");
    // And the worker works.
    let mut c = Client::connect(&w.address).await;
    let a = filled(&mut c, 3, MIB).await;
    assert_holds(&mut c, a, 3, MIB).await;
}

#[tokio::test]
async fn prewarm_swaps_a_session_in_before_its_next_call() {
    let w = start_worker("unix", swap_config(64 * MIB, no_idle_swap("prewarm"))).await;
    let mut ctl = control(&w).await;
    let mut c = Client::connect(&w.address).await;
    let session = c.welcome.session;
    let a = filled(&mut c, 8, 6 * MIB).await;
    swap_out(&mut ctl, session).await;
    assert_eq!(swap_state(&mut ctl, session).await.0, SwapState::Host);

    ctl.call(Request::Prewarm { session }, &[]).await.ok();
    let (state, resident, swapped) = swap_state(&mut ctl, session).await;
    assert_eq!((state, resident, swapped), (SwapState::Hot, 6 * MIB, 0));
    let swap_ins = |w: &TestWorker| {
        w.worker
            .swap_status()
            .recent_events
            .iter()
            .filter(|e| e.kind == EventKind::SwapIn)
            .count()
    };
    assert_eq!(swap_ins(&w), 1);
    assert_holds(&mut c, a, 8, 6 * MIB).await;
    assert_eq!(swap_ins(&w), 1, "the call found the session hot");
}

#[tokio::test]
async fn control_streams_need_no_credentials_only_without_a_gateway_and_name_unknown_sessions() {
    let w = start_worker("unix", swap_config(16 * MIB, no_idle_swap("ctl"))).await;
    let hello = Hello {
        role: Role::Gateway,
        credentials: Credentials::Token("x".into()),
        ..hello()
    };
    let refused = open(&w.address, hello).await.0.err().expect("refused");
    assert_eq!(refused.code, CuResult::ERROR_NOT_PERMITTED);
    let mut ctl = control(&w).await;
    let e = ctl
        .call(
            Request::Prewarm {
                session: SessionId(999),
            },
            &[],
        )
        .await
        .err();
    assert!(e.message.contains("999"), "{}", e.message);
}

fn files_under(dir: &Path) -> usize {
    let mut count = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                count += 1;
            }
        }
    }
    count
}
