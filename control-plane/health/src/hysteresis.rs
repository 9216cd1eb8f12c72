//! Rise/fall hysteresis for one (PoP, endpoint, prober), plus its recent results.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::probe::{FailureClass, ProbeOutcome};
use crate::time::UnixMillis;

/// UP, DOWN or UNKNOWN: what one prober believes about one endpoint (its
/// hysteresis state), what it believes about a whole PoP, or what a region says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reachability {
    /// Not enough evidence: at start, after a gap in the results, or mixed views.
    #[default]
    Unknown,
    Up,
    Down,
}

impl fmt::Display for Reachability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reachability::Unknown => "UNKNOWN",
            Reachability::Up => "UP",
            Reachability::Down => "DOWN",
        })
    }
}

/// One result as kept for `explain`. Small and `Copy` on purpose: every result
/// passes through here on the ingest hot path; the failure detail text is kept once
/// per track (the newest failure's), not per result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Recent {
    pub observed_at: UnixMillis,
    pub success: bool,
    pub latency: Duration,
    pub class: FailureClass,
    /// False for a result that arrived after a newer one and so did not drive the
    /// hysteresis.
    pub applied: bool,
}

impl Recent {
    pub fn new(observed_at: UnixMillis, outcome: &ProbeOutcome) -> Self {
        Recent {
            observed_at,
            success: outcome.success,
            latency: outcome.latency,
            class: outcome.class,
            applied: true,
        }
    }
}

/// Hysteresis state and recent results of one (PoP, endpoint, prober).
#[derive(Clone, Debug, Default)]
pub(crate) struct Track {
    pub state: Reachability,
    pub successes: u32,
    pub failures: u32,
    /// The newest result applied so far; older arrivals only enter `recent`.
    pub last_applied: Option<UnixMillis>,
    /// Sorted by `observed_at`, oldest first, at most `history` long.
    pub recent: VecDeque<Recent>,
    /// The detail text of the newest failure that carried one, and when it was
    /// observed.
    pub failure_detail: Option<(UnixMillis, Box<str>)>,
}

/// What [`Track::record`] did with a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Drove the hysteresis; `transitioned` says whether the state changed.
    InOrder { transitioned: bool },
    /// Not newer than the last applied result: kept for `explain` only.
    OutOfOrder,
}

/// The hysteresis parameters, copied out of the policy so `record` stays small.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Thresholds {
    pub rise: u32,
    pub fall: u32,
    /// A gap longer than this between two applied results resets the track.
    pub gap: Duration,
    pub history: usize,
}

