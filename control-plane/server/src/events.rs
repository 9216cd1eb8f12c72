//! The event log: typed [`Event`]s (verdicts, suspect regions, plans, guardrails,
//! slow start, operator actions with their actor), kept durably and cluster-wide in
//! the store under `<root>/events/`, for `meridianctl events` and postmortems.
//!
//! Two halves. [`EventLog`] is what the rest of the replica calls (`record`,
//! `record_all`): it never blocks and never touches the store. It keeps the newest
//! [`EVENT_RING`] events in memory (what this replica saw, for its own tests and logs)
//! and hands each event to a bounded queue. [`write_events`], a background task,
//! drains that queue in batches and appends them with [`EventStore::append`]; when
//! the queue is full an event is dropped from the store, counted and logged, never
//! waited for.
//!
//! Who appends: **only the leader**, through fenced transactions. Health verdicts
//! are computed by every replica; the leader's view is the one that steers, so it is
//! the one stored; a follower only holds its own events for a few lease TTLs, and
//! if it wins the election it stores those the dead leader had not (newer than the
//! newest stored event, not a duplicate of one), so the gap between two leaders is
//! kept; the rest are counted as `local_only`. Steering and plan events happen only
//! on the leader, and
//! operator mutations are carried out by the leader (a follower forwards them), so
//! every decision that changed traffic is in the stored log. Ids are sequence
//! numbers: an append reads `<root>/events/next`, writes the events at `next..` and
//! the new counter in one fenced transaction that compares the counter's mod
//! revision, so ids are dense, increasing and never reused across leader changes.
//! We rejected ids derived from the store revision: they are not dense, so a reader
//! could not fetch the log a block of [`EVENT_BLOCK`] keys at a time.
//!
//! Reads ([`EventStore::list`]) come from the store on any replica, newest first a
//! block at a time, so every replica answers with the same history. The leader
//! prunes by count and age ([`EventStore::prune`], [`prune_events`]), oldest first,
//! so the log never has holes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_core::keys::{Keys, EVENT_BLOCK};
use meridian_engine::Event;
use meridian_store::election::{fenced_txn, Leadership};
use meridian_store::{Compare, Fence, Revision, Store, StoreError, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How many events a replica keeps in memory.
pub const EVENT_RING: usize = 2000;

/// The most events (or deletes) in one transaction: etcd refuses transactions of
/// more than 128 operations by default (`--max-txn-ops`), and an append adds the
/// counter.
pub const MAX_TXN_EVENTS: usize = 100;

/// The most events one prune round deletes, so one round never holds the store long.
const MAX_PRUNE_PER_ROUND: usize = 10_000;

/// How many times an append re-reads the counter when another writer moved it.
const APPEND_ATTEMPTS: usize = 5;

/// One entry of the in-memory ring: its id on this replica and the event.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedEvent {
    pub id: u64,
    pub event: Event,
}

/// One event as stored: its cluster-wide id and the replica that recorded it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub id: u64,
    pub replica: String,
    pub event: Event,
}

/// What a reader asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventFilter {
    /// The newest this many matching events.
    pub limit: usize,
    /// Only events about this PoP.
    pub pop: Option<String>,
    /// Only events at or after this time.
    pub since_unix_ms: Option<u64>,
}

/// How long events are kept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Retention {
    pub max_age: Duration,
    pub max_count: u64,
}

/// Why the stored event log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum EventStoreError {
    #[error("store operation on {key} failed")]
    Store {
        key: String,
        #[source]
        source: StoreError,
    },
    #[error("the event counter {key} kept moving under {attempts} appends; another writer is appending")]
    Contended { key: String, attempts: usize },
    #[error("{key} holds {value:?}, not a sequence number")]
    Corrupt { key: String, value: String },
    #[error("cannot encode an event")]
    Encode(#[source] serde_json::Error),
}

impl EventStoreError {
    fn store(key: &str) -> impl FnOnce(StoreError) -> EventStoreError + '_ {
        move |source| EventStoreError::Store {
            key: key.to_string(),
            source,
        }
    }

    /// Whether this replica lost leadership (its fenced write was refused).
    pub fn is_fence_lost(&self) -> bool {
        matches!(
            self,
            EventStoreError::Store {
                source: StoreError::FenceLost { .. },
                ..
            }
        )
    }
}

/// The event log of one replica: the in-memory ring and the queue to the store.
#[derive(Debug)]
pub struct EventLog {
    inner: Mutex<Ring>,
    capacity: usize,
    queue: Option<mpsc::Sender<Event>>,
    /// Set while the queue is full, so a flood logs once instead of per event.
    dropping: AtomicBool,
}

#[derive(Debug)]
struct Ring {
    next_id: u64,
    ring: VecDeque<LoggedEvent>,
}

