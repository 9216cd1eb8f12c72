//! The JSON shapes scripts parse. Each view is built from a hand-made prost answer
//! and checked key by key; the views that used to be `json!` literals are also
//! compared byte for byte with what the single-file CLI printed (its expressions
//! are kept here as `legacy_*`).

use serde_json::{json, Value};

use super::*;
use crate::fixtures;
use crate::output::json_pretty;

fn value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap()
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

// ---------------------------------------------------------------- status

#[test]
fn status_json_has_every_field_in_its_order() {
    let view = StatusView::new("http://10.0.0.2:7400".into(), fixtures::status());
    let expected = r#"{
  "answered_by": "cp-b",
  "answering_replica_leads": false,
  "endpoint": "http://10.0.0.2:7400",
  "leader": "cp-a",
  "leader_revision": 17,
  "ready": true,
  "plan_version": 7,
  "store": {
    "backend": "embedded",
    "healthy": true,
    "revision": 42,
    "detail": "ok",
    "endpoints": []
  },
  "replicas": [
    {
      "id": "cp-a",
      "leader": true,
      "grpc_address": "10.0.0.1:7400",
      "admin_address": "10.0.0.1:7401",
      "started_at_unix": 1700000000,
      "version": "0.1.0"
    },
    {
      "id": "cp-b",
      "leader": false,
      "grpc_address": "10.0.0.2:7400",
      "admin_address": "10.0.0.2:7401",
      "started_at_unix": 0,
      "version": "0.1.0"
    }
  ]
}
"#;
    assert_eq!(json_pretty(&view).unwrap(), expected);
    assert!(view.healthy());
}

#[test]
fn status_without_leader_is_null_and_unhealthy() {
    let view = StatusView::new("http://x:1".into(), fixtures::status_unhealthy());
    let v = value(&view);
    assert_eq!(v["leader"], Value::Null);
    assert_eq!(v["plan_version"], 0);
    assert_eq!(v["ready"], false);
    assert_eq!(v["replicas"], json!([]));
    assert_eq!(
        v["store"],
        json!({
            "backend": "etcd",
            "healthy": false,
            "revision": 0,
            "detail": "etcd: connection refused",
            "endpoints": ["http://10.0.0.9:2379", "http://10.0.0.10:2379"],
        })
    );
    assert!(!view.healthy());
}

#[test]
fn status_unhealthy_store_with_a_leader_is_still_unhealthy() {
    let mut resp = fixtures::status();
    resp.store = Some(pb::StoreHealth {
        healthy: false,
        ..Default::default()
    });
    let view = StatusView::new("e".into(), resp);
    assert_eq!(view.store.backend, "unknown");
    assert_eq!(view.leader.as_deref(), Some("cp-a"));
    assert!(!view.healthy());
    // No store at all in the answer: unknown and unhealthy, never a panic.
    let mut resp = fixtures::status();
    resp.store = None;
    assert!(!StatusView::new("e".into(), resp).healthy());
}

// ---------------------------------------------------------------- health

#[test]
fn health_json_names_states_and_converts_durations_to_ms() {
    let view = HealthView::from(fixtures::health());
    let v = value(&view);
    assert_eq!(keys(&v), ["pops", "suspect_regions"]);
    assert_eq!(v["suspect_regions"], json!(["us"]));
    assert_eq!(
        v["pops"][0],
        json!({
            "pop": "ams1",
            "state": "UP",
            "rule": "all-regions-up",
            "down_regions": [],
            "regions": [
                {"region": "eu", "state": "UP", "latency_ms": 12.0, "age_ms": 300.0, "suspect": false},
            ],
        })
    );
    assert_eq!(v["pops"][1]["state"], "DEGRADED");
    assert_eq!(v["pops"][1]["down_regions"], json!(["us"]));
    assert_eq!(
        v["pops"][1]["regions"][1],
        json!({"region": "us", "state": "DOWN", "latency_ms": null, "age_ms": 1200.0, "suspect": true})
    );
    assert_eq!(v["pops"][1]["regions"][0]["latency_ms"], 4.5);
    // Declaration order is the printed order.
    let text = json_pretty(&view).unwrap();
    assert!(
        text.starts_with("{\n  \"suspect_regions\": [\n    \"us\"\n  ],\n  \"pops\": ["),
        "{text}"
    );
}

