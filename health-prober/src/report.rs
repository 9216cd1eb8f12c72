//! Streaming results to every control-plane replica with no silent loss.
//!
//! Each replica has its own [`ReplicaQueue`] (a bounded [`ReplicaBuffer`]) and its
//! own reporter task holding one `ReportResults` stream. Probes only push into the
//! queues (a short lock, never a wait), so a slow or dead replica never blocks
//! probing or the other replicas. A reporter sends a batch every `batch_interval`
//! or as soon as `batch_size` results wait, keeps every sent batch until the
//! replica acknowledges its sequence, and on any stream failure puts the
//! unacknowledged batches back in front and reconnects with backoff and jitter.
//!
//! Decision: one stream per replica, each with its own buffer, rather than one
//! buffer and "send to the leader": a new leader must start with a warm health view,
//! and a replica's outage must cost only that replica's buffer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use meridian_core::Backoff;
use meridian_daemon::failover::EndpointRotation;
use meridian_proto::v1 as pb;
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::buffer::ReplicaBuffer;
use crate::grpc;
use crate::metrics as m;
use crate::probe::ProbeOutcome;
use crate::target::TargetKey;
use crate::Shared;

/// Batches sent but not yet acknowledged, per stream, before sending pauses.
const MAX_IN_FLIGHT_BATCHES: usize = 64;
/// Batches queued towards the gRPC stream.
const STREAM_CHANNEL: usize = 32;

/// One probe result with the identity it is reported under.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRecord {
    pub prober_id: Arc<str>,
    pub region: Arc<str>,
    pub key: TargetKey,
    /// Wall-clock time at which the outcome was known.
    pub observed_at: SystemTime,
    pub outcome: ProbeOutcome,
}

/// A replica's buffer and the reporter's bookkeeping for it.
#[derive(Debug)]
pub(crate) struct ReplicaQueue {
    pub(crate) endpoint: String,
    buffer: Mutex<ReplicaBuffer<Arc<ProbeRecord>>>,
    wake: Notify,
    /// A result that should not wait for the batch interval is queued.
    urgent: AtomicBool,
    /// Targets with a late probe, sent with the next batch (or alone).
    suspects: Mutex<Vec<pb::ProbeSuspect>>,
    batch_size: usize,
    pub(crate) connected: AtomicBool,
    pub(crate) reconnects: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) rejected: AtomicU64,
    last_reject_log: Mutex<Option<Instant>>,
}

impl ReplicaQueue {
    pub(crate) fn new(endpoint: String, limit: usize, batch_size: usize) -> Self {
        Self {
            endpoint,
            buffer: Mutex::new(ReplicaBuffer::new(limit)),
            wake: Notify::new(),
            urgent: AtomicBool::new(false),
            suspects: Mutex::new(Vec::new()),
            batch_size: batch_size.max(1),
            connected: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            last_reject_log: Mutex::new(None),
        }
    }

    fn buffer(&self) -> MutexGuard<'_, ReplicaBuffer<Arc<ProbeRecord>>> {
        // A poisoned lock only means another thread panicked while holding it; the
        // buffer's own operations cannot leave it inconsistent, so keep going.
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_suspects(&self) -> Vec<pb::ProbeSuspect> {
        std::mem::take(&mut *self.suspects.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Adds a result; never waits for the network.
    pub(crate) fn push(&self, record: Arc<ProbeRecord>) {
        let (dropped, held, pending) = {
            let mut b = self.buffer();
            let dropped = b.push(record);
            (dropped, b.len(), b.pending_len())
        };
        if dropped > 0 {
            metrics::counter!(m::DROPPED, "replica" => self.endpoint.clone()).increment(dropped as u64);
        }
        metrics::gauge!(m::BUFFERED, "replica" => self.endpoint.clone()).set(held as f64);
        if pending >= self.batch_size {
            self.wake.notify_one();
        }
    }

    pub(crate) fn held(&self) -> usize {
        self.buffer().len()
    }
    pub(crate) fn dropped(&self) -> u64 {
        self.buffer().dropped()
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::SeqCst);
        metrics::gauge!(m::CONNECTED, "replica" => self.endpoint.clone()).set(if up { 1.0 } else { 0.0 });
    }

    fn on_ack(&self, ack: &pb::ProbeResultAck) {
        let (acked, held) = {
            let mut b = self.buffer();
            (b.ack(ack.sequence), b.len())
        };
        metrics::gauge!(m::BUFFERED, "replica" => self.endpoint.clone()).set(held as f64);
        match acked {
            Some(n) => {
                self.acked.fetch_add(n as u64, Ordering::Relaxed);
                metrics::counter!(m::ACKED, "replica" => self.endpoint.clone()).increment(n as u64);
            }
            None => {
                tracing::debug!(replica = %self.endpoint, sequence = ack.sequence, "acknowledgement for a batch not in flight (dropped or already acknowledged)")
            }
        }
        if ack.rejected > 0 {
            self.rejected.fetch_add(u64::from(ack.rejected), Ordering::Relaxed);
            metrics::counter!(m::REJECTED, "replica" => self.endpoint.clone()).increment(u64::from(ack.rejected));
            // Rejected results are not resent (the replica has judged them); say so
            // at most every 10 s per replica.
            let mut last = self.last_reject_log.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                *last = Some(Instant::now());
                tracing::warn!(replica = %self.endpoint, sequence = ack.sequence, rejected = ack.rejected, errors = ?ack.errors.iter().take(5).collect::<Vec<_>>(), "replica rejected probe results");
            }
        }
    }
}

