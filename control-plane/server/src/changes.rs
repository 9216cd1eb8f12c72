//! The change driver (issue [8]): on the leader, every tick, each active change is
//! observed (the time, whether every agent ACKed a plan that carries the change's
//! current rung, the step's analysis), advanced by the pure state machine in
//! `meridian_engine::change`, its effect carried out (a rung's drain intent, or the
//! intents from before), and the new record stored with a compare-and-set fenced by
//! this leadership. A new leader picks each record up where it was stored.
//!
//! Analysis, per step: every PoP that received traffic in the plan the agents
//! ACKed for the rung is still healthy now (DOWN fails — even when steering has
//! since moved its traffic away —, UNKNOWN is inconclusive: missing data is never a
//! pass) and no PoP of the current plan is above the target utilisation.

use std::time::Duration;

use meridian_core::records::{AgentRecord, PopState, StoredPlan};
use meridian_engine::change::{
    self, ChangeKind, ChangePolicy, ChangeRecord, ChangeState, Check, Effect, Observed, Phase,
};
use meridian_health::PopVerdict;
use tokio_util::sync::CancellationToken;

use crate::ops::changes::StoredChange;
use crate::replica::ReplicaContext;

/// How often the driver looks at the active changes.
const TICK: Duration = Duration::from_millis(200);

/// Ended changes kept in the store (the oldest beyond this are deleted).
const KEEP_ENDED: usize = 1000;

/// Runs the driver until `shutdown`; it acts only while this replica leads.
pub(crate) async fn run(ctx: ReplicaContext, policy: ChangePolicy, shutdown: CancellationToken) -> Result<(), String> {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let Some(fence) = ctx.leadership.borrow().fence.clone() else {
            continue;
        };
        let changes = match ctx.ops.list_changes().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "change driver: cannot list changes");
                continue;
            }
        };
        let prune = change::to_prune(changes.iter().map(|c| &c.record), KEEP_ENDED);
        if !prune.is_empty() {
            match ctx.ops.delete_changes(&fence, &prune).await {
                Ok(()) => {
                    metrics::counter!("meridian_control_plane_changes_pruned_total").increment(prune.len() as u64)
                }
                Err(e) => tracing::warn!(error = %e, "change driver: cannot prune ended changes"),
            }
        }
        let active: Vec<&str> = changes
            .iter()
            .filter(|c| c.record.state.is_active())
            .map(|c| c.record.id.as_str())
            .collect();
        if let Err(e) = ctx.ops.clean_up_hold(&fence, &active).await {
            tracing::warn!(error = %e, "change driver: cannot clean up the fleet hold");
        }
        // Automatic changes (failover, failback) are carried out by steering and
        // only recorded; the driver walks operator changes.
        for stored in changes
            .into_iter()
            .filter(|c| c.record.state.is_active() && !c.record.kind.is_automatic())
        {
            if let Err(e) = drive(&ctx, &fence, &policy, stored).await {
                tracing::warn!(error = %e, "change driver: a step failed; retried next tick");
            }
        }
    }
}

async fn drive(
    ctx: &ReplicaContext,
    fence: &meridian_store::Fence,
    policy: &ChangePolicy,
    stored: StoredChange,
) -> Result<(), crate::ops::OpError> {
    let record = &stored.record;
    let obs = observe(ctx, record).await;
    let advance = change::advance(record, &obs, policy);
    if let Some(effect) = &advance.effect {
        match effect {
            Effect::SetWeight { step, weight_percent } => {
                ctx.ops.write_rung(fence, record, *step, *weight_percent).await?
            }
            Effect::RestoreBefore => ctx.ops.restore_before(fence, record).await?,
            Effect::ReleaseFleet => ctx.ops.release_fleet(fence, record).await?,
        }
    }
    if let Some(next) = advance.record {
        if ctx.ops.store_change(fence, &next, stored.mod_revision).await? {
            metrics::counter!("meridian_control_plane_change_transitions_total", "to" => next.state.name())
                .increment(1);
            ctx.ops.record_transition(None, record, &next);
        }
    }
    Ok(())
}

/// Whether `plan` carries the current step of `record`: a topology newer than the
/// one the apply replaced, its capacity override, a
/// full drain (for every region: the PoP DRAINED; for some: no weight in them) or
/// a ladder rung (noted in the plan's reasons).
fn reflects(plan: &StoredPlan, record: &ChangeRecord, weight: u8) -> bool {
    let pop = record.target.as_str();
    if record.kind == ChangeKind::TopologyApply {
        return plan.topology_revision > record.topology_revision.unwrap_or(0);
    }
    if record.kind == ChangeKind::SetCapacity {
        let Some(want) = record.capacity.as_ref().map(|c| c.capacity) else {
            return false;
        };
        return plan
            .pops
            .iter()
            .any(|p| p.pop == pop && (p.capacity - want).abs() < 1e-9);
    }
    match (weight, record.regions.is_empty()) {
        (0, true) => plan.pops.iter().any(|p| p.pop == pop && p.state == PopState::Drained),
        (0, false) => record.regions.iter().all(|region| {
            plan.regions
                .iter()
                .find(|r| &r.region == region)
                .is_some_and(|r| r.pops.iter().all(|w| w.pop != pop || w.weight == 0.0))
        }),
        _ => {
            let note = format!("drain ladder: {pop} at {weight}%");
            plan.reasons.iter().any(|r| r.contains(&note))
        }
    }
}

