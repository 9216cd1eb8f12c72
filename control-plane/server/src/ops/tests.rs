//! The operations against an in-memory store, a fixed health snapshot and a fake
//! clock: every outcome and every typed error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use meridian_core::records::{DrainIntent, PlanPin, StoredPlan};
use meridian_core::topology::TopologyDoc;
use meridian_core::{Actor, Identity};
use meridian_engine::{EventKind, Intents, OperatorAction};
use meridian_health::{HealthSnapshot, PopVerdict};
use meridian_steering::{GuardrailRule, Scenario};
use meridian_store::embedded::EmbeddedStore;
use meridian_store::{Fence, Store, StoreError};
use tokio::sync::watch;

use super::*;
use crate::topology::AppliedTopology;

const TOPOLOGY: &str = r#"
[[pops]]
id = "fra1"
capacity = 1000
ipv4 = ["192.0.2.1"]
endpoints = [{ name = "tcp", kind = "tcp", address = "192.0.2.1:80" }]

[[pops]]
id = "ams1"
capacity = 200
ipv4 = ["192.0.2.2"]
endpoints = [{ name = "tcp", kind = "tcp", address = "192.0.2.2:80" }]

[[regions]]
id = "eu-west"
demand = 600
client_prefixes = ["10.1.0.0/16"]
latency_hints = { fra1 = "10ms", ams1 = "15ms" }
"#;

struct FakeClock(AtomicU64);

impl Clock for FakeClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct FixedHealth(HealthSnapshot);

impl HealthSource for FixedHealth {
    fn snapshot(&self) -> HealthSnapshot {
        self.0.clone()
    }
}

struct Fixture {
    ops: Operations,
    fence: Fence,
    clock: Arc<FakeClock>,
    intents: watch::Sender<Intents>,
    alice: Caller,
}

async fn fixture() -> Fixture {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let keys = Keys::new("/t");
    // This test process is "the leader": the leader key's create revision is the fence.
    store.put(&keys.leader(), b"{}".to_vec(), None).await.unwrap();
    let leader = store.get(&keys.leader()).await.unwrap().unwrap();
    let fence = Fence {
        key: keys.leader(),
        revision: leader.create_revision,
    };
    let doc = TopologyDoc::from_toml(TOPOLOGY).unwrap();
    let (_, topology) = watch::channel(AppliedTopology {
        doc: Arc::new(doc),
        revision: 2,
    });
    let (intents_tx, intents) = watch::channel(Intents::default());
    let health = HealthSnapshot {
        verdicts: [
            ("fra1".to_string(), PopVerdict::Up),
            ("ams1".to_string(), PopVerdict::Up),
        ]
        .into(),
        ..HealthSnapshot::default()
    };
    let clock = Arc::new(FakeClock(AtomicU64::new(1_700_000_000_000)));
    let ops = Operations {
        store,
        keys,
        replica: "cp-test".into(),
        topology,
        intents,
        health: Arc::new(FixedHealth(health)),
        log: Arc::new(EventLog::default()),
        clock: clock.clone(),
    };
    Fixture {
        ops,
        fence,
        clock,
        intents: intents_tx,
        alice: Caller {
            identity: Identity::new("alice@ops-1").unwrap(),
            role: Some("operator".into()),
        },
    }
}

fn drain(pop: &str, force: bool) -> DrainCommand {
    DrainCommand {
        pop: pop.into(),
        reason: "fibre cut".into(),
        force,
        regions: Vec::new(),
    }
}

async fn stored_drain(f: &Fixture, pop: &str) -> Option<DrainIntent> {
    let kv = f.ops.store.get(&f.ops.keys.drain(pop)).await.unwrap()?;
    Some(serde_json::from_slice(&kv.value).unwrap())
}

