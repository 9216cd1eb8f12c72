//! Conversions between domain values and `meridian.v1` wire types. Only the gRPC
//! adapter uses this module.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meridian_core::records::AnycastAction;
use meridian_core::topology::{ProbeKind, TopologyDoc};
use meridian_proto::probe::failure_class_to_wire;
use meridian_proto::prost_types;
use meridian_proto::v1 as pb;

pub(crate) fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub(crate) fn timestamp_ms(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// A wire timestamp as milliseconds since the Unix epoch; out-of-range values are
/// rejected rather than wrapped.
pub(crate) fn from_timestamp_ms(t: &prost_types::Timestamp) -> Option<u64> {
    if t.seconds < 0 || t.nanos < 0 || t.nanos >= 1_000_000_000 || t.seconds > 32_503_680_000 {
        return None;
    }
    Some(t.seconds as u64 * 1000 + (t.nanos / 1_000_000) as u64)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where in each probe interval a region's steady probes start, as a fraction: the
/// topology's client regions share the interval evenly (the `k`-th of `n` at `k/n`),
/// so some region probes every PoP every `interval / n`; a prober region that is not
/// a client region gets a stable fraction from its name.
pub(crate) fn probe_phase(doc: &TopologyDoc, region: &str) -> f64 {
    let mut ids: Vec<&str> = doc.regions.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    match ids.iter().position(|id| *id == region) {
        Some(k) => k as f64 / ids.len() as f64,
        None => meridian_core::ids::stable_fraction(region.bytes()),
    }
}

/// How many confirmation probes a prober runs before it goes back to its normal
/// interval: enough for the control plane's verdict on the lossiest endpoint it still
/// counts as alive (see `meridian_health::evidence`).
fn confirm_probes(fall: u32) -> u32 {
    meridian_health::evidence::failures_needed(fall, meridian_health::evidence::LOSS_CAP)
}

/// The probe assignments a prober of `region` receives for a topology: each endpoint
/// of each PoP, with the policy's intervals, timeouts and thresholds, and the region's
/// phase.
pub(crate) fn assignments(doc: &TopologyDoc, version: u64, region: &str) -> pb::ProbeAssignments {
    let policy = &doc.policy;
    let mut targets = Vec::new();
    for pop in &doc.pops {
        for ep in &pop.endpoints {
            let check = match ep.kind {
                ProbeKind::Http | ProbeKind::Https => pb::probe_target::Check::Http(pb::HttpCheck {
                    url: ep.url.clone().unwrap_or_default(),
                    method: ep.method.clone().unwrap_or_else(|| "GET".into()),
                    host_header: ep.host.clone().unwrap_or_default(),
                    expected_status: ep.expected_status.iter().map(|s| u32::from(*s)).collect(),
                    body_contains: ep.body_contains.clone().unwrap_or_default(),
                    insecure_skip_verify: ep.insecure_skip_verify,
                }),
                ProbeKind::Tcp => pb::probe_target::Check::Tcp(pb::TcpCheck {
                    address: ep.address.map(|a| a.to_string()).unwrap_or_default(),
                }),
                ProbeKind::Dns => pb::probe_target::Check::Dns(pb::DnsCheck {
                    server: ep.server.map(|a| a.to_string()).unwrap_or_default(),
                    name: ep.query_name.clone().unwrap_or_default(),
                    record_type: ep.record_type.clone().unwrap_or_else(|| "A".into()),
                    expected_rcode: ep.expected_rcode.clone().unwrap_or_else(|| "NOERROR".into()),
                    expected_answer: ep.expected_answer.clone().unwrap_or_default(),
                }),
            };
            targets.push(pb::ProbeTarget {
                pop: pop.id.clone(),
                endpoint: ep.name.clone(),
                interval: Some(duration(ep.interval.unwrap_or(policy.probe_interval))),
                confirm_interval: Some(duration(policy.confirm_interval)),
                connect_timeout: Some(duration(ep.connect_timeout.unwrap_or(policy.connect_timeout))),
                response_timeout: Some(duration(ep.response_timeout.unwrap_or(policy.response_timeout))),
                rise: policy.rise,
                fall: confirm_probes(policy.fall),
                jitter: policy.jitter,
                check: Some(check),
            });
        }
    }
    pb::ProbeAssignments {
        version,
        targets,
        max_concurrency: policy.max_concurrency,
        batch_interval: Some(duration(Duration::from_millis(100))),
        phase: Some(probe_phase(doc, region)),
    }
}

pub(crate) fn pop_state(v: &meridian_health::PopVerdict) -> i32 {
    use meridian_health::PopVerdict;
    (match v {
        PopVerdict::Unknown => pb::PopState::Unknown,
        PopVerdict::Up => pb::PopState::Up,
        PopVerdict::Degraded { .. } => pb::PopState::Degraded,
        PopVerdict::Down => pb::PopState::Down,
    }) as i32
}

pub(crate) fn reach_state(r: &meridian_health::Reachability) -> i32 {
    use meridian_health::Reachability;
    (match r {
        Reachability::Unknown => pb::PopState::Unknown,
        Reachability::Up => pb::PopState::Up,
        Reachability::Down => pb::PopState::Down,
    }) as i32
}

fn down_regions(v: &meridian_health::PopVerdict) -> Vec<String> {
    match v {
        meridian_health::PopVerdict::Degraded { down_regions } => down_regions.iter().cloned().collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn health_matrix(rows: Vec<meridian_health::PopHealthRow>, suspects: Vec<String>) -> pb::GetHealthResponse {
    let pops = rows
        .into_iter()
        .map(|row| pb::PopHealth {
            pop: row.pop,
            state: pop_state(&row.verdict.verdict),
            down_regions: down_regions(&row.verdict.verdict),
            rule: row.verdict.rule,
            since: row.verdict.since.map(|t| timestamp_ms(t.0)),
            regions: row
                .regions
                .into_iter()
                .map(|c| pb::RegionPopHealth {
                    region: c.region,
                    state: reach_state(&c.state),
                    latency: c.latency.map(duration),
                    age: c.freshest_age.map(duration),
                    suspect: c.suspect,
                })
                .collect(),
        })
        .collect();
    pb::GetHealthResponse {
        pops,
        suspect_regions: suspects,
    }
}

pub(crate) fn explanation(e: meridian_health::Explanation) -> pb::ExplainPopResponse {
    let mut evidence = Vec::new();
    let regions = e
        .regions
        .into_iter()
        .map(|r| {
            evidence.push(format!(
                "region {}: {:?}{}{}",
                r.region,
                r.state,
                if r.suspect { " (suspect: votes discounted)" } else { "" },
                if r.counted { "" } else { " (not counted)" }
            ));
            pb::RegionEvidence {
                region: r.region,
                state: reach_state(&r.state),
                suspect: r.suspect,
                counted: r.counted,
                latency: r.latency.map(duration),
                probers: r
                    .probers
                    .into_iter()
                    .map(|p| pb::ProberEvidence {
                        prober: p.prober,
                        view: reach_state(&p.view),
                        endpoints: p
                            .endpoints
                            .into_iter()
                            .map(|ep| pb::EndpointEvidence {
                                endpoint: ep.endpoint,
                                state: reach_state(&ep.state),
                                fresh: ep.fresh,
                                consecutive_successes: ep.consecutive_successes,
                                consecutive_failures: ep.consecutive_failures,
                                evidence: Some(pb::Evidence {
                                    llr: ep.evidence.llr,
                                    threshold: ep.evidence.threshold,
                                    loss: ep.evidence.loss,
                                    hard_loss: ep.evidence.hard_loss,
                                    soft_failures_needed: ep.evidence.soft_failures_needed,
                                    hard_failures_needed: ep.evidence.hard_failures_needed,
                                }),
                                recent: ep
                                    .recent
                                    .into_iter()
                                    .map(|x| pb::RecentResult {
                                        observed_at: Some(timestamp_ms(x.observed_at.0)),
                                        age: Some(duration(x.age)),
                                        success: x.outcome.success,
                                        latency: Some(duration(x.outcome.latency)),
                                        failure_class: failure_class_to_wire(x.outcome.class),
                                        applied: x.applied,
                                        detail: x.outcome.detail,
                                    })
                                    .collect(),
                            })
                            .collect(),
                    })
                    .collect(),
            }
        })
        .collect();
    pb::ExplainPopResponse {
        pop: e.pop,
        state: pop_state(&e.verdict.verdict),
        down_regions: down_regions(&e.verdict.verdict),
        rule: e.verdict.rule,
        evidence,
        regions,
    }
}

pub(crate) fn event(e: crate::events::LoggedEvent, replica: &str) -> pb::Event {
    let event = &e.event;
    pb::Event {
        id: e.id,
        at: Some(timestamp_ms(event.at_unix_ms)),
        kind: event.kind_name().to_string(),
        pop: event.pop().unwrap_or_default().to_string(),
        message: event.message(),
        actor: event.actor.to_string(),
        role: event.role.clone().unwrap_or_default(),
        evidence: event.evidence(),
        region: event.region().unwrap_or_default().to_string(),
        replica: replica.to_string(),
    }
}

fn plan_pop_state(s: meridian_core::records::PopState) -> pb::PopState {
    use meridian_core::records::PopState;
    match s {
        PopState::Unknown => pb::PopState::Unknown,
        PopState::Up => pb::PopState::Up,
        PopState::Degraded => pb::PopState::Degraded,
        PopState::Down => pb::PopState::Down,
        PopState::Drained => pb::PopState::Drained,
    }
}

/// A stored plan as the wire's `SteeringPlan`.
pub(crate) fn plan_to_pb(p: &meridian_core::records::StoredPlan) -> pb::SteeringPlan {
    pb::SteeringPlan {
        version: p.version,
        created_at: Some(timestamp_ms(p.created_at_unix_ms)),
        regions: p
            .regions
            .iter()
            .map(|r| pb::RegionSteering {
                client_prefixes: r.client_prefixes.iter().map(|p| p.to_string()).collect(),
                region: r.region.clone(),
                pops: r
                    .pops
                    .iter()
                    .map(|w| pb::PopWeight {
                        pop: w.pop.clone(),
                        weight: w.weight,
                        ipv4: w.ipv4.iter().map(|a| a.to_string()).collect(),
                        ipv6: w.ipv6.iter().map(|a| a.to_string()).collect(),
                    })
                    .collect(),
            })
            .collect(),
        anycast: p
            .anycast
            .iter()
            .map(|a| pb::PopAnycastState {
                pop: a.pop.clone(),
                prefix: a.prefix.to_string(),
                action: anycast_action_to_pb(a.action) as i32,
                prepend_count: a.prepend_count,
            })
            .collect(),
        dns_ttl_seconds: p.dns_ttl_seconds,
        reasons: p.reasons.clone(),
        pops: p
            .pops
            .iter()
            .map(|s| pb::PopPlanState {
                pop: s.pop.clone(),
                state: plan_pop_state(s.state) as i32,
                capacity: s.capacity,
                load: s.load,
                utilisation: s.utilisation,
            })
            .collect(),
        guardrails: p.guardrails.clone(),
        published_by: p.published_by.clone(),
        restored_from: p.restored_from.unwrap_or(0),
        topology_revision: p.topology_revision,
        default_region: p.default_region.clone().unwrap_or_default(),
        epoch: p.epoch.clone(),
        content_hash: p.content_hash.clone(),
    }
}

/// The wire's AnycastAction.
pub(crate) fn anycast_action_to_pb(a: AnycastAction) -> pb::AnycastAction {
    match a {
        AnycastAction::Announce => pb::AnycastAction::Announce,
        AnycastAction::Prepend => pb::AnycastAction::Prepend,
        AnycastAction::GracefulShutdown => pb::AnycastAction::GracefulShutdown,
        AnycastAction::Withdraw => pb::AnycastAction::Withdraw,
    }
}

/// An Anycast agent's reported prefix state as the wire's.
pub(crate) fn anycast_status_to_pb(s: &meridian_core::records::AnycastPrefixStatus) -> pb::AnycastPrefixState {
    pb::AnycastPrefixState {
        prefix: s.prefix.clone(),
        desired: anycast_action_to_pb(s.desired) as i32,
        desired_prepend: s.desired_prepend,
        actual: anycast_action_to_pb(s.actual) as i32,
        actual_prepend: s.actual_prepend,
        detail: s.detail.clone(),
        plan_version: s.plan_version,
    }
}
