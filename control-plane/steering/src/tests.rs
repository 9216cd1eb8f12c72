//! Table-driven unit tests of `compute` and the guardrails (the publish rule's table
//! lives with it, in meridian-engine).

use std::collections::BTreeSet;

use crate::*;

fn pop(id: &str, capacity: f64) -> PopInput {
    PopInput {
        id: id.into(),
        capacity,
        state: PopUsability::Usable,
        unreachable_from: BTreeSet::new(),
        anycast_prefixes: Vec::new(),
    }
}

fn region(id: &str, demand: f64) -> RegionInput {
    RegionInput {
        id: id.into(),
        demand,
        allowed_pops: None,
    }
}

/// `latency` rows are regions, columns PoPs, in the order given.
fn input(pops: Vec<PopInput>, regions: Vec<RegionInput>, latency: &[&[f64]]) -> SteeringInput {
    let mut matrix = LatencyMatrix::default();
    for (r, row) in latency.iter().enumerate() {
        for (p, &ms) in row.iter().enumerate() {
            matrix.set_measured(&regions[r].id, &pops[p].id, ms);
        }
    }
    SteeringInput {
        pops,
        regions,
        latency: matrix,
        policy: SteeringPolicy::default(),
    }
}

fn weight(plan: &Plan, region: &str, pop: &str) -> f64 {
    plan.regions[region]
        .iter()
        .find(|w| w.pop == pop)
        .map_or(0.0, |w| w.weight)
}

fn rules(firings: &[GuardrailFiring]) -> Vec<String> {
    firings.iter().map(|f| f.rule.to_string()).collect()
}

fn with_state(mut p: PopInput, state: PopUsability) -> PopInput {
    p.state = state;
    p
}

fn drained() -> PopUsability {
    PopUsability::Drained {
        reason: "maintenance".into(),
    }
}

