//! The script-facing shapes: what `-o json` prints, one struct per answer, converted
//! by hand from the prost responses.
//!
//! These structs are the contract with scripts (the end-to-end tests parse them):
//! renaming or dropping a field breaks users, so the tests below pin every key.
//! Enum values become lower- or upper-case names, never numbers; durations become
//! milliseconds (`*_ms`, `null` when absent); timestamps become Unix milliseconds.
//!
//! Field order: `StatusView`, `HealthView` and `ApplyView` print in declaration
//! order. The other views replaced `serde_json::json!` objects, whose keys serde_json
//! sorts; they declare their fields alphabetically so the bytes printed are the same
//! as before the CLI was split into modules.

use meridian_proto::probe::{failure_class_from_wire, FailureClassError};
use meridian_proto::v1 as pb;
use serde::Serialize;

// ---------------------------------------------------------------------------
// status
// ---------------------------------------------------------------------------

/// `meridianctl status`: who answered, who leads, the store and the replicas.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusView {
    /// The replica that answered.
    pub answered_by: String,
    /// Whether the answering replica believes it leads (it holds the fence).
    pub answering_replica_leads: bool,
    /// The endpoint the CLI reached it on.
    pub endpoint: String,
    /// The leader's id; `null` when no replica holds the leader key.
    pub leader: Option<String>,
    /// The leader key's create revision: the fence of every leader-only write.
    pub leader_revision: i64,
    pub ready: bool,
    /// 0 when no plan has been published yet.
    pub plan_version: u64,
    pub store: StoreView,
    pub replicas: Vec<ReplicaView>,
}

/// The store as the answering replica sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreView {
    /// `etcd`, `embedded` or `unknown`.
    pub backend: String,
    pub healthy: bool,
    pub revision: i64,
    pub detail: String,
    pub endpoints: Vec<String>,
}

/// One registered replica.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicaView {
    pub id: String,
    pub leader: bool,
    pub grpc_address: String,
    pub admin_address: String,
    /// 0 when the replica did not say.
    pub started_at_unix: i64,
    pub version: String,
}

impl StatusView {
    /// The view of `resp`, which `endpoint` answered.
    pub fn new(endpoint: String, resp: pb::GetStatusResponse) -> Self {
        let store = resp.store.unwrap_or_default();
        StatusView {
            answered_by: resp.replica_id,
            answering_replica_leads: resp.is_leader,
            endpoint,
            leader: (!resp.leader_id.is_empty()).then_some(resp.leader_id),
            leader_revision: resp.leader_revision,
            ready: resp.ready,
            plan_version: resp.plan_version,
            store: StoreView {
                backend: backend_name(store.backend).to_string(),
                healthy: store.healthy,
                revision: store.revision,
                detail: store.detail,
                endpoints: store.endpoints,
            },
            replicas: resp
                .replicas
                .into_iter()
                .map(|r| ReplicaView {
                    id: r.id,
                    leader: r.is_leader,
                    grpc_address: r.grpc_address,
                    admin_address: r.admin_address,
                    started_at_unix: r.started_at.map(|t| t.seconds).unwrap_or(0),
                    version: r.version,
                })
                .collect(),
        }
    }

    /// A leader is known and the store is healthy: `status` exits 0 only then.
    pub fn healthy(&self) -> bool {
        self.leader.is_some() && self.store.healthy
    }
}

// ---------------------------------------------------------------------------
// health
// ---------------------------------------------------------------------------

/// `meridianctl health`: every PoP's verdict and what each region sees.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthView {
    pub suspect_regions: Vec<String>,
    pub pops: Vec<PopHealthView>,
}

/// One PoP's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PopHealthView {
    pub pop: String,
    /// `UP`, `DEGRADED`, `DOWN` or `UNKNOWN`.
    pub state: &'static str,
    /// The rule that decided the verdict.
    pub rule: String,
    pub down_regions: Vec<String>,
    pub regions: Vec<RegionCellView>,
}

/// What one prober region sees of one PoP.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionCellView {
    pub region: String,
    pub state: &'static str,
    pub latency_ms: Option<f64>,
    pub age_ms: Option<f64>,
    pub suspect: bool,
}

