//! Runs the store conformance suite against the embedded backend, in memory and on
//! disk, and checks that a persisted store comes back intact after a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use meridian_store::conformance::{cases, run_all};
use meridian_store::embedded::EmbeddedStore;
use meridian_store::{Store, StoreError, Txn, TxnOp, WatchEvent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_in_memory() {
    run_all(Arc::new(EmbeddedStore::in_memory()), "/conformance").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    run_all(Arc::new(EmbeddedStore::open(dir.path()).unwrap()), "/conformance").await;
}

/// Each case alone on a fresh store: a case must not depend on others having run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_case_on_a_fresh_store() {
    for case in cases().into_iter().filter(|case| !case.name.starts_with("lease_")) {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
        (case.run)(store, format!("/fresh/{}", case.name)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_history_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (before, first_revision, expected_events) = {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let first = store.put("/p/a", b"1".to_vec(), None).await.unwrap();
        store.put("/p/b", b"1".to_vec(), None).await.unwrap();
        store.put("/p/a", b"2".to_vec(), None).await.unwrap();
        store
            .txn(Txn::new().and_then([TxnOp::put("/p/c", "1"), TxnOp::delete("/p/b")]))
            .await
            .unwrap();
        let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
        store.put("/p/leased", b"l".to_vec(), Some(lease.id)).await.unwrap();
        let mut watch = store.watch_prefix("/p/", Some(first)).await.unwrap();
        let mut events = Vec::new();
        while events.len() < 6 {
            events.extend(watch.next().await.unwrap().unwrap().events);
        }
        (store.range("/p/").await.unwrap(), first, events)
    };

    let store = EmbeddedStore::open(dir.path()).unwrap();
    let after = store.range("/p/").await.unwrap();
    assert_eq!(after, before, "keys, metadata and revision survive the restart");
    let leased = store.get("/p/leased").await.unwrap().unwrap();
    assert!(
        store.lease_keep_alive(leased.lease.unwrap()).await.is_ok(),
        "the lease survives the restart"
    );

    let mut watch = store.watch_prefix("/p/", Some(first_revision)).await.unwrap();
    let mut replayed = Vec::new();
    while replayed.len() < expected_events.len() {
        replayed.extend(watch.next().await.unwrap().unwrap().events);
    }
    assert_eq!(
        replayed, expected_events,
        "a watch from a pre-restart revision replays the same history"
    );
    let next = store.put("/p/new", b"n".to_vec(), None).await.unwrap();
    assert_eq!(next, before.revision + 1, "revisions continue where they stopped");
    let live = watch.next().await.unwrap().unwrap().events;
    assert!(
        matches!(&live[..], [WatchEvent::Put(kv)] if kv.key == "/p/new"),
        "then continues live: {live:?}"
    );

    // Compaction survives a restart too.
    store.compact(next).await.unwrap();
    drop(watch);
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert!(matches!(
        store.watch_prefix("/p/", Some(first_revision)).await,
        Err(StoreError::Compacted { compact_revision, .. }) if compact_revision == next
    ));
    assert_eq!(store.range("/p/").await.unwrap().revision, next);
}