#[test]
fn health_empty_answer_is_two_empty_lists() {
    let view = HealthView::from(pb::GetHealthResponse::default());
    assert_eq!(value(&view), json!({"suspect_regions": [], "pops": []}));
}

#[test]
fn unknown_enum_values_read_as_unknown_never_as_a_verdict() {
    assert_eq!(state_name(0), "UNKNOWN");
    assert_eq!(state_name(pb::PopState::Unknown as i32), "UNKNOWN");
    assert_eq!(state_name(99), "UNKNOWN");
    assert_eq!(failure_name(0), "none");
    assert_eq!(failure_name(99), "other");
    assert_eq!(anycast_name(99), "unspecified");
    assert_eq!(
        anycast_name(pb::AnycastAction::GracefulShutdown as i32),
        "graceful_shutdown"
    );
}

// ---------------------------------------------------------------- explain

#[test]
fn explain_json_is_the_legacy_shape_byte_for_byte() {
    let resp = fixtures::explain();
    let legacy = legacy_explain(&resp);
    let view = ExplainView::from(resp);
    assert_eq!(json_pretty(&view).unwrap(), json_pretty(&legacy).unwrap());
}

#[test]
fn explain_json_keys_and_values() {
    let v = value(&ExplainView::from(fixtures::explain()));
    assert_eq!(keys(&v), ["down_regions", "pop", "regions", "rule", "state"]);
    assert_eq!(v["state"], "DOWN");
    assert_eq!(v["rule"], "quorum-down");
    let region = &v["regions"][0];
    assert_eq!(
        keys(region),
        ["counted", "latency_ms", "probers", "region", "state", "suspect"]
    );
    assert_eq!(region["counted"], false);
    assert_eq!(region["suspect"], true);
    assert_eq!(region["latency_ms"], 20.0);
    let prober = &region["probers"][0];
    assert_eq!(keys(prober), ["endpoints", "prober", "view"]);
    assert_eq!(prober["view"], "DOWN");
    let endpoint = &prober["endpoints"][0];
    assert_eq!(
        keys(endpoint),
        [
            "consecutive_failures",
            "consecutive_successes",
            "endpoint",
            "evidence",
            "fresh",
            "recent",
            "state"
        ]
    );
    assert_eq!(endpoint["consecutive_failures"], 3);
    assert_eq!(endpoint["evidence"]["threshold"], 15.9);
    assert_eq!(endpoint["evidence"]["soft_failures_needed"], 0);
    assert_eq!(endpoint["fresh"], false);
    assert_eq!(
        endpoint["recent"],
        json!([
            {"age_ms": 100.0, "applied": true, "failure_class": "timeout", "latency_ms": null, "success": false},
            {"age_ms": 600.0, "applied": false, "failure_class": "none", "latency_ms": 18.0, "success": true},
        ])
    );
}

#[test]
fn explain_of_a_pop_without_evidence() {
    let v = value(&ExplainView::from(pb::ExplainPopResponse {
        pop: "new1".into(),
        ..Default::default()
    }));
    assert_eq!(
        v,
        json!({"down_regions": [], "pop": "new1", "regions": [], "rule": "", "state": "UNKNOWN"})
    );
}

// ---------------------------------------------------------------- events

