//! `meridian-prober`: one process per region (vantage point). It receives its probe
//! assignments from the control plane, probes PoP endpoints over HTTP(S), TCP and
//! DNS, and streams every result to **every** control-plane replica.
//!
//! The parts, each in its own module:
//!
//! * [`scheduler`]: pure fast-confirmation scheduling (when each target is probed
//!   next), tested with a fake clock.
//! * [`buffer`]: the pure bounded per-replica buffer (drop-oldest, counted;
//!   unacknowledged batches kept and resent first).
//! * [`probe`]: the probes and their failure classes.
//! * `runner`: one task per target under a global concurrency limit, reconciled
//!   against each assignment set; `assign`: the assignment watch with failover;
//!   `report`: one result stream per replica; [`grpc`]: the only module that sees
//!   wire types.
//!
//! Main decision: results fan out to one bounded buffer *per replica*, each with
//! its own stream and acknowledgements, so a replica that is down costs only its own
//! buffer, never probing or the other replicas, and a newly elected leader already
//! has a warm health view. The rejected alternative, sending only to the leader,
//! loses the health view on every failover and makes probing depend on election.
//!
//! Architecture invariant: the prober never talks to etcd and holds no durable
//! state; the scheduler and buffer cores do no I/O.

pub mod buffer;
pub mod config;
pub mod grpc;
pub mod metrics;
pub mod probe;
pub mod runner;
pub mod scheduler;
pub mod target;

mod assign;
mod report;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_daemon::admin::Readiness;
use meridian_daemon::shutdown::Tasks;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use config::{ProberConfig, ProberFlags, Validated};
pub use report::ProbeRecord;

use report::{ReplicaQueue, ReporterSettings, ResultSink};
use runner::{Limiter, ProbeContext, ProbeRunner};

/// Runs the prober daemon: the prober itself and the admin listener, until
/// `shutdown`, then drains within `shutdown_grace`.
pub async fn run(config: Validated, admin: TcpListener, shutdown: CancellationToken) -> Result<(), String> {
    let grace = config.config.shutdown_grace;
    let prober = Prober::new(config)?;
    let mut tasks = Tasks::new();
    tasks.spawn(
        "admin-http",
        meridian_daemon::admin::serve(admin, prober.readiness(), shutdown.clone()),
    );
    let token = shutdown.clone();
    tasks.spawn("prober", async move { prober.run(token).await });
    tasks.run_until(shutdown, grace).await
}

/// A prober: cheap to clone, observable while it runs (tests use this directly).
#[derive(Clone)]
pub struct Prober {
    shared: Arc<Shared>,
    reporter: Arc<ReporterSettings>,
    assignments: Arc<assign::AssignmentSettings>,
}

/// Counters of a running prober, for tests and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProberStats {
    /// The version of the assignment set applied, if any.
    pub assignment_version: Option<u64>,
    pub targets: usize,
    pub probes_run: u64,
    pub replicas: Vec<ReplicaStats>,
}

/// One replica as its reporter sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStats {
    pub endpoint: String,
    pub connected: bool,
    /// Results held: waiting, or sent and not yet acknowledged.
    pub buffered: usize,
    pub dropped: u64,
    pub acked: u64,
    pub rejected: u64,
    pub reconnects: u64,
}

impl Prober {
    pub fn new(validated: Validated) -> Result<Self, String> {
        let cfg = validated.config;
        let auth = grpc::AuthInterceptor::new(validated.token.as_deref())
            .ok_or("the token cannot be sent as gRPC metadata")?;
        let link = grpc::Link {
            auth,
            tls: validated.tls.clone(),
        };
        metrics::describe();
        let queues: Vec<Arc<ReplicaQueue>> = cfg
            .control_plane
            .iter()
            .map(|e| Arc::new(ReplicaQueue::new(e.clone(), cfg.buffer_limit, cfg.batch_size)))
            .collect();
        let probe_ctx = Arc::new(ProbeContext {
            prober_id: cfg.prober_id.as_str().into(),
            region: cfg.region.as_str().into(),
            limiter: Limiter::new(cfg.max_concurrency),
            sink: ResultSink { queues: queues.clone() },
            probes_run: AtomicU64::new(0),
        });
        let (ready_tx, _) = watch::channel(Err("starting".to_string()));
        let shared = Arc::new(Shared {
            ready: ready_tx,
            queues,
            probe_ctx,
            version: Mutex::new(None),
            targets: AtomicUsize::new(0),
            default_batch_interval: cfg.batch_interval,
            batch_interval_nanos: AtomicU64::new(nanos(cfg.batch_interval)),
        });
        shared.publish_readiness();
        // Leave a little of the grace period for the rest of the shutdown.
        let flush_timeout = cfg
            .shutdown_grace
            .saturating_sub(Duration::from_millis(300))
            .max(cfg.shutdown_grace / 2);
        let reporter = Arc::new(ReporterSettings {
            prober_id: cfg.prober_id.clone(),
            region: cfg.region.clone(),
            link: link.clone(),
            connect_timeout: cfg.connect_timeout,
            ack_timeout: cfg.ack_timeout,
            reconnect_initial: cfg.reconnect_initial,
            reconnect_max: cfg.reconnect_max,
            flush_timeout,
        });
        let assignments = Arc::new(assign::AssignmentSettings {
            endpoints: cfg.control_plane.clone(),
            prober_id: cfg.prober_id.clone(),
            region: cfg.region.clone(),
            link,
            connect_timeout: cfg.connect_timeout,
            reconnect_initial: cfg.reconnect_initial,
            reconnect_max: cfg.reconnect_max,
            default_max_concurrency: cfg.max_concurrency,
        });
        Ok(Self {
            shared,
            reporter,
            assignments,
        })
    }

