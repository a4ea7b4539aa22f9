//! Per-tenant quotas: live sessions, VRAM, and the rate of new sessions (token bucket).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::TenantId;
use crate::time::Millis;

/// Limits for one tenant; `None` means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantQuota {
    /// Most live sessions at once.
    pub max_sessions: Option<u32>,
    /// Most VRAM quota summed over live sessions (swapped out or not).
    pub max_vram_bytes: Option<u64>,
    /// Most new sessions per unit of time.
    pub rate: Option<RateLimit>,
}

impl TenantQuota {
    /// No limits.
    pub const UNLIMITED: TenantQuota = TenantQuota {
        max_sessions: None,
        max_vram_bytes: None,
        rate: None,
    };
}

/// A token bucket: `burst` sessions at once, refilled at `per_second` sessions per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Refill rate in sessions per second.
    pub per_second: u32,
    /// Bucket size: how many sessions may start back to back.
    pub burst: u32,
}

/// A tenant quota that a request would exceed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "quota", rename_all = "snake_case")]
pub enum QuotaExceeded {
    /// Too many live sessions.
    #[error(
        "tenant {tenant} already has {current} of its {limit} allowed sessions; end a session or ask an admin to raise the quota"
    )]
    Sessions {
        /// The tenant.
        tenant: TenantId,
        /// Its session limit.
        limit: u32,
        /// Its live sessions.
        current: u32,
    },
    /// Too much VRAM.
    #[error(
        "tenant {tenant} holds {used_bytes} of its {limit_bytes} bytes of VRAM quota and asked for {requested_bytes} more; request less VRAM, end a session, or ask an admin to raise the quota"
    )]
    Vram {
        /// The tenant.
        tenant: TenantId,
        /// Its VRAM limit.
        limit_bytes: u64,
        /// VRAM quota held by its live sessions.
        used_bytes: u64,
        /// VRAM asked for.
        requested_bytes: u64,
    },
    /// Sessions requested too fast.
    #[error(
        "tenant {tenant} may start {per_second} sessions per second (burst {burst}); retry after {}",
        retry_after_ms.map_or("never (the rate is zero)".to_owned(), |ms| format!("{ms} ms"))
    )]
    Rate {
        /// The tenant.
        tenant: TenantId,
        /// Its refill rate.
        per_second: u32,
        /// Its burst.
        burst: u32,
        /// When a token will be available, or `None` if the rate is zero.
        retry_after_ms: Option<u64>,
    },
}

/// A tenant's live usage, kept up to date as sessions come and go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TenantUsage {
    pub sessions: u32,
    pub vram_bytes: u64,
}

/// Checks the session and VRAM limits for one more session of `vram_bytes`.
pub(crate) fn check_usage(
    tenant: &TenantId,
    quota: &TenantQuota,
    usage: TenantUsage,
    vram_bytes: u64,
) -> Result<(), QuotaExceeded> {
    if let Some(limit) = quota.max_sessions
        && usage.sessions >= limit
    {
        return Err(QuotaExceeded::Sessions {
            tenant: tenant.clone(),
            limit,
            current: usage.sessions,
        });
    }
    if let Some(limit_bytes) = quota.max_vram_bytes
        && usage.vram_bytes.saturating_add(vram_bytes) > limit_bytes
    {
        return Err(QuotaExceeded::Vram {
            tenant: tenant.clone(),
            limit_bytes,
            used_bytes: usage.vram_bytes,
            requested_bytes: vram_bytes,
        });
    }
    Ok(())
}

/// Thousandths of a token per token, so refill stays exact in integers.
const MILLI: u64 = 1_000;

/// A token bucket computed from explicit times. Starts full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TokenBucket {
    milli_tokens: u64,
    updated: Millis,
}

impl TokenBucket {
    /// A full bucket for `limit` at `now`.
    pub fn full(limit: RateLimit, now: Millis) -> TokenBucket {
        TokenBucket {
            milli_tokens: u64::from(limit.burst) * MILLI,
            updated: now,
        }
    }

    /// The bucket as it will be at `now`.
    fn refilled(self, limit: RateLimit, now: Millis) -> TokenBucket {
        let elapsed_ms = now.0.saturating_sub(self.updated.0);
        // `per_second` tokens per second is exactly `per_second` milli-tokens per millisecond.
        let added = elapsed_ms.saturating_mul(u64::from(limit.per_second));
        let capacity = u64::from(limit.burst) * MILLI;
        TokenBucket {
            milli_tokens: self.milli_tokens.saturating_add(added).min(capacity),
            updated: self.updated.max(now),
        }
    }

    /// Whether a token is available at `now`; if not, how long until one is (`None`: never).
    pub fn check(self, limit: RateLimit, now: Millis) -> Result<(), Option<Duration>> {
        let bucket = self.refilled(limit, now);
        if bucket.milli_tokens >= MILLI {
            return Ok(());
        }
        if limit.per_second == 0 || limit.burst == 0 {
            return Err(None);
        }
        let missing = MILLI - bucket.milli_tokens;
        let wait_ms = missing.div_ceil(u64::from(limit.per_second));
        Err(Some(Duration::from_millis(wait_ms)))
    }

