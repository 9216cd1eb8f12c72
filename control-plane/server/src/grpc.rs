//! The gRPC adapter: converts between `meridian.v1` wire types and domain values.
//! Only this module sees prost types.
//!
//! Handlers that later issues fill in answer `UNIMPLEMENTED` with a message naming
//! the issue area, never a made-up answer.

use std::pin::Pin;

use futures::Stream;
use meridian_core::records::{LeaderRecord, PlanPointer, ReplicaRecord};
use meridian_proto::v1 as pb;
use meridian_store::{BackendKind, StoreHealth};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::replica::ReplicaContext;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

const AREA_HEALTH: &str = "health probing and PoP verdicts (issue [2])";
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
        .add_service(pb::query_service_server::QueryServiceServer::new(QueryApi { ctx }))
        .add_service(pb::operator_service_server::OperatorServiceServer::new(OperatorApi))
        .add_service(pb::probe_service_server::ProbeServiceServer::new(ProbeApi))
        .add_service(pb::plan_service_server::PlanServiceServer::new(PlanApi))
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
                let leader = leader.and_then(|kv| serde_json::from_slice::<LeaderRecord>(&kv.value).ok().map(|r| (r, kv.create_revision)));
                if let Some((leader, rev)) = &leader {
                    resp.leader_id = leader.id.to_string();
                    resp.leader_revision = *rev;
                } else {
                    resp.leader_id.clear();
                }
                for kv in replicas.kvs {
                    match serde_json::from_slice::<ReplicaRecord>(&kv.value) {
                        Ok(r) => resp.replicas.push(replica_to_pb(&r, leader.as_ref().is_some_and(|(l, _)| l.id == r.id))),
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
    async fn get_plan(&self, _req: Request<pb::GetPlanRequest>) -> Result<Response<pb::GetPlanResponse>, Status> {
        Err(unimplemented("GetPlan", AREA_STEERING))
    }
    async fn get_health(&self, _req: Request<pb::GetHealthRequest>) -> Result<Response<pb::GetHealthResponse>, Status> {
        Err(unimplemented("GetHealth", AREA_HEALTH))
    }
    async fn explain_pop(&self, _req: Request<pb::ExplainPopRequest>) -> Result<Response<pb::ExplainPopResponse>, Status> {
        Err(unimplemented("ExplainPop", AREA_HEALTH))
    }
    async fn list_changes(&self, _req: Request<pb::ListChangesRequest>) -> Result<Response<pb::ListChangesResponse>, Status> {
        Err(unimplemented("ListChanges", AREA_CHANGES))
    }
    async fn list_events(&self, _req: Request<pb::ListEventsRequest>) -> Result<Response<pb::ListEventsResponse>, Status> {
        Err(unimplemented("ListEvents", AREA_HEALTH))
    }
    async fn get_slo(&self, _req: Request<pb::GetSloRequest>) -> Result<Response<pb::GetSloResponse>, Status> {
        Err(unimplemented("GetSlo", "SLOs and error budgets (a later issue)"))
    }
    async fn what_if(&self, _req: Request<pb::WhatIfRequest>) -> Result<Response<pb::WhatIfResponse>, Status> {
        Err(unimplemented("WhatIf", AREA_STEERING))
    }
    async fn list_agents(&self, _req: Request<pb::ListAgentsRequest>) -> Result<Response<pb::ListAgentsResponse>, Status> {
        Err(unimplemented("ListAgents", AREA_STEERING))
    }
}

struct OperatorApi;

#[tonic::async_trait]
impl pb::operator_service_server::OperatorService for OperatorApi {
    async fn drain(&self, _req: Request<pb::DrainRequest>) -> Result<Response<pb::ChangeResponse>, Status> {
        Err(unimplemented("Drain", AREA_CHANGES))
    }
    async fn undrain(&self, _req: Request<pb::UndrainRequest>) -> Result<Response<pb::ChangeResponse>, Status> {
        Err(unimplemented("Undrain", AREA_CHANGES))
    }
    async fn set_capacity(&self, _req: Request<pb::SetCapacityRequest>) -> Result<Response<pb::ChangeResponse>, Status> {
        Err(unimplemented("SetCapacity", AREA_STEERING))
    }
    async fn apply_topology(&self, _req: Request<pb::ApplyTopologyRequest>) -> Result<Response<pb::ApplyTopologyResponse>, Status> {
        Err(unimplemented("ApplyTopology", AREA_STEERING))
    }
    async fn pause_change(&self, _req: Request<pb::ChangeIdRequest>) -> Result<Response<pb::ChangeResponse>, Status> {
        Err(unimplemented("PauseChange", AREA_CHANGES))
    }
    async fn resume_change(&self, _req: Request<pb::ChangeIdRequest>) -> Result<Response<pb::ChangeResponse>, Status> {
        Err(unimplemented("ResumeChange", AREA_CHANGES))
    }
    async fn rollback_change(&self, _req: Request<pb::ChangeIdRequest>) -> Result<Response<pb::ChangeResponse>, Status> {
        Err(unimplemented("RollbackChange", AREA_CHANGES))
    }
    async fn freeze(&self, _req: Request<pb::FreezeRequest>) -> Result<Response<pb::FreezeResponse>, Status> {
        Err(unimplemented("Freeze", AREA_CHANGES))
    }
    async fn unfreeze(&self, _req: Request<pb::UnfreezeRequest>) -> Result<Response<pb::FreezeResponse>, Status> {
        Err(unimplemented("Unfreeze", AREA_CHANGES))
    }
}

struct ProbeApi;

#[tonic::async_trait]
impl pb::probe_service_server::ProbeService for ProbeApi {
    type WatchAssignmentsStream = BoxStream<pb::ProbeAssignments>;
    type ReportResultsStream = BoxStream<pb::ProbeResultAck>;

    async fn watch_assignments(&self, _req: Request<pb::WatchAssignmentsRequest>) -> Result<Response<Self::WatchAssignmentsStream>, Status> {
        Err(unimplemented("WatchAssignments", AREA_HEALTH))
    }
    async fn report_results(&self, _req: Request<Streaming<pb::ProbeResultBatch>>) -> Result<Response<Self::ReportResultsStream>, Status> {
        Err(unimplemented("ReportResults", AREA_HEALTH))
    }
}

struct PlanApi;

#[tonic::async_trait]
impl pb::plan_service_server::PlanService for PlanApi {
    type WatchPlanStream = BoxStream<pb::PlanUpdate>;

    async fn watch_plan(&self, _req: Request<Streaming<pb::AgentMessage>>) -> Result<Response<Self::WatchPlanStream>, Status> {
        Err(unimplemented("WatchPlan", AREA_STEERING))
    }
}

fn replica_to_pb(r: &ReplicaRecord, is_leader: bool) -> pb::ReplicaInfo {
    pb::ReplicaInfo {
        id: r.id.to_string(),
        grpc_address: r.grpc_address.clone(),
        admin_address: r.admin_address.clone(),
        started_at: Some(meridian_proto::prost_types::Timestamp { seconds: r.started_at_unix as i64, nanos: 0 }),
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

