//! Gateway → worker control calls (swap out, prewarm, end session).
//!
//! The gateway connects to a worker's data address like a stub does, but says
//! `Hello { role: Gateway, credentials: Ticket(control ticket) }`; each call opens its own
//! stream so control calls never wait behind one another. Connections are kept per worker.

use std::collections::HashMap;
use std::sync::Arc;

use gpufn_proto::frame::{FrameKind, FrameLimits, FrameReader, FrameWriter};
use gpufn_proto::message::{Channel, Credentials, Hello, Role};
use gpufn_proto::transport::{Address, ClientOptions, Connection, connect};
use gpufn_proto::{PROTOCOL_VERSION, Reply, Request};
use tokio::io::AsyncWriteExt;

use crate::core::Gateway;

#[derive(Default)]
pub struct WorkerLinks {
    connections: std::sync::Mutex<HashMap<String, Arc<Connection>>>,
}

impl WorkerLinks {
    /// Drops a worker's cached connection (it re-registered or was lost).
    pub fn forget(&self, worker: &str) {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(worker);
    }

    /// Sends `request` to `worker`; true when it answered with success. Failures are logged:
    /// heartbeats reconcile the state later.
    pub async fn call(&self, gateway: &Arc<Gateway>, worker: &str, request: Request) -> bool {
        match self.try_call(gateway, worker, &request).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("control call {request:?} to worker {worker} failed: {e}");
                self.forget(worker);
                false
            }
        }
    }

    async fn try_call(
        &self,
        gateway: &Arc<Gateway>,
        worker: &str,
        request: &Request,
    ) -> Result<(), String> {
        let connection = self.connection(gateway, worker).await?;
        let (send, recv) = connection.open_stream().await.map_err(|e| e.to_string())?;
        let mut writer = FrameWriter::new(send);
        let mut reader = FrameReader::new(recv, FrameLimits::default());
        let hello = Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            role: Role::Gateway,
            channel: Channel::Calls,
            credentials: Credentials::Ticket(gateway.tickets.control_ticket(worker)),
            session: None,
            client: format!("gpufn-gateway/{}", env!("CARGO_PKG_VERSION")),
        });
        for (id, message) in [(1u64, &hello), (2, request)] {
            writer
                .write_request(FrameKind::Call, id, message, &[])
                .await
                .map_err(|e| e.to_string())?;
            writer.flush().await.map_err(|e| e.to_string())?;
            let header = reader
                .next_frame()
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the worker closed the stream")?;
            if header.id != id {
                return Err(format!("reply id {} for call {id}", header.id));
            }
            let reply = reader.reply().map_err(|e| e.to_string())?;
            match reply.result {
                Ok(Reply::Welcome(_)) | Ok(Reply::Done) | Ok(_) => {}
                Err(e) => return Err(format!("{}: {}", e.code, e.message)),
            }
        }
        let mut send = writer.into_inner();
        let _ = send.shutdown().await;
        Ok(())
    }

    async fn connection(
        &self,
        gateway: &Arc<Gateway>,
        worker: &str,
    ) -> Result<Arc<Connection>, String> {
        if let Some(c) = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(worker)
        {
            return Ok(c.clone());
        }
        let address = gateway
            .pool_view()
            .workers
            .into_iter()
            .find(|w| w.id.0 == worker)
            .map(|w| w.address)
            .ok_or_else(|| format!("worker {worker} is not registered"))?;
        let address: Address = address
            .parse()
            .map_err(|e: gpufn_proto::transport::AddressParseError| e.to_string())?;
        let connection = Arc::new(
            connect(&address, &ClientOptions::default())
                .await
                .map_err(|e| e.to_string())?,
        );
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(worker.to_owned(), connection.clone());
        Ok(connection)
    }
}
