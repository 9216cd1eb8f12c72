//! Evidence-based DOWN verdicts: a sequential test, per (PoP, endpoint, prober),
//! between two hypotheses about the endpoint:
//!
//! * **dead**: a probe fails with probability [`P_FAIL_IF_DEAD`];
//! * **alive, losing at its usual rate**: a probe fails with probability `p`, the
//!   endpoint's own loss estimate.
//!
//! Each result adds its log-likelihood ratio to a CUSUM statistic (never below
//! zero); the prober's view of the endpoint turns DOWN when the statistic reaches the
//! threshold. A failure adds `ln(P_FAIL_IF_DEAD / p)`, so a failure from a clean
//! endpoint (small `p`) is strong evidence and one from an endpoint that has been
//! losing 20 % of its probes is weak; a success subtracts
//! `ln((1 - p) / (1 - P_FAIL_IF_DEAD))` (about 6.9), which all but resets it.
//!
//! **Calibration in probes.** The threshold is `fall × ln(P_FAIL_IF_DEAD /
//! SOFT_FLOOR)`: `fall` (the policy's number) is how many consecutive timeouts or
//! resets call DOWN on a clean endpoint. A lossy endpoint needs more, in proportion;
//! see [`failures_needed`].
//!
//! **Hard failures** (connection refused, TLS, HTTP status, body, DNS rcode or
//! answer) rarely happen to a live server by chance, so they have their own, much
//! lower, loss estimate: from a clean endpoint one hard failure is enough. An endpoint
//! that has been returning the odd 503 learns a higher hard-loss rate and then needs
//! more. Soft failures (timeout, reset, other) use the loss estimate of all failures.
//!
//! **Learning the loss rate.** Failures enter the estimates once the run they belong
//! to has ended with a success, if the run was short (at most [`MAX_LOSS_RUN`]
//! failures): a longer run was an outage, not loss, and must not make the next outage
//! slower to call. A short run counts even when it turned this prober's view DOWN (an
//! endpoint whose isolated 503s each call DOWN for a moment must learn that it does
//! that), but never while another vantage point sees the endpoint DOWN: an outage
//! others saw too is not loss, however short. The estimates are exponentially weighted, learning loss faster
//! ([`LOSS_ALPHA`]) than they forget it ([`FORGET_ALPHA`]), and start at their floors:
//! a new endpoint counts as clean.

use serde::{Deserialize, Serialize};

use crate::probe::FailureClass;

/// P(probe fails | endpoint dead).
pub const P_FAIL_IF_DEAD: f64 = 0.999;
/// The lowest loss estimate for soft failures (timeouts, resets).
pub const SOFT_FLOOR: f64 = 0.005;
/// The lowest loss estimate for hard failures (refused, TLS, HTTP, DNS): low enough
/// that one hard failure from a clean endpoint calls DOWN at `fall` up to 3.
pub const HARD_FLOOR: f64 = 1e-7;
/// The highest loss estimate: beyond it an endpoint is simply broken.
pub const LOSS_CAP: f64 = 0.5;
/// Weight of a lost probe in the loss estimates.
pub const LOSS_ALPHA: f64 = 0.02;
/// Weight of a successful probe: half of a lost one's, so the estimate learns loss
/// twice as fast as it forgets it and sits above the true rate (a third at 20 %
/// loss). Being pessimistic about loss is being conservative about removal.
pub const FORGET_ALPHA: f64 = 0.01;
/// The longest run of failures that counts as loss when it ends; longer runs are
/// outages.
pub const MAX_LOSS_RUN: u32 = 5;
/// Pending failures counted at most per run.
const MAX_PENDING: u32 = 64;

/// Whether a failure class is one a live server rarely produces by chance.
pub fn is_hard(class: FailureClass) -> bool {
    matches!(
        class,
        FailureClass::Refused
            | FailureClass::Tls
            | FailureClass::HttpStatus
            | FailureClass::BodyMismatch
            | FailureClass::DnsRcode
            | FailureClass::DnsAnswer
    )
}

/// The DOWN threshold (in nats) for a policy's `fall`.
pub fn threshold(fall: u32) -> f64 {
    // A hair below the exact product, so `fall` clean soft failures always reach it
    // despite rounding.
    f64::from(fall) * (P_FAIL_IF_DEAD / SOFT_FLOOR).ln() * (1.0 - 1e-9)
}

/// The evidence one failure adds at loss estimate `p`.
pub fn failure_weight(p: f64) -> f64 {
    (P_FAIL_IF_DEAD / p.clamp(f64::MIN_POSITIVE, LOSS_CAP)).ln()
}

/// The evidence one success takes away at loss estimate `p` (a positive number).
pub fn success_weight(p: f64) -> f64 {
    ((1.0 - p.clamp(0.0, LOSS_CAP)) / (1.0 - P_FAIL_IF_DEAD)).ln()
}

/// How many consecutive failures call DOWN at loss estimate `p` with `fall`.
pub fn failures_needed(fall: u32, p: f64) -> u32 {
    (threshold(fall) / failure_weight(p)).ceil().max(1.0) as u32
}

/// The sequential test's state for one (PoP, endpoint, prober).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Evidence {
    /// The CUSUM statistic, in nats (≥ 0).
    pub llr: f64,
    /// Estimated share of probes that fail while the endpoint is alive.
    pub loss: f64,
    /// The same for hard failures only.
    pub hard_loss: f64,
    /// Failures of the current run, not yet in the estimates.
    pending: u32,
    pending_hard: u32,
}

impl Default for Evidence {
    fn default() -> Self {
        Self {
            llr: 0.0,
            loss: SOFT_FLOOR,
            hard_loss: HARD_FLOOR,
            pending: 0,
            pending_hard: 0,
        }
    }
}