/// Fans each result out to every replica's queue.
#[derive(Debug)]
pub(crate) struct ResultSink {
    pub(crate) queues: Vec<Arc<ReplicaQueue>>,
}

impl ResultSink {
    /// Queues a result for every replica; `urgent` sends it at once instead of with
    /// the next batch (a failure, a confirmation: the verdict waits for it).
    pub(crate) fn emit(&self, record: ProbeRecord, urgent: bool) {
        let record = Arc::new(record);
        for q in &self.queues {
            q.push(record.clone());
            if urgent {
                q.urgent.store(true, Ordering::Relaxed);
                q.wake.notify_one();
            }
        }
    }

    /// A probe of `key` is late beyond the target's usual latency: tell every
    /// replica at once (it asks the other regions to probe now).
    pub(crate) fn suspect(&self, key: &crate::target::TargetKey, outstanding: Duration) {
        for q in &self.queues {
            q.suspects
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(pb::ProbeSuspect {
                    pop: key.pop.clone(),
                    endpoint: key.endpoint.clone(),
                    outstanding: meridian_proto::prost_types::Duration::try_from(outstanding).ok(),
                });
            q.urgent.store(true, Ordering::Relaxed);
            q.wake.notify_one();
        }
    }
}

/// What a reporter needs besides its queue.
#[derive(Debug)]
pub(crate) struct ReporterSettings {
    pub(crate) prober_id: String,
    pub(crate) region: String,
    pub(crate) link: crate::grpc::Link,
    pub(crate) connect_timeout: Duration,
    pub(crate) ack_timeout: Duration,
    pub(crate) reconnect_initial: Duration,
    pub(crate) reconnect_max: Duration,
    /// How long after shutdown the reporter keeps trying to deliver what it holds.
    pub(crate) flush_timeout: Duration,
}

/// Runs the reporter of one replica until shutdown, then flushes what it can
/// within `flush_timeout` and logs what is left.
pub(crate) async fn run_reporter(
    queue: Arc<ReplicaQueue>,
    settings: Arc<ReporterSettings>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let expire = {
        let shutdown = shutdown.clone();
        let flush = settings.flush_timeout;
        async move {
            shutdown.cancelled().await;
            tokio::time::sleep(flush).await;
        }
    };
    tokio::select! {
        _ = expire => {}
        _ = reporter_loop(&queue, &settings, &shared, &shutdown) => {}
    }
    queue.set_connected(false);
    shared.publish_readiness();
    let left = queue.held();
    if left > 0 {
        tracing::warn!(replica = %queue.endpoint, undelivered = left, "shutdown: results not delivered to this replica within the grace period");
    } else {
        tracing::info!(replica = %queue.endpoint, "shutdown: every result delivered to this replica");
    }
    Ok(())
}

enum SessionEnd {
    /// Shutting down and everything was acknowledged.
    Drained,
    /// The stream failed or could not be opened; `healthy` when it had worked.
    Broken { reason: String, healthy: bool },
}

async fn reporter_loop(q: &ReplicaQueue, s: &ReporterSettings, shared: &Shared, shutdown: &CancellationToken) {
    // One endpoint: the shared rotation pauses after every failed session, with the
    // backoff reset once a session proved healthy. This loop keeps its own shape
    // because it goes on retrying while it drains at shutdown.
    let backoff = Backoff::new(s.reconnect_initial, s.reconnect_max);
    let Ok(mut rotation) = EndpointRotation::new(vec![q.endpoint.clone()], backoff) else {
        return;
    };
    loop {
        if shutdown.is_cancelled() && q.held() == 0 {
            return;
        }
        match session(q, s, shared, shutdown).await {
            SessionEnd::Drained => return,
            SessionEnd::Broken { reason, healthy } => {
                q.buffer().requeue_unacked();
                if q.connected.load(Ordering::SeqCst) {
                    q.set_connected(false);
                    shared.publish_readiness();
                }
                q.reconnects.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::RECONNECTS, "replica" => q.endpoint.clone()).increment(1);
                let delay = rotation.session_ended(healthy, rand::random()).unwrap_or_default();
                let failures = rotation.consecutive_failures();
                // Logged at warn when the trouble starts and every 10th retry after.
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(replica = %q.endpoint, error = %reason, buffered = q.held(), retry_in = ?delay, attempts = failures, "result stream to replica unavailable; buffering");
                } else {
                    tracing::debug!(replica = %q.endpoint, error = %reason, retry_in = ?delay, "result stream retry failed");
                }
                if shutdown.is_cancelled() {
                    tokio::time::sleep(delay).await;
                } else {
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        // Shutdown: try once more right away to flush.
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
        }
    }
}

