//! Session tickets: short-lived EdDSA JWTs the gateway signs and workers verify.
//!
//! A ticket binds one session to one worker: a worker accepts a session only with a ticket
//! whose `aud` names it and whose `session` is the session being opened. The gateway's public
//! key reaches workers in `Reply::Registered`. The same key signs *control tickets*
//! (`session: None`, scope `gateway`) the gateway presents when it connects to a worker to
//! swap out, prewarm or end sessions. The contract is written down in ARCHITECTURE.md,
//! "Gateway protocol".
//!
//! Compatibility: claims are only ever added, and an added claim is optional (absent in
//! tickets of older gateways, left out of the token when unset, ignored by older workers,
//! which do not deny unknown claims). `idle_timeout_ms` is such a claim.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use gpufn_proto::message::Qos;

use crate::auth::unix_now;
use crate::core::qos_name;
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
    /// The session's QoS (`low`, `medium`, `high`, `critical`): its idle timeout on the
    /// worker (unless `idle_timeout_ms` is set) and its rank when memory is reclaimed.
    pub qos: String,
    /// How long the session may stay idle before the worker swaps it out, overriding the
    /// worker's timeout for its QoS (e.g. a function's `scaling.gpu_idle_timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
}

/// What a session ticket grants (see [`TicketIssuer::grant`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionGrant {
    /// The worker the session was placed on.
    pub worker: String,
    pub session: u64,
    pub tenant: String,
    /// VRAM quota in bytes.
    pub vram_bytes: u64,
    /// Compute share in percent.
    pub compute_percent: u8,
    pub qos: Qos,
    /// Swap the session out after this much idle time instead of the worker's timeout for
    /// its QoS; the function runner sets it from the manifest's `scaling.gpu_idle_timeout`.
    pub idle_timeout: Option<Duration>,
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

    /// A ticket opening `session` on `worker`, idle timeout from the worker's QoS settings
    /// (`qos` as named by [`qos_name`]; see [`TicketIssuer::grant`] to set more).
    pub fn session_ticket(
        &self,
        worker: &str,
        session: u64,
        tenant: &str,
        vram_bytes: u64,
        compute_percent: u8,
        qos: &str,
    ) -> String {
        self.sign(self.session_claims(worker, session, tenant, vram_bytes, compute_percent, qos))
    }

    /// A ticket opening the granted session.
    pub fn grant(&self, grant: &SessionGrant) -> String {
        let mut claims = self.session_claims(
            &grant.worker,
            grant.session,
            &grant.tenant,
            grant.vram_bytes,
            grant.compute_percent,
            qos_name(grant.qos),
        );
        claims.idle_timeout_ms = grant
            .idle_timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        self.sign(claims)
    }

    fn session_claims(
        &self,
        worker: &str,
        session: u64,
        tenant: &str,
        vram_bytes: u64,
        compute_percent: u8,
        qos: &str,
    ) -> TicketClaims {
        TicketClaims {
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
            idle_timeout_ms: None,
        }
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
            idle_timeout_ms: None,
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

    fn issuer() -> TicketIssuer {
        TicketIssuer::new(&TicketIssuer::generate_key(), Duration::from_secs(60)).unwrap()
    }

    fn grant(idle_timeout: Option<Duration>) -> SessionGrant {
        SessionGrant {
            worker: "w1".into(),
            session: 9,
            tenant: "acme".into(),
            vram_bytes: 1 << 30,
            compute_percent: 100,
            qos: Qos::Low,
            idle_timeout,
        }
    }

    /// Every claim of a ticket, as any reader of the token sees it.
    fn payload(issuer: &TicketIssuer, ticket: &str) -> serde_json::Value {
        let key =
            jsonwebtoken::DecodingKey::from_ed_pem(issuer.public_key_pem().as_bytes()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[ticket_audience("w1")]);
        jsonwebtoken::decode::<serde_json::Value>(ticket, &key, &validation)
            .unwrap()
            .claims
    }

    #[test]
    fn a_grant_carries_its_qos_and_idle_timeout_to_the_worker() {
        let issuer = issuer();
        let ticket = issuer.grant(&grant(Some(Duration::from_millis(1500))));
        let claims = verify_ticket(&ticket, issuer.public_key_pem(), "w1").unwrap();
        assert_eq!(claims.qos, "low");
        assert_eq!(claims.idle_timeout_ms, Some(1500));
        assert_eq!(claims.session, Some(9));
        assert_eq!(claims.sub, "session:9");
    }

    #[test]
    fn without_an_idle_timeout_the_ticket_has_exactly_the_old_claims() {
        let issuer = issuer();
        for ticket in [
            issuer.grant(&grant(None)),
            issuer.session_ticket("w1", 9, "acme", 1 << 30, 100, "low"),
            issuer.control_ticket("w1"),
        ] {
            let payload = payload(&issuer, &ticket);
            assert!(payload.get("idle_timeout_ms").is_none(), "{payload}");
            let claims = verify_ticket(&ticket, issuer.public_key_pem(), "w1").unwrap();
            assert_eq!(claims.idle_timeout_ms, None);
        }
    }

    #[test]
    fn tickets_of_an_older_gateway_still_verify() {
        let issuer = issuer();
        // Claims exactly as gateways before `idle_timeout_ms` wrote them.
        let old = serde_json::json!({
            "iss": TICKET_ISSUER, "aud": ticket_audience("w1"), "sub": "session:3",
            "exp": unix_now() + 60, "iat": unix_now(), "worker": "w1", "session": 3,
            "tenant": "acme", "vram_bytes": 1024, "compute_percent": 50, "qos": "high",
        });
        let ticket =
            jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &old, &issuer.key).unwrap();
        let claims = verify_ticket(&ticket, issuer.public_key_pem(), "w1").unwrap();
        assert_eq!((claims.session, claims.qos.as_str()), (Some(3), "high"));
        assert_eq!(claims.idle_timeout_ms, None);
    }

    #[test]
    fn an_older_worker_reads_a_ticket_with_an_idle_timeout() {
        /// The claims a worker from before `idle_timeout_ms` decodes (no unknown-field denial).
        #[derive(Deserialize)]
        struct OldWorkerClaims {
            session: Option<u64>,
            vram_bytes: u64,
        }
        let issuer = issuer();
        let ticket = issuer.grant(&grant(Some(Duration::from_secs(90))));
        let key =
            jsonwebtoken::DecodingKey::from_ed_pem(issuer.public_key_pem().as_bytes()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[ticket_audience("w1")]);
        let old = jsonwebtoken::decode::<OldWorkerClaims>(&ticket, &key, &validation)
            .unwrap()
            .claims;
        assert_eq!((old.session, old.vram_bytes), (Some(9), 1 << 30));
    }
}
