//! The embedded backend: an in-process store with etcd's semantics (one store-wide
//! revision, per-key create/mod revision and version, compare-and-swap transactions,
//! watches that replay history from a revision, compaction, leases whose expiry
//! deletes keys), persisted to a data directory. It is the default on a single
//! machine, where running etcd would be one more daemon to operate.
//!
//! Layout:
//!
//! * [`State`] is the pure, synchronous core: the key space, the revision, the
//!   history since the compaction revision, the leases. Time comes in as an argument
//!   and every mutation returns the [`Change`]s it made; it does no I/O.
//! * `Disk` makes the changes durable: an append-only write-ahead log (`wal.jsonl`, one
//!   JSON line per committed change, `fsync`ed before the call returns) and a snapshot
//!   (`snapshot.json`, written to a temporary file, `fsync`ed, renamed, directory
//!   `fsync`ed) taken when the log passes a bound and on every compaction. Opening
//!   loads the snapshot and replays the log after it; a torn last line (a crash in the
//!   middle of a write, never acknowledged) is dropped with a warning, anything
//!   unreadable before it is [`StoreError::Corrupt`].
//! * [`EmbeddedStore`] wraps both behind a `std::sync::Mutex` (never held across an
//!   `.await`; durable operations run on the blocking pool because they `fsync`),
//!   fans committed events out to watchers through a `tokio::sync::broadcast`, and
//!   runs a ticker that revokes expired leases. Expiry is also checked at the start of
//!   every operation, so semantics never depend on the ticker's timing.
//!
//! Rejected alternative: an embedded database (sled, redb, SQLite). The state is small
//! (configuration-sized), the history is needed in memory anyway to serve watches,
//! and what must be exact is etcd's revision/watch/lease model, which none of them
//! provides; a WAL plus snapshot of that model is a few hundred lines we fully
//! control, with no extra dependency and an on-disk format one can read with `jq`.
//!
//! A watcher that falls behind the broadcast buffer (`Lagged`) re-reads what it
//! missed from the history log under the lock and re-subscribes, so it neither loses
//! nor repeats an event; if that history was compacted meanwhile it gets
//! [`StoreError::Compacted`], like an etcd watcher would.
//!
//! History grows until [`Store::compact`] is called (as in etcd without
//! auto-compaction); the control plane is expected to compact periodically.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::{
    BackendKind, Compare, CompareOp, KeyValue, Lease, LeaseId, RangeResponse, Revision, Store, StoreError, StoreHealth,
    Txn, TxnOp, TxnOpResponse, TxnResponse, WatchBatch, WatchEvent, WatchStream,
};

/// How many committed revisions the live broadcast buffers per watcher before the
/// watcher lags (and then catches up from the history log).
const BROADCAST_CAPACITY: usize = 1024;
/// The write-ahead log is folded into a snapshot once it is this large.
const SNAPSHOT_THRESHOLD_BYTES: u64 = 8 * 1024 * 1024;
/// Upper bound on the events of one watch batch when replaying history.
const MAX_REPLAY_BATCH: usize = 1000;
/// How often the background ticker looks for expired leases.
const EXPIRY_TICK: Duration = Duration::from_millis(50);
/// How long `open` waits for a store of this same process that is being dropped to
/// release the directory lock (the ticker can hold it for one tick).
const SAME_PROCESS_LOCK_WAIT: Duration = Duration::from_secs(2);
const SNAPSHOT_FORMAT: u32 = 1;
const WAL_FILE: &str = "wal.jsonl";
const SNAPSHOT_FILE: &str = "snapshot.json";
const SNAPSHOT_TMP_FILE: &str = "snapshot.json.tmp";
const LOCK_FILE: &str = "LOCK";

/// The in-process store. Cheap to share behind an `Arc<dyn Store>`; dropping it stops
/// its ticker, ends its watch streams and releases the data directory.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    ticker: CancellationToken,
}

