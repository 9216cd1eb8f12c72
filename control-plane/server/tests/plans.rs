//! Versioned plans on the embedded store: versions go up by one, a stale leader
//! cannot publish, every version stays readable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use meridian_control_plane::plans::{self, PlanError};
use meridian_core::keys::Keys;
use meridian_core::records::StoredPlan;
use meridian_store::embedded::EmbeddedStore;
use meridian_store::{Compare, Fence, Store, StoreError, Txn, TxnOp};

fn plan(reason: &str) -> StoredPlan {
    StoredPlan {
        version: 0,
        created_at_unix_ms: 1,
        published_by: "cp-1".into(),
        topology_revision: 1,
        dns_ttl_seconds: 20,
        regions: Vec::new(),
        pops: Vec::new(),
        anycast: Vec::new(),
        reasons: vec![reason.into()],
        guardrails: Vec::new(),
        restored_from: None,
        default_region: None,
        epoch: String::new(),
        content_hash: String::new(),
    }
}

async fn elect(store: &dyn Store, keys: &Keys, who: &str) -> Fence {
    let key = keys.leader();
    store.delete(&key).await.unwrap();
    let resp = store
        .txn(
            Txn::new()
                .when([Compare::absent(key.clone())])
                .and_then([TxnOp::put(key.clone(), who.as_bytes().to_vec())]),
        )
        .await
        .unwrap();
    assert!(resp.succeeded);
    Fence {
        key,
        revision: resp.revision,
    }
}

#[tokio::test]
async fn versions_go_up_by_one_and_a_deposed_leader_cannot_publish() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let keys = Keys::new("/m");
    assert_eq!(plans::current_pointer(store.as_ref(), &keys).await.unwrap().0, 0);
    let old = elect(store.as_ref(), &keys, "a").await;
    let p1 = plans::publish(store.as_ref(), &keys, &old, plan("first"))
        .await
        .unwrap();
    let p2 = plans::publish(store.as_ref(), &keys, &old, plan("second"))
        .await
        .unwrap();
    assert_eq!((p1.version, p2.version), (1, 2));

    // A new leader continues from the stored version; the old one is fenced off.
    let new = elect(store.as_ref(), &keys, "b").await;
    match plans::publish(store.as_ref(), &keys, &old, plan("stale")).await {
        Err(PlanError::Store(StoreError::FenceLost { .. })) => {}
        other => panic!("a deposed leader must not publish: {other:?}"),
    }
    let p3 = plans::publish(store.as_ref(), &keys, &new, plan("third"))
        .await
        .unwrap();
    assert_eq!(p3.version, 3, "no version skipped or repeated across a leader change");

    let current = plans::load_current(store.as_ref(), &keys).await.unwrap().unwrap();
    assert_eq!(current.reasons, vec!["third".to_string()]);
    assert_eq!(
        plans::load(store.as_ref(), &keys, 1).await.unwrap().reasons,
        vec!["first".to_string()]
    );
    assert!(matches!(
        plans::load(store.as_ref(), &keys, 9).await,
        Err(PlanError::NoSuchVersion(9))
    ));
    let versions: Vec<u64> = plans::history(store.as_ref(), &keys, 10)
        .await
        .unwrap()
        .iter()
        .map(|p| p.version)
        .collect();
    assert_eq!(versions, vec![3, 2, 1]);
}