impl From<pb::GetHealthResponse> for HealthView {
    fn from(resp: pb::GetHealthResponse) -> Self {
        HealthView {
            suspect_regions: resp.suspect_regions,
            pops: resp
                .pops
                .into_iter()
                .map(|p| PopHealthView {
                    pop: p.pop,
                    state: state_name(p.state),
                    rule: p.rule,
                    down_regions: p.down_regions,
                    regions: p
                        .regions
                        .into_iter()
                        .map(|r| RegionCellView {
                            region: r.region,
                            state: state_name(r.state),
                            latency_ms: millis(&r.latency),
                            age_ms: millis(&r.age),
                            suspect: r.suspect,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------
// explain
// ---------------------------------------------------------------------------

/// `meridianctl explain POP`: the verdict and its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainView {
    pub down_regions: Vec<String>,
    pub pop: String,
    pub regions: Vec<RegionEvidenceView>,
    pub rule: String,
    pub state: &'static str,
}

/// One region's part in the verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionEvidenceView {
    /// Whether this region's state took part in the verdict.
    pub counted: bool,
    pub latency_ms: Option<f64>,
    pub probers: Vec<ProberEvidenceView>,
    pub region: String,
    pub state: &'static str,
    pub suspect: bool,
}

/// One prober's view of the PoP.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProberEvidenceView {
    pub endpoints: Vec<EndpointEvidenceView>,
    pub prober: String,
    pub view: &'static str,
}

/// One probed endpoint: its hysteresis state and recent results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointEvidenceView {
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub endpoint: String,
    /// The sequential test behind DOWN; absent from an older control plane.
    pub evidence: Option<EvidenceView>,
    pub fresh: bool,
    pub recent: Vec<RecentResultView>,
    pub state: &'static str,
}

/// The evidence for "dead" (log-likelihood ratio, nats) against the threshold, the
/// endpoint's learnt loss rates, and how many failures would call DOWN from here.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvidenceView {
    pub hard_failures_needed: u32,
    pub hard_loss: f64,
    pub llr: f64,
    pub loss: f64,
    pub soft_failures_needed: u32,
    pub threshold: f64,
}

/// One probe result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentResultView {
    pub age_ms: Option<f64>,
    /// False when it arrived after a newer result and did not drive the hysteresis.
    pub applied: bool,
    /// `none`, `timeout`, `refused`, `reset`, `tls`, `http_status`, `body_mismatch`,
    /// `dns_rcode`, `dns_answer` or `other`.
    pub failure_class: &'static str,
    pub latency_ms: Option<f64>,
    pub success: bool,
    /// The prober's explanation of a failure; absent on a success.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl From<pb::ExplainPopResponse> for ExplainView {
    fn from(resp: pb::ExplainPopResponse) -> Self {
        ExplainView {
            down_regions: resp.down_regions,
            pop: resp.pop,
            rule: resp.rule,
            state: state_name(resp.state),
            regions: resp
                .regions
                .into_iter()
                .map(|r| RegionEvidenceView {
                    counted: r.counted,
                    latency_ms: millis(&r.latency),
                    region: r.region,
                    state: state_name(r.state),
                    suspect: r.suspect,
                    probers: r
                        .probers
                        .into_iter()
                        .map(|p| ProberEvidenceView {
                            prober: p.prober,
                            view: state_name(p.view),
                            endpoints: p.endpoints.into_iter().map(EndpointEvidenceView::from).collect(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl From<pb::EndpointEvidence> for EndpointEvidenceView {
    fn from(e: pb::EndpointEvidence) -> Self {
        EndpointEvidenceView {
            consecutive_failures: e.consecutive_failures,
            consecutive_successes: e.consecutive_successes,
            endpoint: e.endpoint,
            evidence: e.evidence.map(|x| EvidenceView {
                llr: x.llr,
                threshold: x.threshold,
                loss: x.loss,
                hard_loss: x.hard_loss,
                soft_failures_needed: x.soft_failures_needed,
                hard_failures_needed: x.hard_failures_needed,
            }),
            fresh: e.fresh,
            state: state_name(e.state),
            recent: e
                .recent
                .iter()
                .map(|x| RecentResultView {
                    age_ms: millis(&x.age),
                    applied: x.applied,
                    failure_class: failure_name(x.failure_class),
                    latency_ms: millis(&x.latency),
                    success: x.success,
                    detail: x.detail.clone(),
                })
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------
// events
// ---------------------------------------------------------------------------

/// One event of `meridianctl events`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventView {
    pub actor: String,
    /// When, as an RFC 3339 UTC time (`at_unix_ms` is the same instant).
    pub at: Option<String>,
    pub at_unix_ms: Option<i64>,
    pub evidence: Vec<String>,
    pub id: u64,
    pub kind: String,
    pub message: String,
    pub pop: String,
    pub region: String,
    /// Which replica recorded it.
    pub replica: String,
    /// The role the actor acted with (empty when none applies).
    pub role: String,
}

impl From<pb::Event> for EventView {
    fn from(e: pb::Event) -> Self {
        let at_unix_ms = unix_ms(&e.at);
        EventView {
            actor: e.actor,
            at: at_unix_ms.and_then(rfc3339_ms),
            at_unix_ms,
            evidence: e.evidence,
            id: e.id,
            kind: e.kind,
            message: e.message,
            pop: e.pop,
            region: e.region,
            replica: e.replica,
            role: e.role,
        }
    }
}

// ---------------------------------------------------------------------------
// plans
// ---------------------------------------------------------------------------

/// A steering plan (`plan`, `restore-plan`, and inside `what-if`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanView {
    pub anycast: Vec<AnycastView>,
    /// The plan's content hash: the same epoch and version with another hash is
    /// other content.
    pub content_hash: String,
    pub created_at_unix_ms: Option<i64>,
    pub dns_ttl_seconds: u32,
    /// The store's epoch: versions compare only within one epoch (a restored store
    /// starts a new one).
    pub epoch: String,
    /// Guardrails that fired while computing it, each naming its rule.
    pub guardrails: Vec<String>,
    pub pops: Vec<PopPlanView>,
    pub published_by: String,
    /// Why it was published.
    pub reasons: Vec<String>,
    pub regions: Vec<RegionWeightsView>,
    /// The version whose content an operator restored; `null` otherwise.
    pub restored_from: Option<u64>,
    pub topology_revision: i64,
    pub version: u64,
}

/// The PoPs serving one client region, with weights summing to 1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionWeightsView {
    pub pops: Vec<PopWeightView>,
    pub region: String,
}

/// One PoP's share of a region.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PopWeightView {
    pub ipv4: Vec<String>,
    pub ipv6: Vec<String>,
    pub pop: String,
    pub weight: f64,
}

/// One PoP's state and load in the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PopPlanView {
    pub capacity: f64,
    pub load: f64,
    pub pop: String,
    /// `up`, `degraded`, `down`, `unknown` or `drained`.
    pub state: &'static str,
    pub utilisation: f64,
}

/// What one PoP does with one Anycast prefix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnycastView {
    /// `announce`, `prepend`, `graceful_shutdown`, `withdraw` or `unspecified`.
    pub action: &'static str,
    pub pop: String,
    pub prefix: String,
    pub prepend_count: u32,
}

impl From<pb::SteeringPlan> for PlanView {
    fn from(p: pb::SteeringPlan) -> Self {
        PlanView {
            anycast: p
                .anycast
                .into_iter()
                .map(|a| AnycastView {
                    action: anycast_name(a.action),
                    pop: a.pop,
                    prefix: a.prefix,
                    prepend_count: a.prepend_count,
                })
                .collect(),
            content_hash: p.content_hash,
            created_at_unix_ms: unix_ms(&p.created_at),
            dns_ttl_seconds: p.dns_ttl_seconds,
            epoch: p.epoch,
            guardrails: p.guardrails,
            pops: p
                .pops
                .into_iter()
                .map(|s| PopPlanView {
                    capacity: s.capacity,
                    load: s.load,
                    pop: s.pop,
                    state: plan_state_name(s.state),
                    utilisation: s.utilisation,
                })
                .collect(),
            published_by: p.published_by,
            reasons: p.reasons,
            regions: p
                .regions
                .into_iter()
                .map(|r| RegionWeightsView {
                    region: r.region,
                    pops: r
                        .pops
                        .into_iter()
                        .map(|w| PopWeightView {
                            ipv4: w.ipv4,
                            ipv6: w.ipv6,
                            pop: w.pop,
                            weight: w.weight,
                        })
                        .collect(),
                })
                .collect(),
            restored_from: (p.restored_from != 0).then_some(p.restored_from),
            topology_revision: p.topology_revision,
            version: p.version,
        }
    }
}

/// `meridianctl what-if`: the plan steering would publish and the guardrails that
/// would fire.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WhatIfView {
    pub guardrails_fired: Vec<String>,
    pub plan: PlanView,
}

impl From<pb::WhatIfResponse> for WhatIfView {
    fn from(resp: pb::WhatIfResponse) -> Self {
        WhatIfView {
            guardrails_fired: resp.guardrails_fired,
            plan: resp.plan.unwrap_or_default().into(),
        }
    }
}

/// One agent of `meridianctl agents`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentView {
    pub agent_id: String,
    pub applied_version: u64,
    /// `dns` or `anycast`.
    pub kind: &'static str,
    /// Why it rejected `nacked_version`; `null` when it rejected nothing.
    pub nack_reason: Option<String>,
    pub nacked_version: Option<u64>,
    /// The replica it is connected to.
    pub replica: String,
    /// `canary` or `fleet`; `null` when no canary wave is configured.
    pub wave: Option<String>,
    /// The plan version a canary wave holds it on; `null` when not held.
    pub held_on_version: Option<u64>,
    /// An Anycast agent's last report per prefix (empty for DNS agents).
    pub anycast: Vec<AnycastStatusView>,
}

/// One prefix an Anycast agent reported: what the plan asks for and what its BGP
/// speaker announces.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnycastStatusView {
    pub prefix: String,
    /// announce, prepend, graceful_shutdown or withdraw.
    pub desired: &'static str,
    pub desired_prepend: u32,
    pub actual: &'static str,
    pub actual_prepend: u32,
    /// Whether the speaker announces what the plan asks for.
    pub in_sync: bool,
    /// Why they differ; `null` when they agree.
    pub detail: Option<String>,
    pub plan_version: u64,
}

impl From<pb::AnycastPrefixState> for AnycastStatusView {
    fn from(p: pb::AnycastPrefixState) -> Self {
        let (desired, actual) = (anycast_name(p.desired), anycast_name(p.actual));
        AnycastStatusView {
            in_sync: desired == actual && (desired != "prepend" || p.desired_prepend == p.actual_prepend),
            prefix: p.prefix,
            desired,
            desired_prepend: p.desired_prepend,
            actual,
            actual_prepend: p.actual_prepend,
            detail: (!p.detail.is_empty()).then_some(p.detail),
            plan_version: p.plan_version,
        }
    }
}

impl From<pb::AgentInfo> for AgentView {
    fn from(a: pb::AgentInfo) -> Self {
        AgentView {
            agent_id: a.agent_id,
            applied_version: a.applied_version,
            kind: if a.kind == pb::AgentKind::Anycast as i32 {
                "anycast"
            } else {
                "dns"
            },
            nack_reason: (!a.nack_reason.is_empty()).then_some(a.nack_reason),
            nacked_version: (a.nacked_version != 0).then_some(a.nacked_version),
            replica: a.replica_id,
            wave: (!a.wave.is_empty()).then_some(a.wave),
            held_on_version: (a.held_on_version != 0).then_some(a.held_on_version),
            anycast: a.anycast.into_iter().map(AnycastStatusView::from).collect(),
        }
    }
}

// ---------------------------------------------------------------------------
// mutations
// ---------------------------------------------------------------------------

/// The change a drain, undrain, set-capacity or change action recorded, and one row
/// of `meridianctl changes`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeView {
    pub id: String,
    pub reason: String,
    /// pending, progressing, paused, completed, rolling_back, rolled_back, reverted.
    pub state: &'static str,
    pub summary: String,
    /// The rung (1-based) an active change is on; 0 before it starts.
    pub step: u32,
    pub total_steps: u32,
    pub started_by: String,
    /// drain, undrain, set_capacity, weight_override, topology_apply, plan_restore,
    /// auto_failover, auto_failback (empty from a control plane that does not say).
    pub kind: String,
    /// The PoP (or `topology`) the change holds.
    pub target: String,
    /// apply, await_canary, canary_bake, canary_analyse, await_acks, bake, analyse;
    /// `null` when the change is not progressing.
    pub phase: Option<String>,
}

/// A change state's name.
pub fn change_state_name(state: i32) -> &'static str {
    match pb::ChangeState::try_from(state) {
        Ok(pb::ChangeState::Pending) => "pending",
        Ok(pb::ChangeState::Progressing) => "progressing",
        Ok(pb::ChangeState::Paused) => "paused",
        Ok(pb::ChangeState::Completed) => "completed",
        Ok(pb::ChangeState::RollingBack) => "rolling_back",
        Ok(pb::ChangeState::RolledBack) => "rolled_back",
        Ok(pb::ChangeState::Reverted) => "reverted",
        _ => "unknown",
    }
}

impl From<pb::ChangeRecord> for ChangeView {
    fn from(c: pb::ChangeRecord) -> Self {
        ChangeView {
            id: c.id,
            reason: c.reason,
            state: change_state_name(c.state),
            summary: c.summary,
            step: c.step,
            total_steps: c.total_steps,
            started_by: c.started_by,
            kind: c.kind,
            target: c.target,
            phase: (!c.phase.is_empty()).then_some(c.phase),
        }
    }
}

/// `meridianctl change show ID` (and each JSON line of `--watch`): the whole record
/// and how far the fleet has got. Keys print in declaration order; times are Unix
/// milliseconds (`null` when the control plane did not say), bakes milliseconds.
/// The bake's progress and time left are not here: they depend on the reader's
/// clock, so scripts compute them from `phase_since_unix_ms` and
/// `phase_deadline_unix_ms`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeDetailView {
    pub id: String,
    /// As in [`ChangeView::kind`].
    pub kind: String,
    /// The PoP (or `topology`) the change holds.
    pub target: String,
    /// The client regions it is limited to; empty: every region.
    pub regions: Vec<String>,
    /// Who started it (the authenticated identity), or the rule that did.
    pub started_by: String,
    /// The role they acted with; empty when none applies.
    pub role: String,
    pub reason: String,
    /// As in [`ChangeView::state`].
    pub state: &'static str,
    /// Why it is paused or rolling back; `null` otherwise.
    pub state_reason: Option<String>,
    pub summary: String,
    /// The rung (1-based) it is on; 0 before it starts and once rolled back.
    pub step: u32,
    pub total_steps: u32,
    /// The ladder's rungs (empty for a change in one step).
    pub steps: Vec<ChangeStepView>,
    /// As in [`ChangeView::phase`].
    pub phase: Option<String>,
    /// When the phase started (ACKs awaited since, bake since).
    pub phase_since_unix_ms: Option<i64>,
    /// While baking: when the bake ends.
    pub phase_deadline_unix_ms: Option<i64>,
    /// The canary wave each rung goes to first; empty: straight to the fleet.
    pub canary_agents: Vec<String>,
    /// The last analysis, one entry per check.
    pub analysis: Vec<ChangeCheckView>,
    /// How many agents have the current plan; `null` when it could not be read
    /// (`agents_error` says why).
    pub agents: Option<AgentsAckView>,
    pub agents_error: Option<String>,
    /// Every transition, oldest first.
    pub history: Vec<ChangeTransitionView>,
    pub created_at_unix_ms: Option<i64>,
    pub updated_at_unix_ms: Option<i64>,
}