#[test]
fn events_json_is_the_legacy_shape_byte_for_byte() {
    let resp = fixtures::events();
    let legacy: Vec<Value> = resp.events.iter().map(legacy_event).collect();
    let view: Vec<EventView> = resp.events.into_iter().map(EventView::from).collect();
    // Every legacy key keeps its value; `at` (RFC 3339) and `role` were added beside
    // them.
    let mut current = value(&view);
    for e in current.as_array_mut().unwrap() {
        e.as_object_mut().unwrap().remove("at");
        e.as_object_mut().unwrap().remove("role");
    }
    assert_eq!(json_pretty(&current).unwrap(), json_pretty(&legacy).unwrap());
}

#[test]
fn events_json_keys_and_values() {
    let view: Vec<EventView> = fixtures::events().events.into_iter().map(EventView::from).collect();
    let v = value(&view);
    assert_eq!(
        v[0],
        json!({
            "actor": "",
            "at": "2023-11-14T22:15:23.456Z",
            "at_unix_ms": 1_700_000_123_456_i64,
            "evidence": ["eu: DOWN (3 failures)", "us: DOWN"],
            "id": 3,
            "kind": "verdict",
            "message": "fra1 UP -> DOWN",
            "pop": "fra1",
            "region": "",
            "replica": "cp-a",
            "role": "",
        })
    );
    assert_eq!(v[1]["at_unix_ms"], Value::Null);
    assert_eq!(v[1]["at"], Value::Null);
    assert_eq!(v[1]["actor"], "operator");
    let empty: Vec<EventView> = Vec::new();
    assert_eq!(json_pretty(&empty).unwrap(), "[]\n");
}

// ---------------------------------------------------------------- plan

#[test]
fn plan_json_is_the_legacy_shape_byte_for_byte() {
    let plan = fixtures::plan();
    let legacy = legacy_plan(&plan);
    // Every legacy key keeps its value; `epoch` and `content_hash` were added beside
    // them.
    let mut current = value(&PlanView::from(plan));
    current.as_object_mut().unwrap().remove("epoch");
    current.as_object_mut().unwrap().remove("content_hash");
    assert_eq!(json_pretty(&current).unwrap(), json_pretty(&legacy).unwrap());
}

#[test]
fn plan_json_keys_and_values() {
    let v = value(&PlanView::from(fixtures::plan()));
    assert_eq!(
        keys(&v),
        [
            "anycast",
            "content_hash",
            "created_at_unix_ms",
            "dns_ttl_seconds",
            "epoch",
            "guardrails",
            "pops",
            "published_by",
            "reasons",
            "regions",
            "restored_from",
            "topology_revision",
            "version"
        ]
    );
    assert_eq!(v["version"], 12);
    assert_eq!(v["created_at_unix_ms"], 1_700_000_000_789_i64);
    assert_eq!(v["restored_from"], Value::Null);
    assert_eq!(
        v["regions"][0],
        json!({
            "region": "eu",
            "pops": [
                {"pop": "ams1", "weight": 0.75, "ipv4": ["192.0.2.1"], "ipv6": ["2001:db8::1"]},
                {"pop": "fra1", "weight": 0.25, "ipv4": ["192.0.2.2"], "ipv6": []},
            ],
        })
    );
    assert_eq!(
        v["pops"][1],
        json!({"pop": "fra1", "state": "degraded", "capacity": 1000.0, "load": 250.4, "utilisation": 0.2504})
    );
    assert_eq!(
        v["anycast"][1],
        json!({"pop": "fra1", "prefix": "198.51.100.0/24", "action": "prepend", "prepend_count": 3})
    );
    assert_eq!(v["reasons"], json!(["fra1 DEGRADED"]));
    assert_eq!(v["guardrails"], json!(["max-failover-capacity: 30% > 25%"]));
}

#[test]
fn restored_plan_names_its_source_version() {
    let mut plan = fixtures::plan();
    plan.restored_from = 9;
    assert_eq!(value(&PlanView::from(plan))["restored_from"], 9);
}

