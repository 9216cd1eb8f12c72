//! A replica run in-process on an in-memory embedded store (listeners on port 0).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use meridian_control_plane::config::ControlPlaneConfig;
use meridian_store::embedded::EmbeddedStore;
use meridian_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_compacts_history_but_keeps_the_retained_window() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    for i in 0..400 {
        store.put(&format!("/other/k{i}"), b"v".to_vec(), None).await.unwrap();
    }
    let mut cfg = ControlPlaneConfig {
        replica_id: Some("cp-1".into()),
        ..Default::default()
    };
    cfg.store.compaction_interval = Duration::from_secs(1);
    cfg.store.compaction_retain_revisions = 100;
    let validated = cfg.validate("test").unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let replica = tokio::spawn(meridian_control_plane::run_with_store(
        validated,
        store.clone(),
        grpc,
        admin,
        shutdown.clone(),
    ));

    // History before (current - 100) goes; a watch from revision 2 then reports
    // compaction, while one from inside the retained window still works.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match store.watch_prefix("/other/", Some(2)).await {
            Err(StoreError::Compacted { compact_revision, .. }) => {
                let current = store.range("/").await.unwrap().revision;
                assert!(
                    compact_revision <= current - 100,
                    "compacted to {compact_revision}, current {current}"
                );
                assert!(store.watch_prefix("/other/", Some(current - 50)).await.is_ok());
                break;
            }
            Ok(_) | Err(_) => {
                assert!(tokio::time::Instant::now() < deadline, "the leader never compacted");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    shutdown.cancel();
    replica.await.unwrap().unwrap();
}