impl Track {
    /// Records one result. Results not newer than the last applied one (a buffer
    /// replayed after a reconnect, a duplicate) are kept for `explain` but do not
    /// move the state: an old result says nothing about now.
    ///
    /// A result arriving after a gap longer than `gap` (the prober restarted or
    /// stopped probing) starts from UNKNOWN: the state before the gap is not
    /// evidence about the present.
    pub fn record(&mut self, r: Recent, t: Thresholds) -> Applied {
        let applied = match self.last_applied {
            Some(last) if r.observed_at <= last => false,
            Some(last) => {
                if last.age_at(r.observed_at) > t.gap {
                    self.successes = 0;
                    self.failures = 0;
                    self.state = Reachability::Unknown;
                }
                true
            }
            None => true,
        };
        let (observed_at, success) = (r.observed_at, r.success);
        self.remember(Recent { applied, ..r }, t.history);
        if !applied {
            return Applied::OutOfOrder;
        }
        self.last_applied = Some(observed_at);
        let before = self.state;
        if success {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.successes >= t.rise {
                self.state = Reachability::Up;
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= t.fall {
                self.state = Reachability::Down;
            }
        }
        Applied::InOrder {
            transitioned: self.state != before,
        }
    }

    /// The hysteresis state if the newest applied result is fresh at `now`.
    pub fn fresh_state(&self, now: UnixMillis, freshness: Duration) -> Option<Reachability> {
        self.is_fresh(now, freshness).then_some(self.state)
    }

    pub fn is_fresh(&self, now: UnixMillis, freshness: Duration) -> bool {
        self.last_applied.is_some_and(|t| t.age_at(now) < freshness)
    }

    /// The newest applied result.
    pub fn latest(&self) -> Option<&Recent> {
        self.recent.iter().rev().find(|r| r.applied)
    }

    /// Keeps `detail` as the failure detail of the result observed at `at`, unless a
    /// newer failure's detail is already kept.
    pub fn note_failure_detail(&mut self, at: UnixMillis, detail: &str) {
        if detail.is_empty() || self.failure_detail.as_ref().is_some_and(|(t, _)| *t > at) {
            return;
        }
        self.failure_detail = Some((at, detail.into()));
    }

    /// The detail of the failure observed at `at`, if it is the one kept.
    pub fn failure_detail_at(&self, at: UnixMillis) -> Option<&str> {
        self.failure_detail
            .as_ref()
            .filter(|(t, _)| *t == at)
            .map(|(_, d)| d.as_ref())
    }

    pub fn truncate_history(&mut self, history: usize) {
        while self.recent.len() > history {
            self.recent.pop_front();
        }
    }

    fn remember(&mut self, r: Recent, history: usize) {
        // In-order results (the common case) go at the back; late ones are placed
        // by time so `explain` reads as a timeline.
        let at = self.recent.partition_point(|x| x.observed_at <= r.observed_at);
        if at == self.recent.len() {
            self.recent.push_back(r);
        } else {
            self.recent.insert(at, r);
        }
        self.truncate_history(history);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        rise: 2,
        fall: 3,
        gap: Duration::from_secs(5),
        history: 4,
    };

    fn result(at_ms: u64, success: bool) -> Recent {
        let latency = Duration::from_millis(1);
        let outcome = if success {
            ProbeOutcome::ok(latency)
        } else {
            ProbeOutcome::failed(latency, FailureClass::Timeout, "no answer")
        };
        Recent::new(UnixMillis(at_ms), &outcome)
    }

    /// Feeds `pattern` ('+' success, '-' failure) one second apart and returns the
    /// state after each result as a string of U/D/?.
    fn run(pattern: &str) -> String {
        let mut track = Track::default();
        pattern
            .chars()
            .enumerate()
            .map(|(i, c)| {
                track.record(result(1_000 * (i as u64 + 1), c == '+'), T);
                match track.state {
                    Reachability::Unknown => '?',
                    Reachability::Up => 'U',
                    Reachability::Down => 'D',
                }
            })
            .collect()
    }

    #[test]
    fn rise_and_fall_need_consecutive_results() {
        // (input, states after each input) with rise 2, fall 3.
        let cases = [
            ("+", "?"),
            ("++", "?U"),
            ("+-+", "???"),
            ("---", "??D"),
            ("++-", "?UU"),
            ("++--", "?UUU"),
            ("++---", "?UUUD"),
            ("++--+--", "?UUUUUU"),
            ("---+", "??DD"),
            ("---++", "??DDU"),
            ("---+-+", "??DDDD"),
            ("-+-+-+-+", "????????"),
        ];
        for (input, want) in cases {
            assert_eq!(run(input), want, "input {input}");
        }
    }

    #[test]
    fn transition_flag_is_set_exactly_on_state_change() {
        let mut track = Track::default();
        let flags: Vec<bool> = [true, true, true, false, false, false, false]
            .iter()
            .enumerate()
            .map(|(i, &ok)| match track.record(result(1_000 * (i as u64 + 1), ok), T) {
                Applied::InOrder { transitioned } => transitioned,
                Applied::OutOfOrder => panic!("in order"),
            })
            .collect();
        assert_eq!(flags, [false, true, false, false, false, true, false]);
    }

    #[test]
    fn late_and_duplicate_results_are_kept_but_do_not_drive_state() {
        let mut track = Track::default();
        track.record(result(10_000, true), T);
        track.record(result(11_000, true), T);
        assert_eq!(track.state, Reachability::Up);
        for at in [5_000, 6_000, 7_000, 11_000] {
            assert_eq!(track.record(result(at, false), T), Applied::OutOfOrder);
        }
        assert_eq!(track.state, Reachability::Up);
        assert_eq!(track.failures, 0);
        assert_eq!(track.last_applied, Some(UnixMillis(11_000)));
        // History keeps the 4 newest by time (ties in arrival order), late ones
        // marked as not applied.
        let kept: Vec<(u64, bool)> = track.recent.iter().map(|r| (r.observed_at.0, r.applied)).collect();
        assert_eq!(kept, [(7_000, false), (10_000, true), (11_000, true), (11_000, false)]);
        assert_eq!(track.latest().map(|r| r.observed_at), Some(UnixMillis(11_000)));
    }

    #[test]
    fn a_gap_longer_than_freshness_restarts_from_unknown() {
        let mut track = Track::default();
        for at in [1_000, 2_000, 3_000] {
            track.record(result(at, false), T);
        }
        assert_eq!(track.state, Reachability::Down);
        // Within the gap: still down after one success.
        track.record(result(8_000, true), T);
        assert_eq!(track.state, Reachability::Down);
        // After a longer gap: the old DOWN is forgotten; one success is not enough
        // for UP either.
        track.record(result(20_000, true), T);
        assert_eq!(track.state, Reachability::Unknown);
        assert_eq!(track.successes, 1);
    }

    #[test]
    fn freshness_is_strict() {
        let mut track = Track::default();
        assert_eq!(track.fresh_state(UnixMillis(0), T.gap), None);
        track.record(result(10_000, true), T);
        assert!(track.is_fresh(UnixMillis(14_999), T.gap));
        assert!(!track.is_fresh(UnixMillis(15_000), T.gap));
        // A result slightly in the future (within the accepted skew) is fresh.
        assert!(track.is_fresh(UnixMillis(9_000), T.gap));
    }

    #[test]
    fn the_newest_failure_detail_is_kept_once_per_track() {
        let mut t = Track::default();
        t.note_failure_detail(UnixMillis(10), "refused");
        t.note_failure_detail(UnixMillis(5), "older, arrived late");
        t.note_failure_detail(UnixMillis(12), "");
        assert_eq!(t.failure_detail_at(UnixMillis(10)), Some("refused"));
        assert_eq!(
            t.failure_detail_at(UnixMillis(5)),
            None,
            "an older detail never replaces a newer one"
        );
        t.note_failure_detail(UnixMillis(20), "tls: expired");
        assert_eq!(t.failure_detail_at(UnixMillis(20)), Some("tls: expired"));
        assert_eq!(t.failure_detail_at(UnixMillis(10)), None);
    }
}
