//! The steering driver: a pure state machine in the style of raft-rs. The leader
//! calls [`SteeringDriver::tick`] with the time and a [`SteeringView`] (a health
//! snapshot, the topology, the intents and the plan in force) whenever something
//! changed and on a timer; it gets back a [`Ready`]: the plan to publish, if one is
//! worth publishing, and the events to record. The driver keeps the only state that
//! lives across ticks — the slow-start machine and the latency damper — and performs
//! no effect: it never writes, logs or reads a clock.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use meridian_core::records::{
    AnycastAction, AnycastAnnouncement, DrainIntent, PopPlanState, PopState, PopWeightRecord, RegionWeights, StoredPlan,
};
use meridian_core::slow_start::SlowStart;
use meridian_core::topology::{LatencySource, TopologyDoc};
use meridian_core::Actor;
use meridian_health::{HealthSnapshot, PopVerdict};
use meridian_steering::{
    AnycastIntent, DrainError, GuardrailFiring, LatencyMatrix, Plan, PopInput, PopUsability, RegionInput, Scenario,
    SteeringError, SteeringInput, SteeringPolicy,
};

use crate::events::{Event, EventKind};
use crate::intents::Intents;
use crate::publish::worth_publishing;

/// What one tick looks at. Everything is borrowed: the caller takes the health
/// snapshot under its lock and releases the lock before calling `tick`.
#[derive(Clone, Copy, Debug)]
pub struct SteeringView<'a> {
    pub topology: &'a TopologyDoc,
    /// The topology's store revision; 0 means no topology applied yet.
    pub topology_revision: i64,
    pub health: &'a HealthSnapshot,
    pub intents: &'a Intents,
    /// The plan in force (the newest published version), if any.
    pub current: Option<&'a StoredPlan>,
    /// Recorded as `published_by`.
    pub replica: &'a str,
}

/// What a tick asks the caller to do.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ready {
    /// Publish this as the next version (its `version` is assigned at publish).
    pub publish: Option<StoredPlan>,
    /// Record these (slow-start stages).
    pub events: Vec<Event>,
    /// The plan could not be computed; the last good plan stays in force. Set only
    /// when the error is new, so the caller logs each failure once.
    pub error: Option<String>,
}

/// The steering state that lives across ticks on one leader.
#[derive(Debug, Default)]
pub struct SteeringDriver {
    slow_start: SlowStart,
    damper: LatencyDamper,
    last_error: Option<String>,
}

impl SteeringDriver {
    /// Decides, at `now_ms`, whether the view calls for a new plan.
    pub fn tick(&mut self, now_ms: u64, view: SteeringView<'_>) -> Ready {
        let mut ready = Ready::default();
        if view.topology_revision == 0 || view.intents.pin.is_some() {
            // No topology yet, or an operator pinned a plan: publish nothing.
            return ready;
        }
        // The topology as steering plans with it now: capacity overrides applied.
        let doc = &*crate::intents::with_capacity(view.topology, &view.intents.capacity, now_ms);
        let input = build_input(doc, view.health, &view.intents.drains, Some(&mut self.damper));
        ready.events = self.observe_slow_start(now_ms, &input, view.current, doc);
        let (plan, notes) = match self.compute_with_slow_start(&input, doc, &view.intents.drains) {
            Ok(computed) => {
                self.last_error = None;
                computed
            }
            Err(e) => {
                if self.last_error.as_deref() != Some(e.as_str()) {
                    self.last_error = Some(e.clone());
                    ready.error = Some(e);
                }
                return ready;
            }
        };
        let mut candidate = to_stored(
            &plan,
            doc,
            view.health,
            view.topology_revision,
            view.replica,
            notes,
            now_ms,
        );
        apply_anycast_rungs(&mut candidate, &view.intents.drains);
        let reasons = match view.current {
            None => Some(vec!["first plan for this topology".to_string()]),
            Some(current) => worth_publishing(current, &candidate, doc.policy.weight_change_threshold),
        };
        if let Some(mut reasons) = reasons {
            reasons.append(&mut candidate.reasons);
            candidate.reasons = reasons;
            ready.publish = Some(candidate);
        }
        ready
    }

