//! Rise/fall hysteresis for one (PoP, endpoint, prober), plus its recent results.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::evidence::Evidence;
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
    /// The sequential test that calls DOWN (see [`crate::evidence`]).
    pub evidence: Evidence,
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
    /// The evidence (nats) that calls DOWN: `evidence::threshold(policy.fall)`.
    pub down_at: f64,
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
    #[cfg(test)]
    pub fn record(&mut self, r: Recent, t: Thresholds) -> Applied {
        self.record_during(r, t, false)
    }

    /// As [`Track::record`]; `others_down`: another vantage point sees the endpoint
    /// DOWN, so a run of failures this result ends was part of an outage, never loss
    /// to learn.
    pub fn record_during(&mut self, r: Recent, t: Thresholds, others_down: bool) -> Applied {
        let applied = match self.last_applied {
            Some(last) if r.observed_at <= last => false,
            Some(last) => {
                if last.age_at(r.observed_at) > t.gap {
                    self.successes = 0;
                    self.failures = 0;
                    self.evidence.restart();
                    self.state = Reachability::Unknown;
                }
                true
            }
            None => true,
        };
        let (observed_at, success, class) = (r.observed_at, r.success, r.class);
        self.remember(Recent { applied, ..r }, t.history);
        if !applied {
            return Applied::OutOfOrder;
        }
        self.last_applied = Some(observed_at);
        let before = self.state;
        if success {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            self.evidence.on_success(!others_down);
            if self.successes >= t.rise && self.state != Reachability::Up {
                self.state = Reachability::Up;
                self.evidence.restart();
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            self.evidence.on_failure(class);
            if self.evidence.llr >= t.down_at {
                // Capped, so a long outage does not need as long to be forgotten.
                self.evidence.llr = t.down_at;
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

    fn thresholds() -> Thresholds {
        Thresholds {
            rise: 2,
            down_at: crate::evidence::threshold(3),
            gap: Duration::from_secs(5),
            history: 4,
        }
    }

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
                track.record(result(1_000 * (i as u64 + 1), c == '+'), thresholds());
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
            .map(
                |(i, &ok)| match track.record(result(1_000 * (i as u64 + 1), ok), thresholds()) {
                    Applied::InOrder { transitioned } => transitioned,
                    Applied::OutOfOrder => panic!("in order"),
                },
            )
            .collect();
        assert_eq!(flags, [false, true, false, false, false, true, false]);
    }

    #[test]
    fn late_and_duplicate_results_are_kept_but_do_not_drive_state() {
        let mut track = Track::default();
        track.record(result(10_000, true), thresholds());
        track.record(result(11_000, true), thresholds());
        assert_eq!(track.state, Reachability::Up);
        for at in [5_000, 6_000, 7_000, 11_000] {
            assert_eq!(track.record(result(at, false), thresholds()), Applied::OutOfOrder);
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
            track.record(result(at, false), thresholds());
        }
        assert_eq!(track.state, Reachability::Down);
        // Within the gap: still down after one success.
        track.record(result(8_000, true), thresholds());
        assert_eq!(track.state, Reachability::Down);
        // After a longer gap: the old DOWN is forgotten; one success is not enough
        // for UP either.
        track.record(result(20_000, true), thresholds());
        assert_eq!(track.state, Reachability::Unknown);
        assert_eq!(track.successes, 1);
    }

    #[test]
    fn freshness_is_strict() {
        let mut track = Track::default();
        assert_eq!(track.fresh_state(UnixMillis(0), thresholds().gap), None);
        track.record(result(10_000, true), thresholds());
        assert!(track.is_fresh(UnixMillis(14_999), thresholds().gap));
        assert!(!track.is_fresh(UnixMillis(15_000), thresholds().gap));
        // A result slightly in the future (within the accepted skew) is fresh.
        assert!(track.is_fresh(UnixMillis(9_000), thresholds().gap));
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

/// The sequential verdict over long random runs, with a deterministic generator (the
/// figures cannot flake). One result per second plus the prober's confirmation
/// probes is about 4,000 results per endpoint per hour.
#[cfg(test)]
mod verdict_statistics {
    use super::*;
    use crate::evidence::{self, HARD_FLOOR};

    const PER_HOUR: u64 = 4_000;

    /// SplitMix64: small, deterministic, good enough for Bernoulli draws.
    struct Rng(u64);
    impl Rng {
        fn unit(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as f64 / u64::MAX as f64
        }
    }

    fn thresholds(fall: u32) -> Thresholds {
        Thresholds {
            rise: 2,
            down_at: evidence::threshold(fall),
            gap: Duration::from_secs(5),
            history: 4,
        }
    }

    fn outcome(success: bool, class: FailureClass) -> ProbeOutcome {
        if success {
            ProbeOutcome::ok(Duration::from_millis(1))
        } else {
            ProbeOutcome::failed(Duration::from_millis(1), class, "")
        }
    }

    /// Feeds `n` results (failure with probability `p`, of `class`) 250 ms apart
    /// starting at `*at`, and returns how many times the view turned DOWN.
    fn feed(track: &mut Track, t: Thresholds, rng: &mut Rng, at: &mut u64, n: u64, p: f64, class: FailureClass) -> u32 {
        let mut downs = 0;
        for _ in 0..n {
            *at += 250;
            let before = track.state;
            let r = Recent::new(UnixMillis(*at), &outcome(rng.unit() >= p, class));
            track.record(r, t);
            downs += u32::from(before != Reachability::Down && track.state == Reachability::Down);
        }
        downs
    }

    /// The stated bound: an endpoint of a live PoP losing up to 20 % of its probes
    /// at random (timeouts or resets), clean before, is called DOWN by one prober
    /// less than once in 20 hours on average at the default `fall` (3), counting
    /// the first minutes when its loss is not learnt yet. The expected number is
    /// dominated by the first runs of failures after it starts losing; about 0.04
    /// per start at 20 %.
    #[test]
    fn a_lossy_endpoint_is_rarely_called_down() {
        let hours = 40;
        for (p, seed) in [(0.05, 1), (0.10, 2), (0.20, 3)] {
            let mut rng = Rng(seed);
            let mut downs = 0;
            let mut starts = 0;
            for _ in 0..hours {
                // Each hour starts clean: 200 successes, then the loss begins.
                let mut track = Track::default();
                let mut at = 0;
                feed(
                    &mut track,
                    thresholds(3),
                    &mut rng,
                    &mut at,
                    200,
                    0.0,
                    FailureClass::Reset,
                );
                downs += feed(
                    &mut track,
                    thresholds(3),
                    &mut rng,
                    &mut at,
                    PER_HOUR,
                    p,
                    FailureClass::Reset,
                );
                starts += 1;
            }
            eprintln!("loss {p}: {downs} false DOWNs in {hours} hours, each starting clean");
            assert!(
                downs * 20 < starts * 3,
                "loss {p}: {downs} false DOWNs in {hours} hours (bound: 0.15 per hour)"
            );
            // Once learnt, the steady state: no false DOWN in 40 more hours.
            let mut track = Track::default();
            let mut at = 0;
            feed(
                &mut track,
                thresholds(3),
                &mut rng,
                &mut at,
                2 * PER_HOUR,
                p,
                FailureClass::Reset,
            );
            let steady = feed(
                &mut track,
                thresholds(3),
                &mut rng,
                &mut at,
                hours * PER_HOUR,
                p,
                FailureClass::Reset,
            );
            assert_eq!(steady, 0, "loss {p}: {steady} false DOWNs in {hours} hours once learnt");
        }
    }

    /// Returns how many results of `class` (all failures) call DOWN after `history`.
    fn results_to_down(history: u64, p: f64, class: FailureClass, fall: u32, seed: u64) -> u32 {
        let mut rng = Rng(seed);
        let mut track = Track::default();
        let mut at = 0;
        feed(
            &mut track,
            thresholds(fall),
            &mut rng,
            &mut at,
            history,
            p,
            FailureClass::Reset,
        );
        // Make sure the view is UP (a run in progress would shorten the count).
        feed(&mut track, thresholds(fall), &mut rng, &mut at, 3, 0.0, class);
        assert_eq!(track.state, Reachability::Up);
        for n in 1..=100 {
            at += 100;
            track.record(Recent::new(UnixMillis(at), &outcome(false, class)), thresholds(fall));
            if track.state == Reachability::Down {
                return n;
            }
        }
        panic!("never called DOWN");
    }

    /// The stated bound on detection, in results from one prober (each region's
    /// prober confirms at `confirm_interval`, 100 ms by default): a dead clean
    /// endpoint is called DOWN at the first refused connection and at the `fall`-th
    /// timeout; one that has been losing 20 % of its probes to resets needs more
    /// timeouts, at most as many as at the loss cap (23 at `fall` 3), and still one
    /// refused connection.
    #[test]
    fn a_dead_endpoint_is_called_down_within_a_stated_number_of_results() {
        assert!(evidence::failure_weight(HARD_FLOOR) >= evidence::threshold(3));
        for fall in 1..=3 {
            assert_eq!(
                results_to_down(1_000, 0.0, FailureClass::Refused, fall, 7),
                1,
                "fall {fall}"
            );
            assert_eq!(
                results_to_down(1_000, 0.0, FailureClass::Timeout, fall, 7),
                fall,
                "fall {fall}"
            );
        }
        for seed in 0..20 {
            let lossy_timeouts = results_to_down(PER_HOUR, 0.2, FailureClass::Timeout, 3, seed);
            assert!(
                (4..=evidence::failures_needed(3, evidence::LOSS_CAP)).contains(&lossy_timeouts),
                "seed {seed}: {lossy_timeouts}"
            );
            assert_eq!(results_to_down(PER_HOUR, 0.2, FailureClass::Refused, 3, seed), 1);
            assert_eq!(results_to_down(PER_HOUR, 0.2, FailureClass::HttpStatus, 3, seed), 1);
        }
        // An endpoint that has been returning the odd 503 needs more than one.
        let mut rng = Rng(9);
        let mut track = Track::default();
        let mut at = 0;
        feed(
            &mut track,
            thresholds(3),
            &mut rng,
            &mut at,
            2_000,
            0.02,
            FailureClass::HttpStatus,
        );
        feed(
            &mut track,
            thresholds(3),
            &mut rng,
            &mut at,
            3,
            0.0,
            FailureClass::HttpStatus,
        );
        let mut n = 0;
        while track.state != Reachability::Down {
            at += 100;
            n += 1;
            track.record(
                Recent::new(UnixMillis(at), &outcome(false, FailureClass::HttpStatus)),
                thresholds(3),
            );
        }
        assert!((3..=8).contains(&n), "{n}");
    }
}
