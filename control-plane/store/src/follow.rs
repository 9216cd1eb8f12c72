//! The store follower, written once: keep up with everything under a prefix.
//!
//! A [`Follower`] lists the prefix (its contents and the revision of the read), then
//! watches from the next revision, so no change between the two is missed. When the
//! watch fails (its start revision was compacted away, the store was unreachable for
//! longer than the backend's own retries, the stream ended) it lists again after a
//! pause drawn from [`meridian_core::Backoff`], and starts over from a fresh
//! [`FollowEvent::Snapshot`]. Errors never reach the caller: they are logged, and
//! the caller only ever sees "here is the whole prefix" or "here is what changed".
//!
//! Callers keep state the obvious way: replace it on `Snapshot`, patch it on
//! `Update` ([`FollowEvent::apply_to`] does both for a map of the prefix). Relisting
//! after an error may deliver a snapshot equal to what the caller already has; one
//! whose values only move forward (versions, revisions) ignores what is not newer.
//!
//! Rejected alternative: a `Stream` adapter with the retry loop inside an `unfold`.
//! [`Follower::next`] as a cancel-safe method is what callers need in a
//! `tokio::select!` with their shutdown token, and it keeps the state (the open
//! watch, the pending retry deadline) inspectable; [`Follower::into_stream`] gives
//! the stream form for those who want it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use meridian_core::Backoff;

use crate::{list_and_watch, KeyValue, Revision, Store, StoreError, WatchEvent, WatchStream};

/// The first pause before relisting; doubles on each consecutive failure.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// The longest pause before relisting.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a follower saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FollowEvent {
    /// Everything under the prefix at `revision`, sorted by key: the first event, and
    /// again after every relist. Replaces whatever the caller held.
    Snapshot { kvs: Vec<KeyValue>, revision: Revision },
    /// Changes after the last event, in revision order; `revision` is the last one's.
    Update {
        events: Vec<WatchEvent>,
        revision: Revision,
    },
}

impl FollowEvent {
    /// The store revision this event brings the caller to.
    pub fn revision(&self) -> Revision {
        match self {
            FollowEvent::Snapshot { revision, .. } | FollowEvent::Update { revision, .. } => *revision,
        }
    }

    /// Applies the event to a map of the prefix, key to key-value: a snapshot
    /// replaces the map, an update patches it.
    pub fn apply_to(self, view: &mut BTreeMap<String, KeyValue>) {
        match self {
            FollowEvent::Snapshot { kvs, .. } => {
                *view = kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
            }
            FollowEvent::Update { events, .. } => {
                for event in events {
                    match event {
                        WatchEvent::Put(kv) => {
                            view.insert(kv.key.clone(), kv);
                        }
                        WatchEvent::Delete { key, .. } => {
                            view.remove(&key);
                        }
                    }
                }
            }
        }
    }
}

/// Follows one prefix of a store: list, watch, relist after a backoff on any failure.
pub struct Follower {
    store: Arc<dyn Store>,
    prefix: String,
    backoff: Backoff,
    /// The open watch, continuing exactly after the last event delivered.
    watch: Option<WatchStream>,
    /// When the next list may run, after a failure.
    retry_at: Option<tokio::time::Instant>,
    /// Lists that failed or watches that broke, since creation.
    failures: u64,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("prefix", &self.prefix)
            .field("watching", &self.watch.is_some())
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl Follower {
    /// A follower of every key starting with `prefix` (a whole key follows that key,
    /// and any longer key it prefixes: callers filter). Nothing happens until
    /// [`Follower::next`] is called.
    pub fn new(store: Arc<dyn Store>, prefix: impl Into<String>) -> Self {
        Self {
            store,
            prefix: prefix.into(),
            backoff: Backoff::new(DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_BACKOFF),
            watch: None,
            retry_at: None,
            failures: 0,
        }
    }

    /// Uses `backoff` between relists instead of the default (200 ms doubling to 5 s).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The prefix followed.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How many lists failed or watches broke so far (each one led to a relist).
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// The next event. Waits as long as it takes: failures are logged and retried,
    /// never returned. Cancel-safe: dropping the future (in a `select!`) loses
    /// nothing; the next call resumes the same watch or the same pending retry.
    pub async fn next(&mut self) -> FollowEvent {
        loop {
            if let Some(watch) = self.watch.as_mut() {
                match watch.next().await {
                    Some(Ok(batch)) => {
                        let Some(revision) = batch.events.last().map(WatchEvent::revision) else {
                            continue;
                        };
                        return FollowEvent::Update {
                            events: batch.events,
                            revision,
                        };
                    }
                    Some(Err(error)) => self.failed("watch failed", &error),
                    None => self.failed("watch ended", &StoreError::Backend("the watch stream ended".into())),
                }
                continue;
            }
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
                self.retry_at = None;
            }
            match list_and_watch(self.store.as_ref(), &self.prefix).await {
                Ok((listed, watch)) => {
                    self.watch = Some(watch);
                    self.backoff.reset();
                    return FollowEvent::Snapshot {
                        kvs: listed.kvs,
                        revision: listed.revision,
                    };
                }
                Err(error) => self.failed("list failed", &error),
            }
        }
    }

