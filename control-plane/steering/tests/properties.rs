//! Property tests of the steering core over random topologies (1–30 PoPs, 1–20
//! regions, random capacities, demands, latencies, states, degradations, residency and
//! prefixes).

use std::collections::{BTreeMap, BTreeSet};

use meridian_steering::{
    compute, compute_with, AnycastIntent, GuardrailRule, LatencyMatrix, Plan, PopInput, PopUsability, RegionInput,
    Solver, SteeringInput, SteeringPolicy,
};
use proptest::prelude::*;

const PREFIXES: [&str; 4] = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"];

fn state() -> impl Strategy<Value = PopUsability> {
    prop_oneof![
        6 => Just(PopUsability::Usable),
        2 => Just(PopUsability::Down),
        1 => Just(PopUsability::Drained { reason: "test".into() }),
        1 => Just(PopUsability::Unknown),
    ]
}

prop_compose! {
    fn topology()(pop_count in 1usize..=30, region_count in 1usize..=20)(
        capacities in prop::collection::vec(1.0f64..1000.0, pop_count),
        states in prop::collection::vec(state(), pop_count),
        prefixes in prop::collection::vec(prop::collection::btree_set(0usize..PREFIXES.len(), 0..=2), pop_count),
        demands in prop::collection::vec(prop_oneof![1 => Just(0.0), 9 => 0.0f64..500.0], region_count),
        // Latency per pair: measured, hint only, or neither (default).
        latencies in prop::collection::vec((1.0f64..300.0, 0u8..10), pop_count * region_count),
        degraded in prop::collection::vec((0..pop_count, 0..region_count), 0..=4),
        residency in prop::collection::vec(
            prop::option::weighted(0.2, prop::collection::btree_set(0..pop_count, 1..=3)),
            region_count,
        ),
        target in 0.5f64..=1.0,
        share in 0.0f64..=1.0,
        pop_count in Just(pop_count),
        region_count in Just(region_count),
    ) -> SteeringInput {
        let pop_id = |p: usize| format!("pop-{p:02}");
        let region_id = |r: usize| format!("region-{r:02}");
        let mut pops: Vec<PopInput> = (0..pop_count).map(|p| PopInput {
            id: pop_id(p),
            capacity: capacities[p],
            state: states[p].clone(),
            unreachable_from: BTreeSet::new(),
            anycast_prefixes: prefixes[p].iter().map(|&i| PREFIXES[i].to_string()).collect(),
        }).collect();
        for &(p, r) in &degraded {
            pops[p].unreachable_from.insert(region_id(r));
        }
        let regions = (0..region_count).map(|r| RegionInput {
            id: region_id(r),
            demand: demands[r],
            allowed_pops: residency[r].as_ref().map(|set| set.iter().map(|&p| pop_id(p)).collect()),
        }).collect();
        let mut latency = LatencyMatrix::new(250.0);
        for r in 0..region_count {
            for p in 0..pop_count {
                let (ms, kind) = latencies[r * pop_count + p];
                match kind {
                    0..=6 => latency.set_measured(&region_id(r), &pop_id(p), ms),
                    7 | 8 => latency.set_hint(&region_id(r), &pop_id(p), ms),
                    _ => {}
                }
            }
        }
        let policy = SteeringPolicy {
            target_utilisation: target,
            max_failover_capacity_share: share,
            weight_change_threshold: 0.05,
        };
        SteeringInput { pops, regions, latency, policy }
    }
}

/// May region `r` use PoP `p` according to the plan's service decisions and the input?
fn eligible(input: &SteeringInput, plan: &Plan, region: &RegionInput, pop: &PopInput) -> bool {
    plan.pop_load[&pop.id].in_service
        && !pop.unreachable_from.contains(&region.id)
        && region.allowed_pops.as_ref().is_none_or(|set| set.contains(&pop.id))
        && input.pops.iter().any(|p| p.id == pop.id)
}

