//! The replica's health view: probe results stream in (soft state, never written to
//! the store per result), the pure [`meridian_health::HealthState`] turns them into
//! verdicts, and every change becomes an event in the replica's [`EventLog`].
//!
//! Every replica keeps its own view from the results every prober sends to every
//! replica, so a newly elected leader already has a warm view.
//!
//! Evaluation runs at once when a batch changed some hysteresis state (fast
//! failover), and on a short tick otherwise (so staleness turns into UNKNOWN).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use meridian_core::topology::{Policy, TopologyDoc};
use meridian_health::{
    HealthEvent, HealthPolicy, HealthState, HealthTopology, PopVerdict, RejectReason, ReportRef, UnixMillis,
};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use meridian_engine::Event;

use crate::convert::now_ms;
use crate::events::EventLog;
use crate::topology::AppliedTopology;

/// How often verdicts are re-evaluated when no result changed anything.
const EVALUATE_EVERY: Duration = Duration::from_millis(250);

/// The outcome of one ingested batch, for the prober's acknowledgement.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub accepted: u32,
    pub rejected: u32,
    /// The first few rejection messages (the rest are counted only).
    pub errors: Vec<String>,
}

/// One endpoint every region is asked to probe now: a region saw it fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfirmRequest {
    pub pop: String,
    pub endpoint: String,
    /// Who saw the failure, and what it was.
    pub region: String,
    pub class: meridian_health::FailureClass,
}

/// Confirmation requests queued for a slow assignment stream before the oldest are
/// dropped (a dropped request only costs that prober's speed, never correctness).
const CONFIRM_QUEUE: usize = 256;

/// The health view shared by the gRPC handlers and the evaluator task.
pub struct HealthView {
    state: Mutex<HealthState>,
    evaluate_now: Notify,
    rejection_log: Mutex<HashMap<RejectReason, (Instant, u64)>>,
    /// Bumped whenever verdicts change (steering will follow it).
    generation: watch::Sender<u64>,
    /// On-demand confirmation: each batch's first failures, to every assignment
    /// stream of this replica.
    confirmations: tokio::sync::broadcast::Sender<Arc<Vec<ConfirmRequest>>>,
}

impl HealthView {
    pub fn new() -> Result<Arc<Self>, meridian_health::PolicyError> {
        let state = HealthState::new(HealthTopology::default(), HealthPolicy::default())?;
        Ok(Arc::new(Self {
            state: Mutex::new(state),
            evaluate_now: Notify::new(),
            rejection_log: Mutex::new(HashMap::new()),
            generation: watch::channel(0).0,
            confirmations: tokio::sync::broadcast::channel(CONFIRM_QUEUE).0,
        }))
    }

    /// Confirmation requests from now on (for one assignment stream).
    pub fn confirmations(&self) -> tokio::sync::broadcast::Receiver<Arc<Vec<ConfirmRequest>>> {
        self.confirmations.subscribe()
    }

    /// Locks the state. A panic while holding the lock cannot leave the health state
    /// half-updated in a way that matters (each ingest is self-contained), so a
    /// poisoned lock is recovered rather than propagated.
    pub fn lock(&self) -> MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the verdicts and latencies for steering, taken under the lock in
    /// O(PoPs × prober regions); the caller computes after the lock is released, so
    /// ingest never waits for a steering computation.
    pub fn snapshot(&self) -> meridian_health::HealthSnapshot {
        self.lock().snapshot()
    }

