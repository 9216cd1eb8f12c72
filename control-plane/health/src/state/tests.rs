//! Scenario tests with a fake clock: 3 regions × 2 probers probing 4 PoPs × 2
//! endpoints once a second.

use std::time::Duration;

use super::*;
use crate::probe::ProbeOutcome;

const START: u64 = 1_700_000_000_000;
const REGIONS: [&str; 3] = ["ap-south", "eu-west", "us-east"];
const POPS: [&str; 4] = ["ams", "fra", "lon", "nyc"];
const ENDPOINTS: [&str; 2] = ["dns", "http"];

/// The policy these tests were written for: the defaults with `fall` 2 (two
/// timeouts call a clean endpoint DOWN).
fn base_policy() -> HealthPolicy {
    HealthPolicy {
        fall: 2,
        ..HealthPolicy::default()
    }
}

fn topology() -> HealthTopology {
    HealthTopology::new(POPS.map(|p| (p, ENDPOINTS)))
}

/// Which probes fail in a round: those matching every `Some` field.
#[derive(Clone, Copy, Debug, Default)]
struct Fail {
    pop: Option<&'static str>,
    region: Option<&'static str>,
    endpoint: Option<&'static str>,
    prober: Option<&'static str>,
}

impl Fail {
    fn matches(&self, pop: &str, region: &str, endpoint: &str, prober: &str) -> bool {
        self.pop.is_none_or(|p| p == pop)
            && self.region.is_none_or(|r| r == region)
            && self.endpoint.is_none_or(|e| e == endpoint)
            && self.prober.is_none_or(|p| p == prober)
    }
}

fn pop(p: &'static str) -> Fail {
    Fail {
        pop: Some(p),
        ..Fail::default()
    }
}

fn pop_from(p: &'static str, r: &'static str) -> Fail {
    Fail {
        pop: Some(p),
        region: Some(r),
        ..Fail::default()
    }
}

fn region(r: &'static str) -> Fail {
    Fail {
        region: Some(r),
        ..Fail::default()
    }
}

fn endpoint_of(p: &'static str, e: &'static str) -> Fail {
    Fail {
        pop: Some(p),
        endpoint: Some(e),
        ..Fail::default()
    }
}

/// The verdict a step expects.
#[derive(Clone, Debug)]
enum V {
    Unknown,
    Up,
    Down,
    Degraded(&'static [&'static str]),
}

impl V {
    fn verdict(&self) -> PopVerdict {
        match self {
            V::Unknown => PopVerdict::Unknown,
            V::Up => PopVerdict::Up,
            V::Down => PopVerdict::Down,
            V::Degraded(regions) => PopVerdict::Degraded {
                down_regions: regions.iter().map(|r| r.to_string()).collect(),
            },
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    /// `n` rounds, one second apart, of every prober probing every endpoint, each
    /// followed by `evaluate`; probes matching any `Fail` fail.
    Rounds(usize, Vec<Fail>),
    /// `n` rounds in which only the listed regions report.
    RoundsFrom(usize, &'static [&'static str], Vec<Fail>),
    /// Seconds pass without results; then `evaluate`.
    Silence(u64),
    /// The verdicts of all four PoPs, in `POPS` order.
    Verdicts([V; 4]),
    /// The rule of a PoP contains this text.
    Rule(&'static str, &'static str),
    Suspects(&'static [&'static str]),
    /// The events of the last `evaluate`, rendered by `render`.
    Events(&'static [&'static str]),
}

use Step::*;

const OK: Vec<Fail> = Vec::new();

struct Scenario {
    name: &'static str,
    steps: Vec<Step>,
}

struct Sim {
    state: HealthState,
    now: UnixMillis,
    events: Vec<HealthEvent>,
}

impl Sim {
    fn new(policy: HealthPolicy) -> Self {
        Self {
            state: HealthState::new(topology(), policy).unwrap(),
            now: UnixMillis(START),
            events: Vec::new(),
        }
    }

    fn round(&mut self, regions: &[&str], fails: &[Fail]) {
        self.now = self.now.saturating_add(Duration::from_secs(1));
        for pop in POPS {
            for endpoint in ENDPOINTS {
                for region in regions {
                    for n in 1..=2 {
                        let prober = format!("{region}-{n}");
                        let failed = fails.iter().any(|f| f.matches(pop, region, endpoint, &prober));
                        let o = outcome(&prober, region, pop, endpoint, self.now.0 - 100, !failed);
                        self.state.ingest(o, self.now).unwrap();
                    }
                }
            }
        }
        self.events = self.state.evaluate(self.now);
    }