#[test]
fn fill_cases() {
    struct Case {
        name: &'static str,
        input: SteeringInput,
        /// (region, pop, expected weight)
        weights: &'static [(&'static str, &'static str, f64)],
        /// (pop, expected load)
        loads: &'static [(&'static str, f64)],
        overloaded: bool,
    }
    let mut degraded = pop("a", 100.0);
    degraded.unreachable_from.insert("r1".into());
    let cases = vec![
        Case {
            name: "nearest PoP takes all when it has room",
            input: input(
                vec![pop("a", 100.0), pop("b", 100.0)],
                vec![region("r", 50.0)],
                &[&[10.0, 20.0]],
            ),
            weights: &[("r", "a", 1.0), ("r", "b", 0.0)],
            loads: &[("a", 50.0), ("b", 0.0)],
            overloaded: false,
        },
        Case {
            name: "spill-over by headroom: fill to target, then the next PoP",
            input: input(
                vec![pop("a", 100.0), pop("b", 100.0)],
                vec![region("r", 120.0)],
                &[&[10.0, 20.0]],
            ),
            weights: &[("r", "a", 80.0 / 120.0), ("r", "b", 40.0 / 120.0)],
            loads: &[("a", 80.0), ("b", 40.0)],
            overloaded: false,
        },
        Case {
            name: "beyond every target, the rest goes into the nearest headroom",
            input: input(
                vec![pop("a", 100.0), pop("b", 50.0)],
                vec![region("r", 130.0)],
                &[&[10.0, 20.0]],
            ),
            weights: &[("r", "a", 90.0 / 130.0), ("r", "b", 40.0 / 130.0)],
            loads: &[("a", 90.0), ("b", 40.0)],
            overloaded: false,
        },
        Case {
            name: "regions compete by global cost, not by list order",
            // r1 is much worse off on b than r2 is, so r1 gets a even though r2 is closer.
            input: input(
                vec![pop("a", 100.0), pop("b", 100.0)],
                vec![region("r1", 80.0), region("r2", 80.0)],
                &[&[10.0, 100.0], &[9.0, 11.0]],
            ),
            weights: &[("r1", "a", 1.0), ("r2", "b", 1.0)],
            loads: &[("a", 80.0), ("b", 80.0)],
            overloaded: false,
        },
        Case {
            name: "overload spread in proportion to capacity, no region starved",
            input: input(
                vec![pop("a", 100.0), pop("b", 50.0)],
                vec![region("r1", 200.0), region("r2", 100.0)],
                &[&[10.0, 50.0], &[50.0, 10.0]],
            ),
            weights: &[],
            loads: &[("a", 200.0), ("b", 100.0)],
            overloaded: true,
        },
        Case {
            name: "down PoP removed and its load moved",
            input: input(
                vec![
                    with_state(pop("a", 100.0), PopUsability::Down),
                    pop("b", 100.0),
                    pop("c", 100.0),
                ],
                vec![region("r", 50.0)],
                &[&[10.0, 20.0, 30.0]],
            ),
            weights: &[("r", "a", 0.0), ("r", "b", 1.0)],
            loads: &[("a", 0.0), ("b", 50.0)],
            overloaded: false,
        },
        Case {
            name: "degraded only for the named regions",
            input: input(
                vec![degraded, pop("b", 100.0)],
                vec![region("r1", 10.0), region("r2", 10.0)],
                &[&[10.0, 20.0], &[10.0, 20.0]],
            ),
            weights: &[("r1", "a", 0.0), ("r1", "b", 1.0), ("r2", "a", 1.0)],
            loads: &[("a", 10.0), ("b", 10.0)],
            overloaded: false,
        },
        Case {
            name: "unknown is usable (fail static)",
            input: input(
                vec![with_state(pop("a", 100.0), PopUsability::Unknown), pop("b", 100.0)],
                vec![region("r", 10.0)],
                &[&[10.0, 20.0]],
            ),
            weights: &[("r", "a", 1.0)],
            loads: &[("a", 10.0)],
            overloaded: false,
        },
        Case {
            name: "drained PoP removed",
            input: input(
                vec![with_state(pop("a", 100.0), drained()), pop("b", 100.0)],
                vec![region("r", 10.0)],
                &[&[10.0, 20.0]],
            ),
            weights: &[("r", "a", 0.0), ("r", "b", 1.0)],
            loads: &[("a", 0.0), ("b", 10.0)],
            overloaded: false,
        },
        Case {
            name: "zero demand still gets its lowest-latency PoP",
            input: input(
                vec![pop("a", 100.0), pop("b", 100.0)],
                vec![region("r", 0.0)],
                &[&[30.0, 20.0]],
            ),
            weights: &[("r", "b", 1.0)],
            loads: &[("a", 0.0), ("b", 0.0)],
            overloaded: false,
        },
    ];
    for case in cases {
        let plan = compute(&case.input).unwrap();
        for &(r, p, w) in case.weights {
            let got = weight(&plan, r, p);
            assert!(
                (got - w).abs() < 1e-9,
                "{}: weight {r}/{p} = {got}, want {w}",
                case.name
            );
        }
        for &(p, l) in case.loads {
            let got = plan.pop_load[p].load;
            assert!((got - l).abs() < 1e-6, "{}: load of {p} = {got}, want {l}", case.name);
        }
        assert_eq!(plan.overloaded, case.overloaded, "{}", case.name);
        for (r, weights) in &plan.regions {
            let sum: f64 = weights.iter().map(|w| w.weight).sum();
            assert!((sum - 1.0).abs() < 1e-9, "{}: {r} sums to {sum}", case.name);
        }
    }
}

#[test]
fn overload_gives_every_pop_the_same_utilisation() {
    let plan = compute(&input(
        vec![pop("a", 100.0), pop("b", 50.0)],
        vec![region("r1", 200.0), region("r2", 100.0)],
        &[&[10.0, 50.0], &[50.0, 10.0]],
    ))
    .unwrap();
    for load in plan.pop_load.values() {
        assert!((load.utilisation - 2.0).abs() < 1e-9, "{load:?}");
    }
    assert!(plan.regions.values().all(|w| !w.is_empty()));
    assert!(
        plan.reasons.iter().any(|r| r.starts_with("overloaded")),
        "{:?}",
        plan.reasons
    );
}

