//! One reconcile against the speaker: read what it announces, ask the pure core
//! what to change, change it, read it back, and say per prefix what was asked and
//! what is there (the report, the gauges). The daemon calls it on every plan and on
//! a timer; the integration tests call it directly against real gobgpd.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;
use meridian_dns_core::plan::AnycastAction;
use meridian_edge_agent::report::AnycastPrefixReport;

use crate::backend::Backend;
use crate::core::{self, action_of, Announced, AnycastPlan, Op, Route};
use crate::metrics as m;

/// Drives one speaker for one PoP, remembering what it meant to announce.
pub struct Reconciler<B> {
    pop: String,
    backend: Arc<B>,
    /// What the previous reconcile meant to announce ([`core::Decision::kept`]).
    kept: Announced,
    /// The previous reconcile's target per prefix, to tell drift (the speaker
    /// changed under an unchanged target) from a new plan.
    targets: BTreeMap<IpNet, Option<Route>>,
    /// Prefixes gauged, so one that leaves is zeroed.
    gauged: Vec<IpNet>,
}

/// What one reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The speaker now announces every target (no error). False before any plan.
    pub applied: bool,
    /// Changes were made on the speaker.
    pub changed: bool,
    /// Changes that put back what the speaker lost or altered by itself or by hand.
    pub drift_corrections: usize,
    /// Speaker errors, as text.
    pub errors: Vec<String>,
    /// Per prefix, desired vs actual (`None`: nothing to say, no plan yet or the
    /// speaker could not be read).
    pub report: Option<Vec<AnycastPrefixReport>>,
}

impl<B: Backend> Reconciler<B> {
    pub fn new(pop: impl Into<String>, backend: Arc<B>) -> Self {
        Reconciler {
            pop: pop.into(),
            backend,
            kept: Announced::new(),
            targets: BTreeMap::new(),
            gauged: Vec::new(),
        }
    }

    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// Brings the speaker to what `plan` asks, under the safety rules. `None`
    /// (no plan applied yet) changes nothing.
    pub async fn reconcile(&mut self, plan: Option<&AnycastPlan>) -> Outcome {
        self.run(plan, false).await
    }

    /// At shutdown with `withdraw_on_shutdown`: withdraws every prefix another PoP
    /// announces, keeps the rest (the last-announcer rule).
    pub async fn withdraw_for_shutdown(&mut self, plan: Option<&AnycastPlan>) -> Outcome {
        self.run(plan, true).await
    }

