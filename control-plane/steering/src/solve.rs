//! The exact fill: a min-cost flow from client regions to PoPs, solved by successive
//! shortest paths on per-region candidate lists, with an optimality certificate that
//! widens the lists when they were too short.
//!
//! The network: a source feeds every region its demand; region r reaches PoP p at cost
//! `latency[r][p]` (only where eligible); each PoP drains to the sink through two
//! parallel arcs, its target tier (`capacity × target_utilisation`, cost 0) and its
//! headroom tier (up to full capacity, cost `M`); every region also reaches an overflow
//! node at cost `M2` with unbounded capacity, so the flow is always feasible. `M` is
//! larger than the latency of any simple path and `M2` larger than `M` plus it, so the
//! minimum-cost flow is lexicographic: first as little overflow as possible, then as
//! little headroom as possible, then the least latency-weighted demand.
//!
//! Successive shortest paths (Dijkstra with Johnson potentials, stopped as soon as the
//! sink is settled) keep the flow minimum-cost for its value after every augmentation,
//! so the result is the exact optimum on the candidate arcs. Each region starts with its
//! [`INITIAL_CANDIDATES`] lowest-latency eligible PoPs; at the end the potentials are
//! checked against every non-candidate eligible arc (LP reduced costs): if none is
//! negative the flow is optimal on the *full* network, otherwise the offending regions'
//! lists grow and the solve starts again. Lists only grow, so this ends, at worst with
//! complete lists.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// How many lowest-latency eligible PoPs each region starts with.
pub(crate) const INITIAL_CANDIDATES: usize = 16;

/// ... and at least enough of them to hold this many times its demand below target.
const CANDIDATE_ROOM: f64 = 3.0;

/// The dense problem: regions and PoPs are indices into the canonical (id-sorted) order.
#[derive(Debug)]
pub(crate) struct Network<'a> {
    pub regions: usize,
    pub pops: usize,
    /// `regions × pops`, row-major, milliseconds.
    pub latency: &'a [f64],
    /// `regions × pops`, row-major: may region r be served by PoP p.
    pub eligible: &'a [bool],
    /// Per region, the demand to place (already scaled when overloaded).
    pub demand: &'a [f64],
    /// Per PoP, `capacity × target_utilisation`.
    pub tier1: &'a [f64],
    /// Per PoP, full capacity.
    pub capacity: &'a [f64],
}

/// The optimal flow.
#[derive(Debug)]
pub(crate) struct Solution {
    /// Per region, the PoPs it sends demand to and how much (each > 0).
    pub flows: Vec<Vec<(usize, f64)>>,
    /// Per region, demand that found no capacity among its eligible PoPs.
    pub overflow: Vec<f64>,
    /// The augmentation bound was hit (never seen in tests; the rest is overflow).
    pub hit_bound: bool,
}

/// Relaxation budget per node of the network (plus [`WORK_BASE`]): bounds the solve on
/// hard instances (see the crate doc), far above what small or lightly contended ones use.
pub(crate) const WORK_PER_NODE: usize = 300;
pub(crate) const WORK_BASE: usize = 100_000;

/// Solves the network exactly (see the module doc), unless the work budget runs out;
/// then the demand not yet placed is placed greedily and `hit_bound` says so.
pub(crate) fn solve_exact(net: &Network<'_>) -> Solution {
    let mut k: Vec<usize> = vec![INITIAL_CANDIDATES; net.regions];
    let mut budget = WORK_PER_NODE * (net.regions + net.pops) + WORK_BASE;
    loop {
        let mut ssp = Ssp::new(net, &k, budget);
        let finished = ssp.run();
        budget = ssp.budget;
        if !finished {
            ssp.greedy_finish();
            return ssp.into_solution(true);
        }
        let widen = ssp.violating_regions();
        if widen.is_empty() {
            return ssp.into_solution(false);
        }
        for r in widen {
            k[r] = ssp.region_k(r).saturating_mul(4);
        }
    }
}

/// A predecessor arc on a shortest path, by the kind of arc.
#[derive(Debug, Clone, Copy)]
enum Pred {
    None,
    /// Source → region.
    Source,
    /// Region → PoP along candidate arc `.0`.
    Forward(u32),
    /// PoP → region, undoing flow on candidate arc `.0`.
    Backward(u32),
    /// Region `.0` → overflow node.
    ToOverflow(u32),
    /// Overflow node → this region, undoing its overflow.
    FromOverflow,
    /// PoP `.0` → sink (through its cheapest tier with slack).
    Tier(u32),
    /// Overflow node → sink.
    OverflowSink,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct HeapItem {
    dist: f64,
    node: u32,
}

impl Eq for HeapItem {}

impl PartialOrd for HeapItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for HeapItem {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist.total_cmp(&other.dist).then(self.node.cmp(&other.node))
    }
}

