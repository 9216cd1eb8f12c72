//! Receiving probe assignments: `WatchAssignments` on one replica at a time, tried
//! in the configured order, failing over on error and backing off (with jitter)
//! after a whole round failed (the shared `meridian_daemon::failover` loop). Each
//! message is the whole desired set with a version; an older version than the one
//! applied is ignored, and the running set is reconciled to each accepted one.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use meridian_core::Backoff;
use meridian_daemon::failover::{follow, EndpointRotation, Session, SessionEnd};
use meridian_proto::v1 as pb;
use tokio_util::sync::CancellationToken;

use crate::grpc;
use crate::metrics as m;
use crate::runner::ProbeRunner;
use crate::Shared;

#[derive(Debug)]
pub(crate) struct AssignmentSettings {
    pub(crate) endpoints: Vec<String>,
    pub(crate) prober_id: String,
    pub(crate) region: String,
    pub(crate) link: crate::grpc::Link,
    pub(crate) connect_timeout: Duration,
    pub(crate) reconnect_initial: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) default_max_concurrency: usize,
}

/// Watches assignments until shutdown, then stops every probe.
pub(crate) async fn run(
    settings: Arc<AssignmentSettings>,
    runner: ProbeRunner,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let backoff = Backoff::new(settings.reconnect_initial, settings.reconnect_max);
    let mut rotation = EndpointRotation::new(settings.endpoints.clone(), backoff).map_err(|e| e.to_string())?;
    let mut session = AssignmentSession {
        settings,
        runner,
        shared,
    };
    follow("assignment stream", &mut rotation, &shutdown, &mut session).await;
    session.runner.stop_all().await;
    Ok(())
}

/// What one assignment stream works on.
struct AssignmentSession {
    settings: Arc<AssignmentSettings>,
    runner: ProbeRunner,
    shared: Arc<Shared>,
}

impl Session for AssignmentSession {
    async fn run(&mut self, endpoint: &str) -> SessionEnd {
        let (healthy, reason) = watch_once(endpoint, &self.settings, &mut self.runner, &self.shared).await;
        metrics::counter!(m::ASSIGNMENT_RECONNECTS, "replica" => endpoint.to_string()).increment(1);
        SessionEnd { healthy, reason }
    }
}

/// One assignment stream. Returns whether any message arrived, and why it ended.
async fn watch_once(
    endpoint: &str,
    s: &AssignmentSettings,
    runner: &mut ProbeRunner,
    shared: &Shared,
) -> (bool, String) {
    let mut client = match grpc::connect(endpoint, s.connect_timeout, &s.link).await {
        Ok(c) => c,
        Err(e) => return (false, e),
    };
    let request = pb::WatchAssignmentsRequest {
        prober_id: s.prober_id.clone(),
        region: s.region.clone(),
    };
    let mut stream = match tokio::time::timeout(s.connect_timeout, client.watch_assignments(request)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => return (false, format!("WatchAssignments refused: {status}")),
        Err(_) => {
            return (
                false,
                format!("WatchAssignments not answered within {:?}", s.connect_timeout),
            )
        }
    };
    let mut received = false;
    loop {
        match stream.message().await {
            Ok(Some(pb::AssignmentUpdate {
                update: Some(pb::assignment_update::Update::Assignments(msg)),
            })) => {
                received = true;
                apply(msg, endpoint, s, runner, shared);
            }
            Ok(Some(pb::AssignmentUpdate {
                update: Some(pb::assignment_update::Update::ProbeNow(req)),
            })) => probe_now(&req, runner),
            Ok(Some(pb::AssignmentUpdate { update: None })) => {
                tracing::debug!(replica = %endpoint, "empty assignment update ignored");
            }
            Ok(None) => return (received, "the replica ended the stream".into()),
            Err(status) => return (received, format!("stream failed: {status}")),
        }
    }
}

/// On-demand confirmation: probe the named targets now. A target this prober does
/// not run (an older assignment set) is counted and skipped.
fn probe_now(req: &pb::ProbeNow, runner: &ProbeRunner) {
    for t in &req.targets {
        let key = crate::target::TargetKey {
            pop: t.pop.clone(),
            endpoint: t.endpoint.clone(),
        };
        if runner.probe_now(&key) {
            tracing::debug!(target = %key, seen_by = %t.region, "probing now: another region saw a failure");
        } else {
            metrics::counter!(m::PROBE_NOW_UNKNOWN).increment(1);
        }
    }
}

fn apply(msg: pb::ProbeAssignments, endpoint: &str, s: &AssignmentSettings, runner: &mut ProbeRunner, shared: &Shared) {
    let version = msg.version;
    if let Some(applied) = shared.assignment_version() {
        if version < applied {
            metrics::counter!(m::ASSIGNMENTS_STALE).increment(1);
            tracing::info!(replica = %endpoint, version, applied, "ignoring an older assignment set");
            return;
        }
    }
    let (assignments, errors) = grpc::assignments_from_pb(msg);
    for e in &errors {
        tracing::warn!(replica = %endpoint, version, error = %e, "probe target rejected");
    }
    metrics::counter!(m::TARGETS_REJECTED).increment(errors.len() as u64);
    shared.probe_limit(assignments.max_concurrency.unwrap_or(s.default_max_concurrency));
    shared.set_batch_interval(assignments.batch_interval);
    let plan = runner.reconcile(assignments.targets);
    shared.targets.store(runner.len(), Ordering::Relaxed);
    shared.set_assignment_version(version);
    metrics::gauge!(m::ASSIGNMENT_VERSION).set(version as f64);
    metrics::gauge!(m::TARGETS).set(runner.len() as f64);
    tracing::info!(
        replica = %endpoint,
        version,
        targets = runner.len(),
        started = plan.start.len(),
        restarted = plan.restart.len(),
        stopped = plan.stop.len(),
        unchanged = plan.unchanged,
        rejected = errors.len(),
        "assignment set applied"
    );
    shared.publish_readiness();
}
