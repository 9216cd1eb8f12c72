//! The driver and the publish rule with plain values and a fake clock.

use std::collections::BTreeMap;
use std::time::Duration;

use meridian_core::records::{DrainIntent, PlanPin, PopState, StoredPlan};
use meridian_core::slow_start::SlowStartEvent;
use meridian_core::topology::TopologyDoc;
use meridian_health::{HealthSnapshot, PopVerdict};

use super::*;
use crate::events::EventKind;
use crate::intents::Intents;
use crate::publish::{is_urgent, worth_publishing};

const TOPOLOGY: &str = r#"
[policy]
slow_start_stages = [0.1, 0.5, 1.0]
slow_start_bake = "10s"

[[pops]]
id = "fra1"
capacity = 1000
ipv4 = ["192.0.2.1"]
endpoints = [{ name = "tcp", kind = "tcp", address = "192.0.2.1:80" }]
anycast_prefixes = ["198.51.100.0/24"]

[[pops]]
id = "ams1"
capacity = 1000
ipv4 = ["192.0.2.2"]
endpoints = [{ name = "tcp", kind = "tcp", address = "192.0.2.2:80" }]
anycast_prefixes = ["198.51.100.0/24"]

[[pops]]
id = "iad1"
capacity = 1000
ipv4 = ["192.0.2.3"]
endpoints = [{ name = "tcp", kind = "tcp", address = "192.0.2.3:80" }]

[[regions]]
id = "eu-west"
demand = 300
client_prefixes = ["10.1.0.0/16"]
latency_hints = { fra1 = "10ms", ams1 = "15ms", iad1 = "80ms" }

[[regions]]
id = "us-east"
demand = 300
client_prefixes = ["10.2.0.0/16"]
latency_hints = { iad1 = "10ms", fra1 = "85ms", ams1 = "90ms" }
"#;

fn doc() -> TopologyDoc {
    TopologyDoc::from_toml(TOPOLOGY).unwrap()
}

fn health(verdicts: &[(&str, PopVerdict)]) -> HealthSnapshot {
    HealthSnapshot {
        verdicts: verdicts.iter().map(|(p, v)| (p.to_string(), v.clone())).collect(),
        ..HealthSnapshot::default()
    }
}

fn all_up() -> HealthSnapshot {
    health(&[
        ("fra1", PopVerdict::Up),
        ("ams1", PopVerdict::Up),
        ("iad1", PopVerdict::Up),
    ])
}

fn view<'a>(
    doc: &'a TopologyDoc,
    health: &'a HealthSnapshot,
    intents: &'a Intents,
    current: Option<&'a StoredPlan>,
) -> SteeringView<'a> {
    SteeringView {
        topology: doc,
        topology_revision: 3,
        health,
        intents,
        current,
        replica: "cp-1",
    }
}

fn weight(plan: &StoredPlan, region: &str, pop: &str) -> f64 {
    plan.regions
        .iter()
        .find(|r| r.region == region)
        .and_then(|r| r.pops.iter().find(|w| w.pop == pop))
        .map(|w| w.weight)
        .unwrap_or(0.0)
}

fn state(plan: &StoredPlan, pop: &str) -> PopState {
    plan.pops.iter().find(|s| s.pop == pop).map(|s| s.state).unwrap()
}

/// Ticks once and, if a plan comes out, "publishes" it as the next version.
fn tick_publish(
    driver: &mut SteeringDriver,
    now: u64,
    doc: &TopologyDoc,
    health: &HealthSnapshot,
    intents: &Intents,
    current: &mut Option<StoredPlan>,
) -> Ready {
    let ready = driver.tick(now, view(doc, health, intents, current.as_ref()));
    if let Some(plan) = &ready.publish {
        let mut plan = plan.clone();
        plan.version = current.as_ref().map_or(1, |c| c.version + 1);
        *current = Some(plan);
    }
    ready
}