#[test]
fn empty_plan_is_still_a_complete_document() {
    let v = value(&PlanView::from(pb::SteeringPlan::default()));
    assert_eq!(v["version"], 0);
    assert_eq!(v["created_at_unix_ms"], Value::Null);
    assert_eq!(v["regions"], json!([]));
    assert_eq!(v["pops"], json!([]));
    assert_eq!(v["anycast"], json!([]));
    assert_eq!(keys(&v).len(), 13);
}

#[test]
fn what_if_json_is_the_legacy_shape_byte_for_byte() {
    let resp = pb::WhatIfResponse {
        plan: Some(fixtures::plan()),
        guardrails_fired: vec!["last-pop-in-region: us".into()],
    };
    let legacy = json!({"plan": legacy_plan(&fixtures::plan()), "guardrails_fired": resp.guardrails_fired});
    let view = WhatIfView::from(resp);
    // `epoch` and `content_hash` were added beside the legacy keys.
    let mut current = value(&view);
    let plan = current["plan"].as_object_mut().unwrap();
    plan.remove("epoch");
    plan.remove("content_hash");
    assert_eq!(json_pretty(&current).unwrap(), json_pretty(&legacy).unwrap());
    let v = value(&view);
    assert_eq!(keys(&v), ["guardrails_fired", "plan"]);
    assert_eq!(v["plan"]["version"], 12);
    // An answer without a plan still prints a plan document (an empty one).
    let v = value(&WhatIfView::from(pb::WhatIfResponse::default()));
    assert_eq!(v["plan"]["regions"], json!([]));
    assert_eq!(v["guardrails_fired"], json!([]));
}

// ---------------------------------------------------------------- agents

#[test]
fn agents_json_is_the_legacy_shape_byte_for_byte() {
    let resp = fixtures::agents();
    let legacy: Vec<Value> = resp.agents.iter().map(legacy_agent).collect();
    let view: Vec<AgentView> = resp.agents.into_iter().map(AgentView::from).collect();
    // Every legacy key keeps its value; the rollout wave was added ([8]).
    let mut current = value(&view);
    for agent in current.as_array_mut().unwrap() {
        for added in ["wave", "held_on_version", "anycast"] {
            agent.as_object_mut().unwrap().remove(added);
        }
    }
    assert_eq!(current, Value::Array(legacy));
}

#[test]
fn agents_json_keys_and_values() {
    let view: Vec<AgentView> = fixtures::agents().agents.into_iter().map(AgentView::from).collect();
    assert_eq!(
        value(&view),
        json!([
            {"agent_id": "dns-ams1", "applied_version": 12, "kind": "dns", "nack_reason": null,
             "nacked_version": null, "replica": "cp-a", "wave": "canary", "held_on_version": null, "anycast": []},
            {"agent_id": "bgp-fra1", "applied_version": 11, "kind": "anycast",
             "nack_reason": "prefix 198.51.100.0/24 not configured", "nacked_version": 12, "replica": "cp-b",
             "wave": "fleet", "held_on_version": 11,
             "anycast": [{"prefix": "198.51.100.0/24", "desired": "prepend", "desired_prepend": 3,
                          "actual": "prepend", "actual_prepend": 1, "in_sync": false,
                          "detail": "speaker: AddPath refused", "plan_version": 11}]},
        ])
    );
}

// ---------------------------------------------------------------- mutations

#[test]
fn change_json_is_the_legacy_shape_byte_for_byte() {
    let c = fixtures::change();
    let legacy = json!({"id": c.id, "reason": c.reason, "state": "completed", "summary": c.summary});
    let view = ChangeView::from(c);
    // Every legacy key keeps its value; the step, total, who, kind, target and
    // phase were added.
    let mut current = value(&view);
    for added in ["step", "total_steps", "started_by", "kind", "target", "phase"] {
        current.as_object_mut().unwrap().remove(added);
    }
    assert_eq!(json_pretty(&current).unwrap(), json_pretty(&legacy).unwrap());
    assert_eq!(
        value(&view),
        json!({"id": "chg-9", "reason": "fibre cut", "state": "completed", "summary": "drained fra1",
               "step": 1, "total_steps": 1, "started_by": "operator",
               "kind": "drain", "target": "fra1", "phase": null})
    );
    let mut ladder = fixtures::ladder();
    ladder.kind.clear();
    let v = value(&ChangeView::from(ladder));
    assert_eq!((&v["phase"], &v["kind"]), (&json!("bake"), &json!("")));
}