#[test]
fn latency_measured_wins_over_hint_over_default() {
    let mut matrix = LatencyMatrix::new(300.0);
    matrix.set_hint("r", "a", 50.0);
    matrix.set_hint("r", "b", 40.0);
    matrix.set_measured("r", "a", 10.0);
    assert_eq!(matrix.latency("r", "a"), 10.0);
    assert_eq!(matrix.latency("r", "b"), 40.0);
    assert_eq!(matrix.latency("r", "c"), 300.0);
    // And compute sees the same: a (measured 10) beats b (hint 40) beats c (default).
    let input = SteeringInput {
        pops: vec![pop("a", 100.0), pop("b", 100.0), pop("c", 100.0)],
        regions: vec![region("r", 10.0)],
        latency: matrix,
        policy: SteeringPolicy::default(),
    };
    assert_eq!(weight(&compute(&input).unwrap(), "r", "a"), 1.0);
}

#[test]
fn residency_is_a_hard_constraint() {
    let mut input = input(
        vec![pop("eu", 100.0), pop("us", 100.0)],
        vec![region("de", 10.0)],
        &[&[50.0, 10.0]],
    );
    input.regions[0].allowed_pops = Some(["eu".to_string()].into());
    let plan = compute(&input).unwrap();
    assert_eq!(weight(&plan, "de", "eu"), 1.0);
}

#[test]
fn guardrail_cases() {
    struct Case {
        name: &'static str,
        input: SteeringInput,
        rules: &'static [&'static str],
        check: fn(&Plan),
    }
    let mut prefix_a = with_state(pop("a", 100.0), PopUsability::Down);
    prefix_a.anycast_prefixes = vec!["192.0.2.0/24".into()];
    let mut prefix_b = pop("b", 100.0);
    prefix_b.anycast_prefixes = vec!["198.51.100.0/24".into()];
    let mut only_eu = input(
        vec![
            with_state(pop("eu", 100.0), PopUsability::Down),
            pop("us", 100.0),
            pop("ap", 100.0),
        ],
        vec![region("de", 10.0)],
        &[&[10.0, 50.0, 90.0]],
    );
    only_eu.regions[0].allowed_pops = Some(["eu".to_string()].into());
    let mut all_degraded = input(
        vec![pop("a", 100.0), pop("b", 100.0)],
        vec![region("r", 10.0)],
        &[&[30.0, 20.0]],
    );
    for p in &mut all_degraded.pops {
        p.unreachable_from.insert("r".into());
    }
    let cases = vec![
        Case {
            name: "down capacity above the cap fails open",
            input: input(
                vec![
                    with_state(pop("a", 100.0), PopUsability::Down),
                    with_state(pop("b", 100.0), PopUsability::Down),
                    pop("c", 100.0),
                ],
                vec![region("r", 50.0)],
                &[&[10.0, 20.0, 30.0]],
            ),
            rules: &["max-failover-capacity"],
            check: |plan| {
                assert!(plan.pop_load["a"].in_service && plan.pop_load["b"].in_service);
                assert_eq!(weight(plan, "r", "a"), 1.0);
                assert_eq!(plan.anycast["a"], AnycastIntent::Announce);
            },
        },
        Case {
            name: "down capacity at the cap is removed",
            input: input(
                vec![with_state(pop("a", 100.0), PopUsability::Down), pop("b", 100.0)],
                vec![region("r", 50.0)],
                &[&[10.0, 20.0]],
            ),
            rules: &[],
            check: |plan| assert_eq!(weight(plan, "r", "b"), 1.0),
        },
        Case {
            name: "drained capacity does not count towards the failover cap",
            input: input(
                vec![
                    with_state(pop("a", 100.0), PopUsability::Down),
                    with_state(pop("b", 100.0), drained()),
                    pop("c", 100.0),
                ],
                vec![region("r", 50.0)],
                &[&[10.0, 20.0, 30.0]],
            ),
            rules: &[],
            check: |plan| assert_eq!(weight(plan, "r", "c"), 1.0),
        },
        Case {
            name: "last PoP of a region (residency) is kept",
            input: only_eu,
            rules: &["last-pop-in-region"],
            check: |plan| {
                assert_eq!(weight(plan, "de", "eu"), 1.0);
                assert!(!plan.pop_load["eu"].in_service);
            },
        },
        Case {
            name: "a region unreachable from every PoP keeps its lowest-latency one",
            input: all_degraded,
            rules: &["last-pop-in-region"],
            check: |plan| assert_eq!(weight(plan, "r", "b"), 1.0),
        },
        Case {
            name: "a region whose every PoP is drained keeps one rather than none",
            input: input(
                vec![
                    with_state(pop("a", 100.0), drained()),
                    with_state(pop("b", 100.0), drained()),
                ],
                vec![region("r", 10.0)],
                &[&[30.0, 20.0]],
            ),
            rules: &["last-pop-in-region"],
            check: |plan| assert_eq!(weight(plan, "r", "b"), 1.0),
        },
        Case {
            name: "last announcer of a prefix keeps announcing",
            input: input(
                vec![prefix_a, prefix_b, pop("c", 100.0)],
                vec![region("r", 10.0)],
                &[&[10.0, 20.0, 30.0]],
            ),
            rules: &["last-pop-for-prefix"],
            check: |plan| {
                assert_eq!(plan.anycast["a"], AnycastIntent::Announce);
                assert_eq!(weight(plan, "r", "a"), 0.0, "announced, but not used for DNS");
                assert_eq!(plan.anycast["b"], AnycastIntent::Announce);
            },
        },
    ];
    for case in cases {
        let plan = compute(&case.input).unwrap();
        assert_eq!(rules(&plan.fired), case.rules, "{}: {:?}", case.name, plan.fired);
        for f in &plan.fired {
            assert!(
                plan.reasons.iter().any(|r| r.contains(f.rule.name())),
                "{}: reason for {f}",
                case.name
            );
        }
        (case.check)(&plan);
    }
}

