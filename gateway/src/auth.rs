//! Tenant authentication: JWTs with algorithm, signature, audience, issuer and expiry always
//! checked, and scopes.
//!
//! HS256 tokens are signed with a secret the gateway generates on first start and keeps in
//! its state store (`gpufn token create` mints them). EdDSA and RS256 tokens minted elsewhere
//! are accepted when their public key is configured. Verified tokens are cached (moka) until
//! they expire, so a busy client costs one signature check per token, not per request.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{AuthConfig, KeyAlgorithm};
use crate::error::{ApiError, GatewayError};

/// What a token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Everything a tenant can do, for every tenant, plus tenants and quotas.
    Admin,
    /// Deploy functions.
    Deploy,
    /// Invoke functions.
    Invoke,
    /// Open, list and end the tenant's own GPU sessions.
    Session,
    /// Register a worker and heartbeat.
    Worker,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Admin,
        Scope::Deploy,
        Scope::Invoke,
        Scope::Session,
        Scope::Worker,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Deploy => "deploy",
            Scope::Invoke => "invoke",
            Scope::Session => "session",
            Scope::Worker => "worker",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.name() == s)
            .ok_or_else(|| {
                format!("unknown scope `{s}`; use admin, deploy, invoke, session or worker")
            })
    }
}

/// The claims of a tenant or worker token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The tenant (or, for worker tokens, a label).
    pub sub: String,
    pub aud: String,
    pub iss: String,
    /// Unix seconds.
    pub exp: u64,
    pub iat: u64,
    /// Space-separated scopes (OAuth style).
    pub scope: String,
}

/// Who made a request, after verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub scopes: Vec<Scope>,
    /// Unix seconds.
    pub expires_at: u64,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.scopes.contains(&Scope::Admin)
    }

    /// Passes if the token has `scope` (admin covers every scope but `worker`).
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        let ok = self.scopes.contains(&scope) || (scope != Scope::Worker && self.is_admin());
        if ok {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "missing_scope",
            format!(
                "this needs a token with the `{scope}` scope; the token has [{}]; create one with `gpufn token create --tenant {} --scope {scope}`",
                self.scopes
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.tenant
            ),
        ))
    }

    /// Passes if the principal may act for `tenant` (its own, or any for admins).
    pub fn require_tenant(&self, tenant: &str) -> Result<(), ApiError> {
        if self.is_admin() || self.tenant == tenant {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "other_tenant",
            format!(
                "tenant {} cannot act for tenant {tenant}; use a token of that tenant or an admin token",
                self.tenant
            ),
        ))
    }
}

/// Current unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh random HS256 secret, hex encoded.
pub fn generate_secret() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    // The system RNG failing is not recoverable; fall back to nothing would be insecure.
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random number generator failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Mints HS256 tokens with the gateway's secret.
#[derive(Clone)]
pub struct TokenMinter {
    key: EncodingKey,
    audience: String,
    issuer: String,
}

impl TokenMinter {
    pub fn new(secret: &str, config: &AuthConfig) -> Self {
        TokenMinter {
            key: EncodingKey::from_secret(secret.as_bytes()),
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
        }
    }

    /// A token for `tenant` with `scopes`, valid for `ttl`.
    pub fn mint(&self, tenant: &str, scopes: &[Scope], ttl: Duration) -> String {
        let now = unix_now();
        let claims = Claims {
            sub: tenant.to_owned(),
            aud: self.audience.clone(),
            iss: self.issuer.clone(),
            exp: now + ttl.as_secs(),
            iat: now,
            scope: scopes
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(" "),
        };
        // Encoding HS256 with a valid key cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .expect("HS256 signing cannot fail")
    }
}

/// Verifies tokens and caches the results.
pub struct Authenticator {
    secret: DecodingKey,
    ed_keys: Vec<DecodingKey>,
    rsa_keys: Vec<DecodingKey>,
    config: AuthConfig,
    cache: moka::future::Cache<String, Arc<Principal>>,
}

struct UntilExpiry;

impl moka::Expiry<String, Arc<Principal>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<Principal>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(
            value.expires_at.saturating_sub(unix_now()),
        ))
    }
}

impl Authenticator {
    pub fn new(secret: &str, config: &AuthConfig) -> Result<Self, GatewayError> {
        let mut ed_keys = Vec::new();
        let mut rsa_keys = Vec::new();
        for key in &config.public_keys {
            match key.algorithm {
                KeyAlgorithm::EdDsa => ed_keys.push(
                    DecodingKey::from_ed_pem(key.pem.as_bytes())
                        .map_err(|e| GatewayError::Key(format!("EdDSA public key: {e}")))?,
                ),
                KeyAlgorithm::Rs256 => rsa_keys.push(
                    DecodingKey::from_rsa_pem(key.pem.as_bytes())
                        .map_err(|e| GatewayError::Key(format!("RS256 public key: {e}")))?,
                ),
            }
        }
        Ok(Authenticator {
            secret: DecodingKey::from_secret(secret.as_bytes()),
            ed_keys,
            rsa_keys,
            config: config.clone(),
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .expire_after(UntilExpiry)
                .build(),
        })
    }

    /// Verifies an `Authorization` header value (`Bearer TOKEN`).
    pub async fn verify_header(&self, header: Option<&str>) -> Result<Arc<Principal>, ApiError> {
        let Some(value) = header else {
            return Err(unauthorized(
                "missing_token",
                "no token: send `Authorization: Bearer TOKEN` (create one with `gpufn token create`)",
            ));
        };
        let Some(token) = value.strip_prefix("Bearer ").map(str::trim) else {
            return Err(unauthorized(
                "malformed_token",
                "the Authorization header must be `Bearer TOKEN`",
            ));
        };
        self.verify(token).await
    }

