//! InfluxDB line protocol: three measurements, buffered and pushed over HTTP (`/write`,
//! accepted by InfluxDB 1.x/2.x compatibility and GreptimeDB).
//!
//! * `gpufn_device` — per device: memory, resident and claimed bytes, sessions, utilisation;
//! * `gpufn_session` — per session and heartbeat: GPU-seconds, VRAM GiB-seconds, bytes moved,
//!   swap events (the ledger deltas);
//! * `gpufn_scheduling` — placement, swap out/in, scale up/down, worker changes, with reasons.

use std::fmt::Write;
use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::config::InfluxConfig;

/// A field value.
pub enum Field<'a> {
    Int(i64),
    Float(f64),
    Str(&'a str),
}

/// Escapes a measurement name, tag key/value or field key.
fn escape_key(out: &mut String, s: &str) {
    for c in s.chars() {
        if matches!(c, ',' | '=' | ' ') {
            out.push('\\');
        }
        if c == '\n' {
            out.push_str("\\n");
            continue;
        }
        out.push(c);
    }
}

/// One line of line protocol. Tags with empty values are left out (the protocol forbids
/// them); timestamps are milliseconds (push with `precision=ms`).
pub fn line(
    measurement: &str,
    tags: &[(&str, &str)],
    fields: &[(&str, Field<'_>)],
    at_ms: i64,
) -> String {
    let mut out = String::with_capacity(128);
    escape_key(&mut out, measurement);
    for (k, v) in tags {
        if v.is_empty() {
            continue;
        }
        out.push(',');
        escape_key(&mut out, k);
        out.push('=');
        escape_key(&mut out, v);
    }
    for (i, (k, v)) in fields.iter().enumerate() {
        out.push(if i == 0 { ' ' } else { ',' });
        escape_key(&mut out, k);
        out.push('=');
        match v {
            Field::Int(n) => {
                let _ = write!(out, "{n}i");
            }
            Field::Float(x) if x.is_finite() => {
                let _ = write!(out, "{x:?}");
            }
            Field::Float(_) => out.push('0'),
            Field::Str(s) => {
                out.push('"');
                for c in s.chars() {
                    if matches!(c, '"' | '\\') {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    let _ = write!(out, " {at_ms}");
    out
}

/// Lines waiting to be pushed. Bounded: beyond `MAX_BUFFERED` the oldest are dropped (the
/// ledger, not the push, is the record of usage).
#[derive(Default)]
pub struct InfluxBuffer {
    lines: Mutex<Vec<String>>,
}

const MAX_BUFFERED: usize = 100_000;

impl InfluxBuffer {
    pub fn push(&self, line: String) {
        if let Ok(mut lines) = self.lines.lock() {
            if lines.len() >= MAX_BUFFERED {
                lines.remove(0);
            }
            lines.push(line);
        }
    }

    fn take(&self) -> Vec<String> {
        self.lines
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }

    fn put_back(&self, mut failed: Vec<String>) {
        if let Ok(mut lines) = self.lines.lock() {
            failed.append(&mut lines);
            failed.truncate(MAX_BUFFERED);
            *lines = failed;
        }
    }

    /// Pushes everything buffered. On failure the lines stay buffered for the next push.
    pub async fn flush(&self, config: &InfluxConfig) -> Result<usize, String> {
        let lines = self.take();
        if lines.is_empty() {
            return Ok(0);
        }
        let body = lines.join("\n");
        match post(config, body).await {
            Ok(()) => Ok(lines.len()),
            Err(e) => {
                self.put_back(lines);
                Err(e)
            }
        }
    }
}

async fn post(config: &InfluxConfig, body: String) -> Result<(), String> {
    let url = format!(
        "{}/write?db={}&precision=ms",
        config.url.trim_end_matches('/'),
        config.database
    );
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let request = http::Request::post(&url)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("invalid InfluxDB URL {url}: {e}"))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("cannot reach InfluxDB at {url}: {e}"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    Err(format!("InfluxDB refused the push ({status}): {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_escape_tags_and_strings() {
        let l = line(
            "gpufn_scheduling",
            &[
                ("event", "swap_out"),
                ("worker", "node 1,a"),
                ("function", ""),
            ],
            &[
                ("session", Field::Int(3)),
                ("reason", Field::Str("idle \"x\"")),
                ("gpu", Field::Float(0.5)),
            ],
            1000,
        );
        assert_eq!(
            l,
            r#"gpufn_scheduling,event=swap_out,worker=node\ 1\,a session=3i,reason="idle \"x\"",gpu=0.5 1000"#
        );
    }
}
