//! The gRPC adapter: converts between `meridian.v1` wire types and domain values.
//! Only this module sees prost types.
//!
//! Handlers that later issues fill in answer `UNIMPLEMENTED` with a message naming
//! the issue area, never a made-up answer.

use std::sync::Arc;

use meridian_core::records::{LeaderRecord, PlanPointer, ReplicaRecord};
use meridian_proto::v1 as pb;
use meridian_store::{BackendKind, StoreError, StoreHealth};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::plan_api::PlanApi;
use crate::probe_api::ProbeApi;
use crate::replica::ReplicaContext;
use crate::topology::{self, ApplyError};

const AREA_STEERING: &str = "steering plans and agent fan-out (issue [3])";
const AREA_CHANGES: &str = "staged changes, drains and freezes (issues [3] and later)";

fn unimplemented(what: &str, area: &str) -> Status {
    Status::unimplemented(format!("{what} is not implemented yet: it arrives with {area}"))
}

/// Serves the Meridian API, reflection and the health service until `shutdown`.
pub(crate) async fn serve(
    ctx: ReplicaContext,
    health_service: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("cannot build the reflection service: {e}"))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| format!("cannot build the reflection service: {e}"))?;
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(pb::query_service_server::QueryServiceServer::new(QueryApi {
            ctx: ctx.clone(),
        }))
        .add_service(pb::operator_service_server::OperatorServiceServer::new(OperatorApi {
            ctx: ctx.clone(),
            leader: Default::default(),
        }))
        .add_service(pb::probe_service_server::ProbeServiceServer::new(ProbeApi {
            health: ctx.health.clone(),
            tokens: ctx.prober_tokens.clone(),
            topology: ctx.topology.clone(),
        }))
        .add_service(pb::plan_service_server::PlanServiceServer::new(PlanApi {
            plan: ctx.plan.clone(),
            registry: ctx.agents.clone(),
        }))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
        .await
        .map_err(|e| format!("gRPC server failed: {e}"))
}

struct QueryApi {
    ctx: ReplicaContext,
}