#[test]
fn check_drain_cases() {
    struct Case {
        name: &'static str,
        input: SteeringInput,
        pop: &'static str,
        refused_by: Option<&'static str>,
    }
    let mut prefix_a = pop("a", 100.0);
    prefix_a.anycast_prefixes = vec!["192.0.2.0/24".into()];
    let mut residency = input(
        vec![pop("a", 100.0), pop("b", 100.0)],
        vec![region("r", 10.0)],
        &[&[10.0, 20.0]],
    );
    residency.regions[0].allowed_pops = Some(["a".to_string()].into());
    let cases = vec![
        Case {
            name: "plenty of capacity left",
            input: input(
                vec![pop("a", 100.0), pop("b", 100.0)],
                vec![region("r", 50.0)],
                &[&[10.0, 20.0]],
            ),
            pop: "a",
            refused_by: None,
        },
        Case {
            name: "the rest would be over capacity",
            input: input(
                vec![pop("a", 100.0), pop("b", 100.0)],
                vec![region("r", 150.0)],
                &[&[10.0, 20.0]],
            ),
            pop: "a",
            refused_by: Some("drain-over-capacity"),
        },
        Case {
            name: "last PoP of a region",
            input: residency,
            pop: "a",
            refused_by: Some("last-pop-in-region"),
        },
        Case {
            name: "last announcer of a prefix",
            input: input(
                vec![prefix_a, pop("b", 100.0)],
                vec![region("r", 10.0)],
                &[&[10.0, 20.0]],
            ),
            pop: "a",
            refused_by: Some("last-pop-for-prefix"),
        },
    ];
    for case in cases {
        let result = check_drain(&case.input, case.pop, false);
        match (case.refused_by, result) {
            (None, Ok(firings)) => assert!(firings.is_empty(), "{}: {firings:?}", case.name),
            (Some(rule), Err(DrainError::Refused(f))) => {
                assert_eq!(f.rule.name(), rule, "{}", case.name);
                assert!(!f.overridden);
                // Forced: the same rule, recorded as overridden.
                let forced = check_drain(&case.input, case.pop, true).unwrap();
                assert_eq!(forced[0].rule.name(), rule, "{}", case.name);
                assert!(forced.iter().all(|f| f.overridden), "{}", case.name);
            }
            (want, got) => panic!("{}: want refusal by {want:?}, got {got:?}", case.name),
        }
    }
}