impl EmbeddedStore {
    /// Opens (creating if needed) a store persisted in `dir`, recovering its keys,
    /// revision, compaction revision, history and leases (whose deadlines restart at
    /// now + TTL, as etcd does). Fails if another live process, or another store in
    /// this process, has the directory open.
    ///
    /// Called inside a tokio runtime, it starts the lease-expiry ticker; outside one,
    /// leases still expire, checked at the start of every operation.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, SNAPSHOT_THRESHOLD_BYTES, BROADCAST_CAPACITY)
    }

    /// A store that lives in memory only, for tests and throwaway runs.
    pub fn in_memory() -> Self {
        Self::from_core(
            Core {
                state: State::new(),
                disk: None,
                failed: None,
            },
            BROADCAST_CAPACITY,
            None,
            None,
        )
    }

    /// The data directory, `None` for an in-memory store.
    pub fn data_dir(&self) -> Option<&Path> {
        self.inner.dir.as_deref()
    }

    fn open_with(dir: &Path, snapshot_threshold: u64, capacity: usize) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|e| persistence(dir, e))?;
        let lock = DirLock::acquire(dir)?;
        let (state, disk) = Disk::recover(dir, snapshot_threshold, Instant::now())?;
        let core = Core {
            state,
            disk: Some(disk),
            failed: None,
        };
        Ok(Self::from_core(core, capacity, Some(dir.to_path_buf()), Some(lock)))
    }

    fn from_core(core: Core, capacity: usize, dir: Option<PathBuf>, lock: Option<DirLock>) -> Self {
        let (events, _) = broadcast::channel(capacity);
        let inner = Arc::new(Inner {
            core: Mutex::new(core),
            events,
            dir,
            _dir_lock: lock,
        });
        let ticker = CancellationToken::new();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(expiry_ticker(Arc::downgrade(&inner), ticker.clone()));
        }
        Self { inner, ticker }
    }

    /// Runs `f` on the core under the lock, after expiring leases, and makes its
    /// changes durable and visible. Durable stores do it on the blocking pool because
    /// it ends with an `fsync`.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut State, Instant) -> Result<(T, Vec<Change>), StoreError> + Send + 'static,
    {
        if self.inner.dir.is_some() {
            let inner = Arc::clone(&self.inner);
            tokio::task::spawn_blocking(move || inner.exec(f))
                .await
                .map_err(|e| StoreError::Backend(Box::new(e)))?
        } else {
            self.inner.exec(f)
        }
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.ticker.cancel();
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> BackendKind {
        BackendKind::Embedded
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        check_key(key)?;
        let key = key.to_owned();
        self.run(move |state, _| Ok((state.get(&key), Vec::new()))).await
    }

    async fn range(&self, prefix: &str) -> Result<RangeResponse, StoreError> {
        let prefix = prefix.to_owned();
        self.run(move |state, _| Ok((state.range(&prefix), Vec::new()))).await
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<Revision, StoreError> {
        let txn = Txn::new().and_then([TxnOp::Put {
            key: key.to_owned(),
            value,
            lease,
        }]);
        self.run(move |state, now| state.txn(&txn, now).map(|(resp, changes)| (resp.revision, changes)))
            .await
    }

    async fn delete(&self, key: &str) -> Result<u64, StoreError> {
        let txn = Txn::new().and_then([TxnOp::delete(key)]);
        self.run(move |state, now| {
            state
                .txn(&txn, now)
                .map(|(resp, changes)| (deleted_count(&resp), changes))
        })
        .await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let txn = Txn::new().and_then([TxnOp::DeletePrefix {
            prefix: prefix.to_owned(),
        }]);
        self.run(move |state, now| {
            state
                .txn(&txn, now)
                .map(|(resp, changes)| (deleted_count(&resp), changes))
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.run(move |state, now| state.txn(&txn, now)).await
    }

    async fn watch_prefix(&self, prefix: &str, start_revision: Option<Revision>) -> Result<WatchStream, StoreError> {
        // Expire leases first so a watch opened "now" does not replay an expiry that
        // logically happened before it.
        self.run(|_, _| Ok(((), Vec::new()))).await?;
        let Subscription {
            rx,
            backlog,
            next_revision,
        } = self.inner.subscribe(prefix, start_revision)?;
        Ok(watch_stream(WatchCursor {
            inner: Arc::downgrade(&self.inner),
            rx,
            prefix: prefix.to_owned(),
            next_revision,
            backlog,
            done: false,
        }))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<Lease, StoreError> {
        self.run(move |state, now| {
            let id = loop {
                let candidate = random_lease_id();
                if !state.leases.contains_key(&candidate) {
                    break candidate;
                }
            };
            state.lease_grant(id, ttl, now)
        })
        .await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        self.run(move |state, now| state.lease_keep_alive(lease, now).map(|ttl| (ttl, Vec::new())))
            .await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.run(move |state, _| state.lease_revoke(lease, false).map(|change| ((), vec![change])))
            .await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.run(move |state, _| state.compact(revision).map(|change| ((), vec![change])))
            .await
    }

    async fn health(&self) -> StoreHealth {
        let endpoint = match &self.inner.dir {
            Some(dir) => dir.display().to_string(),
            None => "in-memory".to_owned(),
        };
        let core = self.inner.lock();
        let (healthy, detail) = match &core.failed {
            None => (true, format!("embedded store at {endpoint}")),
            Some(reason) => (
                false,
                format!("embedded store at {endpoint} stopped after a failed write: {reason}"),
            ),
        };
        StoreHealth {
            backend: BackendKind::Embedded,
            healthy,
            detail,
            revision: Some(core.state.revision),
            endpoints: vec![endpoint],
        }
    }
}

// ---------------------------------------------------------------------------------
// The pure core.
// ---------------------------------------------------------------------------------

/// A change the core made, as it is logged and fanned out.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Change {
    /// A transaction's writes, all at `revision`.
    Commit {
        revision: Revision,
        events: Vec<WatchEvent>,
    },
    LeaseGrant {
        id: LeaseId,
        ttl: Duration,
    },
    /// A lease revoked (or expired), its keys deleted at `revision` (unchanged when it
    /// had no keys, then `events` is empty).
    LeaseRevoke {
        id: LeaseId,
        revision: Revision,
        events: Vec<WatchEvent>,
        expired: bool,
    },
    Compact {
        revision: Revision,
    },
}

impl Change {
    /// The revision and events watchers must see, if any.
    fn events(&self) -> Option<(Revision, &[WatchEvent])> {
        match self {
            Change::Commit { revision, events } | Change::LeaseRevoke { revision, events, .. }
                if !events.is_empty() =>
            {
                Some((*revision, events))
            }
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
struct LeaseEntry {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

/// The store's whole state, with etcd's semantics and no I/O.
#[derive(Clone, Debug)]
struct State {
    kvs: BTreeMap<String, KeyValue>,
    revision: Revision,
    /// Watches may start at this revision or later.
    compact_revision: Revision,
    /// Every event with revision >= `compact_revision`, in revision order.
    history: VecDeque<WatchEvent>,
    leases: HashMap<LeaseId, LeaseEntry>,
}

impl State {
    fn new() -> Self {
        Self {
            kvs: BTreeMap::new(),
            revision: 1,
            compact_revision: 0,
            history: VecDeque::new(),
            leases: HashMap::new(),
        }
    }

    fn get(&self, key: &str) -> Option<KeyValue> {
        self.kvs.get(key).cloned()
    }

    fn range(&self, prefix: &str) -> RangeResponse {
        RangeResponse {
            kvs: self.prefixed(prefix).map(|(_, kv)| kv.clone()).collect(),
            revision: self.revision,
        }
    }

    fn prefixed<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a KeyValue)> + 'a {
        self.kvs
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(move |(key, _)| key.starts_with(prefix))
    }

    /// Runs a transaction. Writes land at `revision + 1`; the revision moves only if
    /// something was actually written.
    fn txn(&mut self, txn: &Txn, now: Instant) -> Result<(TxnResponse, Vec<Change>), StoreError> {
        validate_txn(txn)?;
        let succeeded = txn.compares.iter().all(|compare| self.holds(compare));
        let ops = if succeeded { &txn.success } else { &txn.failure };
        // Check leases before writing anything, so a failing transaction changes nothing.
        for op in ops {
            if let TxnOp::Put { lease: Some(id), .. } = op {
                if !self.lease_alive(*id, now) {
                    return Err(StoreError::LeaseNotFound(*id));
                }
            }
        }
        let revision = self.revision + 1;
        let mut events = Vec::new();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                TxnOp::Put { key, value, lease } => {
                    let (create_revision, version) = match self.kvs.get(key) {
                        Some(old) => (old.create_revision, old.version + 1),
                        None => (revision, 1),
                    };
                    let event = WatchEvent::Put(KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision,
                        mod_revision: revision,
                        version,
                        lease: *lease,
                    });
                    self.apply_event(&event);
                    events.push(event);
                    responses.push(TxnOpResponse::Put);
                }
                TxnOp::Delete { key } => {
                    let deleted = self.delete_keys(vec![key.clone()], revision, &mut events);
                    responses.push(TxnOpResponse::Delete { deleted });
                }
                TxnOp::DeletePrefix { prefix } => {
                    let keys = self.prefixed(prefix).map(|(key, _)| key.clone()).collect();
                    let deleted = self.delete_keys(keys, revision, &mut events);
                    responses.push(TxnOpResponse::Delete { deleted });
                }
                TxnOp::Get { key } => responses.push(TxnOpResponse::Get(self.get(key))),
            }
        }
        let mut changes = Vec::new();
        if !events.is_empty() {
            self.revision = revision;
            self.history.extend(events.iter().cloned());
            changes.push(Change::Commit { revision, events });
        }
        Ok((
            TxnResponse {
                succeeded,
                revision: self.revision,
                responses,
            },
            changes,
        ))
    }

    fn delete_keys(&mut self, keys: Vec<String>, revision: Revision, events: &mut Vec<WatchEvent>) -> u64 {
        let mut deleted = 0;
        for key in keys {
            if self.kvs.contains_key(&key) {
                let event = WatchEvent::Delete {
                    key,
                    mod_revision: revision,
                };
                self.apply_event(&event);
                events.push(event);
                deleted += 1;
            }
        }
        deleted
    }

    /// Applies one event to the key space and the lease attachments (not to the
    /// revision or history): shared by live writes and log replay.
    fn apply_event(&mut self, event: &WatchEvent) {
        let old = match event {
            WatchEvent::Put(kv) => {
                if let Some(entry) = kv.lease.and_then(|id| self.leases.get_mut(&id)) {
                    entry.keys.insert(kv.key.clone());
                }
                self.kvs.insert(kv.key.clone(), kv.clone())
            }
            WatchEvent::Delete { key, .. } => self.kvs.remove(key),
        };
        if let Some(old) = old {
            let new_lease = match event {
                WatchEvent::Put(kv) => kv.lease,
                WatchEvent::Delete { .. } => None,
            };
            if old.lease != new_lease {
                if let Some(entry) = old.lease.and_then(|id| self.leases.get_mut(&id)) {
                    entry.keys.remove(&old.key);
                }
            }
        }
    }

    /// Whether a compare holds. A missing key has create = mod = version = 0, and a
    /// value compare on it always fails (etcd cannot tell a missing value from an
    /// empty one, so it refuses to compare).
    fn holds(&self, compare: &Compare) -> bool {
        let kv = self.kvs.get(compare.key());
        match compare {
            Compare::CreateRevision { op, revision, .. } => cmp(*op, &kv.map_or(0, |kv| kv.create_revision), revision),
            Compare::ModRevision { op, revision, .. } => cmp(*op, &kv.map_or(0, |kv| kv.mod_revision), revision),
            Compare::Version { op, version, .. } => cmp(*op, &kv.map_or(0, |kv| kv.version), version),
            Compare::Value { op, value, .. } => kv.is_some_and(|kv| cmp(*op, &kv.value, value)),
        }
    }

    fn lease_alive(&self, id: LeaseId, now: Instant) -> bool {
        self.leases.get(&id).is_some_and(|entry| entry.deadline > now)
    }

    fn lease_grant(&mut self, id: LeaseId, ttl: Duration, now: Instant) -> Result<(Lease, Vec<Change>), StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::InvalidRequest(
                "lease TTL must be greater than zero".to_owned(),
            ));
        }
        if id == 0 || self.leases.contains_key(&id) {
            return Err(StoreError::InvalidRequest(format!(
                "lease id {id:x} is zero or already in use"
            )));
        }
        self.leases.insert(
            id,
            LeaseEntry {
                ttl,
                deadline: now + ttl,
                keys: BTreeSet::new(),
            },
        );
        Ok((Lease { id, ttl }, vec![Change::LeaseGrant { id, ttl }]))
    }

    fn lease_keep_alive(&mut self, id: LeaseId, now: Instant) -> Result<Duration, StoreError> {
        match self.leases.get_mut(&id) {
            Some(entry) if entry.deadline > now => {
                entry.deadline = now + entry.ttl;
                Ok(entry.ttl)
            }
            _ => Err(StoreError::LeaseNotFound(id)),
        }
    }

    /// Removes a lease and deletes its keys, all in one revision.
    fn lease_revoke(&mut self, id: LeaseId, expired: bool) -> Result<Change, StoreError> {
        let entry = self.leases.remove(&id).ok_or(StoreError::LeaseNotFound(id))?;
        let revision = self.revision + 1;
        let mut events = Vec::new();
        self.delete_keys(entry.keys.into_iter().collect(), revision, &mut events);
        if !events.is_empty() {
            self.revision = revision;
            self.history.extend(events.iter().cloned());
        }
        Ok(Change::LeaseRevoke {
            id,
            revision: self.revision,
            events,
            expired,
        })
    }

    /// Revokes every lease whose deadline has passed, oldest deadline first, each in
    /// its own revision (as etcd's lessor does).
    fn expire_leases(&mut self, now: Instant) -> Vec<Change> {
        let mut expired: Vec<(Instant, LeaseId)> = self
            .leases
            .iter()
            .filter(|(_, entry)| entry.deadline <= now)
            .map(|(id, entry)| (entry.deadline, *id))
            .collect();
        expired.sort_unstable();
        expired
            .into_iter()
            .filter_map(|(_, id)| self.lease_revoke(id, true).ok())
            .collect()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.leases.values().map(|entry| entry.deadline).min()
    }

    fn compact(&mut self, revision: Revision) -> Result<Change, StoreError> {
        if revision <= 0 {
            return Err(StoreError::InvalidRequest(format!(
                "compaction revision {revision} must be positive"
            )));
        }
        if revision > self.revision {
            return Err(StoreError::InvalidRequest(format!(
                "compaction revision {revision} is in the future (current revision {})",
                self.revision
            )));
        }
        if revision <= self.compact_revision {
            return Err(StoreError::Compacted {
                requested: revision,
                compact_revision: self.compact_revision,
            });
        }
        self.compact_to(revision);
        Ok(Change::Compact { revision })
    }

    fn compact_to(&mut self, revision: Revision) {
        self.compact_revision = revision;
        let keep_from = self.history.partition_point(|event| event.revision() < revision);
        self.history.drain(..keep_from);
    }

    /// The retained events from `start` on under `prefix`.
    fn history_from(&self, start: Revision, prefix: &str) -> Vec<WatchEvent> {
        let from = self.history.partition_point(|event| event.revision() < start);
        self.history
            .range(from..)
            .filter(|event| event.key().starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Re-applies a logged change on recovery. Leases come back with a full TTL.
    fn replay(&mut self, change: Change, now: Instant) -> Result<(), String> {
        match change {
            Change::Commit { revision, events } => self.replay_events(revision, events),
            Change::LeaseGrant { id, ttl } => {
                self.leases.insert(
                    id,
                    LeaseEntry {
                        ttl,
                        deadline: now + ttl,
                        keys: BTreeSet::new(),
                    },
                );
                Ok(())
            }
            Change::LeaseRevoke {
                id, revision, events, ..
            } => {
                self.leases.remove(&id);
                if events.is_empty() {
                    Ok(())
                } else {
                    self.replay_events(revision, events)
                }
            }
            Change::Compact { revision } => {
                if revision > self.revision {
                    return Err(format!("compaction to {revision} beyond revision {}", self.revision));
                }
                self.compact_to(revision);
                Ok(())
            }
        }
    }

    fn replay_events(&mut self, revision: Revision, events: Vec<WatchEvent>) -> Result<(), String> {
        if revision != self.revision + 1 {
            return Err(format!(
                "revision {revision} does not follow revision {}",
                self.revision
            ));
        }
        if let Some(event) = events.iter().find(|event| event.revision() != revision) {
            return Err(format!(
                "event for key {} at revision {} inside revision {revision}",
                event.key(),
                event.revision()
            ));
        }
        for event in &events {
            self.apply_event(event);
        }
        self.revision = revision;
        self.history.extend(events);
        Ok(())
    }
}

fn cmp<T: Ord + ?Sized>(op: CompareOp, stored: &T, given: &T) -> bool {
    match op {
        CompareOp::Equal => stored == given,
        CompareOp::NotEqual => stored != given,
        CompareOp::Less => stored < given,
        CompareOp::Greater => stored > given,
    }
}

fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        Err(StoreError::InvalidRequest("key must not be empty".to_owned()))
    } else {
        Ok(())
    }
}