#[test]
fn change_detail_json_has_every_field_in_its_order() {
    let agents = AgentsAckView::new(12, &fixtures::ladder_agents());
    let view = ChangeDetailView::new(fixtures::ladder(), Ok(agents));
    let expected = r#"{
  "id": "drain-fra1-1700000000000",
  "kind": "drain",
  "target": "fra1",
  "regions": [
    "eu-west"
  ],
  "started_by": "operator:otto",
  "role": "operator",
  "reason": "router maintenance",
  "state": "progressing",
  "state_reason": "inconclusive: no load data for ams1",
  "summary": "drain fra1 by ladder 50% → 0% — progressing step 1 (bake)",
  "step": 1,
  "total_steps": 2,
  "steps": [
    {
      "weight_percent": 50,
      "bake_ms": 60000
    },
    {
      "weight_percent": 0,
      "bake_ms": 60000
    }
  ],
  "phase": "bake",
  "phase_since_unix_ms": 1700000010000,
  "phase_deadline_unix_ms": 1700000070000,
  "canary_agents": [
    "dns-ams1"
  ],
  "analysis": [
    {
      "name": "receivers_healthy",
      "verdict": "pass",
      "why": "ams1 UP"
    },
    {
      "name": "utilisation",
      "verdict": "inconclusive",
      "why": "no load data for ams1"
    }
  ],
  "agents": {
    "plan_version": 12,
    "total": 3,
    "acked": 1,
    "behind": [
      {
        "agent_id": "dns-iad1",
        "version": 10
      }
    ],
    "held": [
      {
        "agent_id": "bgp-fra1",
        "version": 11
      }
    ]
  },
  "agents_error": null,
  "history": [
    {
      "at": "2023-11-14T22:13:20.000Z",
      "at_unix_ms": 1700000000000,
      "from": "new",
      "to": "pending",
      "why": "router maintenance"
    },
    {
      "at": "2023-11-14T22:13:20.200Z",
      "at_unix_ms": 1700000000200,
      "from": "pending",
      "to": "progressing step 1 (apply)",
      "why": "started"
    },
    {
      "at": "2023-11-14T22:13:30.000Z",
      "at_unix_ms": 1700000010000,
      "from": "progressing step 1 (await ACKs)",
      "to": "progressing step 1 (bake)",
      "why": "every agent ACKed the step's plan"
    }
  ],
  "created_at_unix_ms": 1700000000000,
  "updated_at_unix_ms": 1700000010000
}
"#;
    assert_eq!(json_pretty(&view).unwrap(), expected);
    assert_eq!(view.why(), "inconclusive: no load data for ams1");
}

#[test]
fn change_detail_of_a_bare_record_is_complete_with_nulls() {
    let view = ChangeDetailView::new(pb::ChangeRecord::default(), Err("ListAgents failed".into()));
    let v = value(&view);
    assert_eq!(v["state"], "unknown");
    for null in [
        "state_reason",
        "phase",
        "phase_since_unix_ms",
        "phase_deadline_unix_ms",
        "agents",
        "created_at_unix_ms",
        "updated_at_unix_ms",
    ] {
        assert_eq!(v[null], Value::Null, "{null}");
    }
    assert_eq!(v["agents_error"], "ListAgents failed");
    assert_eq!(v["steps"], json!([]));
    assert_eq!(v["history"], json!([]));
    assert_eq!(view.why(), "");
    // Without a state reason, the last transition says why.
    let mut c = fixtures::ladder();
    c.state_reason.clear();
    let view = ChangeDetailView::new(c, Err(String::new()));
    assert_eq!(view.why(), "every agent ACKed the step's plan");
}

