//! [`compute`]: from a [`SteeringInput`] to a [`Plan`].

use std::collections::{BTreeMap, BTreeSet};

use crate::error::SteeringError;
use crate::fast;
use crate::guardrail;
use crate::model::{PopInput, PopUsability, RegionInput, SteeringInput, SteeringPolicy};
use crate::plan::{Plan, PopLoad, PopWeight};
use crate::solve::{self, Network};

/// Computes the plan for `input`: weights per client region, load per PoP, anycast
/// intents, and the guardrails that fired.
///
/// A pure function of `input`: the same input (in any order of its lists) gives the
/// same plan, bit for bit. See the crate documentation for the model and what the fill
/// guarantees.
pub fn compute(input: &SteeringInput) -> Result<Plan, SteeringError> {
    compute_with(input, Solver::Auto)
}

/// Which fill algorithm [`compute_with`] uses. Not part of the stable API: it exists so
/// tests and benchmarks can compare the two.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Solver {
    /// Exact below [`EXACT_LIMIT_PAIRS`] (region, PoP) pairs, fast above.
    Auto,
    /// Successive shortest paths with an optimality certificate.
    Exact,
    /// Global greedy plus 2-region/2-PoP swaps.
    Fast,
}

/// Networks with more (region, PoP) pairs than this use the fast fill in [`compute`].
pub const EXACT_LIMIT_PAIRS: usize = 20_000;

/// [`compute`] with a chosen fill algorithm.
#[doc(hidden)]
pub fn compute_with(input: &SteeringInput, solver: Solver) -> Result<Plan, SteeringError> {
    let topology = Topology::new(input)?;
    let mut reasons = Vec::new();
    let latency = dense_latency(input, &topology, &mut reasons);
    let service = guardrail::decide_service(&topology.pops, &topology.policy);
    let mut eligible = topology.eligible(&service.in_service);
    let mut fired = Vec::new();
    fired.extend(service.firing.clone());
    fired.extend(guardrail::keep_last_pop_in_region(&topology, &latency, &mut eligible));

    let (r_count, p_count) = (topology.regions.len(), topology.pops.len());
    // Capacity that can carry load at all: PoPs eligible for at least one region.
    let mut carries = vec![false; p_count];
    for row in eligible.chunks(p_count.max(1)).take(r_count) {
        for (p, &e) in row.iter().enumerate() {
            carries[p] |= e;
        }
    }
    let capacity: Vec<f64> = topology.pops.iter().map(|p| p.capacity).collect();
    let usable_capacity: f64 = (0..p_count).filter(|&p| carries[p]).map(|p| capacity[p]).sum();
    let total_demand: f64 = topology.regions.iter().map(|r| r.demand).sum();
    // Short of capacity: solve for demand scaled down to fit, then scale loads back up,
    // so the overload lands on every PoP in proportion to its capacity.
    let scale = if total_demand > usable_capacity && usable_capacity > 0.0 {
        usable_capacity / total_demand
    } else {
        1.0
    };
    let demand: Vec<f64> = topology.regions.iter().map(|r| r.demand * scale).collect();
    let tier1: Vec<f64> = capacity
        .iter()
        .map(|c| c * topology.policy.target_utilisation)
        .collect();
    let network = Network {
        regions: r_count,
        pops: p_count,
        latency: &latency,
        eligible: &eligible,
        demand: &demand,
        tier1: &tier1,
        capacity: &capacity,
    };
    let exact = match solver {
        Solver::Auto => r_count * p_count <= EXACT_LIMIT_PAIRS,
        Solver::Exact => true,
        Solver::Fast => false,
    };
    let solution = if exact {
        solve::solve_exact(&network)
    } else {
        fast::solve_fast(&network)
    };
    if solution.hit_bound {
        reasons.push("exact steering solver stopped at its work bound; the rest was placed greedily".to_owned());
    }

    // Per region loads in real units; overflow is spread over the region's eligible
    // PoPs in proportion to capacity (never starve a region).
    let mut pop_load = vec![0.0f64; p_count];
    let mut regions = BTreeMap::new();
    for r in 0..r_count {
        let row = &eligible[r * p_count..(r + 1) * p_count];
        let mut loads: BTreeMap<usize, f64> = BTreeMap::new();
        for &(p, flow) in &solution.flows[r] {
            *loads.entry(p).or_default() += flow / scale;
        }
        let overflow = solution.overflow[r] / scale;
        if overflow > 0.0 {
            let share: f64 = (0..p_count).filter(|&p| row[p]).map(|p| capacity[p]).sum();
            for p in (0..p_count).filter(|&p| row[p]) {
                *loads.entry(p).or_default() += overflow * capacity[p] / share;
            }
        }
        for (&p, &l) in &loads {
            pop_load[p] += l;
        }
        regions.insert(
            topology.regions[r].id.clone(),
            weights(&topology, &latency, row, r, &loads),
        );
    }

    let mut plan_pop_load = BTreeMap::new();
    let mut overloaded = false;
    for (p, pop) in topology.pops.iter().enumerate() {
        let utilisation = pop_load[p] / pop.capacity;
        overloaded |= utilisation > 1.0 + 1e-9;
        plan_pop_load.insert(
            pop.id.clone(),
            PopLoad {
                load: pop_load[p],
                capacity: pop.capacity,
                utilisation,
                state: pop.state.clone(),
                in_service: service.in_service[p],
            },
        );
    }
    let (anycast, prefix_firings) = guardrail::anycast(&topology, &service.in_service);
    fired.extend(prefix_firings);

    explain_pops(&topology, &service.in_service, service.firing.is_some(), &mut reasons);
    if overloaded {
        reasons.push(format!(
            "overloaded: demand {total_demand:.1} exceeds the capacity that can serve it ({usable_capacity:.1}); \
             overload spread in proportion to capacity"
        ));
    }
    reasons.extend(fired.iter().map(|f| f.to_string()));
    Ok(Plan {
        regions,
        pop_load: plan_pop_load,
        overloaded,
        anycast,
        fired,
        reasons,
    })
}