/// Successive-shortest-path state over the candidate arcs.
struct Ssp<'n, 'a> {
    net: &'n Network<'a>,
    /// Candidate arcs, grouped by region: `cand_start[r]..cand_start[r + 1]`.
    cand_start: Vec<usize>,
    cand_pop: Vec<u32>,
    cand_region: Vec<u32>,
    cand_cost: Vec<f64>,
    cand_flow: Vec<f64>,
    /// Candidate arcs by PoP: `pop_in_start[p]..pop_in_start[p + 1]` into `pop_in`.
    pop_in_start: Vec<usize>,
    pop_in: Vec<u32>,
    remaining: Vec<f64>,
    overflow: Vec<f64>,
    load: Vec<f64>,
    /// Node potentials (regions, PoPs, overflow, sink) stored minus `pi_offset`.
    pi: Vec<f64>,
    pi_offset: f64,
    dist: Vec<f64>,
    pred: Vec<Pred>,
    settled: Vec<bool>,
    touched: Vec<u32>,
    heap: BinaryHeap<Reverse<HeapItem>>,
    big_m: f64,
    big_m2: f64,
    eps: f64,
    /// Relaxations left before the solve gives up on exactness.
    budget: usize,
    /// Flow placed by `greedy_finish`, per region, outside the candidate arcs.
    extra: Vec<Vec<(usize, f64)>>,
}

impl<'n, 'a> Ssp<'n, 'a> {
    fn new(net: &'n Network<'a>, k: &[usize], budget: usize) -> Self {
        let (r_count, p_count) = (net.regions, net.pops);
        let (cand_start, cand_pop, cand_cost, max_latency) = candidate_lists(net, k);
        let arcs = cand_pop.len();
        let mut cand_region = vec![0u32; arcs];
        for r in 0..r_count {
            for slot in &mut cand_region[cand_start[r]..cand_start[r + 1]] {
                *slot = r as u32;
            }
        }
        // Group arcs by PoP (counting sort) for the backward arcs.
        let mut pop_in_start = vec![0usize; p_count + 1];
        for &p in &cand_pop {
            pop_in_start[p as usize + 1] += 1;
        }
        for p in 0..p_count {
            pop_in_start[p + 1] += pop_in_start[p];
        }
        let mut fill = pop_in_start.clone();
        let mut pop_in = vec![0u32; arcs];
        for (arc, &p) in cand_pop.iter().enumerate() {
            pop_in[fill[p as usize]] = arc as u32;
            fill[p as usize] += 1;
        }
        let nodes = r_count + p_count + 2;
        // Any simple path alternates at most `nodes` arcs of latency at most `max_latency`.
        let big_m = (nodes as f64 + 2.0) * (max_latency + 1.0);
        let total: f64 = net.demand.iter().sum();
        Ssp {
            net,
            cand_start,
            cand_pop,
            cand_region,
            cand_cost,
            cand_flow: vec![0.0; arcs],
            pop_in_start,
            pop_in,
            remaining: net.demand.to_vec(),
            overflow: vec![0.0; r_count],
            load: vec![0.0; p_count],
            pi: vec![0.0; nodes],
            pi_offset: 0.0,
            dist: vec![f64::INFINITY; nodes],
            pred: vec![Pred::None; nodes],
            settled: vec![false; nodes],
            touched: Vec::new(),
            heap: BinaryHeap::new(),
            big_m,
            big_m2: 3.0 * big_m,
            eps: total.max(f64::MIN_POSITIVE) * 1e-12,
            budget,
            extra: Vec::new(),
        }
    }

    fn overflow_node(&self) -> usize {
        self.net.regions + self.net.pops
    }

    fn sink(&self) -> usize {
        self.net.regions + self.net.pops + 1
    }

    /// The cost and slack of PoP p's cheapest tier that still has room.
    fn tier(&self, p: usize) -> Option<(f64, f64)> {
        let load = self.load[p];
        let tier1 = self.net.tier1[p];
        if tier1 - load > self.eps {
            Some((0.0, tier1 - load))
        } else if self.net.capacity[p] - load > self.eps {
            Some((self.big_m, self.net.capacity[p] - load))
        } else {
            None
        }
    }