    /// Ingests one batch of already-authenticated results, borrowed from the decoded
    /// batch: no string is copied per result (only per distinct metric label and per
    /// first failure).
    pub fn ingest_batch(&self, results: &[Result<ReportRef<'_>, String>]) -> BatchOutcome {
        let now = UnixMillis(now_ms());
        let mut out = BatchOutcome::default();
        let mut transitioned = false;
        let mut confirm = Vec::new();
        let mut counts: HashMap<(&str, &str, &'static str), u64> = HashMap::new();
        let mut rejected: BTreeMap<RejectReason, (u64, String)> = BTreeMap::new();
        {
            let mut state = self.lock();
            for result in results {
                let report = match result {
                    Ok(r) => *r,
                    Err(msg) => {
                        out.rejected += 1;
                        note_error(&mut out, msg.clone());
                        let e = rejected.entry(RejectReason::Invalid).or_insert((0, msg.clone()));
                        e.0 += 1;
                        continue;
                    }
                };
                match state.ingest_ref(report, now) {
                    Ok(effect) => {
                        out.accepted += 1;
                        transitioned |= effect.transitioned;
                        let label = if report.outcome.success { "success" } else { "failure" };
                        *counts.entry((report.pop, report.region, label)).or_default() += 1;
                        if effect.confirm {
                            confirm.push(ConfirmRequest {
                                pop: report.pop.to_string(),
                                endpoint: report.endpoint.to_string(),
                                region: report.region.to_string(),
                                class: report.outcome.class,
                            });
                        }
                    }
                    Err(rejection) => {
                        out.rejected += 1;
                        let msg = rejection.to_string();
                        note_error(&mut out, msg.clone());
                        let e = rejected.entry(rejection.reason()).or_insert((0, msg));
                        e.0 += 1;
                    }
                }
            }
        }
        for ((pop, region, outcome), n) in counts {
            metrics::counter!("meridian_control_plane_probe_results_total", "pop" => pop.to_string(), "region" => region.to_string(), "outcome" => outcome).increment(n);
        }
        for (reason, (n, example)) in rejected {
            metrics::counter!("meridian_control_plane_probe_results_rejected_total", "reason" => reason.as_str())
                .increment(n);
            self.log_rejections(reason, n, &example);
        }
        if transitioned {
            self.evaluate_now.notify_one();
        }
        self.ask_to_confirm(confirm);
        out
    }

    /// Sends confirmation requests to every assignment stream of this replica.
    fn ask_to_confirm(&self, confirm: Vec<ConfirmRequest>) {
        if confirm.is_empty() {
            return;
        }
        metrics::counter!("meridian_control_plane_confirmation_requests_total").increment(confirm.len() as u64);
        // No stream listening is fine: nobody to ask.
        let _ = self.confirmations.send(Arc::new(confirm));
    }

    /// A prober's late probes: asks every region to probe those targets now (at most
    /// once per endpoint per window, shared with first failures). Unknown targets
    /// are counted as rejected.
    pub fn suspects(&self, region: &str, suspects: &[(&str, &str)]) {
        if suspects.is_empty() {
            return;
        }
        let now = UnixMillis(now_ms());
        let mut confirm = Vec::new();
        {
            let mut state = self.lock();
            for &(pop, endpoint) in suspects {
                match state.suspect(pop, endpoint, now) {
                    Ok(true) => confirm.push(ConfirmRequest {
                        pop: pop.to_string(),
                        endpoint: endpoint.to_string(),
                        region: region.to_string(),
                        class: meridian_health::FailureClass::Timeout,
                    }),
                    Ok(false) => {}
                    Err(rejection) => self.reject_outside(rejection.reason(), 1, &rejection.to_string()),
                }
            }
        }
        metrics::counter!("meridian_control_plane_probe_suspects_total").increment(suspects.len() as u64);
        self.ask_to_confirm(confirm);
    }

    /// Counts one result rejected before it reached the core (authentication, wire
    /// format), with the same rate-limited log as the core's rejections.
    pub fn reject_outside(&self, reason: RejectReason, n: u64, example: &str) {
        metrics::counter!("meridian_control_plane_probe_results_rejected_total", "reason" => reason.as_str())
            .increment(n);
        self.log_rejections(reason, n, example);
    }

    /// Logs rejections at most once per 10 s per reason, with the count since.
    fn log_rejections(&self, reason: RejectReason, n: u64, example: &str) {
        let mut log = self.rejection_log.lock().unwrap_or_else(|e| e.into_inner());
        let entry = log
            .entry(reason)
            .or_insert((Instant::now() - Duration::from_secs(3600), 0));
        entry.1 += n;
        if entry.0.elapsed() >= Duration::from_secs(10) {
            tracing::warn!(
                reason = reason.as_str(),
                count = entry.1,
                example,
                "probe results rejected (logged at most every 10s)"
            );
            *entry = (Instant::now(), 0);
        }
    }

    /// Verdict generation: changes whenever any verdict changed.
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Carries out what an evaluation produced: metrics, logs, the event log, and the
    /// verdict generation that wakes steering.
    fn record(&self, events: Vec<HealthEvent>, log: &EventLog) {
        if events.is_empty() {
            return;
        }
        let mut verdicts_changed = false;
        for event in events {
            match &event {
                HealthEvent::Verdict {
                    pop, old, new, rule, ..
                } => {
                    verdicts_changed = true;
                    tracing::info!(pop = %pop, old = %old, new = %new, rule = %rule, "PoP verdict changed");
                    metrics::counter!("meridian_control_plane_verdict_changes_total", "pop" => pop.clone(), "to" => verdict_label(new)).increment(1);
                }
                HealthEvent::RegionSuspect { region, down_share, .. } => {
                    tracing::warn!(region = %region, down_share, "region suspect: its probers see most PoPs down alone; its votes are discounted");
                    metrics::gauge!("meridian_control_plane_region_suspect", "region" => region.clone()).set(1.0);
                }
                HealthEvent::RegionRecovered { region, .. } => {
                    tracing::info!(region = %region, "region no longer suspect");
                    metrics::gauge!("meridian_control_plane_region_suspect", "region" => region.clone()).set(0.0);
                }
            }
            log.record(Event::from_health(event));
        }
        if verdicts_changed {
            self.generation.send_modify(|g| *g += 1);
        }
    }
}

fn note_error(out: &mut BatchOutcome, msg: String) {
    if out.errors.len() < 10 {
        out.errors.push(msg);
    }
}

pub fn verdict_label(v: &PopVerdict) -> &'static str {
    match v {
        PopVerdict::Unknown => "unknown",
        PopVerdict::Up => "up",
        PopVerdict::Degraded { .. } => "degraded",
        PopVerdict::Down => "down",
    }
}

/// The health policy a topology's policy section asks for.
pub fn health_policy(p: &Policy) -> HealthPolicy {
    HealthPolicy {
        rise: p.rise,
        fall: p.fall,
        freshness: p.freshness,
        quorum: p.quorum,
        min_regions: p.min_regions as usize,
        suspect_share: p.suspect_share,
        suspect_min_pops: p.suspect_min_pops as usize,
        ..HealthPolicy::default()
    }
}

/// The PoPs and endpoints health tracks for a topology.
pub fn health_topology(doc: &TopologyDoc) -> HealthTopology {
    HealthTopology::new(doc.pops.iter().map(|p| {
        (
            p.id.clone(),
            p.endpoints.iter().map(|e| e.name.clone()).collect::<Vec<_>>(),
        )
    }))
}

/// Re-evaluates verdicts on demand and on a tick, and follows topology changes.
pub async fn run_evaluator(
    view: Arc<HealthView>,
    log: Arc<EventLog>,
    mut topology: watch::Receiver<AppliedTopology>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let mut tick = tokio::time::interval(EVALUATE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    apply_topology(&view, &topology.borrow_and_update());
    let mut refresh_gauges = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = view.evaluate_now.notified() => {}
            _ = tick.tick() => {}
            changed = topology.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                apply_topology(&view, &topology.borrow_and_update());
                refresh_gauges = true;
            }
        }
        let (events, codes) = {
            let mut state = view.lock();
            let events = state.evaluate(UnixMillis(now_ms()));
            // Only collect under the lock (and only when something changed); metric
            // updates happen after it is released.
            let codes: Vec<(String, f64)> = if events.is_empty() && !refresh_gauges {
                Vec::new()
            } else {
                refresh_gauges = false;
                state
                    .verdicts()
                    .map(|(pop, info)| (pop.to_string(), verdict_code(&info.verdict)))
                    .collect()
            };
            (events, codes)
        };
        for (pop, code) in codes {
            metrics::gauge!("meridian_control_plane_pop_verdict", "pop" => pop).set(code);
        }
        view.record(events, &log);
    }
}

/// 0 unknown, 1 up, 2 degraded, 3 down: one gauge per PoP.
fn verdict_code(v: &PopVerdict) -> f64 {
    match v {
        PopVerdict::Unknown => 0.0,
        PopVerdict::Up => 1.0,
        PopVerdict::Degraded { .. } => 2.0,
        PopVerdict::Down => 3.0,
    }
}

fn apply_topology(view: &HealthView, applied: &AppliedTopology) {
    let mut state = view.lock();
    if let Err(e) = state.set_policy(health_policy(&applied.doc.policy)) {
        tracing::error!(error = %e, "topology policy rejected by health aggregation; keeping the previous policy");
    }
    state.set_topology(health_topology(&applied.doc));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policies_are_valid() {
        assert!(HealthState::new(HealthTopology::default(), HealthPolicy::default()).is_ok());
        assert!(health_policy(&Policy::default()).validate().is_ok());
    }
}
