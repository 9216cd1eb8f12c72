//! Runs the assigned probes: one task per target, scheduled by the pure
//! [`TargetSchedule`] (which may keep several probes of a target in flight: a late
//! probe gets company, and confirmations never wait for a timeout), limited globally
//! by a semaphore, reconciled against each new assignment set without restarting
//! targets whose spec did not change. A target can be asked to probe now (on-demand
//! confirmation from the control plane).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::{FuturesUnordered, StreamExt};
use meridian_core::probe::{FailureClass, ProbeOutcome};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::probe::PreparedProbe;
use crate::report::{ProbeRecord, ResultSink};
use crate::scheduler::{Belief, TargetSchedule};
use crate::target::{TargetKey, TargetSpec};

/// What changes when moving from the running set to a desired set.
#[derive(Debug, Default, PartialEq)]
pub struct ReconcilePlan {
    /// New keys.
    pub start: Vec<TargetSpec>,
    /// Keys whose spec changed: stopped and started again with the new spec.
    pub restart: Vec<TargetSpec>,
    /// Keys no longer assigned.
    pub stop: Vec<TargetKey>,
    /// Keys left running as they are.
    pub unchanged: usize,
}

/// Pure: compares the running specs with the desired ones.
pub fn plan_reconcile<'a>(
    running: impl IntoIterator<Item = (&'a TargetKey, &'a TargetSpec)>,
    desired: Vec<TargetSpec>,
) -> ReconcilePlan {
    let mut plan = ReconcilePlan::default();
    let mut remaining: BTreeMap<&TargetKey, &TargetSpec> = running.into_iter().collect();
    for spec in desired {
        match remaining.remove(&spec.key) {
            None => plan.start.push(spec),
            Some(current) if *current == spec => plan.unchanged += 1,
            Some(_) => plan.restart.push(spec),
        }
    }
    plan.stop = remaining.into_keys().cloned().collect();
    plan
}

/// The global limit on probes in flight; resizing swaps in a new semaphore (probes
/// holding a permit of the old one finish normally).
#[derive(Debug)]
pub(crate) struct Limiter {
    current: Mutex<(usize, Arc<Semaphore>)>,
}

impl Limiter {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            current: Mutex::new((n, Arc::new(Semaphore::new(n.max(1))))),
        }
    }
    fn get(&self) -> Arc<Semaphore> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).1.clone()
    }
    pub(crate) fn resize(&self, n: usize) {
        let n = n.max(1);
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur.0 != n {
            tracing::info!(from = cur.0, to = n, "probe concurrency limit changed");
            *cur = (n, Arc::new(Semaphore::new(n)));
        }
    }
}

/// What every target task shares.
#[derive(Debug)]
pub(crate) struct ProbeContext {
    pub(crate) prober_id: Arc<str>,
    pub(crate) region: Arc<str>,
    pub(crate) limiter: Limiter,
    pub(crate) sink: ResultSink,
    pub(crate) probes_run: AtomicU64,
}

struct Running {
    spec: TargetSpec,
    cancel: CancellationToken,
    /// Wakes the target to probe now.
    probe_now: Arc<Notify>,
    task: JoinHandle<()>,
}

/// The running probe set.
pub(crate) struct ProbeRunner {
    ctx: Arc<ProbeContext>,
    running: BTreeMap<TargetKey, Running>,
}