/// One rung of a ladder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeStepView {
    /// The share of its weight the PoP keeps on this rung.
    pub weight_percent: u32,
    pub bake_ms: u64,
}

/// One check of an analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeCheckView {
    pub name: String,
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: String,
    pub why: String,
}

/// One transition of a change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeTransitionView {
    /// RFC 3339 UTC (`at_unix_ms` is the same instant).
    pub at: Option<String>,
    pub at_unix_ms: Option<i64>,
    pub from: String,
    pub to: String,
    pub why: String,
}

/// The agents against the current plan (from `ListAgents` and `GetPlan`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentsAckView {
    /// The current plan version; 0 when none is published.
    pub plan_version: u64,
    /// Connected agents.
    pub total: usize,
    /// Agents whose applied version is at least `plan_version`.
    pub acked: usize,
    /// Agents not on the current plan and not held by a canary wave.
    pub behind: Vec<AgentVersionView>,
    /// Agents a canary wave holds on an earlier version (`version` is that one).
    pub held: Vec<AgentVersionView>,
}

/// An agent and a plan version (the one it applied, or the one it is held on).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentVersionView {
    pub agent_id: String,
    pub version: u64,
}

impl AgentsAckView {
    /// The agents of `agents` against plan `plan_version`.
    pub fn new(plan_version: u64, agents: &[pb::AgentInfo]) -> Self {
        AgentsAckView {
            plan_version,
            total: agents.len(),
            acked: agents.iter().filter(|a| a.applied_version >= plan_version).count(),
            behind: agents
                .iter()
                .filter(|a| a.applied_version < plan_version && a.held_on_version == 0)
                .map(|a| AgentVersionView {
                    agent_id: a.agent_id.clone(),
                    version: a.applied_version,
                })
                .collect(),
            held: agents
                .iter()
                .filter(|a| a.held_on_version != 0)
                .map(|a| AgentVersionView {
                    agent_id: a.agent_id.clone(),
                    version: a.held_on_version,
                })
                .collect(),
        }
    }
}