    /// Augments until every region's demand is placed (true), or until the work budget
    /// runs out (false).
    fn run(&mut self) -> bool {
        for r in 0..self.net.regions {
            if self.remaining[r] <= self.eps {
                self.remaining[r] = 0.0;
            }
        }
        // One region at a time (as in the Hungarian method): each shortest path starts
        // at that region only, so Dijkstra settles its neighbourhood, not the world.
        // Augmenting along a shortest path from any node with supply keeps the flow
        // minimum-cost for the supplies placed so far, so the order of regions does
        // not change the optimum, only how ties between equal optima are broken.
        for r in 0..self.net.regions {
            while self.remaining[r] > 0.0 {
                if !self.shortest_path(r) {
                    return false;
                }
                self.augment();
            }
        }
        true
    }

    /// Places what is left greedily: each region, in order, fills its eligible PoPs by
    /// latency up to target, then up to capacity; the rest is overflow.
    fn greedy_finish(&mut self) {
        let p_count = self.net.pops;
        for r in 0..self.net.regions {
            if self.remaining[r] <= 0.0 {
                continue;
            }
            let row = r * p_count;
            let mut order: Vec<usize> = (0..p_count).filter(|&p| self.net.eligible[row + p]).collect();
            order.sort_by(|&a, &b| {
                self.net.latency[row + a]
                    .total_cmp(&self.net.latency[row + b])
                    .then(a.cmp(&b))
            });
            let mut placed = Vec::new();
            for bound in [self.net.tier1, self.net.capacity] {
                for &p in &order {
                    let room = (bound[p] - self.load[p]).min(self.remaining[r]);
                    if room > 0.0 {
                        self.load[p] += room;
                        self.remaining[r] -= room;
                        placed.push((p, room));
                    }
                }
            }
            self.overflow[r] += self.remaining[r];
            self.remaining[r] = 0.0;
            if self.extra.is_empty() {
                self.extra = vec![Vec::new(); self.net.regions];
            }
            self.extra[r] = placed;
        }
    }

    fn region_k(&self, r: usize) -> usize {
        self.cand_start[r + 1] - self.cand_start[r]
    }

    fn relax(&mut self, from: usize, to: usize, cost: f64, pred: Pred) {
        if self.settled[to] {
            return;
        }
        let reduced = (cost + self.pi[from] - self.pi[to]).max(0.0);
        let d = self.dist[from] + reduced;
        if d < self.dist[to] {
            if self.dist[to] == f64::INFINITY {
                self.touched.push(to as u32);
            }
            self.dist[to] = d;
            self.pred[to] = pred;
            self.heap.push(Reverse(HeapItem {
                dist: d,
                node: to as u32,
            }));
        }
    }

    /// Dijkstra from the source on reduced costs, stopped when the sink is settled;
    /// then updates the potentials. Returns false if the sink is unreachable.
    fn shortest_path(&mut self, source: usize) -> bool {
        for &v in &self.touched {
            self.dist[v as usize] = f64::INFINITY;
            self.settled[v as usize] = false;
            self.pred[v as usize] = Pred::None;
        }
        self.touched.clear();
        self.heap.clear();
        let (regions, pops) = (self.net.regions, self.net.pops);
        let overflow_node = self.overflow_node();
        let sink = self.sink();
        self.touched.push(source as u32);
        self.dist[source] = 0.0;
        self.pred[source] = Pred::Source;
        self.heap.push(Reverse(HeapItem {
            dist: 0.0,
            node: source as u32,
        }));
        let mut settled_order: Vec<u32> = Vec::new();
        let mut d_sink = None;
        while let Some(Reverse(HeapItem { dist, node })) = self.heap.pop() {
            let u = node as usize;
            if self.settled[u] || dist > self.dist[u] {
                continue;
            }
            self.settled[u] = true;
            settled_order.push(node);
            if u == sink {
                d_sink = Some(dist);
                break;
            }
            if self.budget == 0 {
                return false;
            }
            self.budget -= 1;
            if u < regions {
                for arc in self.cand_start[u]..self.cand_start[u + 1] {
                    let p = self.cand_pop[arc] as usize;
                    self.relax(u, regions + p, self.cand_cost[arc], Pred::Forward(arc as u32));
                }
                self.relax(u, overflow_node, self.big_m2, Pred::ToOverflow(u as u32));
            } else if u < regions + pops {
                let p = u - regions;
                for i in self.pop_in_start[p]..self.pop_in_start[p + 1] {
                    let arc = self.pop_in[i] as usize;
                    if self.cand_flow[arc] > 0.0 {
                        let r = self.cand_region[arc] as usize;
                        self.relax(u, r, -self.cand_cost[arc], Pred::Backward(arc as u32));
                    }
                }
                if let Some((cost, _)) = self.tier(p) {
                    self.relax(u, sink, cost, Pred::Tier(p as u32));
                }
            } else if u == overflow_node {
                self.relax(u, sink, 0.0, Pred::OverflowSink);
                for r in 0..regions {
                    if self.overflow[r] > 0.0 {
                        self.relax(u, r, -self.big_m2, Pred::FromOverflow);
                    }
                }
            }
        }
        let Some(d_sink) = d_sink else {
            return false;
        };
        // Johnson update with early stop: settled nodes move by their distance, all
        // others by the sink's distance (kept as an offset, so this is O(settled)).
        self.pi_offset += d_sink;
        for &v in &settled_order {
            let v = v as usize;
            self.pi[v] += self.dist[v] - d_sink;
        }
        true
    }