#[tokio::test]
async fn plans_carry_the_store_epoch_created_once_and_their_content_hash() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let keys = Keys::new("/m");
    assert!(plans::read_epoch(store.as_ref(), &keys).await.unwrap().is_none());
    let a = elect(store.as_ref(), &keys, "a").await;
    let (epoch, _) = plans::ensure_epoch(store.as_ref(), &keys, &a, "cp-a", 5).await.unwrap();
    assert_eq!(epoch.epoch.len(), 32);
    assert!(epoch.epoch.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(epoch.created_by, "cp-a");

    let p1 = plans::publish(store.as_ref(), &keys, &a, plan("first")).await.unwrap();
    let p2 = plans::publish(store.as_ref(), &keys, &a, plan("second")).await.unwrap();
    assert_eq!(
        (p1.epoch.as_str(), p2.epoch.as_str()),
        (epoch.epoch.as_str(), epoch.epoch.as_str())
    );
    assert_eq!(p1.content_hash, meridian_core::plan_hash::content_hash(&p1));
    assert_eq!(
        p1.content_hash, p2.content_hash,
        "same content, other reasons: same hash"
    );
    let stored = plans::load(store.as_ref(), &keys, 2).await.unwrap();
    assert_eq!(
        (stored.epoch, stored.content_hash),
        (p2.epoch.clone(), p2.content_hash.clone())
    );

    // A later leader finds the same epoch; a deposed one cannot create or change it.
    let b = elect(store.as_ref(), &keys, "b").await;
    let (again, _) = plans::ensure_epoch(store.as_ref(), &keys, &b, "cp-b", 9).await.unwrap();
    assert_eq!(again, epoch, "created once, with the store");
    let mut ttl = plan("third");
    ttl.dns_ttl_seconds = 30;
    let p3 = plans::publish(store.as_ref(), &keys, &b, ttl).await.unwrap();
    assert_eq!(p3.epoch, epoch.epoch);
    assert_ne!(p3.content_hash, p2.content_hash, "other content: other hash");

    // A fresh store (a wipe) gets another epoch, and numbering starts again at 1.
    let fresh: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let c = elect(fresh.as_ref(), &keys, "c").await;
    let q1 = plans::publish(fresh.as_ref(), &keys, &c, plan("first")).await.unwrap();
    assert_eq!(q1.version, 1);
    assert_ne!(q1.epoch, epoch.epoch);
    assert_eq!(
        plans::read_epoch(fresh.as_ref(), &keys).await.unwrap().unwrap().0.epoch,
        q1.epoch,
        "the first publish on a store without an epoch creates it"
    );
}

#[tokio::test]
async fn a_deposed_leader_cannot_create_the_epoch() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let keys = Keys::new("/m");
    let old = elect(store.as_ref(), &keys, "a").await;
    let _new = elect(store.as_ref(), &keys, "b").await;
    match plans::ensure_epoch(store.as_ref(), &keys, &old, "cp-a", 1).await {
        Err(PlanError::Store(StoreError::FenceLost { .. })) => {}
        other => panic!("a deposed leader must not create the epoch: {other:?}"),
    }
    assert!(plans::read_epoch(store.as_ref(), &keys).await.unwrap().is_none());
}

#[tokio::test]
async fn plan_history_is_pruned_to_the_newest_versions_by_the_leader_only() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let keys = Keys::new("/m");
    let old = elect(store.as_ref(), &keys, "a").await;
    for i in 0..130 {
        plans::publish(store.as_ref(), &keys, &old, plan(&format!("p{i}")))
            .await
            .unwrap();
    }
    // A deposed leader prunes nothing.
    let new = elect(store.as_ref(), &keys, "b").await;
    assert!(matches!(
        plans::prune_history(store.as_ref(), &keys, &old, 10).await,
        Err(PlanError::Store(StoreError::FenceLost { .. }))
    ));
    assert_eq!(store.range(&keys.plan_history_prefix()).await.unwrap().kvs.len(), 130);
    // The leader keeps the newest 10 (more than one bounded transaction of deletes).
    assert_eq!(
        plans::prune_history(store.as_ref(), &keys, &new, 10).await.unwrap(),
        120
    );
    let left = store.range(&keys.plan_history_prefix()).await.unwrap().kvs;
    assert_eq!(left.len(), 10);
    assert!(matches!(
        plans::load(store.as_ref(), &keys, 120).await,
        Err(PlanError::NoSuchVersion(120))
    ));
    assert_eq!(
        plans::load(store.as_ref(), &keys, 121).await.unwrap().reasons,
        vec!["p120".to_string()]
    );
    assert_eq!(
        plans::load_current(store.as_ref(), &keys)
            .await
            .unwrap()
            .unwrap()
            .version,
        130
    );
    // Nothing more to do, and publishing continues at the next version.
    assert_eq!(plans::prune_history(store.as_ref(), &keys, &new, 10).await.unwrap(), 0);
    let next = plans::publish(store.as_ref(), &keys, &new, plan("after"))
        .await
        .unwrap();
    assert_eq!(next.version, 131);
}