impl ChangeDetailView {
    /// The view of `c`, with the agents against the current plan or why they could
    /// not be read.
    pub fn new(c: pb::ChangeRecord, agents: Result<AgentsAckView, String>) -> Self {
        let (agents, agents_error) = match agents {
            Ok(a) => (Some(a), None),
            Err(e) => (None, Some(e)),
        };
        ChangeDetailView {
            id: c.id,
            kind: c.kind,
            target: c.target,
            regions: c.regions,
            started_by: c.started_by,
            role: c.role,
            reason: c.reason,
            state: change_state_name(c.state),
            state_reason: (!c.state_reason.is_empty()).then_some(c.state_reason),
            summary: c.summary,
            step: c.step,
            total_steps: c.total_steps,
            steps: c
                .steps
                .iter()
                .map(|s| ChangeStepView {
                    weight_percent: s.weight_percent,
                    bake_ms: s.bake_ms,
                })
                .collect(),
            phase: (!c.phase.is_empty()).then_some(c.phase),
            phase_since_unix_ms: unix_ms(&c.phase_since),
            phase_deadline_unix_ms: unix_ms(&c.phase_deadline),
            canary_agents: c.canary_agents,
            analysis: c
                .analysis
                .into_iter()
                .map(|a| ChangeCheckView {
                    name: a.name,
                    verdict: a.verdict,
                    why: a.why,
                })
                .collect(),
            agents,
            agents_error,
            history: c
                .history
                .into_iter()
                .map(|t| {
                    let at_unix_ms = unix_ms(&t.at);
                    ChangeTransitionView {
                        at: at_unix_ms.and_then(rfc3339_ms),
                        at_unix_ms,
                        from: t.from,
                        to: t.to,
                        why: t.why,
                    }
                })
                .collect(),
            created_at_unix_ms: unix_ms(&c.created_at),
            updated_at_unix_ms: unix_ms(&c.updated_at),
        }
    }