    /// Pushes the bottleneck amount along the path found by `shortest_path`.
    fn augment(&mut self) {
        let regions = self.net.regions;
        let overflow_node = self.overflow_node();
        // First pass: the bottleneck.
        let mut delta = f64::INFINITY;
        let mut node = self.sink();
        loop {
            match self.pred[node] {
                Pred::Tier(p) => {
                    let slack = self.tier(p as usize).map_or(0.0, |(_, s)| s);
                    delta = delta.min(slack);
                    node = regions + p as usize;
                }
                Pred::OverflowSink => node = overflow_node,
                Pred::Forward(arc) => node = self.cand_region[arc as usize] as usize,
                Pred::Backward(arc) => {
                    delta = delta.min(self.cand_flow[arc as usize]);
                    node = regions + self.cand_pop[arc as usize] as usize;
                }
                Pred::ToOverflow(r) => node = r as usize,
                Pred::FromOverflow => {
                    delta = delta.min(self.overflow[node]);
                    node = overflow_node;
                }
                Pred::Source => {
                    delta = delta.min(self.remaining[node]);
                    break;
                }
                Pred::None => return,
            }
        }
        // Second pass: apply, snapping the bottleneck exactly to its bound.
        let mut node = self.sink();
        loop {
            match self.pred[node] {
                Pred::Tier(p) => {
                    let p = p as usize;
                    let bound = if self.net.tier1[p] - self.load[p] > self.eps {
                        self.net.tier1[p]
                    } else {
                        self.net.capacity[p]
                    };
                    self.load[p] += delta;
                    if bound - self.load[p] <= self.eps {
                        self.load[p] = bound;
                    }
                    node = regions + p;
                }
                Pred::OverflowSink => node = overflow_node,
                Pred::Forward(arc) => {
                    self.cand_flow[arc as usize] += delta;
                    node = self.cand_region[arc as usize] as usize;
                }
                Pred::Backward(arc) => {
                    let f = &mut self.cand_flow[arc as usize];
                    *f = snap(*f - delta, self.eps);
                    node = regions + self.cand_pop[arc as usize] as usize;
                }
                Pred::ToOverflow(r) => {
                    self.overflow[r as usize] += delta;
                    node = r as usize;
                }
                Pred::FromOverflow => {
                    self.overflow[node] = snap(self.overflow[node] - delta, self.eps);
                    node = overflow_node;
                }
                Pred::Source => {
                    self.remaining[node] = snap(self.remaining[node] - delta, self.eps);
                    break;
                }
                Pred::None => break,
            }
        }
    }