impl QueryApi {
    /// Reads the replica registry, the leader key and the plan pointer. Any store
    /// failure is reported in the answer (store unhealthy) rather than as an error,
    /// so `meridianctl status` can say what is wrong.
    async fn status(&self) -> pb::GetStatusResponse {
        let ctx = &self.ctx;
        let leadership = ctx.leadership.borrow().clone();
        let health = ctx.store_health.borrow().clone();
        let mut store = store_health_to_pb(&health);
        let ready = ctx.ready.borrow().is_ok();
        let mut resp = pb::GetStatusResponse {
            replica_id: ctx.me.id.to_string(),
            is_leader: leadership.is_leader(),
            leader_id: String::new(),
            leader_revision: leadership.leader_revision,
            replicas: Vec::new(),
            store: None,
            plan_version: 0,
            ready,
            software_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        if let Some(value) = &leadership.leader_value {
            if let Ok(leader) = serde_json::from_slice::<LeaderRecord>(value) {
                resp.leader_id = leader.id.to_string();
            }
        }
        let timeout = ctx.request_timeout;
        let read = async {
            let replicas = ctx.store.range(&ctx.keys.replicas_prefix()).await?;
            let leader = ctx.store.get(&ctx.keys.leader()).await?;
            let plan = ctx.store.get(&ctx.keys.plan_current()).await?;
            Ok::<_, meridian_store::StoreError>((replicas, leader, plan))
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(Ok((replicas, leader, plan))) => {
                let leader = leader.and_then(|kv| {
                    serde_json::from_slice::<LeaderRecord>(&kv.value)
                        .ok()
                        .map(|r| (r, kv.create_revision))
                });
                if let Some((leader, rev)) = &leader {
                    resp.leader_id = leader.id.to_string();
                    resp.leader_revision = *rev;
                } else {
                    resp.leader_id.clear();
                }
                for kv in replicas.kvs {
                    match serde_json::from_slice::<ReplicaRecord>(&kv.value) {
                        Ok(r) => resp
                            .replicas
                            .push(replica_to_pb(&r, leader.as_ref().is_some_and(|(l, _)| l.id == r.id))),
                        Err(e) => tracing::warn!(key = %kv.key, error = %e, "unreadable replica record; skipped"),
                    }
                }
                if let Some(kv) = plan {
                    match serde_json::from_slice::<PlanPointer>(&kv.value) {
                        Ok(p) => resp.plan_version = p.version,
                        Err(e) => tracing::warn!(key = %kv.key, error = %e, "unreadable plan pointer"),
                    }
                }
                store.revision = replicas.revision;
            }
            Ok(Err(err)) => {
                store.healthy = false;
                store.detail = format!("reading status failed: {}", error_chain(&err));
                resp.replicas.push(replica_to_pb(&ctx.me, leadership.is_leader()));
            }
            Err(_) => {
                store.healthy = false;
                store.detail = format!("reading status timed out after {timeout:?}");
                resp.replicas.push(replica_to_pb(&ctx.me, leadership.is_leader()));
            }
        }
        resp.store = Some(store);
        resp
    }
}

#[tonic::async_trait]
impl pb::query_service_server::QueryService for QueryApi {
    async fn get_status(&self, _req: Request<pb::GetStatusRequest>) -> Result<Response<pb::GetStatusResponse>, Status> {
        Ok(Response::new(self.status().await))
    }
    async fn get_plan(&self, req: Request<pb::GetPlanRequest>) -> Result<Response<pb::GetPlanResponse>, Status> {
        let req = req.into_inner();
        let plan = if req.version == 0 {
            match self.ctx.plan.borrow().clone() {
                Some(p) => p,
                None => {
                    return Err(Status::not_found(
                        "no plan has been published yet (apply a topology first)",
                    ))
                }
            }
        } else {
            match crate::plans::load(self.ctx.store.as_ref(), &self.ctx.keys, req.version).await {
                Ok(p) => Arc::new(p),
                Err(crate::plans::PlanError::NoSuchVersion(v)) => {
                    return Err(Status::not_found(format!("plan version {v} does not exist")))
                }
                Err(e) => return Err(Status::unavailable(e.to_string())),
            }
        };
        let mut wire = convert::plan_to_pb(&plan);
        if !req.region.is_empty() {
            wire.regions.retain(|r| r.region == req.region);
            if wire.regions.is_empty() {
                return Err(Status::not_found(format!(
                    "region `{}` is not in plan version {}",
                    req.region, plan.version
                )));
            }
        }
        Ok(Response::new(pb::GetPlanResponse { plan: Some(wire) }))
    }
    async fn get_health(&self, _req: Request<pb::GetHealthRequest>) -> Result<Response<pb::GetHealthResponse>, Status> {
        let now = meridian_health::UnixMillis(convert::now_ms());
        let (rows, suspects) = {
            let state = self.ctx.health.lock();
            (
                state.matrix(now),
                state.suspect_regions().into_iter().map(|s| s.region).collect(),
            )
        };
        Ok(Response::new(convert::health_matrix(rows, suspects)))
    }
    async fn explain_pop(
        &self,
        req: Request<pb::ExplainPopRequest>,
    ) -> Result<Response<pb::ExplainPopResponse>, Status> {
        let pop = req.into_inner().pop;
        let now = meridian_health::UnixMillis(convert::now_ms());
        let explanation = self.ctx.health.lock().explain(&pop, now);
        match explanation {
            Some(e) => Ok(Response::new(convert::explanation(e))),
            None => Err(Status::not_found(format!(
                "unknown PoP `{pop}`: it is not in the applied topology"
            ))),
        }
    }
    async fn list_changes(
        &self,
        _req: Request<pb::ListChangesRequest>,
    ) -> Result<Response<pb::ListChangesResponse>, Status> {
        Err(unimplemented("ListChanges", AREA_CHANGES))
    }
    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let req = req.into_inner();
        let limit = if req.limit == 0 { 100 } else { req.limit.min(2000) } as usize;
        let pop = (!req.pop.is_empty()).then_some(req.pop.as_str());
        let replica = self.ctx.me.id.to_string();
        let events = self
            .ctx
            .health
            .events(limit, pop)
            .into_iter()
            .map(|e| convert::event(e, &replica))
            .collect();
        Ok(Response::new(pb::ListEventsResponse { events }))
    }
    async fn get_slo(&self, _req: Request<pb::GetSloRequest>) -> Result<Response<pb::GetSloResponse>, Status> {
        Err(unimplemented("GetSlo", "SLOs and error budgets (a later issue)"))
    }
    async fn what_if(&self, req: Request<pb::WhatIfRequest>) -> Result<Response<pb::WhatIfResponse>, Status> {
        let scenario = match req.into_inner().scenario {
            Some(pb::what_if_request::Scenario::DrainPop(p)) => meridian_steering::Scenario::Drain(p),
            Some(pb::what_if_request::Scenario::DownPop(p)) => meridian_steering::Scenario::Down(p),
            None => return Err(Status::invalid_argument("scenario: give drain_pop or down_pop")),
        };
        let applied = self.ctx.topology.borrow().clone();
        if applied.revision == 0 {
            return Err(Status::failed_precondition("no topology applied yet"));
        }
        let drains = self.ctx.intents.borrow().drains.clone();
        let state = self.ctx.health.lock();
        let input = crate::steering::build_input(&applied.doc, &state, &drains);
        let (plan, fired) = match meridian_steering::what_if(&input, &scenario) {
            Ok(r) => r,
            Err(meridian_steering::SteeringError::UnknownPop { pop }) => {
                return Err(Status::not_found(format!(
                    "unknown PoP `{pop}` (not in the applied topology)"
                )))
            }
            Err(e) => return Err(Status::invalid_argument(e.to_string())),
        };
        let stored = crate::steering::to_stored(
            &plan,
            &applied.doc,
            &state,
            applied.revision,
            "what-if",
            vec![format!("what if: {scenario:?}")],
        );
        Ok(Response::new(pb::WhatIfResponse {
            plan: Some(convert::plan_to_pb(&stored)),
            guardrails_fired: fired.iter().map(|f| f.to_string()).collect(),
        }))
    }
    async fn list_agents(
        &self,
        _req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let listed = crate::plan_api::list_agents(self.ctx.store.as_ref(), &self.ctx.keys)
            .await
            .map_err(|e| Status::unavailable(format!("cannot read the agent registry: {}", error_chain(&e))))?;
        let agents = listed
            .into_iter()
            .map(|(replica, a)| pb::AgentInfo {
                agent_id: a.agent_id,
                kind: (if a.kind == "anycast" {
                    pb::AgentKind::Anycast
                } else {
                    pb::AgentKind::Dns
                }) as i32,
                replica_id: replica,
                applied_version: a.applied_version,
                nacked_version: a.nacked_version,
                nack_reason: a.nack_reason,
                connected_at: Some(convert::timestamp_ms(a.connected_at_unix_ms)),
            })
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }
}