    /// Feeds every PoP's health to the slow-start machine; returns the events.
    fn observe_slow_start(
        &mut self,
        now_ms: u64,
        input: &SteeringInput,
        current: Option<&StoredPlan>,
        doc: &TopologyDoc,
    ) -> Vec<Event> {
        let policy = doc.policy.slow_start();
        let slow = &mut self.slow_start;
        let known: HashSet<&str> = doc.pops.iter().map(|p| p.id.as_str()).collect();
        slow.retain(|p| known.contains(p));
        let mut events = Vec::new();
        for pop in &input.pops {
            let down = matches!(pop.state, PopUsability::Down);
            // A leader that just took over learns which PoPs were down from the plan
            // in force, so a PoP that comes back during its first term still
            // slow-starts.
            let was_down_in_force =
                current.is_some_and(|c| c.pops.iter().any(|s| s.pop == pop.id && s.state == PopState::Down));
            if !slow.knows(&pop.id) && was_down_in_force {
                slow.observe(&pop.id, true, now_ms, &policy);
            }
            if let Some(event) = slow.observe(&pop.id, down, now_ms, &policy) {
                events.push(Event {
                    at_unix_ms: now_ms,
                    actor: Actor::Steering,
                    role: None,
                    kind: EventKind::SlowStart(event),
                });
            }
        }
        events
    }

    /// Computes the plan; while PoPs are slow-starting, blends the plan with them and
    /// the plan without them by the smallest stage factor. Returns the plan and notes
    /// for its reasons.
    /// The plan, with PoPs that keep only part of their weight — recovering through
    /// slow start, or on a rung of a drain ladder — blended between the plan with
    /// them and the plan without them (the smallest share applies to all of them).
    fn compute_with_slow_start(
        &self,
        input: &SteeringInput,
        doc: &TopologyDoc,
        drains: &BTreeMap<String, DrainIntent>,
    ) -> Result<(Plan, Vec<String>), String> {
        let with = meridian_steering::compute(input).map_err(|e| e.to_string())?;
        let recovering = self.slow_start.recovering(&doc.policy.slow_start());
        let laddered: BTreeMap<&str, (f64, &[String])> = drains
            .values()
            .filter_map(|d| d.partial().map(|f| (d.pop.as_str(), (f, d.regions.as_slice()))))
            .collect();
        let Some(f) = recovering
            .values()
            .copied()
            .chain(laddered.values().map(|(f, _)| *f))
            .reduce(f64::min)
        else {
            return Ok((with, Vec::new()));
        };
        // The plan without them: a recovering PoP or a ladder for every region is
        // out everywhere; a ladder for some regions only is out of those regions.
        let mut reduced = input.clone();
        for pop in reduced.pops.iter_mut().filter(|p| {
            recovering.contains_key(&p.id) || laddered.get(p.id.as_str()).is_some_and(|(_, r)| r.is_empty())
        }) {
            pop.state = PopUsability::Down;
        }
        let all: BTreeSet<String> = input.pops.iter().map(|p| p.id.clone()).collect();
        for (pop, (_, regions)) in laddered.iter().filter(|(_, (_, r))| !r.is_empty()) {
            for region in reduced.regions.iter_mut().filter(|r| regions.contains(&r.id)) {
                region.allowed_pops.get_or_insert_with(|| all.clone()).remove(*pop);
            }
        }
        let without = meridian_steering::compute(&reduced).map_err(|e| e.to_string())?;
        let notes = recovering
            .iter()
            .map(|(p, f)| format!("slow start: {p} at {:.0}% of its weight", f * 100.0))
            .chain(laddered.iter().map(|(p, (f, regions))| {
                let scope = if regions.is_empty() {
                    String::new()
                } else {
                    format!(" for {}", regions.join(", "))
                };
                format!("drain ladder: {p} at {:.0}% of its weight{scope}", f * 100.0)
            }))
            .collect();
        Ok((meridian_steering::blend(&with, &without, f), notes))
    }
}

