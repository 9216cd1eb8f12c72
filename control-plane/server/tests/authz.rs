//! Authorization end to end: a replica with `[auth] mode = "enforce"` on real gRPC,
//! called with no credential, unknown ones and each role.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use meridian_control_plane::config::ControlPlaneConfig;
use meridian_proto::v1 as pb;
use tonic::transport::Channel;

const VIEWER: &str = "viewer-token-00000000001";
const OPERATOR: &str = "operator-token-000000002";
const ADMIN: &str = "admin-token-000000000003";
const AGENT: &str = "agent-token-000000000004";
const PROBER: &str = "prober-token-00000000005";

fn config() -> String {
    format!(
        r#"
replica_id = "cp-1"
[auth]
mode = "enforce"
[[auth.operators]]
id = "vera"
role = "viewer"
token = "{VIEWER}"
[[auth.operators]]
id = "otto"
role = "operator"
token = "{OPERATOR}"
[[auth.operators]]
id = "ada"
role = "admin"
token = "{ADMIN}"
[[auth.agents]]
id = "dns-1"
token = "{AGENT}"
[[probers]]
id = "p-eu-1"
region = "eu-west"
token = "{PROBER}"
"#
    )
}

async fn start() -> (Channel, common::Replica) {
    let replica = common::start(toml::from_str(&config()).unwrap()).await;
    (replica.channel(), replica)
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    req
}

async fn status_code(channel: &Channel, token: Option<&str>) -> tonic::Code {
    let mut q = pb::query_service_client::QueryServiceClient::new(channel.clone());
    match q.get_status(with_token(pb::GetStatusRequest {}, token)).await {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_boundary_holds_over_real_grpc() {
    let (channel, replica) = start().await;
    // Wait until the server answers at all (an open RPC).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    while health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "the replica never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Queries: no credential and unknown credentials are UNAUTHENTICATED, with advice.
    let mut q = pb::query_service_client::QueryServiceClient::new(channel.clone());
    let err = q.get_status(pb::GetStatusRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().contains("--token"), "{}", err.message());
    assert_eq!(
        status_code(&channel, Some("not-a-token-at-all-xx")).await,
        tonic::Code::Unauthenticated
    );
    for token in [VIEWER, OPERATOR, ADMIN] {
        assert_eq!(status_code(&channel, Some(token)).await, tonic::Code::Ok, "{token}");
    }
    // Probers and agents may not read the operator API.
    assert_eq!(status_code(&channel, Some(AGENT)).await, tonic::Code::PermissionDenied);
    assert_eq!(status_code(&channel, Some(PROBER)).await, tonic::Code::PermissionDenied);

    // A drain: a viewer is refused before any handler runs; an operator gets past
    // authorization (and then the operation's own answer: no topology, so NOT_FOUND
    // or UNAVAILABLE while no leader is elected — anything but PERMISSION_DENIED).
    let mut op = pb::operator_service_client::OperatorServiceClient::new(channel.clone());
    let drain = || pb::DrainRequest {
        pop: "fra1".into(),
        reason: "test".into(),
        ..Default::default()
    };
    let denied = op.drain(with_token(drain(), Some(VIEWER))).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(denied.message().contains("operator"), "{}", denied.message());
    let past = op.drain(with_token(drain(), Some(OPERATOR))).await.unwrap_err();
    assert_ne!(past.code(), tonic::Code::PermissionDenied, "{past:?}");
    assert_ne!(past.code(), tonic::Code::Unauthenticated, "{past:?}");

    // Topology is for admins: an operator's dry run is refused, an admin's answered.
    let apply = || pb::ApplyTopologyRequest {
        topology_toml: "[[pops]]\nid = \"fra1\"\ncapacity = 10\n".into(),
        dry_run: true,
        reason: "check".into(),
        override_freeze: false,
    };
    let denied = op
        .apply_topology(with_token(apply(), Some(OPERATOR)))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let answered = op
        .apply_topology(with_token(apply(), Some(ADMIN)))
        .await
        .expect("an admin's dry run is answered")
        .into_inner();
    assert!(!answered.applied);

    // The agents' service takes agents only.
    let mut plans = pb::plan_service_client::PlanServiceClient::new(channel.clone());
    let hello = pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::AgentHello {
            agent_id: "dns-1".into(),
            kind: pb::AgentKind::Dns as i32,
            ..Default::default()
        })),
    };
    let denied = plans
        .watch_plan(with_token(tokio_stream::iter(vec![hello.clone()]), Some(ADMIN)))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let accepted = plans
        .watch_plan(with_token(tokio_stream::iter(vec![hello]), Some(AGENT)))
        .await;
    assert!(accepted.is_ok(), "an agent subscribes: {accepted:?}");

    // Every refusal is in the event log: who, which RPC, why.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let events = q
            .list_events(with_token(
                pb::ListEventsRequest {
                    limit: 500,
                    ..Default::default()
                },
                Some(VIEWER),
            ))
            .await
            .map(|r| r.into_inner().events)
            .unwrap_or_default();
        let refused_drain = events.iter().any(|e| {
            e.kind == "refused"
                && e.actor == "operator:vera"
                && e.message.contains("/meridian.v1.OperatorService/Drain")
        });
        let refused_anonymous = events
            .iter()
            .any(|e| e.kind == "refused" && e.actor == "operator:anonymous" && e.message.contains("GetStatus"));
        if refused_drain && refused_anonymous {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refusals never reached the event log: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    replica.stop().await;
}