#[tokio::test]
async fn a_drain_is_stored_with_who_and_when_and_recorded_as_an_event() {
    let f = fixture().await;
    // ams1 carries nothing at this demand: draining it is allowed.
    let out = f.ops.drain(&f.alice, &f.fence, drain("ams1", false)).await.unwrap();
    assert_eq!(
        (out.kind, out.pop.as_str(), out.forced_past.len()),
        ("drain", "ams1", 0)
    );
    assert_eq!(out.actor, Actor::Operator(f.alice.identity.clone()));
    assert_eq!(out.at_unix_ms, 1_700_000_000_000, "time comes from the clock");
    let intent = stored_drain(&f, "ams1").await.expect("stored");
    assert_eq!(intent.requested_by, "alice@ops-1");
    assert_eq!(intent.reason, "fibre cut");
    let events = f.ops.log.list(10, Some("ams1"));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.actor.to_string(), "operator:alice@ops-1");
    assert!(matches!(
        &events[0].event.kind,
        EventKind::Operator(OperatorAction::Drained { forced_past: None, .. })
    ));
    // The same drain again (before the intents follower saw the first) is refused by
    // the store write itself.
    let again = f.ops.drain(&f.alice, &f.fence, drain("ams1", false)).await.unwrap_err();
    assert!(matches!(again, OpError::AlreadyExists(_)), "{again}");
}

#[tokio::test]
async fn a_drain_past_capacity_is_refused_naming_the_rule_unless_forced() {
    let f = fixture().await;
    let err = f.ops.drain(&f.alice, &f.fence, drain("fra1", false)).await.unwrap_err();
    match &err {
        OpError::Refused { pop, rule, .. } => {
            assert_eq!((pop.as_str(), *rule), ("fra1", GuardrailRule::DrainOverCapacity))
        }
        other => panic!("want a refusal, got {other:?}"),
    }
    assert!(err.to_string().contains("drain-over-capacity"), "{err}");
    assert!(stored_drain(&f, "fra1").await.is_none(), "a refusal writes nothing");
    // The refusal itself is recorded: who asked, what, and the rule, as they were told.
    let refusals = f.ops.log.list(10, None);
    assert_eq!(refusals.len(), 1);
    let refusal = &refusals[0].event;
    assert_eq!((refusal.kind_name(), refusal.pop()), ("refused", Some("fra1")));
    assert_eq!(refusal.actor.to_string(), "operator:alice@ops-1");
    assert!(
        refusal.message().contains("drain-over-capacity"),
        "{}",
        refusal.message()
    );
    let forced = f.ops.drain(&f.alice, &f.fence, drain("fra1", true)).await.unwrap();
    assert_eq!(forced.forced_past, vec![GuardrailRule::DrainOverCapacity]);
    assert!(forced.summary.contains("forced past guardrail drain-over-capacity"));
    assert_eq!(
        stored_drain(&f, "fra1").await.unwrap().forced_past.as_deref(),
        Some("drain-over-capacity")
    );
    let events = f.ops.log.list(10, None);
    assert_eq!(
        events[1].event.evidence(),
        vec!["forced past guardrail drain-over-capacity".to_string()]
    );
}

#[tokio::test]
async fn bad_drains_get_typed_errors() {
    let f = fixture().await;
    let unknown = f
        .ops
        .drain(&f.alice, &f.fence, drain("nowhere", false))
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, OpError::NotFound(ref m) if m.contains("nowhere")),
        "{unknown}"
    );
    let mut no_reason = drain("ams1", false);
    no_reason.reason = "  ".into();
    let err = f.ops.drain(&f.alice, &f.fence, no_reason).await.unwrap_err();
    assert!(matches!(err, OpError::Invalid { field: "reason", .. }), "{err}");
    let mut regions = drain("ams1", false);
    regions.regions = vec!["mars".into()];
    let err = f.ops.drain(&f.alice, &f.fence, regions).await.unwrap_err();
    assert!(
        matches!(err, OpError::Invalid { field: "regions", ref problem } if problem.contains("`mars`")),
        "{err}"
    );
    // The drain set is read from the store, not from the intents follower's memory.
    f.ops.drain(&f.alice, &f.fence, drain("ams1", false)).await.unwrap();
    assert!(f.intents.borrow().drains.is_empty(), "the follower has not seen it");
    let err = f.ops.drain(&f.alice, &f.fence, drain("ams1", false)).await.unwrap_err();
    assert!(matches!(err, OpError::AlreadyExists(_)), "{err}");
}

