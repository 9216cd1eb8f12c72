//! The fill for large networks: a global greedy over candidate (region, PoP) pairs in
//! latency order, then a bounded improvement pass of 2-region/2-PoP swaps (negative
//! 4-cycles).
//!
//! The greedy takes the cheapest pair of the whole network first, never the first
//! region in the list, fills every PoP to its target before any headroom is used, and
//! only then spills into headroom; loads only grow, so no region is left on a far PoP
//! while a nearer candidate has room in the same tier. What it misses is contention
//! between regions: region A may take a PoP that B needs more. The swap pass repairs
//! the two-region cases (exchanging equal amounts keeps every PoP's load, so capacity
//! and tiers stay as they are); longer chains of displacement are left, which the exact
//! solver in `solve.rs` handles on networks small enough for it.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::solve::{candidate_lists, Network, Solution, INITIAL_CANDIDATES};

/// At most this many improvement passes over all flows.
const MAX_PASSES: usize = 4;

/// Work bound (steps) of the rescue of regions the greedy could not place.
const RESCUE_WORK: usize = 2_000_000;

/// Greedy fill plus swaps (see the module doc).
pub(crate) fn solve_fast(net: &Network<'_>) -> Solution {
    let (r_count, p_count) = (net.regions, net.pops);
    let k = vec![INITIAL_CANDIDATES; r_count];
    let (start, pop, lat, _) = candidate_lists(net, &k);
    let total: f64 = net.demand.iter().sum();
    let eps = total.max(f64::MIN_POSITIVE) * 1e-12;
    let mut state = Fill {
        load: vec![0.0; p_count],
        remaining: net.demand.to_vec(),
        flows: vec![Vec::new(); r_count],
        eps,
    };
    // Every eligible PoP's target before any headroom: candidates first, then, for
    // regions still short, ever longer lists of their eligible PoPs (built only then).
    for bound in [net.tier1, net.capacity] {
        state.fill(&start, &pop, &lat, bound);
        let mut k = 4 * INITIAL_CANDIDATES;
        while state.remaining.iter().any(|&x| x > eps) && k < 4 * p_count {
            let (more_start, more_pop, more_lat) = longer_lists(net, &state.remaining, eps, k);
            state.fill(&more_start, &more_pop, &more_lat, bound);
            k *= 4;
        }
    }
    if state.remaining.iter().any(|&x| x > eps) {
        rescue(net, &mut state);
    }
    let overflow = state.remaining.iter().map(|&x| if x > eps { x } else { 0.0 }).collect();
    repair_targets(net, &mut state.load, &mut state.flows, eps);
    improve(net, &start, &pop, &lat, &state.load, &mut state.flows, eps);
    let flows = state
        .flows
        .into_iter()
        .map(|f| f.into_iter().filter(|&(_, x)| x > 0.0).collect())
        .collect();
    Solution {
        flows,
        overflow,
        hit_bound: false,
    }
}

