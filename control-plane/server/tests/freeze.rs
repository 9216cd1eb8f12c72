//! Change freezes over real gRPC (issue [8]): a freeze refuses topology applies,
//! undrains and plan restores, naming the freeze; drains stay allowed (the
//! remedy); an operator cannot override, an admin can, and the override is
//! recorded; unfreezing lifts it. Freezes per PoP and per client region refuse
//! what touches their PoP (or every PoP and region) and leave the rest alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use meridian_control_plane::config::ControlPlaneConfig;
use meridian_proto::v1 as pb;

const OPERATOR: &str = "operator-token-000000002";
const ADMIN: &str = "admin-token-000000000003";
const TOPOLOGY: &str = r#"
[[pops]]
id = "fra1"
capacity = 10
ipv4 = ["192.0.2.1"]
endpoints = [{ name = "tcp", kind = "tcp", address = "192.0.2.1:80" }]
[[pops]]
id = "ams1"
capacity = 10
ipv4 = ["192.0.2.2"]
endpoints = [{ name = "tcp", kind = "tcp", address = "192.0.2.2:80" }]
"#;

fn with<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

fn apply(override_freeze: bool) -> pb::ApplyTopologyRequest {
    pb::ApplyTopologyRequest {
        topology_toml: TOPOLOGY.into(),
        dry_run: false,
        reason: "release".into(),
        override_freeze,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_refuses_changes_but_not_drains_and_only_an_admin_overrides_it() {
    let text = format!(
        "[[auth.operators]]\nid = \"otto\"\nrole = \"operator\"\ntoken = \"{OPERATOR}\"\n[[auth.operators]]\nid = \"ada\"\nrole = \"admin\"\ntoken = \"{ADMIN}\"\n"
    );
    let cfg: ControlPlaneConfig = toml::from_str(&text).unwrap();
    let replica = common::start(cfg).await;
    let channel = replica.channel();
    let mut op = pb::operator_service_client::OperatorServiceClient::new(channel.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match op.apply_topology(with(apply(false), ADMIN)).await {
            Ok(r) if r.get_ref().applied => break,
            other => {
                assert!(tokio::time::Instant::now() < deadline, "apply never landed: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    // An operator freezes changes for 10 minutes.
    let frozen = op
        .freeze(with(
            pb::FreezeRequest {
                reason: "release window".into(),
                duration: Some(meridian_proto::prost_types::Duration { seconds: 600, nanos: 0 }),
                ..Default::default()
            },
            OPERATOR,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(frozen.frozen && frozen.until.is_some());
    let bad = op
        .freeze(with(
            pb::FreezeRequest {
                reason: "x".into(),
                duration: Some(meridian_proto::prost_types::Duration { seconds: 1, nanos: 0 }),
                ..Default::default()
            },
            OPERATOR,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");

    // A topology apply is refused, naming the freeze and the way out.
    let refused = op.apply_topology(with(apply(false), ADMIN)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("frozen") && refused.message().contains("release window"),
        "{}",
        refused.message()
    );
    // So is an undrain; an operator's override is not enough.
    let undrain = |override_freeze: bool| pb::UndrainRequest {
        pop: "fra1".into(),
        reason: "back".into(),
        override_freeze,
    };
    assert_eq!(
        op.undrain(with(undrain(false), OPERATOR)).await.unwrap_err().code(),
        tonic::Code::FailedPrecondition
    );
    let denied = op.undrain(with(undrain(true), OPERATOR)).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    // A drain is the remedy: never refused for the freeze.
    let drain = op
        .drain(with(
            pb::DrainRequest {
                pop: "fra1".into(),
                reason: "fibre cut".into(),
                ..Default::default()
            },
            OPERATOR,
        ))
        .await;
    if let Err(s) = &drain {
        assert!(!s.message().contains("frozen"), "a drain is exempt: {s:?}");
    }
    // An admin overrides: the apply lands, and the override is recorded.
    let applied = op.apply_topology(with(apply(true), ADMIN)).await.unwrap().into_inner();
    assert!(applied.applied || applied.errors.is_empty(), "{applied:?}");
    let mut q = pb::query_service_client::QueryServiceClient::new(channel.clone());
    let events = q
        .list_events(with(
            pb::ListEventsRequest {
                limit: 200,
                ..Default::default()
            },
            ADMIN,
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    // The log is written asynchronously; the freeze refusals and override are
    // checked once stored.
    let mut events = events;
    while !(stored_in(&events, "freeze") && stored_in(&events, "freeze_override")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "freeze events not stored: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        events = q
            .list_events(with(
                pb::ListEventsRequest {
                    limit: 200,
                    ..Default::default()
                },
                ADMIN,
            ))
            .await
            .unwrap()
            .into_inner()
            .events;
    }
    let over = events.iter().find(|e| e.kind == "freeze_override").unwrap();
    assert_eq!(over.actor, "operator:ada");
    assert_eq!(over.role, "admin");

    // Unfreezing (admins) lifts it: the apply needs no override any more.
    let unfrozen = op
        .unfreeze(with(
            pb::UnfreezeRequest {
                reason: "window over".into(),
                ..Default::default()
            },
            ADMIN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!unfrozen.frozen);
    assert!(op.apply_topology(with(apply(false), ADMIN)).await.is_ok());

    replica.stop().await;
}

fn stored_in(events: &[pb::Event], kind: &str) -> bool {
    events.iter().any(|e| e.kind == kind)
}

const REGIONAL: &str = r#"
[[pops]]
id = "fra1"
capacity = 10
ipv4 = ["192.0.2.1"]
endpoints = [{ name = "tcp", kind = "tcp", address = "192.0.2.1:80" }]
[[pops]]
id = "ams1"
capacity = 10
ipv4 = ["192.0.2.2"]
endpoints = [{ name = "tcp", kind = "tcp", address = "192.0.2.2:80" }]
[[regions]]
id = "eu-west"
demand = 5
client_prefixes = ["10.1.0.0/16"]
latency_hints = { fra1 = "10ms", ams1 = "15ms" }
"#;

fn apply_regional(override_freeze: bool) -> pb::ApplyTopologyRequest {
    pb::ApplyTopologyRequest {
        topology_toml: REGIONAL.into(),
        dry_run: false,
        reason: "release".into(),
        override_freeze,
    }
}

fn freeze_of(pops: &[&str], regions: &[&str], reason: &str) -> pb::FreezeRequest {
    pb::FreezeRequest {
        reason: reason.into(),
        duration: Some(meridian_proto::prost_types::Duration { seconds: 600, nanos: 0 }),
        pops: pops.iter().map(|p| p.to_string()).collect(),
        regions: regions.iter().map(|r| r.to_string()).collect(),
    }
}

fn unfreeze_of(pops: &[&str], regions: &[&str]) -> pb::UnfreezeRequest {
    pb::UnfreezeRequest {
        reason: "done".into(),
        pops: pops.iter().map(|p| p.to_string()).collect(),
        regions: regions.iter().map(|r| r.to_string()).collect(),
    }
}

/// (scope, target) of each freeze in force, in the answer's order.
fn scopes(resp: &pb::FreezeResponse) -> Vec<(String, String)> {
    resp.freezes
        .iter()
        .map(|f| (f.scope.clone(), f.target.clone()))
        .collect()
}

fn set_capacity(pop: &str, override_freeze: bool) -> pb::SetCapacityRequest {
    pb::SetCapacityRequest {
        pop: pop.into(),
        capacity: 8.0,
        reason: "half the racks".into(),
        duration_ms: 0,
        override_freeze,
    }
}

fn undrain(pop: &str) -> pb::UndrainRequest {
    pb::UndrainRequest {
        pop: pop.into(),
        reason: "back".into(),
        override_freeze: false,
    }
}

/// Not refused for a freeze: it ran, or failed for another reason.
fn not_frozen<T: std::fmt::Debug>(r: &Result<tonic::Response<T>, tonic::Status>) -> bool {
    match r {
        Ok(_) => true,
        Err(s) => s.code() != tonic::Code::FailedPrecondition || !s.message().contains("frozen"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop_and_region_freezes_refuse_only_what_touches_them_and_lift_one_by_one() {
    let text = format!(
        "[[auth.operators]]\nid = \"otto\"\nrole = \"operator\"\ntoken = \"{OPERATOR}\"\n[[auth.operators]]\nid = \"ada\"\nrole = \"admin\"\ntoken = \"{ADMIN}\"\n"
    );
    let cfg: ControlPlaneConfig = toml::from_str(&text).unwrap();
    let replica = common::start(cfg).await;
    let channel = replica.channel();
    let mut op = pb::operator_service_client::OperatorServiceClient::new(channel.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match op.apply_topology(with(apply_regional(false), ADMIN)).await {
            Ok(r) if r.get_ref().applied => break,
            other => {
                assert!(tokio::time::Instant::now() < deadline, "apply never landed: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    // Unknown PoPs and regions are refused, naming them, and nothing is frozen:
    // not even the known PoP named beside the unknown region.
    let unknown = op
        .freeze(with(freeze_of(&["nope1"], &[], "x"), OPERATOR))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    assert!(unknown.message().contains("nope1"), "{}", unknown.message());
    let unknown = op
        .freeze(with(freeze_of(&["ams1"], &["mars"], "x"), OPERATOR))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    assert!(unknown.message().contains("region `mars`"), "{}", unknown.message());

    // The operator freezes fra1 and the eu-west region; the answer lists both.
    let frozen = op
        .freeze(with(freeze_of(&["fra1"], &["eu-west"], "rack move"), OPERATOR))
        .await
        .unwrap()
        .into_inner();
    assert!(frozen.frozen && frozen.until.is_some(), "{frozen:?}");
    assert_eq!(
        scopes(&frozen),
        [("pop".into(), "fra1".into()), ("region".into(), "eu-west".into())]
    );
    assert!(frozen
        .freezes
        .iter()
        .all(|f| f.reason == "rack move" && f.requested_by.contains("otto") && f.until.is_some()));

    // A capacity change or undrain of fra1 is refused, naming the PoP freeze...
    let refused = op
        .set_capacity(with(set_capacity("fra1", false), OPERATOR))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    for words in [
        "PoP fra1",
        "pop freeze",
        "otto",
        "rack move",
        "exempt",
        "--override-freeze",
    ] {
        assert!(
            refused.message().contains(words),
            "lacks {words}: {}",
            refused.message()
        );
    }
    let refused = op.undrain(with(undrain("fra1"), OPERATOR)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("PoP fra1"), "{}", refused.message());
    // A drain of fra1 is the remedy: never refused for its freeze.
    let drained = op
        .drain(with(
            pb::DrainRequest {
                pop: "fra1".into(),
                reason: "fibre cut".into(),
                ..Default::default()
            },
            OPERATOR,
        ))
        .await;
    assert!(not_frozen(&drained), "a drain is exempt: {drained:?}");
    // ... of ams1 is not (the region freeze does not cover one PoP's changes).
    let other = op.undrain(with(undrain("ams1"), OPERATOR)).await;
    assert!(not_frozen(&other), "{other:?}");
    let other = op.set_capacity(with(set_capacity("ams1", false), OPERATOR)).await;
    assert!(not_frozen(&other), "{other:?}");

    // A topology apply and a plan restore touch every PoP and region: refused.
    let refused = op.apply_topology(with(apply_regional(false), ADMIN)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("touches every PoP and region")
            && refused.message().contains("also frozen: region eu-west"),
        "{}",
        refused.message()
    );
    let refused = op
        .restore_plan(with(
            pb::RestorePlanRequest {
                version: 1,
                reason: "back".into(),
                override_freeze: false,
            },
            ADMIN,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");

    // Unfreezing fra1 leaves the region's freeze in force: fra1 may change again,
    // a topology apply is still refused, now by the region freeze.
    let left = op
        .unfreeze(with(unfreeze_of(&["fra1"], &[]), ADMIN))
        .await
        .unwrap()
        .into_inner();
    assert!(left.frozen);
    assert_eq!(scopes(&left), [("region".into(), "eu-west".into())]);
    let undrained = op.undrain(with(undrain("fra1"), OPERATOR)).await;
    assert!(not_frozen(&undrained), "{undrained:?}");
    let refused = op.apply_topology(with(apply_regional(false), ADMIN)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("region eu-west is frozen")
            && refused.message().contains("unfreeze --region eu-west"),
        "{}",
        refused.message()
    );
    // A global freeze beside it is listed first; lifting it leaves the region's.
    let both = op
        .freeze(with(freeze_of(&[], &[], "release window"), OPERATOR))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        scopes(&both),
        [("global".into(), "".into()), ("region".into(), "eu-west".into())]
    );
    let left = op
        .unfreeze(with(unfreeze_of(&[], &[]), ADMIN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scopes(&left), [("region".into(), "eu-west".into())]);

    // An operator cannot override; an admin can, and the override is recorded
    // naming the region freeze.
    let denied = op
        .apply_topology(with(apply_regional(true), OPERATOR))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    let applied = op
        .apply_topology(with(apply_regional(true), ADMIN))
        .await
        .unwrap()
        .into_inner();
    assert!(applied.errors.is_empty(), "{applied:?}");
    let mut q = pb::query_service_client::QueryServiceClient::new(channel.clone());
    let over = loop {
        let events = q
            .list_events(with(
                pb::ListEventsRequest {
                    limit: 200,
                    ..Default::default()
                },
                ADMIN,
            ))
            .await
            .unwrap()
            .into_inner()
            .events;
        if let Some(e) = events.iter().find(|e| e.kind == "freeze_override") {
            break e.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no override recorded: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((over.actor.as_str(), over.role.as_str()), ("operator:ada", "admin"));
    assert!(
        over.message.contains("apply-topology")
            && over.message.contains("region eu-west")
            && over.message.contains("release"),
        "{over:?}"
    );

    // Lifting the last freeze: nothing is frozen.
    let none = op
        .unfreeze(with(unfreeze_of(&[], &["eu-west"]), ADMIN))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !none.frozen && none.until.is_none() && none.freezes.is_empty(),
        "{none:?}"
    );
    assert!(op.apply_topology(with(apply_regional(false), ADMIN)).await.is_ok());

    replica.stop().await;
}
