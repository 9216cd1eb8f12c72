//! One control-plane replica's tasks and their wiring.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meridian_core::keys::Keys;
use meridian_core::records::{LeaderHeartbeat, LeaderRecord, ReplicaRecord};
use meridian_daemon::admin::Readiness;
use meridian_daemon::shutdown::Tasks;
use meridian_store::election::{self, ElectionConfig, Leadership, Role};
use meridian_store::embedded::EmbeddedStore;
use meridian_store::etcd::{EtcdConfig, EtcdStore};
use meridian_store::{BackendKind, Store, StoreError, StoreHealth, Txn, TxnOp};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Validated;
use crate::grpc;
use crate::health::{self, HealthView};
use crate::topology::{self, AppliedTopology};

/// Why a replica could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot open the {backend} store")]
    Store {
        backend: BackendKind,
        #[source]
        source: StoreError,
    },
    #[error("cannot serialise the replica record")]
    Record(#[source] serde_json::Error),
    #[error("invalid built-in health policy")]
    Policy(#[source] meridian_health::PolicyError),
    #[error("replica task failed: {0}")]
    Task(String),
}

/// Shared, read-mostly state of this replica, handed to the gRPC handlers.
#[derive(Clone)]
pub(crate) struct ReplicaContext {
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    pub me: ReplicaRecord,
    pub leadership: watch::Receiver<Leadership>,
    pub store_health: watch::Receiver<StoreHealth>,
    pub ready: watch::Receiver<Readiness>,
    pub request_timeout: Duration,
    pub topology: watch::Receiver<AppliedTopology>,
    pub health: Arc<HealthView>,
    pub plan: watch::Receiver<Option<Arc<meridian_core::records::StoredPlan>>>,
    /// A canary wave's hold on the fleet, when one is in force.
    pub fleet_hold: watch::Receiver<Option<Arc<crate::plans::HeldFleet>>>,
    pub agents: Arc<crate::plan_api::AgentRegistry>,
    pub ops: crate::ops::Operations,
    /// Probe ingest without a prober credential is accepted (authorization off and
    /// no prober credentials configured).
    pub open_ingest: bool,
    /// TLS for forwarding mutations to the leader (`None`: plaintext).
    pub forward_tls: Option<tonic::transport::ClientTlsConfig>,
    /// Bounds on the gRPC server.
    pub limits: crate::limits::LimitSettings,
    pub agent_streams: Arc<crate::limits::StreamCap>,
    pub probe_streams: Arc<crate::limits::StreamCap>,
}

/// Opens the store named by the configuration.
pub async fn open_store(cfg: &Validated) -> Result<Arc<dyn Store>, RunError> {
    let store_cfg = &cfg.config.store;
    if cfg.config.uses_etcd() {
        let etcd = EtcdConfig {
            tls: store_cfg.etcd_tls.clone(),
            connect_timeout: store_cfg.connect_timeout,
            request_timeout: store_cfg.request_timeout,
            ..EtcdConfig::new(store_cfg.etcd_endpoints.clone())
        };
        let store = EtcdStore::connect(etcd).await.map_err(|source| RunError::Store {
            backend: BackendKind::Etcd,
            source,
        })?;
        Ok(Arc::new(store))
    } else {
        let store = EmbeddedStore::open(&store_cfg.data_dir).map_err(|source| RunError::Store {
            backend: BackendKind::Embedded,
            source,
        })?;
        Ok(Arc::new(store))
    }
}

/// Runs one replica until `shutdown` fires, serving gRPC on `grpc_listener` and the
/// admin endpoints on `admin_listener`.
pub async fn run(
    cfg: Validated,
    grpc_listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let store = open_store(&cfg).await?;
    run_with_store(cfg, store, grpc_listener, admin_listener, shutdown).await
}

/// [`run`] with a store opened by the caller (tests share one embedded store).
pub async fn run_with_store(
    cfg: Validated,
    store: Arc<dyn Store>,
    grpc_listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    // The metrics recorder first: a gauge or counter touched before it exists is lost
    // (the first leader tick's `is_leader`, early store metrics), and `/metrics` would
    // then miss them until they next change.
    meridian_daemon::admin::metrics_handle().map_err(RunError::Task)?;
    let mut cfg = cfg;
    if let Some(path) = &cfg.bootstrap_admin {
        let token = crate::authz::bootstrap_admin_token(path).map_err(RunError::Task)?;
        let mut credentials = (*cfg.credentials).clone();
        let identity =
            meridian_core::Identity::new(crate::authz::BOOTSTRAP_ADMIN).map_err(|e| RunError::Task(e.to_string()))?;
        credentials
            .insert(
                token,
                crate::authz::Principal::Operator {
                    identity,
                    role: crate::authz::Role::Admin,
                },
            )
            .map_err(RunError::Task)?;
        cfg.credentials = Arc::new(credentials);
        tracing::warn!(
            path = %path.display(),
            "no operator credential and no client CA configured: a bootstrap admin token is in {} (mode 0600); use it with `meridianctl --token-file {}` to configure real credentials",
            path.display(),
            path.display()
        );
    }
    let keys = Keys::new(&cfg.config.store.key_prefix);
    let admin_address = admin_listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let me = ReplicaRecord {
        id: cfg.replica_id.clone(),
        grpc_address: cfg.advertise_addr.clone(),
        admin_address,
        started_at_unix: unix_now().as_secs(),
        software_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let leader_value = serde_json::to_vec(&LeaderRecord {
        id: me.id.clone(),
        grpc_address: me.grpc_address.clone(),
    })
    .map_err(RunError::Record)?;
    let election_cfg = ElectionConfig {
        leader_key: keys.leader(),
        candidate_id: me.id.to_string(),
        leader_value,
        lease_ttl: cfg.config.election.lease_ttl,
        leased_keys: vec![(keys.replica(&me.id), serde_json::to_vec(&me).map_err(RunError::Record)?)],
    };
    tracing::info!(replica = %me.id, backend = %store.backend(), grpc = %me.grpc_address, "control-plane replica starting");

    // The election has its own token so it resigns only after the gRPC server
    // stopped taking requests, and before the process exits.
    let election_cancel = CancellationToken::new();
    let (leadership, election_task) = election::spawn_candidate(store.clone(), election_cfg, election_cancel.clone());

    let initial_health = StoreHealth {
        backend: store.backend(),
        healthy: false,
        detail: "not checked yet".into(),
        revision: None,
        endpoints: Vec::new(),
    };
    let (health_tx, store_health) = watch::channel(initial_health);
    let (ready_tx, ready) = watch::channel::<Readiness>(Err("starting".into()));

    let (topology_tx, topology_rx) = watch::channel(AppliedTopology::default());
    let health_view = HealthView::new().map_err(RunError::Policy)?;
    let (plan_tx, plan_rx) = watch::channel(None);
    let (hold_tx, hold_rx) = watch::channel(None);
    let (intents_tx, intents_rx) = watch::channel(meridian_engine::Intents::default());
    let (event_log, event_queue) = crate::events::EventLog::durable(cfg.config.events.queue);
    let event_log = Arc::new(event_log);
    let event_store = crate::events::EventStore::new(store.clone(), keys.clone(), me.id.to_string());
    let agents = Arc::new(crate::plan_api::AgentRegistry::default());
    let open_ingest = cfg.prober_tokens.is_empty() && cfg.config.auth.mode == crate::authz::AuthMode::Off;
    if open_ingest {
        tracing::warn!(
            "authorization is off and no prober credentials are configured: probers are not authenticated and are trusted for the region they claim"
        );
    }
    let ops = crate::ops::Operations {
        store: store.clone(),
        keys: keys.clone(),
        replica: me.id.to_string(),
        topology: topology_rx.clone(),
        intents: intents_rx.clone(),
        health: health_view.clone(),
        log: event_log.clone(),
        clock: Arc::new(crate::ops::SystemClock),
    };
    let ctx = ReplicaContext {
        store: store.clone(),
        keys: keys.clone(),
        me,
        leadership: leadership.clone(),
        store_health,
        ready: ready.clone(),
        request_timeout: cfg.config.store.request_timeout,
        topology: topology_rx.clone(),
        health: health_view.clone(),
        plan: plan_rx,
        fleet_hold: hold_rx,
        agents: agents.clone(),
        ops,
        open_ingest,
        forward_tls: cfg.forward_tls.clone(),
        limits: cfg.config.limits.clone(),
        agent_streams: crate::limits::StreamCap::new("agent_streams", cfg.config.limits.max_agent_streams),
        probe_streams: crate::limits::StreamCap::new("probe_streams", cfg.config.limits.max_probe_streams),
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let mut tasks = Tasks::new();
    tasks.spawn(
        "store-health",
        monitor_store(
            store.clone(),
            leadership.clone(),
            health_tx,
            ready_tx,
            health_reporter,
            shutdown.clone(),
        ),
    );
    tasks.spawn(
        "health-evaluator",
        health::run_evaluator(health_view.clone(), event_log.clone(), topology_rx, shutdown.clone()),
    );
    tasks.spawn(
        "intents",
        crate::steering::follow_intents(store.clone(), keys.clone(), intents_tx, shutdown.clone()),
    );
    tasks.spawn(
        "steering",
        crate::steering::run(
            ctx.clone(),
            health_view.clone(),
            event_log.clone(),
            intents_rx,
            shutdown.clone(),
        ),
    );
    tasks.spawn(
        "plan-follower",
        crate::plans::follow(store.clone(), keys.clone(), plan_tx, hold_tx, shutdown.clone()),
    );
    tasks.spawn(
        "agent-mirror",
        crate::plan_api::mirror_agents(store.clone(), keys.clone(), ctx.me.clone(), agents, shutdown.clone()),
    );
    tasks.spawn(
        "topology",
        topology::follow(store.clone(), keys.clone(), topology_tx, shutdown.clone()),
    );
    tasks.spawn(
        "leader-duties",
        leader_duties(ctx.clone(), cfg.config.election.lease_ttl, shutdown.clone()),
    );
    tasks.spawn(
        "event-writer",
        crate::events::write_events(
            event_store.clone(),
            event_queue,
            leadership.clone(),
            // A leader's death is noticed within a lease TTL; hold a few of them.
            cfg.config.election.lease_ttl * 5,
            cfg.config.store.request_timeout,
            shutdown.clone(),
        ),
    );
    tasks.spawn(
        "event-pruner",
        crate::events::prune_events(
            event_store,
            leadership.clone(),
            crate::events::Retention {
                max_age: cfg.config.events.max_age,
                max_count: cfg.config.events.max_count,
            },
            cfg.config.events.prune_interval,
            cfg.config.store.request_timeout,
            shutdown.clone(),
        ),
    );
    tasks.spawn(
        "compaction",
        compact_history(
            ctx.clone(),
            cfg.config.store.compaction_interval,
            cfg.config.store.compaction_retain_revisions,
            cfg.config.store.plan_history,
            shutdown.clone(),
        ),
    );
    tasks.spawn(
        "change-driver",
        crate::changes::run(
            ctx.clone(),
            meridian_engine::change::ChangePolicy::default(),
            shutdown.clone(),
        ),
    );
    tasks.spawn(
        "admin-http",
        meridian_daemon::admin::serve_with(
            admin_listener,
            ready,
            shutdown.clone(),
            meridian_daemon::admin::AdminAccess {
                tls: cfg.admin_tls.clone(),
                check: cfg
                    .admin_checked
                    .then(|| crate::authz::admin_check(cfg.credentials.clone())),
            },
        ),
    );
    tasks.spawn(
        "grpc",
        grpc::serve(
            ctx,
            authz_layer(&cfg, event_log.clone()),
            cfg.server_tls.clone(),
            health_service,
            grpc_listener,
            shutdown.clone(),
        ),
    );

    let result = tasks.run_until(shutdown, cfg.config.shutdown_grace).await;
    election_cancel.cancel();
    if tokio::time::timeout(Duration::from_secs(5), election_task)
        .await
        .is_err()
    {
        tracing::warn!("election did not resign within 5s");
    }
    tracing::info!("control-plane replica stopped");
    result.map_err(RunError::Task)
}

/// The authorization layer the configuration asks for; with `mode = "off"` every
/// RPC stays open, which is said loudly once.
fn authz_layer(cfg: &Validated, log: Arc<crate::events::EventLog>) -> crate::authz::AuthzLayer {
    let mode = cfg.config.auth.mode;
    if mode == crate::authz::AuthMode::Off {
        tracing::warn!(
            "authorization is off ([auth] mode = \"off\"): anyone who reaches the gRPC port can drain, apply topology and restore plans; configure [[auth.operators]] and set mode = \"enforce\""
        );
    }
    crate::authz::AuthzLayer::new(mode, cfg.credentials.clone()).with_audit(log)
}

/// Checks store health every second; readiness is "store healthy and the election
/// knows who leads".
async fn monitor_store(
    store: Arc<dyn Store>,
    mut leadership: watch::Receiver<Leadership>,
    health_tx: watch::Sender<StoreHealth>,
    ready_tx: watch::Sender<Readiness>,
    reporter: tonic_health::server::HealthReporter,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_ready = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                return Ok(());
            }
            _ = tick.tick() => {
                let health = match tokio::time::timeout(Duration::from_secs(3), store.health()).await {
                    Ok(h) => h,
                    Err(_) => StoreHealth {
                        backend: store.backend(),
                        healthy: false,
                        detail: "health check timed out after 3s".into(),
                        revision: None,
                        endpoints: Vec::new(),
                    },
                };
                metrics::gauge!("meridian_control_plane_store_healthy").set(if health.healthy { 1.0 } else { 0.0 });
                health_tx.send_replace(health);
            }
            _ = leadership.changed() => {}
        }
        let readiness = readiness(&health_tx.borrow(), &leadership.borrow());
        let is_ready = readiness.is_ok();
        if was_ready != Some(is_ready) {
            match &readiness {
                Ok(_) => tracing::info!("ready"),
                Err(why) => tracing::warn!(reason = %why, "not ready"),
            }
            let status = if is_ready {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            was_ready = Some(is_ready);
        }
        metrics::gauge!("meridian_control_plane_ready").set(if is_ready { 1.0 } else { 0.0 });
        let _previous = ready_tx.send_replace(readiness);
    }
}

fn readiness(health: &StoreHealth, leadership: &Leadership) -> Readiness {
    if !health.healthy {
        return Err(format!("{} store unhealthy: {}", health.backend, health.detail));
    }
    if leadership.role == Role::Unknown {
        return Err("leader election has not settled".into());
    }
    Ok(String::new())
}

/// While this replica leads: a fenced heartbeat write every renewal period. A
/// rejected write means we were deposed; the election steps down on its own watch.
async fn leader_duties(ctx: ReplicaContext, ttl: Duration, shutdown: CancellationToken) -> Result<(), String> {
    let mut leadership = ctx.leadership.clone();
    let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut epoch_checked = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
            _ = leadership.changed() => {}
        }
        let view = leadership.borrow_and_update().clone();
        metrics::gauge!("meridian_control_plane_is_leader").set(if view.is_leader() { 1.0 } else { 0.0 });
        let Some(fence) = view.fence else { continue };
        if epoch_checked != Some(fence.revision) {
            // The first leader of a new (or wiped) store creates its epoch; later
            // leaders find it. Publishing ensures it too, so a failure here only delays.
            let now = unix_now().as_millis() as u64;
            let ensure = crate::plans::ensure_epoch(ctx.store.as_ref(), &ctx.keys, &fence, ctx.me.id.as_str(), now);
            match tokio::time::timeout(ctx.request_timeout, ensure).await {
                Ok(Ok((epoch, _))) => {
                    epoch_checked = Some(fence.revision);
                    tracing::info!(epoch = %epoch.epoch, created_by = %epoch.created_by, "store epoch");
                }
                Ok(Err(err)) => tracing::warn!(error = %err, "cannot read or create the store's epoch; retrying"),
                Err(_) => tracing::warn!("reading or creating the store's epoch timed out; retrying"),
            }
        }
        let beat = LeaderHeartbeat {
            leader: ctx.me.id.clone(),
            fence: fence.revision,
            at_unix_ms: unix_now().as_millis() as u64,
        };
        let Ok(value) = serde_json::to_vec(&beat) else { continue };
        let txn = Txn::new().and_then([TxnOp::put(ctx.keys.leader_heartbeat(), value)]);
        match tokio::time::timeout(
            ctx.request_timeout,
            election::fenced_txn(ctx.store.as_ref(), &fence, txn),
        )
        .await
        {
            Ok(Ok(_)) => metrics::counter!("meridian_control_plane_leader_heartbeats_total").increment(1),
            Ok(Err(err @ StoreError::FenceLost { .. })) => {
                metrics::counter!("meridian_control_plane_fenced_writes_rejected_total").increment(1);
                tracing::error!(error = %err, "leader heartbeat rejected: this replica is no longer the leader");
            }
            Ok(Err(err)) => tracing::warn!(error = %err, "leader heartbeat failed"),
            Err(_) => tracing::warn!("leader heartbeat timed out"),
        }
    }
}

/// While this replica leads: compact store history periodically, keeping the last
/// `retain` revisions, so neither etcd nor the embedded store grows without bound.
async fn compact_history(
    ctx: ReplicaContext,
    every: Duration,
    retain: i64,
    plan_history: u64,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut compacted_to = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let Some(fence) = ctx.leadership.borrow().fence.clone() else {
            continue;
        };
        match crate::plans::prune_history(ctx.store.as_ref(), &ctx.keys, &fence, plan_history).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, keep = plan_history, "pruned old plan versions"),
            Err(err) => tracing::warn!(error = %err, "pruning plan history failed; retrying at the next tick"),
        }
        let Some(current) = ctx.store_health.borrow().revision else {
            continue;
        };
        let target = current - retain;
        if target <= compacted_to.max(1) {
            continue;
        }
        match ctx.store.compact(target).await {
            Ok(()) | Err(StoreError::Compacted { .. }) => {
                compacted_to = target;
                metrics::counter!("meridian_control_plane_compactions_total").increment(1);
                tracing::info!(revision = target, "compacted store history");
            }
            Err(err) => tracing::warn!(error = %err, revision = target, "store compaction failed"),
        }
    }
}

pub(crate) fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}