impl Evidence {
    /// The loss estimate that weighs a failure of `class`.
    pub fn estimate_for(&self, class: FailureClass) -> f64 {
        if is_hard(class) {
            self.hard_loss.max(HARD_FLOOR)
        } else {
            self.loss.max(SOFT_FLOOR)
        }
    }

    /// Adds a failure's evidence.
    pub fn on_failure(&mut self, class: FailureClass) {
        self.llr += failure_weight(self.estimate_for(class));
        self.pending = (self.pending + 1).min(MAX_PENDING);
        if is_hard(class) {
            self.pending_hard = (self.pending_hard + 1).min(MAX_PENDING);
        }
    }

    /// Takes a success's evidence away; the run of failures it ends enters the
    /// estimates if it was short enough to be loss and `learn` (no other vantage point
    /// sees the endpoint DOWN: an outage others saw too is not loss, however short).
    pub fn on_success(&mut self, learn: bool) {
        self.llr = (self.llr - success_weight(self.loss.max(SOFT_FLOOR))).max(0.0);
        if learn && self.pending <= MAX_LOSS_RUN {
            for i in 0..self.pending {
                self.loss += LOSS_ALPHA * (1.0 - self.loss);
                if i < self.pending_hard {
                    self.hard_loss += LOSS_ALPHA * (1.0 - self.hard_loss);
                } else {
                    self.hard_loss *= 1.0 - FORGET_ALPHA;
                }
            }
            self.loss *= 1.0 - FORGET_ALPHA;
            self.hard_loss *= 1.0 - FORGET_ALPHA;
            self.loss = self.loss.clamp(SOFT_FLOOR, LOSS_CAP);
            self.hard_loss = self.hard_loss.clamp(HARD_FLOOR, LOSS_CAP);
        }
        self.pending = 0;
        self.pending_hard = 0;
    }

    /// After a gap in the results: the statistic is about the past; the loss
    /// estimates (what the endpoint is like) are kept.
    pub fn restart(&mut self) {
        self.llr = 0.0;
        self.pending = 0;
        self.pending_hard = 0;
    }
}

/// The test's state as shown by `explain`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvidenceInfo {
    /// The evidence for "dead" so far, in nats.
    pub llr: f64,
    /// DOWN when `llr` reaches this.
    pub threshold: f64,
    /// Estimated share of probes lost while alive (all failures).
    pub loss: f64,
    /// The same for hard failures.
    pub hard_loss: f64,
    /// Consecutive timeouts or resets that would call DOWN from here.
    pub soft_failures_needed: u32,
    /// Consecutive hard failures that would call DOWN from here.
    pub hard_failures_needed: u32,
}

impl EvidenceInfo {
    pub(crate) fn of(e: &Evidence, fall: u32) -> Self {
        let t = threshold(fall);
        let needed = |p: f64| ((t - e.llr).max(0.0) / failure_weight(p)).ceil() as u32;
        Self {
            llr: e.llr,
            threshold: t,
            loss: e.loss,
            hard_loss: e.hard_loss,
            soft_failures_needed: needed(e.estimate_for(FailureClass::Timeout)),
            hard_failures_needed: needed(e.estimate_for(FailureClass::Refused)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_in_probes() {
        // A clean endpoint: `fall` soft failures, one hard one.
        for fall in 1..=5 {
            assert_eq!(failures_needed(fall, SOFT_FLOOR), fall, "fall {fall}");
        }
        assert!(failure_weight(HARD_FLOOR) >= threshold(3), "one hard failure at fall 3");
        assert!(failure_weight(HARD_FLOOR) < threshold(4));
        // Lossy endpoints need more evidence (fall 2).
        assert_eq!(failures_needed(2, 0.10), 5);
        assert_eq!(failures_needed(2, 0.20), 7);
        assert_eq!(failures_needed(2, LOSS_CAP), 16);
    }

    #[test]
    fn a_success_all_but_resets_the_statistic() {
        let mut e = Evidence::default();
        e.on_failure(FailureClass::Timeout);
        assert!(e.llr > 5.0);
        e.on_success(true);
        assert_eq!(e.llr, 0.0);
    }

    #[test]
    fn recovered_runs_teach_the_loss_rate_and_outages_do_not() {
        let mut e = Evidence::default();
        for _ in 0..200 {
            e.on_failure(FailureClass::Reset);
            for _ in 0..4 {
                e.on_success(true);
            }
        }
        // One failure in five: the estimate settles above 0.2, near a third.
        assert!((0.28..0.40).contains(&e.loss), "{}", e.loss);
        assert_eq!(e.hard_loss, HARD_FLOOR, "resets are not hard failures");
        // An outage (a long run) leaves the estimate where it was.
        let before = e.loss;
        for _ in 0..=MAX_LOSS_RUN {
            e.on_failure(FailureClass::Timeout);
        }
        e.on_success(true);
        assert!(e.loss <= before, "{} > {before}", e.loss);
    }

    #[test]
    fn the_odd_http_error_raises_the_hard_estimate() {
        let mut e = Evidence::default();
        e.on_failure(FailureClass::HttpStatus);
        e.on_success(true);
        assert!(e.llr > 0.0, "one success does not erase a hard failure entirely");
        e.on_success(true);
        e.on_success(true);
        assert_eq!(e.llr, 0.0);
        assert!(e.hard_loss > 0.01, "{}", e.hard_loss);
        let info = EvidenceInfo::of(&e, 2);
        assert_eq!(info.hard_failures_needed, 3, "{info:?}");
        assert_eq!(info.soft_failures_needed, 3, "{info:?}");
    }
}
