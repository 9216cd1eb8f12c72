//! The gRPC adapter: converts between `meridian.v1` wire types and domain values
//! (with `convert`, `probe_api` and `plan_api`, the only modules that see prost
//! types). Queries read state; mutations go through [`OperatorApi::route`] (here, or
//! forwarded to the leader) and then the operations layer (`crate::ops`).
//!
//! RPCs that later issues build answer `UNIMPLEMENTED` with a message naming the
//! issue, never a made-up answer.

use std::sync::Arc;

use meridian_core::records::{AgentKind, LeaderRecord, PlanPointer, ReplicaRecord};
use meridian_core::Identity;
use meridian_proto::v1 as pb;
use meridian_store::{BackendKind, StoreError, StoreHealth};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::error_chain;
use crate::ops::changes::{ChangeCommand, SetCapacityCommand};
use crate::ops::{
    ApplyTopologyCommand, Caller, ChangeOutcome, DrainCommand, OpError, RestorePlanCommand, ResumeSteeringCommand,
    UndrainCommand,
};
use crate::plan_api::PlanApi;
use crate::probe_api::ProbeApi;
use crate::replica::ReplicaContext;

fn unimplemented(what: &str, area: &str) -> Status {
    Status::unimplemented(format!("{what} is not implemented yet: it arrives with {area}"))
}

