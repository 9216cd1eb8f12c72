//! Hand-built prost answers shared by the view and rendering tests: one realistic
//! value per RPC, plus the empty and "nothing published yet" cases.

use meridian_proto::prost_types::{Duration, Timestamp};
use meridian_proto::v1 as pb;

pub fn ms(ms: i64) -> Option<Duration> {
    Some(Duration {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

pub fn at(seconds: i64, millis: i32) -> Option<Timestamp> {
    Some(Timestamp {
        seconds,
        nanos: millis * 1_000_000,
    })
}

/// Two replicas, `cp-a` leads, embedded store healthy, plan 7 in force.
pub fn status() -> pb::GetStatusResponse {
    pb::GetStatusResponse {
        replica_id: "cp-b".into(),
        leader_id: "cp-a".into(),
        leader_revision: 17,
        replicas: vec![
            pb::ReplicaInfo {
                id: "cp-a".into(),
                grpc_address: "10.0.0.1:7400".into(),
                admin_address: "10.0.0.1:7401".into(),
                started_at: at(1_700_000_000, 250),
                is_leader: true,
                version: "0.1.0".into(),
            },
            pb::ReplicaInfo {
                id: "cp-b".into(),
                grpc_address: "10.0.0.2:7400".into(),
                admin_address: "10.0.0.2:7401".into(),
                version: "0.1.0".into(),
                ..Default::default()
            },
        ],
        store: Some(pb::StoreHealth {
            backend: pb::StoreBackend::Embedded as i32,
            healthy: true,
            detail: "ok".into(),
            revision: 42,
            ..Default::default()
        }),
        plan_version: 7,
        ready: true,
        software_version: "0.1.0".into(),
        ..Default::default()
    }
}

/// A fresh replica: no leader yet, etcd unreachable, nothing published.
pub fn status_unhealthy() -> pb::GetStatusResponse {
    pb::GetStatusResponse {
        replica_id: "cp-x".into(),
        store: Some(pb::StoreHealth {
            backend: pb::StoreBackend::Etcd as i32,
            detail: "etcd: connection refused".into(),
            endpoints: vec!["http://10.0.0.9:2379".into(), "http://10.0.0.10:2379".into()],
            ..Default::default()
        }),
        software_version: "0.1.0".into(),
        ..Default::default()
    }
}

/// `ams1` UP everywhere; `fra1` DEGRADED because the suspect region `us` sees it
/// DOWN (and has no latency estimate).
pub fn health() -> pb::GetHealthResponse {
    pb::GetHealthResponse {
        pops: vec![
            pb::PopHealth {
                pop: "ams1".into(),
                state: pb::PopState::Up as i32,
                regions: vec![pb::RegionPopHealth {
                    region: "eu".into(),
                    state: pb::PopState::Up as i32,
                    latency: ms(12),
                    age: ms(300),
                    ..Default::default()
                }],
                rule: "all-regions-up".into(),
                ..Default::default()
            },
            pb::PopHealth {
                pop: "fra1".into(),
                state: pb::PopState::Degraded as i32,
                regions: vec![
                    pb::RegionPopHealth {
                        region: "eu".into(),
                        state: pb::PopState::Up as i32,
                        latency: Some(Duration {
                            seconds: 0,
                            nanos: 4_500_000,
                        }),
                        age: ms(15_000),
                        ..Default::default()
                    },
                    pb::RegionPopHealth {
                        region: "us".into(),
                        state: pb::PopState::Down as i32,
                        age: ms(1_200),
                        suspect: true,
                        ..Default::default()
                    },
                ],
                rule: "some-regions-down".into(),
                down_regions: vec!["us".into()],
                ..Default::default()
            },
        ],
        suspect_regions: vec!["us".into()],
    }
}

/// `fra1` DOWN: region `eu` counted, one prober, one endpoint with a timeout.
pub fn explain() -> pb::ExplainPopResponse {
    pb::ExplainPopResponse {
        pop: "fra1".into(),
        state: pb::PopState::Down as i32,
        rule: "quorum-down".into(),
        down_regions: vec!["eu".into()],
        regions: vec![pb::RegionEvidence {
            region: "eu".into(),
            state: pb::PopState::Down as i32,
            suspect: true,
            latency: ms(20),
            probers: vec![pb::ProberEvidence {
                prober: "eu-1".into(),
                view: pb::PopState::Down as i32,
                endpoints: vec![pb::EndpointEvidence {
                    endpoint: "https://fra1.example.net/health".into(),
                    state: pb::PopState::Down as i32,
                    consecutive_failures: 3,
                    evidence: Some(pb::Evidence {
                        llr: 15.9,
                        threshold: 15.9,
                        loss: 0.005,
                        hard_loss: 1e-7,
                        soft_failures_needed: 0,
                        hard_failures_needed: 0,
                    }),
                    recent: vec![
                        pb::RecentResult {
                            age: ms(100),
                            failure_class: pb::FailureClass::Timeout as i32,
                            applied: true,
                            ..Default::default()
                        },
                        pb::RecentResult {
                            age: ms(600),
                            success: true,
                            latency: ms(18),
                            failure_class: pb::FailureClass::None as i32,
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// One verdict event with evidence, one operator event without a timestamp.
pub fn events() -> pb::ListEventsResponse {
    pb::ListEventsResponse {
        events: vec![
            pb::Event {
                id: 3,
                at: at(1_700_000_123, 456),
                kind: "verdict".into(),
                pop: "fra1".into(),
                message: "fra1 UP -> DOWN".into(),
                evidence: vec!["eu: DOWN (3 failures)".into(), "us: DOWN".into()],
                replica: "cp-a".into(),
                ..Default::default()
            },
            pb::Event {
                id: 4,
                kind: "drain".into(),
                pop: "fra1".into(),
                message: "fra1 drained: fibre cut".into(),
                actor: "operator".into(),
                region: "eu".into(),
                replica: "cp-a".into(),
                ..Default::default()
            },
        ],
    }
}

/// Plan 12: `eu` split between ams1 and fra1, `us` on iad1 alone; ams1 announces a
/// prefix, fra1 prepends one; one reason, one guardrail.
pub fn plan() -> pb::SteeringPlan {
    pb::SteeringPlan {
        version: 12,
        created_at: at(1_700_000_000, 789),
        regions: vec![
            pb::RegionSteering {
                region: "eu".into(),
                pops: vec![
                    pb::PopWeight {
                        pop: "ams1".into(),
                        weight: 0.75,
                        ipv4: vec!["192.0.2.1".into()],
                        ipv6: vec!["2001:db8::1".into()],
                    },
                    pb::PopWeight {
                        pop: "fra1".into(),
                        weight: 0.25,
                        ipv4: vec!["192.0.2.2".into()],
                        ..Default::default()
                    },
                ],
                client_prefixes: vec!["10.1.0.0/16".into()],
            },
            pb::RegionSteering {
                region: "us".into(),
                pops: vec![pb::PopWeight {
                    pop: "iad1".into(),
                    weight: 1.0,
                    ipv4: vec!["192.0.2.3".into()],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
        anycast: vec![
            pb::PopAnycastState {
                pop: "ams1".into(),
                prefix: "198.51.100.0/24".into(),
                action: pb::AnycastAction::Announce as i32,
                ..Default::default()
            },
            pb::PopAnycastState {
                pop: "fra1".into(),
                prefix: "198.51.100.0/24".into(),
                action: pb::AnycastAction::Prepend as i32,
                prepend_count: 3,
            },
        ],
        dns_ttl_seconds: 30,
        reasons: vec!["fra1 DEGRADED".into()],
        pops: vec![
            pb::PopPlanState {
                pop: "ams1".into(),
                state: pb::PopState::Up as i32,
                capacity: 1000.0,
                load: 750.0,
                utilisation: 0.75,
            },
            pb::PopPlanState {
                pop: "fra1".into(),
                state: pb::PopState::Degraded as i32,
                capacity: 1000.0,
                load: 250.4,
                utilisation: 0.2504,
            },
            pb::PopPlanState {
                pop: "iad1".into(),
                state: pb::PopState::Up as i32,
                capacity: 500.0,
                load: 400.0,
                utilisation: 0.8,
            },
        ],
        guardrails: vec!["max-failover-capacity: 30% > 25%".into()],
        published_by: "cp-a".into(),
        topology_revision: 5,
        ..Default::default()
    }
}

/// Two agents: a DNS agent in step, an Anycast agent that rejected version 12.
pub fn agents() -> pb::ListAgentsResponse {
    pb::ListAgentsResponse {
        agents: vec![
            pb::AgentInfo {
                agent_id: "dns-ams1".into(),
                kind: pb::AgentKind::Dns as i32,
                replica_id: "cp-a".into(),
                applied_version: 12,
                wave: "canary".into(),
                ..Default::default()
            },
            pb::AgentInfo {
                agent_id: "bgp-fra1".into(),
                kind: pb::AgentKind::Anycast as i32,
                replica_id: "cp-b".into(),
                applied_version: 11,
                nacked_version: 12,
                nack_reason: "prefix 198.51.100.0/24 not configured".into(),
                wave: "fleet".into(),
                held_on_version: 11,
                anycast: vec![pb::AnycastPrefixState {
                    prefix: "198.51.100.0/24".into(),
                    desired: pb::AnycastAction::Prepend as i32,
                    desired_prepend: 3,
                    actual: pb::AnycastAction::Prepend as i32,
                    actual_prepend: 1,
                    detail: "speaker: AddPath refused".into(),
                    plan_version: 11,
                }],
                ..Default::default()
            },
        ],
    }
}

pub fn change() -> pb::ChangeRecord {
    pb::ChangeRecord {
        id: "chg-9".into(),
        started_by: "operator".into(),
        reason: "fibre cut".into(),
        state: pb::ChangeState::Completed as i32,
        step: 1,
        total_steps: 1,
        summary: "drained fra1".into(),
        kind: "drain".into(),
        target: "fra1".into(),
        ..Default::default()
    }
}

/// When the bake of [`ladder`]'s first rung started (Unix ms); it lasts 60 s.
pub const BAKE_SINCE_MS: i64 = 1_700_000_010_000;

/// A drain ladder of fra1 (100 → 50 → 0 %, 60 s per rung) for the eu-west region,
/// baking its first rung behind a canary wave of one agent, with one analysis of
/// two checks and three transitions; the reason a pause would carry.
pub fn ladder() -> pb::ChangeRecord {
    pb::ChangeRecord {
        id: "drain-fra1-1700000000000".into(),
        started_by: "operator:otto".into(),
        role: "operator".into(),
        reason: "router maintenance".into(),
        state: pb::ChangeState::Progressing as i32,
        step: 1,
        total_steps: 2,
        created_at: at(1_700_000_000, 0),
        updated_at: at(1_700_000_010, 0),
        summary: "drain fra1 by ladder 50% → 0% — progressing step 1 (bake)".into(),
        kind: "drain".into(),
        target: "fra1".into(),
        regions: vec!["eu-west".into()],
        phase: "bake".into(),
        phase_since: at(BAKE_SINCE_MS / 1000, 0),
        awaiting_approval: String::new(),
        approved_by: String::new(),
        phase_deadline: at(BAKE_SINCE_MS / 1000 + 60, 0),
        state_reason: "inconclusive: no load data for ams1".into(),
        steps: vec![
            pb::ChangeStep {
                weight_percent: 50,
                bake_ms: 60_000,
            },
            pb::ChangeStep {
                weight_percent: 0,
                bake_ms: 60_000,
            },
        ],
        canary_agents: vec!["dns-ams1".into()],
        history: vec![
            pb::ChangeTransition {
                at: at(1_700_000_000, 0),
                from: "new".into(),
                to: "pending".into(),
                why: "router maintenance".into(),
            },
            pb::ChangeTransition {
                at: at(1_700_000_000, 200),
                from: "pending".into(),
                to: "progressing step 1 (apply)".into(),
                why: "started".into(),
            },
            pb::ChangeTransition {
                at: at(1_700_000_010, 0),
                from: "progressing step 1 (await ACKs)".into(),
                to: "progressing step 1 (bake)".into(),
                why: "every agent ACKed the step's plan".into(),
            },
        ],
        analysis: vec![
            pb::ChangeCheck {
                name: "receivers_healthy".into(),
                verdict: "pass".into(),
                why: "ams1 UP".into(),
            },
            pb::ChangeCheck {
                name: "utilisation".into(),
                verdict: "inconclusive".into(),
                why: "no load data for ams1".into(),
            },
        ],
    }
}

/// [`agents`] plus a DNS agent still on plan 10: against plan 12, one agent has
/// it, one is behind, one is held on 11 by the canary wave.
pub fn ladder_agents() -> Vec<pb::AgentInfo> {
    let mut list = agents().agents;
    list.push(pb::AgentInfo {
        agent_id: "dns-iad1".into(),
        kind: pb::AgentKind::Dns as i32,
        replica_id: "cp-a".into(),
        applied_version: 10,
        wave: "fleet".into(),
        ..Default::default()
    });
    list
}

/// The answer to a freeze of fra1 while a global freeze and one of eu-west are in
/// force (the global one first, then PoPs, then regions).
pub fn freezes() -> pb::FreezeResponse {
    let freeze = |scope: &str, target: &str, reason: &str, by: &str, until: i64| pb::ActiveFreeze {
        scope: scope.into(),
        target: target.into(),
        reason: reason.into(),
        requested_by: by.into(),
        until: at(until, 0),
    };
    pb::FreezeResponse {
        frozen: true,
        until: at(1_700_007_200, 0),
        freezes: vec![
            freeze("global", "", "release window", "ada", 1_700_003_600),
            freeze("pop", "fra1", "rack move", "otto", 1_700_007_200),
            freeze("region", "eu-west", "peak", "otto", 1_700_001_800),
        ],
    }
}