#[test]
fn the_first_plan_is_published_then_nothing_until_something_matters() {
    let (doc, health, intents) = (doc(), all_up(), Intents::default());
    let mut driver = SteeringDriver::default();
    let ready = driver.tick(1_000, view(&doc, &health, &intents, None));
    let plan = ready.publish.expect("a first plan");
    assert_eq!(plan.reasons[0], "first plan for this topology");
    assert_eq!((plan.created_at_unix_ms, plan.topology_revision), (1_000, 3));
    assert_eq!(plan.published_by, "cp-1");
    assert_eq!(
        weight(&plan, "eu-west", "fra1"),
        1.0,
        "the closest PoP takes a region that fits"
    );
    assert_eq!(state(&plan, "fra1"), PopState::Up);
    assert!(ready.events.is_empty() && ready.error.is_none());
    // The same view again, with that plan in force: nothing to publish.
    let again = driver.tick(2_000, view(&doc, &health, &intents, Some(&plan)));
    assert_eq!(again.publish, None);
}

#[test]
fn no_topology_or_a_pinned_plan_publishes_nothing() {
    let (doc, health) = (doc(), all_up());
    let mut driver = SteeringDriver::default();
    let none = Intents::default();
    let mut v = view(&doc, &health, &none, None);
    v.topology_revision = 0;
    assert_eq!(driver.tick(1, v), Ready::default());
    let pinned = Intents {
        pin: Some(PlanPin {
            version: 4,
            reason: "roll back".into(),
            requested_by: "alice".into(),
            at_unix_ms: 1,
        }),
        ..Intents::default()
    };
    assert_eq!(driver.tick(1, view(&doc, &health, &pinned, None)), Ready::default());
}

#[test]
fn a_dead_pop_is_published_with_the_reason_and_gets_no_weight() {
    let (doc, intents) = (doc(), Intents::default());
    let mut driver = SteeringDriver::default();
    let mut current = None;
    tick_publish(&mut driver, 0, &doc, &all_up(), &intents, &mut current);
    let down = health(&[
        ("fra1", PopVerdict::Down),
        ("ams1", PopVerdict::Up),
        ("iad1", PopVerdict::Up),
    ]);
    let ready = tick_publish(&mut driver, 1_000, &doc, &down, &intents, &mut current);
    let plan = ready.publish.expect("a new plan");
    assert!(
        plan.reasons.iter().any(|r| r == "PoP fra1: up → down"),
        "{:?}",
        plan.reasons
    );
    assert_eq!(weight(&plan, "eu-west", "fra1"), 0.0);
    assert_eq!(weight(&plan, "eu-west", "ams1"), 1.0, "the next closest takes over");
    assert_eq!(state(&plan, "fra1"), PopState::Down);
}

#[test]
fn missing_data_is_unknown_and_keeps_serving() {
    let (doc, intents) = (doc(), Intents::default());
    let nothing = HealthSnapshot::default();
    let plan = SteeringDriver::default()
        .tick(0, view(&doc, &nothing, &intents, None))
        .publish
        .unwrap();
    assert_eq!(state(&plan, "fra1"), PopState::Unknown);
    assert_eq!(weight(&plan, "eu-west", "fra1"), 1.0, "UNKNOWN is never DOWN");
}

#[test]
fn a_drain_is_a_state_change_and_moves_the_weight() {
    let (doc, health) = (doc(), all_up());
    let mut driver = SteeringDriver::default();
    let mut current = None;
    tick_publish(&mut driver, 0, &doc, &health, &Intents::default(), &mut current);
    let mut intents = Intents::default();
    intents.drains.insert(
        "fra1".into(),
        DrainIntent {
            pop: "fra1".into(),
            reason: "fibre".into(),
            requested_by: "alice".into(),
            at_unix_ms: 1,
            forced_past: None,
            weight_percent: None,
            regions: Vec::new(),
            anycast: None,
        },
    );
    let plan = tick_publish(&mut driver, 1, &doc, &health, &intents, &mut current)
        .publish
        .unwrap();
    assert_eq!(state(&plan, "fra1"), PopState::Drained);
    assert_eq!(weight(&plan, "eu-west", "fra1"), 0.0);
    assert!(
        plan.reasons.iter().any(|r| r == "PoP fra1: up → drained"),
        "{:?}",
        plan.reasons
    );
}