    fn run(&mut self, name: &str, step: &Step) {
        match step {
            Rounds(n, fails) => (0..*n).for_each(|_| self.round(&REGIONS, fails)),
            RoundsFrom(n, regions, fails) => (0..*n).for_each(|_| self.round(regions, fails)),
            Silence(secs) => {
                self.now = self.now.saturating_add(Duration::from_secs(*secs));
                self.events = self.state.evaluate(self.now);
            }
            Verdicts(want) => {
                let got: Vec<String> = POPS
                    .iter()
                    .map(|p| self.state.verdict(p).unwrap().verdict.to_string())
                    .collect();
                let want: Vec<String> = want.iter().map(|v| v.verdict().to_string()).collect();
                assert_eq!(got, want, "{name}: verdicts of {POPS:?}");
            }
            Rule(pop, text) => {
                let rule = &self.state.verdict(pop).unwrap().rule;
                assert!(
                    rule.contains(text),
                    "{name}: rule of {pop} is {rule:?}, expected it to contain {text:?}"
                );
            }
            Suspects(want) => {
                let got: Vec<String> = self.state.suspect_regions().into_iter().map(|s| s.region).collect();
                assert_eq!(got, *want, "{name}: suspect regions");
            }
            Events(want) => {
                let got: Vec<String> = self.events.iter().map(render).collect();
                assert_eq!(got, *want, "{name}: events of the last evaluation");
            }
        }
    }
}

fn outcome(prober: &str, region: &str, pop: &str, endpoint: &str, at: u64, success: bool) -> ProbeReport {
    let latency = Duration::from_millis(20);
    ProbeReport {
        prober: prober.to_string(),
        region: region.to_string(),
        pop: pop.to_string(),
        endpoint: endpoint.to_string(),
        observed_at: UnixMillis(at),
        outcome: if success {
            ProbeOutcome::ok(latency)
        } else {
            ProbeOutcome::failed(latency, FailureClass::Timeout, format!("no answer within 2s (t={at})"))
        },
    }
}

fn render(e: &HealthEvent) -> String {
    match e {
        HealthEvent::Verdict { pop, old, new, .. } => format!("{pop}: {old} -> {new}"),
        HealthEvent::RegionSuspect { region, .. } => format!("suspect {region}"),
        HealthEvent::RegionRecovered { region, .. } => format!("recovered {region}"),
    }
}