async fn session(q: &ReplicaQueue, s: &ReporterSettings, shared: &Shared, shutdown: &CancellationToken) -> SessionEnd {
    let broken = |reason: String, healthy: bool| SessionEnd::Broken { reason, healthy };
    let mut client = match grpc::connect(&q.endpoint, s.connect_timeout, &s.link).await {
        Ok(c) => c,
        Err(e) => return broken(e, false),
    };
    let (tx, rx) = mpsc::channel::<pb::ProbeResultBatch>(STREAM_CHANNEL);
    // Unacknowledged batches go first, with their original results and timestamps.
    q.buffer().requeue_unacked();
    let call = tokio::time::timeout(s.connect_timeout, client.report_results(ReceiverStream::new(rx)));
    let mut acks = match call.await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return broken(format!("ReportResults refused: {status}"), false),
        Err(_) => {
            return broken(
                format!("ReportResults not answered within {:?}", s.connect_timeout),
                false,
            )
        }
    };
    q.set_connected(true);
    shared.publish_readiness();
    tracing::info!(replica = %q.endpoint, buffered = q.held(), "result stream to replica connected");
    let established = Instant::now();
    let mut got_ack = false;
    let healthy = |got_ack: bool| got_ack || established.elapsed() > Duration::from_secs(5);
    let mut next_flush = tokio::time::Instant::now() + shared.batch_interval();
    loop {
        let draining = shutdown.is_cancelled();
        let now = tokio::time::Instant::now();
        let flush = draining || now >= next_flush || q.urgent.swap(false, Ordering::Relaxed);
        if flush {
            next_flush = now + shared.batch_interval();
        }
        if let Err(reason) = pump(q, s, &tx, flush) {
            return broken(reason, healthy(got_ack));
        }
        if draining && q.held() == 0 {
            return SessionEnd::Drained;
        }
        let oldest = q.buffer().oldest_unacked_sent_at();
        if let Some(sent) = oldest {
            if sent.elapsed() > s.ack_timeout {
                return broken(format!("no acknowledgement within {:?}", s.ack_timeout), false);
            }
        }
        tokio::select! {
            msg = acks.message() => match msg {
                Ok(Some(ack)) => {
                    got_ack = true;
                    q.on_ack(&ack);
                }
                Ok(None) => return broken("the replica ended the stream".into(), healthy(got_ack)),
                Err(status) => return broken(format!("stream failed: {status}"), healthy(got_ack)),
            },
            _ = q.wake.notified() => {}
            _ = tokio::time::sleep_until(next_flush) => {}
            _ = shutdown.cancelled(), if !draining => {}
        }
    }
}

/// Moves batches from the buffer into the stream while there is room: full
/// batches always, a partial one only when `flush` is set.
fn pump(
    q: &ReplicaQueue,
    s: &ReporterSettings,
    tx: &mpsc::Sender<pb::ProbeResultBatch>,
    flush: bool,
) -> Result<(), String> {
    loop {
        let permit = match tx.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Full(())) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(())) => return Err("the request stream closed".into()),
        };
        let batch = {
            let mut b = q.buffer();
            if b.in_flight_batches() >= MAX_IN_FLIGHT_BATCHES || (!flush && b.pending_len() < q.batch_size) {
                None
            } else {
                b.take_batch(q.batch_size, Instant::now())
            }
        };
        let suspects = q.take_suspects();
        let Some((sequence, records)) = batch else {
            if !suspects.is_empty() {
                // Suspects alone: sequence 0, nothing to acknowledge or resend.
                permit.send(pb::ProbeResultBatch {
                    sequence: 0,
                    results: Vec::new(),
                    prober_id: s.prober_id.clone(),
                    region: s.region.clone(),
                    suspects,
                });
            }
            return Ok(());
        };
        permit.send(pb::ProbeResultBatch {
            sequence,
            results: records.iter().map(|r| grpc::result_to_pb(r)).collect(),
            prober_id: s.prober_id.clone(),
            region: s.region.clone(),
            suspects,
        });
    }
}
