//! Per-QoS and per-session idle timeouts, and eviction by QoS then least recently used, on a
//! worker whose sessions come with gateway tickets (signed here with a test key, as the
//! gateway signs them). Swap state is observed through the worker's status API; the tests
//! assert order ("this one swapped out while that one is still hot"), never durations.

mod support;

use gpufn_proto::message::{Credentials, Hello, Qos, SessionId, SwapState};
use gpufn_worker::WorkerConfig;
use gpufn_worker::gateway_client::TicketVerifier;
use gpufn_worker::swap::SwapSettings;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::*;

const MIB: u64 = 1 << 20;
const WORKER_ID: &str = "qos-worker";

/// An Ed25519 key pair for the tests only (the gateway generates its own at start).
const TEST_PRIVATE_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIDGiA+d7INyuzmw8GHmS+Ey1VxUa9HCJRYvzsu/kv5Gb
-----END PRIVATE KEY-----
";
const TEST_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAVfCcjh3eulFbr7UOIJTSPXbsJX1MiPiWFlsrOFFkMf0=
-----END PUBLIC KEY-----
";

/// A session ticket's claims as the gateway writes them (`gateway/src/ticket.rs`); the two
/// optional claims are left out when `None`, as an older gateway's tickets lack them.
#[derive(Serialize)]
struct Claims {
    iss: &'static str,
    aud: String,
    sub: String,
    exp: u64,
    iat: u64,
    worker: &'static str,
    session: Option<u64>,
    tenant: &'static str,
    vram_bytes: u64,
    compute_percent: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    qos: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_timeout_ms: Option<u64>,
}

fn ticket(session: u64, qos: Option<&'static str>, idle_timeout_ms: Option<u64>) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = Claims {
        iss: "gpufn-gateway",
        aud: format!("gpufn-worker:{WORKER_ID}"),
        sub: format!("session:{session}"),
        exp: now + 60,
        iat: now,
        worker: WORKER_ID,
        session: Some(session),
        tenant: "acme",
        vram_bytes: 64 * MIB,
        compute_percent: 100,
        qos,
        idle_timeout_ms,
    };
    let key = jsonwebtoken::EncodingKey::from_ed_pem(TEST_PRIVATE_KEY.as_bytes()).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &claims,
        &key,
    )
    .unwrap()
}

/// A CPU worker that takes this file's tickets.
async fn worker(swap: SwapSettings) -> TestWorker {
    let config = WorkerConfig {
        swap: SwapSettings {
            worker_id: WORKER_ID.into(),
            ..swap
        },
        ..config(64 * MIB)
    };
    let w = start_worker("unix", config).await;
    let verifier = TicketVerifier::new(WORKER_ID, TEST_PUBLIC_KEY).unwrap();
    w.worker.use_gateway(Arc::new(verifier));
    w
}

/// Opens session `id` with a ticket and fills 1 MiB of it with the byte `id`; returns the
/// client and the address.
async fn session(
    w: &TestWorker,
    id: u64,
    qos: Option<&'static str>,
    own: Option<u64>,
) -> (Client, u64) {
    let mut client = session_without_data(w, id, qos, own).await;
    let address = client.alloc(MIB).await;
    client.write(address, &vec![id as u8; MIB as usize]).await;
    (client, address)
}

async fn session_without_data(
    w: &TestWorker,
    id: u64,
    qos: Option<&'static str>,
    own: Option<u64>,
) -> Client {
    let hello = Hello {
        credentials: Credentials::Ticket(ticket(id, qos, own)),
        ..hello()
    };
    let client = open(&w.address, hello).await.0.expect("ticket accepted");
    assert_eq!(
        client.welcome.session,
        SessionId(id),
        "the ticket names the session"
    );
    client
}

fn state(w: &TestWorker, id: u64) -> SwapState {
    status_of(w, id).state
}

