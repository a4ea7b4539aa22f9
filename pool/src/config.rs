//! Pool policy knobs.

use std::time::Duration;

use crate::error::ConfigError;
use crate::placement::PlacementStrategy;
use crate::qos::PerQos;
use crate::quota::TenantQuota;

/// Policy for a [`crate::Pool`]. `PoolConfig::default()` matches the design defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// How to choose among devices that fit.
    pub strategy: PlacementStrategy,
    /// The VRAM quotas placed on a device may add up to this percentage of its memory
    /// (100: no overcommit). Swapped-out sessions make the excess usable; resident sessions
    /// always fit physical memory whatever this says. Default 200.
    pub vram_overcommit_percent: u32,
    /// A worker whose last heartbeat is older than this is removed and its sessions lost.
    /// Default 15 s (three missed 5 s heartbeats).
    pub lease_timeout: Duration,
    /// A resident session idle this long is swapped out; `None` keeps it resident.
    /// Default 10 s for every level.
    pub idle_timeout: PerQos<Option<Duration>>,
    /// A session must have been idle at least this long before a higher-QoS session may force
    /// it out, so work in progress is never interrupted. Default 1 s.
    pub reclaim_min_idle: Duration,
    /// A swapped-out *function* session idle this long is scaled to zero; `None` never.
    /// Default 5 min. Sessions without a function are never ended by the pool.
    pub scale_to_zero_after: Option<Duration>,
    /// Quota of tenants without their own. Default unlimited.
    pub default_quota: TenantQuota,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            strategy: PlacementStrategy::BinPack,
            vram_overcommit_percent: 200,
            lease_timeout: Duration::from_secs(15),
            idle_timeout: PerQos::uniform(Some(Duration::from_secs(10))),
            reclaim_min_idle: Duration::from_secs(1),
            scale_to_zero_after: Some(Duration::from_secs(300)),
            default_quota: TenantQuota::UNLIMITED,
        }
    }
}

impl PoolConfig {
    /// Checks that the pool can run with this configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vram_overcommit_percent < 100 {
            return Err(ConfigError::OvercommitBelowPhysical {
                percent: self.vram_overcommit_percent,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_undercommit_is_refused() {
        assert_eq!(PoolConfig::default().validate(), Ok(()));
        let config = PoolConfig {
            vram_overcommit_percent: 99,
            ..PoolConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("use 100 for no overcommit"));
    }
}
