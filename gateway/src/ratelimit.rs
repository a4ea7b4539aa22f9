//! Per-tenant HTTP rate limits: one token bucket per tenant.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// A keyed token bucket: `rate` tokens per second, at most `burst` saved up.
pub struct TenantRateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl TenantRateLimiter {
    pub fn new(rate_per_second: u32, burst: u32) -> Self {
        TenantRateLimiter {
            rate: f64::from(rate_per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `tenant`, or says how many seconds until one is available.
    pub fn check(&self, tenant: &str) -> Result<(), u64> {
        self.check_at(tenant, Instant::now())
    }

    fn check_at(&self, tenant: &str, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        // Look up before inserting: the tenant's name is copied only for its first request.
        if !buckets.contains_key(tenant) {
            buckets.insert(tenant.to_owned(), (self.burst, now));
        }
        let Some((tokens, last)) = buckets.get_mut(tenant) else {
            return Ok(()); // Inserted just above.
        };
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
        if self.rate <= 0.0 {
            return Err(u64::MAX);
        }
        Err(((1.0 - *tokens) / self.rate).ceil().max(1.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_are_per_tenant_and_refill() {
        let limiter = TenantRateLimiter::new(1, 2);
        let t0 = Instant::now();
        assert!(limiter.check_at("a", t0).is_ok());
        assert!(limiter.check_at("a", t0).is_ok());
        assert_eq!(limiter.check_at("a", t0), Err(1));
        assert!(limiter.check_at("b", t0).is_ok());
        assert!(limiter.check_at("a", t0 + Duration::from_secs(1)).is_ok());
    }
}
