//! The guardrails: applied by [`crate::compute`] to automatic removals, and by
//! [`check_drain`] to operator drains. Every firing names its [`GuardrailRule`].

use std::collections::{BTreeMap, BTreeSet};

use crate::compute::{compute, Topology};
use crate::error::{DrainError, SteeringError};
use crate::model::{PopInput, PopUsability, Scenario, SteeringInput, SteeringPolicy};
use crate::plan::{AnycastIntent, GuardrailFiring, GuardrailRule, Plan};

/// Checks an operator drain of `pop` against the guardrails, without changing anything.
///
/// Refused (`Err(DrainError::Refused)`, naming the first rule that fired, in the order
/// below) when the drain would
/// - push the remaining in-service PoPs over capacity: remaining capacity × 1.0 < total
///   demand ([`GuardrailRule::DrainOverCapacity`], with the numbers);
/// - leave a client region with no usable PoP ([`GuardrailRule::LastPopInRegion`]);
/// - leave an anycast prefix with no announcer ([`GuardrailRule::LastPopForPrefix`]).
///
/// With `force`, the same firings are returned in `Ok`, each marked `overridden`, for
/// the caller to audit with the operator's reason. `Ok(vec![])` means no rule fired.
pub fn check_drain(input: &SteeringInput, pop: &str, force: bool) -> Result<Vec<GuardrailFiring>, DrainError> {
    let topology = Topology::new(input)?;
    let p = topology
        .pop_index(pop)
        .ok_or_else(|| SteeringError::UnknownPop { pop: pop.to_owned() })?;
    let mut firings = drain_firings(&topology, p);
    if force {
        for f in &mut firings {
            f.overridden = true;
        }
        return Ok(firings);
    }
    match firings.into_iter().next() {
        Some(first) => Err(DrainError::Refused(first)),
        None => Ok(Vec::new()),
    }
}

/// The plan that would result from `scenario`, and the guardrails that would fire:
/// for a drain, those [`check_drain`] reports (as if forced, but not marked overridden),
/// followed by the plan's own firings; for a down PoP, the plan's firings.
pub fn what_if(input: &SteeringInput, scenario: &Scenario) -> Result<(Plan, Vec<GuardrailFiring>), SteeringError> {
    let (pop, state) = match scenario {
        Scenario::Drain(pop) => (
            pop,
            PopUsability::Drained {
                reason: "what-if".to_owned(),
            },
        ),
        Scenario::Down(pop) => (pop, PopUsability::Down),
    };
    let mut changed = input.clone();
    let target = changed
        .pops
        .iter_mut()
        .find(|p| p.id == *pop)
        .ok_or_else(|| SteeringError::UnknownPop { pop: pop.clone() })?;
    target.state = state;
    let mut firings = Vec::new();
    if matches!(scenario, Scenario::Drain(_)) {
        let topology = Topology::new(input)?;
        if let Some(p) = topology.pop_index(pop) {
            firings = drain_firings(&topology, p);
        }
    }
    let plan = compute(&changed)?;
    firings.extend(plan.fired.iter().cloned());
    Ok((plan, firings))
}

/// Which PoPs are in service after automatic failover, and the fail-open firing.
pub(crate) struct ServiceDecision {
    pub in_service: Vec<bool>,
    pub firing: Option<GuardrailFiring>,
}

