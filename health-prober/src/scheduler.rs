//! When to probe a target next: a pure state machine with no clock, no tokio and no
//! randomness of its own. The caller passes `now` (monotonic), the wall clock (for
//! phases shared across probers) and a uniform random number in `[0, 1)`, so the
//! whole behaviour is testable with plain values.
//!
//! **Fast confirmation.** A target the prober believes UP that fails once is not
//! declared DOWN on that lost probe, and is not left alone for a whole interval
//! either: it is re-probed every `confirm_interval` until `fall` consecutive failures
//! confirm DOWN or a success cancels. The same with `rise` when a DOWN target first
//! succeeds. Then the normal interval (with jitter) resumes. At start the belief is
//! unknown, and the first results are confirmed the same way.
//!
//! **Concurrent, staggered confirmation.** Confirmation probes are spaced from the
//! previous probe's *start*, never from its result: a probe that has not answered
//! within [`TargetSchedule::late_after`] (the usual latency, at least
//! `confirm_interval`) gets another probe beside it, up to [`MAX_IN_FLIGHT`], so
//! a silent target's timeouts arrive `confirm_interval` apart instead of one timeout
//! apart.
//!
//! **Adaptive timeout.** Once a target has answered [`RTT_SAMPLES`] times, a probe
//! that takes far longer than it usually does is cut at
//! [`TargetSchedule::probe_timeout`]: the retransmission timeout of TCP (smoothed
//! latency + 4 × its deviation), at least [`MIN_ADAPTIVE_TIMEOUT`], at most the
//! configured timeouts.
//!
//! **Phases.** With a phase (a fraction of the interval, given per region by the
//! control plane), steady probes start at that point of each interval on the wall
//! clock, so regions take turns and some region probes every target every
//! `interval / regions`.
//!
//! **On demand.** When another region saw the target fail, the control plane asks
//! every region to probe it now ([`TargetSchedule::on_probe_now`]).
//!
//! The control plane weighs the results (see `meridian_health::evidence`); the belief
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
pub const MAX_THRESHOLD: u32 = 32;
/// Probes of one target in flight at once.
pub const MAX_IN_FLIGHT: u32 = 4;
/// Successful probes before the adaptive timeout applies.
pub const RTT_SAMPLES: u32 = 5;
/// The shortest adaptive timeout.
pub const MIN_ADAPTIVE_TIMEOUT: Duration = Duration::from_millis(400);

/// How one target is scheduled. Build it with [`ScheduleParams::new`], which clamps
/// every value into the supported range, so a scheduler never sees nonsense.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleParams {
    interval: Duration,
    confirm_interval: Duration,
    rise: u32,
    fall: u32,
    jitter: f64,
    phase: Option<f64>,
}

