//! The RPC → access table against the proto, every role boundary, and the layer's
//! decisions.

use prost::Message;

use super::*;

fn operator(role: Role) -> Principal {
    Principal::Operator {
        identity: Identity::new(format!("{role}-person")).unwrap(),
        role,
    }
}

fn prober() -> Principal {
    Principal::Prober {
        identity: Identity::new("p-eu-1").unwrap(),
        region: "eu-west".into(),
    }
}

fn agent() -> Principal {
    Principal::Agent {
        identity: Identity::new("dns-1").unwrap(),
    }
}

/// Every RPC of every `meridian.v1` service, as gRPC paths, from the compiled proto.
fn proto_rpcs() -> Vec<String> {
    let set = meridian_proto::prost_types::FileDescriptorSet::decode(meridian_proto::v1::FILE_DESCRIPTOR_SET)
        .expect("the compiled descriptor set decodes");
    let mut out = Vec::new();
    for file in &set.file {
        let package = file.package();
        for service in &file.service {
            for method in &service.method {
                out.push(format!("/{package}.{}/{}", service.name(), method.name()));
            }
        }
    }
    assert!(out.len() >= 20, "the descriptor lists the API: {out:?}");
    out
}

#[test]
fn every_rpc_in_the_proto_has_a_rule_and_every_rule_an_rpc() {
    let rpcs = proto_rpcs();
    let missing: Vec<&String> = rpcs.iter().filter(|rpc| access(rpc).is_none()).collect();
    assert!(
        missing.is_empty(),
        "RPCs without an access rule (add them to RPC_ACCESS): {missing:?}"
    );
    let stale: Vec<&str> = RPC_ACCESS
        .iter()
        .map(|(path, _)| *path)
        .filter(|path| path.starts_with("/meridian.") && !rpcs.iter().any(|r| r == path))
        .collect();
    assert!(stale.is_empty(), "rules for RPCs the proto does not have: {stale:?}");
    let mut paths: Vec<&str> = RPC_ACCESS.iter().map(|(p, _)| *p).collect();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths.len(), RPC_ACCESS.len(), "one rule per RPC");
}

#[test]
fn roles_nest_and_the_fleet_calls_only_its_own_service() {
    let query = "/meridian.v1.QueryService/GetPlan";
    let drain = "/meridian.v1.OperatorService/Drain";
    let apply = "/meridian.v1.OperatorService/ApplyTopology";
    let restore = "/meridian.v1.OperatorService/RestorePlan";
    let report = "/meridian.v1.ProbeService/ReportResults";
    let watch = "/meridian.v1.PlanService/WatchPlan";
    let health = "/grpc.health.v1.Health/Check";
    let cases: Vec<(Principal, &str, bool)> = vec![
        (operator(Role::Viewer), query, true),
        (operator(Role::Viewer), drain, false),
        (operator(Role::Operator), drain, true),
        (operator(Role::Operator), apply, false),
        (operator(Role::Operator), restore, false),
        (operator(Role::Admin), apply, true),
        (operator(Role::Admin), restore, true),
        (operator(Role::Admin), drain, true),
        (operator(Role::Admin), report, false),
        (operator(Role::Admin), watch, false),
        (prober(), report, true),
        (prober(), query, false),
        (prober(), drain, false),
        (prober(), watch, false),
        (agent(), watch, true),
        (agent(), report, false),
        (agent(), query, false),
        (agent(), health, true),
    ];
    for (who, rpc, allowed) in cases {
        let got = decide(rpc, Some(&who));
        assert_eq!(got.is_ok(), allowed, "{who:?} → {rpc}: {got:?}");
        if let Err(denied) = got {
            assert_eq!(denied.status().code(), tonic::Code::PermissionDenied);
            assert!(denied.to_string().contains("needs"), "{denied}");
        }
    }
}

#[test]
fn every_rpc_of_each_kind_is_checked_for_each_role() {
    // Exhaustive over the table: an RPC needing role R is allowed for exactly the
    // roles ≥ R, and never for probers or agents unless it is theirs or open.
    for (rpc, rule) in RPC_ACCESS {
        for role in [Role::Viewer, Role::Operator, Role::Admin] {
            let want = match rule {
                Access::Open => true,
                Access::AtLeast(needed) => role >= *needed,
                Access::Prober | Access::Agent => false,
            };
            assert_eq!(decide(rpc, Some(&operator(role))).is_ok(), want, "{role} → {rpc}");
        }
        assert_eq!(
            decide(rpc, Some(&prober())).is_ok(),
            matches!(rule, Access::Open | Access::Prober),
            "prober → {rpc}"
        );
        assert_eq!(
            decide(rpc, Some(&agent())).is_ok(),
            matches!(rule, Access::Open | Access::Agent),
            "agent → {rpc}"
        );
        assert_eq!(decide(rpc, None).is_ok(), *rule == Access::Open, "anonymous → {rpc}");
    }
}

#[test]
fn missing_unknown_and_ruleless_calls_get_precise_statuses() {
    let mut credentials = Credentials::default();
    credentials
        .insert("viewer-token-0123456789".into(), operator(Role::Viewer))
        .unwrap();
    assert!(credentials.insert("viewer-token-0123456789".into(), agent()).is_err());
    let layer = AuthzLayer::new(AuthMode::Enforce, Arc::new(credentials));
    let query = "/meridian.v1.QueryService/GetStatus";
    let none = layer.check(query, None).unwrap_err();
    assert_eq!(none.status().code(), tonic::Code::Unauthenticated);
    assert!(none.to_string().contains("--token"), "says what to do: {none}");
    let unknown = layer.check(query, Some("Bearer not-a-known-token")).unwrap_err();
    assert_eq!(unknown.status().code(), tonic::Code::Unauthenticated);
    let malformed = layer.check(query, Some("Basic dXNlcjpwdw==")).unwrap_err();
    assert!(matches!(malformed, Denied::UnknownCredential { .. }));
    assert!(layer.check(query, Some("Bearer viewer-token-0123456789")).is_ok());
    let denied = layer
        .check(
            "/meridian.v1.OperatorService/Drain",
            Some("Bearer viewer-token-0123456789"),
        )
        .unwrap_err();
    assert_eq!(denied.status().code(), tonic::Code::PermissionDenied);
    let ruleless = layer.check("/meridian.v1.OperatorService/Teleport", None).unwrap_err();
    assert!(matches!(ruleless, Denied::NoRule { .. }), "{ruleless}");
    assert_eq!(ruleless.status().code(), tonic::Code::PermissionDenied);
    assert!(
        layer.check("/grpc.health.v1.Health/Check", None).is_ok(),
        "health stays open"
    );
    // Off: everything passes (the pre-authorization behaviour, warned about at start).
    let off = AuthzLayer::new(AuthMode::Off, Arc::new(Credentials::default()));
    assert!(off.check("/meridian.v1.OperatorService/Drain", None).is_ok());
}