/// A rung of a drain ladder keeps the PoP serving with that share of its weight;
/// the next rung lowers it; the last (a full drain) takes it out.
#[test]
fn a_drain_ladder_rung_keeps_that_share_of_the_weight() {
    let (doc, health) = (doc(), all_up());
    let mut driver = SteeringDriver::default();
    let mut current = None;
    let full = tick_publish(&mut driver, 0, &doc, &health, &Intents::default(), &mut current)
        .publish
        .unwrap();
    let before = weight(&full, "eu-west", "fra1");
    assert!(before > 0.99, "fra1 takes eu-west at first: {before}");
    let rung = |w: Option<u8>| {
        let mut intents = Intents::default();
        intents.drains.insert(
            "fra1".into(),
            DrainIntent {
                pop: "fra1".into(),
                reason: "maintenance".into(),
                requested_by: "otto".into(),
                at_unix_ms: 1,
                forced_past: None,
                weight_percent: w,
                regions: Vec::new(),
                anycast: None,
            },
        );
        intents
    };
    let half = tick_publish(&mut driver, 1, &doc, &health, &rung(Some(50)), &mut current)
        .publish
        .expect("a rung republishes");
    assert!(
        (weight(&half, "eu-west", "fra1") - before * 0.5).abs() < 0.01,
        "{}",
        weight(&half, "eu-west", "fra1")
    );
    assert!((weight(&half, "eu-west", "ams1") - 0.5).abs() < 0.01);
    assert_eq!(state(&half, "fra1"), PopState::Up, "a PoP on a rung still serves");
    assert!(
        half.reasons.iter().any(|r| r.contains("drain ladder: fra1 at 50%")),
        "{:?}",
        half.reasons
    );
    let quarter = tick_publish(&mut driver, 2, &doc, &health, &rung(Some(25)), &mut current)
        .publish
        .expect("the next rung republishes");
    assert!((weight(&quarter, "eu-west", "fra1") - 0.25).abs() < 0.01);
    let drained = tick_publish(&mut driver, 3, &doc, &health, &rung(Some(0)), &mut current)
        .publish
        .expect("the last rung republishes");
    assert_eq!(weight(&drained, "eu-west", "fra1"), 0.0);
    assert_eq!(state(&drained, "fra1"), PopState::Drained);
}

#[test]
fn latency_jitter_below_the_damper_publishes_nothing() {
    let (doc, intents) = (doc(), Intents::default());
    let mut measured = all_up();
    let set = |h: &mut HealthSnapshot, fra: u64, ams: u64| {
        h.set_latency("eu-west", "fra1", Duration::from_millis(fra));
        h.set_latency("eu-west", "ams1", Duration::from_millis(ams));
    };
    set(&mut measured, 20, 21);
    let mut driver = SteeringDriver::default();
    let mut current = None;
    tick_publish(&mut driver, 0, &doc, &measured, &intents, &mut current);
    // fra1 and ams1 swap places by 1.5 ms: held by the damper, no new plan.
    set(&mut measured, 21, 20);
    assert_eq!(
        tick_publish(&mut driver, 1_000, &doc, &measured, &intents, &mut current).publish,
        None
    );
    // A real move (fra1 now 60 ms away) is followed.
    set(&mut measured, 60, 20);
    let plan = tick_publish(&mut driver, 2_000, &doc, &measured, &intents, &mut current)
        .publish
        .expect("a real latency move republishes");
    assert_eq!(weight(&plan, "eu-west", "ams1"), 1.0);
}