/// The input, validated and in canonical order (sorted by id), with the reachability
/// that does not depend on health: residency and DEGRADED (`unreachable_from`).
pub(crate) struct Topology<'a> {
    pub pops: Vec<&'a PopInput>,
    pub regions: Vec<&'a RegionInput>,
    pub policy: SteeringPolicy,
    /// `regions × pops`: the region's residency constraint allows the PoP.
    pub allowed: Vec<bool>,
    /// Per PoP, the regions (indices) it is unreachable from.
    pub unreachable: Vec<Vec<usize>>,
}

impl<'a> Topology<'a> {
    pub(crate) fn new(input: &'a SteeringInput) -> Result<Self, SteeringError> {
        let policy = input.policy.clone().validate()?;
        for (i, pop) in input.pops.iter().enumerate() {
            if pop.id.is_empty() {
                return Err(SteeringError::invalid(format!("pops[{i}].id"), "must not be empty"));
            }
            if !(pop.capacity.is_finite() && pop.capacity > 0.0) {
                return Err(SteeringError::invalid(
                    format!("pops[{i}].capacity"),
                    format!("must be finite and > 0, got {}", pop.capacity),
                ));
            }
        }
        for (i, region) in input.regions.iter().enumerate() {
            if region.id.is_empty() {
                return Err(SteeringError::invalid(format!("regions[{i}].id"), "must not be empty"));
            }
            if !(region.demand.is_finite() && region.demand >= 0.0) {
                return Err(SteeringError::invalid(
                    format!("regions[{i}].demand"),
                    format!("must be finite and >= 0, got {}", region.demand),
                ));
            }
        }
        let d = input.latency.default_latency;
        if !(d.is_finite() && d >= 0.0) {
            return Err(SteeringError::invalid(
                "latency.default_latency",
                format!("must be finite and >= 0, got {d}"),
            ));
        }
        let pops = sorted_unique(&input.pops, |p| &p.id, "pops")?;
        let regions = sorted_unique(&input.regions, |r| &r.id, "regions")?;
        let (r_count, p_count) = (regions.len(), pops.len());
        let pop_index = |id: &str| pops.binary_search_by(|p| p.id.as_str().cmp(id)).ok();
        let mut allowed = vec![true; r_count * p_count];
        for (r, region) in regions.iter().enumerate() {
            let Some(set) = &region.allowed_pops else { continue };
            let row = &mut allowed[r * p_count..(r + 1) * p_count];
            row.fill(false);
            for id in set {
                if let Some(p) = pop_index(id) {
                    row[p] = true;
                }
            }
            if p_count > 0 && !row.contains(&true) {
                let i = input.regions.iter().position(|x| x.id == region.id).unwrap_or(0);
                return Err(SteeringError::invalid(
                    format!("regions[{i}].allowed_pops"),
                    "must name at least one known PoP",
                ));
            }
        }
        let region_index = |id: &str| regions.binary_search_by(|r| r.id.as_str().cmp(id)).ok();
        let unreachable = pops
            .iter()
            .map(|pop| pop.unreachable_from.iter().filter_map(|id| region_index(id)).collect())
            .collect();
        Ok(Topology {
            pops,
            regions,
            policy,
            allowed,
            unreachable,
        })
    }

    /// `regions × pops`: may region r use PoP p, given which PoPs are in service.
    pub(crate) fn eligible(&self, in_service: &[bool]) -> Vec<bool> {
        let p_count = self.pops.len();
        let mut eligible = self.allowed.clone();
        for row in eligible.chunks_mut(p_count.max(1)) {
            for (e, &s) in row.iter_mut().zip(in_service) {
                *e &= s;
            }
        }
        for (p, regions) in self.unreachable.iter().enumerate() {
            for &r in regions {
                eligible[r * p_count + p] = false;
            }
        }
        eligible
    }