    /// Regions with a non-candidate eligible arc of negative reduced cost (so the flow
    /// may not be optimal on the full network). PoP potentials are first lowered to the
    /// least value their own residual arcs allow, which keeps every candidate arc valid
    /// (a PoP's potential only bounds arcs incident to it) and makes the test as
    /// permissive as these potentials can be.
    fn violating_regions(&self) -> Vec<usize> {
        let (regions, pops) = (self.net.regions, self.net.pops);
        let sink = self.sink();
        let pi = |v: usize| self.pi[v] + self.pi_offset;
        let mut pop_pi = vec![0.0f64; pops];
        for (p, slot) in pop_pi.iter_mut().enumerate() {
            let mut lower = f64::NEG_INFINITY;
            if let Some((cost, _)) = self.tier(p) {
                lower = lower.max(pi(sink) - cost);
            }
            for i in self.pop_in_start[p]..self.pop_in_start[p + 1] {
                let arc = self.pop_in[i] as usize;
                if self.cand_flow[arc] > 0.0 {
                    lower = lower.max(pi(self.cand_region[arc] as usize) + self.cand_cost[arc]);
                }
            }
            *slot = if lower.is_finite() {
                lower.min(pi(regions + p))
            } else {
                pi(regions + p)
            };
        }
        let tolerance = 1e-9 * self.big_m2;
        let mut is_candidate = vec![usize::MAX; pops];
        let mut out = Vec::new();
        for r in 0..regions {
            let arcs = self.cand_start[r]..self.cand_start[r + 1];
            if self.net.demand[r] <= 0.0 {
                continue;
            }
            for arc in arcs {
                is_candidate[self.cand_pop[arc] as usize] = r;
            }
            let row = r * pops;
            let pi_r = pi(r);
            let violated = (0..pops).any(|p| {
                self.net.eligible[row + p]
                    && is_candidate[p] != r
                    && self.net.latency[row + p] + pi_r - pop_pi[p] < -tolerance
            });
            if violated {
                out.push(r);
            }
        }
        out
    }

    fn into_solution(self, hit_bound: bool) -> Solution {
        let mut flows = Vec::with_capacity(self.net.regions);
        for r in 0..self.net.regions {
            let arcs = self.cand_start[r]..self.cand_start[r + 1];
            let mut region: Vec<(usize, f64)> = arcs
                .filter(|&arc| self.cand_flow[arc] > 0.0)
                .map(|arc| (self.cand_pop[arc] as usize, self.cand_flow[arc]))
                .collect();
            if let Some(extra) = self.extra.get(r) {
                region.extend_from_slice(extra);
            }
            flows.push(region);
        }
        Solution {
            flows,
            overflow: self.overflow,
            hit_bound,
        }
    }
}

/// Per region (demand > 0), its lowest-latency eligible PoPs sorted by latency: at least
/// `k[r]`, and enough to hold [`CANDIDATE_ROOM`] times its demand below target. Returns
/// `(start, pop, latency, max_latency)`, arcs of region r at `start[r]..start[r + 1]`.
pub(crate) fn candidate_lists(net: &Network<'_>, k: &[usize]) -> (Vec<usize>, Vec<u32>, Vec<f64>, f64) {
    let (r_count, p_count) = (net.regions, net.pops);
    let mut cand_start = Vec::with_capacity(r_count + 1);
    let mut cand_pop = Vec::new();
    let mut cand_cost = Vec::new();
    let mut scratch: Vec<(f64, u32)> = Vec::with_capacity(p_count);
    let mut max_latency = 0.0f64;
    for (r, &want) in k.iter().enumerate().take(r_count) {
        cand_start.push(cand_pop.len());
        if net.demand[r] <= 0.0 {
            continue;
        }
        scratch.clear();
        let row = r * p_count;
        for p in 0..p_count {
            if net.eligible[row + p] {
                let l = net.latency[row + p];
                max_latency = max_latency.max(l);
                scratch.push((l, p as u32));
            }
        }
        // Enough candidates to hold a few times the region's demand below target,
        // so that contention rarely needs a second round.
        let mut keep = want.min(scratch.len());
        loop {
            if keep < scratch.len() {
                scratch.select_nth_unstable_by(keep - 1, by_latency);
            }
            scratch[..keep].sort_unstable_by(by_latency);
            let room: f64 = scratch[..keep].iter().map(|&(_, p)| net.tier1[p as usize]).sum();
            if keep == scratch.len() || room >= CANDIDATE_ROOM * net.demand[r] {
                break;
            }
            keep = (keep * 2).min(scratch.len());
        }
        scratch.truncate(keep);
        for &(l, p) in &scratch {
            cand_pop.push(p);
            cand_cost.push(l);
        }
    }
    cand_start.push(cand_pop.len());
    (cand_start, cand_pop, cand_cost, max_latency)
}

fn by_latency(a: &(f64, u32), b: &(f64, u32)) -> Ordering {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
}

/// Rounds residues of floating-point subtraction to exactly zero.
fn snap(x: f64, eps: f64) -> f64 {
    if x <= eps {
        0.0
    } else {
        x
    }
}