    /// Why it is where it is: the state's reason; for a rolled-back change the
    /// reason of its move to rolling back (the cause, not "intents restored"); else
    /// the last transition's.
    pub fn why(&self) -> &str {
        if let Some(r) = &self.state_reason {
            return r;
        }
        let cause = (self.state == "rolled_back")
            .then(|| self.history.iter().rev().find(|t| t.to.starts_with("rolling_back")))
            .flatten();
        cause.or(self.history.last()).map_or("", |t| t.why.as_str())
    }
}

/// `meridianctl freeze` / `unfreeze`: every freeze in force after the call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FreezeView {
    /// Whether any freeze (global, PoP or region) is in force.
    pub frozen: bool,
    /// When the last freeze in force ends, RFC 3339 (`null` when not frozen).
    pub until: Option<String>,
    /// The global freeze first, then PoPs, then regions.
    pub freezes: Vec<ActiveFreezeView>,
}

/// One freeze in force.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveFreezeView {
    /// `global`, `pop` or `region`.
    pub scope: String,
    /// The PoP or region id (`null` for the global freeze).
    pub target: Option<String>,
    pub reason: String,
    pub requested_by: String,
    /// RFC 3339.
    pub until: Option<String>,
}

impl From<pb::FreezeResponse> for FreezeView {
    fn from(r: pb::FreezeResponse) -> Self {
        FreezeView {
            frozen: r.frozen,
            until: unix_ms(&r.until).and_then(rfc3339_ms),
            freezes: r
                .freezes
                .into_iter()
                .map(|f| ActiveFreezeView {
                    scope: if f.scope.is_empty() { "unknown".into() } else { f.scope },
                    target: (!f.target.is_empty()).then_some(f.target),
                    reason: f.reason,
                    requested_by: f.requested_by,
                    until: unix_ms(&f.until).and_then(rfc3339_ms),
                })
                .collect(),
        }
    }
}