fn scenarios() -> Vec<Scenario> {
    use V::{Degraded as G, Down as D, Unknown as U, Up as P};
    vec![
        Scenario {
            name: "a killed PoP is DOWN after `fall` failed rounds in a quorum, not after one",
            steps: vec![
                Rounds(1, OK),
                Verdicts([U, U, U, U]),
                Rounds(1, OK),
                Verdicts([P, P, P, P]),
                Events(&[
                    "ams: UNKNOWN -> UP",
                    "fra: UNKNOWN -> UP",
                    "lon: UNKNOWN -> UP",
                    "nyc: UNKNOWN -> UP",
                ]),
                Rule("ams", "up: 3 of 3 fresh regions see UP"),
                Rounds(1, vec![pop("ams")]),
                Verdicts([P, P, P, P]),
                Events(&[]),
                Rounds(1, vec![pop("ams")]),
                Verdicts([D, P, P, P]),
                Events(&["ams: UP -> DOWN"]),
                Rule("ams", "quorum: 3 of 3 fresh regions see DOWN (> 50%)"),
                Suspects(&[]),
                Rounds(1, OK),
                Verdicts([D, P, P, P]),
                Rounds(1, OK),
                Verdicts([P, P, P, P]),
                Events(&["ams: DOWN -> UP"]),
            ],
        },
        Scenario {
            name: "one endpoint down makes the PoP down",
            steps: vec![
                Rounds(2, OK),
                Rounds(2, vec![endpoint_of("fra", "dns")]),
                Verdicts([P, D, P, P]),
                Events(&["fra: UP -> DOWN"]),
            ],
        },
        Scenario {
            name: "a PoP unreachable from one region only is DEGRADED, naming that region",
            steps: vec![
                Rounds(2, OK),
                Rounds(2, vec![pop_from("ams", "eu-west")]),
                Verdicts([G(&["eu-west"]), P, P, P]),
                Events(&["ams: UP -> DEGRADED(eu-west)"]),
                Rule(
                    "ams",
                    "degraded: DOWN from eu-west only (1 of 3 fresh regions, DOWN needs > 50%)",
                ),
                Suspects(&[]),
            ],
        },
        Scenario {
            name: "one of two fresh regions is not a quorum",
            steps: vec![
                RoundsFrom(2, &["eu-west", "us-east"], OK),
                RoundsFrom(2, &["eu-west", "us-east"], vec![pop_from("ams", "eu-west")]),
                Verdicts([G(&["eu-west"]), P, P, P]),
                Rule(
                    "ams",
                    "degraded: DOWN from eu-west only (1 of 2 fresh regions, DOWN needs > 50%)",
                ),
            ],
        },
        Scenario {
            name: "two of three regions is a quorum",
            steps: vec![
                Rounds(2, OK),
                Rounds(2, vec![pop_from("lon", "eu-west"), pop_from("lon", "us-east")]),
                Verdicts([P, P, D, P]),
                Rule("lon", "quorum: 2 of 3 fresh regions see DOWN (> 50%)"),
            ],
        },
        Scenario {
            name: "one prober of a region failing cannot tip its region",
            steps: vec![
                Rounds(2, OK),
                Rounds(
                    3,
                    vec![Fail {
                        pop: Some("nyc"),
                        prober: Some("eu-west-1"),
                        ..Fail::default()
                    }],
                ),
                Verdicts([P, P, P, P]),
                Rule("nyc", "up: 2 of 2 fresh regions see UP"),
            ],
        },
        Scenario {
            name: "a region whose probers see every PoP down is suspect, turns no PoP DOWN, and recovers",
            steps: vec![
                Rounds(2, OK),
                Rounds(1, vec![region("eu-west")]),
                Events(&[]),
                Rounds(1, vec![region("eu-west")]),
                Events(&["suspect eu-west"]),
                Suspects(&["eu-west"]),
                Verdicts([P, P, P, P]),
                Rule("ams", "up: 2 of 2 fresh regions see UP"),
                Rounds(3, vec![region("eu-west")]),
                Events(&[]),
                Verdicts([P, P, P, P]),
                Rounds(1, OK),
                Events(&[]),
                Suspects(&["eu-west"]),
                Rounds(1, OK),
                Events(&["recovered eu-west"]),
                Suspects(&[]),
                Verdicts([P, P, P, P]),
            ],
        },
        Scenario {
            name: "with a region suspect, losing another region leaves PoPs UNKNOWN, not DOWN",
            steps: vec![
                Rounds(2, OK),
                Rounds(2, vec![region("eu-west")]),
                Suspects(&["eu-west"]),
                RoundsFrom(6, &["ap-south", "eu-west"], vec![region("eu-west")]),
                Verdicts([U, U, U, U]),
                Rule("ams", "unknown: 1 fresh region, need 2 (eu-west suspect, not counted)"),
            ],
        },
        Scenario {
            name: "two broken regions out of three are both suspect: fail static",
            steps: vec![
                Rounds(2, OK),
                Rounds(2, vec![region("eu-west"), region("us-east")]),
                Events(&[
                    "suspect eu-west",
                    "suspect us-east",
                    "ams: UP -> UNKNOWN",
                    "fra: UP -> UNKNOWN",
                    "lon: UP -> UNKNOWN",
                    "nyc: UP -> UNKNOWN",
                ]),
                Verdicts([U, U, U, U]),
            ],
        },
        Scenario {
            name: "a real outage seen from every region turns PoPs DOWN and nobody suspect",
            steps: vec![
                Rounds(2, OK),
                Rounds(2, vec![pop("ams"), pop("fra"), pop("lon")]),
                Events(&["ams: UP -> DOWN", "fra: UP -> DOWN", "lon: UP -> DOWN"]),
                Verdicts([D, D, D, P]),
                Suspects(&[]),
            ],
        },
        Scenario {
            name: "a suspect region recovers when the others come to agree (real outage)",
            steps: vec![
                Rounds(2, OK),
                Rounds(2, vec![region("eu-west")]),
                Suspects(&["eu-west"]),
                Rounds(1, vec![region("eu-west"), pop("ams"), pop("fra"), pop("lon")]),
                Events(&[]),
                Rounds(1, vec![region("eu-west"), pop("ams"), pop("fra"), pop("lon")]),
                Events(&[
                    "recovered eu-west",
                    "ams: UP -> DOWN",
                    "fra: UP -> DOWN",
                    "lon: UP -> DOWN",
                    "nyc: UP -> DEGRADED(eu-west)",
                ]),
                Suspects(&[]),
            ],
        },
        Scenario {
            name: "stale data decays to UNKNOWN, never to DOWN",
            steps: vec![
                Rounds(2, OK),
                Rounds(2, vec![pop("ams")]),
                Verdicts([D, P, P, P]),
                Silence(4),
                Events(&[]),
                Verdicts([D, P, P, P]),
                Silence(1),
                Verdicts([U, U, U, U]),
                Events(&[
                    "ams: DOWN -> UNKNOWN",
                    "fra: UP -> UNKNOWN",
                    "lon: UP -> UNKNOWN",
                    "nyc: UP -> UNKNOWN",
                ]),
                Rule("ams", "unknown: 0 fresh regions, need 2"),
                Silence(3_600),
                Verdicts([U, U, U, U]),
                Events(&[]),
            ],
        },
        Scenario {
            name: "when only one region stays fresh, PoPs are UNKNOWN",
            steps: vec![
                Rounds(2, OK),
                RoundsFrom(5, &["us-east"], vec![pop("ams")]),
                Verdicts([U, U, U, U]),
                Rule("fra", "unknown: 1 fresh region, need 2"),
            ],
        },
        Scenario {
            name: "after a restart PoPs stay UNKNOWN until `rise` results arrive from enough regions",
            steps: vec![
                Verdicts([U, U, U, U]),
                Rule("ams", "not evaluated yet"),
                RoundsFrom(3, &["eu-west"], OK),
                Verdicts([U, U, U, U]),
                Rule("ams", "unknown: 1 fresh region, need 2"),
                RoundsFrom(1, &["eu-west", "us-east"], OK),
                Verdicts([U, U, U, U]),
                RoundsFrom(1, &["eu-west", "us-east"], OK),
                Verdicts([P, P, P, P]),
                Rule("ams", "up: 2 of 2 fresh regions see UP"),
            ],
        },
        Scenario {
            name: "a cold start with a dead PoP reaches DOWN only after `fall` rounds",
            steps: vec![
                Rounds(1, vec![pop("nyc")]),
                Verdicts([U, U, U, U]),
                Events(&[]),
                Rounds(1, vec![pop("nyc")]),
                Verdicts([P, P, P, D]),
                Events(&[
                    "ams: UNKNOWN -> UP",
                    "fra: UNKNOWN -> UP",
                    "lon: UNKNOWN -> UP",
                    "nyc: UNKNOWN -> DOWN",
                ]),
            ],
        },
    ]
}