    pub(crate) fn pop_index(&self, id: &str) -> Option<usize> {
        self.pops.binary_search_by(|p| p.id.as_str().cmp(id)).ok()
    }

    pub(crate) fn region_index(&self, id: &str) -> Option<usize> {
        self.regions.binary_search_by(|r| r.id.as_str().cmp(id)).ok()
    }
}

/// Sorts by id, rejecting duplicates (naming the later one by its index in the input).
fn sorted_unique<'a, T>(items: &'a [T], id: impl Fn(&T) -> &String, what: &str) -> Result<Vec<&'a T>, SteeringError> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| id(&items[a]).cmp(id(&items[b])).then(a.cmp(&b)));
    for pair in order.windows(2) {
        if id(&items[pair[0]]) == id(&items[pair[1]]) {
            let later = pair[0].max(pair[1]);
            return Err(SteeringError::invalid(
                format!("{what}[{later}].id"),
                format!("duplicate id {:?}", id(&items[later])),
            ));
        }
    }
    Ok(order.into_iter().map(|i| &items[i]).collect())
}

/// The `regions × pops` latency matrix: default, overlaid by hints, overlaid by
/// measurements. Each table's columns are mapped to PoP indices once, so filling it is
/// one array access per entry.
fn dense_latency(input: &SteeringInput, topology: &Topology<'_>, reasons: &mut Vec<String>) -> Vec<f64> {
    let p_count = topology.pops.len();
    let mut dense = vec![input.latency.default_latency; topology.regions.len() * p_count];
    let mut invalid = 0usize;
    for table in [&input.latency.hints, &input.latency.measured] {
        let columns: Vec<Option<usize>> = table.pops.iter().map(|id| topology.pop_index(id)).collect();
        for (region_id, row) in &table.rows {
            let Some(r) = topology.region_index(region_id) else {
                continue;
            };
            let out = &mut dense[r * p_count..(r + 1) * p_count];
            for (&column, &value) in columns.iter().zip(row) {
                let (Some(p), Some(ms)) = (column, value) else { continue };
                if ms.is_finite() && ms >= 0.0 {
                    out[p] = ms;
                } else {
                    invalid += 1;
                }
            }
        }
    }
    if invalid > 0 {
        reasons.push(format!(
            "{invalid} latency values were not finite and >= 0 and were ignored"
        ));
    }
    dense
}

/// A region's weights from its per-PoP loads, sorted by weight descending then PoP id.
/// A region with nothing placed (zero demand) gets all its weight on its lowest-latency
/// eligible PoP, so DNS can still answer it.
fn weights(
    topology: &Topology<'_>,
    latency: &[f64],
    row: &[bool],
    r: usize,
    loads: &BTreeMap<usize, f64>,
) -> Vec<PopWeight> {
    let total: f64 = loads.values().sum();
    let mut out: Vec<PopWeight> = if total > 0.0 {
        loads
            .iter()
            .filter(|(_, &l)| l > 0.0)
            .map(|(&p, &l)| PopWeight {
                pop: topology.pops[p].id.clone(),
                weight: l / total,
            })
            .collect()
    } else {
        let p_count = topology.pops.len();
        let lat = &latency[r * p_count..(r + 1) * p_count];
        (0..p_count)
            .filter(|&p| row[p])
            .min_by(|&a, &b| lat[a].total_cmp(&lat[b]).then(a.cmp(&b)))
            .map(|p| PopWeight {
                pop: topology.pops[p].id.clone(),
                weight: 1.0,
            })
            .into_iter()
            .collect()
    };
    out.sort_by(|a, b| b.weight.total_cmp(&a.weight).then_with(|| a.pop.cmp(&b.pop)));
    out
}

/// One sentence per PoP whose state shapes the plan.
fn explain_pops(topology: &Topology<'_>, in_service: &[bool], fail_open: bool, reasons: &mut Vec<String>) {
    for (p, pop) in topology.pops.iter().enumerate() {
        match &pop.state {
            PopUsability::Usable => {}
            PopUsability::Unknown => {
                reasons.push(format!("pop {}: no health data, kept in service (fail static)", pop.id))
            }
            PopUsability::Down if in_service[p] && fail_open => reasons.push(format!(
                "pop {}: down but kept in service (failover cap exceeded, fail open)",
                pop.id
            )),
            PopUsability::Down => reasons.push(format!("pop {}: down, removed by automatic failover", pop.id)),
            PopUsability::Drained { reason } => {
                reasons.push(format!("pop {}: drained by operator ({reason}), removed", pop.id))
            }
        }
        if !topology.unreachable[p].is_empty() {
            let names: BTreeSet<&str> = topology.unreachable[p]
                .iter()
                .map(|&r| topology.regions[r].id.as_str())
                .collect();
            let names: Vec<&str> = names.into_iter().collect();
            reasons.push(format!(
                "pop {}: degraded, not used by regions {}",
                pop.id,
                names.join(", ")
            ));
        }
    }
}