/// `meridianctl resume-steering`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResumeView {
    /// Whether a pin was in force and is now lifted.
    pub was_pinned: bool,
}

/// `meridianctl apply`: what was (or would be) changed, or why nothing was.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApplyView {
    /// The file as named on the command line.
    pub file: String,
    pub dry_run: bool,
    pub applied: bool,
    pub topology_revision: u64,
    pub diff: Vec<String>,
    /// Every validation error with its path; non-empty means nothing was stored.
    pub errors: Vec<String>,
}

impl ApplyView {
    /// The view of the answer to applying `file`.
    pub fn new(file: String, dry_run: bool, resp: pb::ApplyTopologyResponse) -> Self {
        ApplyView {
            file,
            dry_run,
            applied: resp.applied,
            topology_revision: resp.topology_revision,
            diff: resp.diff,
            errors: resp.errors,
        }
    }
}

// ---------------------------------------------------------------------------
// names of wire enums and units
// ---------------------------------------------------------------------------

/// `UP`, `DOWN`, `DEGRADED`; anything else (unspecified, unknown, a value this CLI
/// does not know) is `UNKNOWN`, which never reads as healthy or failed.
pub fn state_name(state: i32) -> &'static str {
    match pb::PopState::try_from(state) {
        Ok(pb::PopState::Up) => "UP",
        Ok(pb::PopState::Down) => "DOWN",
        Ok(pb::PopState::Degraded) => "DEGRADED",
        _ => "UNKNOWN",
    }
}