#[test]
fn scenarios_with_a_fake_clock() {
    for scenario in scenarios() {
        let mut sim = Sim::new(base_policy());
        for step in &scenario.steps {
            sim.run(scenario.name, step);
        }
    }
}

#[test]
fn fall_and_quorum_follow_the_policy() {
    // fall 3: two failed rounds are not enough; min_regions 3 with one region
    // silent: UNKNOWN.
    let policy = HealthPolicy {
        fall: 3,
        ..base_policy()
    };
    let mut sim = Sim::new(policy);
    sim.round(&REGIONS, &[]);
    sim.round(&REGIONS, &[]);
    sim.round(&REGIONS, &[pop("ams")]);
    sim.round(&REGIONS, &[pop("ams")]);
    assert_eq!(sim.state.verdict("ams").unwrap().verdict, PopVerdict::Up);
    sim.round(&REGIONS, &[pop("ams")]);
    assert_eq!(sim.state.verdict("ams").unwrap().verdict, PopVerdict::Down);

    let policy = HealthPolicy {
        min_regions: 3,
        ..base_policy()
    };
    let mut sim = Sim::new(policy);
    for _ in 0..2 {
        sim.round(&["eu-west", "us-east"], &[pop("ams")]);
    }
    let info = sim.state.verdict("ams").unwrap();
    assert_eq!(info.verdict, PopVerdict::Unknown);
    assert_eq!(info.rule, "unknown: 2 fresh regions, need 3");
}

#[test]
fn verdict_events_carry_time_rule_and_per_region_evidence() {
    let mut sim = Sim::new(base_policy());
    sim.round(&REGIONS, &[]);
    sim.round(&REGIONS, &[]);
    sim.round(&REGIONS, &[pop_from("ams", "eu-west"), pop_from("ams", "us-east")]);
    sim.round(&REGIONS, &[pop_from("ams", "eu-west"), pop_from("ams", "us-east")]);
    let [HealthEvent::Verdict {
        at,
        pop,
        old,
        new,
        rule,
        evidence,
    }] = sim.events.as_slice()
    else {
        panic!("one verdict event expected: {:?}", sim.events);
    };
    assert_eq!(
        (*at, pop.as_str(), old, new),
        (sim.now, "ams", &PopVerdict::Up, &PopVerdict::Down)
    );
    assert_eq!(rule, "quorum: 2 of 3 fresh regions see DOWN (> 50%)");
    assert_eq!(
        evidence,
        &[
            "ap-south: UP (ap-south-1 UP; ap-south-2 UP)",
            "eu-west: DOWN (eu-west-1 DOWN [dns: timeout, http: timeout]; eu-west-2 DOWN [dns: timeout, http: timeout])",
            "us-east: DOWN (us-east-1 DOWN [dns: timeout, http: timeout]; us-east-2 DOWN [dns: timeout, http: timeout])",
        ]
    );
    assert_eq!(sim.state.verdict("ams").unwrap().since, Some(sim.now));
    assert_eq!(sim.state.verdict("fra").unwrap().since, Some(UnixMillis(START + 2_000)));
}