/// etcd's request checks: no empty key, and within one branch a key is put at most
/// once and never both put and deleted.
fn validate_txn(txn: &Txn) -> Result<(), StoreError> {
    for compare in &txn.compares {
        check_key(compare.key())?;
    }
    for ops in [&txn.success, &txn.failure] {
        let mut puts = BTreeSet::new();
        let mut deletes: Vec<(&str, bool)> = Vec::new();
        for op in ops {
            match op {
                TxnOp::Put { key, .. } => {
                    check_key(key)?;
                    if !puts.insert(key.as_str()) {
                        return Err(StoreError::InvalidRequest(format!(
                            "key {key} is put twice in one transaction"
                        )));
                    }
                }
                TxnOp::Delete { key } => {
                    check_key(key)?;
                    deletes.push((key.as_str(), false));
                }
                TxnOp::DeletePrefix { prefix } => deletes.push((prefix.as_str(), true)),
                TxnOp::Get { key } => check_key(key)?,
            }
        }
        for key in &puts {
            let clash = deletes.iter().any(|&(target, is_prefix)| {
                if is_prefix {
                    key.starts_with(target)
                } else {
                    *key == target
                }
            });
            if clash {
                return Err(StoreError::InvalidRequest(format!(
                    "key {key} is both put and deleted in one transaction"
                )));
            }
        }
    }
    Ok(())
}