/// The Anycast side of drain-ladder rungs (issue [9]): a partly drained PoP's
/// prefixes announce prepended or with GRACEFUL_SHUTDOWN instead of plainly (the
/// withdraw comes with the full drain, decided by the steering core and its
/// last-pop-for-prefix guardrail). GRACEFUL_SHUTDOWN is never put on the last
/// announcer of a prefix: the only route to it is not weakened (noted in the
/// plan's reasons).
pub fn apply_anycast_rungs(plan: &mut StoredPlan, drains: &BTreeMap<String, DrainIntent>) {
    for d in drains.values() {
        let Some(step) = d.anycast else { continue };
        if d.partial().is_none()
            || !d.regions.is_empty()
            || !matches!(step.action, AnycastAction::Prepend | AnycastAction::GracefulShutdown)
        {
            continue;
        }
        let mut changed = Vec::new();
        let mut kept = Vec::new();
        for i in 0..plan.anycast.len() {
            let a = &plan.anycast[i];
            if a.pop != d.pop || a.action != AnycastAction::Announce {
                continue;
            }
            let prefix = a.prefix;
            let others = plan
                .anycast
                .iter()
                .any(|o| o.pop != d.pop && o.prefix == prefix && o.action != AnycastAction::Withdraw);
            if step.action == AnycastAction::GracefulShutdown && !others {
                kept.push(prefix.to_string());
                continue;
            }
            plan.anycast[i].action = step.action;
            plan.anycast[i].prepend_count = step.prepend;
            changed.push(prefix.to_string());
        }
        if !changed.is_empty() {
            plan.reasons.push(format!(
                "drain ladder: {} announces {} with {}",
                d.pop,
                changed.join(", "),
                step.describe()
            ));
        }
        if !kept.is_empty() {
            plan.reasons.push(format!(
                "guardrail last-pop-for-prefix: {} keeps announcing {} plainly (no other PoP announces it)",
                d.pop,
                kept.join(", ")
            ));
        }
    }
}

/// The events a successful publication produces: the publication itself and one per
/// guardrail that fired in it.
pub fn published_events(plan: &StoredPlan, now_ms: u64) -> Vec<Event> {
    let mut events = vec![Event {
        at_unix_ms: now_ms,
        actor: Actor::Steering,
        role: None,
        kind: EventKind::PlanPublished {
            version: plan.version,
            reasons: plan.reasons.clone(),
        },
    }];
    events.extend(plan.guardrails.iter().map(|g| Event {
        at_unix_ms: now_ms,
        actor: Actor::Steering,
        role: None,
        kind: EventKind::GuardrailFired {
            version: plan.version,
            firing: g.clone(),
        },
    }));
    events
}

/// The plan that would result from `scenario` (drain or down), and the guardrails
/// that would fire; nothing is stored.
pub fn what_if(
    doc: &TopologyDoc,
    topology_revision: i64,
    health: &HealthSnapshot,
    drains: &BTreeMap<String, DrainIntent>,
    scenario: &Scenario,
    now_ms: u64,
) -> Result<(StoredPlan, Vec<GuardrailFiring>), SteeringError> {
    let input = build_input(doc, health, drains, None);
    let (plan, fired) = meridian_steering::what_if(&input, scenario)?;
    let stored = to_stored(
        &plan,
        doc,
        health,
        topology_revision,
        "what-if",
        vec![format!("what if: {scenario:?}")],
        now_ms,
    );
    Ok((stored, fired))
}

/// Whether draining `pop` for `regions` only (on top of `drains`) is allowed: every
/// region named must exist and keep another PoP that can serve it (rule
/// `last-pop-in-region`, overridden when `force`). The PoP stays in service for the
/// other regions, so capacity is not removed from the edge as a whole.
pub fn check_region_drain(
    doc: &TopologyDoc,
    health: &HealthSnapshot,
    drains: &BTreeMap<String, DrainIntent>,
    pop: &str,
    regions: &[String],
    force: bool,
) -> Result<Vec<GuardrailFiring>, DrainError> {
    if doc.pop(pop).is_none() {
        return Err(DrainError::Input(SteeringError::UnknownPop { pop: pop.to_owned() }));
    }
    let input = build_input(doc, health, drains, None);
    let mut firings = Vec::new();
    for region in regions {
        let Some(r) = input.regions.iter().find(|r| &r.id == region) else {
            return Err(DrainError::Input(SteeringError::InvalidInput {
                field: "regions".into(),
                reason: format!("unknown client region `{region}` (not in the applied topology)"),
            }));
        };
        let others = input.pops.iter().any(|p| {
            p.id != pop
                && matches!(p.state, PopUsability::Usable)
                && !p.unreachable_from.contains(region)
                && r.allowed_pops.as_ref().is_none_or(|a| a.contains(&p.id))
        });
        if !others {
            firings.push(GuardrailFiring {
                rule: meridian_steering::GuardrailRule::LastPopInRegion,
                pop: Some(pop.to_owned()),
                region: Some(region.clone()),
                detail: format!("draining pop {pop} for region {region} leaves the region no other usable PoP"),
                overridden: force,
            });
        }
    }
    match (force, firings.first()) {
        (false, Some(first)) => Err(DrainError::Refused(first.clone())),
        _ => Ok(firings),
    }
}

