//! The embedded backend: an in-process store with etcd's semantics (one store-wide
//! revision, per-key create/mod revision and version, compare-and-swap transactions,
//! watches that replay history from a revision, compaction, leases whose expiry
//! deletes keys), persisted to a data directory. It is the default on a single
//! machine, where running etcd would be one more daemon to operate.
//!
//! Layout, one concern per module:
//!
//! * `state`: the pure, synchronous core (`State`): the key space, the revision,
//!   the history since the compaction revision, the leases. Time comes in as an
//!   argument and every mutation returns the `Change`s it made; it does no I/O.
//!   Requests are checked by [`crate::txn::validate`], the validator the etcd backend
//!   runs too.
//! * `disk`, `wal`, `snapshot`, `records`: durability. `Disk` appends each change to
//!   a write-ahead log (`wal.jsonl`, one CRC-checked record per change, `fsync`ed
//!   before the call returns) and folds the log into an atomically replaced snapshot
//!   (`snapshot.json`) when it passes a bound and on every compaction; opening loads
//!   the snapshot and replays the log after it.
//! * `watch`: the fan-out of committed revisions to watchers, history replay, and
//!   catching up from history after lagging behind the broadcast.
//! * `lock`: the `LOCK` file that keeps a second process off the data directory.
//! * This module: [`EmbeddedStore`], the async wrapper. It keeps the core behind a
//!   `std::sync::Mutex` (never held across an `.await`; durable operations run on the
//!   blocking pool because they `fsync`), publishes committed events to watchers, and
//!   runs a ticker that revokes expired leases. Expiry is also checked at the start of
//!   every operation, so semantics never depend on the ticker's timing.
//!
//! A request's changes are applied in memory, logged, and only then published; if the
//! log write fails (a full disk, a failing `fsync`) they are rolled back, the request
//! fails and the revision does not move. Reads keep answering from that last durable
//! state, every later write tries the disk again, and `health` reports the failure
//! until a write succeeds. Rejected: refusing every request after one failed write
//! until a restart (what a database does when it cannot trust its own log): here the
//! log is cut back to its last good record before anything else is appended, so a
//! failed write leaves nothing behind for replay to trip on.
//!
//! Rejected alternative: an embedded database (sled, redb, SQLite). The state is small
//! (configuration-sized), the history is needed in memory anyway to serve watches,
//! and what must be exact is etcd's revision/watch/lease model, which none of them
//! provides; a WAL plus snapshot of that model is a few hundred lines we fully
//! control, with no extra dependency and an on-disk format one can read with `jq`.
//!
//! History grows until [`Store::compact`] is called (as in etcd without
//! auto-compaction); the control plane is expected to compact periodically.

mod disk;
mod lock;
mod records;
mod snapshot;
mod state;
mod wal;
mod watch;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use self::disk::{error_chain, persistence, Disk, SNAPSHOT_THRESHOLD_BYTES};
use self::lock::DirLock;
use self::state::{Change, State};
use self::watch::Committed;
use crate::{
    BackendKind, KeyValue, Lease, LeaseId, RangeResponse, Revision, Store, StoreError, StoreHealth, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchStream,
};

/// How many committed revisions the live broadcast buffers per watcher before the
/// watcher lags (and then catches up from the history log).
const BROADCAST_CAPACITY: usize = 1024;
/// How often the background ticker looks for expired leases.
const EXPIRY_TICK: Duration = Duration::from_millis(50);

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
                write_failure: None,
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
            write_failure: None,
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
        crate::txn::check_key(key)?;
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
        self.inner.watch(prefix, start_revision)
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
        let (healthy, detail) = match &core.write_failure {
            None => (true, format!("embedded store at {endpoint}")),
            Some(reason) => (
                false,
                format!(
                    "embedded store at {endpoint}: writes failing: {reason} (reads are served from the last durable state)"
                ),
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

struct Core {
    state: State,
    disk: Option<Disk>,
    /// Why the last log write failed, until a write succeeds again (for `health`).
    write_failure: Option<String>,
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
        // A panic under the lock leaves the core as the panicking operation left it,
        // and the next operation rolls back whatever it had half applied (see
        // `State::begin`); carrying on is better than poisoning every later call.
        self.core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn exec<T>(
        &self,
        f: impl FnOnce(&mut State, Instant) -> Result<(T, Vec<Change>), StoreError>,
    ) -> Result<T, StoreError> {
        let mut core = self.lock();
        let now = Instant::now();
        // Expired leases are revoked first, durably and on their own. If that cannot
        // be logged it is undone: a read then still answers, from the last durable
        // state, and a write fails with the log's error.
        core.state.begin();
        let expired = core.state.expire_leases(now);
        let expiry = self.settle(&mut core, &expired);
        core.state.begin();
        let (value, changes) = match f(&mut core.state, now) {
            Ok(done) => done,
            Err(e) => {
                core.state.rollback();
                return Err(e);
            }
        };
        if let Err(e) = expiry {
            if !changes.is_empty() {
                core.state.rollback();
                return Err(e);
            }
        }
        self.settle(&mut core, &changes)?;
        Ok(value)
    }

    /// Ends what `State::begin` started: makes the changes durable, then keeps them
    /// and shows them to watchers; or, if the log write fails, rolls them back and
    /// returns its error. Called with the lock held.
    fn settle(&self, core: &mut Core, changes: &[Change]) -> Result<(), StoreError> {
        let Core {
            state,
            disk,
            write_failure,
        } = core;
        if let (false, Some(disk)) = (changes.is_empty(), disk) {
            if let Err(e) = disk.append(state, changes) {
                state.rollback();
                metrics::counter!("meridian_store_embedded_write_failures_total").increment(1);
                let reason = error_chain(&e);
                if write_failure.is_none() {
                    tracing::error!(error = %reason, dir = %disk.dir.display(), "embedded store write-ahead log write failed; writes fail until the disk takes them again, reads are served from the last durable state");
                }
                *write_failure = Some(reason);
                return Err(e);
            }
            if let Some(reason) = write_failure.take() {
                tracing::info!(dir = %disk.dir.display(), previous_error = %reason, "embedded store writes succeed again");
            }
        }
        state.commit();
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
            tracing::warn!(error = %error_chain(&e), "embedded store could not expire leases");
        }
    }
}

/// Makes the store's log writes fail on demand (tests of every module).
#[cfg(test)]
impl EmbeddedStore {
    fn inject_wal_faults(&self) -> Arc<Mutex<disk::faults::Faults>> {
        #[allow(clippy::expect_used)]
        self.inner
            .lock()
            .disk
            .as_mut()
            .map(Disk::inject_faults)
            .expect("faults are injected into a store on disk")
    }
}

/// Reads watch batches until at least `n` events arrived (tests of every module).
#[cfg(test)]
async fn collect(stream: &mut WatchStream, n: usize) -> Vec<crate::WatchEvent> {
    use futures::StreamExt;
    let mut events = Vec::new();
    while events.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap_or_else(|_| panic!("no watch batch within 10 s"))
            .unwrap_or_else(|| panic!("watch ended"))
            .unwrap_or_else(|e| panic!("watch failed: {e}"));
        events.extend(batch.events);
    }
    events
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::WatchEvent;
    use futures::StreamExt;

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