fn deleted_count(resp: &TxnResponse) -> u64 {
    match resp.responses.first() {
        Some(TxnOpResponse::Delete { deleted }) => *deleted,
        _ => 0,
    }
}

/// A positive, non-zero id, as etcd hands out.
fn random_lease_id() -> LeaseId {
    let id = (rand::random::<u64>() >> 1) as i64;
    id.max(1)
}

// ---------------------------------------------------------------------------------
// The shared wrapper: lock, durability, fan-out, expiry ticker, watches.
// ---------------------------------------------------------------------------------

struct Core {
    state: State,
    disk: Option<Disk>,
    /// Set when a log write failed: memory may then be ahead of disk, so the store
    /// refuses everything after that (as a database does on a failed fsync).
    failed: Option<String>,
}

/// A watch's start: live events from `rx` at `next_revision` or later, after the
/// `backlog` read from history.
struct Subscription {
    rx: broadcast::Receiver<Arc<Committed>>,
    backlog: VecDeque<WatchEvent>,
    next_revision: Revision,
}

/// One revision's events, as broadcast to live watchers.
#[derive(Debug)]
struct Committed {
    revision: Revision,
    events: Vec<WatchEvent>,
}

struct Inner {
    core: Mutex<Core>,
    /// Sent to only while `core` is locked, so sends are in revision order and a
    /// subscription taken under the lock continues exactly after the history read.
    events: broadcast::Sender<Arc<Committed>>,
    dir: Option<PathBuf>,
    /// Released (the LOCK file removed) when the last reference goes.
    _dir_lock: Option<DirLock>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic under the lock leaves the core as consistent as the panicking
        // operation left it; carrying on is better than poisoning every later call.
        self.core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn exec<T>(
        &self,
        f: impl FnOnce(&mut State, Instant) -> Result<(T, Vec<Change>), StoreError>,
    ) -> Result<T, StoreError> {
        let mut core = self.lock();
        if let Some(reason) = &core.failed {
            let path = self.dir.as_deref().unwrap_or(Path::new("in-memory"));
            return Err(persistence(
                path,
                io::Error::other(format!("store stopped after a failed write: {reason}")),
            ));
        }
        let now = Instant::now();
        let mut changes = core.state.expire_leases(now);
        let result = f(&mut core.state, now);
        let value = match result {
            Ok((value, more)) => {
                changes.extend(more);
                Ok(value)
            }
            Err(e) => Err(e),
        };
        self.publish(&mut core, &changes)?;
        value
    }

    /// Makes changes durable, then visible to watchers. Called with the lock held.
    fn publish(&self, core: &mut Core, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let Core { state, disk, failed } = core;
        if let Some(disk) = disk {
            if let Err(e) = disk.append(state, changes) {
                *failed = Some(e.to_string());
                tracing::error!(error = %e, dir = %disk.dir.display(), "embedded store write-ahead log write failed; refusing further requests");
                return Err(e);
            }
        }
        for change in changes {
            if let Change::LeaseRevoke { expired: true, .. } = change {
                metrics::counter!("meridian_store_lease_expired_total").increment(1);
            }
            if let Some((revision, events)) = change.events() {
                // No receivers is fine: nobody is watching.
                let _ = self.events.send(Arc::new(Committed {
                    revision,
                    events: events.to_vec(),
                }));
            }
        }
        Ok(())
    }

    /// Subscribes to live events and reads the history a watch from `start` must
    /// replay first, atomically. Returns the receiver, the backlog and the first
    /// revision the receiver must deliver.
    fn subscribe(&self, prefix: &str, start: Option<Revision>) -> Result<Subscription, StoreError> {
        let core = self.lock();
        let state = &core.state;
        let start = match start {
            Some(start) if start > 0 => start,
            // Like etcd, 0 means "from now on".
            _ => state.revision + 1,
        };
        if start < state.compact_revision {
            return Err(StoreError::Compacted {
                requested: start,
                compact_revision: state.compact_revision,
            });
        }
        Ok(Subscription {
            rx: self.events.subscribe(),
            backlog: state.history_from(start, prefix).into(),
            next_revision: start.max(state.revision + 1),
        })
    }
}

async fn expiry_ticker(inner: Weak<Inner>, cancel: CancellationToken) {
    let mut interval = tokio::time::interval(EXPIRY_TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = interval.tick() => {}
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let due = strong
            .lock()
            .state
            .next_deadline()
            .is_some_and(|deadline| deadline <= Instant::now());
        if !due {
            continue;
        }
        let noop = |_: &mut State, _: Instant| -> Result<((), Vec<Change>), StoreError> { Ok(((), Vec::new())) };
        let result = if strong.dir.is_some() {
            tokio::task::spawn_blocking(move || strong.exec(noop))
                .await
                .unwrap_or_else(|e| Err(StoreError::Backend(Box::new(e))))
        } else {
            strong.exec(noop)
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "embedded store could not expire leases");
        }
    }
}

struct WatchCursor {
    inner: Weak<Inner>,
    rx: broadcast::Receiver<Arc<Committed>>,
    prefix: String,
    /// Revisions below this have been delivered (or were not this watch's).
    next_revision: Revision,
    backlog: VecDeque<WatchEvent>,
    done: bool,
}