/// Serves the Meridian API, reflection and the health service until `shutdown`.
pub(crate) async fn serve(
    ctx: ReplicaContext,
    authz: crate::authz::AuthzLayer,
    tls: Option<Arc<rustls::ServerConfig>>,
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
    let server = tonic::transport::Server::builder();
    let max = ctx.limits.max_message_bytes;
    let audit = ctx.ops.log.clone();
    let router = server
        // Bounds first (unary pool and deadline, timing), then every RPC is checked
        // against `authz::RPC_ACCESS` before any handler runs.
        .layer(crate::limits::LimitsLayer::new(&ctx.limits))
        .layer(authz)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            pb::query_service_server::QueryServiceServer::new(QueryApi { ctx: ctx.clone() })
                .max_decoding_message_size(max),
        )
        .add_service(
            pb::operator_service_server::OperatorServiceServer::new(OperatorApi {
                ctx: ctx.clone(),
                leader: Default::default(),
            })
            .max_decoding_message_size(max),
        )
        .add_service(
            pb::probe_service_server::ProbeServiceServer::new(ProbeApi {
                health: ctx.health.clone(),
                open: ctx.open_ingest,
                topology: ctx.topology.clone(),
                streams: ctx.probe_streams.clone(),
            })
            .max_decoding_message_size(max),
        )
        .add_service(
            pb::plan_service_server::PlanServiceServer::new(PlanApi {
                plan: ctx.plan.clone(),
                fleet_hold: ctx.fleet_hold.clone(),
                registry: ctx.agents.clone(),
                streams: ctx.agent_streams.clone(),
            })
            .max_decoding_message_size(max),
        );
    let served = match tls {
        None => {
            // Small acks and results must not wait for Nagle (TLS connections set it
            // in `tls_incoming`).
            use futures::StreamExt;
            let incoming = TcpListenerStream::new(listener).map(|conn| {
                conn.inspect(|tcp| {
                    let _ = tcp.set_nodelay(true);
                })
            });
            router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await
        }
        Some(config) => {
            let incoming = tls_incoming(listener, config, audit, shutdown.clone());
            router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await
        }
    };
    served.map_err(|e| format!("gRPC server failed: {e}"))
}

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS connections accepted here rather than inside tonic, so that a failed
/// handshake — an expired certificate, one from another CA, none where one is
/// required — is counted by reason (`meridian_control_plane_tls_handshake_failures_total`)
/// and, when it is about the client's certificate, recorded as a `refused` event;
/// each handshake runs on its own task, so a slow client holds up nobody.
fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    audit: Arc<crate::events::EventLog>,
    shutdown: CancellationToken,
) -> impl futures::Stream<Item = Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "gRPC listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, audit) = (acceptor.clone(), tx.clone(), audit.clone());
            tokio::spawn(async move {
                let failure = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                        return;
                    }
                    Ok(Err(e)) => {
                        let (reason, about_certificate) = meridian_tls::handshake_failure(&e);
                        (reason, about_certificate, e.to_string())
                    }
                    Err(_) => (
                        "timeout",
                        false,
                        format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
                    ),
                };
                let (reason, about_certificate, detail) = failure;
                metrics::counter!("meridian_control_plane_tls_handshake_failures_total", "reason" => reason)
                    .increment(1);
                tracing::debug!(%peer, reason, error = %detail, "TLS handshake failed");
                if about_certificate {
                    audit.record(meridian_engine::Event {
                        at_unix_ms: crate::convert::now_ms(),
                        actor: meridian_core::Actor::Operator(Identity::anonymous()),
                        role: None,
                        kind: meridian_engine::EventKind::Refused {
                            rpc: "TLS handshake".into(),
                            target: None,
                            reason: format!("client certificate from {peer} refused ({reason}): {detail}"),
                        },
                    });
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
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
        req: Request<pb::ListChangesRequest>,
    ) -> Result<Response<pb::ListChangesResponse>, Status> {
        let limit = match req.get_ref().limit {
            0 => 100,
            n => n.min(1000),
        } as usize;
        let active_only = req.get_ref().active_only;
        let changes = self.ctx.ops.list_changes().await.map_err(op_status)?;
        Ok(Response::new(pb::ListChangesResponse {
            changes: changes
                .into_iter()
                .filter(|c| !active_only || c.record.state.is_active())
                .take(limit)
                .map(|c| change_record_to_pb(&c.record))
                .collect(),
        }))
    }
    async fn get_change(&self, req: Request<pb::GetChangeRequest>) -> Result<Response<pb::ChangeResponse>, Status> {
        let id = req.into_inner().change_id;
        if id.is_empty() {
            return Err(Status::invalid_argument(
                "change_id is required (see `meridianctl changes`)",
            ));
        }
        let stored = self.ctx.ops.get_change(&id).await.map_err(op_status)?;
        Ok(Response::new(pb::ChangeResponse {
            change: Some(change_record_to_pb(&stored.record)),
        }))
    }
    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let req = req.into_inner();
        let limit = if req.limit == 0 { 100 } else { req.limit.min(2000) } as usize;
        let since_unix_ms = match req.since {
            None => None,
            Some(d) if d.seconds < 0 || d.nanos < 0 => {
                return Err(Status::invalid_argument("since must not be negative"));
            }
            Some(d) => {
                let back = (d.seconds as u64).saturating_mul(1000) + (d.nanos as u64) / 1_000_000;
                Some((crate::replica::unix_now().as_millis() as u64).saturating_sub(back))
            }
        };
        let filter = crate::events::EventFilter {
            limit,
            pop: (!req.pop.is_empty()).then_some(req.pop),
            since_unix_ms,
        };
        // Every replica answers from the stored log, so all give the same history.
        let log = crate::events::EventStore::new(self.ctx.store.clone(), self.ctx.keys.clone(), "");
        let stored = tokio::time::timeout(self.ctx.request_timeout * 4, log.list(&filter))
            .await
            .map_err(|_| Status::unavailable("reading the event log from the store timed out"))?
            .map_err(|e| {
                Status::unavailable(format!("cannot read the event log from the store: {}", error_chain(&e)))
            })?;
        let events = stored
            .into_iter()
            .map(|e| {
                convert::event(
                    crate::events::LoggedEvent {
                        id: e.id,
                        event: e.event,
                    },
                    &e.replica,
                )
            })
            .collect();
        Ok(Response::new(pb::ListEventsResponse { events }))
    }
    async fn get_slo(&self, _req: Request<pb::GetSloRequest>) -> Result<Response<pb::GetSloResponse>, Status> {
        Err(unimplemented("GetSlo", "SLOs and error budgets (issue [12])"))
    }
    async fn what_if(&self, req: Request<pb::WhatIfRequest>) -> Result<Response<pb::WhatIfResponse>, Status> {
        let scenario = match req.into_inner().scenario {
            Some(pb::what_if_request::Scenario::DrainPop(p)) => meridian_steering::Scenario::Drain(p),
            Some(pb::what_if_request::Scenario::DownPop(p)) => meridian_steering::Scenario::Down(p),
            None => return Err(Status::invalid_argument("scenario: give drain_pop or down_pop")),
        };
        let (plan, guardrails_fired) = self.ctx.ops.what_if(&scenario).map_err(op_status)?;
        Ok(Response::new(pb::WhatIfResponse {
            plan: Some(convert::plan_to_pb(&plan)),
            guardrails_fired,
        }))
    }
    async fn list_agents(
        &self,
        _req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let listed = crate::plan_api::list_agents(self.ctx.store.as_ref(), &self.ctx.keys)
            .await
            .map_err(|e| Status::unavailable(format!("cannot read the agent registry: {}", error_chain(&e))))?;
        let canary = self.ctx.topology.borrow().doc.policy.canary_agents.clone();
        let hold = self.ctx.fleet_hold.borrow().clone();
        let latest = self.ctx.plan.borrow().as_ref().map_or(0, |p| p.version);
        let agents = listed
            .into_iter()
            .map(|(replica, a)| pb::AgentInfo {
                wave: if hold.as_ref().is_some_and(|h| h.hold.canary.contains(&a.agent_id))
                    || canary.contains(&a.agent_id)
                {
                    "canary".into()
                } else if hold.is_some() || !canary.is_empty() {
                    "fleet".into()
                } else {
                    String::new()
                },
                held_on_version: hold
                    .as_ref()
                    .filter(|h| h.hold.holds(&a.agent_id, latest))
                    .map_or(0, |h| h.hold.fleet_version),
                anycast: a.anycast.iter().map(convert::anycast_status_to_pb).collect(),
                agent_id: a.agent_id,
                kind: (match a.kind {
                    AgentKind::Anycast => pb::AgentKind::Anycast,
                    AgentKind::Dns => pb::AgentKind::Dns,
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

/// Marks a request a follower forwarded to the leader, so it is never forwarded twice.
const FORWARDED: &str = "x-meridian-forwarded-by";
/// The identity the caller claims (meridianctl sends `user@host`). Until mTLS
/// (issue [7]) it is a claim, recorded with every action; a forwarded request
/// carries the original caller's.
pub const IDENTITY: &str = "x-meridian-identity";

struct OperatorApi {
    ctx: ReplicaContext,
    /// The leader's address and a channel to it, reused while the leader stays.
    leader: tokio::sync::Mutex<Option<(String, tonic::transport::Channel)>>,
}

type OperatorClient = pb::operator_service_client::OperatorServiceClient<tonic::transport::Channel>;

/// Where a mutation runs.
enum Route {
    /// Here: this replica leads under this fence.
    Local(meridian_store::Fence),
    /// At the leader, through this client.
    Forward(OperatorClient),
}

/// The caller of a request: the principal the authorization layer resolved from its
/// credentials, else (authorization off, no credential) who it says it is.
fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    if let Some(p) = req.extensions().get::<crate::authz::Principal>() {
        return Ok(Caller {
            identity: p.identity().clone(),
            role: p.role().map(|r| r.to_string()),
        });
    }
    match req.metadata().get(IDENTITY) {
        None => Ok(Caller {
            identity: Identity::anonymous(),
            role: None,
        }),
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| Status::invalid_argument(format!("{IDENTITY}: not printable ASCII")))?;
            Identity::new(text)
                .map(|identity| Caller { identity, role: None })
                .map_err(|e| Status::invalid_argument(format!("{IDENTITY}: {e}")))
        }
    }
}

impl OperatorApi {
    /// Mutations run on the leader: here when we lead, else forwarded to it. This is
    /// the one place that decides; every handler calls it first.
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
                return Ok(Route::Forward(OperatorClient::new(channel.clone())));
            }
        }
        let channel = meridian_tls::endpoint(&leader.grpc_address, self.ctx.forward_tls.as_ref())
            .map_err(|e| {
                Status::internal(format!(
                    "cannot forward to leader {} at {}: {e}",
                    leader.id, leader.grpc_address
                ))
            })?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .connect_lazy();
        *cached = Some((leader.grpc_address.clone(), channel.clone()));
        Ok(Route::Forward(OperatorClient::new(channel)))
    }

    /// The request to send to the leader: the same message, marked as forwarded, with
    /// the original caller's credentials: its bearer token when it sent one, and
    /// always its identity and role (which the leader honours only from a replica's
    /// certificate — this replica's own, on the forwarding channel).
    fn forwarded<T>(&self, req: Request<T>) -> Request<T> {
        let principal = req.extensions().get::<crate::authz::Principal>().cloned();
        let identity = req.metadata().get(IDENTITY).cloned();
        let authorization = req.metadata().get("authorization").cloned();
        let mut out = Request::new(req.into_inner());
        let md = out.metadata_mut();
        if let Ok(v) = self.ctx.me.id.as_str().parse() {
            md.insert(FORWARDED, v);
        }
        if let Some(token) = authorization {
            md.insert("authorization", token);
        }
        match principal {
            Some(p) => {
                if let Ok(v) = p.identity().as_str().parse() {
                    md.insert(IDENTITY, v);
                }
                if let Some(role) = p.role() {
                    if let Ok(v) = role.to_string().parse() {
                        md.insert(crate::authz::FORWARDED_ROLE, v);
                    }
                }
            }
            None => {
                if let Some(identity) = identity {
                    md.insert(IDENTITY, identity);
                }
            }
        }
        out
    }
}