#[test]
fn rejections_name_the_offending_value_and_are_counted() {
    let now = UnixMillis(START);
    let good = || outcome("p1", "eu-west", "ams", "http", START, true);
    type Tweak = fn(&mut ProbeReport);
    let cases: &[(&str, Tweak, RejectReason, &str)] = &[
        (
            "unknown pop",
            |o| o.pop = "xyz".into(),
            RejectReason::UnknownPop,
            "unknown PoP `xyz`",
        ),
        (
            "unknown endpoint",
            |o| o.endpoint = "smtp".into(),
            RejectReason::UnknownEndpoint,
            "unknown endpoint `smtp` of PoP `ams`",
        ),
        (
            "from the future",
            |o| o.observed_at = UnixMillis(START + 2_001),
            RejectReason::FromTheFuture,
            "is 2.001s in the future, more than max_future_skew 2s",
        ),
        (
            "too old",
            |o| o.observed_at = UnixMillis(START - 60_001),
            RejectReason::TooOld,
            "is 60.001s old, more than max_age 60s",
        ),
        (
            "empty prober",
            |o| o.prober.clear(),
            RejectReason::Invalid,
            "empty prober id",
        ),
        (
            "empty region",
            |o| o.region.clear(),
            RejectReason::Invalid,
            "empty region id",
        ),
        ("empty pop", |o| o.pop.clear(), RejectReason::Invalid, "empty pop id"),
        (
            "bad region id",
            |o| o.region = "EU West".into(),
            RejectReason::Invalid,
            "region id `EU West`",
        ),
        (
            "bad prober id",
            |o| o.prober = "p/1".into(),
            RejectReason::Invalid,
            "prober id `p/1`",
        ),
        (
            "failure without class",
            |o| o.outcome.success = false,
            RejectReason::Invalid,
            "success=false with failure class `none`",
        ),
        (
            "success with class",
            |o| o.outcome.class = FailureClass::Tls,
            RejectReason::Invalid,
            "success=true with failure class `tls`",
        ),
    ];
    let mut state = HealthState::new(topology(), base_policy()).unwrap();
    for (name, tweak, reason, text) in cases {
        let mut o = good();
        tweak(&mut o);
        let e = state.ingest(o, now).unwrap_err();
        assert_eq!(e.reason(), *reason, "{name}: {e}");
        assert!(
            e.to_string().contains(text),
            "{name}: {e:?} displays as {:?}, expected {text:?}",
            e.to_string()
        );
    }
    // At the limits: accepted.
    for at in [START + 2_000, START - 60_000] {
        let mut o = good();
        o.observed_at = UnixMillis(at);
        o.prober = format!("p{at}");
        state.ingest(o, now).unwrap();
    }
    let stats = state.stats();
    assert_eq!(stats.ingested, 2);
    let rejected: Vec<(RejectReason, u64)> = stats.rejected.into_iter().collect();
    assert_eq!(
        rejected,
        [
            (RejectReason::UnknownPop, 1),
            (RejectReason::UnknownEndpoint, 1),
            (RejectReason::FromTheFuture, 1),
            (RejectReason::TooOld, 1),
            (RejectReason::Invalid, 7),
        ]
    );
    // Rejected results left no trace: no region or prober was registered from them.
    assert!(state
        .matrix(now)
        .iter()
        .all(|row| row.regions.iter().all(|c| c.region == "eu-west")));
}

#[test]
fn out_of_order_results_are_recorded_but_do_not_flip_hysteresis() {
    let mut state = HealthState::new(topology(), base_policy()).unwrap();
    let now = UnixMillis(START + 20_000);
    for region in ["eu-west", "us-east"] {
        for at in [START + 18_000, START + 19_000] {
            for pop in POPS {
                for endpoint in ENDPOINTS {
                    state
                        .ingest(outcome(&format!("{region}-1"), region, pop, endpoint, at, true), now)
                        .unwrap();
                }
            }
        }
    }
    state.evaluate(now);
    assert_eq!(state.verdict("ams").unwrap().verdict, PopVerdict::Up);
    // A buffer replayed after a reconnect: older failures, and a duplicate.
    for (region, at) in [
        ("eu-west", 10_000),
        ("eu-west", 11_000),
        ("us-east", 12_000),
        ("us-east", 13_000),
        ("us-east", 19_000),
    ] {
        let effect = state
            .ingest(
                outcome(&format!("{region}-1"), region, "ams", "http", START + at, false),
                now,
            )
            .unwrap();
        assert!(!effect.transitioned);
    }
    assert!(state.evaluate(now).is_empty());
    assert_eq!(state.verdict("ams").unwrap().verdict, PopVerdict::Up);
    let stats = state.stats();
    assert_eq!((stats.ingested, stats.out_of_order, stats.transitions), (37, 5, 16));
    // They are visible in explain, marked as not applied, newest first.
    let explanation = state.explain("ams", now).unwrap();
    let eu = &explanation
        .regions
        .iter()
        .find(|r| r.region == "eu-west")
        .unwrap()
        .probers[0];
    let http = eu.endpoints.iter().find(|e| e.endpoint == "http").unwrap();
    let recent: Vec<(u64, bool, bool)> = http
        .recent
        .iter()
        .map(|r| (r.age.as_millis() as u64, r.outcome.success, r.applied))
        .collect();
    assert_eq!(
        recent,
        [
            (1_000, true, true),
            (2_000, true, true),
            (9_000, false, false),
            (10_000, false, false)
        ]
    );
    assert_eq!(
        (http.state, http.consecutive_successes, http.consecutive_failures),
        (Reachability::Up, 2, 0)
    );
}