#[test]
fn failback_goes_through_the_slow_start_stages_on_the_clock() {
    let (doc, intents) = (doc(), Intents::default());
    let mut driver = SteeringDriver::default();
    let mut current = None;
    let down = health(&[
        ("fra1", PopVerdict::Down),
        ("ams1", PopVerdict::Up),
        ("iad1", PopVerdict::Up),
    ]);
    tick_publish(&mut driver, 0, &doc, &down, &intents, &mut current);
    let up = all_up();
    let bake = 10_000;
    let mut t = 1_000;
    let ready = tick_publish(&mut driver, t, &doc, &up, &intents, &mut current);
    assert!(
        matches!(&ready.events[..], [e] if matches!(&e.kind, EventKind::SlowStart(SlowStartEvent::Started { pop, .. }) if pop == "fra1")),
        "{:?}",
        ready.events
    );
    let plan = ready.publish.unwrap();
    assert!((weight(&plan, "eu-west", "fra1") - 0.1).abs() < 1e-9, "10 % first");
    assert!(
        plan.reasons.iter().any(|r| r.contains("slow start: fra1 at 10%")),
        "{:?}",
        plan.reasons
    );
    // Before the bake time is over nothing moves.
    t += bake - 1;
    let held = tick_publish(&mut driver, t, &doc, &up, &intents, &mut current);
    assert!(held.events.is_empty() && held.publish.is_none(), "{held:?}");
    t += 1;
    let ready = tick_publish(&mut driver, t, &doc, &up, &intents, &mut current);
    assert!(matches!(
        &ready.events[0].kind,
        EventKind::SlowStart(SlowStartEvent::Advanced { .. })
    ));
    assert!((weight(current.as_ref().unwrap(), "eu-west", "fra1") - 0.5).abs() < 1e-9);
    // The last stage is 1.0: reaching it completes the slow start.
    t += bake;
    let ready = tick_publish(&mut driver, t, &doc, &up, &intents, &mut current);
    assert!(
        ready
            .events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::SlowStart(SlowStartEvent::Completed { .. }))),
        "{:?}",
        ready.events
    );
    assert_eq!(weight(current.as_ref().unwrap(), "eu-west", "fra1"), 1.0);
}

#[test]
fn a_new_leader_slow_starts_a_pop_the_plan_in_force_has_down() {
    let (doc, intents) = (doc(), Intents::default());
    let down = health(&[
        ("fra1", PopVerdict::Down),
        ("ams1", PopVerdict::Up),
        ("iad1", PopVerdict::Up),
    ]);
    let mut old_leader = SteeringDriver::default();
    let mut current = None;
    tick_publish(&mut old_leader, 0, &doc, &down, &intents, &mut current);
    // A fresh driver (the new leader) sees fra1 UP and the plan in force says DOWN.
    let mut new_leader = SteeringDriver::default();
    let ready = tick_publish(&mut new_leader, 5_000, &doc, &all_up(), &intents, &mut current);
    assert!(matches!(&ready.events[..], [e] if matches!(e.kind, EventKind::SlowStart(SlowStartEvent::Started { .. }))));
    assert!((weight(current.as_ref().unwrap(), "eu-west", "fra1") - 0.1).abs() < 1e-9);
}

#[test]
fn a_compute_failure_is_reported_once_and_publishes_nothing() {
    let mut doc = doc();
    doc.pops[0].capacity = f64::NAN;
    let (health, intents) = (all_up(), Intents::default());
    let mut driver = SteeringDriver::default();
    let first = driver.tick(0, view(&doc, &health, &intents, None));
    assert!(first.publish.is_none());
    assert!(
        first.error.as_deref().is_some_and(|e| e.contains("capacity")),
        "{first:?}"
    );
    let second = driver.tick(1, view(&doc, &health, &intents, None));
    assert_eq!(second.error, None, "the same failure is not reported again");
}