#[test]
fn a_bad_operator_token_is_a_config_error_naming_the_key() {
    let cfg: ControlPlaneConfig =
        toml::from_str("[[auth.operators]]\nid = \"a\"\nrole = \"admin\"\ntoken = \"short\"\n").unwrap();
    let err = cfg.validate("cp.toml").unwrap_err().to_string();
    assert!(err.contains("auth.operators[0].token"), "{err}");
}

/// Roles are enforced by default; with no operator credential and no client CA, the
/// first start writes a bootstrap admin token (mode 0600) into the data directory,
/// the next start reuses it, and it works as an admin over real gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforcing_by_default_bootstraps_an_admin_token_in_the_data_dir() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let text = format!("[store]\ndata_dir = \"{}\"\n", dir.path().display());
    let cfg: ControlPlaneConfig = toml::from_str(&text).unwrap();
    assert_eq!(cfg.auth.mode, meridian_control_plane::authz::AuthMode::Enforce);
    let validated = cfg.clone().validate("test").unwrap();
    let path = dir.path().join("bootstrap-admin.token");
    assert_eq!(validated.bootstrap_admin.as_deref(), Some(path.as_path()));
    let replica = common::start(cfg).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(tokio::time::Instant::now() < deadline, "no bootstrap token written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert!(token.len() >= 32, "{token}");
    let channel = replica.channel();
    loop {
        match status_code(&channel, Some(&token)).await {
            tonic::Code::Ok => break,
            tonic::Code::Unavailable => {
                assert!(tokio::time::Instant::now() < deadline, "the replica never answered");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("the bootstrap token must be accepted, got {other:?}"),
        }
    }
    assert_eq!(status_code(&channel, None).await, tonic::Code::Unauthenticated);
    // An admin RPC: a dry run of a topology.
    let mut op = pb::operator_service_client::OperatorServiceClient::new(channel.clone());
    let dry = op
        .apply_topology(with_token(
            pb::ApplyTopologyRequest {
                topology_toml: "[[pops]]\nid = \"fra1\"\ncapacity = 10\n".into(),
                dry_run: true,
                reason: "check".into(),
                override_freeze: false,
            },
            Some(&token),
        ))
        .await;
    assert!(dry.is_ok(), "{dry:?}");
    replica.stop().await;

    // The next start reads the same token back.
    assert_eq!(
        meridian_control_plane::authz::bootstrap_admin_token(&path).unwrap(),
        token
    );
}
