//! Metering: turns the cumulative session reports in worker heartbeats into ledger deltas.
//!
//! Pure logic. Between two reports of a session, it was in the state of the earlier report:
//! * GPU-seconds: time resident (`Hot`) × the session's compute share (a best-effort
//!   session, share 0, is billed as a whole device: it may use all of it);
//! * VRAM GiB-seconds: resident bytes × time;
//! * bytes moved and swap events: the growth of the worker's cumulative counters.

use std::collections::HashMap;

use gpufn_proto::message::{SessionUsage, SwapState};

use crate::store::{LEDGER_BUCKET_S, UsageDelta};

const GIB: f64 = (1u64 << 30) as f64;

/// The last report of one session.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Unix milliseconds.
    pub at_ms: i64,
    pub state: SwapState,
    pub resident_bytes: u64,
    pub bytes_moved: u64,
    pub swap_events: u32,
}

/// Who a session bills.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Billing {
    pub tenant: String,
    pub function: Option<String>,
    pub compute_percent: u8,
}

/// Per-session last samples.
#[derive(Default, Debug)]
pub struct Meter {
    last: HashMap<u64, Sample>,
}

impl Meter {
    /// Records `usage` reported at `now_ms` and returns what it adds to the ledger. The first
    /// report of a session bills its counters (bytes, swaps) but no time.
    pub fn record(
        &mut self,
        usage: &SessionUsage,
        billing: &Billing,
        now_ms: i64,
        max_interval_ms: i64,
    ) -> UsageDelta {
        let current = Sample {
            at_ms: now_ms,
            state: usage.state,
            resident_bytes: usage.resident_bytes,
            bytes_moved: usage.bytes_moved,
            swap_events: usage.swap_events,
        };
        let previous = self.last.insert(usage.session.0, current);
        delta(previous, current, billing, usage.session.0, max_interval_ms)
    }

    /// Whether the session has been reported before.
    pub fn has_reported(&self, session: u64) -> bool {
        self.last.contains_key(&session)
    }

    /// Forgets an ended session.
    pub fn forget(&mut self, session: u64) -> Option<Sample> {
        self.last.remove(&session)
    }
}

/// The ledger delta between two samples. Gaps longer than `max_interval_ms` (a missed
/// heartbeat lease) are billed only up to that length.
pub fn delta(
    previous: Option<Sample>,
    current: Sample,
    billing: &Billing,
    session: u64,
    max_interval_ms: i64,
) -> UsageDelta {
    let (seconds, state, resident, bytes0, swaps0) = match previous {
        Some(p) => (
            (current.at_ms - p.at_ms).clamp(0, max_interval_ms) as f64 / 1000.0,
            p.state,
            p.resident_bytes,
            p.bytes_moved,
            p.swap_events,
        ),
        None => (0.0, current.state, 0, 0, 0),
    };
    let hot = state == SwapState::Hot;
    let share = match billing.compute_percent {
        0 => 1.0,
        p => f64::from(p.min(100)) / 100.0,
    };
    UsageDelta {
        session,
        tenant: billing.tenant.clone(),
        function: billing.function.clone(),
        bucket_start_s: bucket_of(current.at_ms),
        gpu_seconds: if hot { seconds * share } else { 0.0 },
        vram_gib_seconds: if hot {
            resident as f64 / GIB * seconds
        } else {
            0.0
        },
        bytes_moved: current.bytes_moved.saturating_sub(bytes0),
        swap_events: u64::from(current.swap_events.saturating_sub(swaps0)),
    }
}

/// The ledger bucket a unix-millisecond time falls in.
pub fn bucket_of(at_ms: i64) -> i64 {
    (at_ms / 1000).div_euclid(LEDGER_BUCKET_S) * LEDGER_BUCKET_S
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufn_proto::message::SessionId;

    fn usage(state: SwapState, resident: u64, bytes: u64, swaps: u32) -> SessionUsage {
        SessionUsage {
            session: SessionId(1),
            state,
            resident_bytes: resident,
            swapped_bytes: 0,
            idle_ms: 0,
            bytes_moved: bytes,
            swap_events: swaps,
        }
    }

    #[test]
    fn bills_resident_time_by_share_and_counters_by_growth() {
        let billing = Billing {
            tenant: "acme".into(),
            function: None,
            compute_percent: 50,
        };
        let mut meter = Meter::default();
        let first = meter.record(&usage(SwapState::Hot, 1 << 30, 100, 0), &billing, 0, 10_000);
        assert_eq!(first.gpu_seconds, 0.0);
        assert_eq!(first.bytes_moved, 100);
        let second = meter.record(&usage(SwapState::Host, 0, 150, 1), &billing, 2_000, 10_000);
        assert_eq!(second.gpu_seconds, 1.0); // 2 s × 50 %
        assert_eq!(second.vram_gib_seconds, 2.0); // 1 GiB × 2 s
        assert_eq!((second.bytes_moved, second.swap_events), (50, 1));
        // Swapped out for the next interval: no GPU time.
        let third = meter.record(&usage(SwapState::Host, 0, 150, 1), &billing, 60_000, 10_000);
        assert_eq!((third.gpu_seconds, third.vram_gib_seconds), (0.0, 0.0));
        assert_eq!(third.bucket_start_s, 60);
    }

    #[test]
    fn long_gaps_are_capped() {
        let billing = Billing {
            tenant: "acme".into(),
            function: None,
            compute_percent: 100,
        };
        let mut meter = Meter::default();
        meter.record(&usage(SwapState::Hot, 0, 0, 0), &billing, 0, 5_000);
        let d = meter.record(&usage(SwapState::Hot, 0, 0, 0), &billing, 60_000, 5_000);
        assert_eq!(d.gpu_seconds, 5.0);
    }
}
