//! Full recompute of a plan for 1,000 PoPs × 300 client regions (DESIGN.md goal:
//! ≤ 10 ms on the project's 2-core machine). Run with
//! `cargo bench -p meridian-steering -- --quick`.
//!
//! The topology is synthetic but shaped like a real one: PoPs and regions scattered
//! around a few dozen metro clusters on a sphere, latency from great-circle distance
//! through fibre with route inflation and per-pair noise, every pair measured by the
//! probers (300 k entries), skewed region demand at 60 % of total capacity (75 % of the
//! target fill, so regions near big clusters contend for their nearest PoPs), 2 % of
//! PoPs down, 1 % drained and a few degraded for some regions.

// A benchmark is test code: a generated input that fails validation is a bug to stop on.
#![allow(clippy::expect_used)]

use std::collections::BTreeSet;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use meridian_steering::{
    compute, compute_with, LatencyMatrix, PopInput, PopUsability, RegionInput, Solver, SteeringInput, SteeringPolicy,
};

fn bench_compute(c: &mut Criterion) {
    let mut group = c.benchmark_group("steering");
    for (pops, regions, load) in [
        (1000, 300, 0.6),
        (1000, 300, 0.75),
        (1000, 300, 0.9),
        (1000, 300, 1.3),
        (100, 30, 0.6),
    ] {
        let input = topology(pops, regions, load, 42);
        let plan = compute(&input).expect("valid input");
        let exact = compute_with(&input, Solver::Exact).expect("valid input");
        let (cost, best) = (latency_cost(&input, &plan), latency_cost(&input, &exact));
        let bounded = exact.reasons.iter().any(|r| r.contains("work bound"));
        eprintln!(
            "{pops} pops x {regions} regions at {load} load: overloaded={}, fired={}, max util={:.3}, \
             latency cost {cost:.0} vs exact solver {best:.0} (gap {:.3}%{})",
            plan.overloaded,
            plan.fired.len(),
            plan.pop_load.values().map(|l| l.utilisation).fold(0.0, f64::max),
            100.0 * (cost - best) / best,
            if bounded {
                "; exact solver hit its work bound"
            } else {
                ""
            }
        );
        group.bench_function(format!("compute/{pops}x{regions}/load{load}"), |b| {
            b.iter(|| compute(black_box(&input)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_compute);

/// Σ demand × weight × latency.
fn latency_cost(input: &SteeringInput, plan: &meridian_steering::Plan) -> f64 {
    input
        .regions
        .iter()
        .map(|r| {
            plan.regions[&r.id]
                .iter()
                .map(|w| r.demand * w.weight * input.latency.latency(&r.id, &w.pop))
                .sum::<f64>()
        })
        .sum()
}
criterion_main!(benches);

/// A deterministic synthetic topology; `load` is total demand / total capacity.
fn topology(pop_count: usize, region_count: usize, load: f64, seed: u64) -> SteeringInput {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let clusters: Vec<(f64, f64)> = (0..40).map(|_| rng.point()).collect();
    let near = |rng: &mut Rng, spread: f64| {
        let (lat, lon) = clusters[rng.below(clusters.len())];
        (
            (lat + spread * (rng.unit() - 0.5)).clamp(-1.5, 1.5),
            lon + spread * (rng.unit() - 0.5),
        )
    };
    let pop_at: Vec<(f64, f64)> = (0..pop_count).map(|_| near(&mut rng, 0.2)).collect();
    let region_at: Vec<(f64, f64)> = (0..region_count).map(|_| near(&mut rng, 0.4)).collect();
    let region_ids: Vec<String> = (0..region_count).map(|r| format!("region-{r:04}")).collect();
    let mut pops: Vec<PopInput> = (0..pop_count)
        .map(|p| PopInput {
            id: format!("pop-{p:04}"),
            capacity: 500.0 + 4500.0 * rng.unit(),
            state: match rng.below(100) {
                0 | 1 => PopUsability::Down,
                2 => PopUsability::Drained {
                    reason: "maintenance".into(),
                },
                3 => PopUsability::Unknown,
                _ => PopUsability::Usable,
            },
            unreachable_from: BTreeSet::new(),
            anycast_prefixes: vec![format!("10.{}.0.0/16", p % 64)],
        })
        .collect();
    for _ in 0..pop_count / 50 {
        let p = rng.below(pop_count);
        pops[p]
            .unreachable_from
            .insert(region_ids[rng.below(region_count)].clone());
    }
    let total_capacity: f64 = pops.iter().map(|p| p.capacity).sum();
    let skew: Vec<f64> = (0..region_count).map(|_| (-3.0 * rng.unit()).exp()).collect();
    let skew_sum: f64 = skew.iter().sum();
    let regions: Vec<RegionInput> = region_ids
        .iter()
        .zip(&skew)
        .map(|(id, s)| RegionInput {
            id: id.clone(),
            demand: load * total_capacity * s / skew_sum,
            allowed_pops: None,
        })
        .collect();
    let mut latency = LatencyMatrix::new(300.0);
    latency.measured.pops = pops.iter().map(|p| p.id.clone()).collect();
    for (r, region) in region_ids.iter().enumerate() {
        let row = (0..pop_count)
            .map(|p| {
                let km = 6371.0 * great_circle(region_at[r], pop_at[p]);
                // Fibre at ~200 km/ms, routes ~1.5× the great circle, round trip, plus
                // a last-mile floor and noise.
                Some(3.0 + 2.0 * 1.5 * km / 200.0 + 2.0 * rng.unit())
            })
            .collect();
        latency.measured.rows.insert(region.clone(), row);
    }
    SteeringInput {
        pops,
        regions,
        latency,
        policy: SteeringPolicy::default(),
    }
}

fn great_circle(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dlat, dlon) = (b.0 - a.0, b.1 - a.1);
    let h = (dlat / 2.0).sin().powi(2) + a.0.cos() * b.0.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * h.sqrt().min(1.0).asin()
}

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn point(&mut self) -> (f64, f64) {
        ((2.0 * self.unit() - 1.0).asin(), std::f64::consts::TAU * self.unit())
    }
}
