//! When to probe a target next: a pure state machine with no clock, no tokio and no
//! randomness of its own. The caller passes `now` and a uniform random number in
//! `[0, 1)`, so the whole behaviour is testable with plain values.
//!
//! **Fast confirmation.** A target the prober believes UP that fails once is not
//! declared DOWN on that lost probe, and is not left alone for a whole interval
//! either: it is re-probed every `confirm_interval` until `fall` consecutive failures
//! confirm DOWN or a success cancels. The same with `rise` when a DOWN target first
//! succeeds. Then the normal interval (with jitter) resumes. At start the belief is
//! unknown, and the first results are confirmed the same way, so a cold start
//! converges in `rise`/`fall` × `confirm_interval` rather than in whole intervals.
//!
//! The control plane keeps its own rise/fall hysteresis on the results: the belief
//! here only decides how soon the next probe runs.

use std::time::{Duration, Instant};

/// The shortest normal interval a target may have.
pub const MIN_INTERVAL: Duration = Duration::from_millis(250);
/// The interval used when an assignment does not give one.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest confirmation interval.
pub const MIN_CONFIRM_INTERVAL: Duration = Duration::from_millis(50);
/// The confirmation interval used when an assignment does not give one.
pub const DEFAULT_CONFIRM_INTERVAL: Duration = Duration::from_millis(150);
/// The largest jitter, as a fraction of the interval.
pub const MAX_JITTER: f64 = 0.5;
/// The jitter used when an assignment does not give one.
pub const DEFAULT_JITTER: f64 = 0.1;
/// The rise and fall thresholds used when an assignment does not give them.
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 2;
/// Rise and fall above this are clamped: confirming takes `fall × confirm_interval`.
pub const MAX_THRESHOLD: u32 = 10;

/// How one target is scheduled. Build it with [`ScheduleParams::new`], which clamps
/// every value into the supported range, so a scheduler never sees nonsense.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleParams {
    interval: Duration,
    confirm_interval: Duration,
    rise: u32,
    fall: u32,
    jitter: f64,
}

impl ScheduleParams {
    /// Clamps: `interval >= 250 ms`; `50 ms <= confirm_interval <= interval`;
    /// `1 <= rise, fall <= 10`; `0 <= jitter <= 0.5` (NaN counts as 0).
    pub fn new(interval: Duration, confirm_interval: Duration, rise: u32, fall: u32, jitter: f64) -> Self {
        let interval = interval.max(MIN_INTERVAL);
        let confirm_interval = confirm_interval.clamp(MIN_CONFIRM_INTERVAL, interval);
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, MAX_JITTER)
        } else {
            0.0
        };
        Self {
            interval,
            confirm_interval,
            rise: rise.clamp(1, MAX_THRESHOLD),
            fall: fall.clamp(1, MAX_THRESHOLD),
            jitter,
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }
    pub fn confirm_interval(&self) -> Duration {
        self.confirm_interval
    }
    pub fn rise(&self) -> u32 {
        self.rise
    }
    pub fn fall(&self) -> u32 {
        self.fall
    }
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// The normal gap after a result: the interval plus up to `jitter × interval`.
    fn normal_gap(&self, unit: f64) -> Duration {
        self.interval + self.interval.mul_f64(self.jitter * clamp_unit(unit))
    }
}

impl Default for ScheduleParams {
    fn default() -> Self {
        Self::new(
            DEFAULT_INTERVAL,
            DEFAULT_CONFIRM_INTERVAL,
            DEFAULT_RISE,
            DEFAULT_FALL,
            DEFAULT_JITTER,
        )
    }
}

/// What the prober currently believes about a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Belief {
    Unknown,
    Up,
    Down,
}

/// Whether a target is on its normal interval or being confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Steady,
    /// `streak` consecutive results have pointed towards `toward`.
    Confirming {
        toward: Belief,
        streak: u32,
    },
}

/// The schedule of one target.
#[derive(Debug, Clone)]
pub struct TargetSchedule {
    params: ScheduleParams,
    belief: Belief,
    phase: Phase,
    next_due: Instant,
}

impl TargetSchedule {
    /// A new target. Its first probe is spread over one interval (`unit` in `[0, 1)`)
    /// so that many targets assigned at once do not probe in lockstep.
    pub fn new(params: ScheduleParams, now: Instant, unit: f64) -> Self {
        Self {
            params,
            belief: Belief::Unknown,
            phase: Phase::Steady,
            next_due: now + params.interval.mul_f64(clamp_unit(unit)),
        }
    }

    pub fn params(&self) -> &ScheduleParams {
        &self.params
    }
    pub fn belief(&self) -> Belief {
        self.belief
    }
    pub fn phase(&self) -> Phase {
        self.phase
    }
    /// When the next probe should start.
    pub fn next_due(&self) -> Instant {
        self.next_due
    }

    /// Records a probe result that completed at `now` and returns when the next
    /// probe is due. `unit` (in `[0, 1)`) draws the jitter of a normal interval.
    pub fn on_result(&mut self, success: bool, now: Instant, unit: f64) -> Instant {
        let observed = if success { Belief::Up } else { Belief::Down };
        let streak = match self.phase {
            Phase::Confirming { toward, streak } if toward == observed => streak + 1,
            _ => 1,
        };
        if self.belief == observed {
            // Agrees with the belief: a confirmation in progress (if any) is cancelled.
            self.phase = Phase::Steady;
        } else if streak >= self.threshold(observed) {
            self.belief = observed;
            self.phase = Phase::Steady;
        } else {
            self.phase = Phase::Confirming {
                toward: observed,
                streak,
            };
        }
        self.next_due = match self.phase {
            Phase::Steady => now + self.params.normal_gap(unit),
            Phase::Confirming { .. } => now + self.params.confirm_interval,
        };
        self.next_due
    }