#[test]
fn published_events_name_the_version_and_every_guardrail() {
    let plan = StoredPlan {
        version: 9,
        reasons: vec!["PoP fra1: up → down".into()],
        guardrails: vec!["max-failover-capacity: ...".into()],
        ..SteeringDriver::default()
            .tick(0, view(&doc(), &all_up(), &Intents::default(), None))
            .publish
            .unwrap()
    };
    let events = published_events(&plan, 77);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].message(), "published plan v9");
    assert_eq!(events[0].evidence(), plan.reasons);
    assert_eq!(events[1].kind_name(), "guardrail");
    assert!(events.iter().all(|e| e.at_unix_ms == 77));
}

/// The publish rule, table-driven on plans computed from small edits of one input.
#[test]
fn worth_publishing_cases() {
    let doc = doc();
    let plan_for = |doc: &TopologyDoc, health: &HealthSnapshot| {
        SteeringDriver::default()
            .tick(0, view(doc, health, &Intents::default(), None))
            .publish
            .unwrap()
    };
    let base = plan_for(&doc, &all_up());
    let threshold = doc.policy.weight_change_threshold;
    let mut tiny = doc.clone();
    tiny.regions[0].demand = 301.0;
    let mut overloaded = doc.clone();
    overloaded.regions[0].demand = 1_500.0; // spills past fra1's target
    let mut ttl = doc.clone();
    ttl.policy.dns_ttl_seconds += 10;
    let mut moved = doc.clone();
    moved.pops[0].ipv4 = vec!["192.0.2.99".parse().unwrap()];
    let down = health(&[
        ("fra1", PopVerdict::Down),
        ("ams1", PopVerdict::Up),
        ("iad1", PopVerdict::Up),
    ]);
    let degraded = health(&[
        (
            "iad1",
            PopVerdict::Degraded {
                down_regions: ["eu-west".to_string()].into(),
            },
        ),
        ("fra1", PopVerdict::Up),
        ("ams1", PopVerdict::Up),
    ]);
    let cases: Vec<(&str, StoredPlan, Option<&str>)> = vec![
        ("same input", plan_for(&doc, &all_up()), None),
        ("tiny demand change", plan_for(&tiny, &all_up()), None),
        (
            "large demand change",
            plan_for(&overloaded, &all_up()),
            Some("region eu-west → ams1: weight 0%"),
        ),
        ("a PoP goes down", plan_for(&doc, &down), Some("PoP fra1: up → down")),
        (
            "a PoP is degraded for one region",
            plan_for(&doc, &degraded),
            Some("PoP iad1: up → degraded"),
        ),
        ("DNS TTL", plan_for(&ttl, &all_up()), Some("DNS TTL 20s → 30s")),
        ("addresses", plan_for(&moved, &all_up()), Some("(addresses changed)")),
    ];
    for (name, new, want) in cases {
        match (want, worth_publishing(&base, &new, threshold)) {
            (None, None) => {}
            (Some(text), Some(reasons)) => {
                assert!(
                    reasons.iter().any(|r| r.contains(text)),
                    "{name}: {reasons:?} lacks {text:?}"
                )
            }
            (want, got) => panic!("{name}: want {want:?}, got {got:?}"),
        }
    }
    // Withdrawing an anycast prefix is its own reason.
    let with_down = plan_for(&doc, &down);
    let reasons = worth_publishing(&base, &with_down, threshold).unwrap();
    assert!(
        reasons.iter().any(|r| r == "Anycast announcements changed"),
        "{reasons:?}"
    );
}