#[test]
fn agents_against_the_plan_count_those_on_it_and_split_behind_from_held() {
    let a = AgentsAckView::new(12, &fixtures::ladder_agents());
    assert_eq!((a.total, a.acked), (3, 1));
    assert_eq!(
        a.behind.iter().map(|b| b.agent_id.as_str()).collect::<Vec<_>>(),
        ["dns-iad1"]
    );
    assert_eq!(
        a.held.iter().map(|b| b.agent_id.as_str()).collect::<Vec<_>>(),
        ["bgp-fra1"]
    );
    let none = AgentsAckView::new(0, &fixtures::ladder_agents());
    assert_eq!((none.acked, none.behind.len()), (3, 0), "no plan: nothing to be behind");
}

#[test]
fn resume_json_is_one_line() {
    let line = crate::output::json_line(&ResumeView { was_pinned: true }).unwrap();
    assert_eq!(line, format!("{}\n", json!({"was_pinned": true})));
    assert_eq!(line, "{\"was_pinned\":true}\n");
}

#[test]
fn apply_json_has_every_field_in_its_order() {
    let view = ApplyView::new(
        "topology.toml".into(),
        true,
        pb::ApplyTopologyResponse {
            applied: false,
            diff: vec!["+ pop fra1".into()],
            errors: vec![],
            topology_revision: 4,
        },
    );
    let expected = r#"{
  "file": "topology.toml",
  "dry_run": true,
  "applied": false,
  "topology_revision": 4,
  "diff": [
    "+ pop fra1"
  ],
  "errors": []
}
"#;
    assert_eq!(json_pretty(&view).unwrap(), expected);
}

#[test]
fn apply_json_lists_validation_errors() {
    let view = ApplyView::new(
        "bad.toml".into(),
        false,
        pb::ApplyTopologyResponse {
            errors: vec!["pops[0].id: not a DNS label".into(), "policy.ttl: must be > 0".into()],
            ..Default::default()
        },
    );
    let v = value(&view);
    assert_eq!(v["applied"], false);
    assert_eq!(
        v["errors"],
        json!(["pops[0].id: not a DNS label", "policy.ttl: must be > 0"])
    );
    assert_eq!(v["diff"], json!([]));
}

// ------------------------------------------------ the single-file CLI's JSON

fn dur(d: &Option<meridian_proto::prost_types::Duration>) -> Option<f64> {
    d.as_ref().map(|d| d.seconds as f64 * 1000.0 + f64::from(d.nanos) / 1e6)
}

