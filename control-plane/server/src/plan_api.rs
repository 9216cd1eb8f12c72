//! `PlanService.WatchPlan`: agents subscribe on any replica, receive the current plan
//! at once and every newer version after it, and answer each with ACK or NACK.
//!
//! Each replica keeps a registry of its connected agents and mirrors it into the
//! store (`agents/<replica>`, refreshed while it changes), so `meridianctl agents` on
//! any replica shows every agent and the version it applied.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use meridian_core::keys::Keys;
use meridian_core::records::{AgentKind, AgentRecord, AgentTable, ReplicaRecord, StoredPlan};
use meridian_proto::v1 as pb;
use meridian_store::Store;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::convert::{now_ms, plan_to_pb};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// How long an agent has to say hello after opening the stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The agents connected to this replica.
#[derive(Default)]
pub struct AgentRegistry {
    agents: Mutex<BTreeMap<String, AgentRecord>>,
    changed: tokio::sync::Notify,
}

impl AgentRegistry {
    fn update(&self, agent: &str, f: impl FnOnce(&mut AgentRecord)) {
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rec) = agents.get_mut(agent) {
            f(rec);
        }
        drop(agents);
        self.changed.notify_one();
    }

    fn insert(&self, rec: AgentRecord) {
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        agents.insert(rec.agent_id.clone(), rec);
        metrics::gauge!("meridian_control_plane_agents_connected").set(agents.len() as f64);
        drop(agents);
        self.changed.notify_one();
    }

    /// Removes `agent` if the record is still the one connected at `since` (a
    /// reconnect of the same agent replaces it and must not be removed by the old
    /// stream's cleanup).
    fn remove(&self, agent: &str, since: u64) {
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        if agents.get(agent).is_some_and(|r| r.connected_at_unix_ms == since) {
            agents.remove(agent);
        }
        metrics::gauge!("meridian_control_plane_agents_connected").set(agents.len() as f64);
        drop(agents);
        self.changed.notify_one();
    }

    pub fn snapshot(&self) -> Vec<AgentRecord> {
        self.agents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

pub(crate) struct PlanApi {
    pub plan: watch::Receiver<Option<Arc<StoredPlan>>>,
    /// A canary wave's hold on the fleet, when one is in force.
    pub fleet_hold: watch::Receiver<Option<Arc<crate::plans::HeldFleet>>>,
    pub registry: Arc<AgentRegistry>,
    /// Plan watches open at once (`limits.max_agent_streams`).
    pub streams: Arc<crate::limits::StreamCap>,
}

#[tonic::async_trait]
impl pb::plan_service_server::PlanService for PlanApi {
    type WatchPlanStream = BoxStream<pb::PlanUpdate>;

    async fn watch_plan(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::WatchPlanStream>, Status> {
        let principal = req.extensions().get::<crate::authz::Principal>().cloned();
        let mut inbound = req.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.next()).await {
            Err(_) => {
                return Err(Status::deadline_exceeded(
                    "no AgentHello within 10s of opening WatchPlan",
                ))
            }
            Ok(None) => return Err(Status::cancelled("stream closed before AgentHello")),
            Ok(Some(Err(status))) => return Err(status),
            Ok(Some(Ok(pb::AgentMessage {
                msg: Some(pb::agent_message::Msg::Hello(h)),
            }))) => h,
            Ok(Some(Ok(_))) => {
                return Err(Status::invalid_argument(
                    "the first message on WatchPlan must be an AgentHello",
                ))
            }
        };
        meridian_core::ids::validate_id("agent", &hello.agent_id)
            .map_err(|e| Status::invalid_argument(format!("agent_id: {e}")))?;
        // An authenticated agent registers under its own identity only.
        if let Some(crate::authz::Principal::Agent { identity }) = &principal {
            if identity.as_str() != hello.agent_id {
                metrics::counter!("meridian_control_plane_rpc_denied_total", "reason" => "agent_id_mismatch")
                    .increment(1);
                return Err(Status::permission_denied(format!(
                    "agent {identity} may not register as `{}`: an agent's id is the identity in its credential",
                    hello.agent_id
                )));
            }
        }
        let kind = match pb::AgentKind::try_from(hello.kind) {
            Ok(pb::AgentKind::Dns) => AgentKind::Dns,
            Ok(pb::AgentKind::Anycast) => AgentKind::Anycast,
            _ => {
                return Err(Status::invalid_argument(
                    "kind: must be AGENT_KIND_DNS or AGENT_KIND_ANYCAST",
                ))
            }
        };
        let slot = self.streams.acquire()?;
        let connected_at = now_ms();
        let agent_id = hello.agent_id.clone();
        self.registry.insert(AgentRecord {
            agent_id: agent_id.clone(),
            kind,
            connected_at_unix_ms: connected_at,
            applied_version: hello.applied_version,
            nacked_version: 0,
            nack_reason: String::new(),
            last_sent_version: 0,
            anycast: Vec::new(),
        });
        tracing::info!(agent = %agent_id, kind = kind.as_str(), applied = hello.applied_version, "agent subscribed to plans");

        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::PlanUpdate, Status>>(4);
        let registry = self.registry.clone();
        let mut plan = self.plan.clone();
        let mut hold = self.fleet_hold.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut last_sent = 0u64;
            // The current plan at once (borrow_and_update marks it seen), then every
            // newer version — or, while a canary wave holds the fleet and this agent
            // is not in it, the plan the fleet is held on.
            hold.borrow_and_update();
            let mut pending = serve(&agent_id, plan.borrow_and_update().clone(), &hold.borrow());
            loop {
                if let Some(p) = pending.take() {
                    if p.version > last_sent {
                        if tx
                            .send(Ok(pb::PlanUpdate {
                                plan: Some(plan_to_pb(&p)),
                            }))
                            .await
                            .is_err()
                        {
                            break;
                        }
                        last_sent = p.version;
                        registry.update(&agent_id, |r| r.last_sent_version = last_sent);
                        metrics::counter!("meridian_control_plane_plans_sent_total").increment(1);
                    }
                }
                tokio::select! {
                    changed = plan.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        pending = serve(&agent_id, plan.borrow_and_update().clone(), &hold.borrow());
                    }
                    changed = hold.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        hold.borrow_and_update();
                        pending = serve(&agent_id, plan.borrow().clone(), &hold.borrow());
                    }
                    msg = inbound.next() => match msg {
                        Some(Ok(pb::AgentMessage { msg: Some(pb::agent_message::Msg::Ack(ack)) })) => {
                            metrics::counter!("meridian_control_plane_plan_acks_total").increment(1);
                            // The version the agent now serves: after a store epoch change
                            // it can be lower than before, so it is taken as acked.
                            registry.update(&agent_id, |r| r.applied_version = ack.version);
                        }
                        Some(Ok(pb::AgentMessage { msg: Some(pb::agent_message::Msg::Nack(nack)) })) => {
                            metrics::counter!("meridian_control_plane_plan_nacks_total").increment(1);
                            let reason = cap_reason(&nack.reason);
                            tracing::warn!(agent = %agent_id, version = nack.version, reason = %reason, "agent rejected a plan");
                            registry.update(&agent_id, |r| {
                                r.nacked_version = nack.version;
                                r.nack_reason = reason.clone();
                            });
                        }
                        Some(Ok(pb::AgentMessage { msg: Some(pb::agent_message::Msg::Anycast(report)) })) => {
                            metrics::counter!("meridian_control_plane_anycast_reports_total").increment(1);
                            let (statuses, dropped) = anycast_statuses(&report);
                            if dropped > 0 {
                                tracing::warn!(agent = %agent_id, dropped, "anycast report entries dropped (unknown action, or over the cap)");
                            }
                            registry.update(&agent_id, |r| r.anycast = statuses);
                        }
                        Some(Ok(_)) => tracing::debug!(agent = %agent_id, "ignoring an unexpected message on WatchPlan"),
                        Some(Err(_)) | None => break,
                    },
                }
            }
            registry.remove(&agent_id, connected_at);
            tracing::info!(agent = %agent_id, "agent disconnected");
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

/// The plan `agent` is to be served: the newest, unless a canary wave holds the
/// fleet and the agent is not in the wave.
fn serve(
    agent: &str,
    latest: Option<Arc<StoredPlan>>,
    hold: &Option<Arc<crate::plans::HeldFleet>>,
) -> Option<Arc<StoredPlan>> {
    let latest_version = latest.as_ref().map_or(0, |p| p.version);
    match hold {
        Some(h) if h.hold.holds(agent, latest_version) => {
            metrics::counter!("meridian_control_plane_plans_withheld_total").increment(1);
            h.plan.clone()
        }
        _ => latest,
    }
}

/// Mirrors this replica's agent registry into the store whenever it changes (at most
/// every 200 ms), and removes it on shutdown.
pub async fn mirror_agents(
    store: Arc<dyn Store>,
    keys: Keys,
    me: ReplicaRecord,
    registry: Arc<AgentRegistry>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let key = keys.agents(&me.id);
    let mut last: Option<Vec<AgentRecord>> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_secs(2), store.delete(&key)).await;
                return Ok(());
            }
            _ = registry.changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let agents = registry.snapshot();
        if last.as_ref() == Some(&agents) {
            continue;
        }
        let table = AgentTable {
            replica: me.id.to_string(),
            agents: agents.clone(),
        };
        let Ok(value) = serde_json::to_vec(&table) else {
            continue;
        };
        match store.put(&key, value, None).await {
            Ok(_) => last = Some(agents),
            Err(err) => tracing::warn!(error = %err, "cannot record connected agents in the store"),
        }
    }
}