/// Urgent (skips a canary wave): a PoP newly DOWN; not a drain, a degradation or a
/// weight move.
#[test]
fn only_a_pop_newly_down_is_urgent() {
    let doc = doc();
    let plan_for = |doc: &TopologyDoc, health: &HealthSnapshot, intents: &Intents| {
        SteeringDriver::default()
            .tick(0, view(doc, health, intents, None))
            .publish
            .unwrap()
    };
    let none = Intents::default();
    let base = plan_for(&doc, &all_up(), &none);
    let down = health(&[
        ("fra1", PopVerdict::Down),
        ("ams1", PopVerdict::Up),
        ("iad1", PopVerdict::Up),
    ]);
    let with_down = plan_for(&doc, &down, &none);
    assert!(is_urgent(Some(&base), &with_down));
    assert!(!is_urgent(Some(&with_down), &with_down), "already down: not new");
    assert!(!is_urgent(Some(&with_down), &base), "coming back is not urgent");
    assert!(!is_urgent(None, &with_down), "a first plan has nothing to hold");
    let mut drained = Intents::default();
    drained.drains.insert(
        "fra1".into(),
        meridian_core::records::DrainIntent {
            pop: "fra1".into(),
            reason: "maintenance".into(),
            requested_by: "operator:otto".into(),
            at_unix_ms: 0,
            forced_past: None,
            weight_percent: None,
            regions: Vec::new(),
            anycast: None,
        },
    );
    let with_drain = plan_for(&doc, &all_up(), &drained);
    assert!(worth_publishing(&base, &with_drain, 0.05).is_some());
    assert!(
        !is_urgent(Some(&base), &with_drain),
        "a drain is a change, not an emergency"
    );
}

#[test]
fn the_damper_holds_small_moves_and_follows_real_ones() {
    let mut d = LatencyDamper::default();
    d.align(["fra1", "ams1"].into_iter());
    assert_eq!(d.filter("eu", 0, 10.0), 10.0);
    assert_eq!(d.filter("eu", 0, 11.5), 10.0, "jitter below 2 ms is held");
    assert_eq!(d.filter("eu", 0, 13.0), 13.0, "a 3 ms move is followed");
    assert_eq!(d.filter("eu", 0, 100.0), 100.0);
    assert_eq!(d.filter("eu", 0, 108.0), 100.0, "below 10 % of 100 ms is held");
    assert_eq!(d.filter("eu", 1, 108.0), 108.0, "pairs are independent");
    assert_eq!(d.filter("us", 0, 50.0), 50.0, "regions are independent");
    // The same PoPs again: nothing forgotten.
    d.align(["fra1", "ams1"].into_iter());
    assert_eq!(d.filter("eu", 0, 101.0), 100.0);
    // Other PoPs: the rows are laid out anew, nothing held is applied to the wrong PoP.
    d.align(["ams1", "fra1"].into_iter());
    assert_eq!(d.filter("eu", 0, 101.0), 101.0);
}

#[test]
fn measured_latency_reaches_the_input_through_the_snapshot_columns() {
    let doc = doc();
    let mut h = all_up();
    h.set_latency("eu-west", "iad1", Duration::from_millis(7));
    h.set_latency("eu-west", "ams1", Duration::from_millis(30));
    let input = build_input(&doc, &h, &BTreeMap::new(), None);
    assert_eq!(
        input.latency.latency("eu-west", "iad1"),
        7.0,
        "measured wins over the hint"
    );
    assert_eq!(input.latency.latency("eu-west", "ams1"), 30.0);
    assert_eq!(
        input.latency.latency("eu-west", "fra1"),
        10.0,
        "no measurement: the hint"
    );
}

fn region_drain(pop: &str, weight_percent: Option<u8>, regions: &[&str]) -> DrainIntent {
    DrainIntent {
        pop: pop.into(),
        reason: "maintenance".into(),
        requested_by: "otto".into(),
        at_unix_ms: 1,
        forced_past: None,
        weight_percent,
        regions: regions.iter().map(|r| r.to_string()).collect(),
        anycast: None,
    }
}