async fn observe(ctx: &ReplicaContext, record: &ChangeRecord) -> Observed {
    let now_ms = ctx.ops.clock.now_ms();
    let mut obs = Observed {
        now_ms,
        acked: None,
        acked_version: 0,
        missing_acks: Vec::new(),
        analysis: Vec::new(),
        canary_nacks: Vec::new(),
        fleet_held: None,
    };
    let ChangeState::Progressing { phase, .. } = &record.state else {
        return obs;
    };
    let plan = ctx.plan.borrow().clone();
    let canary_phase = matches!(
        phase,
        Phase::AwaitCanary { .. } | Phase::CanaryBake { .. } | Phase::CanaryAnalyse { .. }
    );
    // In a canary phase: is the fleet still held for this change (read from the
    // store, not the follower, which may lag the hold just written), and did a
    // canary agent NACK a plan newer than the one the fleet is held on?
    let mut agents = None;
    if canary_phase {
        match ctx.ops.read_hold().await {
            Ok(hold) => {
                let ours = hold.filter(|h| h.hold.change == record.id);
                obs.fleet_held = Some(ours.is_some());
                if let Some(h) = ours {
                    match crate::plan_api::list_agents(ctx.store.as_ref(), &ctx.keys).await {
                        Ok(list) => {
                            obs.canary_nacks = list
                                .iter()
                                .filter(|(_, a)| h.hold.canary.contains(&a.agent_id))
                                .filter(|(_, a)| a.nacked_version > h.hold.fleet_version)
                                .map(|(_, a)| format!("{} NACKed v{}: {}", a.agent_id, a.nacked_version, a.nack_reason))
                                .collect();
                            agents = Some(list);
                        }
                        Err(e) => tracing::debug!(error = %e, "change driver: cannot read the agents"),
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "change driver: cannot read the fleet hold"),
        }
    }
    let wave: Option<&[String]> = record.canary.as_ref().map(|w| w.agents.as_slice());
    match phase {
        Phase::AwaitAcks { .. } | Phase::AwaitCanary { .. } => {
            let (Some(plan), Some(weight)) = (plan, record.current_weight()) else {
                return obs;
            };
            if !reflects(&plan, record, weight) {
                obs.acked = Some(false);
                return obs;
            }
            let list = match agents {
                Some(list) => list,
                None => match crate::plan_api::list_agents(ctx.store.as_ref(), &ctx.keys).await {
                    Ok(list) => list,
                    Err(e) => {
                        tracing::debug!(error = %e, "change driver: cannot read the agents");
                        return obs;
                    }
                },
            };
            obs.missing_acks = if matches!(phase, Phase::AwaitCanary { .. }) {
                // Every agent of the wave, connected and holding the step's plan.
                wave.unwrap_or_default()
                    .iter()
                    .filter(|id| {
                        !list
                            .iter()
                            .any(|(_, a)| &a.agent_id == *id && a.applied_version >= plan.version)
                    })
                    .cloned()
                    .collect()
            } else {
                list.into_iter()
                    .filter(|(_, a)| a.applied_version < plan.version)
                    .map(|(_, a)| a.agent_id)
                    .collect()
            };
            obs.acked = Some(obs.missing_acks.is_empty());
            obs.acked_version = plan.version;
        }
        Phase::Analyse { plan_version } | Phase::CanaryAnalyse { plan_version } => {
            let acked = match *plan_version {
                0 => None,
                v => crate::plans::load(ctx.store.as_ref(), &ctx.keys, v).await.ok(),
            };
            obs.analysis = analyse(ctx, record, acked.as_ref().or(plan.as_deref()), plan.as_deref());
            // Anycast agents announcing the target's prefixes must have done what the
            // rung's plan asks (issue [9]).
            let listed = match agents.take() {
                Some(list) => Some(list),
                None => crate::plan_api::list_agents(ctx.store.as_ref(), &ctx.keys).await.ok(),
            };
            let prefixes: Vec<String> = ctx
                .topology
                .borrow()
                .doc
                .pop(&record.target)
                .map(|p| p.anycast_prefixes.iter().map(|n| n.to_string()).collect())
                .unwrap_or_default();
            match (listed.as_ref(), *plan_version) {
                (Some(list), v) if v > 0 => {
                    if let Some(check) = anycast_check(list, &prefixes, v) {
                        obs.analysis.push(("anycast".into(), check));
                    }
                }
                (None, _) if !prefixes.is_empty() => obs.analysis.push((
                    "anycast".into(),
                    Check::Inconclusive("the agents' Anycast reports could not be read".into()),
                )),
                _ => {}
            }
            agents = listed;
            if let (Phase::CanaryAnalyse { plan_version }, Some(wave)) = (phase, wave) {
                let check = match agents.as_ref() {
                    Some(list) => canary_agents(wave, *plan_version, list),
                    None => Check::Inconclusive("the canary agents could not be read".into()),
                };
                obs.analysis.push(("canary_agents".into(), check));
            }
        }
        Phase::Apply | Phase::Bake { .. } | Phase::CanaryBake { .. } => {}
    }
    obs
}

/// Whether the Anycast agents that report the target's `prefixes` announce what the
/// rung's plan `version` (or a newer one) asks: `None` when no agent reports them (no
/// Anycast agent deployed for them); a report older than the plan, or out of sync,
/// is inconclusive — the speaker may still be converging, or refused by its own
/// safety rules (its detail says which).
fn anycast_check(agents: &[(String, AgentRecord)], prefixes: &[String], version: u64) -> Option<Check> {
    let reports: Vec<(&str, &meridian_core::records::AnycastPrefixStatus)> = agents
        .iter()
        .flat_map(|(_, a)| a.anycast.iter().map(move |p| (a.agent_id.as_str(), p)))
        .filter(|(_, p)| prefixes.contains(&p.prefix))
        .collect();
    if reports.is_empty() {
        return None;
    }
    let mut unsure = Vec::new();
    for (agent, p) in reports {
        if p.plan_version < version {
            unsure.push(format!("{agent} reported {} on v{} only", p.prefix, p.plan_version));
        } else if !p.in_sync() {
            unsure.push(format!(
                "{agent}: {} desired {:?}×{} but announces {:?}×{}{}",
                p.prefix,
                p.desired,
                p.desired_prepend,
                p.actual,
                p.actual_prepend,
                if p.detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", p.detail)
                }
            ));
        }
    }
    Some(if unsure.is_empty() {
        Check::Pass
    } else {
        Check::Inconclusive(unsure.join("; "))
    })
}

/// The canary wave after its bake: every agent of it still connected and holding
/// the step's plan (or a newer one). One that went away or fell back fails the
/// step: an agent lost right after a new plan is what a canary exists to catch.
fn canary_agents(wave: &[String], plan_version: u64, agents: &[(String, AgentRecord)]) -> Check {
    let mut gone = Vec::new();
    let mut behind = Vec::new();
    for id in wave {
        match agents.iter().find(|(_, a)| &a.agent_id == id) {
            None => gone.push(id.as_str()),
            Some((_, a)) if a.applied_version < plan_version => behind.push(format!("{id} (v{})", a.applied_version)),
            Some(_) => {}
        }
    }
    if !gone.is_empty() {
        return Check::Fail(format!(
            "canary agent(s) disconnected during the bake: {}",
            gone.join(", ")
        ));
    }
    if !behind.is_empty() {
        return Check::Fail(format!(
            "canary agent(s) no longer serve the step's plan v{plan_version}: {}",
            behind.join(", ")
        ));
    }
    Check::Pass
}

/// `acked`: the plan the agents ACKed for the rung (whose receivers are watched);
/// `current`: the plan in force (whose utilisation is checked).
fn analyse(
    ctx: &ReplicaContext,
    record: &ChangeRecord,
    acked: Option<&StoredPlan>,
    current: Option<&StoredPlan>,
) -> Vec<(String, Check)> {
    let (Some(acked), Some(plan)) = (acked, current) else {
        return vec![("plan".into(), Check::Inconclusive("no plan is published".into()))];
    };
    let health = ctx.ops.health.snapshot();
    let receivers: std::collections::BTreeSet<&str> = acked
        .regions
        .iter()
        .flat_map(|r| r.pops.iter().filter(|w| w.weight > 0.0).map(|w| w.pop.as_str()))
        .filter(|p| *p != record.target)
        .collect();
    let mut down = Vec::new();
    let mut unknown = Vec::new();
    for pop in &receivers {
        match health.verdict(pop) {
            PopVerdict::Down => down.push(*pop),
            PopVerdict::Unknown => unknown.push(*pop),
            PopVerdict::Up | PopVerdict::Degraded { .. } => {}
        }
    }
    let receivers_healthy = if !down.is_empty() {
        Check::Fail(format!("receiving PoP(s) DOWN: {}", down.join(", ")))
    } else if !unknown.is_empty() {
        Check::Inconclusive(format!("no health data for receiving PoP(s) {}", unknown.join(", ")))
    } else {
        Check::Pass
    };
    let target = ctx.topology.borrow().doc.policy.target_utilisation;
    let hot: Vec<String> = plan
        .pops
        .iter()
        .filter(|p| p.utilisation > target + 1e-9)
        .map(|p| format!("{} at {:.0}%", p.pop, p.utilisation * 100.0))
        .collect();
    let utilisation = if hot.is_empty() {
        Check::Pass
    } else {
        Check::Fail(format!(
            "above the target utilisation of {:.0}%: {}",
            target * 100.0,
            hot.join(", ")
        ))
    };
    vec![
        ("receivers_healthy".into(), receivers_healthy),
        ("utilisation".into(), utilisation),
    ]
}