/// The same input with every list (and the latency tables' columns) in another order.
fn shuffled(input: &SteeringInput, rotate: usize) -> SteeringInput {
    let mut out = input.clone();
    out.pops.reverse();
    let n = out.pops.len();
    out.pops.rotate_left(rotate % n);
    out.regions.reverse();
    for table in [&mut out.latency.measured, &mut out.latency.hints] {
        let width = table.pops.len();
        for row in table.rows.values_mut() {
            row.resize(width, None);
            row.reverse();
        }
        table.pops.reverse();
    }
    for pop in &mut out.pops {
        pop.anycast_prefixes.reverse();
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn weights_are_a_distribution_and_every_region_is_served(input in topology()) {
        let plan = compute(&input).unwrap();
        prop_assert_eq!(plan.regions.len(), input.regions.len());
        for (region, weights) in &plan.regions {
            prop_assert!(!weights.is_empty(), "region {} has no PoP", region);
            prop_assert!(weights.iter().all(|w| w.weight >= 0.0 && w.weight <= 1.0 + 1e-12));
            let sum: f64 = weights.iter().map(|w| w.weight).sum();
            prop_assert!((sum - 1.0).abs() <= 1e-9, "region {} sums to {}", region, sum);
            // Sorted by weight descending, then PoP id.
            prop_assert!(weights
                .windows(2)
                .all(|w| w[0].weight > w[1].weight || (w[0].weight == w[1].weight && w[0].pop < w[1].pop)));
        }
        // Every unit of demand lands somewhere.
        let demand: f64 = input.regions.iter().map(|r| r.demand).sum();
        let load: f64 = plan.pop_load.values().map(|l| l.load).sum();
        prop_assert!((demand - load).abs() <= 1e-6 * (1.0 + demand), "demand {} vs load {}", demand, load);
    }

    #[test]
    fn no_usable_capacity_ignored_while_a_pop_is_above_target(input in topology()) {
        let plan = compute(&input).unwrap();
        if plan.overloaded {
            // Checked by `overload_is_spread_in_proportion_to_capacity`.
            return Ok(());
        }
        let target = input.policy.target_utilisation;
        for region in &input.regions {
            for w in &plan.regions[&region.id] {
                if w.weight <= 1e-9 || region.demand <= 0.0 || plan.pop_load[&w.pop].utilisation <= target + 1e-6 {
                    continue;
                }
                // Region uses a PoP above target: every PoP it may use must be at target.
                for pop in &input.pops {
                    if eligible(&input, &plan, region, pop) {
                        let u = plan.pop_load[&pop.id].utilisation;
                        prop_assert!(u >= target - 1e-6,
                            "region {} on {} (util {}) while {} it may use is at {}",
                            region.id, w.pop, plan.pop_load[&w.pop].utilisation, pop.id, u);
                    }
                }
            }
        }
    }

    #[test]
    fn plan_is_a_pure_function_of_the_input(input in topology(), rotate in 0usize..30) {
        let plan = compute(&input).unwrap();
        prop_assert_eq!(&plan, &compute(&input).unwrap());
        prop_assert_eq!(&plan, &compute(&shuffled(&input, rotate)).unwrap());
    }

    #[test]
    fn guardrails_hold(input in topology()) {
        let plan = compute(&input).unwrap();
        let fired = |rule: GuardrailRule| plan.fired.iter().any(|f| f.rule == rule);
        // No prefix without an announcer.
        let prefixes: BTreeSet<&String> = input.pops.iter().flat_map(|p| &p.anycast_prefixes).collect();
        for prefix in prefixes {
            let announced = input.pops.iter()
                .any(|p| p.anycast_prefixes.contains(prefix) && plan.anycast[&p.id] == AnycastIntent::Announce);
            prop_assert!(announced, "prefix {} has no announcer", prefix);
        }
        // Down capacity removed is within the cap, unless the core failed open.
        let not_drained: f64 = input.pops.iter()
            .filter(|p| !matches!(p.state, PopUsability::Drained { .. })).map(|p| p.capacity).sum();
        let removed_down: f64 = input.pops.iter()
            .filter(|p| p.state == PopUsability::Down && !plan.pop_load[&p.id].in_service).map(|p| p.capacity).sum();
        let share = input.policy.max_failover_capacity_share;
        prop_assert!(removed_down <= share * not_drained + 1e-9 || fired(GuardrailRule::MaxFailoverCapacity));
        if fired(GuardrailRule::MaxFailoverCapacity) {
            prop_assert!(input
                .pops
                .iter()
                .filter(|p| p.state == PopUsability::Down)
                .all(|p| plan.pop_load[&p.id].in_service));
        }
        // Removed PoPs carry load only for regions kept on them by the last-PoP rule.
        let kept: BTreeMap<(&str, &str), ()> = plan.fired.iter()
            .filter(|f| f.rule == GuardrailRule::LastPopInRegion)
            .filter_map(|f| Some(((f.pop.as_deref()?, f.region.as_deref()?), ())))
            .collect();
        for region in &input.regions {
            for w in &plan.regions[&region.id] {
                let pop = input.pops.iter().find(|p| p.id == w.pop).unwrap();
                let kept_here = kept.contains_key(&(pop.id.as_str(), region.id.as_str()));
                prop_assert!(eligible(&input, &plan, region, pop) || kept_here,
                    "region {} uses {} without being allowed to", region.id, pop.id);
            }
        }
    }

    #[test]
    fn fast_fill_keeps_the_invariants(input in topology(), rotate in 0usize..30) {
        // The fill `compute` uses on large networks, run on small ones.
        let plan = compute_with(&input, Solver::Fast).unwrap();
        prop_assert_eq!(&plan, &compute_with(&shuffled(&input, rotate), Solver::Fast).unwrap());
        let target = input.policy.target_utilisation;
        for region in &input.regions {
            let weights = &plan.regions[&region.id];
            let sum: f64 = weights.iter().map(|w| w.weight).sum();
            prop_assert!((sum - 1.0).abs() <= 1e-9 && weights.iter().all(|w| w.weight >= 0.0));
            if plan.overloaded || region.demand <= 0.0 {
                continue;
            }
            for w in weights.iter().filter(|w| w.weight > 1e-9 && plan.pop_load[&w.pop].utilisation > target + 1e-6) {
                for pop in input.pops.iter().filter(|p| eligible(&input, &plan, region, p)) {
                    prop_assert!(plan.pop_load[&pop.id].utilisation >= target - 1e-6,
                        "region {} on {} above target while {} is below", region.id, w.pop, pop.id);
                }
            }
        }
        let demand: f64 = input.regions.iter().map(|r| r.demand).sum();
        let load: f64 = plan.pop_load.values().map(|l| l.load).sum();
        prop_assert!((demand - load).abs() <= 1e-6 * (1.0 + demand));
    }

    #[test]
    fn overload_is_spread_in_proportion_to_capacity(input in topology()) {
        // With nothing restricting who may use what, an overloaded plan loads every
        // in-service PoP to the same utilisation.
        let mut input = input;
        for pop in &mut input.pops {
            pop.unreachable_from.clear();
        }
        for region in &mut input.regions {
            region.allowed_pops = None;
            region.demand *= 10.0;
        }
        let plan = compute(&input).unwrap();
        if !plan.overloaded || !plan.pop_load.values().any(|l| l.in_service) {
            return Ok(());
        }
        let utils: Vec<f64> = plan.pop_load.values().filter(|l| l.in_service).map(|l| l.utilisation).collect();
        let (lo, hi) = utils.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &u| (lo.min(u), hi.max(u)));
        prop_assert!(hi - lo <= 1e-6 * hi, "utilisations range {}..{}", lo, hi);
    }
}
