//! The one rule for "is this plan worth publishing?". It compares *stored* plans —
//! the plan in force is what a new leader reads from the store, so the rule must
//! work on that form — and lists why, so every published version explains itself.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use meridian_core::records::StoredPlan;

/// At most this many weight moves are listed one by one.
const MAX_LISTED_MOVES: usize = 5;

/// Whether `new` takes out a PoP that `old` still used because it is DOWN (its
/// Anycast withdrawal comes with it). Such a plan is urgent — it goes to every
/// agent at once, skipping a canary wave in progress (issue [8]): holding the fleet
/// on a plan that sends clients to a dead PoP is worse than an unverified step. A
/// drain (planned, even when it withdraws a prefix) is not urgent.
pub fn is_urgent(old: Option<&StoredPlan>, new: &StoredPlan) -> bool {
    use meridian_core::records::PopState;
    let Some(old) = old else { return false };
    new.pops
        .iter()
        .any(|p| p.state == PopState::Down && old.pops.iter().any(|o| o.pop == p.pop && o.state != PopState::Down))
}

/// Why `new` should replace `old` (the plan in force), or `None` when nothing that
/// matters changed: a PoP's state, an Anycast action, the guardrails that fired, the
/// DNS TTL, the set of regions, a PoP's addresses, or any (region, PoP) weight by
/// more than `threshold`. Below that, latency jitter would churn every agent.
pub fn worth_publishing(old: &StoredPlan, new: &StoredPlan, threshold: f64) -> Option<Vec<String>> {
    let mut why = Vec::new();
    let states = |p: &StoredPlan| {
        p.pops
            .iter()
            .map(|s| (s.pop.clone(), s.state))
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
    // A PoP's capacity (an operator override, or a topology change) is part of
    // what the plan says, even when no weight moves past the threshold.
    for new_pop in &new.pops {
        if let Some(o) = old.pops.iter().find(|o| o.pop == new_pop.pop) {
            if (o.capacity - new_pop.capacity).abs() > 1e-9 {
                why.push(format!(
                    "PoP {}: capacity {} → {}",
                    new_pop.pop, o.capacity, new_pop.capacity
                ));
            }
        }
    }
    let actions = |p: &StoredPlan| {
        p.anycast
            .iter()
            .map(|a| ((a.pop.clone(), a.prefix), (a.action, a.prepend_count)))
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
    let regions = |p: &StoredPlan| p.regions.iter().map(|r| r.region.clone()).collect::<BTreeSet<_>>();
    if regions(old) != regions(new) {
        why.push("client regions changed".into());
    }
    type Addresses<'a> = (f64, &'a Vec<Ipv4Addr>, &'a Vec<Ipv6Addr>);
    fn weights(p: &StoredPlan) -> BTreeMap<(String, String), Addresses<'_>> {
        p.regions
            .iter()
            .flat_map(|r| {
                r.pops
                    .iter()
                    .map(move |w| ((r.region.clone(), w.pop.clone()), (w.weight, &w.ipv4, &w.ipv6)))
            })
            .collect()
    }
    let (ow, nw) = (weights(old), weights(new));
    let mut moved = 0;
    for key in ow.keys().chain(nw.keys()).collect::<BTreeSet<_>>() {
        let (o, n) = (ow.get(key), nw.get(key));
        let (ov, nv) = (o.map(|x| x.0).unwrap_or(0.0), n.map(|x| x.0).unwrap_or(0.0));
        let addresses_changed = matches!((o, n), (Some(a), Some(b)) if a.1 != b.1 || a.2 != b.2);
        if (ov - nv).abs() > threshold || addresses_changed {
            moved += 1;
            if moved <= MAX_LISTED_MOVES {
                why.push(format!(
                    "region {} → {}: weight {:.0}% → {:.0}%{}",
                    key.0,
                    key.1,
                    ov * 100.0,
                    nv * 100.0,
                    if addresses_changed { " (addresses changed)" } else { "" }
                ));
            }
        }
    }
    if moved > MAX_LISTED_MOVES {
        why.push(format!("…and {} more weight changes", moved - MAX_LISTED_MOVES));
    }
    (!why.is_empty()).then_some(why)
}
