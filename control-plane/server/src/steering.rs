//! The steering loop: on the leader, turns topology, health verdicts, latency
//! estimates and drains into a plan with the pure [`meridian_steering`] core, and
//! publishes a new version only when the plan really changed (a state, an Anycast
//! intent, a guardrail, or a weight by more than the policy's threshold).
//!
//! The same input builder serves `what-if` and drain checks on any replica.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use meridian_core::keys::Keys;
use meridian_core::records::{
    AnycastAnnouncement, DrainIntent, PlanPin, PopPlanState, PopWeightRecord, RegionWeights, StoredPlan,
};
use meridian_core::slow_start::{SlowStart, SlowStartEvent};
use meridian_core::topology::{LatencySource, TopologyDoc};
use meridian_health::{HealthState, PopVerdict};
use meridian_steering::{
    AnycastIntent, LatencyMatrix, Plan, PopInput, PopUsability, RegionInput, SteeringInput, SteeringPolicy,
};
use meridian_store::{Store, StoreError, WatchEvent};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::convert::now_ms;
use crate::health::{verdict_label, ControlEvent, HealthView};
use crate::plans::{self, PlanError};
use crate::replica::ReplicaContext;

/// Operator intents that shape steering: drains and the plan pin.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Intents {
    pub drains: BTreeMap<String, DrainIntent>,
    pub pin: Option<PlanPin>,
}

/// The steering input for a topology, the current health view and the drains.
pub fn build_input(doc: &TopologyDoc, health: &HealthState, drains: &BTreeMap<String, DrainIntent>) -> SteeringInput {
    build_input_damped(doc, health, drains, None)
}

/// Holds each measured latency until it moves by more than 2 ms and 10 %, so probe
/// jitter between near-equal PoPs does not flip the plan back and forth (stability).
#[derive(Debug, Default)]
pub struct LatencyDamper {
    held: BTreeMap<(String, String), f64>,
}

impl LatencyDamper {
    pub fn filter(&mut self, region: &str, pop: &str, ms: f64) -> f64 {
        let key = (region.to_string(), pop.to_string());
        match self.held.get(&key) {
            Some(old) if (ms - old).abs() <= f64::max(2.0, 0.1 * old) => *old,
            _ => {
                self.held.insert(key, ms);
                ms
            }
        }
    }
}

/// [`build_input`] with measured latencies passed through a damper.
pub fn build_input_damped(
    doc: &TopologyDoc,
    health: &HealthState,
    drains: &BTreeMap<String, DrainIntent>,
    mut damper: Option<&mut LatencyDamper>,
) -> SteeringInput {
    let policy = &doc.policy;
    let mut latency = LatencyMatrix::new(policy.default_latency.as_secs_f64() * 1000.0);
    for region in &doc.regions {
        for (pop, hint) in &region.latency_hints {
            latency.set_hint(&region.id, pop, hint.as_secs_f64() * 1000.0);
        }
        // Client regions and prober regions share ids: a prober in `eu-west`
        // measures what clients in `eu-west` will see.
        for pop in &doc.pops {
            if policy.latency_source == LatencySource::Hints {
                continue;
            }
            if let Some(measured) = health.latency_estimate(&pop.id, &region.id) {
                let mut ms = measured.as_secs_f64() * 1000.0;
                if let Some(d) = damper.as_deref_mut() {
                    ms = d.filter(&region.id, &pop.id, ms);
                }
                latency.set_measured(&region.id, &pop.id, ms);
            }
        }
    }
    let pops = doc
        .pops
        .iter()
        .map(|p| {
            let verdict = health
                .verdict(&p.id)
                .map(|v| v.verdict.clone())
                .unwrap_or(PopVerdict::Unknown);
            let (state, unreachable_from) = match (drains.get(&p.id), verdict) {
                (Some(d), _) => (
                    PopUsability::Drained {
                        reason: d.reason.clone(),
                    },
                    BTreeSet::new(),
                ),
                (None, PopVerdict::Up) => (PopUsability::Usable, BTreeSet::new()),
                (None, PopVerdict::Unknown) => (PopUsability::Unknown, BTreeSet::new()),
                (None, PopVerdict::Down) => (PopUsability::Down, BTreeSet::new()),
                (None, PopVerdict::Degraded { down_regions }) => (PopUsability::Usable, down_regions),
            };
            PopInput {
                id: p.id.clone(),
                capacity: p.capacity,
                state,
                unreachable_from,
                anycast_prefixes: p.anycast_prefixes.iter().map(|n| n.to_string()).collect(),
            }
        })
        .collect();
    let regions = doc
        .regions
        .iter()
        .map(|r| RegionInput {
            id: r.id.clone(),
            demand: r.demand,
            allowed_pops: None,
        })
        .collect();
    SteeringInput {
        pops,
        regions,
        latency,
        policy: SteeringPolicy {
            target_utilisation: policy.target_utilisation,
            max_failover_capacity_share: policy.max_failover_capacity_share,
            weight_change_threshold: policy.weight_change_threshold,
        },
    }
}

