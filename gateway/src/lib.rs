//! `gpufn-gateway`: the multi-tenant control plane.
//!
//! - [`http`]: the HTTP API (hyper + tower) — pool, sessions, usage, tenants, metrics;
//! - [`control`]: the control endpoint (QUIC, TCP or Unix socket) where stubs attach and
//!   workers register and heartbeat;
//! - [`auth`]: tenant JWTs and scopes; [`ticket`]: session tickets for workers;
//! - [`core`]: the shared state — the pool (placement decisions from `gpufn-pool`), live
//!   sessions, metering — and every operation on it;
//! - [`store`]: tenants, quotas, sessions and the usage ledger in SQLite;
//! - [`metering`], [`metrics`], [`influx`]: usage accounting and its exports.
//!
//! [`start`] runs a gateway in the current tokio runtime and returns its addresses.

pub mod auth;
pub mod client;
pub mod config;
pub mod control;
pub mod core;
pub mod error;
pub mod functions;
pub mod http;
pub mod influx;
pub mod manifest;
pub mod metering;
pub mod metrics;
pub mod ratelimit;
pub mod store;
pub mod ticket;
mod worker_link;

use std::net::SocketAddr;
use std::sync::Arc;

use gpufn_proto::transport::{Address, Listener, ServerOptions};
use tokio::task::JoinHandle;

pub use crate::config::GatewayConfig;
pub use crate::core::Gateway;
pub use crate::error::{ApiError, GatewayError};

/// A running gateway. Dropping it (or [`RunningGateway::shutdown`]) stops its tasks.
pub struct RunningGateway {
    pub gateway: Arc<Gateway>,
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// Where stubs and workers connect (with the QUIC certificate pin when QUIC).
    pub control_addr: Address,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningGateway {
    /// Stops serving. Requests in flight are cut off.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Opens the state and starts the HTTP API, the control endpoint, the pool's ticker and (if
/// configured) the InfluxDB push.
pub async fn start(config: GatewayConfig) -> Result<RunningGateway, GatewayError> {
    let control: Address = config.control_addr.parse()?;
    let gateway = Gateway::open(config)?;
    let http_listener = tokio::net::TcpListener::bind(gateway.config.http_addr)
        .await
        .map_err(|source| GatewayError::HttpBind {
            addr: gateway.config.http_addr,
            source,
        })?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| GatewayError::HttpBind {
            addr: gateway.config.http_addr,
            source,
        })?;
    let control_listener = Listener::bind(
        &control,
        &ServerOptions::dev_certificate_in(&gateway.config.data_dir),
    )
    .await?;
    let control_addr = control_listener.local_address().clone();

    let mut tasks = vec![
        tokio::spawn(http::serve(gateway.clone(), http_listener)),
        tokio::spawn(control::serve(gateway.clone(), control_listener)),
    ];
    let ticker = gateway.clone();
    tasks.push(tokio::spawn(async move {
        let mut interval = tokio::time::interval(ticker.config.tick_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            ticker.tick();
        }
    }));
    let functions = gateway.clone();
    tasks.push(tokio::spawn(async move {
        let mut interval = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            interval.tick().await;
            functions.functions.tick(&functions);
        }
    }));
    if let Some(influx) = gateway.config.influx.clone() {
        let pusher = gateway.clone();
        tasks.push(tokio::spawn(async move {
            let mut interval = tokio::time::interval(influx.interval);
            loop {
                interval.tick().await;
                if let Err(e) = pusher.influx.flush(&influx).await {
                    tracing::warn!("line-protocol push: {e}");
                }
            }
        }));
    }
    Ok(RunningGateway {
        gateway,
        http_addr,
        control_addr,
        tasks,
    })
}
