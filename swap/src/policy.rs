//! Placement and demotion decisions: pure functions of sizes, budgets and ages, no I/O.
//!
//! - A swap-out goes to host RAM if it fits in the free host budget, else straight to disk.
//!   (Evicting older sessions first would cost the same disk writes but delay freeing the
//!   device; instead [`plan_demotions`] keeps `host_headroom` bytes free in the background.)
//! - Host sessions move to disk once idle for `host_idle`, or oldest first while the free
//!   host budget is below `host_headroom`.
//! - Disk sessions move to the cold tier once idle for `disk_idle`, or oldest first while the
//!   free disk budget is below `disk_headroom`.
//! - Each session moves at most one tier per plan; busy sessions are left alone.

use std::time::Duration;

use crate::types::{SessionId, Tier};

/// Age and pressure thresholds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemotionPolicy {
    /// Host-tier sessions idle this long move to disk.
    pub host_idle: Duration,
    /// Free host budget to keep for new swap-outs.
    pub host_headroom: u64,
    /// Disk-tier sessions idle this long move to the cold tier (`None`: only under pressure).
    pub disk_idle: Option<Duration>,
    /// Free disk budget to keep (only with a disk budget).
    pub disk_headroom: u64,
}

impl Default for DemotionPolicy {
    fn default() -> Self {
        Self {
            host_idle: Duration::from_secs(5 * 60),
            host_headroom: 0,
            disk_idle: Some(Duration::from_secs(60 * 60)),
            disk_headroom: 0,
        }
    }
}

/// Which tiers exist and how big they may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub host_budget: u64,
    pub disk_enabled: bool,
    /// `None`: unlimited (the filesystem's free space is the limit).
    pub disk_budget: Option<u64>,
    pub cold_enabled: bool,
}

/// Bytes in use (including reservations of swaps in flight).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub host: u64,
    pub disk: u64,
}

/// A stored session as the policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionView {
    pub session: SessionId,
    pub tier: Tier,
    /// Host memory the session occupies while in the host tier.
    pub host_bytes: u64,
    /// Disk space the session occupies while in the disk tier.
    pub disk_bytes: u64,
    /// Time since it was swapped out.
    pub age: Duration,
    /// An operation on it is in flight.
    pub busy: bool,
}

/// One demotion step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    pub session: SessionId,
    pub from: Tier,
    pub to: Tier,
}

/// Chooses the tier for a new swap-out, or says why there is no room.
pub fn place(
    limits: &Limits,
    usage: &Usage,
    host_bytes: u64,
    disk_bytes: u64,
) -> Result<Tier, String> {
    if usage.host.saturating_add(host_bytes) <= limits.host_budget {
        return Ok(Tier::Host);
    }
    if !limits.disk_enabled {
        return Err(format!(
            "the host budget has {} of {} bytes free and no disk tier is configured",
            limits.host_budget.saturating_sub(usage.host),
            limits.host_budget
        ));
    }
    match limits.disk_budget {
        Some(budget) if usage.disk.saturating_add(disk_bytes) > budget => Err(format!(
            "the host budget has {} bytes free and the disk budget {} of {budget} bytes",
            limits.host_budget.saturating_sub(usage.host),
            budget.saturating_sub(usage.disk)
        )),
        _ => Ok(Tier::Disk),
    }
}