/// Whether draining `pop` on top of `drains` is allowed: the guardrails it would
/// fire (overridden when `force`), or the refusal naming the rule.
pub fn check_drain(
    doc: &TopologyDoc,
    health: &HealthSnapshot,
    drains: &BTreeMap<String, DrainIntent>,
    pop: &str,
    force: bool,
) -> Result<Vec<GuardrailFiring>, DrainError> {
    let input = build_input(doc, health, drains, None);
    meridian_steering::check_drain(&input, pop, force)
}

/// Holds each measured latency until it moves by more than 2 ms and 10 %, so probe
/// jitter between near-equal PoPs does not flip the plan back and forth (stability).
/// Dense: per region one slot per PoP of the topology, in topology order, so a tick
/// filters every measured pair without hashing; a topology with other PoPs resets it.
#[derive(Debug, Default)]
pub struct LatencyDamper {
    /// The PoP ids the rows are laid out for.
    pops: Vec<String>,
    held: HashMap<String, Vec<Option<f64>>>,
}

impl LatencyDamper {
    /// Lays the rows out for these PoPs (in this order); forgets everything held
    /// when they differ from the last call's.
    pub fn align<'a>(&mut self, pops: impl ExactSizeIterator<Item = &'a str>) {
        let same = pops.len() == self.pops.len();
        let mut pops = pops.peekable();
        if same && self.pops.iter().zip(pops.by_ref()).all(|(held, p)| held == p) {
            return;
        }
        self.held.clear();
        self.pops.clear();
        self.pops.extend(pops.map(str::to_string));
    }

    /// Filters one value: `column` is the PoP's position in the last `align`.
    pub fn filter(&mut self, region: &str, column: usize, ms: f64) -> f64 {
        self.row(region).filter(column, ms)
    }

    /// One region's held values, looked up once for a whole row of PoPs.
    pub fn row(&mut self, region: &str) -> DamperRow<'_> {
        let width = self.pops.len();
        if !self.held.contains_key(region) {
            self.held.insert(region.to_string(), vec![None; width]);
        }
        DamperRow {
            held: self.held.get_mut(region),
        }
    }
}

/// The damper's values for one region.
#[derive(Debug)]
pub struct DamperRow<'a> {
    /// Always `Some` (the row is created first); an `Option` only to keep the borrow
    /// checker and clippy's no-unwrap rule both content.
    held: Option<&'a mut Vec<Option<f64>>>,
}

impl DamperRow<'_> {
    pub fn filter(&mut self, column: usize, ms: f64) -> f64 {
        let Some(slot) = self.held.as_deref_mut().and_then(|row| row.get_mut(column)) else {
            return ms;
        };
        match slot {
            Some(old) if (ms - *old).abs() <= f64::max(2.0, 0.1 * *old) => *old,
            _ => {
                *slot = Some(ms);
                ms
            }
        }
    }
}