/// The stored form of a computed plan (version assigned at publish).
pub fn to_stored(
    plan: &Plan,
    doc: &TopologyDoc,
    health: &HealthState,
    topology_revision: i64,
    published_by: &str,
    reasons: Vec<String>,
) -> StoredPlan {
    let regions = plan
        .regions
        .iter()
        .map(|(region, weights)| RegionWeights {
            client_prefixes: doc
                .regions
                .iter()
                .find(|r| &r.id == region)
                .map(|r| r.client_prefixes.iter().map(|p| p.to_string()).collect())
                .unwrap_or_default(),
            region: region.clone(),
            pops: weights
                .iter()
                .map(|w| {
                    let pop = doc.pop(&w.pop);
                    PopWeightRecord {
                        pop: w.pop.clone(),
                        weight: w.weight,
                        ipv4: pop
                            .map(|p| p.ipv4.iter().map(|a| a.to_string()).collect())
                            .unwrap_or_default(),
                        ipv6: pop
                            .map(|p| p.ipv6.iter().map(|a| a.to_string()).collect())
                            .unwrap_or_default(),
                    }
                })
                .collect(),
        })
        .collect();
    let pops = plan
        .pop_load
        .iter()
        .map(|(pop, load)| {
            let state = match &load.state {
                PopUsability::Drained { .. } => "drained".to_string(),
                _ => health
                    .verdict(pop)
                    .map(|v| verdict_label(&v.verdict).to_string())
                    .unwrap_or_else(|| "unknown".into()),
            };
            PopPlanState {
                pop: pop.clone(),
                state,
                capacity: load.capacity,
                load: load.load,
                utilisation: load.utilisation,
            }
        })
        .collect();
    let mut anycast = Vec::new();
    for p in &doc.pops {
        let intent = plan.anycast.get(&p.id).copied().unwrap_or(AnycastIntent::Announce);
        for prefix in &p.anycast_prefixes {
            anycast.push(AnycastAnnouncement {
                pop: p.id.clone(),
                prefix: prefix.to_string(),
                action: intent.to_string(),
                prepend_count: 0,
            });
        }
    }
    let mut all_reasons = reasons;
    all_reasons.extend(plan.reasons.iter().cloned());
    StoredPlan {
        version: 0,
        created_at_unix_ms: now_ms(),
        published_by: published_by.to_string(),
        topology_revision,
        dns_ttl_seconds: doc.policy.dns_ttl_seconds,
        regions,
        pops,
        anycast,
        reasons: all_reasons,
        guardrails: plan.fired.iter().map(|f| f.to_string()).collect(),
        restored_from: None,
        default_region: doc
            .policy
            .default_region
            .clone()
            .or_else(|| doc.regions.first().map(|r| r.id.clone())),
    }
}