#[test]
fn ingest_reports_transitions_for_fast_failover() {
    let mut state = HealthState::new(topology(), base_policy()).unwrap();
    let flags: Vec<bool> = [true, true, false, false, false]
        .iter()
        .enumerate()
        .map(|(i, &ok)| {
            let at = START + 1_000 * i as u64;
            state
                .ingest(outcome("p1", "eu-west", "ams", "http", at, ok), UnixMillis(at))
                .unwrap()
                .transitioned
        })
        .collect();
    assert_eq!(flags, [false, true, false, true, false]);
}

#[test]
fn a_first_failure_asks_every_region_to_confirm_once_per_window() {
    let mut state = HealthState::new(topology(), base_policy()).unwrap();
    let mut confirm = |prober: &str, region: &str, endpoint: &str, at: u64, ok: bool| {
        state
            .ingest(outcome(prober, region, "ams", endpoint, at, ok), UnixMillis(at))
            .unwrap()
            .confirm
    };
    let t = START;
    assert!(!confirm("p1", "eu-west", "http", t, true), "a success asks nothing");
    assert!(
        confirm("p1", "eu-west", "http", t + 100, false),
        "the first failure asks"
    );
    assert!(
        !confirm("p1", "eu-west", "http", t + 200, false),
        "its second failure does not"
    );
    // Another region's first failure within the window: already asked.
    assert!(!confirm("p1", "us-east", "http", t + 300, false));
    // Another endpoint is its own question.
    assert!(confirm("p1", "us-east", "dns", t + 300, false));
    // After the window, a new incident (UP again, then a failure) asks again.
    assert!(!confirm("p1", "eu-west", "http", t + 1_200, true));
    assert!(!confirm("p1", "eu-west", "http", t + 1_250, true));
    assert!(confirm("p1", "eu-west", "http", t + 1_300, false));
    // A view already DOWN does not ask: its failures are not news.
    for i in 0..3 {
        confirm("p2", "ap-south", "http", t + 2_000 + i, false);
    }
    assert!(!confirm("p2", "ap-south", "http", t + 3_500, false));
    assert_eq!(state.stats().confirmations, 3);
    // A late probe asks through the same gate; unknown targets are rejected.
    assert_eq!(state.suspect("ams", "dns", UnixMillis(t + 3_600)), Ok(true));
    assert_eq!(state.suspect("ams", "dns", UnixMillis(t + 3_700)), Ok(false));
    assert!(state.suspect("nowhere", "dns", UnixMillis(t)).is_err());
    assert!(state.suspect("ams", "nothing", UnixMillis(t)).is_err());
}

#[test]
fn short_outages_the_regions_agree_on_are_not_learnt_as_loss_but_isolated_errors_are() {
    let mut state = HealthState::new(topology(), base_policy()).unwrap();
    let mut at = START;
    let mut feed = |state: &mut HealthState, region: &str, ok: bool| {
        at += 100;
        let mut r = outcome("p1", region, "ams", "http", at, ok);
        if !ok {
            r.outcome = ProbeOutcome::failed(Duration::from_millis(1), FailureClass::Refused, "refused");
        }
        state.ingest(r, UnixMillis(at)).unwrap();
    };
    let hard_loss = |state: &HealthState, region: &str| {
        let e = state.explain("ams", UnixMillis(START + 100_000)).unwrap();
        let r = e.regions.iter().find(|r| r.region == region).unwrap();
        let ep = r.probers[0].endpoints.iter().find(|x| x.endpoint == "http").unwrap();
        (ep.evidence.hard_loss, ep.evidence.hard_failures_needed, ep.state)
    };
    for _ in 0..3 {
        for region in REGIONS {
            feed(&mut state, region, true);
        }
    }
    // A short outage every region saw (two refused each), then back.
    for region in REGIONS {
        feed(&mut state, region, false);
        feed(&mut state, region, false);
    }
    for region in REGIONS {
        assert_eq!(hard_loss(&state, region).2, Reachability::Down, "{region}");
    }
    for _ in 0..2 {
        for region in REGIONS {
            feed(&mut state, region, true);
        }
    }
    // Not loss: the next refused connection still calls DOWN at once.
    let (loss, needed, view) = hard_loss(&state, "eu-west");
    assert_eq!(view, Reachability::Up);
    assert_eq!(loss, crate::evidence::HARD_FLOOR, "an outage others saw is not loss");
    assert_eq!(needed, 1);
    // An isolated refused connection seen by one region while the others see UP is
    // loss: that region needs more evidence next time.
    feed(&mut state, "eu-west", false);
    feed(&mut state, "eu-west", true);
    feed(&mut state, "eu-west", true);
    let (loss, needed, _) = hard_loss(&state, "eu-west");
    assert!(loss > 0.01, "{loss}");
    assert!(needed > 1, "{needed}");
}

