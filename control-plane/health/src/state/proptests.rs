//! Invariants over random sequences of results, clock advances and evaluations.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::probe::ProbeOutcome;

const START: u64 = 1_700_000_000_000;
const REGIONS: [&str; 3] = ["r0", "r1", "r2"];
const POPS: [&str; 4] = ["p0", "p1", "p2", "p3"];
const ENDPOINTS: [&str; 2] = ["e0", "e1"];

#[derive(Clone, Debug)]
enum Op {
    /// A result stamped `lag_ms` before now (negative: in the future); some are
    /// out of the accepted window on purpose.
    Ingest {
        pop: usize,
        endpoint: usize,
        region: usize,
        prober: usize,
        success: bool,
        lag_ms: i64,
    },
    Advance(u64),
    Evaluate,
}

fn op(success_weight: f64) -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..4usize, 0..2usize, 0..3usize, 0..2usize, prop::bool::weighted(success_weight), lag())
            .prop_map(|(pop, endpoint, region, prober, success, lag_ms)| Op::Ingest { pop, endpoint, region, prober, success, lag_ms }),
        3 => prop_oneof![9 => 0u64..400, 1 => 0u64..10_000].prop_map(Op::Advance),
        2 => Just(Op::Evaluate),
    ]
}

/// Mostly timely results, some late, some out of the accepted window.
fn lag() -> impl Strategy<Value = i64> {
    prop_oneof![8 => -100i64..1_000, 1 => -3_000i64..70_000]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(0.5), 0..400)
}

fn policy() -> impl Strategy<Value = HealthPolicy> {
    (
        1u32..4,
        1u32..4,
        1u64..8,
        prop::sample::select(vec![0.0, 0.5, 2.0 / 3.0]),
        1usize..4,
        1usize..5,
        prop::sample::select(vec![0.3, 0.5, 0.8]),
        1usize..5,
    )
        .prop_map(
            |(rise, fall, fresh_s, quorum, min_regions, suspect_min_pops, suspect_share, history)| HealthPolicy {
                rise,
                fall,
                freshness: Duration::from_secs(fresh_s),
                quorum,
                min_regions,
                suspect_min_pops,
                suspect_share,
                history,
                ..HealthPolicy::default()
            },
        )
}

fn topology() -> HealthTopology {
    HealthTopology::new(POPS.map(|p| (p, ENDPOINTS)))
}

/// An accepted result, as the test remembers it.
#[derive(Clone, Copy, Debug)]
struct Seen {
    observed_at: UnixMillis,
    success: bool,
}

type Key = (usize, usize, usize, usize); // (pop, endpoint, region, prober)

/// Runs `ops` against `state`, calling `check` after every evaluation with the
/// state, the time, the events, and every accepted result so far by key.
fn drive(
    state: &mut HealthState,
    ops: &[Op],
    evaluate: bool,
    mut check: impl FnMut(&HealthState, UnixMillis, &[HealthEvent], &HashMap<Key, Vec<Seen>>),
) -> (UnixMillis, Vec<HealthEvent>) {
    let mut now = UnixMillis(START);
    let mut seen: HashMap<Key, Vec<Seen>> = HashMap::new();
    let mut all_events = Vec::new();
    for op in ops {
        match *op {
            Op::Ingest {
                pop,
                endpoint,
                region,
                prober,
                success,
                lag_ms,
            } => {
                let observed_at = UnixMillis(now.0.saturating_add_signed(-lag_ms));
                let latency = Duration::from_millis(10);
                let o = ProbeReport {
                    prober: format!("{}-{prober}", REGIONS[region]),
                    region: REGIONS[region].to_string(),
                    pop: POPS[pop].to_string(),
                    endpoint: ENDPOINTS[endpoint].to_string(),
                    observed_at,
                    outcome: if success {
                        ProbeOutcome::ok(latency)
                    } else {
                        ProbeOutcome::failed(latency, FailureClass::Refused, "connection refused")
                    },
                };
                if state.ingest(o, now).is_ok() {
                    seen.entry((pop, endpoint, region, prober))
                        .or_default()
                        .push(Seen { observed_at, success });
                }
            }
            Op::Advance(ms) => now = now.saturating_add(Duration::from_millis(ms)),
            Op::Evaluate if evaluate => {
                let events = state.evaluate(now);
                check(state, now, &events, &seen);
                all_events.extend(events);
            }
            Op::Evaluate => {}
        }
    }
    (now, all_events)
}

/// Everything observable, as text.
fn snapshot(state: &HealthState, now: UnixMillis) -> String {
    let explanations: Vec<Option<Explanation>> = POPS.iter().map(|p| state.explain(p, now)).collect();
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}",
        state.matrix(now),
        explanations,
        state.suspect_regions(),
        state.stats()
    )
}

