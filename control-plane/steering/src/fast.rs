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
const MAX_PASSES: usize = 8;

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
    // regions still short, all their eligible PoPs (rare, so built only then).
    let mut full: Option<(Vec<usize>, Vec<u32>, Vec<f64>)> = None;
    for bound in [net.tier1, net.capacity] {
        state.fill(&start, &pop, &lat, bound);
        if state.remaining.iter().any(|&x| x > eps) {
            let (full_start, full_pop, full_lat) = full.get_or_insert_with(|| full_lists(net, &state.remaining, eps));
            state.fill(full_start, full_pop, full_lat, bound);
        }
    }
    let overflow = state.remaining.iter().map(|&x| if x > eps { x } else { 0.0 }).collect();
    improve(net, &start, &pop, &lat, &mut state.flows, eps);
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

/// All eligible PoPs, sorted by latency, of the regions with demand left.
fn full_lists(net: &Network<'_>, remaining: &[f64], eps: f64) -> (Vec<usize>, Vec<u32>, Vec<f64>) {
    let p_count = net.pops;
    let mut full_start = Vec::with_capacity(net.regions + 1);
    let (mut full_pop, mut full_lat) = (Vec::new(), Vec::new());
    for (r, &left) in remaining.iter().enumerate() {
        full_start.push(full_pop.len());
        if left <= eps {
            continue;
        }
        let row = r * p_count;
        let mut order: Vec<u32> = (0..p_count as u32)
            .filter(|&p| net.eligible[row + p as usize])
            .collect();
        order.sort_by(|&a, &b| {
            net.latency[row + a as usize]
                .total_cmp(&net.latency[row + b as usize])
                .then(a.cmp(&b))
        });
        full_lat.extend(order.iter().map(|&p| net.latency[row + p as usize]));
        full_pop.extend(order);
    }
    full_start.push(full_pop.len());
    (full_start, full_pop, full_lat)
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

/// Swaps equal amounts between two regions on two PoPs while that lowers the total
/// latency: region a moves from p to a cheaper candidate q, region b from q to p.
fn improve(net: &Network<'_>, start: &[usize], pop: &[u32], lat: &[f64], flows: &mut [Vec<(usize, f64)>], eps: f64) {
    let p_count = net.pops;
    let latency = |r: usize, p: usize| net.latency[r * p_count + p];
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
