//! One steering tick on the leader for 1,000 PoPs × 300 client regions, every pair
//! measured by the probers (300 k latencies through the damper): building the
//! steering input from a health snapshot, computing, storing and deciding whether to
//! publish — everything but the store write. Run with
//! `cargo bench -p meridian-engine -- --quick`.

// A benchmark is test code: a generated input that fails validation is a bug to stop on.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use meridian_core::topology::TopologyDoc;
use meridian_engine::{build_input, Intents, SteeringDriver, SteeringView};
use meridian_health::{HealthSnapshot, PopVerdict};

const POPS: usize = 1000;
const REGIONS: usize = 300;

/// A deterministic pseudo-random latency in 5..200 ms for a (region, PoP) pair.
fn latency_ms(r: usize, p: usize) -> u64 {
    let mut x = (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (p as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 29;
    5 + x % 195
}

fn topology() -> TopologyDoc {
    let mut toml = String::new();
    for p in 0..POPS {
        toml.push_str(&format!(
            "[[pops]]\nid = \"pop-{p:04}\"\ncapacity = 100\nipv4 = [\"10.{}.{}.1\"]\n\
             endpoints = [{{ name = \"tcp\", kind = \"tcp\", address = \"127.0.0.1:9\" }}]\n",
            p >> 8,
            p & 0xff
        ));
    }
    let demand = 0.6 * 100.0 * POPS as f64 / REGIONS as f64;
    for r in 0..REGIONS {
        toml.push_str(&format!(
            "[[regions]]\nid = \"region-{r:03}\"\ndemand = {demand:.3}\nclient_prefixes = [\"10.{}.{}.0/24\"]\n",
            200 + (r >> 8),
            r & 0xff
        ));
    }
    TopologyDoc::from_toml(&toml).expect("valid synthetic topology")
}

fn health(jitter: u64) -> HealthSnapshot {
    let verdicts: BTreeMap<String, PopVerdict> = (0..POPS).map(|p| (format!("pop-{p:04}"), PopVerdict::Up)).collect();
    // `pop-NNNN` names sort in index order.
    let pops: Vec<String> = (0..POPS).map(|p| format!("pop-{p:04}")).collect();
    let latency = (0..REGIONS)
        .map(|r| {
            let row = (0..POPS)
                .map(|p| Some(Duration::from_millis(latency_ms(r, p) + (jitter % 2))))
                .collect();
            (format!("region-{r:03}"), row)
        })
        .collect();
    HealthSnapshot {
        verdicts,
        pops,
        latency,
    }
}

fn bench_tick(c: &mut Criterion) {
    let doc = topology();
    let intents = Intents::default();
    let (h0, h1) = (health(0), health(1));
    let view = |health| SteeringView {
        topology: &doc,
        topology_revision: 1,
        health,
        intents: &intents,
        current: None,
        replica: "bench",
    };
    let mut driver = SteeringDriver::default();
    let first = driver.tick(0, view(&h0)).publish.expect("a first plan");
    let mut group = c.benchmark_group("engine");
    group.bench_function("build_input/1000x300", |b| {
        b.iter(|| build_input(black_box(&doc), black_box(&h1), &intents.drains, None))
    });
    let input = build_input(&doc, &h1, &intents.drains, None);
    group.bench_function("compute/1000x300", |b| {
        b.iter(|| meridian_steering::compute(black_box(&input)))
    });
    // Steady state: jitter below the damper, the plan in force is the last one, so
    // nothing is published — the cost the leader pays every second.
    group.bench_function("tick/1000x300/steady", |b| {
        let mut now = 1_000;
        b.iter(|| {
            now += 1_000;
            let health = if now % 2_000 == 0 { &h0 } else { &h1 };
            let ready = driver.tick(
                now,
                SteeringView {
                    current: Some(&first),
                    ..view(health)
                },
            );
            black_box(ready)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_tick);
criterion_main!(benches);