proptest! {
    /// Two states fed the same results at the same times agree on everything,
    /// though their hash maps iterate in different orders.
    #[test]
    fn outputs_are_deterministic(policy in policy(), ops in ops()) {
        let mut a = HealthState::new(topology(), policy.clone()).unwrap();
        let mut b = HealthState::new(topology(), policy).unwrap();
        let (now, events_a) = drive(&mut a, &ops, true, |_, _, _, _| {});
        let (_, events_b) = drive(&mut b, &ops, true, |_, _, _, _| {});
        prop_assert_eq!(format!("{events_a:?}"), format!("{events_b:?}"));
        prop_assert_eq!(snapshot(&a, now), snapshot(&b, now));
    }

    /// With the probers not judged, a verdict is a function of the accepted
    /// results and `now`: evaluating often or once gives the same verdicts.
    #[test]
    fn verdicts_depend_on_results_and_now_only(policy in policy(), ops in ops()) {
        let policy = HealthPolicy { suspect_min_pops: 1_000, ..policy };
        let mut often = HealthState::new(topology(), policy.clone()).unwrap();
        let mut once = HealthState::new(topology(), policy).unwrap();
        let (now, _) = drive(&mut often, &ops, true, |_, _, _, _| {});
        drive(&mut once, &ops, false, |_, _, _, _| {});
        often.evaluate(now);
        once.evaluate(now);
        for pop in POPS {
            let (a, b) = (often.verdict(pop).unwrap(), once.verdict(pop).unwrap());
            prop_assert_eq!(&a.verdict, &b.verdict);
            prop_assert_eq!(&a.rule, &b.rule);
        }
    }

    /// DOWN needs fresh evidence from a quorum: at least `min_regions` regions with a
    /// fresh result for the PoP, and more than `quorum × min_regions` of them with
    /// a fresh key that failed at least as often as a clean endpoint needs to be
    /// called DOWN (the failures here are refused connections: hard evidence).
    #[test]
    fn down_needs_a_fresh_quorum(policy in policy(), ops in prop::collection::vec(op(0.3), 0..400)) {
        let mut state = HealthState::new(topology(), policy.clone()).unwrap();
        let needed = crate::evidence::failures_needed(policy.fall, crate::evidence::HARD_FLOOR) as usize;
        let mut violations = Vec::new();
        drive(&mut state, &ops, true, |state, now, _, seen| {
            for (p, pop) in POPS.iter().enumerate() {
                if state.verdict(pop).unwrap().verdict != PopVerdict::Down {
                    continue;
                }
                let fresh = |key: &Key| seen[key].iter().map(|s| s.observed_at).max().is_some_and(|t| t.age_at(now) < policy.freshness);
                let keys: Vec<&Key> = seen.keys().filter(|k| k.0 == p && fresh(k)).collect();
                let fresh_regions: BTreeSet<usize> = keys.iter().map(|k| k.2).collect();
                let failing_regions: BTreeSet<usize> = keys
                    .iter()
                    .filter(|k| seen[**k].iter().filter(|s| !s.success).count() >= needed)
                    .map(|k| k.2)
                    .collect();
                if fresh_regions.len() < policy.min_regions
                    || failing_regions.is_empty()
                    || failing_regions.len() as f64 <= policy.quorum * policy.min_regions as f64
                {
                    violations.push(format!("{pop} DOWN at {now}: fresh regions {fresh_regions:?}, failing {failing_regions:?}"));
                }
            }
        });
        prop_assert!(violations.is_empty(), "{violations:?}");
    }

    /// With `min_regions` ≥ 2 and a majority quorum, failures seen from one region
    /// only never make a PoP DOWN, whatever the others report.
    #[test]
    fn a_single_region_never_makes_a_pop_down(
        policy in policy(),
        min_regions in 2usize..4,
        quorum in prop::sample::select(vec![0.5, 0.6, 0.9]),
        ops in prop::collection::vec(op(0.3), 0..400),
    ) {
        let policy = HealthPolicy { min_regions, quorum, ..policy };
        // Only r0 ever sees a failure.
        let ops: Vec<Op> = ops
            .into_iter()
            .map(|op| match op {
                Op::Ingest { pop, endpoint, region, prober, success: false, lag_ms } if region != 0 => {
                    Op::Ingest { pop, endpoint, region, prober, success: true, lag_ms }
                }
                op => op,
            })
            .collect();
        let mut state = HealthState::new(topology(), policy).unwrap();
        let mut downs = Vec::new();
        drive(&mut state, &ops, true, |state, now, _, _| {
            downs.extend(state.verdicts().filter(|(_, v)| v.verdict == PopVerdict::Down).map(|(p, _)| format!("{p} at {now}")));
        });
        prop_assert!(downs.is_empty(), "{downs:?}");
    }

    /// When results stop, every verdict decays to UNKNOWN, whatever it was.
    #[test]
    fn silence_ends_in_unknown_never_down(policy in policy(), ops in ops()) {
        let mut state = HealthState::new(topology(), policy.clone()).unwrap();
        let (now, _) = drive(&mut state, &ops, true, |_, _, _, _| {});
        let later = now.saturating_add(policy.max_future_skew + policy.freshness);
        let events = state.evaluate(later);
        for (pop, info) in state.verdicts() {
            prop_assert_eq!(&info.verdict, &PopVerdict::Unknown, "{} after silence: {}", pop, info.rule);
        }
        for event in events {
            if let HealthEvent::Verdict { new, .. } = event {
                prop_assert_eq!(new, PopVerdict::Unknown);
            }
        }
    }
}