    /// Takes a token at `now`; the caller has checked that one is available.
    pub fn take(&mut self, limit: RateLimit, now: Millis) {
        let mut bucket = self.refilled(limit, now);
        bucket.milli_tokens = bucket.milli_tokens.saturating_sub(MILLI);
        *self = bucket;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        "acme".into()
    }

    #[test]
    fn unlimited_quota_admits_anything() {
        let usage = TenantUsage {
            sessions: u32::MAX,
            vram_bytes: u64::MAX,
        };
        assert_eq!(
            check_usage(&tenant(), &TenantQuota::UNLIMITED, usage, u64::MAX),
            Ok(())
        );
    }

    #[test]
    fn session_limit_is_inclusive() {
        let quota = TenantQuota {
            max_sessions: Some(2),
            ..TenantQuota::UNLIMITED
        };
        let one = TenantUsage {
            sessions: 1,
            vram_bytes: 0,
        };
        assert_eq!(check_usage(&tenant(), &quota, one, 0), Ok(()));
        let two = TenantUsage {
            sessions: 2,
            vram_bytes: 0,
        };
        let err = check_usage(&tenant(), &quota, two, 0).unwrap_err();
        assert_eq!(
            err,
            QuotaExceeded::Sessions {
                tenant: tenant(),
                limit: 2,
                current: 2
            }
        );
        assert!(err.to_string().contains("2 of its 2 allowed sessions"));
    }

    #[test]
    fn vram_limit_allows_an_exact_fit_and_no_more() {
        let quota = TenantQuota {
            max_vram_bytes: Some(100),
            ..TenantQuota::UNLIMITED
        };
        let usage = TenantUsage {
            sessions: 1,
            vram_bytes: 60,
        };
        assert_eq!(check_usage(&tenant(), &quota, usage, 40), Ok(()));
        let err = check_usage(&tenant(), &quota, usage, 41).unwrap_err();
        assert!(matches!(
            err,
            QuotaExceeded::Vram {
                requested_bytes: 41,
                used_bytes: 60,
                ..
            }
        ));
    }

    #[test]
    fn bucket_allows_a_burst_then_refills_at_the_rate() {
        let limit = RateLimit {
            per_second: 2,
            burst: 3,
        };
        let mut bucket = TokenBucket::full(limit, Millis(0));
        for _ in 0..3 {
            assert_eq!(bucket.check(limit, Millis(0)), Ok(()));
            bucket.take(limit, Millis(0));
        }
        // Two tokens per second: one token every 500 ms.
        assert_eq!(
            bucket.check(limit, Millis(0)),
            Err(Some(Duration::from_millis(500)))
        );
        assert_eq!(
            bucket.check(limit, Millis(499)),
            Err(Some(Duration::from_millis(1)))
        );
        assert_eq!(bucket.check(limit, Millis(500)), Ok(()));
        bucket.take(limit, Millis(500));
        assert!(bucket.check(limit, Millis(500)).is_err());
    }

    #[test]
    fn bucket_never_holds_more_than_the_burst() {
        let limit = RateLimit {
            per_second: 1000,
            burst: 2,
        };
        let mut bucket = TokenBucket::full(limit, Millis(0));
        let later = Millis(3_600_000);
        bucket.take(limit, later);
        bucket.take(limit, later);
        assert!(bucket.check(limit, later).is_err());
    }

    #[test]
    fn zero_rate_or_zero_burst_never_refills() {
        let limit = RateLimit {
            per_second: 0,
            burst: 1,
        };
        let mut bucket = TokenBucket::full(limit, Millis(0));
        bucket.take(limit, Millis(0));
        assert_eq!(bucket.check(limit, Millis(u64::MAX)), Err(None));
        let empty = RateLimit {
            per_second: 5,
            burst: 0,
        };
        assert_eq!(
            TokenBucket::full(empty, Millis(0)).check(empty, Millis(9_999)),
            Err(None)
        );
    }

    #[test]
    fn a_clock_stepping_back_neither_panics_nor_refills() {
        let limit = RateLimit {
            per_second: 1,
            burst: 1,
        };
        let mut bucket = TokenBucket::full(limit, Millis(10_000));
        bucket.take(limit, Millis(10_000));
        assert!(bucket.check(limit, Millis(5_000)).is_err());
        assert_eq!(bucket.check(limit, Millis(11_000)), Ok(()));
    }

    #[test]
    fn rate_error_names_the_wait() {
        let err = QuotaExceeded::Rate {
            tenant: tenant(),
            per_second: 1,
            burst: 1,
            retry_after_ms: Some(250),
        };
        assert!(err.to_string().contains("retry after 250 ms"));
        let json = serde_json::to_value(&err).unwrap();
        assert_eq!(json["quota"], "rate");
        assert_eq!(json["retry_after_ms"], 250);
    }
}
