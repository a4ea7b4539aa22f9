//! QoS levels and the choice of which sessions to swap out to make room (reclaim).

use std::cmp::Reverse;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::SessionId;
use crate::time::Millis;

/// A session's quality of service. Ordered: `Low < Medium < High < Critical`.
///
/// A session may force *idle* sessions of a strictly lower level to swap out when its device
/// has no room; nothing can reclaim memory from a `Critical` session.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Qos {
    /// Batch work; first to be swapped out, may reclaim nothing.
    Low,
    /// The default.
    #[default]
    Medium,
    /// Interactive work.
    High,
    /// Never reclaimed by another session.
    Critical,
}

impl Qos {
    /// All levels, lowest first.
    pub const ALL: [Qos; 4] = [Qos::Low, Qos::Medium, Qos::High, Qos::Critical];

    /// Whether a session of this level may force a session of `other` to swap out.
    pub fn may_reclaim_from(self, other: Qos) -> bool {
        self > other
    }

    /// The level's lowercase name, as used in JSON and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Qos::Low => "low",
            Qos::Medium => "medium",
            Qos::High => "high",
            Qos::Critical => "critical",
        }
    }
}

impl fmt::Display for Qos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One value per QoS level (for example, an idle timeout per level).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PerQos<T> {
    /// Value for [`Qos::Low`].
    pub low: T,
    /// Value for [`Qos::Medium`].
    pub medium: T,
    /// Value for [`Qos::High`].
    pub high: T,
    /// Value for [`Qos::Critical`].
    pub critical: T,
}

impl<T: Copy> PerQos<T> {
    /// The same value for every level.
    pub fn uniform(value: T) -> Self {
        PerQos {
            low: value,
            medium: value,
            high: value,
            critical: value,
        }
    }

    /// The value for `qos`.
    pub fn get(&self, qos: Qos) -> T {
        match qos {
            Qos::Low => self.low,
            Qos::Medium => self.medium,
            Qos::High => self.high,
            Qos::Critical => self.critical,
        }
    }
}

/// A resident session that could be swapped out to make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VictimCandidate {
    pub id: SessionId,
    pub qos: Qos,
    pub last_active: Millis,
    pub vram_bytes: u64,
    pub compute_percent: u8,
}

/// Whether `candidate` may be forced out for a requester of level `requester` at `now`.
///
/// Only sessions of a strictly lower level that have been idle for at least `min_idle` qualify:
/// a session in the middle of work is never interrupted.
pub(crate) fn is_reclaimable(
    candidate: &VictimCandidate,
    requester: Qos,
    now: Millis,
    min_idle: Duration,
) -> bool {
    requester.may_reclaim_from(candidate.qos) && now.since(candidate.last_active) >= min_idle
}