fn legacy_explain(resp: &pb::ExplainPopResponse) -> Value {
    let regions: Vec<Value> = resp
        .regions
        .iter()
        .map(|r| {
            json!({
                "region": r.region,
                "state": state_name(r.state),
                "suspect": r.suspect,
                "counted": r.counted,
                "latency_ms": dur(&r.latency),
                "probers": r.probers.iter().map(|p| json!({
                    "prober": p.prober,
                    "view": state_name(p.view),
                    "endpoints": p.endpoints.iter().map(|e| json!({
                        "endpoint": e.endpoint,
                        "state": state_name(e.state),
                        "fresh": e.fresh,
                        "consecutive_successes": e.consecutive_successes,
                        "consecutive_failures": e.consecutive_failures,
                        "evidence": e.evidence.as_ref().map(|x| json!({
                            "llr": x.llr,
                            "threshold": x.threshold,
                            "loss": x.loss,
                            "hard_loss": x.hard_loss,
                            "soft_failures_needed": x.soft_failures_needed,
                            "hard_failures_needed": x.hard_failures_needed,
                        })),
                        "recent": e.recent.iter().map(|x| json!({
                            "age_ms": dur(&x.age),
                            "success": x.success,
                            "latency_ms": dur(&x.latency),
                            "failure_class": failure_name(x.failure_class),
                            "applied": x.applied,
                        })).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "pop": resp.pop,
        "state": state_name(resp.state),
        "rule": resp.rule,
        "down_regions": resp.down_regions,
        "regions": regions,
    })
}

fn legacy_event(e: &pb::Event) -> Value {
    json!({
        "id": e.id,
        "at_unix_ms": e.at.as_ref().map(|t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000)),
        "kind": e.kind,
        "pop": e.pop,
        "region": e.region,
        "message": e.message,
        "evidence": e.evidence,
        "replica": e.replica,
        "actor": e.actor,
    })
}

fn legacy_plan(p: &pb::SteeringPlan) -> Value {
    json!({
        "version": p.version,
        "created_at_unix_ms": p.created_at.as_ref().map(|t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000)),
        "published_by": p.published_by,
        "topology_revision": p.topology_revision,
        "restored_from": (p.restored_from != 0).then_some(p.restored_from),
        "dns_ttl_seconds": p.dns_ttl_seconds,
        "regions": p.regions.iter().map(|r| json!({
            "region": r.region,
            "pops": r.pops.iter().map(|w| json!({"pop": w.pop, "weight": w.weight, "ipv4": w.ipv4, "ipv6": w.ipv6})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "pops": p.pops.iter().map(|s| json!({
            "pop": s.pop, "state": plan_state_name(s.state), "capacity": s.capacity, "load": s.load, "utilisation": s.utilisation,
        })).collect::<Vec<_>>(),
        "anycast": p.anycast.iter().map(|a| json!({
            "pop": a.pop,
            "prefix": a.prefix,
            "action": anycast_name(a.action),
            "prepend_count": a.prepend_count,
        })).collect::<Vec<_>>(),
        "reasons": p.reasons,
        "guardrails": p.guardrails,
    })
}

fn legacy_agent(a: &pb::AgentInfo) -> Value {
    json!({
        "agent_id": a.agent_id,
        "kind": if a.kind == pb::AgentKind::Anycast as i32 { "anycast" } else { "dns" },
        "replica": a.replica_id,
        "applied_version": a.applied_version,
        "nacked_version": (a.nacked_version != 0).then_some(a.nacked_version),
        "nack_reason": (!a.nack_reason.is_empty()).then_some(&a.nack_reason),
    })
}

// ---------------------------------------------------------------- freezes

#[test]
fn freeze_json_lists_every_freeze_in_force_with_its_scope() {
    let view = FreezeView::from(fixtures::freezes());
    assert_eq!(
        value(&view),
        json!({
            "frozen": true,
            "until": "2023-11-15T00:13:20.000Z",
            "freezes": [
                {"scope": "global", "target": null, "reason": "release window", "requested_by": "ada",
                 "until": "2023-11-14T23:13:20.000Z"},
                {"scope": "pop", "target": "fra1", "reason": "rack move", "requested_by": "otto",
                 "until": "2023-11-15T00:13:20.000Z"},
                {"scope": "region", "target": "eu-west", "reason": "peak", "requested_by": "otto",
                 "until": "2023-11-14T22:43:20.000Z"},
            ]
        })
    );
    // The legacy keys stay, in the struct's order (first), with the list after.
    let text = serde_json::to_string(&view).unwrap();
    assert!(
        text.starts_with(r#"{"frozen":true,"until":"2023-11-15T00:13:20.000Z","freezes":[{"scope":"global""#),
        "{text}"
    );
}

#[test]
fn freeze_json_when_nothing_is_frozen_is_an_empty_list() {
    let view = FreezeView::from(pb::FreezeResponse::default());
    assert_eq!(value(&view), json!({"frozen": false, "until": null, "freezes": []}));
}