/// A drain for some client regions only takes the PoP out of those regions and
/// leaves it in service (UP, announced) for the others; a ladder rung for a region
/// blends only that region.
#[test]
fn a_region_drain_moves_only_that_regions_traffic() {
    let (doc, health) = (doc(), all_up());
    let mut driver = SteeringDriver::default();
    let mut current = None;
    tick_publish(&mut driver, 0, &doc, &health, &Intents::default(), &mut current);
    let mut intents = Intents::default();
    intents
        .drains
        .insert("fra1".into(), region_drain("fra1", None, &["eu-west"]));
    let plan = tick_publish(&mut driver, 1, &doc, &health, &intents, &mut current)
        .publish
        .expect("a region drain republishes");
    assert_eq!(weight(&plan, "eu-west", "fra1"), 0.0);
    assert!(weight(&plan, "eu-west", "ams1") > 0.99);
    assert_eq!(state(&plan, "fra1"), PopState::Up, "still in service for us-east");
    // Drained for us-east only, fra1 keeps all of eu-west.
    let mut driver = SteeringDriver::default();
    let mut current = None;
    let mut us = Intents::default();
    us.drains
        .insert("fra1".into(), region_drain("fra1", None, &["us-east"]));
    let plan = tick_publish(&mut driver, 0, &doc, &health, &us, &mut current)
        .publish
        .unwrap();
    assert!(weight(&plan, "eu-west", "fra1") > 0.99);
    assert_eq!(weight(&plan, "us-east", "fra1"), 0.0);
    // A 50 % rung for eu-west only.
    let mut driver = SteeringDriver::default();
    let mut current = None;
    let mut rung = Intents::default();
    rung.drains
        .insert("fra1".into(), region_drain("fra1", Some(50), &["eu-west"]));
    let plan = tick_publish(&mut driver, 0, &doc, &health, &rung, &mut current)
        .publish
        .unwrap();
    assert!((weight(&plan, "eu-west", "fra1") - 0.5).abs() < 0.01, "{plan:?}");
    assert!(
        plan.reasons
            .iter()
            .any(|r| r.contains("drain ladder: fra1 at 50% of its weight for eu-west")),
        "{:?}",
        plan.reasons
    );
}

#[test]
fn a_region_drain_that_leaves_a_region_no_pop_is_refused_naming_the_rule() {
    let (doc, health) = (doc(), all_up());
    let mut drains = BTreeMap::new();
    assert_eq!(
        check_region_drain(&doc, &health, &drains, "fra1", &["eu-west".into()], false).unwrap(),
        vec![]
    );
    drains.insert("fra1".into(), region_drain("fra1", None, &["eu-west"]));
    drains.insert("ams1".into(), region_drain("ams1", None, &["eu-west"]));
    let refused = check_region_drain(&doc, &health, &drains, "iad1", &["eu-west".into()], false).unwrap_err();
    match refused {
        DrainError::Refused(f) => {
            assert_eq!(f.rule, meridian_steering::GuardrailRule::LastPopInRegion);
            assert_eq!(f.region.as_deref(), Some("eu-west"));
        }
        other => panic!("{other:?}"),
    }
    // Forced: allowed, the firing marked overridden.
    let forced = check_region_drain(&doc, &health, &drains, "iad1", &["eu-west".into()], true).unwrap();
    assert!(forced[0].overridden);
    // us-east is untouched by those drains.
    assert!(check_region_drain(&doc, &health, &drains, "iad1", &["us-east".into()], false).is_ok());
    let unknown = check_region_drain(&doc, &health, &drains, "iad1", &["mars".into()], false).unwrap_err();
    assert!(
        unknown.to_string().contains("unknown client region `mars`"),
        "{unknown}"
    );
}

