//! The gateway over real sockets: HTTP API, control endpoint, pool behaviour, auth, quotas,
//! tenant isolation, durability and overload.

mod support;

use std::time::Duration;

use gpufn_gateway::auth::{Claims, Scope, unix_now};
use gpufn_gateway::core::SECRET_HS256;
use gpufn_proto::message::SwapState;
use serde_json::json;
use support::*;

fn raw_token(secret: &str, claims: &Claims) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path()).await;
    let secret = g
        .gateway
        .store
        .secret_or_create(SECRET_HS256, String::new)
        .unwrap();
    let claims = |aud: &str, exp: u64, scope: &str| Claims {
        sub: "acme".into(),
        aud: aud.into(),
        iss: "gpufn".into(),
        exp,
        iat: unix_now(),
        scope: scope.into(),
    };
    let cases = [
        (None, 401, "missing_token"),
        (Some("garbage".to_owned()), 401, "malformed_token"),
        (
            Some(raw_token(
                "not-the-secret",
                &claims("gpufn", unix_now() + 600, "session"),
            )),
            401,
            "invalid_signature",
        ),
        (
            Some(raw_token(
                &secret,
                &claims("gpufn", unix_now() - 3600, "session"),
            )),
            401,
            "token_expired",
        ),
        (
            Some(raw_token(
                &secret,
                &claims("someone-else", unix_now() + 600, "session"),
            )),
            401,
            "wrong_audience",
        ),
        (
            Some(raw_token(
                &secret,
                &claims("gpufn", unix_now() + 600, "invoke"),
            )),
            403,
            "missing_scope",
        ),
    ];
    for (token, status, code) in cases {
        let (s, body) = http(&g, "GET", "/v1/sessions", token.as_deref(), None).await;
        assert_eq!(
            (s, body["error"]["code"].as_str().unwrap()),
            (status, code),
            "{body}"
        );
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    // A good token passes; a tenant token cannot manage tenants.
    let good = token(&g, "acme", &[Scope::Session]);
    assert_eq!(
        http(&g, "GET", "/v1/sessions", Some(&good), None).await.0,
        200
    );
    let (s, body) = http(&g, "GET", "/v1/tenants", Some(&good), None).await;
    assert_eq!(
        (s, body["error"]["code"].as_str().unwrap()),
        (403, "missing_scope")
    );
    // Open endpoints need no token.
    assert_eq!(http(&g, "GET", "/healthz", None, None).await.0, 200);
    assert_eq!(http(&g, "GET", "/readyz", None, None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_placed_reclaimed_and_survive_a_worker_loss() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path()).await;
    let mut w1 = ProtocolWorker::start(&g, "w1", GIB).await;
    let w2 = ProtocolWorker::start(&g, "w2", GIB).await;
    let acme = token(&g, "acme", &[Scope::Session]);
    let attach = |qos: &'static str| {
        let acme = acme.clone();
        let g = &g;
        async move {
            http(
                g,
                "POST",
                "/v1/sessions",
                Some(&acme),
                Some(json!({"vram_bytes": 800u64 << 20, "qos": qos, "compute_percent": 50})),
            )
            .await
        }
    };
    // Bin packing on empty equal devices: the lowest worker id first, then the other.
    let (s, a) = attach("low").await;
    assert_eq!(s, 201, "{a}");
    assert_eq!(a["worker"], "w1");
    let (_, b) = attach("low").await;
    assert_eq!(b["worker"], "w2");
    let (sa, sb) = (
        a["session"].as_u64().unwrap(),
        b["session"].as_u64().unwrap(),
    );
    w1.open_session(sa, 800 << 20);
    w2.open_session(sb, 800 << 20);
    // The ticket binds the session to its worker.
    let key = w1.ticket_key.lock().unwrap().clone();
    let claims =
        gpufn_gateway::ticket::verify_ticket(a["ticket"].as_str().unwrap(), &key, "w1").unwrap();
    assert_eq!(claims.session, Some(sa));
    assert!(
        gpufn_gateway::ticket::verify_ticket(a["ticket"].as_str().unwrap(), &key, "w2").is_err()
    );

    // Both devices are full: a low-QoS request is refused, a high-QoS one reclaims memory
    // from an idle low-QoS session.
    let (s, err) = attach("low").await;
    assert_eq!(
        (s, err["error"]["code"].as_str().unwrap()),
        (503, "no_capacity"),
        "{err}"
    );
    let (s, c) = attach("high").await;
    assert_eq!(s, 201, "{c}");
    let victim = if c["worker"] == "w1" { sa } else { sb };
    let victim_worker = if c["worker"] == "w1" { &w1 } else { &w2 };
    assert!(
        victim_worker
            .control_calls
            .lock()
            .unwrap()
            .iter()
            .any(|r| matches!(
                r,
                gpufn_proto::Request::SwapOut { session } if session.0 == victim
            ))
    );
    let (_, pool) = http(&g, "GET", "/v1/pool", Some(&acme), None).await;
    let state = pool["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == victim)
        .unwrap()["state"]
        .clone();
    assert_eq!(state, "swapped_out", "{pool}");

    // Kill w1: its sessions fail with a clear reason, it leaves the pool, new sessions go to w2.
    w1.kill();
    eventually("w1 leaves /v1/pool", || async {
        let (_, pool) = http(&g, "GET", "/v1/pool", Some(&acme), None).await;
        pool["workers"].as_array().unwrap().len() == 1
    })
    .await;
    let (_, detail) = http(&g, "GET", &format!("/v1/sessions/{sa}"), Some(&acme), None).await;
    assert_eq!(detail["state"], "ended");
    assert!(
        detail["end_reason"]
            .as_str()
            .unwrap()
            .contains("worker w1 was lost"),
        "{detail}"
    );
    // w2 holds a swapped-out session and a resident one; a small request still fits there.
    let (s, d) = http(
        &g,
        "POST",
        "/v1/sessions",
        Some(&acme),
        Some(json!({"vram_bytes": 100u64 << 20, "qos": "medium"})),
    )
    .await;
    assert_eq!((s, d["worker"].as_str()), (201, Some("w2")), "{d}");
    drop(w2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_own_sessions_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path()).await;
    let w = ProtocolWorker::start(&g, "w1", 4 * GIB).await;
    let a = token(&g, "tenant-a", &[Scope::Session]);
    let b = token(&g, "tenant-b", &[Scope::Session]);
    let body = json!({"vram_bytes": 1u64 << 20});
    let (_, sa) = http(&g, "POST", "/v1/sessions", Some(&a), Some(body.clone())).await;
    let (_, sb) = http(&g, "POST", "/v1/sessions", Some(&b), Some(body)).await;
    let (sa, sb) = (
        sa["session"].as_u64().unwrap(),
        sb["session"].as_u64().unwrap(),
    );
    w.open_session(sa, 1 << 20);
    w.open_session(sb, 1 << 20);
    w.sessions.lock().unwrap().get_mut(&sb).unwrap().bytes_moved = 12345;
    eventually("b's usage is metered", || async {
        let (_, u) = http(&g, "GET", "/v1/usage", Some(&b), None).await;
        u["usage"][0]["bytes_moved"] == 12345
    })
    .await;

    let (_, list) = http(&g, "GET", "/v1/sessions", Some(&a), None).await;
    let ids: Vec<u64> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![sa]);
    let (s, _) = http(&g, "GET", &format!("/v1/sessions/{sb}"), Some(&a), None).await;
    assert_eq!(s, 404);
    let (s, _) = http(&g, "DELETE", &format!("/v1/sessions/{sb}"), Some(&a), None).await;
    assert_eq!(s, 404);
    let (s, e) = http(&g, "GET", "/v1/usage?tenant=tenant-b", Some(&a), None).await;
    assert_eq!(
        (s, e["error"]["code"].as_str().unwrap()),
        (403, "other_tenant")
    );
    let (s, e) = http(&g, "GET", "/v1/sessions?tenant=tenant-b", Some(&a), None).await;
    assert_eq!(
        (s, e["error"]["code"].as_str().unwrap()),
        (403, "other_tenant")
    );
    // A's usage holds none of B's bytes; A's pool view shows only A's sessions.
    let (_, u) = http(&g, "GET", "/v1/usage", Some(&a), None).await;
    for row in u["usage"].as_array().unwrap() {
        assert_eq!(row["tenant"], "tenant-a");
        assert_eq!(row["bytes_moved"], 0);
    }
    let (_, pool) = http(&g, "GET", "/v1/pool", Some(&a), None).await;
    assert!(
        pool["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["tenant"] == "tenant-a")
    );
    // B still has its session; B may end it.
    let (s, _) = http(&g, "DELETE", &format!("/v1/sessions/{sb}"), Some(&b), None).await;
    assert_eq!(s, 200);
    let (_, d) = http(&g, "GET", &format!("/v1/sessions/{sb}"), Some(&b), None).await;
    assert_eq!(d["state"], "ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quota_requests_say_what_was_exceeded() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path()).await;
    let _w = ProtocolWorker::start(&g, "w1", 4 * GIB).await;
    let admin = token(&g, "ops", &[Scope::Admin]);
    let q = token(&g, "q", &[Scope::Session]);
    let (s, _) = http(
        &g,
        "PUT",
        "/v1/tenants/q",
        Some(&admin),
        Some(json!({"max_sessions": 1, "max_vram_bytes": GIB})),
    )
    .await;
    assert_eq!(s, 200);
    let small = json!({"vram_bytes": 1u64 << 20});
    let (s, first) = http(&g, "POST", "/v1/sessions", Some(&q), Some(small.clone())).await;
    assert_eq!(s, 201, "{first}");
    let (s, e) = http(&g, "POST", "/v1/sessions", Some(&q), Some(small)).await;
    assert_eq!(
        (s, e["error"]["code"].as_str().unwrap()),
        (403, "quota_exceeded"),
        "{e}"
    );
    assert_eq!(e["error"]["details"]["exceeded"]["quota"], "sessions");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 allowed sessions")
    );

    let (s, _) = http(
        &g,
        "PUT",
        "/v1/tenants/r",
        Some(&admin),
        Some(json!({"max_vram_bytes": GIB, "rate": {"per_second": 1, "burst": 1}})),
    )
    .await;
    assert_eq!(s, 200);
    let r = token(&g, "r", &[Scope::Session]);
    let (s, e) = http(
        &g,
        "POST",
        "/v1/sessions",
        Some(&r),
        Some(json!({"vram_bytes": 2 * GIB})),
    )
    .await;
    assert_eq!(
        (s, e["error"]["details"]["exceeded"]["quota"].as_str()),
        (403, Some("vram")),
        "{e}"
    );
    assert_eq!(
        http(
            &g,
            "POST",
            "/v1/sessions",
            Some(&r),
            Some(json!({"vram_bytes": 1u64 << 20}))
        )
        .await
        .0,
        201
    );
    let (s, e, retry) = http_full(
        g.http_addr,
        "POST",
        "/v1/sessions",
        Some(&r),
        Some(json!({"vram_bytes": 1u64 << 20})),
    )
    .await;
    assert_eq!(
        (s, e["error"]["details"]["exceeded"]["quota"].as_str()),
        (429, Some("rate")),
        "{e}"
    );
    assert!(retry.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_tenants_quotas_and_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let (session, bytes) = {
        let g = start(dir.path()).await;
        let w = ProtocolWorker::start(&g, "w1", 4 * GIB).await;
        let admin = token(&g, "ops", &[Scope::Admin]);
        http(
            &g,
            "PUT",
            "/v1/tenants/acme",
            Some(&admin),
            Some(json!({"max_sessions": 5})),
        )
        .await;
        let acme = token(&g, "acme", &[Scope::Session]);
        let (_, a) = http(
            &g,
            "POST",
            "/v1/sessions",
            Some(&acme),
            Some(json!({"vram_bytes": GIB})),
        )
        .await;
        let session = a["session"].as_u64().unwrap();
        w.open_session(session, GIB);
        w.sessions
            .lock()
            .unwrap()
            .get_mut(&session)
            .unwrap()
            .bytes_moved = 4096;
        eventually("usage reaches the ledger", || async {
            let (_, u) = http(
                &g,
                "GET",
                &format!("/v1/sessions/{session}"),
                Some(&acme),
                None,
            )
            .await;
            u["usage"]["bytes_moved"] == 4096 && u["usage"]["gpu_seconds"].as_f64().unwrap() > 0.0
        })
        .await;
        let (_, d) = http(
            &g,
            "GET",
            &format!("/v1/sessions/{session}"),
            Some(&acme),
            None,
        )
        .await;
        drop(w);
        g.shutdown();
        (session, d["usage"].clone())
    };
    let g = start(dir.path()).await;
    let admin = token(&g, "ops", &[Scope::Admin]);
    let (_, tenants) = http(&g, "GET", "/v1/tenants", Some(&admin), None).await;
    assert_eq!(tenants["tenants"][0]["name"], "acme");
    assert_eq!(tenants["tenants"][0]["quota"]["max_sessions"], 5);
    // A tenant reads its own quota; one without a quota of its own gets the default.
    let acme = token(&g, "acme", &[Scope::Session]);
    let (s, own) = http(&g, "GET", "/v1/tenants/acme", Some(&acme), None).await;
    assert_eq!(s, 200, "{own}");
    assert_eq!(
        (&own["quota"]["max_sessions"], &own["default_quota"]),
        (&json!(5), &json!(false))
    );
    let (_, other) = http(&g, "GET", "/v1/tenants/newco", Some(&admin), None).await;
    assert_eq!(other["default_quota"], true, "{other}");
    let (s, _) = http(&g, "GET", "/v1/tenants/newco", Some(&acme), None).await;
    assert_eq!(s, 403);
    let (_, usage) = http(&g, "GET", "/v1/usage?tenant=acme", Some(&admin), None).await;
    let row = &usage["usage"][0];
    // The ledger's totals equal what the session used, and survived the restart.
    assert_eq!(row["bytes_moved"], bytes["bytes_moved"]);
    assert_eq!(row["gpu_seconds"], bytes["gpu_seconds"]);
    assert_eq!(row["sessions"], 1);
    let (_, d) = http(
        &g,
        "GET",
        &format!("/v1/sessions/{session}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(d["state"], "ended");
    assert_eq!(d["end_reason"], "the gateway restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_gets_fast_refusals_and_the_gateway_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.limits.tenant_rate_per_second = 20;
    c.limits.tenant_burst = 20;
    c.limits.max_concurrent = 8;
    let g = gpufn_gateway::start(c).await.unwrap();
    let flood = token(&g, "flood", &[Scope::Session]);
    let mut tasks = Vec::new();
    for _ in 0..400 {
        let (addr, t) = (g.http_addr, flood.clone());
        tasks.push(tokio::spawn(async move {
            http_full(addr, "GET", "/v1/pool", Some(&t), None).await.0
        }));
    }
    let mut counts = std::collections::BTreeMap::new();
    for t in tasks {
        *counts.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    assert!(
        counts.keys().all(|s| [200, 429, 503].contains(s)),
        "{counts:?}"
    );
    assert!(counts.get(&200).copied().unwrap_or(0) >= 1, "{counts:?}");
    assert!(
        counts.get(&429).copied().unwrap_or(0) + counts.get(&503).copied().unwrap_or(0) >= 300,
        "{counts:?}"
    );
    // Another tenant within its limits is served.
    let calm = token(&g, "calm", &[Scope::Session]);
    assert_eq!(http(&g, "GET", "/v1/pool", Some(&calm), None).await.0, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(http(&g, "GET", "/v1/pool", Some(&flood), None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_openmetrics_text_with_usage_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path()).await;
    let w = ProtocolWorker::start(&g, "w1", GIB).await;
    let acme = token(&g, "acme", &[Scope::Session]);
    let (_, a) = http(
        &g,
        "POST",
        "/v1/sessions",
        Some(&acme),
        Some(json!({"vram_bytes": 1u64 << 20})),
    )
    .await;
    w.open_session(a["session"].as_u64().unwrap(), 1 << 20);
    w.sessions
        .lock()
        .unwrap()
        .values_mut()
        .for_each(|s| s.state = SwapState::Hot);
    eventually("usage metrics appear", || async {
        let (_, m) = http(&g, "GET", "/metrics", None, None).await;
        m.as_str()
            .unwrap()
            .contains("gpufn_tenant_gpu_seconds_total{tenant=\"acme\"}")
    })
    .await;
    let (s, m) = http(&g, "GET", "/metrics", None, None).await;
    let text = m.as_str().unwrap();
    assert_eq!(s, 200);
    assert!(
        text.contains("gpufn_scheduling_events_total{event=\"placement\",reason=\"fit\"} 1"),
        "{text}"
    );
    assert!(text.contains("gpufn_workers 1"), "{text}");
    assert!(
        text.contains("# TYPE gpufn_scheduling_events_total counter"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_never_opened_on_their_worker_end_after_the_ticket_expires() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.ticket_ttl = Duration::from_millis(200);
    let g = gpufn_gateway::start(c).await.unwrap();
    let _w = ProtocolWorker::start(&g, "w1", GIB).await;
    let acme = token(&g, "acme", &[Scope::Session]);
    let (_, a) = http(
        &g,
        "POST",
        "/v1/sessions",
        Some(&acme),
        Some(json!({"vram_bytes": GIB})),
    )
    .await;
    let session = a["session"].as_u64().unwrap();
    eventually("the unopened session ends", || async {
        let (_, d) = http(
            &g,
            "GET",
            &format!("/v1/sessions/{session}"),
            Some(&acme),
            None,
        )
        .await;
        d["state"] == "ended"
    })
    .await;
    let (_, d) = http(
        &g,
        "GET",
        &format!("/v1/sessions/{session}"),
        Some(&acme),
        None,
    )
    .await;
    assert!(
        d["end_reason"].as_str().unwrap().contains("never opened"),
        "{d}"
    );
    // Its memory is free again.
    let (s, _) = http(
        &g,
        "POST",
        "/v1/sessions",
        Some(&acme),
        Some(json!({"vram_bytes": GIB})),
    )
    .await;
    assert_eq!(s, 201);
}
