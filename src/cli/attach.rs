//! Attaching through the gateway (`gpufn run` with `GPUFN_GATEWAY` set): asks the gateway to
//! place a session and returns the worker's address and the session ticket the stub opens it
//! with (`GPUFN_WORKER`, `GPUFN_TICKET`).

use anyhow::{Context, bail};
use gpufn_proto::frame::{FrameKind, FrameLimits, FrameReader, FrameWriter};
use gpufn_proto::message::{Channel, Credentials, Hello, Qos, ResourceRequest, Role};
use gpufn_proto::transport::{Address, ClientOptions, connect};
use gpufn_proto::{PROTOCOL_VERSION, Reply, Request};

/// A placed session.
pub struct Attached {
    pub worker_address: String,
    pub ticket: String,
}

/// Places a session of `vram_bytes` for the tenant of `GPUFN_TOKEN` (QoS from `GPUFN_QOS`:
/// low, medium, high or critical; default medium).
pub async fn attach(gateway: &str, vram_bytes: u64) -> anyhow::Result<Attached> {
    let token = std::env::var("GPUFN_TOKEN").context(
        "GPUFN_GATEWAY is set but GPUFN_TOKEN is not: create a token with \
         `gpufn token create --tenant T --scope session`",
    )?;
    let qos = match std::env::var("GPUFN_QOS").as_deref() {
        Err(_) | Ok("") | Ok("medium") => Qos::Medium,
        Ok("low") => Qos::Low,
        Ok("high") => Qos::High,
        Ok("critical") => Qos::Critical,
        Ok(other) => bail!("GPUFN_QOS={other}: use low, medium, high or critical"),
    };
    let address: Address = gateway
        .parse()
        .with_context(|| format!("GPUFN_GATEWAY={gateway}"))?;
    let connection = connect(&address, &ClientOptions::default())
        .await
        .with_context(|| format!("cannot reach the gateway at {gateway} (GPUFN_GATEWAY)"))?;
    let (send, recv) = connection.open_stream().await?;
    let mut writer = FrameWriter::new(send);
    let mut reader = FrameReader::new(recv, FrameLimits::default());
    let hello = Request::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        role: Role::Cli,
        channel: Channel::Calls,
        credentials: Credentials::Token(token),
        session: None,
        client: format!("gpufn-run/{}", env!("CARGO_PKG_VERSION")),
    });
    let request = Request::Attach(ResourceRequest {
        vram_bytes,
        compute_percent: 0,
        qos,
        function: None,
    });
    for (id, message) in [(1u64, &hello), (2, &request)] {
        writer
            .write_request(FrameKind::Call, id, message, &[])
            .await?;
        writer.flush().await?;
        reader
            .next_frame()
            .await?
            .context("the gateway closed the connection")?;
        match reader.reply()?.result {
            Ok(Reply::Attached {
                session,
                worker_address,
                ticket,
                ..
            }) => {
                tracing::debug!(session = session.0, %worker_address, "the gateway placed the session");
                return Ok(Attached {
                    worker_address,
                    ticket,
                });
            }
            Ok(_) => {}
            Err(e) => bail!("the gateway at {gateway} refused: {}", e.message),
        }
    }
    bail!("the gateway at {gateway} did not answer the attach")
}