fn status_of(w: &TestWorker, id: u64) -> gpufn_worker::swap::SessionSwapStatus {
    w.worker
        .swap_status()
        .sessions
        .into_iter()
        .find(|s| s.session == SessionId(id))
        .unwrap_or_else(|| panic!("session {id} is not open"))
}

/// Polls until session `id` is swapped out (bounded, so a bug fails instead of hanging).
async fn wait_swapped_out(w: &TestWorker, id: u64) {
    for _ in 0..3000 {
        if matches!(
            state(w, id),
            SwapState::Host | SwapState::Disk | SwapState::Cold
        ) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("session {id} was never swapped out");
}

#[tokio::test]
async fn each_session_swaps_out_after_its_own_qos_or_ticket_timeout() {
    let hour = Duration::from_secs(3600);
    let w = worker(SwapSettings {
        idle_timeout: hour,
        idle_timeout_by_qos: [(Qos::Low, Duration::from_millis(200))].into(),
        ..SwapSettings::default()
    })
    .await;
    let (mut low, low_address) = session(&w, 1, Some("low"), None).await;
    let _high = session(&w, 2, Some("high"), None).await;
    // A function's session: critical, but its manifest's idle timeout is short.
    let _function = session(&w, 3, Some("critical"), Some(300)).await;
    // A ticket of an older gateway: no QoS, no idle timeout.
    let _old = session(&w, 4, None, None).await;

    let expected = [
        (1, Qos::Low, Duration::from_millis(200)),
        (2, Qos::High, hour),
        (3, Qos::Critical, Duration::from_millis(300)),
        (4, Qos::Medium, hour),
    ];
    for (id, qos, timeout) in expected {
        let status = status_of(&w, id);
        assert_eq!(
            (status.qos, status.idle_timeout),
            (qos, timeout),
            "session {id}"
        );
    }

    wait_swapped_out(&w, 1).await;
    wait_swapped_out(&w, 3).await;
    assert_eq!(
        state(&w, 2),
        SwapState::Hot,
        "high QoS keeps its hour-long timeout"
    );
    assert_eq!(
        state(&w, 4),
        SwapState::Hot,
        "an old ticket is medium: an hour"
    );

    // The swapped-out low session resumes with its bytes.
    let data = low.read(low_address, MIB).await;
    assert!(data.result.is_ok(), "{:?}", data.result);
    assert!(
        data.data.iter().all(|&b| b == 1),
        "session 1's bytes came back"
    );
    assert_eq!(state(&w, 1), SwapState::Hot);
}

#[tokio::test]
async fn memory_pressure_evicts_the_lowest_qos_first_then_the_least_recently_used() {
    // Room for four sessions' 1 MiB each; nothing swaps by idling.
    let w = worker(SwapSettings {
        idle_timeout: Duration::from_secs(3600),
        device_memory: 4 * MIB,
        ..SwapSettings::default()
    })
    .await;
    // Opened (and last used) in this order: session 1 has been idle longest.
    let _s1 = session(&w, 1, Some("medium"), None).await;
    let _s2 = session(&w, 2, Some("high"), None).await;
    let _s3 = session(&w, 3, Some("low"), None).await;
    let _s4 = session(&w, 4, Some("medium"), None).await;
    let mut newcomer = session_without_data(&w, 5, Some("critical"), None).await;

    // Each new MiB evicts one idle session: the low one although it was used recently, then
    // the two medium ones, longest idle first, and the high one last.
    let mut evicted = Vec::new();
    for _ in 0..4 {
        newcomer.alloc(MIB).await;
        let swapped: Vec<u64> = (1..=4)
            .filter(|&id| state(&w, id) != SwapState::Hot && !evicted.contains(&id))
            .collect();
        assert_eq!(swapped.len(), 1, "one eviction per allocation: {swapped:?}");
        evicted.push(swapped[0]);
    }
    assert_eq!(evicted, vec![3, 1, 4, 2]);
}