/// Every agent known to any live replica (tables of dead replicas are ignored).
pub async fn list_agents(
    store: &dyn Store,
    keys: &Keys,
) -> Result<Vec<(String, AgentRecord)>, meridian_store::StoreError> {
    let live: Vec<String> = store
        .range(&keys.replicas_prefix())
        .await?
        .kvs
        .iter()
        .filter_map(|kv| {
            serde_json::from_slice::<ReplicaRecord>(&kv.value)
                .ok()
                .map(|r| r.id.to_string())
        })
        .collect();
    let mut out = Vec::new();
    for kv in store.range(&keys.agents_prefix()).await?.kvs {
        let Ok(table) = serde_json::from_slice::<AgentTable>(&kv.value) else {
            continue;
        };
        if !live.contains(&table.replica) {
            continue;
        }
        out.extend(table.agents.into_iter().map(|a| (table.replica.clone(), a)));
    }
    out.sort_by(|a, b| (&a.1.agent_id, &a.0).cmp(&(&b.1.agent_id, &b.0)));
    Ok(out)
}

/// Prefixes kept from one Anycast report (a peer must not grow the registry
/// without bound).
pub(crate) const MAX_ANYCAST_PREFIXES: usize = 1024;

/// An Anycast report as stored: entries with an unknown or unspecified action are
/// dropped (never defaulted), details capped like NACK reasons, at most
/// [`MAX_ANYCAST_PREFIXES`] kept. Returns the entries and how many were dropped.
pub(crate) fn anycast_statuses(
    report: &pb::AnycastReport,
) -> (Vec<meridian_core::records::AnycastPrefixStatus>, usize) {
    use meridian_core::records::{AnycastAction, AnycastPrefixStatus};
    let action = |a: i32| match pb::AnycastAction::try_from(a) {
        Ok(pb::AnycastAction::Announce) => Some(AnycastAction::Announce),
        Ok(pb::AnycastAction::Prepend) => Some(AnycastAction::Prepend),
        Ok(pb::AnycastAction::GracefulShutdown) => Some(AnycastAction::GracefulShutdown),
        Ok(pb::AnycastAction::Withdraw) => Some(AnycastAction::Withdraw),
        _ => None,
    };
    let mut out = Vec::new();
    for p in report.prefixes.iter().take(MAX_ANYCAST_PREFIXES) {
        let (Some(desired), Some(actual)) = (action(p.desired), action(p.actual)) else {
            continue;
        };
        out.push(AnycastPrefixStatus {
            prefix: p.prefix.chars().take(64).collect(),
            desired,
            desired_prepend: p.desired_prepend,
            actual,
            actual_prepend: p.actual_prepend,
            detail: cap_reason(&p.detail),
            plan_version: p.plan_version,
        });
    }
    let dropped = report.prefixes.len() - out.len();
    (out, dropped)
}