    fn threshold(&self, toward: Belief) -> u32 {
        match toward {
            Belief::Up => self.params.rise,
            Belief::Down | Belief::Unknown => self.params.fall,
        }
    }
}

fn clamp_unit(unit: f64) -> f64 {
    if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn params(interval_ms: u64, confirm_ms: u64, rise: u32, fall: u32) -> ScheduleParams {
        ScheduleParams::new(
            Duration::from_millis(interval_ms),
            Duration::from_millis(confirm_ms),
            rise,
            fall,
            0.0,
        )
    }

    /// Feeds results at the times the scheduler asks for and returns, per step, the
    /// gap to the next probe and the belief after it.
    fn run(p: ScheduleParams, start_belief: Belief, results: &[bool]) -> Vec<(Duration, Belief)> {
        let t0 = Instant::now();
        let mut s = TargetSchedule::new(p, t0, 0.0);
        s.belief = start_belief;
        let mut now = s.next_due();
        let mut out = Vec::new();
        for &ok in results {
            let next = s.on_result(ok, now, 0.0);
            out.push((next - now, s.belief()));
            now = next;
        }
        out
    }

    #[test]
    fn fast_confirmation_table() {
        use Belief::*;
        let p = params(1000, 150, 2, 3);
        let i = Duration::from_millis(1000);
        let c = Duration::from_millis(150);
        type Case = (&'static str, Belief, Vec<bool>, Vec<(Duration, Belief)>);
        let cases: Vec<Case> = vec![
            ("up stays up", Up, vec![true, true], vec![(i, Up), (i, Up)]),
            (
                "up falls after fall=3 failures at the confirm interval",
                Up,
                vec![false, false, false, false],
                vec![(c, Up), (c, Up), (i, Down), (i, Down)],
            ),
            (
                "a success cancels the confirmation",
                Up,
                vec![false, false, true, false],
                vec![(c, Up), (c, Up), (i, Up), (c, Up)],
            ),
            (
                "down rises after rise=2 successes",
                Down,
                vec![true, true, true],
                vec![(c, Down), (i, Up), (i, Up)],
            ),
            (
                "a failure cancels the rise",
                Down,
                vec![true, false, true, true],
                vec![(c, Down), (i, Down), (c, Down), (i, Up)],
            ),
            (
                "unknown confirms its first results",
                Unknown,
                vec![true, true],
                vec![(c, Unknown), (i, Up)],
            ),
            (
                "unknown that flips keeps confirming",
                Unknown,
                vec![true, false, false, false],
                vec![(c, Unknown), (c, Unknown), (c, Unknown), (i, Down)],
            ),
        ];
        for (name, start, results, want) in cases {
            assert_eq!(run(p, start, &results), want, "{name}");
        }
    }

    #[test]
    fn thresholds_of_one_decide_at_once() {
        let p = params(1000, 150, 1, 1);
        assert_eq!(
            run(p, Belief::Up, &[false, true]),
            vec![
                (Duration::from_secs(1), Belief::Down),
                (Duration::from_secs(1), Belief::Up)
            ]
        );
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let p = ScheduleParams::new(Duration::from_secs(1), Duration::from_millis(150), 2, 2, 0.2);
        let t0 = Instant::now();
        for k in 0..=100 {
            let unit = k as f64 / 100.0;
            let mut s = TargetSchedule::new(p, t0, unit);
            assert!(
                s.next_due() >= t0 && s.next_due() <= t0 + Duration::from_secs(1),
                "first probe within one interval"
            );
            s.belief = Belief::Up;
            let gap = s.on_result(true, t0, unit) - t0;
            assert!(
                gap >= Duration::from_secs(1) && gap <= Duration::from_millis(1200),
                "unit {unit}: {gap:?}"
            );
        }
        // Out-of-range and non-finite units are clamped rather than trusted.
        let mut s = TargetSchedule::new(p, t0, f64::NAN);
        s.belief = Belief::Up;
        assert_eq!(s.on_result(true, t0, 7.0) - t0, Duration::from_millis(1200));
        assert_eq!(s.on_result(true, t0, f64::INFINITY) - t0, Duration::from_secs(1));
    }

    #[test]
    fn parameters_are_clamped() {
        let p = ScheduleParams::new(Duration::from_millis(10), MS, 0, 99, 3.0);
        assert_eq!(p.interval(), MIN_INTERVAL);
        assert_eq!(p.confirm_interval(), MIN_CONFIRM_INTERVAL);
        assert_eq!((p.rise(), p.fall()), (1, MAX_THRESHOLD));
        assert_eq!(p.jitter(), MAX_JITTER);
        let p = ScheduleParams::new(Duration::from_millis(300), Duration::from_millis(900), 2, 2, f64::NAN);
        assert_eq!(
            p.confirm_interval(),
            Duration::from_millis(300),
            "confirmation is never slower than the interval"
        );
        assert_eq!(p.jitter(), 0.0);
        let d = ScheduleParams::default();
        assert_eq!(
            (d.interval(), d.confirm_interval(), d.rise(), d.fall()),
            (Duration::from_secs(1), Duration::from_millis(150), 2, 2)
        );
    }
}
