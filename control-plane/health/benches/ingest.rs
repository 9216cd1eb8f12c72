//! Ingest throughput of the health core: 200 PoPs × 3 endpoints probed by 30
//! probers in 3 regions, one result at a time, in arrival order.
//!
//! `cargo bench -p meridian-health -- --quick`

// A benchmark is not a daemon: a setup error should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use meridian_health::{FailureClass, HealthPolicy, HealthState, HealthTopology, ProbeOutcome, ProbeReport, UnixMillis};

const POPS: usize = 200;
const ENDPOINTS: usize = 3;
const PROBERS: usize = 30;
const REGIONS: usize = 3;
const START: u64 = 1_700_000_000_000;

fn topology() -> HealthTopology {
    HealthTopology::new((0..POPS).map(|p| (format!("pop-{p:03}"), (0..ENDPOINTS).map(|e| format!("ep-{e}")))))
}

/// `rounds` full rounds of results, one second apart; about 1 in 50 probes fails so
/// the hysteresis does real work.
fn results(rounds: u64) -> Vec<ProbeReport> {
    let mut out = Vec::with_capacity(rounds as usize * POPS * ENDPOINTS * PROBERS);
    let mut n = 0u64;
    for round in 0..rounds {
        for prober in 0..PROBERS {
            for pop in 0..POPS {
                for endpoint in 0..ENDPOINTS {
                    n += 1;
                    let success = !n.is_multiple_of(50);
                    let latency = Duration::from_micros(5_000 + n % 3_000);
                    out.push(ProbeReport {
                        prober: format!("prober-{prober:02}"),
                        region: format!("region-{}", prober % REGIONS),
                        pop: format!("pop-{pop:03}"),
                        endpoint: format!("ep-{endpoint}"),
                        observed_at: UnixMillis(START + round * 1_000 + (n % 1_000)),
                        outcome: if success {
                            ProbeOutcome::ok(latency)
                        } else {
                            // A realistic detail: what the prober sends on a timeout.
                            ProbeOutcome::failed(latency, FailureClass::Timeout, "no result within 2s")
                        },
                    });
                }
            }
        }
    }
    out
}

fn ingest(c: &mut Criterion) {
    let rounds = 3;
    let batch = results(rounds);
    let now = UnixMillis(START + rounds * 1_000);
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.sample_size(10);
    // Into a warm state (every prober already known), as in steady operation.
    group.bench_function("warm_200pops_3eps_30probers", |b| {
        b.iter_batched(
            || {
                let mut state = HealthState::new(topology(), HealthPolicy::default()).unwrap();
                for o in results(1) {
                    state.ingest(o, UnixMillis(START)).unwrap();
                }
                (state, batch.clone())
            },
            |(mut state, batch)| {
                for o in batch {
                    state.ingest(o, now).unwrap();
                }
                state
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();

    let mut state = HealthState::new(topology(), HealthPolicy::default()).unwrap();
    for o in batch {
        state.ingest(o, now).unwrap();
    }
    c.bench_function("evaluate_200pops_3eps_30probers", |b| b.iter(|| state.evaluate(now)));
}

criterion_group!(benches, ingest);
criterion_main!(benches);