impl ScheduleParams {
    /// Clamps: `interval >= 250 ms`; `50 ms <= confirm_interval <= interval`;
    /// `1 <= rise, fall <= 32`; `0 <= jitter <= 0.5` (NaN counts as 0).
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
            phase: None,
        }
    }

    /// The same with steady probes at `phase` (a fraction of the interval, taken
    /// modulo 1; a non-finite value means no phase).
    pub fn with_phase(self, phase: Option<f64>) -> Self {
        Self {
            phase: phase.filter(|p| p.is_finite()).map(|p| p.rem_euclid(1.0)),
            ..self
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
    pub fn phase(&self) -> Option<f64> {
        self.phase
    }

    /// With a phase, the delay from `wall` (time since the Unix epoch) to the next
    /// point of the phase, in `[0, interval)`.
    fn phase_delay(&self, wall: Duration) -> Option<Duration> {
        let i = self.interval.as_nanos();
        self.phase.map(|phase| {
            let target = (phase * i as f64) as u128 % i;
            Duration::from_nanos(((target + i - wall.as_nanos() % i) % i) as u64)
        })
    }

    /// The delay to the next steady probe: without a phase, the interval; with one,
    /// the next point of the phase at least half an interval away. Plus up to
    /// `jitter × interval`.
    fn steady_gap(&self, wall: Duration, unit: f64) -> Duration {
        let base = match self.phase_delay(wall) {
            None => self.interval,
            Some(d) if d < self.interval / 2 => d + self.interval,
            Some(d) => d,
        };
        base + self.jitter_of(unit)
    }

    fn jitter_of(&self, unit: f64) -> Duration {
        self.interval.mul_f64(self.jitter * clamp_unit(unit))
    }
}

/// A target's own offset within the interval, as a fraction: the same in every
/// prober (a stable hash of the target's key), so that one prober's targets spread
/// over the interval instead of all starting at its region's phase, while the
/// regions stay `1/n` apart on each target.
pub fn target_offset(pop: &str, endpoint: &str) -> f64 {
    meridian_core::ids::stable_fraction(pop.bytes().chain(std::iter::once(b'/')).chain(endpoint.bytes()))
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

/// Smoothed latency and its deviation (Jacobson/Karels, as TCP's RTT estimator).
#[derive(Debug, Clone, Copy, Default)]
struct Rtt {
    samples: u32,
    srtt: Duration,
    rttvar: Duration,
}

impl Rtt {
    fn sample(&mut self, r: Duration) {
        if self.samples == 0 {
            self.srtt = r;
            self.rttvar = r / 2;
        } else {
            let diff = self.srtt.abs_diff(r);
            self.rttvar = self.rttvar * 3 / 4 + diff / 4;
            self.srtt = self.srtt * 7 / 8 + r / 8;
        }
        self.samples = self.samples.saturating_add(1);
    }

    /// Smoothed latency + 4 × deviation, once there are enough samples.
    fn rto(&self) -> Option<Duration> {
        (self.samples >= RTT_SAMPLES).then(|| self.srtt + self.rttvar * 4)
    }
}

/// The schedule of one target.
#[derive(Debug, Clone)]
pub struct TargetSchedule {
    params: ScheduleParams,
    belief: Belief,
    phase: Phase,
    next_due: Instant,
    in_flight: u32,
    last_start: Option<Instant>,
    rtt: Rtt,
}

impl TargetSchedule {
    /// A new target. Its first probe is spread over one interval (`unit` in `[0, 1)`)
    /// so that many targets assigned at once do not probe in lockstep; with a phase,
    /// it waits for the phase (`wall` is the time since the Unix epoch).
    pub fn new(params: ScheduleParams, now: Instant, wall: Duration, unit: f64) -> Self {
        let first = match params.phase_delay(wall) {
            None => params.interval.mul_f64(clamp_unit(unit)),
            Some(d) => d + params.jitter_of(unit),
        };
        Self {
            params,
            belief: Belief::Unknown,
            phase: Phase::Steady,
            next_due: now + first,
            in_flight: 0,
            last_start: None,
            rtt: Rtt::default(),
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
    /// Probes started and not answered yet.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }
    /// Whether another probe may start beside those in flight.
    pub fn can_start(&self) -> bool {
        self.in_flight < MAX_IN_FLIGHT
    }
    /// Whether results now are confirming a change (and worth sending at once).
    pub fn is_confirming(&self) -> bool {
        matches!(self.phase, Phase::Confirming { .. })
    }

    /// How long a probe may go unanswered before another one starts beside it: the
    /// usual latency bound, at least `confirm_interval`.
    pub fn late_after(&self) -> Duration {
        self.rtt.rto().map_or(self.params.confirm_interval, |rto| {
            rto.max(self.params.confirm_interval)
        })
    }

    /// The adaptive timeout for the next probe, if the target has answered often
    /// enough to know what is usual; `None`: the configured timeouts.
    pub fn probe_timeout(&self) -> Option<Duration> {
        self.rtt.rto().map(|rto| rto.max(MIN_ADAPTIVE_TIMEOUT))
    }

    /// A probe starts at `now`. The next one is due a confirmation interval later
    /// while confirming, or once this one is late otherwise (a result first moves it).
    pub fn on_start(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_add(1);
        self.last_start = Some(now);
        self.next_due = now
            + match self.phase {
                Phase::Confirming { .. } => self.params.confirm_interval,
                Phase::Steady => self.late_after(),
            };
    }

    /// Another region saw this target fail: probe it now (unless a probe started
    /// within the last confirmation interval) and keep confirming until a result
    /// decides. A target already believed DOWN has nothing to confirm.
    pub fn on_probe_now(&mut self, now: Instant) {
        if self.belief == Belief::Down {
            return;
        }
        if self
            .last_start
            .is_some_and(|s| now.saturating_duration_since(s) < self.params.confirm_interval)
        {
            return;
        }
        if !self.is_confirming() {
            self.phase = Phase::Confirming {
                toward: Belief::Down,
                streak: 0,
            };
        }
        self.next_due = self.next_due.min(now);
    }

    /// Records a probe result that completed at `now` after `latency` and returns
    /// when the next probe is due. `wall` is the time since the Unix epoch (for the
    /// phase); `unit` (in `[0, 1)`) draws the jitter of a normal interval.
    pub fn on_result(&mut self, success: bool, latency: Duration, now: Instant, wall: Duration, unit: f64) -> Instant {
        self.in_flight = self.in_flight.saturating_sub(1);
        if success {
            self.rtt.sample(latency);
        }
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
            Phase::Steady => now + self.params.steady_gap(wall, unit),
            // Spaced from the previous start, not from this result.
            Phase::Confirming { .. } => match self.last_start {
                Some(s) => (s + self.params.confirm_interval).max(now),
                None => now + self.params.confirm_interval,
            },
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
    /// A wall clock reading (time since the Unix epoch) on a whole second.
    const WALL: Duration = Duration::from_secs(1_800_000_000);

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
        let mut s = TargetSchedule::new(p, t0, WALL, 0.0);
        s.belief = start_belief;
        let mut now = s.next_due();
        let mut out = Vec::new();
        for &ok in results {
            let next = s.on_result(ok, MS, now, WALL, 0.0);
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
            let mut s = TargetSchedule::new(p, t0, WALL, unit);
            assert!(
                s.next_due() >= t0 && s.next_due() <= t0 + Duration::from_secs(1),
                "first probe within one interval"
            );
            s.belief = Belief::Up;
            let gap = s.on_result(true, MS, t0, WALL, unit) - t0;
            assert!(
                gap >= Duration::from_secs(1) && gap <= Duration::from_millis(1200),
                "unit {unit}: {gap:?}"
            );
        }
        // Out-of-range and non-finite units are clamped rather than trusted.
        let mut s = TargetSchedule::new(p, t0, WALL, f64::NAN);
        s.belief = Belief::Up;
        assert_eq!(s.on_result(true, MS, t0, WALL, 7.0) - t0, Duration::from_millis(1200));
        assert_eq!(
            s.on_result(true, MS, t0, WALL, f64::INFINITY) - t0,
            Duration::from_secs(1)
        );
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

    #[test]
    fn phases_put_regions_at_their_point_of_each_interval() {
        let t0 = Instant::now();
        let p = params(1000, 100, 2, 3).with_phase(Some(1.0 / 3.0));
        // The first probe waits for the phase: 333 ms after a whole second.
        let s = TargetSchedule::new(p, t0, WALL, 0.0);
        assert_eq!(s.next_due() - t0, Duration::from_nanos(333_333_333));
        let s = TargetSchedule::new(p, t0, WALL + Duration::from_millis(500), 0.0);
        assert_eq!(s.next_due() - t0, Duration::from_nanos(833_333_333));
        // Steady probes stay on it whatever the result's time: the next point at
        // least half an interval away.
        let mut s = TargetSchedule::new(p, t0, WALL, 0.0);
        s.belief = Belief::Up;
        let wall = WALL + Duration::from_millis(334);
        assert_eq!(
            s.on_result(true, MS, t0, wall, 0.0) - t0,
            Duration::from_nanos(999_333_333)
        );
        let wall = WALL + Duration::from_millis(900);
        assert_eq!(
            s.on_result(true, MS, t0, wall, 0.0) - t0,
            Duration::from_nanos(1_433_333_333),
            "400 ms to the next point is too close: the one after"
        );
        // Three regions at 0, 1/3 and 2/3: between them, a probe every third.
        let starts: Vec<Duration> = [0.0, 1.0 / 3.0, 2.0 / 3.0]
            .map(|ph| TargetSchedule::new(params(900, 100, 2, 3).with_phase(Some(ph)), t0, WALL, 0.0).next_due() - t0)
            .to_vec();
        assert_eq!(starts, [0, 300, 600].map(Duration::from_millis));
        // A target's offset is the same in every prober and spreads targets out.
        let offsets: Vec<f64> = (0..1_000).map(|i| target_offset(&format!("pop{i}"), "http")).collect();
        assert!(offsets.iter().all(|o| (0.0..1.0).contains(o)));
        assert_eq!(target_offset("fra1", "http"), target_offset("fra1", "http"));
        assert_ne!(target_offset("fra1", "http"), target_offset("fra1", "tcp"));
        let per_tenth = (0..10)
            .map(|k| offsets.iter().filter(|o| (**o * 10.0) as usize == k).count())
            .collect::<Vec<_>>();
        assert!(per_tenth.iter().all(|n| (50..150).contains(n)), "{per_tenth:?}");
        // Non-finite phases mean none; others are taken modulo 1.
        assert_eq!(p.with_phase(Some(f64::NAN)).phase(), None);
        assert_eq!(p.with_phase(Some(1.25)).phase(), Some(0.25));
    }

    #[test]
    fn a_late_probe_gets_company_and_confirmations_never_wait_for_timeouts() {
        let t0 = Instant::now();
        let c = Duration::from_millis(100);
        let mut s = TargetSchedule::new(params(1000, 100, 2, 3), t0, WALL, 0.0);
        s.belief = Belief::Up;
        // Steady: one probe starts; if it is not back within the confirmation
        // interval another starts beside it, and so on up to MAX_IN_FLIGHT.
        let mut now = t0;
        for k in 1..=MAX_IN_FLIGHT {
            assert!(s.can_start());
            s.on_start(now);
            assert_eq!(s.in_flight(), k);
            assert_eq!(s.next_due(), now + c);
            now += c;
        }
        assert!(!s.can_start(), "at most {MAX_IN_FLIGHT} in flight");
        // The first times out at 1.3 s: the next is due 100 ms after the last start,
        // not 100 ms after this result.
        let last_start = now - c;
        let next = s.on_result(
            false,
            Duration::from_millis(1300),
            t0 + Duration::from_millis(1300),
            WALL,
            0.0,
        );
        assert_eq!(next, t0 + Duration::from_millis(1300), "overdue: at once");
        assert_eq!(
            s.phase(),
            Phase::Confirming {
                toward: Belief::Down,
                streak: 1
            }
        );
        s.on_start(next);
        assert_eq!(s.next_due(), next + c);
        assert!(last_start < next);
    }

    #[test]
    fn the_adaptive_timeout_follows_the_usual_latency() {
        let t0 = Instant::now();
        let mut s = TargetSchedule::new(params(1000, 100, 2, 3), t0, WALL, 0.0);
        assert_eq!(s.probe_timeout(), None, "nothing known: the configured timeouts");
        assert_eq!(s.late_after(), Duration::from_millis(100));
        for _ in 0..RTT_SAMPLES {
            s.on_result(true, Duration::from_millis(2), t0, WALL, 0.0);
        }
        assert_eq!(s.probe_timeout(), Some(MIN_ADAPTIVE_TIMEOUT), "fast target: the floor");
        assert_eq!(s.late_after(), Duration::from_millis(100));
        // A far target: its own latency bound, above the floor.
        let mut far = TargetSchedule::new(params(1000, 100, 2, 3), t0, WALL, 0.0);
        for ms in [180, 220, 200, 190, 210, 200] {
            far.on_result(true, Duration::from_millis(ms), t0, WALL, 0.0);
        }
        let rto = far.probe_timeout().unwrap();
        assert!(
            rto > Duration::from_millis(250) && rto < Duration::from_millis(700),
            "{rto:?}"
        );
        let late = far.late_after();
        assert!(
            late > Duration::from_millis(250) && late <= rto,
            "late after {late:?}, timeout {rto:?}"
        );
        // Failures do not teach it anything.
        let before = far.probe_timeout();
        far.on_result(false, Duration::from_secs(5), t0, WALL, 0.0);
        assert_eq!(far.probe_timeout(), before);
    }

    #[test]
    fn probe_now_starts_a_confirmation_unless_one_just_started() {
        let t0 = Instant::now();
        let c = Duration::from_millis(100);
        let mut s = TargetSchedule::new(params(1000, 100, 2, 3), t0, WALL, 0.0);
        s.belief = Belief::Up;
        s.on_start(t0);
        s.on_result(true, MS, t0, WALL, 0.0);
        let steady = s.next_due();
        // Just probed: the request is already answered.
        s.on_probe_now(t0 + Duration::from_millis(50));
        assert_eq!(s.next_due(), steady);
        // Later: probe now, and keep confirming until a result decides.
        let now = t0 + Duration::from_millis(400);
        s.on_probe_now(now);
        assert_eq!(s.next_due(), now);
        assert!(s.is_confirming());
        s.on_start(now);
        assert_eq!(s.next_due(), now + c);
        // A success here: the other region's failure was not ours; back to steady.
        s.on_result(true, MS, now + MS, WALL, 0.0);
        assert_eq!(s.phase(), Phase::Steady);
        // A target already DOWN has nothing to confirm.
        let mut down = TargetSchedule::new(params(1000, 100, 2, 3), t0, WALL, 0.0);
        down.belief = Belief::Down;
        let due = down.next_due();
        down.on_probe_now(t0 + Duration::from_secs(5));
        assert_eq!(down.next_due(), due);
    }
}