    /// `Ok` once an assignment set was received and at least one replica's
    /// result stream is connected; otherwise the reason.
    pub fn readiness(&self) -> watch::Receiver<Readiness> {
        self.shared.ready.subscribe()
    }

    pub fn stats(&self) -> ProberStats {
        ProberStats {
            assignment_version: self.shared.assignment_version(),
            targets: self.shared.targets.load(Ordering::Relaxed),
            probes_run: self.shared.probe_ctx.probes_run.load(Ordering::Relaxed),
            replicas: self
                .shared
                .queues
                .iter()
                .map(|q| ReplicaStats {
                    endpoint: q.endpoint.clone(),
                    connected: q.connected.load(Ordering::SeqCst),
                    buffered: q.held(),
                    dropped: q.dropped(),
                    acked: q.acked.load(Ordering::Relaxed),
                    rejected: q.rejected.load(Ordering::Relaxed),
                    reconnects: q.reconnects.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }

    /// Probes and reports until `shutdown`; then stops probing, flushes each
    /// replica's buffer for up to the configured grace period (less a margin), logs
    /// what could not be delivered, and returns.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), String> {
        let mut set = tokio::task::JoinSet::new();
        let runner = ProbeRunner::new(self.shared.probe_ctx.clone());
        set.spawn(assign::run(
            self.assignments.clone(),
            runner,
            self.shared.clone(),
            shutdown.clone(),
        ));
        for q in &self.shared.queues {
            set.spawn(report::run_reporter(
                q.clone(),
                self.reporter.clone(),
                self.shared.clone(),
                shutdown.clone(),
            ));
        }
        let mut first_error = None;
        while let Some(done) = set.join_next().await {
            let err = match done {
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => e,
                Err(e) => format!("prober task panicked or was aborted: {e}"),
            };
            tracing::error!(error = %err, "prober task failed");
            first_error.get_or_insert(err);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// State shared by the prober's tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    ready: watch::Sender<Readiness>,
    queues: Vec<Arc<ReplicaQueue>>,
    probe_ctx: Arc<ProbeContext>,
    version: Mutex<Option<u64>>,
    targets: AtomicUsize,
    default_batch_interval: Duration,
    batch_interval_nanos: AtomicU64,
}

impl Shared {
    pub(crate) fn assignment_version(&self) -> Option<u64> {
        *self.version.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_assignment_version(&self, v: u64) {
        *self.version.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
    }

    fn probe_limit(&self, n: usize) {
        self.probe_ctx.limiter.resize(n);
    }

    /// The batch interval: the assignment's when it sets one, else the config's.
    pub(crate) fn batch_interval(&self) -> Duration {
        Duration::from_nanos(self.batch_interval_nanos.load(Ordering::Relaxed))
    }

    fn set_batch_interval(&self, from_assignment: Option<Duration>) {
        let d = from_assignment.unwrap_or(self.default_batch_interval);
        self.batch_interval_nanos.store(nanos(d), Ordering::Relaxed);
    }

    /// Recomputes readiness and publishes it when it changed.
    pub(crate) fn publish_readiness(&self) {
        let now = if self.assignment_version().is_none() {
            Err("no probe assignments received yet from any control-plane replica".to_string())
        } else if !self.queues.iter().any(|q| q.connected.load(Ordering::SeqCst)) {
            let all: Vec<&str> = self.queues.iter().map(|q| q.endpoint.as_str()).collect();
            Err(format!(
                "no result stream to a control-plane replica is connected (replicas: {})",
                all.join(", ")
            ))
        } else {
            Ok(String::new())
        };
        self.ready.send_if_modified(|cur| {
            if *cur != now {
                *cur = now;
                true
            } else {
                false
            }
        });
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
