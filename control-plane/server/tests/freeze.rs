//! Change freezes over real gRPC (issue [8]): a freeze refuses topology applies,
//! undrains and plan restores, naming the freeze; drains stay allowed (the
//! remedy); an operator cannot override, an admin can, and the override is
//! recorded; unfreezing lifts it.

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
