//! `GPUFN_LOG=debug` on the worker side: every executed request is logged with its result.
//! (Its own test binary: it installs a process-wide log subscriber.)

mod support;

use gpufn_proto::message::{Reply, Request};
use std::io::Write;
use std::sync::{Arc, Mutex};
use support::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn debug_log_shows_each_executed_request_with_its_result() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let w = start_worker("unix", config(1 << 20)).await;
    let mut c = Client::connect(&w.address).await;
    let a = c.alloc(64).await;
    assert_eq!(
        c.call(Request::MemFree { address: a }, &[]).await.ok(),
        Reply::Done
    );
    let e = c.call(Request::MemFree { address: a }, &[]).await.err();

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("MemFree")).collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].contains("executed") && lines[0].contains("Done"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("failed") && lines[1].contains("CUDA_ERROR_INVALID_VALUE"),
        "{}",
        lines[1]
    );
    assert!(lines[1].contains(&e.message), "{}", lines[1]);
    assert!(
        log.contains("MemAlloc") && log.contains("Address("),
        "{log}"
    );
}