    /// Verifies a token, from the cache when it was verified before.
    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, ApiError> {
        if let Some(principal) = self.cache.get(token).await {
            // The cache entry expires with the token, but the check is cheap and exact.
            if principal.expires_at + self.config.leeway.as_secs() >= unix_now() {
                return Ok(principal);
            }
        }
        let principal = Arc::new(self.verify_uncached(token)?);
        self.cache.insert(token.to_owned(), principal.clone()).await;
        Ok(principal)
    }

    fn verify_uncached(&self, token: &str) -> Result<Principal, ApiError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            unauthorized(
                "malformed_token",
                format!("the token is not a JWT ({e}); pass the token exactly as created"),
            )
        })?;
        let keys: Vec<&DecodingKey> = match header.alg {
            Algorithm::HS256 => vec![&self.secret],
            Algorithm::EdDSA => self.ed_keys.iter().collect(),
            Algorithm::RS256 => self.rsa_keys.iter().collect(),
            other => {
                return Err(unauthorized(
                    "unsupported_algorithm",
                    format!(
                        "tokens signed with {other:?} are not accepted; use HS256, EdDSA or RS256"
                    ),
                ));
            }
        };
        if keys.is_empty() {
            return Err(unauthorized(
                "unknown_key",
                format!(
                    "no {:?} public key is configured on this gateway; configure one or use a token from `gpufn token create`",
                    header.alg
                ),
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[&self.config.audience]);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = self.config.leeway.as_secs();
        let mut last = None;
        for key in keys {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return principal_from(data.claims),
                Err(e) => last = Some(e),
            }
        }
        let e = last.expect("at least one key was tried");
        Err(self.explain(e.kind()))
    }

    fn explain(&self, kind: &ErrorKind) -> ApiError {
        match kind {
            ErrorKind::ExpiredSignature => unauthorized(
                "token_expired",
                "the token has expired; create a new one with `gpufn token create`",
            ),
            ErrorKind::InvalidSignature => unauthorized(
                "invalid_signature",
                "the token's signature does not verify: it was not issued by this gateway (or was altered)",
            ),
            ErrorKind::InvalidAudience => unauthorized(
                "wrong_audience",
                format!(
                    "the token is for another audience; this gateway accepts aud `{}`",
                    self.config.audience
                ),
            ),
            ErrorKind::InvalidIssuer => unauthorized(
                "wrong_issuer",
                format!(
                    "the token has another issuer; this gateway accepts iss `{}`",
                    self.config.issuer
                ),
            ),
            ErrorKind::MissingRequiredClaim(claim) => unauthorized(
                "missing_claim",
                format!("the token lacks the `{claim}` claim"),
            ),
            ErrorKind::ImmatureSignature => {
                unauthorized("token_not_yet_valid", "the token is not valid yet")
            }
            ErrorKind::InvalidAlgorithm => unauthorized(
                "wrong_algorithm",
                "the token's algorithm does not match its key",
            ),
            other => unauthorized(
                "invalid_token",
                format!("the token is not valid ({other:?})"),
            ),
        }
    }
}

fn principal_from(claims: Claims) -> Result<Principal, ApiError> {
    let mut scopes = Vec::new();
    let mut seen = HashSet::new();
    for name in claims.scope.split_whitespace() {
        let scope: Scope = name
            .parse()
            .map_err(|e: String| unauthorized("invalid_scope", e))?;
        if seen.insert(scope) {
            scopes.push(scope);
        }
    }
    if claims.sub.is_empty() {
        return Err(unauthorized(
            "missing_claim",
            "the token's `sub` (tenant) is empty",
        ));
    }
    Ok(Principal {
        tenant: claims.sub,
        scopes,
        expires_at: claims.exp,
    })
}

fn unauthorized(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// Parses `30s`, `15m`, `12h`, `7d` or a plain number of seconds.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration `{text}`; use e.g. 30s, 15m, 12h or 7d"))?;
    let unit_s = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "invalid duration unit in `{text}`; use s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(unit_s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (TokenMinter, Authenticator) {
        let config = AuthConfig::default();
        (
            TokenMinter::new("secret", &config),
            Authenticator::new("secret", &config).unwrap(),
        )
    }

    #[tokio::test]
    async fn minted_tokens_verify_with_their_scopes() {
        let (minter, auth) = setup();
        let token = minter.mint(
            "acme",
            &[Scope::Session, Scope::Invoke],
            Duration::from_secs(60),
        );
        let p = auth.verify(&token).await.unwrap();
        assert_eq!(p.tenant, "acme");
        assert!(p.require(Scope::Session).is_ok());
        let err = p.require(Scope::Deploy).unwrap_err();
        assert_eq!(
            (err.status, err.code),
            (StatusCode::FORBIDDEN, "missing_scope")
        );
        // Cached: the second check still passes.
        assert!(auth.verify(&token).await.is_ok());
    }

    #[tokio::test]
    async fn forged_tokens_are_refused_with_a_reason() {
        let (_, auth) = setup();
        let forger = TokenMinter::new("other", &AuthConfig::default());
        let token = forger.mint("acme", &[Scope::Admin], Duration::from_secs(60));
        let err = auth.verify(&token).await.unwrap_err();
        assert_eq!(err.code, "invalid_signature");
        let err = auth.verify("not.a.jwt").await.unwrap_err();
        assert_eq!(err.code, "malformed_token");
    }

    #[test]
    fn ttls_parse() {
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_ttl("2y").is_err());
    }
}