/// The longest NACK reason kept (it is logged and mirrored to the store, so a peer
/// must not be able to grow it without bound).
pub(crate) const MAX_NACK_REASON: usize = 512;

/// `reason` cut to [`MAX_NACK_REASON`] bytes on a character boundary, marked with `…`.
pub(crate) fn cap_reason(reason: &str) -> String {
    if reason.len() <= MAX_NACK_REASON {
        return reason.to_string();
    }
    let mut cut = MAX_NACK_REASON;
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &reason[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anycast_reports_keep_known_actions_only_and_are_capped() {
        let entry = |prefix: &str, desired: pb::AnycastAction, actual: pb::AnycastAction| pb::AnycastPrefixState {
            prefix: prefix.into(),
            desired: desired as i32,
            desired_prepend: 3,
            actual: actual as i32,
            actual_prepend: 1,
            detail: "x".repeat(2_000),
            plan_version: 9,
        };
        let report = pb::AnycastReport {
            prefixes: vec![
                entry("192.0.2.0/24", pb::AnycastAction::Prepend, pb::AnycastAction::Prepend),
                entry(
                    "198.51.100.0/24",
                    pb::AnycastAction::Unspecified,
                    pb::AnycastAction::Announce,
                ),
            ],
        };
        let (kept, dropped) = anycast_statuses(&report);
        assert_eq!((kept.len(), dropped), (1, 1));
        assert_eq!(kept[0].prefix, "192.0.2.0/24");
        assert!(!kept[0].in_sync(), "prepend ×3 desired, ×1 announced");
        assert!(kept[0].detail.len() <= MAX_NACK_REASON + '…'.len_utf8());
        let many = pb::AnycastReport {
            prefixes: (0..2_000)
                .map(|_| entry("192.0.2.0/24", pb::AnycastAction::Announce, pb::AnycastAction::Announce))
                .collect(),
        };
        assert_eq!(anycast_statuses(&many).0.len(), MAX_ANYCAST_PREFIXES);
    }

    #[test]
    fn nack_reasons_are_capped_on_a_character_boundary() {
        assert_eq!(cap_reason("bad plan"), "bad plan");
        let long = "é".repeat(1_000); // 2,000 bytes
        let capped = cap_reason(&long);
        assert!(capped.len() <= MAX_NACK_REASON + '…'.len_utf8(), "{}", capped.len());
        assert!(capped.ends_with('…'));
        assert!(
            capped.trim_end_matches('…').chars().all(|c| c == 'é'),
            "cut on a boundary"
        );
        let exact = "x".repeat(MAX_NACK_REASON);
        assert_eq!(cap_reason(&exact), exact);
    }
}