/// Chooses victims until at least `need_bytes` of memory and `need_compute` percent of compute
/// are freed: sorts `candidates` into victim order and returns the bytes the victims free and
/// how many of the first candidates they are, or `None` if all together are not enough.
///
/// Order: lowest QoS first, then the longest idle, then the largest (fewer victims), then the
/// lowest id, so the choice is deterministic.
pub(crate) fn victim_prefix(
    candidates: &mut [VictimCandidate],
    need_bytes: u64,
    need_compute: u32,
) -> Option<(u64, usize)> {
    candidates.sort_unstable_by_key(|c| (c.qos, c.last_active, Reverse(c.vram_bytes), c.id));
    let mut freed_bytes = 0u64;
    let mut freed_compute = 0u32;
    let mut count = 0;
    for candidate in candidates.iter() {
        if freed_bytes >= need_bytes && freed_compute >= need_compute {
            break;
        }
        freed_bytes = freed_bytes.saturating_add(candidate.vram_bytes);
        freed_compute += u32::from(candidate.compute_percent);
        count += 1;
    }
    (freed_bytes >= need_bytes && freed_compute >= need_compute).then_some((freed_bytes, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select_victims(
        mut candidates: Vec<VictimCandidate>,
        need_bytes: u64,
        need_compute: u32,
    ) -> Option<Vec<VictimCandidate>> {
        let (_, count) = victim_prefix(&mut candidates, need_bytes, need_compute)?;
        candidates.truncate(count);
        Some(candidates)
    }

    fn candidate(id: u64, qos: Qos, last_active: u64, vram_bytes: u64) -> VictimCandidate {
        VictimCandidate {
            id: SessionId(id),
            qos,
            last_active: Millis(last_active),
            vram_bytes,
            compute_percent: 0,
        }
    }

    #[test]
    fn levels_are_ordered_and_only_strictly_higher_reclaims() {
        assert!(Qos::Low < Qos::Medium && Qos::Medium < Qos::High && Qos::High < Qos::Critical);
        assert!(Qos::High.may_reclaim_from(Qos::Low));
        assert!(!Qos::High.may_reclaim_from(Qos::High));
        assert!(!Qos::Low.may_reclaim_from(Qos::Low));
        for qos in Qos::ALL {
            assert!(!qos.may_reclaim_from(Qos::Critical));
        }
    }

    #[test]
    fn qos_uses_lowercase_names_in_json() {
        assert_eq!(
            serde_json::to_string(&Qos::Critical).unwrap(),
            "\"critical\""
        );
        let parsed: Qos = serde_json::from_str("\"low\"").unwrap();
        assert_eq!(parsed, Qos::Low);
    }

    #[test]
    fn per_qos_returns_the_value_of_each_level() {
        let table = PerQos {
            low: 1,
            medium: 2,
            high: 3,
            critical: 4,
        };
        let values: Vec<i32> = Qos::ALL.iter().map(|q| table.get(*q)).collect();
        assert_eq!(values, [1, 2, 3, 4]);
    }

    #[test]
    fn recently_active_or_equal_level_sessions_are_not_reclaimable() {
        let min_idle = Duration::from_secs(1);
        let c = candidate(1, Qos::Low, 1_000, 10);
        assert!(!is_reclaimable(&c, Qos::High, Millis(1_999), min_idle));
        assert!(is_reclaimable(&c, Qos::High, Millis(2_000), min_idle));
        assert!(!is_reclaimable(&c, Qos::Low, Millis(9_000), min_idle));
    }

    #[test]
    fn victims_are_lowest_qos_then_longest_idle() {
        let candidates = vec![
            candidate(1, Qos::Medium, 0, 10),
            candidate(2, Qos::Low, 500, 10),
            candidate(3, Qos::Low, 100, 10),
        ];
        let victims = select_victims(candidates, 15, 0).unwrap();
        let ids: Vec<u64> = victims.iter().map(|v| v.id.0).collect();
        assert_eq!(ids, [3, 2]);
    }

    #[test]
    fn ties_prefer_the_larger_then_the_lower_id() {
        let candidates = vec![
            candidate(9, Qos::Low, 0, 10),
            candidate(4, Qos::Low, 0, 10),
            candidate(7, Qos::Low, 0, 30),
        ];
        let victims = select_victims(candidates.clone(), 30, 0).unwrap();
        assert_eq!(victims.iter().map(|v| v.id.0).collect::<Vec<_>>(), [7]);
        let victims = select_victims(candidates, 35, 0).unwrap();
        assert_eq!(victims.iter().map(|v| v.id.0).collect::<Vec<_>>(), [7, 4]);
    }

    #[test]
    fn not_enough_candidates_means_no_victims() {
        let candidates = vec![candidate(1, Qos::Low, 0, 10), candidate(2, Qos::Low, 0, 10)];
        assert_eq!(select_victims(candidates, 21, 0), None);
    }

    #[test]
    fn nothing_needed_means_no_victims() {
        let candidates = vec![candidate(1, Qos::Low, 0, 10)];
        assert_eq!(select_victims(candidates, 0, 0), Some(vec![]));
    }

    #[test]
    fn compute_shortfall_also_selects_victims() {
        let mut a = candidate(1, Qos::Low, 0, 0);
        a.compute_percent = 30;
        let mut b = candidate(2, Qos::Low, 1, 0);
        b.compute_percent = 30;
        let victims = select_victims(vec![a, b], 0, 50).unwrap();
        assert_eq!(victims.len(), 2);
        assert_eq!(select_victims(vec![a, b], 0, 61), None);
    }
}