#[test]
fn drain_over_capacity_detail_has_the_numbers() {
    let input = input(
        vec![pop("a", 100.0), pop("b", 100.0)],
        vec![region("r", 150.0)],
        &[&[10.0, 20.0]],
    );
    let Err(DrainError::Refused(f)) = check_drain(&input, "a", false) else {
        panic!("not refused")
    };
    assert!(
        f.detail.contains("100.0") && f.detail.contains("150.0") && f.detail.contains("200.0"),
        "{}",
        f.detail
    );
    assert!(DrainError::Refused(f).to_string().contains("drain-over-capacity"));
    assert!(matches!(
        check_drain(&input, "nope", false),
        Err(DrainError::Input(SteeringError::UnknownPop { .. }))
    ));
}

#[test]
fn what_if_shows_the_plan_and_firings() {
    let input = input(
        vec![pop("a", 100.0), pop("b", 100.0)],
        vec![region("r", 150.0)],
        &[&[10.0, 20.0]],
    );
    let (plan, firings) = what_if(&input, &Scenario::Drain("a".into())).unwrap();
    assert_eq!(weight(&plan, "r", "b"), 1.0);
    assert!(plan.overloaded);
    assert_eq!(rules(&firings), ["drain-over-capacity"]);
    let (plan, firings) = what_if(&input, &Scenario::Down("a".into())).unwrap();
    assert_eq!(weight(&plan, "r", "b"), 1.0);
    assert!(firings.is_empty(), "{firings:?}");
    // The input itself is untouched.
    assert_eq!(input.pops[0].state, PopUsability::Usable);
    assert!(matches!(
        what_if(&input, &Scenario::Down("x".into())),
        Err(SteeringError::UnknownPop { .. })
    ));
}

