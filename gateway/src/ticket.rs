//! Session tickets: short-lived EdDSA JWTs the gateway signs and workers verify.
//!
//! A ticket binds one session to one worker: a worker accepts a session only with a ticket
//! whose `aud` names it and whose `session` is the session being opened. The gateway's public
//! key reaches workers in `Reply::Registered`. The same key signs *control tickets*
//! (`session: None`, scope `gateway`) the gateway presents when it connects to a worker to
//! swap out, prewarm or end sessions. The contract is written down in ARCHITECTURE.md,
//! "Gateway protocol".

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::auth::unix_now;
use crate::error::GatewayError;

/// `iss` of every ticket.
pub const TICKET_ISSUER: &str = "gpufn-gateway";

/// `aud` of a ticket for worker `worker_id`.
pub fn ticket_audience(worker_id: &str) -> String {
    format!("gpufn-worker:{worker_id}")
}

/// A ticket's claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketClaims {
    pub iss: String,
    /// `gpufn-worker:<worker id>`.
    pub aud: String,
    /// `session:<id>` or `gateway`.
    pub sub: String,
    /// Unix seconds.
    pub exp: u64,
    pub iat: u64,
    /// The worker the ticket is for.
    pub worker: String,
    /// The session it opens; `None` for a control ticket.
    pub session: Option<u64>,
    /// The session's tenant (empty for control tickets).
    pub tenant: String,
    /// The session's VRAM quota in bytes.
    pub vram_bytes: u64,
    /// The session's compute share in percent.
    pub compute_percent: u8,
    /// The session's QoS (`low`, `medium`, `high`, `critical`).
    pub qos: String,
}

/// Signs tickets with the gateway's Ed25519 key.
pub struct TicketIssuer {
    key: EncodingKey,
    public_pem: String,
    ttl: Duration,
}

impl TicketIssuer {
    /// A fresh Ed25519 key in PKCS#8 PEM.
    pub fn generate_key() -> String {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .expect("Ed25519 key generation cannot fail")
            .serialize_pem()
    }

    /// An issuer for the key `private_pem`, issuing tickets valid for `ttl`.
    pub fn new(private_pem: &str, ttl: Duration) -> Result<Self, GatewayError> {
        let pair = rcgen::KeyPair::from_pem(private_pem)
            .map_err(|e| GatewayError::Key(format!("ticket key: {e}")))?;
        let key = EncodingKey::from_ed_pem(private_pem.as_bytes())
            .map_err(|e| GatewayError::Key(format!("ticket key: {e}")))?;
        Ok(TicketIssuer {
            key,
            public_pem: pair.public_key_pem(),
            ttl,
        })
    }

    /// The public key workers verify tickets with (PEM).
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// A ticket opening `session` on `worker`.
    pub fn session_ticket(
        &self,
        worker: &str,
        session: u64,
        tenant: &str,
        vram_bytes: u64,
        compute_percent: u8,
        qos: &str,
    ) -> String {
        self.sign(TicketClaims {
            iss: TICKET_ISSUER.to_owned(),
            aud: ticket_audience(worker),
            sub: format!("session:{session}"),
            exp: unix_now() + self.ttl.as_secs().max(1),
            iat: unix_now(),
            worker: worker.to_owned(),
            session: Some(session),
            tenant: tenant.to_owned(),
            vram_bytes,
            compute_percent,
            qos: qos.to_owned(),
        })
    }

    /// A ticket the gateway presents to `worker` for control calls.
    pub fn control_ticket(&self, worker: &str) -> String {
        self.sign(TicketClaims {
            iss: TICKET_ISSUER.to_owned(),
            aud: ticket_audience(worker),
            sub: "gateway".to_owned(),
            exp: unix_now() + self.ttl.as_secs().max(1),
            iat: unix_now(),
            worker: worker.to_owned(),
            session: None,
            tenant: String::new(),
            vram_bytes: 0,
            compute_percent: 0,
            qos: String::new(),
        })
    }

    fn sign(&self, claims: TicketClaims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key)
            .expect("Ed25519 signing with a loaded key cannot fail")
    }
}

/// Verifies a ticket as a worker does (used by tests and by workers linking this crate).
pub fn verify_ticket(
    ticket: &str,
    public_pem: &str,
    worker: &str,
) -> Result<TicketClaims, jsonwebtoken::errors::Error> {
    let key = jsonwebtoken::DecodingKey::from_ed_pem(public_pem.as_bytes())?;
    let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[ticket_audience(worker)]);
    validation.set_issuer(&[TICKET_ISSUER]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    validation.leeway = 5;
    Ok(jsonwebtoken::decode::<TicketClaims>(ticket, &key, &validation)?.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_verify_only_for_their_worker() {
        let issuer =
            TicketIssuer::new(&TicketIssuer::generate_key(), Duration::from_secs(60)).unwrap();
        let ticket = issuer.session_ticket("w1", 7, "acme", 1 << 20, 50, "high");
        let claims = verify_ticket(&ticket, issuer.public_key_pem(), "w1").unwrap();
        assert_eq!(claims.session, Some(7));
        assert_eq!(claims.tenant, "acme");
        assert!(verify_ticket(&ticket, issuer.public_key_pem(), "w2").is_err());
        let other =
            TicketIssuer::new(&TicketIssuer::generate_key(), Duration::from_secs(60)).unwrap();
        assert!(verify_ticket(&ticket, other.public_key_pem(), "w1").is_err());
    }
}
