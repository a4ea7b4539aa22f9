//! The exports against the real tools: InfluxDB 1.x accepts the line-protocol push and answers
//! queries for all three measurements; `promtool check metrics` accepts `/metrics`.
//!
//! Needs a running InfluxDB and promtool, so it is ignored by default;
//! `scripts/test-observability.sh` installs both, starts InfluxDB and runs it with
//! `GPUFN_INFLUX_URL` set.

mod support;

use std::time::Duration;

use bytes::Bytes;
use gpufn_gateway::auth::Scope;
use gpufn_gateway::config::InfluxConfig;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use support::*;

async fn influx_query(url: &str, q: &str) -> Value {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let uri = format!(
        "{url}/query?db=gpufn&q={}",
        q.replace(' ', "%20")
            .replace('"', "%22")
            .replace('*', "%2A")
    );
    let resp = client
        .request(http::Request::get(uri).body(Full::default()).unwrap())
        .await
        .unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs InfluxDB and promtool: run scripts/test-observability.sh"]
async fn influxdb_accepts_the_push_and_promtool_the_metrics() {
    let url = std::env::var("GPUFN_INFLUX_URL")
        .expect("set GPUFN_INFLUX_URL (scripts/test-observability.sh does)");
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.influx = Some(InfluxConfig {
        url: url.clone(),
        database: "gpufn".into(),
        interval: Duration::from_millis(200),
    });
    let g = gpufn_gateway::start(c).await.unwrap();
    let w = ProtocolWorker::start(&g, "w1", 2 * GIB).await;
    let acme = token(&g, "acme", &[Scope::Session]);
    let (_, a) = http(
        &g,
        "POST",
        "/v1/sessions",
        Some(&acme),
        Some(json!({"vram_bytes": GIB, "compute_percent": 50})),
    )
    .await;
    let session = a["session"].as_u64().unwrap();
    w.open_session(session, GIB);
    w.sessions
        .lock()
        .unwrap()
        .get_mut(&session)
        .unwrap()
        .bytes_moved = 777;

    for measurement in ["gpufn_device", "gpufn_session", "gpufn_scheduling"] {
        eventually(&format!("{measurement} can be queried back"), || async {
            let v = influx_query(&url, &format!("SELECT * FROM {measurement}")).await;
            v["results"][0]["series"][0]["values"]
                .as_array()
                .is_some_and(|rows| !rows.is_empty())
        })
        .await;
    }
    let v = influx_query(
        &url,
        "SELECT sum(bytes_moved) FROM gpufn_session WHERE tenant = 'acme'",
    )
    .await;
    assert_eq!(v["results"][0]["series"][0]["values"][0][1], 777, "{v}");
    let v = influx_query(
        &url,
        "SELECT session FROM gpufn_scheduling WHERE event = 'placement'",
    )
    .await;
    assert_eq!(v["results"][0]["series"][0]["values"][0][1], session, "{v}");

    let promtool = std::env::var("GPUFN_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let (_, metrics) = http(&g, "GET", "/metrics", None, None).await;
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_str().unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        metrics.as_str().unwrap()
    );
}