/// The demotions to perform now, in order (disk→cold first, so host→disk moves find room).
pub fn plan_demotions(
    policy: &DemotionPolicy,
    limits: &Limits,
    usage: &Usage,
    sessions: &[SessionView],
) -> Vec<Move> {
    let mut moves = Vec::new();
    let mut host = usage.host;
    let mut disk = usage.disk;
    let oldest_first = |tier: Tier| {
        let mut v: Vec<&SessionView> = sessions
            .iter()
            .filter(|s| s.tier == tier && !s.busy)
            .collect();
        v.sort_by(|a, b| b.age.cmp(&a.age).then(a.session.cmp(&b.session)));
        v
    };

    if limits.disk_enabled && limits.cold_enabled {
        for s in oldest_first(Tier::Disk) {
            let idle = policy.disk_idle.is_some_and(|limit| s.age >= limit);
            let pressure = limits
                .disk_budget
                .is_some_and(|budget| budget.saturating_sub(disk) < policy.disk_headroom);
            if idle || pressure {
                moves.push(Move {
                    session: s.session,
                    from: Tier::Disk,
                    to: Tier::Cold,
                });
                disk = disk.saturating_sub(s.disk_bytes);
            }
        }
    }

    if limits.disk_enabled {
        for s in oldest_first(Tier::Host) {
            let idle = s.age >= policy.host_idle;
            let pressure = limits.host_budget.saturating_sub(host) < policy.host_headroom;
            let fits = limits
                .disk_budget
                .is_none_or(|budget| disk.saturating_add(s.disk_bytes) <= budget);
            if (idle || pressure) && fits {
                moves.push(Move {
                    session: s.session,
                    from: Tier::Host,
                    to: Tier::Disk,
                });
                host = host.saturating_sub(s.host_bytes);
                disk += s.disk_bytes;
            }
        }
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn limits() -> Limits {
        Limits {
            host_budget: 100 * MIB,
            disk_enabled: true,
            disk_budget: Some(1000 * MIB),
            cold_enabled: true,
        }
    }

    fn view(id: u64, tier: Tier, mib: u64, age_s: u64) -> SessionView {
        SessionView {
            session: SessionId(id),
            tier,
            host_bytes: mib * MIB,
            disk_bytes: mib * MIB,
            age: Duration::from_secs(age_s),
            busy: false,
        }
    }

    #[test]
    fn placement_prefers_host_then_disk() {
        let l = limits();
        assert_eq!(
            place(&l, &Usage { host: 0, disk: 0 }, 100 * MIB, 100 * MIB),
            Ok(Tier::Host)
        );
        assert_eq!(
            place(&l, &Usage { host: 1, disk: 0 }, 100 * MIB, 100 * MIB),
            Ok(Tier::Disk)
        );
        assert!(
            place(
                &l,
                &Usage {
                    host: 100 * MIB,
                    disk: 950 * MIB
                },
                MIB,
                51 * MIB
            )
            .is_err()
        );
    }

    #[test]
    fn placement_without_disk_fails_when_host_is_full() {
        let l = Limits {
            disk_enabled: false,
            ..limits()
        };
        let err = place(
            &l,
            &Usage {
                host: 90 * MIB,
                disk: 0,
            },
            20 * MIB,
            20 * MIB,
        )
        .unwrap_err();
        assert!(err.contains("no disk tier"), "{err}");
    }

    #[test]
    fn zero_byte_sessions_always_fit_the_host() {
        let l = Limits {
            host_budget: 0,
            ..limits()
        };
        assert_eq!(place(&l, &Usage::default(), 0, 0), Ok(Tier::Host));
    }

    #[test]
    fn idle_host_sessions_move_to_disk() {
        let p = DemotionPolicy {
            host_idle: Duration::from_secs(60),
            ..Default::default()
        };
        let s = [view(1, Tier::Host, 10, 61), view(2, Tier::Host, 10, 59)];
        let moves = plan_demotions(
            &p,
            &limits(),
            &Usage {
                host: 20 * MIB,
                disk: 0,
            },
            &s,
        );
        assert_eq!(
            moves,
            vec![Move {
                session: SessionId(1),
                from: Tier::Host,
                to: Tier::Disk
            }]
        );
    }

    #[test]
    fn pressure_demotes_oldest_first_until_headroom() {
        let p = DemotionPolicy {
            host_idle: Duration::from_secs(3600),
            host_headroom: 30 * MIB,
            ..Default::default()
        };
        let s = [
            view(1, Tier::Host, 40, 5),
            view(2, Tier::Host, 40, 9),
            view(3, Tier::Host, 10, 1),
        ];
        let moves = plan_demotions(
            &p,
            &limits(),
            &Usage {
                host: 90 * MIB,
                disk: 0,
            },
            &s,
        );
        // 10 MiB free < 30 MiB headroom: the oldest (2) goes, then 50 MiB are free.
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].session, SessionId(2));
    }

    #[test]
    fn busy_sessions_are_not_moved() {
        let p = DemotionPolicy {
            host_idle: Duration::ZERO,
            ..Default::default()
        };
        let mut v = view(1, Tier::Host, 10, 100);
        v.busy = true;
        assert!(
            plan_demotions(
                &p,
                &limits(),
                &Usage {
                    host: 10 * MIB,
                    disk: 0
                },
                &[v]
            )
            .is_empty()
        );
    }

    #[test]
    fn idle_disk_sessions_go_cold_only_with_a_cold_tier() {
        let p = DemotionPolicy {
            disk_idle: Some(Duration::from_secs(10)),
            ..Default::default()
        };
        let s = [view(1, Tier::Disk, 10, 11)];
        let usage = Usage {
            host: 0,
            disk: 10 * MIB,
        };
        assert_eq!(plan_demotions(&p, &limits(), &usage, &s)[0].to, Tier::Cold);
        let no_cold = Limits {
            cold_enabled: false,
            ..limits()
        };
        assert!(plan_demotions(&p, &no_cold, &usage, &s).is_empty());
    }

    #[test]
    fn host_to_disk_respects_the_disk_budget() {
        let p = DemotionPolicy {
            host_idle: Duration::ZERO,
            disk_idle: None,
            ..Default::default()
        };
        let l = Limits {
            disk_budget: Some(15 * MIB),
            cold_enabled: false,
            ..limits()
        };
        let s = [view(1, Tier::Host, 10, 5), view(2, Tier::Host, 10, 4)];
        let moves = plan_demotions(
            &p,
            &l,
            &Usage {
                host: 20 * MIB,
                disk: 0,
            },
            &s,
        );
        assert_eq!(moves.len(), 1, "only one of the two fits the disk budget");
    }

    #[test]
    fn no_disk_means_no_demotion() {
        let p = DemotionPolicy {
            host_idle: Duration::ZERO,
            ..Default::default()
        };
        let l = Limits {
            disk_enabled: false,
            ..limits()
        };
        assert!(
            plan_demotions(
                &p,
                &l,
                &Usage { host: MIB, disk: 0 },
                &[view(1, Tier::Host, 1, 9)]
            )
            .is_empty()
        );
    }
}