/// The leader's fence when this replica leads; otherwise returns from the handler with
/// the leader's answer to the same request, forwarded (and marked so it is never
/// forwarded twice).
macro_rules! fence_or_forward {
    ($api:expr, $req:ident, $method:ident) => {
        match $api.route($req.metadata()).await? {
            Route::Local(fence) => fence,
            Route::Forward(channel) => {
                let mut client = pb::operator_service_client::OperatorServiceClient::new(channel);
                return client.$method($api.forwarded($req.into_inner())).await;
            }
        }
    };
}

/// Marks a request a follower forwarded to the leader, so it is never forwarded twice.
const FORWARDED: &str = "x-meridian-forwarded-by";

struct OperatorApi {
    ctx: ReplicaContext,
    /// The leader's address and a channel to it, reused while the leader stays.
    leader: tokio::sync::Mutex<Option<(String, tonic::transport::Channel)>>,
}

/// Where a mutation runs.
enum Route {
    /// Here: this replica leads under this fence.
    Local(meridian_store::Fence),
    /// At the leader, over this channel.
    Forward(tonic::transport::Channel),
}

impl OperatorApi {
    /// Mutations run on the leader: here when we lead, else forwarded to it.
    async fn route(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Route, Status> {
        let view = self.ctx.leadership.borrow().clone();
        if let Some(fence) = view.fence {
            return Ok(Route::Local(fence));
        }
        if metadata.contains_key(FORWARDED) {
            return Err(Status::unavailable(
                "this replica is no longer the leader (leadership is moving); retry",
            ));
        }
        let leader = view
            .leader_value
            .as_deref()
            .and_then(|v| serde_json::from_slice::<LeaderRecord>(v).ok())
            .ok_or_else(|| Status::unavailable("no leader is elected right now; retry in a few seconds"))?;
        let mut cached = self.leader.lock().await;
        if let Some((addr, channel)) = cached.as_ref() {
            if *addr == leader.grpc_address {
                return Ok(Route::Forward(channel.clone()));
            }
        }
        let channel = tonic::transport::Endpoint::from_shared(leader.grpc_address.clone())
            .map_err(|e| {
                Status::internal(format!(
                    "leader {} advertises an invalid address {}: {e}",
                    leader.id, leader.grpc_address
                ))
            })?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .connect_lazy();
        *cached = Some((leader.grpc_address.clone(), channel.clone()));
        Ok(Route::Forward(channel))
    }

    /// Records an operator mutation in the event log (who, what, why).
    fn operator_event(&self, kind: &str, pop: Option<&str>, message: String, evidence: Vec<String>) {
        self.ctx.health.record_control(crate::health::ControlEvent {
            at_unix_ms: convert::now_ms(),
            kind: kind.to_string(),
            pop: pop.map(str::to_string),
            actor: "operator".into(),
            message,
            evidence,
        });
    }

    fn forwarded<T>(&self, message: T) -> Request<T> {
        let mut req = Request::new(message);
        if let Ok(v) = self.ctx.me.id.as_str().parse() {
            req.metadata_mut().insert(FORWARDED, v);
        }
        req
    }
}

/// A store error as a gRPC status: a lost fence means leadership moved (retry).
fn store_status(err: StoreError) -> Status {
    match err {
        e @ StoreError::FenceLost { .. } => Status::unavailable(format!("{e}; retry")),
        e => Status::unavailable(format!("store error: {}", error_chain(&e))),
    }
}

/// A one-step change record for operator actions applied at once (staged changes
/// arrive in a later issue).
fn completed_change(kind: &str, pop: &str, revision: i64, reason: &str, summary: String) -> pb::ChangeRecord {
    let now = convert::timestamp_ms(convert::now_ms());
    pb::ChangeRecord {
        id: format!("{kind}-{pop}-{revision}"),
        started_by: "operator".into(),
        reason: reason.to_string(),
        state: pb::ChangeState::Completed as i32,
        step: 1,
        total_steps: 1,
        created_at: Some(now),
        updated_at: Some(now),
        summary,
    }
}

fn apply_error_to_status(err: ApplyError) -> Status {
    match err {
        ApplyError::Invalid(e) => Status::invalid_argument(e.to_string()),
        ApplyError::Conflict(_) => Status::aborted(err.to_string()),
        ApplyError::Corrupt { .. } => Status::internal(err.to_string()),
        ApplyError::Store(e @ StoreError::FenceLost { .. }) => Status::unavailable(format!("{e}; retry")),
        ApplyError::Store(e) => Status::unavailable(format!("store error: {}", error_chain(&e))),
    }
}

#[tonic::async_trait]
impl pb::operator_service_server::OperatorService for OperatorApi {
    async fn apply_topology(
        &self,
        req: Request<pb::ApplyTopologyRequest>,
    ) -> Result<Response<pb::ApplyTopologyResponse>, Status> {
        let ctx = &self.ctx;
        let body = req.get_ref();
        // A dry run writes nothing, so any replica answers it.
        let route = if body.dry_run {
            None
        } else {
            Some(self.route(req.metadata()).await?)
        };
        let fence = match route {
            Some(Route::Forward(channel)) => {
                let mut client = pb::operator_service_client::OperatorServiceClient::new(channel);
                return client.apply_topology(self.forwarded(req.into_inner())).await;
            }
            Some(Route::Local(fence)) => Some(fence),
            None => None,
        };
        let body = req.into_inner();
        let outcome = match topology::apply(
            ctx.store.as_ref(),
            &ctx.keys,
            fence.as_ref(),
            &body.topology_toml,
            body.dry_run,
        )
        .await
        {
            Ok(o) => o,
            // Validation errors are an answer, listed one per line, not a failure.
            Err(ApplyError::Invalid(errors)) => {
                return Ok(Response::new(pb::ApplyTopologyResponse {
                    applied: false,
                    diff: Vec::new(),
                    errors: errors.0.iter().map(|e| e.to_string()).collect(),
                    topology_revision: 0,
                }))
            }
            Err(e) => return Err(apply_error_to_status(e)),
        };
        if outcome.applied {
            tracing::info!(revision = outcome.revision, changes = outcome.diff.len(), reason = %body.reason, "topology applied");
            metrics::counter!("meridian_control_plane_topology_applies_total").increment(1);
            self.operator_event(
                "topology_applied",
                None,
                format!("topology applied at revision {}: {}", outcome.revision, body.reason),
                outcome.diff.clone(),
            );
        }
        Ok(Response::new(pb::ApplyTopologyResponse {
            applied: outcome.applied,
            diff: outcome.diff,
            errors: Vec::new(),
            topology_revision: outcome.revision.max(0) as u64,
        }))
    }