/// The `k` lowest-latency eligible PoPs, sorted, of the regions with demand left.
fn longer_lists(net: &Network<'_>, remaining: &[f64], eps: f64, k: usize) -> (Vec<usize>, Vec<u32>, Vec<f64>) {
    let p_count = net.pops;
    let mut list_start = Vec::with_capacity(net.regions + 1);
    let (mut list_pop, mut list_lat) = (Vec::new(), Vec::new());
    let mut scratch: Vec<(f64, u32)> = Vec::with_capacity(p_count);
    for (r, &left) in remaining.iter().enumerate() {
        list_start.push(list_pop.len());
        if left <= eps {
            continue;
        }
        let row = r * p_count;
        scratch.clear();
        scratch.extend(
            (0..p_count)
                .filter(|&p| net.eligible[row + p])
                .map(|p| (net.latency[row + p], p as u32)),
        );
        let by_latency = |a: &(f64, u32), b: &(f64, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        if k < scratch.len() {
            scratch.select_nth_unstable_by(k, by_latency);
            scratch.truncate(k);
        }
        scratch.sort_unstable_by(by_latency);
        list_lat.extend(scratch.iter().map(|&(l, _)| l));
        list_pop.extend(scratch.iter().map(|&(_, p)| p));
    }
    list_start.push(list_pop.len());
    (list_start, list_pop, list_lat)
}

struct Fill {
    load: Vec<f64>,
    remaining: Vec<f64>,
    flows: Vec<Vec<(usize, f64)>>,
    eps: f64,
}

impl Fill {
    /// One pass of the global greedy up to `bound` per PoP: pairs are taken cheapest
    /// first across all regions, each region advancing along its own sorted list.
    fn fill(&mut self, start: &[usize], pop: &[u32], lat: &[f64], bound: &[f64]) {
        let mut heap = BinaryHeap::new();
        for r in 0..self.remaining.len() {
            if self.remaining[r] > self.eps && start[r] < start[r + 1] {
                heap.push(Reverse(Pair {
                    latency: lat[start[r]],
                    region: r as u32,
                    arc: start[r] as u32,
                }));
            }
        }
        while let Some(Reverse(Pair { region, arc, .. })) = heap.pop() {
            let (r, arc) = (region as usize, arc as usize);
            let p = pop[arc] as usize;
            let room = bound[p] - self.load[p];
            if room > self.eps {
                let take = room.min(self.remaining[r]);
                self.load[p] += take;
                self.remaining[r] -= take;
                add(&mut self.flows[r], p, take);
            }
            if self.remaining[r] > self.eps && arc + 1 < start[r + 1] {
                heap.push(Reverse(Pair {
                    latency: lat[arc + 1],
                    region,
                    arc: (arc + 1) as u32,
                }));
            }
        }
    }
}

/// For regions the greedy could not place (their few PoPs were taken by regions that
/// had alternatives, e.g. under residency or degradation): frees room on their PoPs by
/// moving those other regions to a PoP of theirs with room (an augmenting path of two
/// hops; longer ones are not searched), then takes it.
fn rescue(net: &Network<'_>, state: &mut Fill) {
    let (p_count, eps) = (net.pops, state.eps);
    // Bounds the search on large, heavily restricted networks; what is not rescued is
    // spread by capacity as overflow.
    let mut work = RESCUE_WORK;
    for r in 0..net.regions {
        if state.remaining[r] <= eps {
            continue;
        }
        for p in (0..p_count).filter(|&p| net.eligible[r * p_count + p]) {
            for b in 0..net.regions {
                if state.remaining[r] <= eps || work == 0 {
                    break;
                }
                work -= 1;
                let x_bp = get(&state.flows[b], p);
                if b == r || x_bp <= eps {
                    continue;
                }
                work = work.saturating_sub(2 * p_count);
                for bound in [net.tier1, net.capacity] {
                    for q in (0..p_count).filter(|&q| q != p && net.eligible[b * p_count + q]) {
                        let x_bp = get(&state.flows[b], p);
                        let delta = (bound[q] - state.load[q]).min(x_bp).min(state.remaining[r]);
                        if delta <= eps {
                            continue;
                        }
                        add(&mut state.flows[b], p, -delta);
                        add(&mut state.flows[b], q, delta);
                        add(&mut state.flows[r], p, delta);
                        state.load[q] += delta;
                        state.remaining[r] -= delta;
                    }
                }
            }
        }
    }
}

/// Moves load out of PoPs' headroom where the region sending it has a PoP with room
/// below target (the greedy can leave this when a region that had nowhere else to go
/// spilled into the headroom of a PoP another region could have left). Each such region
/// moves to its lowest-latency PoPs with room, at most down to the target of the PoP it
/// leaves, so no PoP ever gains room it did not have: one sweep suffices.
fn repair_targets(net: &Network<'_>, load: &mut [f64], flows: &mut [Vec<(usize, f64)>], eps: f64) {
    let p_count = net.pops;
    for (r, region) in flows.iter_mut().enumerate() {
        if !region.iter().any(|&(p, x)| x > eps && load[p] - net.tier1[p] > eps) {
            continue;
        }
        let row = r * p_count;
        let mut room: Vec<usize> = (0..p_count)
            .filter(|&q| net.eligible[row + q] && net.tier1[q] - load[q] > eps)
            .collect();
        room.sort_by(|&a, &b| net.latency[row + a].total_cmp(&net.latency[row + b]).then(a.cmp(&b)));
        for i in 0..region.len() {
            let p = region[i].0;
            for &q in &room {
                let excess = (load[p] - net.tier1[p]).min(region[i].1);
                let space = net.tier1[q] - load[q];
                if excess <= eps {
                    break;
                }
                if space <= eps {
                    continue;
                }
                let delta = excess.min(space);
                region[i].1 = snap(region[i].1 - delta, eps);
                load[p] -= delta;
                load[q] += delta;
                add(region, q, delta);
            }
        }
    }
}

/// Swaps equal amounts between two regions on two PoPs while that lowers the total
/// latency: region a moves from p to a cheaper candidate q, region b from q to p.
fn improve(
    net: &Network<'_>,
    start: &[usize],
    pop: &[u32],
    lat: &[f64],
    load: &[f64],
    flows: &mut [Vec<(usize, f64)>],
    eps: f64,
) {
    let p_count = net.pops;
    let latency = |r: usize, p: usize| net.latency[r * p_count + p];
    // Region b may only be moved onto a PoP above target if none of its PoPs has room
    // below target (target first, as in the fill). Loads do not change in a swap, so
    // this is computed once per region, when first needed.
    let mut saturated: Vec<Option<bool>> = vec![None; net.regions];
    let mut all_at_target = |b: usize| {
        *saturated[b].get_or_insert_with(|| {
            (0..p_count).all(|q| !net.eligible[b * p_count + q] || net.tier1[q] - load[q] <= eps)
        })
    };
    for _ in 0..MAX_PASSES {
        let mut on_pop: Vec<Vec<usize>> = vec![Vec::new(); p_count];
        for (r, f) in flows.iter().enumerate() {
            for &(p, x) in f {
                if x > eps {
                    on_pop[p].push(r);
                }
            }
        }
        let mut improved = false;
        for a in 0..flows.len() {
            for i in 0..flows[a].len() {
                let p = flows[a][i].0;
                let l_ap = latency(a, p);
                for arc in start[a]..start[a + 1] {
                    let q = pop[arc] as usize;
                    if lat[arc] >= l_ap || flows[a][i].1 <= eps {
                        break;
                    }
                    for j in 0..on_pop[q].len() {
                        let b = on_pop[q][j];
                        if b == a || !net.eligible[b * p_count + p] {
                            continue;
                        }
                        if (load[p] - net.tier1[p] > eps && !all_at_target(b))
                            || (load[q] - net.tier1[q] > eps && !all_at_target(a))
                        {
                            continue;
                        }
                        if (load[p] - net.tier1[p] > eps && !all_at_target(b))
                            || (load[q] - net.tier1[q] > eps && !all_at_target(a))
                        {
                            continue;
                        }
                        let x_bq = get(&flows[b], q);
                        let x_ap = flows[a][i].1;
                        if x_bq <= eps || x_ap <= eps {
                            continue;
                        }
                        let gain = l_ap + latency(b, q) - lat[arc] - latency(b, p);
                        if gain <= 1e-9 * (1.0 + l_ap) {
                            continue;
                        }
                        let delta = x_ap.min(x_bq);
                        flows[a][i].1 = snap(x_ap - delta, eps);
                        add(&mut flows[a], q, delta);
                        add(&mut flows[b], q, -delta);
                        add(&mut flows[b], p, delta);
                        if !on_pop[p].contains(&b) {
                            on_pop[p].push(b);
                        }
                        if !on_pop[q].contains(&a) {
                            on_pop[q].push(a);
                        }
                        improved = true;
                    }
                }
            }
        }
        if !improved {
            break;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Pair {
    latency: f64,
    region: u32,
    arc: u32,
}

impl Eq for Pair {}

impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pair {
    fn cmp(&self, other: &Self) -> Ordering {
        self.latency
            .total_cmp(&other.latency)
            .then(self.region.cmp(&other.region))
            .then(self.arc.cmp(&other.arc))
    }
}

fn add(flows: &mut Vec<(usize, f64)>, p: usize, amount: f64) {
    match flows.iter_mut().find(|(q, _)| *q == p) {
        Some((_, x)) => *x = (*x + amount).max(0.0),
        None => flows.push((p, amount.max(0.0))),
    }
}

fn get(flows: &[(usize, f64)], p: usize) -> f64 {
    flows.iter().find(|(q, _)| *q == p).map_or(0.0, |&(_, x)| x)
}

fn snap(x: f64, eps: f64) -> f64 {
    if x <= eps {
        0.0
    } else {
        x
    }
}
