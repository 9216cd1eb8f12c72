//! Receiving probe assignments: `WatchAssignments` on one replica at a time, tried
//! in the configured order, failing over on error and backing off (with jitter)
//! after a whole round failed. Each message is the whole desired set with a
//! version; an older version than the one applied is ignored, and the running set
//! is reconciled to each accepted one.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use meridian_proto::v1 as pb;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::grpc::{self, AuthInterceptor};
use crate::metrics as m;
use crate::runner::ProbeRunner;
use crate::Shared;

#[derive(Debug)]
pub(crate) struct AssignmentSettings {
    pub(crate) endpoints: Vec<String>,
    pub(crate) prober_id: String,
    pub(crate) region: String,
    pub(crate) auth: AuthInterceptor,
    pub(crate) connect_timeout: Duration,
    pub(crate) reconnect_initial: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) default_max_concurrency: usize,
}

/// Watches assignments until shutdown, then stops every probe.
pub(crate) async fn run(
    settings: Arc<AssignmentSettings>,
    mut runner: ProbeRunner,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let n = settings.endpoints.len().max(1);
    let mut backoff = Backoff::new(settings.reconnect_initial, settings.reconnect_max);
    let mut index = 0usize;
    let mut failed_in_a_row = 0usize;
    while !shutdown.is_cancelled() {
        let endpoint = &settings.endpoints[index % n];
        let (received, reason) = tokio::select! {
            r = watch_once(endpoint, &settings, &mut runner, &shared) => r,
            _ = shutdown.cancelled() => break,
        };
        metrics::counter!(m::ASSIGNMENT_RECONNECTS, "replica" => endpoint.clone()).increment(1);
        if received {
            backoff.reset();
            failed_in_a_row = 0;
        }
        failed_in_a_row += 1;
        index += 1;
        tracing::warn!(replica = %endpoint, error = %reason, next = %settings.endpoints[index % n], "assignment stream unavailable; failing over");
        if failed_in_a_row >= n {
            // Every replica failed in this round: wait before the next one.
            let delay = backoff.next_delay(rand::random());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }
    runner.stop_all().await;
    Ok(())
}

/// One assignment stream. Returns whether any message arrived, and why it ended.
async fn watch_once(
    endpoint: &str,
    s: &AssignmentSettings,
    runner: &mut ProbeRunner,
    shared: &Shared,
) -> (bool, String) {
    let mut client = match grpc::connect(endpoint, s.connect_timeout, s.auth.clone()).await {
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
            Ok(Some(msg)) => {
                received = true;
                apply(msg, endpoint, s, runner, shared);
            }
            Ok(None) => return (received, "the replica ended the stream".into()),
            Err(status) => return (received, format!("stream failed: {status}")),
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