    async fn drain(&self, req: Request<pb::DrainRequest>) -> Result<Response<pb::ChangeResponse>, Status> {
        let fence = fence_or_forward!(self, req, drain);
        let body = req.into_inner();
        if body.reason.trim().is_empty() {
            return Err(Status::invalid_argument(
                "reason: a drain needs a reason (it is recorded with the change)",
            ));
        }
        if !body.regions.is_empty() {
            return Err(Status::unimplemented(
                "regions: per-region drains arrive with staged changes (a later issue)",
            ));
        }
        let ctx = &self.ctx;
        let applied = ctx.topology.borrow().clone();
        if applied.doc.pop(&body.pop).is_none() {
            return Err(Status::not_found(format!(
                "pop: unknown PoP `{}` (not in the applied topology)",
                body.pop
            )));
        }
        let drains = ctx.intents.borrow().drains.clone();
        if drains.contains_key(&body.pop) {
            return Err(Status::already_exists(format!("PoP `{}` is already drained", body.pop)));
        }
        let input = {
            let state = ctx.health.lock();
            crate::steering::build_input(&applied.doc, &state, &drains)
        };
        let firings = match meridian_steering::check_drain(&input, &body.pop, body.force) {
            Ok(f) => f,
            Err(meridian_steering::DrainError::Refused(f)) => {
                return Err(Status::failed_precondition(format!(
                    "drain of {} refused by guardrail `{}`: {}. Re-run with --force and a reason to override.",
                    body.pop, f.rule, f.detail
                )))
            }
            Err(meridian_steering::DrainError::Input(e)) => return Err(Status::invalid_argument(e.to_string())),
        };
        let forced_past = (!firings.is_empty()).then(|| {
            firings
                .iter()
                .map(|f| f.rule.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        });
        let intent = meridian_core::records::DrainIntent {
            pop: body.pop.clone(),
            reason: body.reason.clone(),
            requested_by: "operator".into(),
            at_unix_ms: convert::now_ms(),
            forced_past: forced_past.clone(),
        };
        let value = serde_json::to_vec(&intent).map_err(|e| Status::internal(e.to_string()))?;
        let txn = meridian_store::Txn::new().and_then([meridian_store::TxnOp::put(ctx.keys.drain(&body.pop), value)]);
        let resp = meridian_store::election::fenced_txn(ctx.store.as_ref(), &fence, txn)
            .await
            .map_err(store_status)?;
        tracing::warn!(pop = %body.pop, reason = %body.reason, forced_past = ?forced_past, "PoP drained by an operator");
        self.operator_event(
            "drain",
            Some(&body.pop),
            format!("PoP {} drained: {}", body.pop, body.reason),
            forced_past
                .iter()
                .map(|r| format!("forced past guardrail {r}"))
                .collect(),
        );
        metrics::counter!("meridian_control_plane_drains_total").increment(1);
        let mut summary = format!("PoP {} drained; steering moves its traffic to the other PoPs", body.pop);
        if let Some(rules) = &forced_past {
            summary.push_str(&format!(" (forced past guardrail {rules})"));
        }
        Ok(Response::new(pb::ChangeResponse {
            change: Some(completed_change(
                "drain",
                &body.pop,
                resp.revision,
                &body.reason,
                summary,
            )),
        }))
    }
    async fn undrain(&self, req: Request<pb::UndrainRequest>) -> Result<Response<pb::ChangeResponse>, Status> {
        let fence = fence_or_forward!(self, req, undrain);
        let body = req.into_inner();
        let key = self.ctx.keys.drain(&body.pop);
        let txn = meridian_store::Txn::new()
            .when([meridian_store::Compare::Version {
                key: key.clone(),
                op: meridian_store::CompareOp::Greater,
                version: 0,
            }])
            .and_then([meridian_store::TxnOp::delete(key)]);
        let resp = meridian_store::election::fenced_txn(self.ctx.store.as_ref(), &fence, txn)
            .await
            .map_err(store_status)?;
        if !resp.succeeded {
            return Err(Status::not_found(format!("PoP `{}` is not drained", body.pop)));
        }
        tracing::info!(pop = %body.pop, reason = %body.reason, "PoP undrained by an operator");
        self.operator_event(
            "undrain",
            Some(&body.pop),
            format!("PoP {} undrained: {}", body.pop, body.reason),
            Vec::new(),
        );
        let summary = format!("PoP {} back in service", body.pop);
        Ok(Response::new(pb::ChangeResponse {
            change: Some(completed_change(
                "undrain",
                &body.pop,
                resp.revision,
                &body.reason,
                summary,
            )),
        }))
    }
    async fn restore_plan(
        &self,
        req: Request<pb::RestorePlanRequest>,
    ) -> Result<Response<pb::RestorePlanResponse>, Status> {
        let fence = fence_or_forward!(self, req, restore_plan);
        let body = req.into_inner();
        if body.reason.trim().is_empty() {
            return Err(Status::invalid_argument("reason: a restore needs a reason"));
        }
        let ctx = &self.ctx;
        let mut old = match crate::plans::load(ctx.store.as_ref(), &ctx.keys, body.version).await {
            Ok(p) => p,
            Err(crate::plans::PlanError::NoSuchVersion(v)) => {
                return Err(Status::not_found(format!("plan version {v} does not exist")))
            }
            Err(e) => return Err(Status::unavailable(e.to_string())),
        };
        // Pin first, so steering does not overwrite the restored plan.
        let pin = meridian_core::records::PlanPin {
            version: body.version,
            reason: body.reason.clone(),
            requested_by: "operator".into(),
            at_unix_ms: convert::now_ms(),
        };
        let value = serde_json::to_vec(&pin).map_err(|e| Status::internal(e.to_string()))?;
        let txn = meridian_store::Txn::new().and_then([meridian_store::TxnOp::put(ctx.keys.plan_pin(), value)]);
        meridian_store::election::fenced_txn(ctx.store.as_ref(), &fence, txn)
            .await
            .map_err(store_status)?;
        old.restored_from = Some(body.version);
        old.created_at_unix_ms = convert::now_ms();
        old.published_by = ctx.me.id.to_string();
        old.reasons = vec![format!(
            "restored from version {} by an operator: {}",
            body.version, body.reason
        )];
        let published = crate::plans::publish(ctx.store.as_ref(), &ctx.keys, &fence, old)
            .await
            .map_err(|e| match e {
                crate::plans::PlanError::Store(s) => store_status(s),
                other => Status::aborted(other.to_string()),
            })?;
        tracing::warn!(from = body.version, version = published.version, reason = %body.reason, "plan restored; steering pinned");
        self.operator_event(
            "plan_restored",
            None,
            format!(
                "plan v{} restored as v{} and steering pinned: {}",
                body.version, published.version, body.reason
            ),
            Vec::new(),
        );
        Ok(Response::new(pb::RestorePlanResponse {
            plan: Some(convert::plan_to_pb(&published)),
        }))
    }
    async fn resume_steering(
        &self,
        req: Request<pb::ResumeSteeringRequest>,
    ) -> Result<Response<pb::ResumeSteeringResponse>, Status> {
        let fence = fence_or_forward!(self, req, resume_steering);
        let key = self.ctx.keys.plan_pin();
        let txn = meridian_store::Txn::new()
            .when([meridian_store::Compare::Version {
                key: key.clone(),
                op: meridian_store::CompareOp::Greater,
                version: 0,
            }])
            .and_then([meridian_store::TxnOp::delete(key)]);
        let resp = meridian_store::election::fenced_txn(self.ctx.store.as_ref(), &fence, txn)
            .await
            .map_err(store_status)?;
        tracing::info!(reason = %req.get_ref().reason, was_pinned = resp.succeeded, "steering resumed");
        if resp.succeeded {
            self.operator_event(
                "steering_resumed",
                None,
                format!("steering resumed: {}", req.get_ref().reason),
                Vec::new(),
            );
        }
        Ok(Response::new(pb::ResumeSteeringResponse {
            was_pinned: resp.succeeded,
        }))
    }
    async fn set_capacity(
        &self,
        _req: Request<pb::SetCapacityRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        Err(unimplemented("SetCapacity", AREA_STEERING))
    }
    async fn pause_change(&self, _req: Request<pb::ChangeIdRequest>) -> Result<Response<pb::ChangeResponse>, Status> {
        Err(unimplemented("PauseChange", AREA_CHANGES))
    }
    async fn resume_change(&self, _req: Request<pb::ChangeIdRequest>) -> Result<Response<pb::ChangeResponse>, Status> {
        Err(unimplemented("ResumeChange", AREA_CHANGES))
    }
    async fn rollback_change(
        &self,
        _req: Request<pb::ChangeIdRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        Err(unimplemented("RollbackChange", AREA_CHANGES))
    }
    async fn freeze(&self, _req: Request<pb::FreezeRequest>) -> Result<Response<pb::FreezeResponse>, Status> {
        Err(unimplemented("Freeze", AREA_CHANGES))
    }
    async fn unfreeze(&self, _req: Request<pb::UnfreezeRequest>) -> Result<Response<pb::FreezeResponse>, Status> {
        Err(unimplemented("Unfreeze", AREA_CHANGES))
    }
}

fn replica_to_pb(r: &ReplicaRecord, is_leader: bool) -> pb::ReplicaInfo {
    pb::ReplicaInfo {
        id: r.id.to_string(),
        grpc_address: r.grpc_address.clone(),
        admin_address: r.admin_address.clone(),
        started_at: Some(meridian_proto::prost_types::Timestamp {
            seconds: r.started_at_unix as i64,
            nanos: 0,
        }),
        is_leader,
        version: r.software_version.clone(),
    }
}

fn store_health_to_pb(h: &StoreHealth) -> pb::StoreHealth {
    pb::StoreHealth {
        backend: match h.backend {
            BackendKind::Embedded => pb::StoreBackend::Embedded as i32,
            BackendKind::Etcd => pb::StoreBackend::Etcd as i32,
        },
        healthy: h.healthy,
        detail: h.detail.clone(),
        revision: h.revision.unwrap_or(0),
        endpoints: h.endpoints.clone(),
    }
}

/// The error and its sources, joined, for one-line reports.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