/// An operation's error as a gRPC status.
fn op_status(err: OpError) -> Status {
    match err {
        OpError::Invalid { .. } => Status::invalid_argument(err.to_string()),
        OpError::NotFound(_) => Status::not_found(err.to_string()),
        OpError::AlreadyExists(_) => Status::already_exists(err.to_string()),
        OpError::Refused { .. } | OpError::FailedPrecondition(_) => Status::failed_precondition(err.to_string()),
        OpError::PermissionDenied(_) => Status::permission_denied(err.to_string()),
        OpError::Conflict(_) => Status::aborted(err.to_string()),
        OpError::Corrupt { .. } => Status::internal(err.to_string()),
        OpError::Store(e @ StoreError::FenceLost { .. }) => Status::unavailable(format!("{e}; retry")),
        OpError::Store(e) => Status::unavailable(format!("store error: {}", error_chain(&e))),
    }
}

impl OperatorApi {
    /// Pause, resume or roll back a change (on the leader).
    async fn command(
        &self,
        req: Request<pb::ChangeIdRequest>,
        fence: &meridian_store::Fence,
        command: ChangeCommand,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let who = caller(&req)?;
        let body = req.into_inner();
        if body.change_id.is_empty() {
            return Err(Status::invalid_argument(
                "change_id is required (see `meridianctl changes`)",
            ));
        }
        let record = self
            .ctx
            .ops
            .command_change(&who, fence, &body.change_id, command, &body.reason)
            .await
            .map_err(op_status)?;
        Ok(Response::new(pb::ChangeResponse {
            change: Some(change_record_to_pb(&record)),
        }))
    }
}