fn watch_stream(cursor: WatchCursor) -> WatchStream {
    Box::pin(futures::stream::unfold(cursor, |mut cursor| async move {
        if cursor.done {
            return None;
        }
        loop {
            if !cursor.backlog.is_empty() {
                let n = cursor.backlog.len().min(MAX_REPLAY_BATCH);
                let events = cursor.backlog.drain(..n).collect();
                return Some((Ok(WatchBatch { events }), cursor));
            }
            match cursor.rx.recv().await {
                Ok(committed) => {
                    if committed.revision < cursor.next_revision {
                        continue;
                    }
                    cursor.next_revision = committed.revision + 1;
                    let events: Vec<WatchEvent> = committed
                        .events
                        .iter()
                        .filter(|event| event.key().starts_with(&cursor.prefix))
                        .cloned()
                        .collect();
                    if !events.is_empty() {
                        return Some((Ok(WatchBatch { events }), cursor));
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // The store is gone: end like any other watch at shutdown.
                    let inner = cursor.inner.upgrade()?;
                    metrics::counter!("meridian_store_embedded_watch_lagged_total").increment(1);
                    match inner.subscribe(&cursor.prefix, Some(cursor.next_revision)) {
                        Ok(Subscription {
                            rx,
                            backlog,
                            next_revision,
                        }) => {
                            cursor.rx = rx;
                            cursor.backlog = backlog;
                            cursor.next_revision = next_revision;
                        }
                        Err(e) => {
                            cursor.done = true;
                            return Some((Err(e), cursor));
                        }
                    }
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }))
}

// ---------------------------------------------------------------------------------
// Durability: write-ahead log, snapshot, directory lock.
// ---------------------------------------------------------------------------------

/// One line of the write-ahead log. `seq` orders lines across snapshots: a snapshot
/// records the last sequence number it contains, and replay skips lines up to it (so
/// a crash between writing a snapshot and truncating the log is harmless).
#[derive(Serialize, Deserialize)]
struct WalLine {
    seq: u64,
    change: WalChange,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum WalChange {
    Commit {
        revision: Revision,
        events: Vec<PEvent>,
    },
    LeaseGrant {
        id: LeaseId,
        ttl: Duration,
    },
    LeaseRevoke {
        id: LeaseId,
        revision: Revision,
        events: Vec<PEvent>,
        expired: bool,
    },
    Compact {
        revision: Revision,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PEvent {
    Put(PKeyValue),
    Delete { key: String, mod_revision: Revision },
}

#[derive(Serialize, Deserialize)]
struct PKeyValue {
    key: String,
    value: PBytes,
    create_revision: Revision,
    mod_revision: Revision,
    version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease: Option<LeaseId>,
}

/// Values are mostly UTF-8 (JSON documents): stored as a string then, which keeps the
/// files readable and small, else as an array of bytes.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum PBytes {
    Text(String),
    Raw(Vec<u8>),
}

#[derive(Serialize, Deserialize)]
struct PLease {
    id: LeaseId,
    ttl: Duration,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    /// The last log sequence number folded into this snapshot.
    last_seq: u64,
    revision: Revision,
    compact_revision: Revision,
    kvs: Vec<PKeyValue>,
    history: Vec<PEvent>,
    leases: Vec<PLease>,
}

impl From<&KeyValue> for PKeyValue {
    fn from(kv: &KeyValue) -> Self {
        let value = match std::str::from_utf8(&kv.value) {
            Ok(text) => PBytes::Text(text.to_owned()),
            Err(_) => PBytes::Raw(kv.value.clone()),
        };
        Self {
            key: kv.key.clone(),
            value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

impl From<PKeyValue> for KeyValue {
    fn from(kv: PKeyValue) -> Self {
        let value = match kv.value {
            PBytes::Text(text) => text.into_bytes(),
            PBytes::Raw(bytes) => bytes,
        };
        Self {
            key: kv.key,
            value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

impl From<&WatchEvent> for PEvent {
    fn from(event: &WatchEvent) -> Self {
        match event {
            WatchEvent::Put(kv) => PEvent::Put(kv.into()),
            WatchEvent::Delete { key, mod_revision } => PEvent::Delete {
                key: key.clone(),
                mod_revision: *mod_revision,
            },
        }
    }
}

impl From<PEvent> for WatchEvent {
    fn from(event: PEvent) -> Self {
        match event {
            PEvent::Put(kv) => WatchEvent::Put(kv.into()),
            PEvent::Delete { key, mod_revision } => WatchEvent::Delete { key, mod_revision },
        }
    }
}

impl From<&Change> for WalChange {
    fn from(change: &Change) -> Self {
        let events = |events: &[WatchEvent]| events.iter().map(PEvent::from).collect();
        match change {
            Change::Commit { revision, events: evs } => WalChange::Commit {
                revision: *revision,
                events: events(evs),
            },
            Change::LeaseGrant { id, ttl } => WalChange::LeaseGrant { id: *id, ttl: *ttl },
            Change::LeaseRevoke {
                id,
                revision,
                events: evs,
                expired,
            } => WalChange::LeaseRevoke {
                id: *id,
                revision: *revision,
                events: events(evs),
                expired: *expired,
            },
            Change::Compact { revision } => WalChange::Compact { revision: *revision },
        }
    }
}

impl From<WalChange> for Change {
    fn from(change: WalChange) -> Self {
        let events = |events: Vec<PEvent>| events.into_iter().map(WatchEvent::from).collect();
        match change {
            WalChange::Commit { revision, events: evs } => Change::Commit {
                revision,
                events: events(evs),
            },
            WalChange::LeaseGrant { id, ttl } => Change::LeaseGrant { id, ttl },
            WalChange::LeaseRevoke {
                id,
                revision,
                events: evs,
                expired,
            } => Change::LeaseRevoke {
                id,
                revision,
                events: events(evs),
                expired,
            },
            WalChange::Compact { revision } => Change::Compact { revision },
        }
    }
}

struct Disk {
    dir: PathBuf,
    wal_path: PathBuf,
    wal: File,
    wal_bytes: u64,
    next_seq: u64,
    snapshot_threshold: u64,
}

impl Disk {
    /// Loads the snapshot, replays the log after it, cuts a torn tail off the log and
    /// opens it for appending.
    fn recover(dir: &Path, snapshot_threshold: u64, now: Instant) -> Result<(State, Disk), StoreError> {
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let (mut state, last_seq) = match fs::read(&snapshot_path) {
            Ok(bytes) => load_snapshot(&snapshot_path, &bytes, now)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => (State::new(), 0),
            Err(e) => return Err(persistence(&snapshot_path, e)),
        };
        let wal_path = dir.join(WAL_FILE);
        let data = match fs::read(&wal_path) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(persistence(&wal_path, e)),
        };
        let (good_len, max_seq) = replay_wal(&wal_path, &data, last_seq, &mut state, now)?;
        let wal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&wal_path)
            .map_err(|e| persistence(&wal_path, e))?;
        if good_len < data.len() as u64 {
            wal.set_len(good_len)
                .and_then(|()| wal.sync_all())
                .map_err(|e| persistence(&wal_path, e))?;
        }
        metrics::gauge!("meridian_store_embedded_wal_bytes").set(good_len as f64);
        let disk = Disk {
            dir: dir.to_path_buf(),
            wal_path,
            wal,
            wal_bytes: good_len,
            next_seq: max_seq + 1,
            snapshot_threshold,
        };
        Ok((state, disk))
    }

    /// Appends the changes to the log and syncs it; folds the log into a snapshot
    /// when it has grown past the bound or history was compacted.
    fn append(&mut self, state: &State, changes: &[Change]) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        for change in changes {
            let line = WalLine {
                seq: self.next_seq,
                change: change.into(),
            };
            serde_json::to_writer(&mut buf, &line).map_err(|e| persistence(&self.wal_path, e.into()))?;
            buf.push(b'\n');
            self.next_seq += 1;
        }
        self.wal
            .write_all(&buf)
            .and_then(|()| self.wal.sync_data())
            .map_err(|e| persistence(&self.wal_path, e))?;
        self.wal_bytes += buf.len() as u64;
        metrics::gauge!("meridian_store_embedded_wal_bytes").set(self.wal_bytes as f64);
        let compacted = changes.iter().any(|change| matches!(change, Change::Compact { .. }));
        if compacted || self.wal_bytes > self.snapshot_threshold {
            // The changes are durable in the log already; a failed snapshot only
            // means the log keeps growing until the next attempt.
            if let Err(e) = self.snapshot(state) {
                tracing::warn!(error = %e, dir = %self.dir.display(), "embedded store snapshot failed; keeping the log");
            }
        }
        Ok(())
    }

    fn snapshot(&mut self, state: &State) -> Result<(), StoreError> {
        let mut leases: Vec<PLease> = state
            .leases
            .iter()
            .map(|(id, entry)| PLease {
                id: *id,
                ttl: entry.ttl,
            })
            .collect();
        leases.sort_by_key(|lease| lease.id);
        let snapshot = Snapshot {
            format: SNAPSHOT_FORMAT,
            last_seq: self.next_seq - 1,
            revision: state.revision,
            compact_revision: state.compact_revision,
            kvs: state.kvs.values().map(PKeyValue::from).collect(),
            history: state.history.iter().map(PEvent::from).collect(),
            leases,
        };
        let tmp = self.dir.join(SNAPSHOT_TMP_FILE);
        let target = self.dir.join(SNAPSHOT_FILE);
        let bytes = serde_json::to_vec(&snapshot).map_err(|e| persistence(&tmp, e.into()))?;
        let write = || -> io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, &target)?;
            sync_dir(&self.dir)
        };
        write().map_err(|e| persistence(&target, e))?;
        self.wal
            .set_len(0)
            .and_then(|()| self.wal.sync_all())
            .map_err(|e| persistence(&self.wal_path, e))?;
        self.wal_bytes = 0;
        metrics::gauge!("meridian_store_embedded_wal_bytes").set(0.0);
        Ok(())
    }
}

fn load_snapshot(path: &Path, bytes: &[u8], now: Instant) -> Result<(State, u64), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.display().to_string(),
        reason,
    };
    let snapshot: Snapshot = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if snapshot.format != SNAPSHOT_FORMAT {
        return Err(corrupt(format!(
            "snapshot format {} (this version reads {SNAPSHOT_FORMAT})",
            snapshot.format
        )));
    }
    let mut state = State::new();
    state.revision = snapshot.revision;
    state.compact_revision = snapshot.compact_revision;
    for lease in snapshot.leases {
        state.leases.insert(
            lease.id,
            LeaseEntry {
                ttl: lease.ttl,
                deadline: now + lease.ttl,
                keys: BTreeSet::new(),
            },
        );
    }
    for kv in snapshot.kvs {
        let event = WatchEvent::Put(kv.into());
        if let WatchEvent::Put(kv) = &event {
            if let Some(id) = kv.lease.filter(|id| !state.leases.contains_key(id)) {
                return Err(corrupt(format!("key {} is attached to unknown lease {id:x}", kv.key)));
            }
        }
        state.apply_event(&event);
    }
    let mut last = Revision::MIN;
    for event in snapshot.history {
        let event = WatchEvent::from(event);
        if event.revision() < last || event.revision() > state.revision {
            return Err(corrupt(format!(
                "history event at revision {} out of order",
                event.revision()
            )));
        }
        last = event.revision();
        state.history.push_back(event);
    }
    Ok((state, snapshot.last_seq))
}

/// Replays the log lines after `last_seq`. Returns the length of the valid prefix of
/// the file and the highest sequence number seen.
fn replay_wal(
    path: &Path,
    data: &[u8],
    last_seq: u64,
    state: &mut State,
    now: Instant,
) -> Result<(u64, u64), StoreError> {
    let corrupt = |line: usize, reason: String| StoreError::Corrupt {
        path: path.display().to_string(),
        reason: format!("line {line}: {reason}"),
    };
    let mut lines: Vec<&[u8]> = data.split(|byte| *byte == b'\n').collect();
    // Whatever follows the last newline was never acknowledged: a torn write.
    let tail = lines.pop().unwrap_or_default();
    let mut good_len = 0u64;
    let mut max_seq = last_seq;
    let count = lines.len();
    for (index, line) in lines.into_iter().enumerate() {
        let number = index + 1;
        let parsed: WalLine = match serde_json::from_slice(line) {
            Ok(parsed) => parsed,
            // A garbled last line is a torn write too (the file size can reach the
            // disk before its contents).
            Err(e) if index + 1 == count && tail.is_empty() => {
                tracing::warn!(path = %path.display(), line = number, error = %e, "ignoring torn last line of the embedded store log");
                return Ok((good_len, max_seq));
            }
            Err(e) => return Err(corrupt(number, e.to_string())),
        };
        if parsed.seq > last_seq {
            if parsed.seq <= max_seq {
                return Err(corrupt(
                    number,
                    format!("sequence number {} after {max_seq}", parsed.seq),
                ));
            }
            max_seq = parsed.seq;
            state
                .replay(parsed.change.into(), now)
                .map_err(|reason| corrupt(number, reason))?;
        }
        good_len += line.len() as u64 + 1;
    }
    if !tail.is_empty() {
        tracing::warn!(path = %path.display(), bytes = tail.len(), "ignoring torn last line of the embedded store log");
    }
    Ok((good_len, max_seq))
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

fn persistence(path: &Path, source: io::Error) -> StoreError {
    StoreError::Persistence {
        path: path.display().to_string(),
        source,
    }
}

/// An exclusive claim on a data directory: a `LOCK` file created with `create_new`
/// holding the owner's pid. A lock whose pid is no longer running is stale and taken
/// over. (Two processes taking over the same stale lock at the same instant could
/// both succeed; that needs a crash plus a simultaneous double start.)
struct DirLock {
    path: PathBuf,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(LOCK_FILE);
        let own_pid = std::process::id();
        let give_up_at = Instant::now() + SAME_PROCESS_LOCK_WAIT;
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(own_pid.to_string().as_bytes())
                        .and_then(|()| file.sync_all())
                        .map_err(|e| persistence(&path, e))?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(persistence(&path, e)),
            }
            let holder = fs::read_to_string(&path)
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok());
            match holder {
                Some(pid) if pid == own_pid => {
                    // Another store of this process: maybe one being dropped right now.
                    if Instant::now() >= give_up_at {
                        return Err(locked(dir, "another store in this process has it open"));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Some(pid) if process_alive(pid) => {
                    return Err(locked(
                        dir,
                        &format!("process {pid} has it open (see {})", path.display()),
                    ));
                }
                _ => {
                    tracing::warn!(path = %path.display(), holder = ?holder, "taking over a stale embedded store lock");
                    match fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(persistence(&path, e)),
                    }
                }
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the embedded store lock");
        }
    }
}

fn locked(dir: &Path, why: &str) -> StoreError {
    persistence(
        dir,
        io::Error::new(io::ErrorKind::WouldBlock, format!("data directory is locked: {why}")),
    )
}

#[cfg(target_os = "linux")]
fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Without a portable liveness check, assume the holder runs: the operator removes a
/// stale LOCK file by hand.
#[cfg(not(target_os = "linux"))]
fn process_alive(_pid: u32) -> bool {
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn put(state: &mut State, key: &str, value: &str, now: Instant) -> TxnResponse {
        state
            .txn(&Txn::new().and_then([TxnOp::put(key, value)]), now)
            .unwrap()
            .0
    }

    #[test]
    fn revisions_and_versions_follow_etcd() {
        let now = Instant::now();
        let mut state = State::new();
        assert_eq!(state.revision, 1, "an empty store is at revision 1");
        assert_eq!(put(&mut state, "a", "1", now).revision, 2);
        assert_eq!(put(&mut state, "a", "2", now).revision, 3);
        let kv = state.get("a").unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
        // Deleting nothing does not move the revision.
        let (resp, changes) = state.txn(&Txn::new().and_then([TxnOp::delete("zz")]), now).unwrap();
        assert_eq!((resp.revision, changes.len()), (3, 0));
        assert_eq!(resp.responses, vec![TxnOpResponse::Delete { deleted: 0 }]);
        let (resp, _) = state.txn(&Txn::new().and_then([TxnOp::delete("a")]), now).unwrap();
        assert_eq!(
            (resp.revision, resp.responses[0].clone()),
            (4, TxnOpResponse::Delete { deleted: 1 })
        );
        // Recreated: the version starts again and the create revision is new.
        put(&mut state, "a", "3", now);
        let kv = state.get("a").unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    }

    #[test]
    fn compares_table() {
        let now = Instant::now();
        let mut state = State::new();
        put(&mut state, "k", "v", now); // create 2
        put(&mut state, "k", "w", now); // mod 3, version 2
        let cases: Vec<(Compare, bool)> = vec![
            (Compare::absent("k"), false),
            (Compare::absent("missing"), true),
            (Compare::created_at("k", 2), true),
            (Compare::created_at("k", 3), false),
            (Compare::modified_at("k", 3), true),
            (
                Compare::ModRevision {
                    key: "k".into(),
                    op: CompareOp::Less,
                    revision: 3,
                },
                false,
            ),
            (
                Compare::ModRevision {
                    key: "k".into(),
                    op: CompareOp::Greater,
                    revision: 2,
                },
                true,
            ),
            (
                Compare::Version {
                    key: "k".into(),
                    op: CompareOp::Equal,
                    version: 2,
                },
                true,
            ),
            (
                Compare::Version {
                    key: "missing".into(),
                    op: CompareOp::Equal,
                    version: 0,
                },
                true,
            ),
            (
                Compare::Version {
                    key: "k".into(),
                    op: CompareOp::NotEqual,
                    version: 2,
                },
                false,
            ),
            (Compare::value_is("k", "w"), true),
            (Compare::value_is("k", "v"), false),
            (
                Compare::Value {
                    key: "k".into(),
                    op: CompareOp::Greater,
                    value: b"a".to_vec(),
                },
                true,
            ),
            // A value compare on a missing key fails whatever the operator.
            (Compare::value_is("missing", ""), false),
            (
                Compare::Value {
                    key: "missing".into(),
                    op: CompareOp::NotEqual,
                    value: b"x".to_vec(),
                },
                false,
            ),
        ];
        for (compare, expected) in cases {
            let txn = Txn::new()
                .when([compare.clone()])
                .and_then([TxnOp::get("k")])
                .or_else([TxnOp::get("k")]);
            let (resp, changes) = state.txn(&txn, now).unwrap();
            assert_eq!(resp.succeeded, expected, "{compare:?}");
            assert!(changes.is_empty(), "a read-only transaction writes nothing");
            assert_eq!(resp.revision, 3);
        }
    }

    #[test]
    fn invalid_requests() {
        let now = Instant::now();
        let mut state = State::new();
        let bad: Vec<Txn> = vec![
            Txn::new().and_then([TxnOp::put("", "v")]),
            Txn::new().and_then([TxnOp::put("a", "1"), TxnOp::put("a", "2")]),
            Txn::new().and_then([TxnOp::put("a/b", "1"), TxnOp::DeletePrefix { prefix: "a/".into() }]),
            Txn::new().when([Compare::absent("")]),
            Txn::new().or_else([TxnOp::delete("")]),
        ];
        for txn in bad {
            assert!(
                matches!(state.txn(&txn, now), Err(StoreError::InvalidRequest(_))),
                "{txn:?}"
            );
        }
        assert!(matches!(
            state.lease_grant(7, Duration::ZERO, now),
            Err(StoreError::InvalidRequest(_))
        ));
        assert!(matches!(state.compact(5), Err(StoreError::InvalidRequest(_))));
        assert_eq!(state.revision, 1);
    }

    #[test]
    fn one_revision_per_transaction() {
        let now = Instant::now();
        let mut state = State::new();
        let txn = Txn::new().and_then([TxnOp::put("p/a", "1"), TxnOp::put("p/b", "2"), TxnOp::get("p/a")]);
        let (resp, changes) = state.txn(&txn, now).unwrap();
        assert_eq!(resp.revision, 2);
        // Reads inside a transaction see its own earlier writes, as in etcd.
        assert!(matches!(&resp.responses[2], TxnOpResponse::Get(Some(kv)) if kv.mod_revision == 2));
        assert_eq!(changes.len(), 1);
        let (resp, _) = state
            .txn(&Txn::new().and_then([TxnOp::DeletePrefix { prefix: "p/".into() }]), now)
            .unwrap();
        assert_eq!(
            (resp.revision, resp.responses[0].clone()),
            (3, TxnOpResponse::Delete { deleted: 2 })
        );
        assert_eq!(state.history_from(3, "p/").len(), 2);
    }

    #[test]
    fn leases_with_fake_time() {
        let t0 = Instant::now();
        let mut state = State::new();
        let (lease, _) = state.lease_grant(7, Duration::from_secs(2), t0).unwrap();
        state
            .txn(
                &Txn::new().and_then([
                    TxnOp::put_with_lease("a", "1", lease.id),
                    TxnOp::put_with_lease("b", "1", 7),
                ]),
                t0,
            )
            .unwrap();
        put(&mut state, "c", "1", t0);
        // Detach "b" by putting it without a lease.
        put(&mut state, "b", "2", t0);
        assert_eq!(state.revision, 4);
        assert!(state.expire_leases(t0 + Duration::from_millis(1999)).is_empty());
        assert_eq!(
            state.lease_keep_alive(7, t0 + Duration::from_millis(1500)).unwrap(),
            Duration::from_secs(2)
        );
        assert!(
            state.expire_leases(t0 + Duration::from_millis(3000)).is_empty(),
            "keep-alive moved the deadline"
        );
        let changes = state.expire_leases(t0 + Duration::from_millis(3500));
        assert_eq!(
            changes,
            vec![Change::LeaseRevoke {
                id: 7,
                revision: 5,
                events: vec![WatchEvent::Delete {
                    key: "a".into(),
                    mod_revision: 5
                }],
                expired: true
            }]
        );
        assert!(state.get("a").is_none() && state.get("b").is_some() && state.get("c").is_some());
        let later = t0 + Duration::from_secs(4);
        assert!(matches!(
            state.lease_keep_alive(7, later),
            Err(StoreError::LeaseNotFound(7))
        ));
        let put_expired = Txn::new().and_then([TxnOp::put_with_lease("d", "1", 7)]);
        assert!(matches!(
            state.txn(&put_expired, later),
            Err(StoreError::LeaseNotFound(7))
        ));
        // An expired lease not yet reaped is refused too.
        state.lease_grant(8, Duration::from_secs(1), t0).unwrap();
        let put_late = Txn::new().and_then([TxnOp::put_with_lease("d", "1", 8)]);
        assert!(matches!(state.txn(&put_late, later), Err(StoreError::LeaseNotFound(8))));
        // Revoking a lease without keys does not move the revision.
        assert!(matches!(
            state.lease_revoke(8, false),
            Ok(Change::LeaseRevoke { revision: 5, .. })
        ));
        assert!(matches!(
            state.lease_revoke(8, false),
            Err(StoreError::LeaseNotFound(8))
        ));
    }

    #[test]
    fn compaction_bounds_history() {
        let now = Instant::now();
        let mut state = State::new();
        for i in 0..5 {
            put(&mut state, "k", &i.to_string(), now); // revisions 2..=6
        }
        state.compact(4).unwrap();
        assert_eq!(state.history_from(0, "").first().map(WatchEvent::revision), Some(4));
        assert!(matches!(
            state.compact(3),
            Err(StoreError::Compacted {
                requested: 3,
                compact_revision: 4
            })
        ));
        assert!(matches!(state.compact(7), Err(StoreError::InvalidRequest(_))));
        state.compact(6).unwrap();
        assert_eq!(state.history_from(0, "").len(), 1);
    }

    async fn collect(stream: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
        let mut events = Vec::new();
        while events.len() < n {
            let batch = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            events.extend(batch.events);
        }
        events
    }

    #[tokio::test]
    async fn lagging_watcher_catches_up_from_history() {
        let store = EmbeddedStore::from_core(
            Core {
                state: State::new(),
                disk: None,
                failed: None,
            },
            4,
            None,
            None,
        );
        let mut watch = store.watch_prefix("w/", None).await.unwrap();
        for i in 0..50 {
            store.put(&format!("w/{i}"), vec![], None).await.unwrap();
        }
        let events = collect(&mut watch, 50).await;
        let revisions: Vec<Revision> = events.iter().map(WatchEvent::revision).collect();
        assert_eq!(revisions, (2..52).collect::<Vec<_>>());
        // Lagging past a compaction is an error, not a silent gap.
        let mut watch = store.watch_prefix("w/", None).await.unwrap();
        for i in 0..10 {
            store.put(&format!("w/{i}"), vec![], None).await.unwrap();
        }
        store.compact(60).await.unwrap();
        let first = watch.next().await.unwrap();
        assert!(
            matches!(
                first,
                Err(StoreError::Compacted {
                    requested: 52,
                    compact_revision: 60
                })
            ),
            "{first:?}"
        );
        assert!(watch.next().await.is_none());
    }

    #[tokio::test]
    async fn watch_ends_when_store_dropped() {
        let store = EmbeddedStore::in_memory();
        let mut watch = store.watch_prefix("", None).await.unwrap();
        drop(store);
        let next = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .unwrap();
        assert!(next.is_none());
    }

    #[tokio::test]
    async fn reopen_keeps_state_history_and_leases() {
        let dir = tempfile::tempdir().unwrap();
        let (lease, rev) = {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store.put("a", b"1".to_vec(), None).await.unwrap();
            store.put("b", vec![0xff, 0x00], None).await.unwrap();
            let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();
            store.put("l", b"x".to_vec(), Some(lease.id)).await.unwrap();
            store.delete("a").await.unwrap();
            (lease, store.put("a", b"2".to_vec(), None).await.unwrap())
        };
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.range("").await.unwrap().revision, rev);
        let a = store.get("a").await.unwrap().unwrap();
        assert_eq!((a.value.as_slice(), a.create_revision, a.version), (&b"2"[..], rev, 1));
        assert_eq!(store.get("b").await.unwrap().unwrap().value, vec![0xff, 0x00]);
        assert_eq!(store.lease_keep_alive(lease.id).await.unwrap(), Duration::from_secs(60));
        let mut watch = store.watch_prefix("", Some(2)).await.unwrap();
        let events = collect(&mut watch, 5).await;
        assert_eq!(
            events.iter().map(WatchEvent::revision).collect::<Vec<_>>(),
            vec![2, 3, 4, 5, 6]
        );
        store.lease_revoke(lease.id).await.unwrap();
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert!(store.get("l").await.unwrap().is_none());
        assert!(matches!(
            store.lease_keep_alive(lease.id).await,
            Err(StoreError::LeaseNotFound(_))
        ));
    }

    #[tokio::test]
    async fn snapshots_fold_the_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open_with(dir.path(), 512, BROADCAST_CAPACITY).unwrap();
            for i in 0..40 {
                store
                    .put(&format!("k/{}", i % 7), format!("value {i}").into_bytes(), None)
                    .await
                    .unwrap();
            }
            store.compact(30).await.unwrap();
            store.put("k/after", b"x".to_vec(), None).await.unwrap();
            assert!(dir.path().join(SNAPSHOT_FILE).exists());
            assert!(fs::metadata(dir.path().join(WAL_FILE)).unwrap().len() < 512);
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let listed = store.range("k/").await.unwrap();
        assert_eq!((listed.kvs.len(), listed.revision), (8, 42));
        assert!(matches!(
            store.watch_prefix("k/", Some(29)).await,
            Err(StoreError::Compacted {
                compact_revision: 30,
                ..
            })
        ));
        let mut watch = store.watch_prefix("k/", Some(30)).await.unwrap();
        assert_eq!(collect(&mut watch, 13).await.len(), 13);
    }

    #[tokio::test]
    async fn torn_tail_is_ignored_and_middle_corruption_is_not() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store.put("a", b"1".to_vec(), None).await.unwrap();
            store.put("b", b"2".to_vec(), None).await.unwrap();
        }
        let wal = dir.path().join(WAL_FILE);
        let good = fs::read(&wal).unwrap();
        let mut torn = good.clone();
        torn.extend_from_slice(br#"{"seq":3,"change":{"op":"commit","rev"#);
        fs::write(&wal, &torn).unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            assert_eq!(store.range("").await.unwrap().revision, 3);
            assert_eq!(fs::read(&wal).unwrap(), good, "the torn tail is cut off");
            assert_eq!(store.put("c", b"3".to_vec(), None).await.unwrap(), 4);
        }
        assert!(EmbeddedStore::open(dir.path())
            .unwrap()
            .get("c")
            .await
            .unwrap()
            .is_some());
        let mut text = String::from_utf8(fs::read(&wal).unwrap()).unwrap();
        text.insert_str(0, "garbage\n");
        fs::write(&wal, text).unwrap();
        match EmbeddedStore::open(dir.path()) {
            Err(StoreError::Corrupt { path, reason }) => {
                assert!(
                    path.ends_with(WAL_FILE) && reason.starts_with("line 1"),
                    "{path}: {reason}"
                );
            }
            other => panic!("expected Corrupt, got {:?}", other.err()),
        }
    }

    #[tokio::test]
    async fn lock_prevents_double_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with(dir.path(), SNAPSHOT_THRESHOLD_BYTES, BROADCAST_CAPACITY).unwrap();
        let start = Instant::now();
        let err = EmbeddedStore::open(dir.path()).err().expect("second open must fail");
        assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
        assert!(start.elapsed() >= SAME_PROCESS_LOCK_WAIT);
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        drop(store);
        // A lock left by a dead process is stale and taken over.
        fs::write(dir.path().join(LOCK_FILE), "999999999").unwrap();
        EmbeddedStore::open(dir.path()).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn ticker_expires_leases_and_notifies_watchers() {
        let store = EmbeddedStore::in_memory();
        let lease = store.lease_grant(Duration::from_millis(300)).await.unwrap();
        let rev = store.put("t/a", vec![], Some(lease.id)).await.unwrap();
        let mut watch = store.watch_prefix("t/", None).await.unwrap();
        // Real time must pass for the std Instant deadlines; the paused tokio clock
        // only drives the ticker.
        std::thread::sleep(Duration::from_millis(350));
        let batch = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            batch.events,
            vec![WatchEvent::Delete {
                key: "t/a".into(),
                mod_revision: rev + 1
            }]
        );
    }
}