/// Automatic failover removes Down PoPs only while their capacity is at most
/// `max_failover_capacity_share` of the capacity of PoPs not drained by an operator.
///
/// Past it the core **fails open**: every Down PoP stays in service, as it was. A mass
/// "down" is more likely a fault of the probes or of the network between them than of
/// half the fleet, and removing it all would pile the whole load onto what is left.
/// (Removing only the highest-confidence Down PoPs up to the cap was the alternative;
/// it needs a confidence per verdict the input does not carry yet.)
pub(crate) fn decide_service(pops: &[&PopInput], policy: &SteeringPolicy) -> ServiceDecision {
    let not_drained: f64 = pops
        .iter()
        .filter(|p| !matches!(p.state, PopUsability::Drained { .. }))
        .map(|p| p.capacity)
        .sum();
    let down: Vec<&str> = pops
        .iter()
        .filter(|p| matches!(p.state, PopUsability::Down))
        .map(|p| p.id.as_str())
        .collect();
    let down_capacity: f64 = pops
        .iter()
        .filter(|p| matches!(p.state, PopUsability::Down))
        .map(|p| p.capacity)
        .sum();
    let share = policy.max_failover_capacity_share;
    let fail_open = down_capacity > share * not_drained;
    let in_service = pops
        .iter()
        .map(|p| match p.state {
            PopUsability::Usable | PopUsability::Unknown => true,
            PopUsability::Down => fail_open,
            PopUsability::Drained { .. } => false,
        })
        .collect();
    let firing = fail_open.then(|| GuardrailFiring {
        rule: GuardrailRule::MaxFailoverCapacity,
        pop: None,
        region: None,
        detail: format!(
            "automatic failover would remove {down_capacity:.1} of {not_drained:.1} capacity ({:.1}%), above the \
             {:.1}% limit; failing open: keeping all {} down PoPs in service ({})",
            100.0 * down_capacity / not_drained,
            100.0 * share,
            down.len(),
            list(&down)
        ),
        overridden: false,
    });
    ServiceDecision { in_service, firing }
}

/// Never leave a region without a PoP: for each region with no eligible PoP, keeps the
/// lowest-latency PoP its residency allows, preferring an automatic removal (down or
/// degraded) to an operator drain, and makes it eligible for that region only.
pub(crate) fn keep_last_pop_in_region(
    topology: &Topology<'_>,
    latency: &[f64],
    eligible: &mut [bool],
) -> Vec<GuardrailFiring> {
    let p_count = topology.pops.len();
    let mut firings = Vec::new();
    if p_count == 0 {
        return firings;
    }
    for (r, region) in topology.regions.iter().enumerate() {
        let row = r * p_count..(r + 1) * p_count;
        if eligible[row.clone()].contains(&true) {
            continue;
        }
        let allowed = &topology.allowed[row.clone()];
        let lat = &latency[row.clone()];
        let rank = |p: usize| {
            (
                matches!(topology.pops[p].state, PopUsability::Drained { .. }),
                lat[p],
                p,
            )
        };
        let keep = (0..p_count).filter(|&p| allowed[p]).min_by(|&a, &b| {
            let (da, la, ia) = rank(a);
            let (db, lb, ib) = rank(b);
            da.cmp(&db).then(la.total_cmp(&lb)).then(ia.cmp(&ib))
        });
        let Some(p) = keep else { continue };
        eligible[r * p_count + p] = true;
        let pop = topology.pops[p];
        let why = if topology.unreachable[p].contains(&r) {
            "degraded for it"
        } else {
            pop.state.name()
        };
        firings.push(GuardrailFiring {
            rule: GuardrailRule::LastPopInRegion,
            pop: Some(pop.id.clone()),
            region: Some(region.id.clone()),
            detail: format!(
                "region {} has no usable PoP left; keeping pop {} ({why}, {:.1} ms) for it",
                region.id, pop.id, lat[p]
            ),
            overridden: false,
        });
    }
    firings
}