/// A PoP's state in a plan, lowercase as the plan's JSON has always shown it; a
/// value this CLI does not know is `unknown`.
pub fn plan_state_name(state: i32) -> &'static str {
    match pb::PopState::try_from(state) {
        Ok(pb::PopState::Up) => "up",
        Ok(pb::PopState::Down) => "down",
        Ok(pb::PopState::Degraded) => "degraded",
        Ok(pb::PopState::Drained) => "drained",
        _ => "unknown",
    }
}

/// The failure class's name, through the one wire conversion; unspecified (a
/// success) is `none` and an unknown value is `other`.
pub fn failure_name(class: i32) -> &'static str {
    match failure_class_from_wire(class) {
        Ok(class) => class.as_str(),
        Err(FailureClassError::Unspecified) => "none",
        Err(FailureClassError::Unknown(_)) => "other",
    }
}

/// The Anycast action's name; an unknown value is `unspecified`.
pub fn anycast_name(action: i32) -> &'static str {
    match pb::AnycastAction::try_from(action) {
        Ok(pb::AnycastAction::Announce) => "announce",
        Ok(pb::AnycastAction::Prepend) => "prepend",
        Ok(pb::AnycastAction::GracefulShutdown) => "graceful_shutdown",
        Ok(pb::AnycastAction::Withdraw) => "withdraw",
        _ => "unspecified",
    }
}

fn backend_name(backend: i32) -> &'static str {
    match pb::StoreBackend::try_from(backend) {
        Ok(pb::StoreBackend::Etcd) => "etcd",
        Ok(pb::StoreBackend::Embedded) => "embedded",
        _ => "unknown",
    }
}

/// A wire duration in milliseconds; `None` when absent.
fn millis(d: &Option<meridian_proto::prost_types::Duration>) -> Option<f64> {
    d.as_ref().map(|d| d.seconds as f64 * 1000.0 + f64::from(d.nanos) / 1e6)
}

/// A wire timestamp in Unix milliseconds; `None` when absent.
/// `ms` since the Unix epoch as an RFC 3339 UTC time with milliseconds; `None`
/// before the epoch (which no event has).
pub(crate) fn rfc3339_ms(ms: i64) -> Option<String> {
    let ms = u64::try_from(ms).ok()?;
    let t = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms))?;
    Some(humantime::format_rfc3339_millis(t).to_string())
}

fn unix_ms(t: &Option<meridian_proto::prost_types::Timestamp>) -> Option<i64> {
    t.as_ref().map(|t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000))
}
#[cfg(test)]
mod tests;
