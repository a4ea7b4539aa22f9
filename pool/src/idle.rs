//! Idle, scale-to-zero and prewarm decisions for single sessions.

use std::cmp::Reverse;

use crate::config::PoolConfig;
use crate::ids::{SessionId, TenantId};
use crate::session::{Session, SessionState};
use crate::time::Millis;

/// What to do with a session that has been idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IdleAction {
    /// Resident past its QoS level's idle timeout: swap it out.
    SwapOut,
    /// A function session swapped out past the scale-to-zero delay: end it.
    ScaleToZero,
}

/// The idle action due for `session` at `now`, if any.
pub(crate) fn idle_action(
    session: &Session,
    now: Millis,
    config: &PoolConfig,
) -> Option<IdleAction> {
    let idle_for = now.since(session.last_active);
    let own = session.idle.unwrap_or_default();
    match session.state {
        SessionState::Resident => own
            .swap_out_after
            .or(config.idle_timeout.get(session.qos))
            .filter(|timeout| idle_for >= *timeout)
            .map(|_| IdleAction::SwapOut),
        SessionState::SwappedOut if session.function.is_some() => own
            .end_after
            .or(config.scale_to_zero_after)
            .filter(|delay| idle_for >= *delay)
            .map(|_| IdleAction::ScaleToZero),
        _ => None,
    }
}

/// A function's sessions, sorted for a prewarm decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PrewarmCandidates {
    /// A session that is resident or already has memory reserved, if any.
    pub warm: Option<SessionId>,
    /// Swapped-out sessions, most recently active first (their data is likeliest still useful).
    pub swapped_out: Vec<SessionId>,
    /// A session whose swap-out has not finished, if any.
    pub swapping_out: Option<SessionId>,
}