/// A stored change as the wire's `ChangeRecord`.
fn change_record_to_pb(r: &meridian_engine::change::ChangeRecord) -> pb::ChangeRecord {
    use meridian_engine::change::{ChangeState as S, Phase};
    let (state, step) = match &r.state {
        S::Pending => (pb::ChangeState::Pending, 0),
        S::Progressing { step, .. } => (pb::ChangeState::Progressing, step + 1),
        S::Paused { step, .. } => (pb::ChangeState::Paused, step + 1),
        S::Completed { .. } => (pb::ChangeState::Completed, r.steps.len()),
        S::RollingBack { .. } => (pb::ChangeState::RollingBack, 0),
        S::RolledBack { .. } => (pb::ChangeState::RolledBack, 0),
        S::Reverted { .. } => (pb::ChangeState::Reverted, r.steps.len()),
    };
    let rungs: Vec<String> = r
        .steps
        .iter()
        .map(|s| match &s.anycast {
            Some(a) => format!("{}% ({})", s.weight_percent, a.describe()),
            None => format!("{}%", s.weight_percent),
        })
        .collect();
    let kind = serde_json::to_value(r.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let scope = if r.regions.is_empty() {
        String::new()
    } else {
        format!(" for {}", r.regions.join(", "))
    };
    let mut summary = match &r.capacity {
        Some(c) => format!(
            "capacity of {} → {}{} — {}",
            r.target,
            c.capacity,
            if c.until_unix_ms.is_some() { " (temporary)" } else { "" },
            meridian_engine::change::describe(&r.state)
        ),
        None => format!(
            "{kind} {}{scope} by ladder {} — {}",
            r.target,
            rungs.join(" → "),
            meridian_engine::change::describe(&r.state)
        ),
    };
    let mut state_reason = String::new();
    if let Some(a) = r.approval.as_ref().filter(|_| r.awaits_approval()) {
        summary.push_str(&format!(
            ": awaiting approval by a second person (policy.approval_required: {})",
            a.rule
        ));
        state_reason = format!("awaiting approval ({})", a.rule);
    }
    match &r.state {
        S::Paused { reason, .. } | S::RollingBack { reason } => {
            summary.push_str(&format!(": {reason}"));
            state_reason = reason.clone();
        }
        _ => {}
    }
    // The phase, when it started and (for a bake) when it ends.
    let (phase, since, deadline) = match &r.state {
        S::Progressing { phase, .. } => match phase {
            Phase::Apply => ("apply", None, None),
            Phase::AwaitCanary { since_ms } => ("await_canary", Some(*since_ms), None),
            Phase::CanaryBake { until_ms, .. } => (
                "canary_bake",
                Some(until_ms.saturating_sub(r.canary.as_ref().map_or(0, |w| w.bake_ms))),
                Some(*until_ms),
            ),
            Phase::CanaryAnalyse { .. } => ("canary_analyse", None, None),
            Phase::AwaitAcks { since_ms } => ("await_acks", Some(*since_ms), None),
            Phase::Bake { until_ms, .. } => {
                let step = match &r.state {
                    S::Progressing { step, .. } => *step,
                    _ => 0,
                };
                let bake = r.steps.get(step).map_or(0, |s| s.bake_ms);
                ("bake", Some(until_ms.saturating_sub(bake)), Some(*until_ms))
            }
            Phase::Analyse { .. } => ("analyse", None, None),
        },
        _ => ("", None, None),
    };
    pb::ChangeRecord {
        id: r.id.clone(),
        started_by: r.started_by.clone(),
        reason: r.reason.clone(),
        state: state as i32,
        step: step as u32,
        total_steps: r.steps.len() as u32,
        created_at: Some(convert::timestamp_ms(r.created_at_ms)),
        updated_at: Some(convert::timestamp_ms(r.updated_at_ms)),
        summary,
        kind,
        target: r.target.clone(),
        regions: r.regions.clone(),
        phase: phase.into(),
        phase_deadline: deadline.map(convert::timestamp_ms),
        phase_since: since.map(convert::timestamp_ms),
        state_reason,
        steps: r
            .steps
            .iter()
            .map(|s| pb::ChangeStep {
                weight_percent: u32::from(s.weight_percent),
                bake_ms: s.bake_ms,
            })
            .collect(),
        canary_agents: r.canary.as_ref().map(|w| w.agents.clone()).unwrap_or_default(),
        history: r
            .history
            .iter()
            .map(|t| pb::ChangeTransition {
                at: Some(convert::timestamp_ms(t.at_ms)),
                from: t.from.clone(),
                to: t.to.clone(),
                why: t.why.clone(),
            })
            .collect(),
        role: r.role.clone().unwrap_or_default(),
        awaiting_approval: r
            .approval
            .as_ref()
            .filter(|_| r.awaits_approval())
            .map(|a| a.rule.clone())
            .unwrap_or_default(),
        approved_by: r
            .approval
            .as_ref()
            .and_then(|a| a.approved_by.clone())
            .unwrap_or_default(),
        analysis: r
            .analysis
            .iter()
            .map(|c| pb::ChangeCheck {
                name: c.name.clone(),
                verdict: c.verdict.clone(),
                why: c.why.clone(),
            })
            .collect(),
    }
}

/// A one-step change as the wire's `ChangeRecord` (staged changes arrive with [8]).
fn change_to_pb(c: ChangeOutcome) -> pb::ChangeResponse {
    let at = convert::timestamp_ms(c.at_unix_ms);
    pb::ChangeResponse {
        change: Some(pb::ChangeRecord {
            id: format!("{}-{}-{}", c.kind, c.pop, c.revision),
            started_by: c.actor.to_string(),
            reason: c.reason,
            state: pb::ChangeState::Completed as i32,
            step: 1,
            total_steps: 1,
            created_at: Some(at),
            updated_at: Some(at),
            summary: c.summary,
            kind: c.kind.to_string(),
            target: c.pop.clone(),
            ..Default::default()
        }),
    }
}

#[tonic::async_trait]
impl pb::operator_service_server::OperatorService for OperatorApi {
    async fn apply_topology(
        &self,
        req: Request<pb::ApplyTopologyRequest>,
    ) -> Result<Response<pb::ApplyTopologyResponse>, Status> {
        let who = caller(&req)?;
        // A dry run writes nothing, so any replica answers it.
        let fence = if req.get_ref().dry_run {
            None
        } else {
            match self.route(req.metadata()).await? {
                Route::Local(fence) => Some(fence),
                Route::Forward(mut leader) => return leader.apply_topology(self.forwarded(req)).await,
            }
        };
        let body = req.into_inner();
        if !body.dry_run {
            self.ctx
                .ops
                .check_freeze(
                    &who,
                    "apply-topology",
                    crate::ops::freeze::FreezeTarget::Edge,
                    body.override_freeze,
                    &body.reason,
                )
                .await
                .map_err(op_status)?;
        }
        let cmd = ApplyTopologyCommand {
            toml: body.topology_toml,
            reason: body.reason,
            dry_run: body.dry_run,
        };
        let out = self
            .ctx
            .ops
            .apply_topology(&who, fence.as_ref(), cmd)
            .await
            .map_err(op_status)?;
        Ok(Response::new(pb::ApplyTopologyResponse {
            applied: out.applied,
            diff: out.diff,
            errors: out.errors,
            topology_revision: out.revision.max(0) as u64,
        }))
    }

    async fn drain(&self, req: Request<pb::DrainRequest>) -> Result<Response<pb::ChangeResponse>, Status> {
        let who = caller(&req)?;
        let fence = match self.route(req.metadata()).await? {
            Route::Local(fence) => fence,
            Route::Forward(mut leader) => return leader.drain(self.forwarded(req)).await,
        };
        let body = req.into_inner();
        let cmd = DrainCommand {
            pop: body.pop,
            reason: body.reason,
            force: body.force,
            regions: body.regions,
        };
        // A drain that policy wants approved is a change record even when immediate:
        // one step, pending until a second person approves it.
        let needs_approval = self
            .ctx
            .topology
            .borrow()
            .doc
            .policy
            .approval_rule("drain", body.force)
            .is_some();
        let steps = if body.steps.is_empty() && needs_approval {
            vec![0]
        } else {
            body.steps.clone()
        };
        if !steps.is_empty() {
            // A drain ladder: a staged change the leader's driver walks.
            let percents = steps
                .iter()
                .map(|p| {
                    u8::try_from(*p).map_err(|_| Status::invalid_argument(format!("steps: {p} is not a percentage")))
                })
                .collect::<Result<Vec<u8>, Status>>()?;
            let bake_ms = if body.bake_ms == 0 { 10_000 } else { body.bake_ms };
            let record = self
                .ctx
                .ops
                .start_drain_change(&who, &fence, cmd, &percents, bake_ms)
                .await
                .map_err(op_status)?;
            return Ok(Response::new(pb::ChangeResponse {
                change: Some(change_record_to_pb(&record)),
            }));
        }
        let out = self.ctx.ops.drain(&who, &fence, cmd).await.map_err(op_status)?;
        Ok(Response::new(change_to_pb(out)))
    }

    async fn undrain(&self, req: Request<pb::UndrainRequest>) -> Result<Response<pb::ChangeResponse>, Status> {
        let who = caller(&req)?;
        let fence = match self.route(req.metadata()).await? {
            Route::Local(fence) => fence,
            Route::Forward(mut leader) => return leader.undrain(self.forwarded(req)).await,
        };
        let body = req.into_inner();
        self.ctx
            .ops
            .check_freeze(
                &who,
                "undrain",
                crate::ops::freeze::FreezeTarget::Pop(&body.pop),
                body.override_freeze,
                &body.reason,
            )
            .await
            .map_err(op_status)?;
        let cmd = UndrainCommand {
            pop: body.pop,
            reason: body.reason,
        };
        let out = self.ctx.ops.undrain(&who, &fence, cmd).await.map_err(op_status)?;
        Ok(Response::new(change_to_pb(out)))
    }

    async fn restore_plan(
        &self,
        req: Request<pb::RestorePlanRequest>,
    ) -> Result<Response<pb::RestorePlanResponse>, Status> {
        let who = caller(&req)?;
        let fence = match self.route(req.metadata()).await? {
            Route::Local(fence) => fence,
            Route::Forward(mut leader) => return leader.restore_plan(self.forwarded(req)).await,
        };
        let body = req.into_inner();
        self.ctx
            .ops
            .check_freeze(
                &who,
                "restore-plan",
                crate::ops::freeze::FreezeTarget::Edge,
                body.override_freeze,
                &body.reason,
            )
            .await
            .map_err(op_status)?;
        let cmd = RestorePlanCommand {
            version: body.version,
            reason: body.reason,
        };
        let plan = self.ctx.ops.restore_plan(&who, &fence, cmd).await.map_err(op_status)?;
        Ok(Response::new(pb::RestorePlanResponse {
            plan: Some(convert::plan_to_pb(&plan)),
        }))
    }

    async fn resume_steering(
        &self,
        req: Request<pb::ResumeSteeringRequest>,
    ) -> Result<Response<pb::ResumeSteeringResponse>, Status> {
        let who = caller(&req)?;
        let fence = match self.route(req.metadata()).await? {
            Route::Local(fence) => fence,
            Route::Forward(mut leader) => return leader.resume_steering(self.forwarded(req)).await,
        };
        let cmd = ResumeSteeringCommand {
            reason: req.into_inner().reason,
        };
        let was_pinned = self
            .ctx
            .ops
            .resume_steering(&who, &fence, cmd)
            .await
            .map_err(op_status)?;
        Ok(Response::new(pb::ResumeSteeringResponse { was_pinned }))
    }

    async fn set_capacity(&self, req: Request<pb::SetCapacityRequest>) -> Result<Response<pb::ChangeResponse>, Status> {
        let who = caller(&req)?;
        let fence = match self.route(req.metadata()).await? {
            Route::Local(fence) => fence,
            Route::Forward(mut leader) => return leader.set_capacity(self.forwarded(req)).await,
        };
        let body = req.into_inner();
        // Not a remedy: a freeze refuses it unless an admin overrides.
        self.ctx
            .ops
            .check_freeze(
                &who,
                "set-capacity",
                crate::ops::freeze::FreezeTarget::Pop(&body.pop),
                body.override_freeze,
                &body.reason,
            )
            .await
            .map_err(op_status)?;
        let record = self
            .ctx
            .ops
            .start_capacity_change(
                &who,
                &fence,
                SetCapacityCommand {
                    pop: body.pop,
                    capacity: body.capacity,
                    reason: body.reason,
                    duration_ms: body.duration_ms,
                },
            )
            .await
            .map_err(op_status)?;
        Ok(Response::new(pb::ChangeResponse {
            change: Some(change_record_to_pb(&record)),
        }))
    }
    async fn pause_change(&self, req: Request<pb::ChangeIdRequest>) -> Result<Response<pb::ChangeResponse>, Status> {
        let fence = match self.route(req.metadata()).await? {
            Route::Local(fence) => fence,
            Route::Forward(mut leader) => return leader.pause_change(self.forwarded(req)).await,
        };
        self.command(req, &fence, ChangeCommand::Pause).await
    }
    async fn resume_change(&self, req: Request<pb::ChangeIdRequest>) -> Result<Response<pb::ChangeResponse>, Status> {
        let fence = match self.route(req.metadata()).await? {
            Route::Local(fence) => fence,
            Route::Forward(mut leader) => return leader.resume_change(self.forwarded(req)).await,
        };
        self.command(req, &fence, ChangeCommand::Resume).await
    }
    async fn rollback_change(&self, req: Request<pb::ChangeIdRequest>) -> Result<Response<pb::ChangeResponse>, Status> {
        let fence = match self.route(req.metadata()).await? {
            Route::Local(fence) => fence,
            Route::Forward(mut leader) => return leader.rollback_change(self.forwarded(req)).await,
        };
        self.command(req, &fence, ChangeCommand::Rollback).await
    }
    async fn revert_change(&self, req: Request<pb::ChangeIdRequest>) -> Result<Response<pb::ChangeResponse>, Status> {
        let fence = match self.route(req.metadata()).await? {
            Route::Local(fence) => fence,
            Route::Forward(mut leader) => return leader.revert_change(self.forwarded(req)).await,
        };
        self.command(req, &fence, ChangeCommand::Revert).await
    }
    async fn approve_change(&self, req: Request<pb::ChangeIdRequest>) -> Result<Response<pb::ChangeResponse>, Status> {
        let fence = match self.route(req.metadata()).await? {
            Route::Local(fence) => fence,
            Route::Forward(mut leader) => return leader.approve_change(self.forwarded(req)).await,
        };
        self.command(req, &fence, ChangeCommand::Approve).await
    }
    async fn freeze(&self, req: Request<pb::FreezeRequest>) -> Result<Response<pb::FreezeResponse>, Status> {
        let who = caller(&req)?;
        let fence = match self.route(req.metadata()).await? {
            Route::Local(fence) => fence,
            Route::Forward(mut leader) => return leader.freeze(self.forwarded(req)).await,
        };
        let body = req.into_inner();
        let duration_ms = match body.duration {
            Some(d) if d.seconds >= 0 && d.nanos >= 0 => (d.seconds as u64) * 1000 + (d.nanos as u64) / 1_000_000,
            Some(_) => return Err(Status::invalid_argument("duration must not be negative")),
            None => {
                return Err(Status::invalid_argument(
                    "duration is required (e.g. meridianctl freeze --for 2h)",
                ))
            }
        };
        let scopes = crate::ops::freeze::requested_scopes(&body.pops, &body.regions);
        self.ctx
            .ops
            .freeze(&who, &fence, &body.reason, duration_ms, &scopes)
            .await
            .map_err(op_status)?;
        freezes_in_force(&self.ctx.ops).await
    }
    async fn unfreeze(&self, req: Request<pb::UnfreezeRequest>) -> Result<Response<pb::FreezeResponse>, Status> {
        let who = caller(&req)?;
        let fence = match self.route(req.metadata()).await? {
            Route::Local(fence) => fence,
            Route::Forward(mut leader) => return leader.unfreeze(self.forwarded(req)).await,
        };
        let body = req.into_inner();
        let scopes = crate::ops::freeze::requested_scopes(&body.pops, &body.regions);
        self.ctx
            .ops
            .unfreeze(&who, &fence, &body.reason, &scopes)
            .await
            .map_err(op_status)?;
        freezes_in_force(&self.ctx.ops).await
    }
}

/// The answer to Freeze and Unfreeze: every freeze in force after the call.
async fn freezes_in_force(ops: &crate::ops::Operations) -> Result<Response<pb::FreezeResponse>, Status> {
    let freezes = ops.active_freezes().await.map_err(op_status)?;
    Ok(Response::new(pb::FreezeResponse {
        frozen: !freezes.is_empty(),
        until: freezes.iter().map(|f| f.until_unix_ms).max().map(convert::timestamp_ms),
        freezes: freezes
            .iter()
            .map(|f| pb::ActiveFreeze {
                scope: f.scope.kind().to_string(),
                target: f.scope.target().to_string(),
                reason: f.reason.clone(),
                requested_by: f.requested_by.clone(),
                until: Some(convert::timestamp_ms(f.until_unix_ms)),
            })
            .collect(),
    }))
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