#[test]
fn topology_changes_drop_removed_pops_and_endpoints_and_keep_the_rest() {
    let mut sim = Sim::new(base_policy());
    sim.round(&REGIONS, &[]);
    sim.round(&REGIONS, &[]);
    sim.round(&REGIONS, &[endpoint_of("fra", "dns")]);
    sim.round(&REGIONS, &[endpoint_of("fra", "dns")]);
    assert_eq!(sim.state.verdict("fra").unwrap().verdict, PopVerdict::Down);

    // Remove `ams`, remove the failing endpoint of `fra`, add `sin`.
    let smaller = HealthTopology::new([
        ("fra", vec!["http"]),
        ("lon", vec!["dns", "http"]),
        ("nyc", vec!["dns", "http"]),
        ("sin", vec!["http"]),
    ]);
    sim.state.set_topology(smaller);
    assert_eq!(sim.state.verdict("ams"), None);
    assert!(sim.state.explain("ams", sim.now).is_none());
    // Kept PoPs keep their verdict until the next evaluation...
    assert_eq!(sim.state.verdict("fra").unwrap().verdict, PopVerdict::Down);
    assert_eq!(sim.state.verdict("sin").unwrap().verdict, PopVerdict::Unknown);
    // ...which sees `fra` without its failing endpoint, with the kept `http` state.
    let events: Vec<String> = sim.state.evaluate(sim.now).iter().map(render).collect();
    assert_eq!(events, ["fra: DOWN -> UP"]);
    let pops: Vec<String> = sim.state.matrix(sim.now).into_iter().map(|r| r.pop).collect();
    assert_eq!(pops, ["fra", "lon", "nyc", "sin"]);
    let fra = sim.state.explain("fra", sim.now).unwrap();
    assert!(fra
        .regions
        .iter()
        .flat_map(|r| &r.probers)
        .all(|p| p.endpoints.len() == 1 && p.endpoints[0].endpoint == "http"));

    let o = outcome("eu-west-1", "eu-west", "ams", "http", sim.now.0, true);
    assert_eq!(
        sim.state.ingest(o, sim.now).unwrap_err().reason(),
        RejectReason::UnknownPop
    );
    let o = outcome("eu-west-1", "eu-west", "fra", "dns", sim.now.0, true);
    assert_eq!(
        sim.state.ingest(o, sim.now).unwrap_err().reason(),
        RejectReason::UnknownEndpoint
    );

    // An endpoint added back starts from nothing: `fra` is not UP until it is probed.
    // `ams` comes back as a new PoP, `sin` goes.
    sim.state.set_topology(topology());
    let events: Vec<String> = sim.state.evaluate(sim.now).iter().map(render).collect();
    assert_eq!(events, ["fra: UP -> UNKNOWN"]);
    assert_eq!(
        sim.state.verdict("fra").unwrap().rule,
        "unknown: 0 fresh regions, need 2"
    );
    sim.round(&REGIONS, &[]);
    assert_eq!(sim.state.verdict("fra").unwrap().verdict, PopVerdict::Unknown);
    assert_eq!(sim.state.verdict("ams").unwrap().verdict, PopVerdict::Unknown);
    sim.round(&REGIONS, &[]);
    assert_eq!(sim.state.verdict("fra").unwrap().verdict, PopVerdict::Up);
    assert_eq!(sim.state.verdict("ams").unwrap().verdict, PopVerdict::Up);
    assert_eq!(sim.state.verdict("sin"), None);
}

