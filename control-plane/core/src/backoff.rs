//! Exponential reconnect backoff with jitter, the one used by every daemon and the
//! store client. Pure: the caller passes the random number, so the bounds are
//! unit-tested and no crate here needs a clock or an RNG.

use std::time::Duration;

/// Doubles from `initial` up to `max`; each delay is drawn from the upper half of
/// the current step ("equal jitter"), so replicas recovering at once are not hit by
/// every prober in the same instant, and a delay is never below half the step.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        let max = max.max(initial);
        Self {
            initial,
            max,
            step: initial,
        }
    }

    /// The next delay; `unit` is a uniform random number in `[0, 1)`.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let unit = if unit.is_finite() { unit.clamp(0.0, 1.0) } else { 0.0 };
        let half = self.step / 2;
        let delay = half + half.mul_f64(unit);
        self.step = (self.step * 2).min(self.max);
        delay
    }

    /// Back to the initial step after a connection proved healthy.
    pub fn reset(&mut self) {
        self.step = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_within_jitter_bounds() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        let steps = [100, 200, 400, 800, 1000, 1000];
        for (i, step) in steps.iter().enumerate() {
            let unit = (i as f64) / 6.0;
            let d = b.next_delay(unit);
            assert!(d >= ms(step / 2) && d <= ms(*step), "step {step}: {d:?}");
        }
        b.reset();
        assert_eq!(b.next_delay(0.0), ms(50));
        assert_eq!(b.next_delay(f64::NAN), ms(100));
    }
}
