//! Time as a plain value: the pool never reads a clock, the caller passes `now` in.

use std::time::Duration;

use serde::Serialize;

/// A point in time, in milliseconds on the caller's monotonic clock.
///
/// The pool only compares and subtracts these values, so any origin works as long as the
/// caller uses the same clock for every call. A `now` earlier than a stored time is treated as
/// "no time has passed" rather than an error, so a clock that steps back never panics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    /// Time elapsed from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// `self` moved forward by `span`, saturating at the end of time.
    pub fn after(self, span: Duration) -> Millis {
        let span_ms = u64::try_from(span.as_millis()).unwrap_or(u64::MAX);
        Millis(self.0.saturating_add(span_ms))
    }
}

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_saturates_when_the_clock_steps_back() {
        assert_eq!(Millis(10).since(Millis(25)), Duration::ZERO);
        assert_eq!(Millis(25).since(Millis(10)), Duration::from_millis(15));
    }

    #[test]
    fn after_saturates_at_the_end_of_time() {
        assert_eq!(Millis(5).after(Duration::from_millis(7)), Millis(12));
        assert_eq!(
            Millis(u64::MAX - 1).after(Duration::from_secs(1)),
            Millis(u64::MAX)
        );
        assert_eq!(Millis(0).after(Duration::MAX), Millis(u64::MAX));
    }
}