/// The receiving end of an [`EventLog`]'s queue, for [`write_events`].
#[derive(Debug)]
pub struct EventQueue(mpsc::Receiver<Event>);

impl Default for EventLog {
    fn default() -> Self {
        Self::with_capacity(EVENT_RING)
    }
}

impl EventLog {
    /// A log kept in memory only (no store).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Ring {
                next_id: 1,
                ring: VecDeque::new(),
            }),
            capacity: capacity.max(1),
            queue: None,
            dropping: AtomicBool::new(false),
        }
    }

    /// A log whose events also go to the store through a queue of `queue` events,
    /// drained by [`write_events`].
    pub fn durable(queue: usize) -> (Self, EventQueue) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let log = Self {
            queue: Some(tx),
            ..Self::default()
        };
        (log, EventQueue(rx))
    }

    /// Records one event (and logs it).
    pub fn record(&self, event: Event) {
        self.record_all([event]);
    }

    /// Records events in order. Never blocks on the store.
    pub fn record_all(&self, events: impl IntoIterator<Item = Event>) {
        // A panic while holding the lock cannot leave the ring inconsistent (each
        // push is self-contained), so a poisoned lock is recovered.
        let mut log = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            tracing::info!(
                kind = event.kind_name(),
                actor = %event.actor,
                pop = event.pop(),
                region = event.region(),
                message = %event.message(),
                "event"
            );
            self.enqueue(&event);
            let id = log.next_id;
            log.next_id += 1;
            log.ring.push_back(LoggedEvent { id, event });
            if log.ring.len() > self.capacity {
                log.ring.pop_front();
            }
        }
    }

    /// The newest `limit` events this replica saw, oldest first, optionally only
    /// those about `pop`.
    pub fn list(&self, limit: usize, pop: Option<&str>) -> Vec<LoggedEvent> {
        let log = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<LoggedEvent> = log
            .ring
            .iter()
            .rev()
            .filter(|e| pop.is_none_or(|p| e.event.pop() == Some(p)))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    fn enqueue(&self, event: &Event) {
        let Some(queue) = &self.queue else { return };
        match queue.try_send(event.clone()) {
            Ok(()) => {
                if self.dropping.swap(false, Ordering::Relaxed) {
                    tracing::info!("the event queue has room again; events reach the store again");
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("meridian_control_plane_events_dropped_total", "reason" => "queue_full").increment(1);
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        "the event queue is full: events are kept in this replica's memory but not stored \
                         (meridian_control_plane_events_dropped_total{{reason=\"queue_full\"}} counts them); \
                         is the store slow or unreachable?"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                metrics::counter!("meridian_control_plane_events_dropped_total", "reason" => "writer_stopped")
                    .increment(1);
            }
        }
    }
}

/// The stored event log: append (leader), list (anyone), prune (leader).
#[derive(Clone)]
pub struct EventStore {
    store: Arc<dyn Store>,
    keys: Keys,
    replica: String,
}

impl EventStore {
    /// `replica` is recorded with every event this handle appends.
    pub fn new(store: Arc<dyn Store>, keys: Keys, replica: impl Into<String>) -> Self {
        Self {
            store,
            keys,
            replica: replica.into(),
        }
    }

    /// Appends `events` in order under `fence`, at most [`MAX_TXN_EVENTS`] per
    /// transaction; returns their ids.
    pub async fn append(&self, fence: &Fence, events: &[Event]) -> Result<Vec<u64>, EventStoreError> {
        let mut ids = Vec::with_capacity(events.len());
        for chunk in events.chunks(MAX_TXN_EVENTS) {
            ids.extend(self.append_chunk(fence, chunk).await?);
        }
        Ok(ids)
    }

    async fn append_chunk(&self, fence: &Fence, events: &[Event]) -> Result<Vec<u64>, EventStoreError> {
        let counter = self.keys.events_next();
        let n = events.len() as u64;
        for _ in 0..APPEND_ATTEMPTS {
            let (next, revision) = self.read_number(&counter).await?;
            let next = next.max(1);
            let mut ops = Vec::with_capacity(events.len() + 1);
            for (id, event) in (next..).zip(events) {
                let stored = StoredEvent {
                    id,
                    replica: self.replica.clone(),
                    event: event.clone(),
                };
                let value = serde_json::to_vec(&stored).map_err(EventStoreError::Encode)?;
                ops.push(TxnOp::put(self.keys.event(id), value));
            }
            ops.push(TxnOp::put(counter.clone(), (next + n).to_string()));
            let txn = Txn::new()
                .when([Compare::modified_at(counter.clone(), revision)])
                .and_then(ops);
            let resp = fenced_txn(self.store.as_ref(), fence, txn)
                .await
                .map_err(EventStoreError::store(&counter))?;
            if resp.succeeded {
                return Ok((next..next + n).collect());
            }
        }
        Err(EventStoreError::Contended {
            key: counter,
            attempts: APPEND_ATTEMPTS,
        })
    }

    /// The newest `filter.limit` matching events, oldest first. Reads a block of
    /// [`EVENT_BLOCK`] keys at a time from the newest, and stops at the limit, at a
    /// block wholly older than `since`, or where pruning has removed the rest.
    pub async fn list(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, EventStoreError> {
        let (next, _) = self.read_number(&self.keys.events_next()).await?;
        let mut out = Vec::new();
        if next <= 1 || filter.limit == 0 {
            return Ok(out);
        }
        let mut block = (next - 1) / EVENT_BLOCK;
        loop {
            let mut events = self.read_block(block).await?;
            if events.is_empty() {
                break;
            }
            events.sort_by_key(|e| std::cmp::Reverse(e.id));
            let mut all_older = true;
            for e in events {
                let recent = filter.since_unix_ms.is_none_or(|since| e.event.at_unix_ms >= since);
                all_older &= !recent;
                let about = filter.pop.as_deref().is_none_or(|p| e.event.pop() == Some(p));
                if recent && about && out.len() < filter.limit {
                    out.push(e);
                }
            }
            if out.len() >= filter.limit || all_older || block == 0 {
                break;
            }
            block -= 1;
        }
        out.reverse();
        Ok(out)
    }

    /// Deletes, under `fence`, the oldest events beyond `retention.max_count` and
    /// those older than `retention.max_age` (oldest first, stopping at the first
    /// event kept, so the log never has holes); at most [`MAX_PRUNE_PER_ROUND`] per
    /// call. Returns how many were deleted.
    pub async fn prune(&self, fence: &Fence, retention: Retention, now_unix_ms: u64) -> Result<u64, EventStoreError> {
        let (next, _) = self.read_number(&self.keys.events_next()).await?;
        let floor_key = self.keys.events_floor();
        let (floor, _) = self.read_number(&floor_key).await?;
        let floor = floor.max(1);
        if next <= floor {
            return Ok(0);
        }
        let count_cutoff = next.saturating_sub(retention.max_count);
        let age_cutoff = now_unix_ms.saturating_sub(u64::try_from(retention.max_age.as_millis()).unwrap_or(u64::MAX));
        let mut doomed = Vec::new();
        let last_block = (next - 1) / EVENT_BLOCK;
        let mut block = floor / EVENT_BLOCK;
        'scan: while block <= last_block && doomed.len() < MAX_PRUNE_PER_ROUND {
            let mut events = self.read_block(block).await?;
            events.sort_by_key(|e| e.id);
            for e in events {
                if e.id < count_cutoff || e.event.at_unix_ms < age_cutoff {
                    doomed.push(e.id);
                } else {
                    break 'scan;
                }
            }
            block += 1;
        }
        doomed.truncate(MAX_PRUNE_PER_ROUND);
        let mut deleted = 0;
        for chunk in doomed.chunks(MAX_TXN_EVENTS) {
            let Some(last) = chunk.last() else { continue };
            let mut ops: Vec<TxnOp> = chunk.iter().map(|id| TxnOp::delete(self.keys.event(*id))).collect();
            ops.push(TxnOp::put(floor_key.clone(), (last + 1).to_string()));
            fenced_txn(self.store.as_ref(), fence, Txn::new().and_then(ops))
                .await
                .map_err(EventStoreError::store(&floor_key))?;
            deleted += chunk.len() as u64;
        }
        Ok(deleted)
    }

    /// A number kept as decimal text (absent: 0) and its mod revision.
    async fn read_number(&self, key: &str) -> Result<(u64, Revision), EventStoreError> {
        let Some(kv) = self.store.get(key).await.map_err(EventStoreError::store(key))? else {
            return Ok((0, 0));
        };
        let text = String::from_utf8_lossy(&kv.value);
        let n = text.trim().parse().map_err(|_| EventStoreError::Corrupt {
            key: key.to_string(),
            value: text.chars().take(40).collect(),
        })?;
        Ok((n, kv.mod_revision))
    }

    /// The events of one block. An undecodable entry is skipped and counted: one
    /// bad record must not hide the rest of the history.
    async fn read_block(&self, block: u64) -> Result<Vec<StoredEvent>, EventStoreError> {
        let prefix = self.keys.event_block(block);
        let resp = self
            .store
            .range(&prefix)
            .await
            .map_err(EventStoreError::store(&prefix))?;
        let mut out = Vec::with_capacity(resp.kvs.len());
        for kv in resp.kvs {
            match serde_json::from_slice::<StoredEvent>(&kv.value) {
                Ok(e) => out.push(e),
                Err(err) => {
                    metrics::counter!("meridian_control_plane_events_undecodable_total").increment(1);
                    tracing::warn!(key = %kv.key, error = %err, "skipping an undecodable stored event");
                }
            }
        }
        Ok(out)
    }
}

/// The background writer: drains the queue in batches and appends them while this
/// replica leads.
///
/// While it does not lead, the leader's view is the stored one, so its own events
/// are only held: at most [`MAX_HELD`], none older than `hold_window`. When it wins
/// the election (after a leader died, or after its own restart) it stores first
/// the held events that are newer than the newest stored event and not already
/// stored (same kind, PoP, region and message), so the verdicts seen in the gap
/// between two leaders are not lost and the stored log stays in time order; the rest
/// are counted as `local_only`. A failed append is retried twice, then its events
/// are dropped from the store (counted by reason, logged with the error chain); they
/// stay in this replica's memory.
pub async fn write_events(
    events: EventStore,
    mut queue: EventQueue,
    mut leadership: watch::Receiver<Leadership>,
    hold_window: Duration,
    timeout: Duration,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let mut held: VecDeque<Event> = VecDeque::new();
    let mut election_gone = false;
    let mut stopping = false;
    while !stopping {
        let mut incoming = Vec::new();
        tokio::select! {
            _ = shutdown.cancelled() => stopping = true,
            e = queue.0.recv() => match e {
                Some(e) => incoming.push(e),
                None => stopping = true,
            },
            changed = leadership.changed(), if !election_gone => election_gone = changed.is_err(),
        }
        while incoming.len() < MAX_TXN_EVENTS * 10 {
            match queue.0.try_recv() {
                Ok(e) => incoming.push(e),
                Err(_) => break,
            }
        }
        let now = crate::replica::unix_now().as_millis() as u64;
        let oldest = now.saturating_sub(u64::try_from(hold_window.as_millis()).unwrap_or(u64::MAX));
        let fence = leadership.borrow_and_update().fence.clone();
        let Some(fence) = fence else {
            held.extend(incoming);
            let before = held.len();
            held.retain(|e| e.at_unix_ms >= oldest);
            let excess = held.len().saturating_sub(MAX_HELD);
            held.drain(..excess);
            local_only((before - held.len()) as u64);
            continue;
        };
        let mut batch = Vec::new();
        if !held.is_empty() {
            let candidates: Vec<Event> = held.drain(..).filter(|e| e.at_unix_ms >= oldest).collect();
            let gap = events.not_yet_stored(candidates, oldest, timeout).await;
            local_only(gap.dropped);
            batch = gap.keep;
        }
        batch.extend(incoming);
        if !batch.is_empty() {
            // On the way out nothing waits for a retry: the shutdown is bounded.
            let attempts = if stopping { 1 } else { 3 };
            write_batch(&events, &fence, &batch, timeout, attempts, &shutdown).await;
        }
    }
    Ok(())
}

/// How much later than the stored one a held event with the same identity still
/// counts as the same happening (see [`EventStore::not_yet_stored`]).
const DUPLICATE_SKEW_MS: u64 = 3000;

/// How many events a replica holds while it does not lead.
pub const MAX_HELD: usize = 1000;

fn local_only(n: u64) {
    if n > 0 {
        metrics::counter!("meridian_control_plane_events_local_only_total").increment(n);
    }
}

/// Held events split into those to store and how many were not.
struct Gap {
    keep: Vec<Event>,
    dropped: u64,
}

impl EventStore {
    /// Of `held` (events this replica saw while another replica led or nobody did),
    /// those newer than the newest stored event and not stored already. When the
    /// log cannot be read, all of them (a duplicate is better than a gap).
    async fn not_yet_stored(&self, held: Vec<Event>, since_unix_ms: u64, timeout: Duration) -> Gap {
        let filter = EventFilter {
            limit: 2000,
            pop: None,
            since_unix_ms: Some(since_unix_ms),
        };
        let stored = match tokio::time::timeout(timeout, self.list(&filter)).await {
            Ok(Ok(stored)) => stored,
            Ok(Err(err)) => {
                tracing::warn!(error = %crate::error_chain(&err), "cannot read the event log; storing every held event");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        let newest = stored.iter().map(|e| e.event.at_unix_ms).max();
        let mut seen: std::collections::HashMap<_, Vec<u64>> = std::collections::HashMap::new();
        for e in &stored {
            seen.entry(identity(&e.event)).or_default().push(e.event.at_unix_ms);
        }
        // The same happening as the previous leader stored it: same identity, seen a
        // little later here (replicas get the same probe results within moments).
        // The same words much later are a new happening.
        let duplicate = |e: &Event| {
            seen.get(&identity(e)).is_some_and(|ats| {
                ats.iter()
                    .any(|at| e.at_unix_ms >= *at && e.at_unix_ms - at <= DUPLICATE_SKEW_MS)
            })
        };
        let total = held.len() as u64;
        let keep: Vec<Event> = held
            .into_iter()
            .filter(|e| newest.is_none_or(|t| e.at_unix_ms > t) && !duplicate(e))
            .collect();
        Gap {
            dropped: total - keep.len() as u64,
            keep,
        }
    }
}

/// What makes two replicas' records of one happening the same.
fn identity(e: &Event) -> (&'static str, Option<String>, Option<String>, String) {
    (
        e.kind_name(),
        e.pop().map(str::to_string),
        e.region().map(str::to_string),
        e.message(),
    )
}

async fn write_batch(
    events: &EventStore,
    fence: &Fence,
    batch: &[Event],
    timeout: Duration,
    attempts: u32,
    shutdown: &CancellationToken,
) {
    let n = batch.len() as u64;
    let mut last_error = String::new();
    // The one backoff (no jitter needed: one writer per replica).
    let mut backoff = meridian_core::Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(backoff.next_delay(1.0)) => {}
            }
        }
        match tokio::time::timeout(timeout, events.append(fence, batch)).await {
            Ok(Ok(_ids)) => {
                metrics::counter!("meridian_control_plane_events_stored_total").increment(n);
                return;
            }
            Ok(Err(err)) if err.is_fence_lost() => {
                metrics::counter!("meridian_control_plane_events_dropped_total", "reason" => "fence_lost").increment(n);
                tracing::warn!(events = n, error = %crate::error_chain(&err), "events not stored: this replica is no longer the leader");
                return;
            }
            Ok(Err(err)) => last_error = crate::error_chain(&err),
            Err(_) => last_error = format!("the store did not answer within {timeout:?}"),
        }
    }
    metrics::counter!("meridian_control_plane_events_dropped_total", "reason" => "store_error").increment(n);
    tracing::error!(
        events = n,
        attempts,
        error = %last_error,
        "events not stored; they stay in this replica's memory only"
    );
}