/// Announce for in-service PoPs, withdraw for removed ones, except that the last PoP of
/// each prefix keeps announcing (preferring an automatic removal to a drain, then the
/// largest capacity, then the id).
pub(crate) fn anycast(
    topology: &Topology<'_>,
    in_service: &[bool],
) -> (BTreeMap<String, AnycastIntent>, Vec<GuardrailFiring>) {
    let mut announce: Vec<bool> = in_service.to_vec();
    let mut by_prefix: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (p, pop) in topology.pops.iter().enumerate() {
        for prefix in &pop.anycast_prefixes {
            by_prefix.entry(prefix.as_str()).or_default().push(p);
        }
    }
    let mut firings = Vec::new();
    for (prefix, pops) in by_prefix {
        if pops.iter().any(|&p| announce[p]) {
            continue;
        }
        let keep = pops.iter().copied().min_by(|&a, &b| {
            let drained = |p: usize| matches!(topology.pops[p].state, PopUsability::Drained { .. });
            drained(a)
                .cmp(&drained(b))
                .then(topology.pops[b].capacity.total_cmp(&topology.pops[a].capacity))
                .then(a.cmp(&b))
        });
        let Some(p) = keep else { continue };
        announce[p] = true;
        let pop = topology.pops[p];
        firings.push(GuardrailFiring {
            rule: GuardrailRule::LastPopForPrefix,
            pop: Some(pop.id.clone()),
            region: None,
            detail: format!(
                "prefix {prefix} would have no announcer; keeping pop {} ({}) announcing",
                pop.id,
                pop.state.name()
            ),
            overridden: false,
        });
    }
    let intents = topology
        .pops
        .iter()
        .zip(&announce)
        .map(|(pop, &a)| {
            (
                pop.id.clone(),
                if a {
                    AnycastIntent::Announce
                } else {
                    AnycastIntent::Withdraw
                },
            )
        })
        .collect();
    (intents, firings)
}

/// Every guardrail a drain of PoP `p` would fire, in rule order.
fn drain_firings(topology: &Topology<'_>, p: usize) -> Vec<GuardrailFiring> {
    let before = decide_service(&topology.pops, &topology.policy).in_service;
    let drained_pop: &PopInput = topology.pops[p];
    let mut after_pop = drained_pop.clone();
    after_pop.state = PopUsability::Drained {
        reason: "drain check".to_owned(),
    };
    let mut after_pops = topology.pops.clone();
    after_pops[p] = &after_pop;
    let after = decide_service(&after_pops, &topology.policy).in_service;
    let pop_id = &drained_pop.id;
    let mut firings = Vec::new();

    let demand: f64 = topology.regions.iter().map(|r| r.demand).sum();
    let capacity = |s: &[bool]| -> f64 {
        topology
            .pops
            .iter()
            .zip(s)
            .filter(|(_, &s)| s)
            .map(|(p, _)| p.capacity)
            .sum()
    };
    let (cap_before, cap_after) = (capacity(&before), capacity(&after));
    if cap_after < demand {
        firings.push(GuardrailFiring {
            rule: GuardrailRule::DrainOverCapacity,
            pop: Some(pop_id.clone()),
            region: None,
            detail: format!(
                "draining pop {pop_id} leaves {cap_after:.1} of in-service capacity for {demand:.1} of demand \
                 (in service before: {cap_before:.1})"
            ),
            overridden: false,
        });
    }

    let (eligible_before, eligible_after) = (topology.eligible(&before), topology.eligible(&after));
    let p_count = topology.pops.len();
    for (r, region) in topology.regions.iter().enumerate() {
        let row = r * p_count..(r + 1) * p_count;
        if eligible_before[r * p_count + p] && !eligible_after[row].contains(&true) {
            firings.push(GuardrailFiring {
                rule: GuardrailRule::LastPopInRegion,
                pop: Some(pop_id.clone()),
                region: Some(region.id.clone()),
                detail: format!("pop {pop_id} is the last usable PoP of region {}", region.id),
                overridden: false,
            });
        }
    }

    let prefixes: BTreeSet<&str> = drained_pop.anycast_prefixes.iter().map(String::as_str).collect();
    for prefix in prefixes {
        let others = topology
            .pops
            .iter()
            .enumerate()
            .any(|(q, pop)| q != p && after[q] && pop.anycast_prefixes.iter().any(|x| x == prefix));
        if !others {
            firings.push(GuardrailFiring {
                rule: GuardrailRule::LastPopForPrefix,
                pop: Some(pop_id.clone()),
                region: None,
                detail: format!("pop {pop_id} is the last PoP announcing prefix {prefix}"),
                overridden: false,
            });
        }
    }
    firings
}

/// Names for a message, at most ten of them.
fn list(names: &[&str]) -> String {
    const SHOWN: usize = 10;
    let mut out = names.iter().take(SHOWN).copied().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        out.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    out
}