/// A capacity override is planned with, shown in the plan and is a reason to
/// publish on its own; it ends when it expires.
#[test]
fn a_capacity_override_is_planned_with_until_it_expires() {
    let (doc, health) = (doc(), all_up());
    let mut driver = SteeringDriver::default();
    let mut current = None;
    tick_publish(&mut driver, 0, &doc, &health, &Intents::default(), &mut current);
    let mut intents = Intents::default();
    intents.capacity.insert(
        "fra1".into(),
        meridian_core::records::CapacityOverride {
            pop: "fra1".into(),
            capacity: 100.0,
            reason: "half the racks".into(),
            requested_by: "otto".into(),
            at_unix_ms: 1,
            until_unix_ms: Some(60_000),
        },
    );
    let plan = tick_publish(&mut driver, 1, &doc, &health, &intents, &mut current)
        .publish
        .expect("a capacity override republishes");
    let fra1 = plan.pops.iter().find(|p| p.pop == "fra1").unwrap();
    assert_eq!(fra1.capacity, 100.0);
    assert!(fra1.load <= 100.0 + 1e-6, "{}", fra1.load);
    assert!(
        plan.reasons.iter().any(|r| r.contains("PoP fra1: capacity 1000 → 100")),
        "{:?}",
        plan.reasons
    );
    let later = tick_publish(&mut driver, 60_000, &doc, &health, &intents, &mut current)
        .publish
        .expect("the expiry republishes");
    assert_eq!(later.pops.iter().find(|p| p.pop == "fra1").unwrap().capacity, 1000.0);
}

/// A rung's Anycast side: the partly drained PoP's prefixes are prepended or carry
/// GRACEFUL_SHUTDOWN in the plan; never GRACEFUL_SHUTDOWN on the last announcer.
#[test]
fn anycast_rungs_prepend_and_shut_down_but_never_the_last_announcer() {
    use meridian_core::records::{AnycastAction, AnycastStep};
    let (doc, health) = (doc(), all_up());
    let rung = |pop: &str, action: AnycastAction, prepend: u32| {
        let mut intents = Intents::default();
        intents.drains.insert(
            pop.into(),
            DrainIntent {
                anycast: Some(AnycastStep { action, prepend }),
                ..region_drain(pop, Some(50), &[])
            },
        );
        intents
    };
    let announce = |plan: &StoredPlan, pop: &str| {
        plan.anycast
            .iter()
            .find(|a| a.pop == pop)
            .map(|a| (a.action, a.prepend_count))
            .unwrap()
    };
    let plan_for = |intents: &Intents| {
        SteeringDriver::default()
            .tick(0, view(&doc, &health, intents, None))
            .publish
            .unwrap()
    };
    let p = plan_for(&rung("fra1", AnycastAction::Prepend, 3));
    assert_eq!(announce(&p, "fra1"), (AnycastAction::Prepend, 3));
    assert_eq!(
        announce(&p, "ams1"),
        (AnycastAction::Announce, 0),
        "the other announcer is untouched"
    );
    assert!(
        p.reasons
            .iter()
            .any(|r| r.contains("fra1 announces 198.51.100.0/24 with prepend ×3")),
        "{:?}",
        p.reasons
    );
    let g = plan_for(&rung("fra1", AnycastAction::GracefulShutdown, 0));
    assert_eq!(announce(&g, "fra1"), (AnycastAction::GracefulShutdown, 0));
    // With ams1 (the other announcer) down, fra1 is the last: no GRACEFUL_SHUTDOWN.
    let ams_down = health_of(&[
        ("fra1", PopVerdict::Up),
        ("ams1", PopVerdict::Down),
        ("iad1", PopVerdict::Up),
    ]);
    let last = SteeringDriver::default()
        .tick(
            0,
            view(&doc, &ams_down, &rung("fra1", AnycastAction::GracefulShutdown, 0), None),
        )
        .publish
        .unwrap();
    assert_eq!(announce(&last, "fra1"), (AnycastAction::Announce, 0));
    assert!(
        last.reasons
            .iter()
            .any(|r| r.contains("guardrail last-pop-for-prefix: fra1 keeps announcing")),
        "{:?}",
        last.reasons
    );
}

fn health_of(verdicts: &[(&str, PopVerdict)]) -> HealthSnapshot {
    health(verdicts)
}