#[test]
fn invalid_input_names_the_field() {
    let ok = input(vec![pop("a", 100.0)], vec![region("r", 1.0)], &[&[10.0]]);
    type Mutation = fn(&mut SteeringInput);
    let cases: Vec<(Mutation, &str)> = vec![
        (|i| i.pops[0].capacity = f64::NAN, "pops[0].capacity"),
        (|i| i.pops[0].capacity = 0.0, "pops[0].capacity"),
        (|i| i.regions[0].demand = -1.0, "regions[0].demand"),
        (|i| i.pops.push(i.pops[0].clone()), "pops[1].id"),
        (|i| i.regions.push(i.regions[0].clone()), "regions[1].id"),
        (|i| i.policy.target_utilisation = 1.5, "policy.target_utilisation"),
        (
            |i| i.policy.max_failover_capacity_share = -0.1,
            "policy.max_failover_capacity_share",
        ),
        (
            |i| i.policy.weight_change_threshold = f64::NAN,
            "policy.weight_change_threshold",
        ),
        (|i| i.latency.default_latency = f64::INFINITY, "latency.default_latency"),
        (
            |i| i.regions[0].allowed_pops = Some(["x".to_string()].into()),
            "regions[0].allowed_pops",
        ),
    ];
    for (mutate, field) in cases {
        let mut bad = ok.clone();
        mutate(&mut bad);
        match compute(&bad) {
            Err(SteeringError::InvalidInput { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn invalid_latency_values_are_ignored_not_fatal() {
    let mut i = input(
        vec![pop("a", 100.0), pop("b", 100.0)],
        vec![region("r", 1.0)],
        &[&[f64::NAN, 20.0]],
    );
    i.latency.set_hint("r", "a", 5.0);
    let plan = compute(&i).unwrap();
    assert_eq!(weight(&plan, "r", "a"), 1.0, "falls back to the hint");
    assert!(plan.reasons.iter().any(|r| r.contains("ignored")));
}

#[test]
fn rule_names_are_kebab_case() {
    let names: Vec<String> = [
        GuardrailRule::MaxFailoverCapacity,
        GuardrailRule::LastPopInRegion,
        GuardrailRule::LastPopForPrefix,
        GuardrailRule::DrainOverCapacity,
    ]
    .iter()
    .map(|r| r.to_string())
    .collect();
    assert_eq!(
        names,
        [
            "max-failover-capacity",
            "last-pop-in-region",
            "last-pop-for-prefix",
            "drain-over-capacity"
        ]
    );
    assert_eq!(
        serde_json::to_string(&GuardrailRule::LastPopForPrefix).unwrap(),
        "\"last-pop-for-prefix\""
    );
}

#[test]
fn input_and_plan_round_trip_through_json() {
    let mut i = input(
        vec![pop("a", 100.0), with_state(pop("b", 50.0), drained())],
        vec![region("r", 1.0)],
        &[&[1.0, 2.0]],
    );
    i.regions[0].allowed_pops = Some(["a".to_string(), "b".to_string()].into());
    let back: SteeringInput = serde_json::from_str(&serde_json::to_string(&i).unwrap()).unwrap();
    assert_eq!(back, i);
    let plan = compute(&i).unwrap();
    let back: Plan = serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
    assert_eq!(back, plan);
    let policy: SteeringPolicy = serde_json::from_str(r#"{"target_utilisation": 0.7}"#).unwrap();
    assert_eq!(policy.max_failover_capacity_share, 0.5);
    assert!(serde_json::from_str::<SteeringPolicy>(r#"{"target": 0.7}"#).is_err());
}

#[test]
fn no_pops_means_empty_weights_not_a_panic() {
    let plan = compute(&input(vec![], vec![region("r", 10.0)], &[])).unwrap();
    assert!(plan.regions["r"].is_empty());
    assert!(plan.pop_load.is_empty());
}

#[test]
fn latency_table_set_finds_columns_in_any_order() {
    let mut table = LatencyTable::default();
    table.set("r1", "a", 1.0);
    table.set("r1", "c", 3.0); // gap: no "b" yet
    table.set("r2", "b", 20.0);
    table.set("r2", "a", 10.0); // behind the row's end: found by the wrap-around
    table.set("r2", "c", 30.0);
    assert_eq!(table.pops, ["a", "c", "b"]);
    assert_eq!(table.get("r1", "a"), Some(1.0));
    assert_eq!(table.get("r1", "b"), None);
    assert_eq!(table.get("r1", "c"), Some(3.0));
    assert_eq!(table.get("r2", "a"), Some(10.0));
    assert_eq!(table.get("r2", "b"), Some(20.0));
    assert_eq!(table.get("r2", "c"), Some(30.0));
}

#[test]
fn a_row_set_at_once_equals_the_same_values_set_one_by_one() {
    let mut one_by_one = LatencyTable::default();
    let mut by_row = LatencyTable::default();
    let rows: [(&str, &[(&str, f64)]); 3] = [
        ("eu", &[("a", 10.0), ("b", 20.0), ("c", 30.0)]),
        ("us", &[("a", 80.0), ("c", 5.0)]),
        ("ap", &[("d", 7.0), ("b", 40.0), ("a", 90.0)]),
    ];
    for (region, values) in rows {
        for (pop, ms) in values {
            one_by_one.set(region, pop, *ms);
        }
        by_row.set_row(region, values.iter().map(|(p, ms)| (*p, *ms)));
    }
    for (region, values) in rows {
        for (pop, ms) in values {
            assert_eq!(by_row.get(region, pop), Some(*ms), "{region} → {pop}");
        }
    }
    assert_eq!(by_row.get("us", "b"), None, "a gap stays a gap");
    assert_eq!(by_row.pops, one_by_one.pops, "same columns in the same order");
    // Setting a row again replaces its values and adds no column.
    by_row.set_row("eu", [("a", 11.0), ("c", 31.0)]);
    assert_eq!((by_row.get("eu", "a"), by_row.get("eu", "b")), (Some(11.0), Some(20.0)));
    assert_eq!(by_row.pops.len(), 4);
}