/// Sorts the tenant's sessions of `function` for prewarm.
pub(crate) fn prewarm_candidates<'a>(
    sessions: impl Iterator<Item = &'a Session>,
    tenant: &TenantId,
    function: &str,
) -> PrewarmCandidates {
    let mut candidates = PrewarmCandidates::default();
    let mut swapped: Vec<&Session> = Vec::new();
    for session in sessions {
        if &session.tenant != tenant || session.function.as_deref() != Some(function) {
            continue;
        }
        match session.state {
            SessionState::Resident | SessionState::Waiting => {
                candidates.warm.get_or_insert(session.id);
            }
            SessionState::SwappingOut => {
                candidates.swapping_out.get_or_insert(session.id);
            }
            SessionState::SwappedOut => swapped.push(session),
        }
    }
    swapped.sort_by_key(|s| (Reverse(s.last_active), s.id));
    candidates.swapped_out = swapped.iter().map(|s| s.id).collect();
    candidates
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ids::DeviceRef;
    use crate::qos::{PerQos, Qos};
    use crate::session::IdleOverride;

    fn session(id: u64, state: SessionState, qos: Qos, last_active: u64) -> Session {
        Session {
            id: SessionId(id),
            tenant: "t".into(),
            function: Some("f".into()),
            vram_bytes: 1,
            compute_percent: 0,
            qos,
            device: DeviceRef {
                worker: "w".into(),
                index: 0,
            },
            state,
            created_at: Millis(0),
            last_active: Millis(last_active),
            idle: None,
            waiting_since: 0,
        }
    }

    fn config() -> PoolConfig {
        PoolConfig {
            idle_timeout: PerQos {
                low: Some(Duration::from_secs(5)),
                medium: Some(Duration::from_secs(10)),
                high: Some(Duration::from_secs(30)),
                critical: None,
            },
            scale_to_zero_after: Some(Duration::from_secs(60)),
            ..PoolConfig::default()
        }
    }

    #[test]
    fn resident_sessions_swap_out_after_their_level_timeout() {
        let c = config();
        let low = session(1, SessionState::Resident, Qos::Low, 0);
        assert_eq!(idle_action(&low, Millis(4_999), &c), None);
        assert_eq!(
            idle_action(&low, Millis(5_000), &c),
            Some(IdleAction::SwapOut)
        );
        let high = session(2, SessionState::Resident, Qos::High, 0);
        assert_eq!(idle_action(&high, Millis(29_999), &c), None);
        assert_eq!(
            idle_action(&high, Millis(30_000), &c),
            Some(IdleAction::SwapOut)
        );
        let critical = session(3, SessionState::Resident, Qos::Critical, 0);
        assert_eq!(idle_action(&critical, Millis(u64::MAX), &c), None);
    }

    #[test]
    fn only_swapped_out_function_sessions_scale_to_zero() {
        let c = config();
        let swapped = session(1, SessionState::SwappedOut, Qos::Low, 0);
        assert_eq!(idle_action(&swapped, Millis(59_999), &c), None);
        assert_eq!(
            idle_action(&swapped, Millis(60_000), &c),
            Some(IdleAction::ScaleToZero)
        );
        let mut interactive = swapped.clone();
        interactive.function = None;
        assert_eq!(idle_action(&interactive, Millis(u64::MAX), &c), None);
        let never = PoolConfig {
            scale_to_zero_after: None,
            ..config()
        };
        assert_eq!(idle_action(&swapped, Millis(u64::MAX), &never), None);
    }

    #[test]
    fn a_sessions_own_timeouts_replace_the_pools() {
        let c = config();
        let own = IdleOverride {
            swap_out_after: Some(Duration::from_secs(90)),
            end_after: Some(Duration::from_secs(600)),
        };
        // A low-QoS function session whose manifest says 90 s outlives the pool's 5 s…
        let mut resident = session(1, SessionState::Resident, Qos::Low, 0);
        resident.idle = Some(own);
        assert_eq!(idle_action(&resident, Millis(89_999), &c), None);
        assert_eq!(
            idle_action(&resident, Millis(90_000), &c),
            Some(IdleAction::SwapOut)
        );
        // …and a critical one, which the pool never swaps out, still goes after its own timeout.
        resident.qos = Qos::Critical;
        assert_eq!(
            idle_action(&resident, Millis(90_000), &c),
            Some(IdleAction::SwapOut)
        );
        let mut swapped = session(2, SessionState::SwappedOut, Qos::Low, 0);
        swapped.idle = Some(own);
        assert_eq!(idle_action(&swapped, Millis(599_999), &c), None);
        assert_eq!(
            idle_action(&swapped, Millis(600_000), &c),
            Some(IdleAction::ScaleToZero)
        );
        // An override naming only one timeout keeps the pool's other one.
        swapped.idle = Some(IdleOverride {
            swap_out_after: Some(Duration::from_secs(1)),
            end_after: None,
        });
        assert_eq!(
            idle_action(&swapped, Millis(60_000), &c),
            Some(IdleAction::ScaleToZero)
        );
    }

    #[test]
    fn waiting_and_swapping_sessions_have_no_idle_action() {
        let c = config();
        for state in [SessionState::Waiting, SessionState::SwappingOut] {
            assert_eq!(
                idle_action(&session(1, state, Qos::Low, 0), Millis(u64::MAX), &c),
                None
            );
        }
    }

    #[test]
    fn prewarm_prefers_warm_then_the_most_recently_active_swapped_session() {
        let all = [
            session(1, SessionState::SwappedOut, Qos::Low, 100),
            session(2, SessionState::SwappedOut, Qos::Low, 300),
            session(3, SessionState::SwappedOut, Qos::Low, 300),
            session(4, SessionState::SwappingOut, Qos::Low, 0),
        ];
        let c = prewarm_candidates(all.iter(), &"t".into(), "f");
        assert_eq!(c.warm, None);
        assert_eq!(c.swapped_out, [SessionId(2), SessionId(3), SessionId(1)]);
        assert_eq!(c.swapping_out, Some(SessionId(4)));
        let warm = [session(9, SessionState::Waiting, Qos::Low, 0)];
        assert_eq!(
            prewarm_candidates(warm.iter(), &"t".into(), "f").warm,
            Some(SessionId(9))
        );
    }

    #[test]
    fn prewarm_ignores_other_tenants_and_functions() {
        let mut other_tenant = session(1, SessionState::Resident, Qos::Low, 0);
        other_tenant.tenant = "u".into();
        let mut other_function = session(2, SessionState::Resident, Qos::Low, 0);
        other_function.function = Some("g".into());
        let c = prewarm_candidates([other_tenant, other_function].iter(), &"t".into(), "f");
        assert_eq!(c, PrewarmCandidates::default());
    }
}