impl ProbeRunner {
    pub(crate) fn new(ctx: Arc<ProbeContext>) -> Self {
        Self {
            ctx,
            running: BTreeMap::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.running.len()
    }

    /// Brings the running set to `desired`.
    pub(crate) fn reconcile(&mut self, desired: Vec<TargetSpec>) -> ReconcilePlan {
        let plan = plan_reconcile(self.running.iter().map(|(k, r)| (k, &r.spec)), desired);
        for key in &plan.stop {
            if let Some(r) = self.running.remove(key) {
                r.cancel.cancel();
            }
        }
        for spec in plan.restart.iter().chain(plan.start.iter()) {
            if let Some(old) = self.running.remove(&spec.key) {
                old.cancel.cancel();
            }
            let cancel = CancellationToken::new();
            let probe_now = Arc::new(Notify::new());
            let task = tokio::spawn(run_target(
                spec.clone(),
                self.ctx.clone(),
                cancel.clone(),
                probe_now.clone(),
            ));
            self.running.insert(
                spec.key.clone(),
                Running {
                    spec: spec.clone(),
                    cancel,
                    probe_now,
                    task,
                },
            );
        }
        plan
    }

    /// Asks the running target `key` to probe now; false if it is not running.
    pub(crate) fn probe_now(&self, key: &TargetKey) -> bool {
        self.running.get(key).map(|r| r.probe_now.notify_one()).is_some()
    }

    /// Stops every target and waits for the tasks to end (each ends at its next
    /// await point: a probe in flight is abandoned).
    pub(crate) async fn stop_all(&mut self) {
        let all = std::mem::take(&mut self.running);
        for r in all.values() {
            r.cancel.cancel();
        }
        for (_, r) in all {
            let _ = r.task.await;
        }
    }
}

fn wall_clock() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

async fn run_target(spec: TargetSpec, ctx: Arc<ProbeContext>, cancel: CancellationToken, probe_now: Arc<Notify>) {
    let probe = Arc::new(PreparedProbe::new(&spec, &ctx.prober_id, &ctx.region));
    let kind = spec.check.kind();
    let mut schedule = TargetSchedule::new(spec.schedule, Instant::now(), wall_clock(), rand::random());
    let mut in_flight = FuturesUnordered::new();
    // Whether the probes in flight were reported late already.
    let mut suspected = false;
    tracing::debug!(pop = %spec.key.pop, endpoint = %spec.key.endpoint, kind, "probing target");
    loop {
        let can_start = schedule.can_start();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(schedule.next_due().into()), if can_start => {
                let confirming = schedule.is_confirming();
                let limit = schedule.probe_timeout();
                // A steady probe still in flight when the next is due is late beyond
                // the target's usual latency: tell the control plane now, once.
                if schedule.in_flight() > 0 && !confirming && !suspected && schedule.belief() != Belief::Down {
                    suspected = true;
                    ctx.sink.suspect(&spec.key, schedule.late_after());
                }
                schedule.on_start(Instant::now());
                in_flight.push(run_one(probe.clone(), ctx.clone(), limit, confirming));
            }
            Some((outcome, confirming)) = in_flight.next(), if !in_flight.is_empty() => {
                let outcome: ProbeOutcome = outcome;
                let now = Instant::now();
                suspected = false;
                ctx.probes_run.fetch_add(1, Ordering::Relaxed);
                let outcome_label = if outcome.success { "success" } else { "failure" };
                metrics::counter!(m::PROBES, "pop" => spec.key.pop.clone(), "kind" => kind, "outcome" => outcome_label, "class" => outcome.class.as_str()).increment(1);
                metrics::histogram!(m::PROBE_DURATION, "pop" => spec.key.pop.clone(), "kind" => kind)
                    .record(outcome.latency.as_secs_f64());
                let before = schedule.belief();
                schedule.on_result(outcome.success, outcome.latency, now, wall_clock(), rand::random());
                let after = schedule.belief();
                if before != after && after != Belief::Unknown {
                    let state = if after == Belief::Up { "up" } else { "down" };
                    tracing::info!(pop = %spec.key.pop, endpoint = %spec.key.endpoint, kind, state, class = %outcome.class, detail = %outcome.detail, "target confirmed {state}");
                }
                // A failure, or any result of a confirmation, is news: send it now
                // rather than with the next batch.
                let urgent = !outcome.success || confirming || schedule.is_confirming();
                ctx.sink.emit(
                    ProbeRecord {
                        prober_id: ctx.prober_id.clone(),
                        region: ctx.region.clone(),
                        key: spec.key.clone(),
                        observed_at: SystemTime::now(),
                        outcome,
                    },
                    urgent,
                );
            }
            _ = probe_now.notified() => {
                metrics::counter!(m::PROBE_NOW, "pop" => spec.key.pop.clone()).increment(1);
                schedule.on_probe_now(Instant::now());
            }
        }
    }
}

/// One probe under the global limit, cut at the adaptive timeout `limit` when the
/// target usually answers far sooner. Returns the outcome and whether it was a
/// confirmation.
async fn run_one(
    probe: Arc<PreparedProbe>,
    ctx: Arc<ProbeContext>,
    limit: Option<Duration>,
    confirming: bool,
) -> (ProbeOutcome, bool) {
    let semaphore = ctx.limiter.get();
    let _permit = semaphore.acquire_owned().await;
    let start = Instant::now();
    let outcome = match limit {
        None => probe.run().await,
        Some(limit) => match tokio::time::timeout(limit, probe.run()).await {
            Ok(outcome) => outcome,
            Err(_) => ProbeOutcome::failed(
                start.elapsed(),
                FailureClass::Timeout,
                format!("no answer within {limit:?} (adaptive timeout: this target usually answers far sooner)"),
            ),
        },
    };
    (outcome, confirming)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::scheduler::ScheduleParams;
    use crate::target::{Check, TcpCheck};

    fn spec(pop: &str, endpoint: &str, addr: &str) -> TargetSpec {
        TargetSpec {
            key: TargetKey {
                pop: pop.into(),
                endpoint: endpoint.into(),
            },
            schedule: ScheduleParams::default(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            check: Check::Tcp(TcpCheck { address: addr.into() }),
        }
    }

    #[test]
    fn reconcile_adds_removes_and_updates_only_what_changed() {
        let a = spec("fra1", "tcp", "192.0.2.1:80");
        let b = spec("ams1", "tcp", "192.0.2.2:80");
        let c = spec("lhr1", "tcp", "192.0.2.3:80");
        let running: BTreeMap<TargetKey, TargetSpec> = [a.clone(), b.clone(), c.clone()]
            .into_iter()
            .map(|s| (s.key.clone(), s))
            .collect();
        let b2 = spec("ams1", "tcp", "192.0.2.22:80");
        let d = spec("cdg1", "tcp", "192.0.2.4:80");
        let plan = plan_reconcile(running.iter(), vec![a.clone(), b2.clone(), d.clone()]);
        assert_eq!(plan.start, vec![d]);
        assert_eq!(plan.restart, vec![b2]);
        assert_eq!(plan.stop, vec![c.key.clone()]);
        assert_eq!(plan.unchanged, 1);
        let same = plan_reconcile(running.iter(), vec![a, b, c]);
        assert_eq!(
            same,
            ReconcilePlan {
                unchanged: 3,
                ..Default::default()
            }
        );
    }
}
