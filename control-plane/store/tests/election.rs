//! Leader election and fencing against the embedded store (the etcd run of the same
//! mechanism is in `tests/tests/control_plane.rs`, with real processes).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use meridian_store::election::{fenced_txn, spawn_candidate, ElectionConfig, Leadership, Role};
use meridian_store::embedded::EmbeddedStore;
use meridian_store::{Compare, Store, StoreError, Txn, TxnOp};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const KEY: &str = "/t/election/leader";

fn config(id: &str) -> ElectionConfig {
    ElectionConfig {
        leader_key: KEY.into(),
        candidate_id: id.into(),
        leader_value: id.as_bytes().to_vec(),
        lease_ttl: Duration::from_secs(1),
        leased_keys: vec![(format!("/t/replicas/{id}"), id.as_bytes().to_vec())],
    }
}

async fn wait_role(rx: &mut watch::Receiver<Leadership>, role: Role) -> Leadership {
    let fut = rx.wait_for(|l| l.role == role);
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("role reached in time")
        .expect("candidate alive")
        .clone()
}

#[tokio::test]
async fn one_leader_and_a_resigning_leader_hands_over_at_once() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let cancel_a = CancellationToken::new();
    let (mut a, task_a) = spawn_candidate(store.clone(), config("a"), cancel_a.clone());
    let a_view = wait_role(&mut a, Role::Leader).await;
    let cancel_b = CancellationToken::new();
    let (mut b, _task_b) = spawn_candidate(store.clone(), config("b"), cancel_b.clone());
    let b_view = wait_role(&mut b, Role::Follower).await;
    assert_eq!(b_view.leader_value.as_deref(), Some(&b"a"[..]));
    assert_eq!(b_view.leader_revision, a_view.fence.as_ref().unwrap().revision);
    assert!(store.get("/t/replicas/a").await.unwrap().is_some());
    assert!(store.get("/t/replicas/b").await.unwrap().is_some());

    // Resigning deletes the key and revokes the lease: b leads well before a's TTL.
    cancel_a.cancel();
    task_a.await.unwrap();
    let b_lead = wait_role(&mut b, Role::Leader).await;
    assert_ne!(b_lead.fence, a_view.fence);
    assert!(
        store.get("/t/replicas/a").await.unwrap().is_none(),
        "a's leased registry entry goes with its lease"
    );
    cancel_b.cancel();
}

#[tokio::test]
async fn a_leader_whose_lease_is_lost_steps_down_and_its_fence_is_rejected() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let (mut a, _ta) = spawn_candidate(store.clone(), config("a"), CancellationToken::new());
    let a_lead = wait_role(&mut a, Role::Leader).await;
    let old_fence = a_lead.fence.clone().unwrap();
    let (mut b, _tb) = spawn_candidate(store.clone(), config("b"), CancellationToken::new());
    wait_role(&mut b, Role::Follower).await;

    // Simulate a's lease expiring in the store (a paused process, a partition).
    let lease = store.get(KEY).await.unwrap().unwrap().lease.unwrap();
    store.lease_revoke(lease).await.unwrap();

    // Either candidate may win the next term (a re-campaigns on a fresh lease as soon
    // as it sees the loss); what matters is that there is a new term, that the other
    // candidate follows it, and that a's old fence no longer writes.
    let new_fence = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            for rx in [&a, &b] {
                let view = rx.borrow().clone();
                if let Some(f) = view.fence.filter(|f| f.revision > old_fence.revision) {
                    return f;
                }
            }
            tokio::select! {
                _ = a.changed() => {}
                _ = b.changed() => {}
            }
        }
    })
    .await
    .expect("a new term began in time");
    let a_leads = a.borrow().fence.as_ref() == Some(&new_fence);
    let other = if a_leads { &mut b } else { &mut a };
    let follower = tokio::time::timeout(
        Duration::from_secs(30),
        other.wait_for(|l| l.role == Role::Follower && l.leader_revision == new_fence.revision),
    )
    .await
    .expect("the other candidate follows the new term")
    .expect("candidate alive")
    .clone();
    assert!(follower.fence.is_none());

    let write = Txn::new().and_then([TxnOp::put("/t/data", b"x".to_vec())]);
    match fenced_txn(store.as_ref(), &old_fence, write.clone()).await {
        Err(StoreError::FenceLost { fence, .. }) => assert_eq!(fence, old_fence.revision),
        other => panic!("stale fence must be rejected, got {other:?}"),
    }
    assert!(store.get("/t/data").await.unwrap().is_none());
    assert!(fenced_txn(store.as_ref(), &new_fence, write).await.unwrap().succeeded);
}

#[tokio::test]
async fn fenced_txn_tells_a_failed_caller_compare_from_a_lost_fence() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let (mut a, _ta) = spawn_candidate(store.clone(), config("a"), CancellationToken::new());
    let fence = wait_role(&mut a, Role::Leader).await.fence.unwrap();
    store.put("/t/v", b"1".to_vec(), None).await.unwrap();
    let txn = Txn::new()
        .when([Compare::value_is("/t/v", b"2".to_vec())])
        .and_then([TxnOp::put("/t/v", b"3".to_vec())])
        .or_else([TxnOp::get("/t/v")]);
    let resp = fenced_txn(store.as_ref(), &fence, txn).await.unwrap();
    assert!(!resp.succeeded, "the caller's compare failed, the fence held");
    assert_eq!(resp.responses.len(), 1, "only the caller's failure ops are returned");
    match &resp.responses[0] {
        meridian_store::TxnOpResponse::Get(Some(kv)) => assert_eq!(kv.value, b"1"),
        other => panic!("unexpected {other:?}"),
    }
}