#[tokio::test]
async fn a_deposed_leader_writes_nothing() {
    let f = fixture().await;
    let stale = Fence {
        key: f.fence.key.clone(),
        revision: f.fence.revision + 100,
    };
    let err = f.ops.drain(&f.alice, &stale, drain("ams1", false)).await.unwrap_err();
    assert!(matches!(err, OpError::Store(StoreError::FenceLost { .. })), "{err}");
    assert!(stored_drain(&f, "ams1").await.is_none());
}

#[tokio::test]
async fn undrain_needs_a_drain() {
    let f = fixture().await;
    let cmd = || UndrainCommand {
        pop: "ams1".into(),
        reason: "fixed".into(),
    };
    let err = f.ops.undrain(&f.alice, &f.fence, cmd()).await.unwrap_err();
    assert!(
        matches!(err, OpError::NotFound(ref m) if m.contains("not drained")),
        "{err}"
    );
    f.ops.drain(&f.alice, &f.fence, drain("ams1", false)).await.unwrap();
    f.clock.0.store(1_700_000_000_500, Ordering::SeqCst);
    let out = f.ops.undrain(&f.alice, &f.fence, cmd()).await.unwrap();
    assert_eq!((out.kind, out.at_unix_ms), ("undrain", 1_700_000_000_500));
    assert!(stored_drain(&f, "ams1").await.is_none());
    let kinds: Vec<&str> = f.ops.log.list(10, None).iter().map(|e| e.event.kind_name()).collect();
    assert_eq!(
        kinds,
        ["refused", "drain", "undrain"],
        "undraining what is not drained is refused and recorded"
    );
}

fn plan(reason: &str) -> StoredPlan {
    StoredPlan {
        version: 0,
        created_at_unix_ms: 1,
        published_by: "cp-test".into(),
        topology_revision: 2,
        dns_ttl_seconds: 20,
        regions: Vec::new(),
        pops: Vec::new(),
        anycast: Vec::new(),
        reasons: vec![reason.into()],
        guardrails: Vec::new(),
        restored_from: None,
        default_region: None,
        epoch: String::new(),
        content_hash: String::new(),
    }
}

