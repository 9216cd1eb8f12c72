//! Failback as slow start: a PoP whose health comes back re-enters the plan through
//! stages of reduced weight (for example 10 % → 50 % → 100 %), each held for a bake
//! time, and the recovery aborts if the PoP fails again.
//!
//! Failing over is immediate; failing back is staged (DESIGN.md, "Changes"). This is
//! the first staged change: a pure state machine with time passed in, which the
//! steering loop consults to blend the plan *with* the recovering PoPs and the plan
//! *without* them (`weight = f · with + (1 − f) · without`), so the PoP's share of
//! every region is at most `f` of what it will finally get.
//!
//! Rejected alternative: scaling the PoP's capacity by the stage factor. A region
//! whose demand is small next to the PoP's capacity would then move all its traffic
//! back at once — exactly the cliff slow start exists to avoid.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The stages and how long each is held.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlowStartPolicy {
    /// Increasing weight factors in (0, 1]; the last is normally 1.0.
    pub stages: Vec<f64>,
    /// How long each stage bakes before the next.
    pub bake: Duration,
}

/// What changed for one PoP.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SlowStartEvent {
    Started {
        pop: String,
        factor: f64,
    },
    Advanced {
        pop: String,
        stage: usize,
        factor: f64,
    },
    Completed {
        pop: String,
    },
    /// It failed again while recovering: back out at once.
    Aborted {
        pop: String,
        stage: usize,
    },
}

#[derive(Clone, Debug, PartialEq)]
struct Recovery {
    stage: usize,
    stage_since_ms: u64,
}

/// Per-PoP recovery progress.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlowStart {
    recovering: BTreeMap<String, Recovery>,
    /// PoPs last seen removed by health (DOWN): their return starts a recovery.
    removed: BTreeMap<String, bool>,
}

impl SlowStart {
    /// Feeds one PoP's current health (`down`: health removes it) at `now_ms`; call
    /// for every PoP on every evaluation. Returns what changed.
    pub fn observe(&mut self, pop: &str, down: bool, now_ms: u64, policy: &SlowStartPolicy) -> Option<SlowStartEvent> {
        let was_down = self.removed.insert(pop.to_string(), down).unwrap_or(false);
        if down {
            return self.recovering.remove(pop).map(|r| SlowStartEvent::Aborted {
                pop: pop.to_string(),
                stage: r.stage,
            });
        }
        if was_down && !policy.stages.is_empty() {
            self.recovering.insert(
                pop.to_string(),
                Recovery {
                    stage: 0,
                    stage_since_ms: now_ms,
                },
            );
            return Some(SlowStartEvent::Started {
                pop: pop.to_string(),
                factor: policy.stages[0],
            });
        }
        let r = self.recovering.get_mut(pop)?;
        if now_ms.saturating_sub(r.stage_since_ms) < policy.bake.as_millis() as u64 {
            return None;
        }
        r.stage += 1;
        r.stage_since_ms = now_ms;
        match policy.stages.get(r.stage) {
            Some(f) if *f < 1.0 => Some(SlowStartEvent::Advanced {
                pop: pop.to_string(),
                stage: r.stage,
                factor: *f,
            }),
            _ => {
                self.recovering.remove(pop);
                Some(SlowStartEvent::Completed { pop: pop.to_string() })
            }
        }
    }

    /// Whether this PoP's health has been observed at all.
    pub fn knows(&self, pop: &str) -> bool {
        self.removed.contains_key(pop)
    }

    /// Forgets PoPs that are no longer in the topology.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.recovering.retain(|p, _| keep(p));
        self.removed.retain(|p, _| keep(p));
    }

    /// The weight factor of a recovering PoP (`None` when it is not recovering).
    pub fn factor(&self, pop: &str, policy: &SlowStartPolicy) -> Option<f64> {
        self.recovering
            .get(pop)
            .map(|r| policy.stages.get(r.stage).copied().unwrap_or(1.0))
    }

    /// The recovering PoPs with their factors.
    pub fn recovering(&self, policy: &SlowStartPolicy) -> BTreeMap<String, f64> {
        self.recovering
            .keys()
            .filter_map(|p| self.factor(p, policy).map(|f| (p.clone(), f)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SlowStartPolicy {
        SlowStartPolicy {
            stages: vec![0.1, 0.5, 1.0],
            bake: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_returning_pop_steps_up_through_the_stages_with_bake_time() {
        let p = policy();
        let mut s = SlowStart::default();
        assert_eq!(
            s.observe("fra1", false, 0, &p),
            None,
            "a PoP that was never down does not slow-start"
        );
        assert_eq!(s.observe("fra1", true, 1_000, &p), None);
        assert_eq!(
            s.observe("fra1", false, 2_000, &p),
            Some(SlowStartEvent::Started {
                pop: "fra1".into(),
                factor: 0.1
            })
        );
        assert_eq!(s.factor("fra1", &p), Some(0.1));
        assert_eq!(s.observe("fra1", false, 11_999, &p), None, "bake time not over");
        assert_eq!(
            s.observe("fra1", false, 12_000, &p),
            Some(SlowStartEvent::Advanced {
                pop: "fra1".into(),
                stage: 1,
                factor: 0.5
            })
        );
        assert_eq!(s.factor("fra1", &p), Some(0.5));
        assert_eq!(
            s.observe("fra1", false, 22_000, &p),
            Some(SlowStartEvent::Completed { pop: "fra1".into() })
        );
        assert_eq!(s.factor("fra1", &p), None);
        assert_eq!(s.observe("fra1", false, 40_000, &p), None);
    }

    #[test]
    fn failing_again_aborts_the_recovery() {
        let p = policy();
        let mut s = SlowStart::default();
        s.observe("fra1", true, 0, &p);
        s.observe("fra1", false, 1_000, &p);
        assert_eq!(
            s.observe("fra1", true, 2_000, &p),
            Some(SlowStartEvent::Aborted {
                pop: "fra1".into(),
                stage: 0
            })
        );
        assert_eq!(s.factor("fra1", &p), None);
        // Coming back again starts over at the first stage.
        assert!(matches!(
            s.observe("fra1", false, 3_000, &p),
            Some(SlowStartEvent::Started { .. })
        ));
        assert_eq!(s.factor("fra1", &p), Some(0.1));
    }

    #[test]
    fn no_stages_means_no_slow_start() {
        let p = SlowStartPolicy {
            stages: vec![],
            bake: Duration::from_secs(1),
        };
        let mut s = SlowStart::default();
        s.observe("x", true, 0, &p);
        assert_eq!(s.observe("x", false, 1, &p), None);
        assert_eq!(s.factor("x", &p), None);
    }
}
