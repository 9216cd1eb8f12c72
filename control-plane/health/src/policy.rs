//! The knobs of health aggregation, with defaults and validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How results become verdicts. Every field has a default, so a config file names
/// only what it changes; durations are written like `"5s"` or `"250ms"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthPolicy {
    /// Consecutive successes that turn an endpoint (per prober) UP.
    pub rise: u32,
    /// Consecutive timeouts or resets that turn a clean endpoint (per prober) DOWN;
    /// the DOWN threshold of the sequential test (see [`crate::evidence`]). Hard
    /// failures and lossy endpoints are weighed from it.
    pub fall: u32,
    /// A prober's view of an endpoint is fresh while its latest result is younger
    /// than this. Stale views do not vote.
    #[serde(with = "humantime_serde")]
    pub freshness: Duration,
    /// A PoP is DOWN only when more than this share of the fresh, non-suspect
    /// regions with a known state say DOWN.
    pub quorum: f64,
    /// Fewer fresh, non-suspect regions with a known state than this make a PoP
    /// UNKNOWN.
    pub min_regions: usize,
    /// A region whose share of DOWN PoPs reaches this becomes suspect (unless the
    /// other regions agree). It recovers below half of this share.
    pub suspect_share: f64,
    /// A region is judged only when it has a known state for at least this many
    /// PoPs.
    pub suspect_min_pops: usize,
    /// Results stamped further than this in the future are rejected.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Results older than this are rejected.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Weight of the newest sample in the latency EWMA, in (0, 1].
    pub latency_alpha: f64,
    /// Recent results kept per (PoP, endpoint, prober) for `explain`.
    pub history: usize,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            rise: 2,
            fall: 3,
            freshness: Duration::from_secs(5),
            quorum: 0.5,
            min_regions: 2,
            suspect_share: 0.5,
            suspect_min_pops: 3,
            max_future_skew: Duration::from_secs(2),
            max_age: Duration::from_secs(60),
            latency_alpha: 0.3,
            history: 10,
        }
    }
}

/// A policy field out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("health policy `{field}` = {value}: expected {expected}")]
pub struct PolicyError {
    pub field: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// Upper bound on `rise`, `fall` and `history`: far beyond any sane setting, low
/// enough that a typo cannot make the state grow without bound.
const MAX_COUNT: usize = 1_000;

impl HealthPolicy {
    /// Checks every field; the error names the first field out of range.
    pub fn validate(self) -> Result<Self, PolicyError> {
        fn err(field: &'static str, value: impl std::fmt::Debug, expected: &'static str) -> Result<(), PolicyError> {
            Err(PolicyError {
                field,
                value: format!("{value:?}"),
                expected,
            })
        }
        let count_ok = |n: usize| (1..=MAX_COUNT).contains(&n);
        if !count_ok(self.rise as usize) {
            err("rise", self.rise, "an integer from 1 to 1000")?;
        }
        if !count_ok(self.fall as usize) {
            err("fall", self.fall, "an integer from 1 to 1000")?;
        }
        if self.freshness.is_zero() {
            err("freshness", self.freshness, "a duration above zero")?;
        }
        if !(0.0..1.0).contains(&self.quorum) {
            err(
                "quorum",
                self.quorum,
                "a share in [0, 1): DOWN needs more than this share",
            )?;
        }
        if self.min_regions == 0 {
            err("min_regions", self.min_regions, "at least 1")?;
        }
        if !(self.suspect_share > 0.0 && self.suspect_share <= 1.0) {
            err("suspect_share", self.suspect_share, "a share in (0, 1]")?;
        }
        if self.suspect_min_pops == 0 {
            err("suspect_min_pops", self.suspect_min_pops, "at least 1")?;
        }
        if self.max_age < self.freshness {
            err(
                "max_age",
                self.max_age,
                "at least `freshness`, or fresh results would be rejected",
            )?;
        }
        if !(self.latency_alpha > 0.0 && self.latency_alpha <= 1.0) {
            err("latency_alpha", self.latency_alpha, "a weight in (0, 1]")?;
        }
        if !count_ok(self.history) {
            err("history", self.history, "an integer from 1 to 1000")?;
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_deserialize_from_nothing() {
        let p: HealthPolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(p, HealthPolicy::default());
        p.validate().unwrap();
    }

    #[test]
    fn durations_are_human_readable() {
        let p: HealthPolicy = serde_json::from_str(r#"{"freshness": "3s 500ms", "fall": 3}"#).unwrap();
        assert_eq!(p.freshness, Duration::from_millis(3_500));
        assert_eq!(p.fall, 3);
        assert_eq!(p.rise, 2);
        let json = serde_json::to_string(&HealthPolicy::default()).unwrap();
        assert!(json.contains(r#""freshness":"5s""#), "{json}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = serde_json::from_str::<HealthPolicy>(r#"{"qourum": 0.5}"#).unwrap_err();
        assert!(e.to_string().contains("qourum"), "{e}");
    }

    #[test]
    fn each_out_of_range_field_is_named() {
        type Tweak = fn(&mut HealthPolicy);
        let cases: &[(&str, Tweak)] = &[
            ("rise", |p| p.rise = 0),
            ("fall", |p| p.fall = 1_001),
            ("freshness", |p| p.freshness = Duration::ZERO),
            ("quorum", |p| p.quorum = 1.0),
            ("quorum", |p| p.quorum = -0.1),
            ("quorum", |p| p.quorum = f64::NAN),
            ("min_regions", |p| p.min_regions = 0),
            ("suspect_share", |p| p.suspect_share = 0.0),
            ("suspect_share", |p| p.suspect_share = 1.5),
            ("suspect_min_pops", |p| p.suspect_min_pops = 0),
            ("max_age", |p| p.max_age = Duration::from_secs(1)),
            ("latency_alpha", |p| p.latency_alpha = 0.0),
            ("latency_alpha", |p| p.latency_alpha = f64::NAN),
            ("history", |p| p.history = 0),
        ];
        for (field, tweak) in cases {
            let mut p = HealthPolicy::default();
            tweak(&mut p);
            let e = p.validate().unwrap_err();
            assert_eq!(e.field, *field, "{e}");
            assert!(e.to_string().contains(&format!("`{field}`")), "{e}");
        }
    }
}