#[test]
fn matrix_shows_state_latency_freshness_and_suspects() {
    let mut sim = Sim::new(HealthPolicy {
        latency_alpha: 0.5,
        ..base_policy()
    });
    sim.round(&REGIONS, &[]);
    sim.round(&REGIONS, &[]);
    sim.round(&REGIONS, &[region("eu-west")]);
    sim.round(&REGIONS, &[region("eu-west")]);
    // One more sample for us-east → ams at 40 ms: EWMA 0.5 × 40 + 0.5 × 20 = 30 ms.
    let mut o = outcome("us-east-1", "us-east", "ams", "http", sim.now.0 + 500, true);
    o.outcome.latency = Duration::from_millis(40);
    sim.state.ingest(o, sim.now).unwrap();
    let now = sim.now.saturating_add(Duration::from_millis(1_500));
    let matrix = sim.state.matrix(now);
    let ams = &matrix[0];
    assert_eq!(ams.pop, "ams");
    assert_eq!(ams.verdict.verdict, PopVerdict::Up);
    type Cell<'a> = (&'a str, Reachability, Option<Duration>, Option<Duration>, bool);
    let cells: Vec<Cell> = ams
        .regions
        .iter()
        .map(|c| (c.region.as_str(), c.state, c.latency, c.freshest_age, c.suspect))
        .collect();
    let ms = Duration::from_millis;
    assert_eq!(
        cells,
        [
            ("ap-south", Reachability::Up, Some(ms(20)), Some(ms(1_600)), false),
            ("eu-west", Reachability::Down, Some(ms(20)), Some(ms(1_600)), true),
            ("us-east", Reachability::Up, Some(ms(30)), Some(ms(1_000)), false),
        ]
    );
    assert_eq!(sim.state.latency_estimate("ams", "us-east"), Some(ms(30)));
    assert_eq!(sim.state.latency_estimate("ams", "mars"), None);
    // The snapshot steering computes on says the same, for every pair.
    let snapshot = sim.state.snapshot();
    assert_eq!(snapshot.latency_estimate("ams", "us-east"), Some(ms(30)));
    assert_eq!(snapshot.latency_estimate("ams", "mars"), None);
    for region in ["ap-south", "eu-west", "us-east"] {
        for pop in ["ams", "fra"] {
            assert_eq!(
                snapshot.latency_estimate(pop, region),
                sim.state.latency_estimate(pop, region),
                "{region} → {pop}"
            );
        }
    }
    assert_eq!(snapshot.verdict("ams"), PopVerdict::Up);
    assert_eq!(
        snapshot.verdict("nowhere"),
        PopVerdict::Unknown,
        "missing data is UNKNOWN, never DOWN"
    );
    let suspects = sim.state.suspect_regions();
    assert_eq!(suspects.len(), 1);
    assert_eq!((suspects[0].region.as_str(), suspects[0].down_share), ("eu-west", 1.0));
}

#[test]
fn explain_lists_regions_probers_and_endpoints_in_order() {
    let mut sim = Sim::new(HealthPolicy {
        history: 3,
        ..base_policy()
    });
    for _ in 0..4 {
        sim.round(&REGIONS, &[pop_from("lon", "ap-south")]);
    }
    let e = sim.state.explain("lon", sim.now).unwrap();
    assert_eq!(
        e.verdict.verdict,
        PopVerdict::Degraded {
            down_regions: ["ap-south".to_string()].into()
        }
    );
    let shape: Vec<(String, Reachability, bool, Vec<String>)> = e
        .regions
        .iter()
        .map(|r| {
            (
                r.region.clone(),
                r.state,
                r.counted,
                r.probers.iter().map(|p| format!("{}={}", p.prober, p.view)).collect(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (
                "ap-south".into(),
                Reachability::Down,
                true,
                vec!["ap-south-1=DOWN".into(), "ap-south-2=DOWN".into()]
            ),
            (
                "eu-west".into(),
                Reachability::Up,
                true,
                vec!["eu-west-1=UP".into(), "eu-west-2=UP".into()]
            ),
            (
                "us-east".into(),
                Reachability::Up,
                true,
                vec!["us-east-1=UP".into(), "us-east-2=UP".into()]
            ),
        ]
    );
    let dns = &e.regions[0].probers[0].endpoints[0];
    assert_eq!(dns.endpoint, "dns");
    assert_eq!(
        (
            dns.state,
            dns.fresh,
            dns.consecutive_failures,
            dns.consecutive_successes
        ),
        (Reachability::Down, true, 4, 0)
    );
    let recent: Vec<(u64, FailureClass)> = dns
        .recent
        .iter()
        .map(|r| (r.age.as_millis() as u64, r.outcome.class))
        .collect();
    assert_eq!(
        recent,
        [
            (100, FailureClass::Timeout),
            (1_100, FailureClass::Timeout),
            (2_100, FailureClass::Timeout)
        ]
    );
    // The prober's detail is kept as it was sent, for `explain`.
    assert_eq!(
        dns.recent[0].outcome.detail,
        format!("no answer within 2s (t={})", START + 3_900)
    );
    // Serializes for `-o json`.
    let json = serde_json::to_string(&e).unwrap();
    assert!(
        json.contains(r#""state":"degraded","down_regions":["ap-south"]"#),
        "{json}"
    );
}

#[test]
fn policy_changes_take_effect_and_are_validated() {
    let mut sim = Sim::new(base_policy());
    let bad = HealthPolicy {
        quorum: 2.0,
        ..base_policy()
    };
    assert_eq!(sim.state.set_policy(bad.clone()).unwrap_err().field, "quorum");
    assert_eq!(HealthState::new(topology(), bad).unwrap_err().field, "quorum");
    sim.state
        .set_policy(HealthPolicy {
            rise: 1,
            history: 1,
            ..base_policy()
        })
        .unwrap();
    sim.round(&REGIONS, &[]);
    sim.round(&REGIONS, &[]);
    assert_eq!(sim.state.verdict("ams").unwrap().verdict, PopVerdict::Up);
    let e = sim.state.explain("ams", sim.now).unwrap();
    assert_eq!(e.regions[0].probers[0].endpoints[0].recent.len(), 1);
}