    async fn run(&mut self, plan: Option<&AnycastPlan>, shutdown: bool) -> Outcome {
        let started = Instant::now();
        let mut out = Outcome::default();
        let actual = match self.backend.list().await {
            Ok(a) => a,
            Err(e) => {
                metrics::counter!(m::RECONCILE_ERRORS, "op" => "list", "kind" => e.kind()).increment(1);
                out.errors.push(e.to_string());
                return out;
            }
        };
        let decision = if shutdown {
            core::decide_shutdown(&self.pop, plan, &actual, &self.kept)
        } else {
            core::decide(&self.pop, plan, &actual, &self.kept)
        };
        let mut failed: BTreeMap<IpNet, String> = BTreeMap::new();
        for op in &decision.ops {
            let prefix = op.prefix();
            let target = match op {
                Op::Announce { route, .. } => Some(*route),
                Op::Withdraw { .. } => None,
            };
            let drift = self.targets.get(&prefix) == Some(&target);
            let (name, result) = match *op {
                Op::Announce { prefix, route } => ("announce", self.backend.announce(prefix, route).await),
                Op::Withdraw { prefix } => ("withdraw", self.backend.withdraw(prefix).await),
            };
            out.changed = true;
            match result {
                Ok(()) => {
                    if drift {
                        out.drift_corrections += 1;
                        metrics::counter!(m::DRIFT_CORRECTIONS, "prefix" => prefix.to_string()).increment(1);
                        tracing::warn!(%prefix, ?target, "the speaker had changed under the agent; put back");
                    } else {
                        tracing::info!(%prefix, op = name, ?target, plan = plan.map(|p| p.version), "speaker updated");
                    }
                }
                Err(e) => {
                    metrics::counter!(m::RECONCILE_ERRORS, "op" => name, "kind" => e.kind()).increment(1);
                    tracing::error!(%prefix, op = name, error = %e, "the speaker did not take the change");
                    failed.insert(prefix, e.to_string());
                    out.errors.push(format!("{name} {prefix}: {e}"));
                }
            }
        }
        // What is really there now (the speaker may have refused or altered a path).
        let after = if out.changed {
            match self.backend.list().await {
                Ok(a) => a,
                Err(e) => {
                    metrics::counter!(m::RECONCILE_ERRORS, "op" => "list", "kind" => e.kind()).increment(1);
                    out.errors.push(e.to_string());
                    return out;
                }
            }
        } else {
            actual
        };
        for d in &decision.prefixes {
            if let Some(why) = &d.refusal {
                if self.targets.get(&d.prefix) != Some(&d.target) || out.changed {
                    tracing::warn!(prefix = %d.prefix, reason = %why, "keeping the route");
                }
            }
        }
        self.kept = decision.kept.clone();
        self.targets = decision.prefixes.iter().map(|d| (d.prefix, d.target)).collect();
        let Some(plan) = plan else {
            return out;
        };
        let mut report = Vec::with_capacity(decision.prefixes.len());
        let mut all_there = true;
        for d in &decision.prefixes {
            let now = after.get(&d.prefix).copied();
            let (actual_action, actual_prepend) = action_of(now);
            let detail = if let Some(e) = failed.get(&d.prefix) {
                format!("speaker error: {e}")
            } else if now != d.target {
                let (want, n) = action_of(d.target);
                format!(
                    "the speaker shows {} ×{actual_prepend}, expected {} ×{n}",
                    actual_action.as_str(),
                    want.as_str()
                )
            } else if let Some(why) = &d.refusal {
                why.clone()
            } else {
                String::new()
            };
            if now != d.target {
                all_there = false;
            }
            if d.refusal.is_some() && out.changed {
                metrics::counter!(m::REFUSALS).increment(1);
            }
            report.push(AnycastPrefixReport {
                prefix: d.prefix.to_string(),
                desired: d.desired.0,
                desired_prepend: d.desired.1,
                actual: actual_action,
                actual_prepend,
                detail,
                plan_version: plan.version,
            });
        }
        out.applied = all_there && out.errors.is_empty();
        self.gauge(&report);
        metrics::histogram!(m::RECONCILE_DURATION).record(started.elapsed().as_secs_f64());
        out.report = Some(report);
        out
    }

    fn gauge(&mut self, report: &[AnycastPrefixReport]) {
        const ACTIONS: [AnycastAction; 4] = [
            AnycastAction::Announce,
            AnycastAction::Prepend,
            AnycastAction::GracefulShutdown,
            AnycastAction::Withdraw,
        ];
        let set = |prefix: &str, side: &'static str, current: Option<AnycastAction>, prepends: u32| {
            for a in ACTIONS {
                let v = if Some(a) == current { 1.0 } else { 0.0 };
                metrics::gauge!(m::PREFIX_STATE, "prefix" => prefix.to_string(), "side" => side, "action" => a.as_str())
                    .set(v);
            }
            metrics::gauge!(m::PREFIX_PREPENDS, "prefix" => prefix.to_string(), "side" => side)
                .set(f64::from(prepends));
        };
        let mut now: Vec<IpNet> = Vec::new();
        for r in report {
            set(&r.prefix, "desired", Some(r.desired), r.desired_prepend);
            set(&r.prefix, "actual", Some(r.actual), r.actual_prepend);
            let in_sync = r.desired == r.actual && r.desired_prepend == r.actual_prepend;
            metrics::gauge!(m::PREFIX_IN_SYNC, "prefix" => r.prefix.clone()).set(if in_sync { 1.0 } else { 0.0 });
            if let Ok(p) = r.prefix.parse() {
                now.push(p);
            }
        }
        for gone in self.gauged.iter().filter(|p| !now.contains(p)) {
            let p = gone.to_string();
            set(&p, "desired", None, 0);
            set(&p, "actual", None, 0);
            metrics::gauge!(m::PREFIX_IN_SYNC, "prefix" => p).set(0.0);
        }
        self.gauged = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Recording;
    use meridian_dns_core::plan::AnycastSnapshot;