/// Why `new` should replace `old`, or `None` when the difference is below the
/// threshold (stability: tiny latency moves do not churn the agents).
pub fn differs(old: &StoredPlan, new: &StoredPlan, threshold: f64) -> Option<Vec<String>> {
    let mut why = Vec::new();
    let states = |p: &StoredPlan| {
        p.pops
            .iter()
            .map(|s| (s.pop.clone(), s.state.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let (old_states, new_states) = (states(old), states(new));
    for (pop, state) in &new_states {
        match old_states.get(pop) {
            Some(o) if o == state => {}
            Some(o) => why.push(format!("PoP {pop}: {o} → {state}")),
            None => why.push(format!("PoP {pop} added")),
        }
    }
    for pop in old_states.keys().filter(|p| !new_states.contains_key(*p)) {
        why.push(format!("PoP {pop} removed"));
    }
    let actions = |p: &StoredPlan| {
        p.anycast
            .iter()
            .map(|a| ((a.pop.clone(), a.prefix.clone()), a.action.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    if actions(old) != actions(new) {
        why.push("Anycast announcements changed".into());
    }
    let guards = |p: &StoredPlan| p.guardrails.iter().cloned().collect::<BTreeSet<_>>();
    if guards(old) != guards(new) {
        why.push("guardrail firings changed".into());
    }
    if old.dns_ttl_seconds != new.dns_ttl_seconds {
        why.push(format!("DNS TTL {}s → {}s", old.dns_ttl_seconds, new.dns_ttl_seconds));
    }
    let weights = |p: &StoredPlan| {
        p.regions
            .iter()
            .flat_map(|r| {
                r.pops.iter().map(move |w| {
                    (
                        (r.region.clone(), w.pop.clone()),
                        (w.weight, w.ipv4.clone(), w.ipv6.clone()),
                    )
                })
            })
            .collect::<BTreeMap<_, _>>()
    };
    let (ow, nw) = (weights(old), weights(new));
    let regions = |p: &StoredPlan| p.regions.iter().map(|r| r.region.clone()).collect::<BTreeSet<_>>();
    if regions(old) != regions(new) {
        why.push("client regions changed".into());
    }
    let mut moved = 0;
    for key in ow.keys().chain(nw.keys()).collect::<BTreeSet<_>>() {
        let (o, n) = (ow.get(key), nw.get(key));
        let (ov, nv) = (o.map(|x| x.0).unwrap_or(0.0), n.map(|x| x.0).unwrap_or(0.0));
        let addresses_changed = matches!((o, n), (Some(a), Some(b)) if a.1 != b.1 || a.2 != b.2);
        if (ov - nv).abs() > threshold || addresses_changed {
            moved += 1;
            if moved <= 5 {
                why.push(format!(
                    "region {} → {}: weight {:.0}% → {:.0}%",
                    key.0,
                    key.1,
                    ov * 100.0,
                    nv * 100.0
                ));
            }
        }
    }
    if moved > 5 {
        why.push(format!("…and {} more weight changes", moved - 5));
    }
    (!why.is_empty()).then_some(why)
}

/// Feeds every PoP's health to the slow-start machine; returns the events.
fn observe_slow_start(
    slow: &mut SlowStart,
    input: &SteeringInput,
    current: Option<&StoredPlan>,
    doc: &TopologyDoc,
) -> Vec<ControlEvent> {
    let policy = doc.policy.slow_start();
    let now = now_ms();
    slow.retain(|p| doc.pop(p).is_some());
    let mut events = Vec::new();
    for pop in &input.pops {
        let down = matches!(pop.state, PopUsability::Down);
        // A leader that just took over learns which PoPs were down from the plan in
        // force, so a PoP that comes back during its first term still slow-starts.
        if !slow.knows(&pop.id) && current.is_some_and(|c| c.pops.iter().any(|s| s.pop == pop.id && s.state == "down"))
        {
            slow.observe(&pop.id, true, now, &policy);
        }
        let Some(event) = slow.observe(&pop.id, down, now, &policy) else {
            continue;
        };
        let (pop_id, message) = match &event {
            SlowStartEvent::Started { pop, factor } => (
                pop,
                format!("{pop} is back: slow start at {:.0}% of its weight", factor * 100.0),
            ),
            SlowStartEvent::Advanced { pop, factor, .. } => {
                (pop, format!("{pop}: slow start advanced to {:.0}%", factor * 100.0))
            }
            SlowStartEvent::Completed { pop } => (pop, format!("{pop}: slow start completed; full weight")),
            SlowStartEvent::Aborted { pop, stage } => (
                pop,
                format!("{pop} failed again during slow start (stage {stage}); removed"),
            ),
        };
        events.push(ControlEvent {
            at_unix_ms: now,
            kind: "slow_start".into(),
            pop: Some(pop_id.clone()),
            actor: "steering".into(),
            message,
            evidence: Vec::new(),
        });
    }
    events
}

/// Computes the plan; while PoPs are slow-starting, blends the plan with them and the
/// plan without them by the smallest stage factor. Returns the plan and notes for
/// its reasons.
fn compute_with_slow_start(
    input: &SteeringInput,
    slow: &SlowStart,
    doc: &TopologyDoc,
) -> Result<(Plan, Vec<String>), String> {
    let with = meridian_steering::compute(input).map_err(|e| e.to_string())?;
    let recovering = slow.recovering(&doc.policy.slow_start());
    let Some(f) = recovering.values().copied().reduce(f64::min) else {
        return Ok((with, Vec::new()));
    };
    let mut reduced = input.clone();
    for pop in reduced.pops.iter_mut().filter(|p| recovering.contains_key(&p.id)) {
        pop.state = PopUsability::Down;
    }
    let without = meridian_steering::compute(&reduced).map_err(|e| e.to_string())?;
    let notes = recovering
        .iter()
        .map(|(p, f)| format!("slow start: {p} at {:.0}% of its weight", f * 100.0))
        .collect();
    Ok((meridian_steering::blend(&with, &without, f), notes))
}

/// Follows drains and the plan pin in the store (every replica).
pub async fn follow_intents(
    store: Arc<dyn Store>,
    keys: Keys,
    tx: watch::Sender<Intents>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let root = format!("{}/intents/", keys.root());
    loop {
        let session = async {
            let (listed, mut watch) = meridian_store::list_and_watch(store.as_ref(), &root).await?;
            let mut raw: BTreeMap<String, Vec<u8>> = listed.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
            tx.send_replace(decode_intents(&keys, &raw));
            while let Some(batch) = watch.next().await {
                for event in batch?.events {
                    match event {
                        WatchEvent::Put(kv) => {
                            raw.insert(kv.key, kv.value);
                        }
                        WatchEvent::Delete { key, .. } => {
                            raw.remove(&key);
                        }
                    }
                }
                tx.send_replace(decode_intents(&keys, &raw));
            }
            Ok::<(), StoreError>(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            result = session => {
                if let Err(err) = result {
                    tracing::warn!(error = %err, "intent watch interrupted; re-listing");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
    }
}

fn decode_intents(keys: &Keys, raw: &BTreeMap<String, Vec<u8>>) -> Intents {
    let mut out = Intents::default();
    for (key, value) in raw {
        if key.starts_with(&keys.drains_prefix()) {
            match serde_json::from_slice::<DrainIntent>(value) {
                Ok(d) => {
                    out.drains.insert(d.pop.clone(), d);
                }
                Err(e) => tracing::error!(key, error = %e, "unreadable drain intent ignored"),
            }
        } else if *key == keys.plan_pin() {
            match serde_json::from_slice::<PlanPin>(value) {
                Ok(p) => out.pin = Some(p),
                Err(e) => tracing::error!(key, error = %e, "unreadable plan pin ignored"),
            }
        }
    }
    out
}

/// On the leader: recompute on every change (verdicts, topology, drains) and on a
/// one-second tick (latency drift), publish when the plan changed.
pub(crate) async fn run(
    ctx: ReplicaContext,
    health: Arc<HealthView>,
    mut intents: watch::Receiver<Intents>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let mut generation = health.generation();
    let mut topology = ctx.topology.clone();
    let mut leadership = ctx.leadership.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_failure: Option<String> = None;
    let mut slow = SlowStart::default();
    let mut damper = LatencyDamper::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
            _ = generation.changed() => {}
            _ = topology.changed() => {}
            _ = intents.changed() => {}
            _ = leadership.changed() => {}
        }
        let Some(fence) = leadership.borrow().fence.clone() else {
            continue;
        };
        let applied = topology.borrow().clone();
        if applied.revision == 0 {
            continue;
        }
        let current_intents = intents.borrow().clone();
        if current_intents.pin.is_some() {
            continue;
        }
        let current = ctx.plan.borrow().clone();
        let (candidate, slow_events) = {
            let state = health.lock();
            let input = build_input_damped(&applied.doc, &state, &current_intents.drains, Some(&mut damper));
            let events = observe_slow_start(&mut slow, &input, current.as_deref(), &applied.doc);
            let computed = compute_with_slow_start(&input, &slow, &applied.doc).map(|(plan, notes)| {
                to_stored(&plan, &applied.doc, &state, applied.revision, ctx.me.id.as_str(), notes)
            });
            (computed, events)
        };
        for event in slow_events {
            health.record_control(event);
        }
        let mut candidate = match candidate {
            Ok(c) => c,
            Err(e) => {
                if last_failure.as_deref() != Some(e.as_str()) {
                    tracing::error!(error = %e, "steering could not compute a plan; the last good plan stays in force");
                    last_failure = Some(e);
                }
                continue;
            }
        };
        last_failure = None;
        let reasons = match &current {
            None => Some(vec!["first plan for this topology".to_string()]),
            Some(cur) => differs(cur, &candidate, applied.doc.policy.weight_change_threshold),
        };
        let Some(mut reasons) = reasons else { continue };
        reasons.append(&mut candidate.reasons);
        candidate.reasons = reasons;
        match plans::publish(ctx.store.as_ref(), &ctx.keys, &fence, candidate).await {
            Ok(published) => {
                health.record_control(ControlEvent {
                    at_unix_ms: now_ms(),
                    kind: "plan_published".into(),
                    pop: None,
                    actor: "steering".into(),
                    message: format!("published plan v{}", published.version),
                    evidence: published.reasons.clone(),
                });
                for g in &published.guardrails {
                    tracing::warn!(guardrail = %g, version = published.version, "guardrail fired");
                    metrics::counter!("meridian_control_plane_guardrail_firings_total").increment(1);
                    health.record_control(ControlEvent {
                        at_unix_ms: now_ms(),
                        kind: "guardrail".into(),
                        pop: None,
                        actor: "steering".into(),
                        message: format!("plan v{}: {g}", published.version),
                        evidence: Vec::new(),
                    });
                }
                // Do not recompute against a stale "current" before the follower saw it.
                let mut plan_rx = ctx.plan.clone();
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    plan_rx.wait_for(|p| p.as_ref().is_some_and(|p| p.version >= published.version)),
                )
                .await;
            }
            Err(PlanError::Conflict(_)) => tracing::debug!("plan publish raced; recomputing"),
            Err(e) => tracing::warn!(error = %e, "plan publish failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_damper_holds_small_moves_and_follows_real_ones() {
        let mut d = LatencyDamper::default();
        assert_eq!(d.filter("eu", "fra1", 10.0), 10.0);
        assert_eq!(d.filter("eu", "fra1", 11.5), 10.0, "jitter below 2 ms is held");
        assert_eq!(d.filter("eu", "fra1", 13.0), 13.0, "a 3 ms move is followed");
        assert_eq!(d.filter("eu", "fra1", 100.0), 100.0);
        assert_eq!(d.filter("eu", "fra1", 108.0), 100.0, "below 10 % of 100 ms is held");
        assert_eq!(d.filter("eu", "ams1", 108.0), 108.0, "pairs are independent");
    }
}