#[tokio::test]
async fn restore_pins_and_republishes_then_resume_lifts_the_pin() {
    let f = fixture().await;
    let (store, keys) = (f.ops.store.as_ref(), &f.ops.keys);
    crate::plans::publish(store, keys, &f.fence, plan("one")).await.unwrap();
    crate::plans::publish(store, keys, &f.fence, plan("two")).await.unwrap();
    let missing = f
        .ops
        .restore_plan(
            &f.alice,
            &f.fence,
            RestorePlanCommand {
                version: 9,
                reason: "x".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(missing, OpError::NotFound(ref m) if m.contains("version 9")),
        "{missing}"
    );
    let restored = f
        .ops
        .restore_plan(
            &f.alice,
            &f.fence,
            RestorePlanCommand {
                version: 1,
                reason: "bad push".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!((restored.version, restored.restored_from), (3, Some(1)));
    assert_eq!(
        restored.reasons,
        vec!["restored from version 1 by alice@ops-1: bad push".to_string()]
    );
    let pin: PlanPin = serde_json::from_slice(&store.get(&keys.plan_pin()).await.unwrap().unwrap().value).unwrap();
    assert_eq!((pin.version, pin.requested_by.as_str()), (1, "alice@ops-1"));
    let resume = || ResumeSteeringCommand { reason: "ok".into() };
    assert!(f.ops.resume_steering(&f.alice, &f.fence, resume()).await.unwrap());
    assert!(
        !f.ops.resume_steering(&f.alice, &f.fence, resume()).await.unwrap(),
        "nothing pinned any more"
    );
    let kinds: Vec<&str> = f.ops.log.list(10, None).iter().map(|e| e.event.kind_name()).collect();
    assert_eq!(
        kinds,
        ["refused", "plan_restored", "steering_resumed"],
        "the missing version is a recorded refusal; a no-op resume records nothing"
    );
}

#[tokio::test]
async fn apply_lists_every_error_dry_runs_anywhere_and_writes_only_as_leader() {
    let f = fixture().await;
    let cmd = |toml: &str, dry_run| ApplyTopologyCommand {
        toml: toml.into(),
        reason: "initial".into(),
        dry_run,
    };
    let bad = f
        .ops
        .apply_topology(&f.alice, None, cmd("[[pops]]\nid = \"Bad Id\"\ncapacity = -1\n", true))
        .await
        .unwrap();
    assert!(!bad.applied);
    assert!(bad.errors.len() >= 2, "every error is listed: {:?}", bad.errors);
    assert!(bad.errors.iter().any(|e| e.contains("pops[0]")), "{:?}", bad.errors);
    let dry = f.ops.apply_topology(&f.alice, None, cmd(TOPOLOGY, true)).await.unwrap();
    assert!(!dry.applied && !dry.diff.is_empty() && dry.errors.is_empty(), "{dry:?}");
    let err = f
        .ops
        .apply_topology(&f.alice, None, cmd(TOPOLOGY, false))
        .await
        .unwrap_err();
    assert!(matches!(err, OpError::FailedPrecondition(_)), "{err}");
    let done = f
        .ops
        .apply_topology(&f.alice, Some(&f.fence), cmd(TOPOLOGY, false))
        .await
        .unwrap();
    assert!(done.applied && done.revision > 0);
    let events = f.ops.log.list(10, None);
    let kinds: Vec<&str> = events.iter().map(|e| e.event.kind_name()).collect();
    assert_eq!(
        kinds,
        ["refused", "topology_applied"],
        "a follower's write is refused and recorded; a dry run is not"
    );
    assert_eq!(events[1].event.evidence(), done.diff);
}

#[tokio::test]
async fn what_if_answers_without_writing() {
    let f = fixture().await;
    // fra1 is most of the capacity: losing it would pass the failover cap, so the
    // plan fails open (fra1 keeps serving) and says which rule fired.
    let (plan, fired) = f.ops.what_if(&Scenario::Down("fra1".into())).unwrap();
    assert!(fired.iter().any(|g| g.contains("max-failover-capacity")), "{fired:?}");
    let eu = plan.regions.iter().find(|r| r.region == "eu-west").unwrap();
    assert!(eu.pops.iter().any(|w| w.pop == "fra1" && w.weight > 0.0), "{eu:?}");
    let err = f.ops.what_if(&Scenario::Drain("nowhere".into())).unwrap_err();
    assert!(matches!(err, OpError::NotFound(_)), "{err}");
    assert_eq!(f.ops.store.get(&f.ops.keys.plan_current()).await.unwrap(), None);
}

/// Three PoPs of 1,000 with 1,500 of demand at 80 % target: any one can be drained
/// (2 × 800 ≥ 1,500), no two together (800 < 1,500).
const THREE_POPS: &str = r#"
[[pops]]
id = "fra1"
capacity = 1000
ipv4 = ["192.0.2.1"]
endpoints = [{ name = "tcp", kind = "tcp", address = "192.0.2.1:80" }]

[[pops]]
id = "ams1"
capacity = 1000
ipv4 = ["192.0.2.2"]
endpoints = [{ name = "tcp", kind = "tcp", address = "192.0.2.2:80" }]

[[pops]]
id = "iad1"
capacity = 1000
ipv4 = ["192.0.2.3"]
endpoints = [{ name = "tcp", kind = "tcp", address = "192.0.2.3:80" }]

[[regions]]
id = "eu-west"
demand = 1500
client_prefixes = ["10.1.0.0/16"]
latency_hints = { fra1 = "10ms", ams1 = "15ms", iad1 = "80ms" }
"#;

async fn three_pop_fixture() -> Fixture {
    let mut f = fixture().await;
    let (_, topology) = watch::channel(AppliedTopology {
        doc: Arc::new(TopologyDoc::from_toml(THREE_POPS).unwrap()),
        revision: 2,
    });
    f.ops.topology = topology;
    f.ops.health = Arc::new(FixedHealth(HealthSnapshot {
        verdicts: ["fra1", "ams1", "iad1"]
            .into_iter()
            .map(|p| (p.to_string(), PopVerdict::Up))
            .collect(),
        ..HealthSnapshot::default()
    }));
    f
}

#[tokio::test]
async fn two_concurrent_drains_that_together_break_capacity_exactly_one_lands() {
    let f = three_pop_fixture().await;
    let bob = Caller {
        identity: Identity::new("bob@ops-2").unwrap(),
        role: Some("operator".into()),
    };
    let (a, b) = tokio::join!(
        f.ops.drain(&f.alice, &f.fence, drain("fra1", false)),
        f.ops.drain(&bob, &f.fence, drain("ams1", false)),
    );
    let (landed, refused) = match (a, b) {
        (Ok(landed), Err(refused)) | (Err(refused), Ok(landed)) => (landed, refused),
        (a, b) => panic!("exactly one drain must land: {a:?} / {b:?}"),
    };
    assert!(
        matches!(
            refused,
            OpError::Refused {
                rule: GuardrailRule::DrainOverCapacity,
                ..
            }
        ),
        "the other is refused naming the rule: {refused}"
    );
    let set = f.ops.read_drain_set().await.unwrap();
    assert_eq!(
        set.drains.keys().collect::<Vec<_>>(),
        vec![&landed.pop],
        "only the one that landed is stored"
    );
}

#[tokio::test]
async fn a_drain_decided_on_a_stale_drain_set_does_not_land() {
    let f = three_pop_fixture().await;
    // Both drains look at the same (empty) drain set, as two racing leaders' requests
    // or a new leader still loading intents would.
    let stale = f.ops.read_drain_set().await.unwrap();
    let first = f
        .ops
        .try_drain(&f.alice, &f.fence, &drain("fra1", false), &stale)
        .await
        .unwrap();
    assert!(first.is_some(), "the first lands");
    let second = f
        .ops
        .try_drain(&f.alice, &f.fence, &drain("ams1", false), &stale)
        .await
        .unwrap();
    assert!(
        second.is_none(),
        "the write compares the drain set's version and refuses the stale decision"
    );
    assert!(f.ops.store.get(&f.ops.keys.drain("ams1")).await.unwrap().is_none());
    // Decided again on the real set, the guardrail refuses it by name.
    let err = f.ops.drain(&f.alice, &f.fence, drain("ams1", false)).await.unwrap_err();
    assert!(
        matches!(
            err,
            OpError::Refused {
                rule: GuardrailRule::DrainOverCapacity,
                ..
            }
        ),
        "{err}"
    );
    // An undrain changes the set's version too, and then the drain fits again.
    f.ops
        .undrain(
            &f.alice,
            &f.fence,
            UndrainCommand {
                pop: "fra1".into(),
                reason: "fixed".into(),
            },
        )
        .await
        .unwrap();
    let after = f.ops.read_drain_set().await.unwrap();
    assert!(after.version > stale.version && after.drains.is_empty());
    f.ops.drain(&f.alice, &f.fence, drain("ams1", false)).await.unwrap();
}

#[tokio::test]
async fn steering_cannot_publish_over_a_pin_it_has_not_seen() {
    let f = fixture().await;
    let (store, keys) = (f.ops.store.as_ref(), &f.ops.keys);
    crate::plans::publish_unpinned(store, keys, &f.fence, plan("one"), false)
        .await
        .unwrap();
    f.ops
        .restore_plan(
            &f.alice,
            &f.fence,
            RestorePlanCommand {
                version: 1,
                reason: "hold".into(),
            },
        )
        .await
        .unwrap();
    // The steering loop's memory still says "not pinned"; the write says otherwise.
    let err = crate::plans::publish_unpinned(store, keys, &f.fence, plan("would override"), false)
        .await
        .unwrap_err();
    assert!(matches!(err, crate::plans::PlanError::Pinned(1)), "{err}");
    let (version, _) = crate::plans::current_pointer(store, keys).await.unwrap();
    assert_eq!(version, 2, "only the restore's publication landed");
}

// ---------------------------------------------------------------- freezes

use self::freeze::{requested_scopes, FreezeTarget};
use meridian_core::records::{FreezeRecord, FreezeScope};

fn pop(id: &str) -> FreezeScope {
    FreezeScope::Pop(id.into())
}

fn region(id: &str) -> FreezeScope {
    FreezeScope::Region(id.into())
}

#[test]
fn which_freezes_refuse_which_targets() {
    let (global, fra1, ams1, eu) = (FreezeScope::Global, pop("fra1"), pop("ams1"), region("eu-west"));
    // The global freeze refuses everything; any freeze refuses a whole-edge change.
    for scope in [&global, &fra1, &ams1, &eu] {
        assert!(FreezeTarget::Edge.frozen_by(scope), "{scope}");
    }
    assert!(FreezeTarget::Pop("fra1").frozen_by(&global));
    // A PoP freeze refuses changes to that PoP only; a region freeze none to one PoP.
    assert!(FreezeTarget::Pop("fra1").frozen_by(&fra1));
    assert!(!FreezeTarget::Pop("fra1").frozen_by(&ams1));
    assert!(!FreezeTarget::Pop("fra1").frozen_by(&eu));
    // A request naming nothing is the global freeze; names are deduplicated.
    assert_eq!(requested_scopes(&[], &[]), [FreezeScope::Global]);
    assert_eq!(
        requested_scopes(&["fra1".into(), "fra1".into()], &["eu-west".into()]),
        [pop("fra1"), region("eu-west")]
    );
}

#[tokio::test]
async fn a_global_freeze_stored_before_scopes_existed_still_reads_and_refuses() {
    let f = fixture().await;
    let now = f.clock.now_ms();
    let legacy = format!(
        r#"{{"reason":"old window","requested_by":"bob","at_unix_ms":{now},"until_unix_ms":{}}}"#,
        now + 60_000
    );
    f.ops
        .store
        .put(&f.ops.keys.freeze(), legacy.into_bytes(), None)
        .await
        .unwrap();
    let active = f.ops.active_freezes().await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].scope, FreezeScope::Global);
    assert_eq!(f.ops.active_freeze().await.unwrap().unwrap().reason, "old window");
    let err = f
        .ops
        .check_freeze(&f.alice, "undrain", FreezeTarget::Pop("ams1"), false, "x")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OpError::FailedPrecondition(m) if m.starts_with("changes are frozen until") && m.contains("old window")),
        "{err}"
    );
    // A global freeze written now is stored without a scope: older replicas read it.
    f.ops.freeze(&f.alice, &f.fence, "w", 120_000, &[]).await.unwrap();
    let raw = f.ops.store.get(&f.ops.keys.freeze()).await.unwrap().unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&raw.value).unwrap();
    assert!(stored.get("scope").is_none(), "{stored}");
}