    /// The follower as a stream that never ends (drop it to stop).
    pub fn into_stream(self) -> impl Stream<Item = FollowEvent> + Send {
        futures::stream::unfold(self, |mut follower| async move {
            let event = follower.next().await;
            Some((event, follower))
        })
    }

    /// Drops the watch and schedules the relist after the next backoff pause.
    fn failed(&mut self, what: &str, error: &StoreError) {
        self.watch = None;
        self.failures += 1;
        let pause = self.backoff.next_delay(rand::random::<f64>());
        self.retry_at = Some(tokio::time::Instant::now() + pause);
        metrics::counter!("meridian_store_follow_relists_total").increment(1);
        tracing::warn!(prefix = %self.prefix, error = %error, ?pause, "store follower: {what}; re-listing");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    use super::*;
    use crate::embedded::EmbeddedStore;
    use crate::{BackendKind, Lease, LeaseId, RangeResponse, StoreHealth, Txn, TxnResponse};

    const WAIT: Duration = Duration::from_secs(10);

    async fn next(follower: &mut Follower) -> FollowEvent {
        tokio::time::timeout(WAIT, follower.next())
            .await
            .expect("a follow event in time")
    }

    fn keys(event: &FollowEvent) -> Vec<String> {
        match event {
            FollowEvent::Snapshot { kvs, .. } => kvs.iter().map(|kv| kv.key.clone()).collect(),
            FollowEvent::Update { events, .. } => events.iter().map(|e| e.key().to_owned()).collect(),
        }
    }

    #[tokio::test]
    async fn lists_then_follows_live_updates() {
        let store = Arc::new(EmbeddedStore::in_memory());
        store.put("/p/a", b"1".to_vec(), None).await.unwrap();
        store.put("/p/b", b"1".to_vec(), None).await.unwrap();
        let outside = store.put("/q/a", b"1".to_vec(), None).await.unwrap();
        let mut follower = Follower::new(store.clone(), "/p/");

        let first = next(&mut follower).await;
        assert_eq!(keys(&first), vec!["/p/a", "/p/b"]);
        assert!(matches!(first, FollowEvent::Snapshot { revision, .. } if revision == outside));

        store.put("/p/c", b"1".to_vec(), None).await.unwrap();
        store.put("/q/b", b"1".to_vec(), None).await.unwrap();
        store.delete("/p/a").await.unwrap();
        let deleted = store.range("/p/").await.unwrap().revision;
        let mut view = BTreeMap::new();
        first.apply_to(&mut view);
        let mut seen = Vec::new();
        while view.contains_key("/p/a") {
            let event = next(&mut follower).await;
            assert!(matches!(event, FollowEvent::Update { .. }), "{event:?}");
            seen.push(event.revision());
            event.apply_to(&mut view);
        }
        assert_eq!(seen.last(), Some(&deleted), "the update carries its revision");
        assert_eq!(view.keys().collect::<Vec<_>>(), vec!["/p/b", "/p/c"]);
        assert_eq!(follower.failures(), 0);
    }

    #[tokio::test]
    async fn relists_after_compaction() {
        let store = Arc::new(EmbeddedStore::in_memory());
        store.put("/p/a", b"1".to_vec(), None).await.unwrap();
        let mut follower = Follower::new(store.clone(), "/p/")
            .with_backoff(Backoff::new(Duration::from_millis(1), Duration::from_millis(5)));
        assert!(matches!(next(&mut follower).await, FollowEvent::Snapshot { .. }));

        // Leave the watch behind (more writes than its broadcast buffer holds) and
        // compact past what it has delivered: catching up from history then fails
        // with Compacted, as an etcd watch behind the compaction does.
        let mut last = 0;
        for i in 0..2000 {
            last = store
                .put(&format!("/p/k{}", i % 10), b"x".to_vec(), None)
                .await
                .unwrap();
        }
        store.compact(last).await.unwrap();
        store.put("/p/after", b"y".to_vec(), None).await.unwrap();

        let mut view = BTreeMap::new();
        loop {
            let event = next(&mut follower).await;
            let snapshot = matches!(event, FollowEvent::Snapshot { .. });
            event.apply_to(&mut view);
            if snapshot {
                break;
            }
        }
        assert_eq!(follower.failures(), 1, "exactly one relist, after Compacted");
        assert_eq!(view.len(), 12, "the relisted snapshot holds every key: {view:?}");
        assert!(view.contains_key("/p/after"));
    }

    /// A store whose next `range` calls fail, and whose watches can be broken on
    /// demand: everything else goes to an embedded store.
    struct Flaky {
        inner: EmbeddedStore,
        failing_ranges: AtomicU32,
        watches: Mutex<Vec<tokio::sync::oneshot::Sender<()>>>,
    }

    impl Flaky {
        fn break_watches(&self) {
            for tx in self.watches.lock().unwrap().drain(..) {
                let _ = tx.send(());
            }
        }
    }

    fn unavailable() -> StoreError {
        StoreError::Unavailable {
            endpoints: "flaky".into(),
            source: "injected".into(),
        }
    }

    #[async_trait::async_trait]
    impl Store for Flaky {
        fn backend(&self) -> BackendKind {
            BackendKind::Embedded
        }
        async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
            self.inner.get(key).await
        }
        async fn range(&self, prefix: &str) -> Result<RangeResponse, StoreError> {
            let failing = self.failing_ranges.load(Ordering::SeqCst);
            if failing > 0 {
                self.failing_ranges.store(failing - 1, Ordering::SeqCst);
                return Err(unavailable());
            }
            self.inner.range(prefix).await
        }
        async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<Revision, StoreError> {
            self.inner.put(key, value, lease).await
        }
        async fn delete(&self, key: &str) -> Result<u64, StoreError> {
            self.inner.delete(key).await
        }
        async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
            self.inner.delete_prefix(prefix).await
        }
        async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
            self.inner.txn(txn).await
        }
        async fn watch_prefix(&self, prefix: &str, start: Option<Revision>) -> Result<WatchStream, StoreError> {
            let watch = self.inner.watch_prefix(prefix, start).await?;
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            self.watches.lock().unwrap().push(tx);
            // The watch's items until the break, then one error.
            let broken = futures::stream::once(async move {
                let _ = rx.await;
                Err(unavailable())
            });
            Ok(Box::pin(futures::stream::select(watch, broken)))
        }
        async fn lease_grant(&self, ttl: Duration) -> Result<Lease, StoreError> {
            self.inner.lease_grant(ttl).await
        }
        async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
            self.inner.lease_keep_alive(lease).await
        }
        async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
            self.inner.lease_revoke(lease).await
        }
        async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
            self.inner.compact(revision).await
        }
        async fn health(&self) -> StoreHealth {
            self.inner.health().await
        }
    }

    fn flaky(failing_ranges: u32) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner: EmbeddedStore::in_memory(),
            failing_ranges: AtomicU32::new(failing_ranges),
            watches: Mutex::new(Vec::new()),
        })
    }

    fn fast(store: Arc<dyn Store>, prefix: &str) -> Follower {
        Follower::new(store, prefix).with_backoff(Backoff::new(Duration::from_millis(1), Duration::from_millis(5)))
    }

    #[tokio::test]
    async fn retries_a_failing_list() {
        let store = flaky(3);
        store.put("/p/a", b"1".to_vec(), None).await.unwrap();
        let mut follower = fast(store.clone(), "/p/");
        let first = next(&mut follower).await;
        assert_eq!(keys(&first), vec!["/p/a"]);
        assert_eq!(follower.failures(), 3, "three failed lists, then the snapshot");
    }

    #[tokio::test]
    async fn recovers_after_a_broken_watch() {
        let store = flaky(0);
        store.put("/p/a", b"1".to_vec(), None).await.unwrap();
        let mut follower = fast(store.clone(), "/p/");
        let mut view = BTreeMap::new();
        next(&mut follower).await.apply_to(&mut view);

        // The watch breaks and the next list fails too; meanwhile the prefix changes.
        store.failing_ranges.store(1, Ordering::SeqCst);
        store.break_watches();
        store.put("/p/b", b"1".to_vec(), None).await.unwrap();
        store.delete("/p/a").await.unwrap();

        let mut snapshots = 0;
        while !view.contains_key("/p/b") || view.contains_key("/p/a") {
            let event = next(&mut follower).await;
            snapshots += usize::from(matches!(event, FollowEvent::Snapshot { .. }));
            event.apply_to(&mut view);
        }
        assert_eq!(snapshots, 1, "one relist brought the view up to date");
        assert_eq!(follower.failures(), 2, "the broken watch and the failed list");
        // And it follows live again.
        store.put("/p/c", b"1".to_vec(), None).await.unwrap();
        let event = next(&mut follower).await;
        assert!(matches!(&event, FollowEvent::Update { .. }), "{event:?}");
        assert_eq!(keys(&event), vec!["/p/c"]);
    }

    #[tokio::test]
    async fn next_is_cancel_safe() {
        let store = flaky(2);
        let mut follower = Follower::new(store.clone(), "/p/")
            .with_backoff(Backoff::new(Duration::from_millis(50), Duration::from_millis(50)));
        // Cancel calls in the middle of the backoff pauses and of the watch: nothing
        // is lost or repeated.
        let mut events = Vec::new();
        let mut written = 0;
        while events
            .iter()
            .filter(|e| matches!(e, FollowEvent::Update { .. }))
            .count()
            < 5
        {
            match tokio::time::timeout(Duration::from_millis(5), follower.next()).await {
                Ok(event) => events.push(event),
                Err(_) => {
                    if events.is_empty() {
                        continue;
                    }
                    written += 1;
                    store.put(&format!("/p/{written}"), b"x".to_vec(), None).await.unwrap();
                }
            }
            assert!(written < 1000, "no progress: {events:?}");
        }
        assert!(matches!(events[0], FollowEvent::Snapshot { .. }));
        let updated: Vec<String> = events[1..].iter().flat_map(keys).collect();
        let expected: Vec<String> = (1..=updated.len()).map(|i| format!("/p/{i}")).collect();
        assert_eq!(updated, expected, "every write once, in order");
        assert_eq!(follower.failures(), 2);
    }

    #[tokio::test]
    async fn stream_form_delivers_the_same_events() {
        let store = Arc::new(EmbeddedStore::in_memory());
        store.put("/p/a", b"1".to_vec(), None).await.unwrap();
        let mut stream = Box::pin(Follower::new(store.clone(), "/p/").into_stream());
        let first = tokio::time::timeout(WAIT, stream.next()).await.unwrap().unwrap();
        assert_eq!(keys(&first), vec!["/p/a"]);
        store.put("/p/b", b"1".to_vec(), None).await.unwrap();
        let second = tokio::time::timeout(WAIT, stream.next()).await.unwrap().unwrap();
        assert_eq!(keys(&second), vec!["/p/b"]);
    }
}
