//! Wall-clock instants as plain numbers.
//!
//! Probe results carry the prober's wall-clock timestamp, so the core works in
//! milliseconds since the Unix epoch rather than `Instant` (which is meaningless
//! across machines). The caller reads the clock; the core only compares numbers.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, as stamped by a prober or read by the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// How long before `now` this instant was; zero if it lies in the future.
    pub fn age_at(self, now: UnixMillis) -> Duration {
        Duration::from_millis(now.0.saturating_sub(self.0))
    }

    /// How far this instant lies after `now`; zero if it is not in the future.
    pub fn ahead_of(self, now: UnixMillis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(now.0))
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(duration_millis(d)))
    }

    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(duration_millis(d)))
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// Whole milliseconds in `d`, saturating at `u64::MAX` (about 584 million years).
pub(crate) fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let t = UnixMillis(1_000);
        assert_eq!(t.age_at(UnixMillis(1_500)), Duration::from_millis(500));
        assert_eq!(t.age_at(UnixMillis(500)), Duration::ZERO);
        assert_eq!(t.ahead_of(UnixMillis(400)), Duration::from_millis(600));
        assert_eq!(t.ahead_of(UnixMillis(4_000)), Duration::ZERO);
        assert_eq!(t.saturating_sub(Duration::from_secs(5)), UnixMillis(0));
        assert_eq!(
            UnixMillis(u64::MAX).saturating_add(Duration::from_secs(1)),
            UnixMillis(u64::MAX)
        );
        assert_eq!(duration_millis(Duration::MAX), u64::MAX);
    }
}