#[tokio::test]
async fn scoped_freezes_are_kept_apart_end_on_time_and_lift_one_by_one() {
    let f = fixture().await;
    // Unknown names are refused and nothing is written.
    let err = f
        .ops
        .freeze(&f.alice, &f.fence, "w", 600_000, &[pop("fra1"), pop("nope")])
        .await
        .unwrap_err();
    assert!(matches!(&err, OpError::NotFound(m) if m.contains("`nope`")), "{err}");
    let err = f
        .ops
        .freeze(&f.alice, &f.fence, "w", 600_000, &[region("mars")])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OpError::NotFound(m) if m.contains("region `mars`")),
        "{err}"
    );
    let err = f
        .ops
        .freeze(&f.alice, &f.fence, "w", 1_000, &[pop("fra1")])
        .await
        .unwrap_err();
    assert!(matches!(err, OpError::Invalid { field: "duration", .. }), "{err}");
    assert!(f.ops.active_freezes().await.unwrap().is_empty());

    // fra1 for 10 minutes, eu-west for 2.
    let set = f
        .ops
        .freeze(&f.alice, &f.fence, "rack move", 600_000, &[pop("fra1")])
        .await
        .unwrap();
    assert_eq!(set.len(), 1);
    f.ops
        .freeze(&f.alice, &f.fence, "peak", 120_000, &[region("eu-west")])
        .await
        .unwrap();
    let active: Vec<FreezeScope> = f
        .ops
        .active_freezes()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.scope)
        .collect();
    assert_eq!(active, [pop("fra1"), region("eu-west")]);
    assert_eq!(f.ops.active_freeze().await.unwrap(), None, "no global freeze");

    // ams1 may change; fra1 may not; a whole-edge change may not either.
    f.ops
        .check_freeze(&f.alice, "set-capacity", FreezeTarget::Pop("ams1"), false, "x")
        .await
        .unwrap();
    let err = f
        .ops
        .check_freeze(&f.alice, "set-capacity", FreezeTarget::Pop("fra1"), false, "x")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OpError::FailedPrecondition(m) if m.starts_with("changes to PoP fra1 are frozen") && m.contains("rack move") && m.contains("unfreeze --pop fra1")),
        "{err}"
    );
    // An operator's override is denied; with roles off (or an admin) it is
    // recorded, naming the operation, its PoP and the freeze.
    let err = f
        .ops
        .check_freeze(&f.alice, "set-capacity", FreezeTarget::Pop("fra1"), true, "x")
        .await
        .unwrap_err();
    assert!(matches!(err, OpError::PermissionDenied(_)), "{err}");
    let root = Caller {
        identity: Identity::new("root@ops-1").unwrap(),
        role: None,
    };
    f.ops
        .check_freeze(&root, "set-capacity", FreezeTarget::Pop("fra1"), true, "hotfix")
        .await
        .unwrap();
    let overridden = f
        .ops
        .log
        .list(20, None)
        .into_iter()
        .find_map(|e| match e.event.kind {
            EventKind::Operator(OperatorAction::FreezeOverridden { operation, reason }) => Some((operation, reason)),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        overridden,
        (
            "set-capacity of fra1 (PoP fra1 freeze)".to_string(),
            "hotfix".to_string()
        )
    );

    // After 3 minutes eu-west's freeze has ended: an apply is refused by fra1's only.
    f.clock.0.fetch_add(180_000, Ordering::SeqCst);
    let err = f
        .ops
        .check_freeze(&f.alice, "apply-topology", FreezeTarget::Edge, false, "x")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OpError::FailedPrecondition(m) if m.contains("touches every PoP and region, and PoP fra1 is frozen") && !m.contains("also frozen")),
        "{err}"
    );
    // Unfreezing eu-west (ended) and a global freeze (none) lifts nothing; fra1's
    // unfreeze lifts it.
    let lifted = f
        .ops
        .unfreeze(&f.alice, &f.fence, "done", &[region("eu-west"), FreezeScope::Global])
        .await
        .unwrap();
    assert!(lifted.is_empty());
    let lifted: Vec<FreezeRecord> = f
        .ops
        .unfreeze(&f.alice, &f.fence, "done", &[pop("fra1")])
        .await
        .unwrap();
    assert_eq!(lifted.len(), 1);
    assert_eq!(lifted[0].reason, "rack move");
    assert!(f.ops.active_freezes().await.unwrap().is_empty());
    f.ops
        .check_freeze(&f.alice, "apply-topology", FreezeTarget::Edge, false, "x")
        .await
        .unwrap();
}