/// The steering core's input for a topology, a health snapshot and the drains;
/// measured latencies pass through `damper` when one is given.
pub fn build_input(
    doc: &TopologyDoc,
    health: &HealthSnapshot,
    drains: &BTreeMap<String, DrainIntent>,
    mut damper: Option<&mut LatencyDamper>,
) -> SteeringInput {
    let policy = &doc.policy;
    let mut latency = LatencyMatrix::new(policy.default_latency.as_secs_f64() * 1000.0);
    // The measured table's columns are the topology's PoPs in order, laid out up
    // front, so filling it row by row finds every column in O(1).
    latency.measured.pops = doc.pops.iter().map(|p| p.id.clone()).collect();
    // Each topology PoP's column in the snapshot's latency rows, found once.
    let columns: Vec<Option<usize>> = doc.pops.iter().map(|p| health.column(&p.id)).collect();
    if let Some(d) = damper.as_deref_mut() {
        d.align(doc.pops.iter().map(|p| p.id.as_str()));
    }
    for region in &doc.regions {
        for (pop, hint) in &region.latency_hints {
            latency.set_hint(&region.id, pop, hint.as_secs_f64() * 1000.0);
        }
        if policy.latency_source == LatencySource::Hints {
            continue;
        }
        // Client regions and prober regions share ids: a prober in `eu-west`
        // measures what clients in `eu-west` will see.
        let Some(measured) = health.latency.get(&region.id) else {
            continue;
        };
        let mut held = damper.as_deref_mut().map(|d| d.row(&region.id));
        let values = doc
            .pops
            .iter()
            .zip(&columns)
            .enumerate()
            .filter_map(|(i, (pop, column))| {
                let mut ms = (*measured.get((*column)?)?)?.as_secs_f64() * 1000.0;
                if let Some(row) = held.as_mut() {
                    ms = row.filter(i, ms);
                }
                Some((pop.id.as_str(), ms))
            });
        latency.set_measured_row(&region.id, values);
    }
    let pops = doc
        .pops
        .iter()
        .map(|p| {
            // A PoP on a rung of a drain ladder still serves (its share is blended
            // in `compute_with_slow_start`), and one drained for some regions only
            // serves the others; only a full drain for every region takes it out.
            let full_drain = drains
                .get(&p.id)
                .filter(|d| d.partial().is_none() && d.regions.is_empty());
            let (state, unreachable_from) = match (full_drain, health.verdict(&p.id)) {
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
    // Full drains for some regions only: those regions may not use the PoP.
    let mut excluded: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for d in drains.values().filter(|d| d.partial().is_none()) {
        for region in &d.regions {
            excluded.entry(region.as_str()).or_default().insert(d.pop.as_str());
        }
    }
    let regions = doc
        .regions
        .iter()
        .map(|r| RegionInput {
            id: r.id.clone(),
            demand: r.demand,
            allowed_pops: excluded.get(r.id.as_str()).map(|out| {
                doc.pops
                    .iter()
                    .filter(|p| !out.contains(p.id.as_str()))
                    .map(|p| p.id.clone())
                    .collect()
            }),
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

/// A PoP's state in a plan: drained wins, else its health verdict.
fn plan_state(usability: &PopUsability, verdict: &PopVerdict) -> PopState {
    match (usability, verdict) {
        (PopUsability::Drained { .. }, _) => PopState::Drained,
        (_, PopVerdict::Unknown) => PopState::Unknown,
        (_, PopVerdict::Up) => PopState::Up,
        (_, PopVerdict::Degraded { .. }) => PopState::Degraded,
        (_, PopVerdict::Down) => PopState::Down,
    }
}

/// The stored form of a computed plan (its version is assigned at publish).
pub fn to_stored(
    plan: &Plan,
    doc: &TopologyDoc,
    health: &HealthSnapshot,
    topology_revision: i64,
    published_by: &str,
    reasons: Vec<String>,
    now_ms: u64,
) -> StoredPlan {
    // Indexed once: a plan has a weight per (region, PoP) served.
    let pops_by_id: HashMap<&str, &meridian_core::topology::Pop> =
        doc.pops.iter().map(|p| (p.id.as_str(), p)).collect();
    let prefixes_by_region: HashMap<&str, &Vec<ipnet::IpNet>> = doc
        .regions
        .iter()
        .map(|r| (r.id.as_str(), &r.client_prefixes))
        .collect();
    let regions = plan
        .regions
        .iter()
        .map(|(region, weights)| RegionWeights {
            client_prefixes: prefixes_by_region
                .get(region.as_str())
                .map(|p| (*p).clone())
                .unwrap_or_default(),
            region: region.clone(),
            pops: weights
                .iter()
                .map(|w| {
                    let pop = pops_by_id.get(w.pop.as_str());
                    PopWeightRecord {
                        pop: w.pop.clone(),
                        weight: w.weight,
                        ipv4: pop.map(|p| p.ipv4.clone()).unwrap_or_default(),
                        ipv6: pop.map(|p| p.ipv6.clone()).unwrap_or_default(),
                    }
                })
                .collect(),
        })
        .collect();
    let pops = plan
        .pop_load
        .iter()
        .map(|(pop, load)| PopPlanState {
            pop: pop.clone(),
            state: plan_state(&load.state, &health.verdict(pop)),
            capacity: load.capacity,
            load: load.load,
            utilisation: load.utilisation,
        })
        .collect();
    let mut anycast = Vec::new();
    for p in &doc.pops {
        let action = match plan.anycast.get(&p.id).copied().unwrap_or(AnycastIntent::Announce) {
            AnycastIntent::Announce => AnycastAction::Announce,
            AnycastIntent::Withdraw => AnycastAction::Withdraw,
        };
        for prefix in &p.anycast_prefixes {
            anycast.push(AnycastAnnouncement {
                pop: p.id.clone(),
                prefix: *prefix,
                action,
                prepend_count: 0,
            });
        }
    }
    let mut all_reasons = reasons;
    all_reasons.extend(plan.reasons.iter().cloned());
    StoredPlan {
        version: 0,
        created_at_unix_ms: now_ms,
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
        // Set by the publisher, which knows the store's epoch.
        epoch: String::new(),
        content_hash: String::new(),
    }
}

#[cfg(test)]
mod tests;