/// The leader's pruner: every `every`, [`EventStore::prune`] under its fence.
pub async fn prune_events(
    events: EventStore,
    leadership: watch::Receiver<Leadership>,
    retention: Retention,
    every: Duration,
    timeout: Duration,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let Some(fence) = leadership.borrow().fence.clone() else {
            continue;
        };
        let now = crate::replica::unix_now().as_millis() as u64;
        // A round deletes at most MAX_PRUNE_PER_ROUND events in transactions of
        // MAX_TXN_EVENTS; give it a request timeout per transaction.
        let budget = timeout * (MAX_PRUNE_PER_ROUND / MAX_TXN_EVENTS) as u32;
        match tokio::time::timeout(budget, events.prune(&fence, retention, now)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                metrics::counter!("meridian_control_plane_events_pruned_total").increment(n);
                tracing::info!(events = n, "pruned the event log");
            }
            Ok(Err(err)) => tracing::warn!(error = %crate::error_chain(&err), "pruning the event log failed"),
            Err(_) => tracing::warn!("pruning the event log timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_core::Actor;
    use meridian_engine::{EventKind, OperatorAction};

    fn drained(pop: &str, at: u64) -> Event {
        Event {
            at_unix_ms: at,
            actor: Actor::Steering,
            role: None,
            kind: EventKind::Operator(OperatorAction::Undrained {
                pop: pop.into(),
                reason: "r".into(),
            }),
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_with_increasing_ids_and_filters_by_pop() {
        let log = EventLog::with_capacity(3);
        for (i, pop) in ["a", "b", "a", "c", "a"].iter().enumerate() {
            log.record(drained(pop, i as u64));
        }
        let all = log.list(10, None);
        assert_eq!(
            all.iter().map(|e| e.id).collect::<Vec<_>>(),
            [3, 4, 5],
            "oldest dropped first"
        );
        let a = log.list(10, Some("a"));
        assert_eq!(a.iter().map(|e| e.event.at_unix_ms).collect::<Vec<_>>(), [2, 4]);
        assert_eq!(log.list(1, None)[0].id, 5, "limit keeps the newest");
        assert!(log.list(10, Some("zzz")).is_empty());
    }

    mod stored {
        #![allow(clippy::unwrap_used)]
        use super::*;
        use meridian_store::election::Role;
        use meridian_store::embedded::EmbeddedStore;

        const DAY_MS: u64 = 24 * 3600 * 1000;

        struct Fixture {
            store: Arc<dyn Store>,
            keys: Keys,
            events: EventStore,
            fence: Fence,
        }

        async fn fixture() -> Fixture {
            let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
            let keys = Keys::new("/t");
            // This test is "the leader": the leader key's create revision is the fence.
            store.put(&keys.leader(), b"{}".to_vec(), None).await.unwrap();
            let leader = store.get(&keys.leader()).await.unwrap().unwrap();
            let fence = Fence {
                key: keys.leader(),
                revision: leader.create_revision,
            };
            let events = EventStore::new(store.clone(), keys.clone(), "cp-1");
            Fixture {
                store,
                keys,
                events,
                fence,
            }
        }

        fn all() -> EventFilter {
            EventFilter {
                limit: usize::MAX,
                ..EventFilter::default()
            }
        }

        fn ids(events: &[StoredEvent]) -> Vec<u64> {
            events.iter().map(|e| e.id).collect()
        }

        #[tokio::test]
        async fn appends_get_dense_increasing_ids_in_order_across_batches() {
            let f = fixture().await;
            let first = f
                .events
                .append(&f.fence, &[drained("a", 1), drained("b", 2)])
                .await
                .unwrap();
            assert_eq!(first, [1, 2]);
            // More than one transaction's worth: split, still dense and in order.
            let many: Vec<Event> = (0..250).map(|i| drained("c", 10 + i)).collect();
            let ids_many = f.events.append(&f.fence, &many).await.unwrap();
            assert_eq!(ids_many, (3..253).collect::<Vec<_>>());
            let listed = f.events.list(&all()).await.unwrap();
            assert_eq!(ids(&listed), (1..253).collect::<Vec<_>>());
            assert_eq!(listed[0].event, drained("a", 1));
            assert_eq!(listed[0].replica, "cp-1");
            assert_eq!(listed[252 - 1].event.at_unix_ms, 259);
            // The counter says what comes next.
            let next = f.store.get(&f.keys.events_next()).await.unwrap().unwrap();
            assert_eq!(next.value, b"253");
        }

        #[tokio::test]
        async fn another_replica_continues_the_sequence_after_a_leader_change() {
            let f = fixture().await;
            f.events.append(&f.fence, &[drained("a", 1)]).await.unwrap();
            // A new leader: the old key is gone, a new one has a new create revision.
            f.store.delete(&f.keys.leader()).await.unwrap();
            f.store.put(&f.keys.leader(), b"{}".to_vec(), None).await.unwrap();
            let kv = f.store.get(&f.keys.leader()).await.unwrap().unwrap();
            let new_fence = Fence {
                key: f.keys.leader(),
                revision: kv.create_revision,
            };
            let other = EventStore::new(f.store.clone(), f.keys.clone(), "cp-2");
            // The deposed leader writes nothing.
            let err = f.events.append(&f.fence, &[drained("x", 2)]).await.unwrap_err();
            assert!(err.is_fence_lost(), "{err}");
            assert_eq!(other.append(&new_fence, &[drained("b", 3)]).await.unwrap(), [2]);
            let listed = f.events.list(&all()).await.unwrap();
            assert_eq!(
                listed.iter().map(|e| (e.id, e.replica.as_str())).collect::<Vec<_>>(),
                [(1, "cp-1"), (2, "cp-2")]
            );
        }

        #[tokio::test]
        async fn reads_filter_by_pop_since_and_keep_the_newest() {
            let f = fixture().await;
            let events: Vec<Event> = (0..300u64)
                .map(|i| drained(if i % 3 == 0 { "ams1" } else { "fra1" }, 1000 + i))
                .collect();
            f.events.append(&f.fence, &events).await.unwrap();
            let newest = f
                .events
                .list(&EventFilter {
                    limit: 5,
                    ..EventFilter::default()
                })
                .await
                .unwrap();
            assert_eq!(ids(&newest), [296, 297, 298, 299, 300], "newest, oldest first");
            let ams = f
                .events
                .list(&EventFilter {
                    limit: 1000,
                    pop: Some("ams1".into()),
                    since_unix_ms: None,
                })
                .await
                .unwrap();
            assert_eq!(ams.len(), 100);
            assert!(ams.iter().all(|e| e.event.pop() == Some("ams1")));
            let recent = f
                .events
                .list(&EventFilter {
                    limit: 1000,
                    pop: Some("fra1".into()),
                    since_unix_ms: Some(1290),
                })
                .await
                .unwrap();
            assert_eq!(
                recent.iter().map(|e| e.event.at_unix_ms).collect::<Vec<_>>(),
                [1290, 1292, 1293, 1295, 1296, 1298, 1299]
            );
            assert!(f
                .events
                .list(&EventFilter {
                    limit: 10,
                    pop: Some("nope".into()),
                    since_unix_ms: None
                })
                .await
                .unwrap()
                .is_empty());
        }

        #[tokio::test]
        async fn an_empty_log_lists_nothing_and_a_bad_record_hides_nothing_else() {
            let f = fixture().await;
            assert!(f.events.list(&all()).await.unwrap().is_empty());
            f.events
                .append(&f.fence, &[drained("a", 1), drained("b", 2)])
                .await
                .unwrap();
            f.store.put(&f.keys.event(1), b"garbage".to_vec(), None).await.unwrap();
            assert_eq!(ids(&f.events.list(&all()).await.unwrap()), [2]);
        }

        #[tokio::test]
        async fn pruning_keeps_the_newest_max_count() {
            let f = fixture().await;
            let now = 100 * DAY_MS;
            let events: Vec<Event> = (0..350).map(|i| drained("a", now - 1000 + i)).collect();
            f.events.append(&f.fence, &events).await.unwrap();
            let retention = Retention {
                max_age: Duration::from_secs(7 * 24 * 3600),
                max_count: 120,
            };
            assert_eq!(f.events.prune(&f.fence, retention, now).await.unwrap(), 230);
            let left = f.events.list(&all()).await.unwrap();
            assert_eq!(ids(&left), (231..351).collect::<Vec<_>>());
            assert_eq!(f.events.prune(&f.fence, retention, now).await.unwrap(), 0, "idempotent");
            // New events keep their ids going up after a prune.
            assert_eq!(f.events.append(&f.fence, &[drained("b", now)]).await.unwrap(), [351]);
            assert_eq!(f.events.prune(&f.fence, retention, now).await.unwrap(), 1);
            assert_eq!(f.events.list(&all()).await.unwrap()[0].id, 232);
        }

        #[tokio::test]
        async fn pruning_removes_what_is_older_than_max_age_and_a_deposed_leader_prunes_nothing() {
            let f = fixture().await;
            let now = 100 * DAY_MS;
            let mut events: Vec<Event> = (0..150).map(|i| drained("old", now - 8 * DAY_MS + i)).collect();
            events.extend((0..20).map(|i| drained("new", now - DAY_MS + i)));
            f.events.append(&f.fence, &events).await.unwrap();
            let retention = Retention {
                max_age: Duration::from_secs(7 * 24 * 3600),
                max_count: 100_000,
            };
            let stale = Fence {
                key: f.keys.leader(),
                revision: f.fence.revision + 1000,
            };
            let err = f.events.prune(&stale, retention, now).await.unwrap_err();
            assert!(err.is_fence_lost(), "{err}");
            assert_eq!(f.events.list(&all()).await.unwrap().len(), 170);
            assert_eq!(f.events.prune(&f.fence, retention, now).await.unwrap(), 150);
            let left = f.events.list(&all()).await.unwrap();
            assert_eq!(left.len(), 20);
            assert!(left.iter().all(|e| e.event.pop() == Some("new")));
            assert_eq!(left[0].id, 151);
        }

        /// This replica ("cp-1") leading under `fence`, or following `leader`
        /// (`None`: no leader key).
        fn leadership(fence: Option<Fence>, leader: Option<&str>) -> Leadership {
            let leader_value = leader.map(|id| {
                serde_json::to_vec(&meridian_core::records::LeaderRecord {
                    id: meridian_core::ReplicaId::new(id).unwrap(),
                    grpc_address: "127.0.0.1:1".into(),
                })
                .unwrap()
            });
            Leadership {
                role: if fence.is_some() { Role::Leader } else { Role::Follower },
                leader_value,
                leader_revision: fence.as_ref().map(|f| f.revision).unwrap_or(0),
                fence,
            }
        }

        async fn wait_stored(f: &Fixture, n: usize) -> Vec<StoredEvent> {
            let mut stored = Vec::new();
            for _ in 0..200 {
                stored = f.events.list(&all()).await.unwrap();
                if stored.len() >= n {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stored
        }

        fn now_ms() -> u64 {
            crate::replica::unix_now().as_millis() as u64
        }

        fn spawn_writer(
            f: &Fixture,
            queue: EventQueue,
            lead_rx: watch::Receiver<Leadership>,
            shutdown: &CancellationToken,
        ) -> tokio::task::JoinHandle<Result<(), String>> {
            tokio::spawn(write_events(
                f.events.clone(),
                queue,
                lead_rx,
                Duration::from_secs(10),
                Duration::from_secs(3),
                shutdown.clone(),
            ))
        }

        #[tokio::test]
        async fn the_writer_stores_the_leader_s_events_and_on_winning_only_the_gap_it_saw() {
            let f = fixture().await;
            let now = now_ms();
            // cp-2 led and stored these before it died.
            let cp2 = EventStore::new(f.store.clone(), f.keys.clone(), "cp-2");
            cp2.append(&f.fence, &[drained("old", now - 5000), drained("dup", now - 4000)])
                .await
                .unwrap();
            let (lead_tx, lead_rx) = watch::channel(leadership(None, Some("cp-2")));
            let (log, queue) = EventLog::durable(100);
            let shutdown = CancellationToken::new();
            let task = spawn_writer(&f, queue, lead_rx, &shutdown);
            // As a follower of cp-2: held, not stored.
            log.record_all([
                drained("ancient", now - 60_000), // older than the hold window
                drained("before", now - 6000),    // before cp-2's last stored event
                drained("dup", now - 3900),       // what cp-2 stored already
                drained("old", now - 1500),       // as cp-2 stored, but 3.5 s later: new
                drained("gap", now - 1000),       // after cp-2 stopped storing
            ]);
            tokio::time::sleep(Duration::from_millis(100)).await;
            // cp-2 is gone and nobody leads: still held.
            lead_tx.send_replace(leadership(None, None));
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(f.events.list(&all()).await.unwrap().len(), 2, "nothing stored yet");
            assert_eq!(log.list(10, None).len(), 5, "memory keeps all");
            // Winning: the gap first, then what it records as leader.
            lead_tx.send_replace(leadership(Some(f.fence.clone()), Some("cp-1")));
            log.record_all([drained("a", now), drained("b", now)]);
            let stored = wait_stored(&f, 6).await;
            assert_eq!(
                stored
                    .iter()
                    .map(|e| (e.id, e.event.pop().unwrap(), e.replica.as_str()))
                    .collect::<Vec<_>>(),
                [
                    (1, "old", "cp-2"),
                    (2, "dup", "cp-2"),
                    (3, "old", "cp-1"),
                    (4, "gap", "cp-1"),
                    (5, "a", "cp-1"),
                    (6, "b", "cp-1")
                ]
            );
            shutdown.cancel();
            task.await.unwrap().unwrap();
        }

        #[tokio::test]
        async fn after_a_restart_what_was_seen_before_winning_is_stored_on_winning() {
            let f = fixture().await;
            let now = now_ms();
            // The leader key still names cp-1 (this replica, before its restart).
            let (lead_tx, lead_rx) = watch::channel(leadership(None, Some("cp-1")));
            let (log, queue) = EventLog::durable(100);
            let shutdown = CancellationToken::new();
            let task = spawn_writer(&f, queue, lead_rx, &shutdown);
            log.record(drained("first-verdict", now));
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(f.events.list(&all()).await.unwrap().is_empty());
            lead_tx.send_replace(leadership(Some(f.fence.clone()), Some("cp-1")));
            let stored = wait_stored(&f, 1).await;
            assert_eq!(stored.len(), 1, "flushed on winning, with no new event needed");
            assert_eq!(stored[0].event.pop(), Some("first-verdict"));
            shutdown.cancel();
            task.await.unwrap().unwrap();
        }

        #[tokio::test]
        async fn the_pruner_runs_on_the_leader_only_and_a_new_leader_continues_from_the_floor() {
            let f = fixture().await;
            let now = now_ms();
            let events: Vec<Event> = (0..250).map(|i| drained("a", now - 1000 + i)).collect();
            f.events.append(&f.fence, &events).await.unwrap();
            let retention = Retention {
                max_age: Duration::from_secs(3600),
                max_count: 200,
            };
            let shutdown = CancellationToken::new();
            // A follower's pruner deletes nothing.
            let (_follower_tx, follower_rx) = watch::channel(leadership(None, Some("cp-2")));
            let follower = tokio::spawn(prune_events(
                f.events.clone(),
                follower_rx,
                retention,
                Duration::from_secs(1),
                Duration::from_secs(3),
                shutdown.clone(),
            ));
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(f.events.list(&all()).await.unwrap().len(), 250);
            // A new leader (another fence) prunes at once, and keeps the floor in the store.
            f.store.delete(&f.keys.leader()).await.unwrap();
            f.store.put(&f.keys.leader(), b"{}".to_vec(), None).await.unwrap();
            let kv = f.store.get(&f.keys.leader()).await.unwrap().unwrap();
            let fence = Fence {
                key: f.keys.leader(),
                revision: kv.create_revision,
            };
            let (_leader_tx, leader_rx) = watch::channel(leadership(Some(fence.clone()), Some("cp-1")));
            let leader = tokio::spawn(prune_events(
                f.events.clone(),
                leader_rx,
                retention,
                Duration::from_secs(1),
                Duration::from_secs(3),
                shutdown.clone(),
            ));
            let mut left = Vec::new();
            for _ in 0..100 {
                left = f.events.list(&all()).await.unwrap();
                if left.len() == 200 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(ids(&left), (51..251).collect::<Vec<_>>());
            let floor = f.store.get(&f.keys.events_floor()).await.unwrap().unwrap();
            assert_eq!(floor.value, b"51");
            shutdown.cancel();
            follower.await.unwrap().unwrap();
            leader.await.unwrap().unwrap();
        }

        #[tokio::test]
        async fn a_full_queue_drops_from_the_store_but_never_blocks_or_loses_memory() {
            let (log, _queue) = EventLog::durable(2);
            for i in 0..10 {
                log.record(drained("a", i));
            }
            assert_eq!(log.list(100, None).len(), 10);
            assert!(log.dropping.load(Ordering::Relaxed));
        }
    }
}