    const P: &str = "198.51.100.0/24";

    fn plan(version: u64, ours: AnycastAction, n: u32, theirs: AnycastAction) -> AnycastPlan {
        let e = |pop: &str, action, prepend_count| AnycastSnapshot {
            pop: pop.into(),
            prefix: P.parse().unwrap(),
            action,
            prepend_count,
        };
        AnycastPlan {
            version,
            entries: vec![e("fra1", ours, n), e("ams1", theirs, 0)],
        }
    }

    #[tokio::test]
    async fn reconciles_reports_and_counts_drift() {
        let speaker = Arc::new(Recording::default());
        let mut r = Reconciler::new("fra1", speaker.clone());
        let out = r.reconcile(None).await;
        assert_eq!(out, Outcome::default(), "nothing before the first plan");
        assert!(speaker.calls.lock().unwrap().is_empty());

        let out = r
            .reconcile(Some(&plan(1, AnycastAction::Prepend, 3, AnycastAction::Announce)))
            .await;
        assert!(out.applied && out.changed && out.drift_corrections == 0, "{out:?}");
        let report = out.report.unwrap();
        assert_eq!(
            (report[0].actual, report[0].actual_prepend, report[0].detail.as_str()),
            (AnycastAction::Prepend, 3, "")
        );
        // Nothing to do the second time.
        let out = r
            .reconcile(Some(&plan(1, AnycastAction::Prepend, 3, AnycastAction::Announce)))
            .await;
        assert!(out.applied && !out.changed);
        // Deleted by hand: put back, counted as drift.
        speaker.routes.lock().unwrap().clear();
        let out = r
            .reconcile(Some(&plan(1, AnycastAction::Prepend, 3, AnycastAction::Announce)))
            .await;
        assert_eq!(out.drift_corrections, 1);
        assert!(out.applied);
        // A refused withdraw is reported, and the route stays.
        let out = r
            .reconcile(Some(&plan(2, AnycastAction::Withdraw, 0, AnycastAction::Withdraw)))
            .await;
        assert!(out.applied && !out.changed);
        let report = out.report.unwrap();
        assert_eq!(report[0].desired, AnycastAction::Withdraw);
        assert_eq!(report[0].actual, AnycastAction::Prepend);
        assert!(report[0].detail.contains("last announcer"), "{}", report[0].detail);
        // A speaker error is reported and the plan is not applied.
        speaker.fail.store(true, std::sync::atomic::Ordering::Relaxed);
        let out = r
            .reconcile(Some(&plan(3, AnycastAction::Withdraw, 0, AnycastAction::Announce)))
            .await;
        assert!(!out.applied && out.report.is_none() && !out.errors.is_empty());
        speaker.fail.store(false, std::sync::atomic::Ordering::Relaxed);
        let out = r
            .reconcile(Some(&plan(3, AnycastAction::Withdraw, 0, AnycastAction::Announce)))
            .await;
        assert!(out.applied && out.changed);
        assert!(speaker.routes.lock().unwrap().is_empty());
        assert_eq!(
            speaker.calls.lock().unwrap().clone(),
            [
                "announce 198.51.100.0/24 prepends=3 gshut=false",
                "announce 198.51.100.0/24 prepends=3 gshut=false",
                "withdraw 198.51.100.0/24",
            ]
        );
    }
}
