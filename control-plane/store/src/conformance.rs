//! The store conformance suite: one set of behavioural cases that every [`Store`]
//! backend must pass, so the embedded store and etcd cannot drift apart.
//!
//! Each case takes the store and a key prefix (`ns`) of its own and panics with a
//! message saying what broke. Cases may run concurrently against one store (as they
//! do against a shared etcd), so they assert relative facts (a put's create revision
//! is the revision the put returned, later writes have higher revisions) and never
//! absolute revision numbers. The one case that compacts store-wide history is marked
//! [`Case::exclusive`]: run it alone, after the others ([`run_all`] does).
//!
//! Timing: leases use a 2 s TTL (real etcd's effective minimum is about that), every
//! wait is poll-until-true with a generous deadline, and no case asserts how fast
//! anything happened.
//!
//! This module is test support that panics, hence the relaxed panic lints. It sits
//! behind the `conformance` cargo feature, which only dev-dependencies enable (this
//! crate's own tests, and `meridian-tests` for the etcd run), so production builds
//! never compile it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

use crate::{
    list_and_watch, Compare, CompareOp, KeyValue, Revision, Store, StoreError, Txn, TxnOp, TxnOpResponse, WatchEvent,
    WatchStream,
};

/// How long any single wait in a case may take before it counts as a failure.
const WAIT: Duration = Duration::from_secs(15);
/// The lease TTL the lease cases use.
const TTL: Duration = Duration::from_secs(2);
/// How long [`run_all`] lets one case run.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// One conformance case.
#[derive(Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    /// The case compacts the store-wide history, which would break other cases'
    /// watches from past revisions: run it alone, after the others.
    pub exclusive: bool,
    /// Runs the case against a store, using only keys under the given prefix.
    pub run: fn(Arc<dyn Store>, String) -> BoxFuture<'static, ()>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("exclusive", &self.exclusive)
            .finish()
    }
}

macro_rules! case {
    ($name:ident) => {
        Case {
            name: stringify!($name),
            exclusive: false,
            run: |store, ns| $name(store, ns).boxed(),
        }
    };
    ($name:ident, exclusive) => {
        Case {
            name: stringify!($name),
            exclusive: true,
            run: |store, ns| $name(store, ns).boxed(),
        }
    };
}

/// Every case, exclusive ones last.
pub fn cases() -> Vec<Case> {
    vec![
        case!(kv_put_get_delete),
        case!(kv_empty_key_rejected),
        case!(range_prefix_sorted),
        case!(txn_create_revision_compare),
        case!(txn_mod_revision_stale_write_rejected),
        case!(txn_version_compare),
        case!(txn_value_compare),
        case!(txn_writes_land_in_one_revision),
        case!(delete_prefix_deletes_only_the_prefix),
        case!(delete_prefix_empty_rejected),
        case!(txn_invalid_requests_rejected_alike),
        case!(watch_from_past_revision_replays_exactly),
        case!(watch_without_start_sees_only_future),
        case!(list_and_watch_misses_nothing),
        case!(slow_watcher_gets_every_event),
        case!(lease_expiry_deletes_keys),
        case!(lease_keep_alive_keeps_keys),
        case!(lease_revoke_deletes_keys_at_once),
        case!(lease_zero_ttl_rejected),
        case!(health_reports_revision),
        case!(compaction, exclusive),
    ]
}

/// Runs every case against `store`, each under `{ns_root}/{case name}`: the
/// non-exclusive ones concurrently, then the exclusive ones one by one. Panics naming
/// every case that failed.
pub async fn run_all(store: Arc<dyn Store>, ns_root: &str) {
    let backend = store.backend();
    let mut failures = Vec::new();
    let (exclusive, shared): (Vec<Case>, Vec<Case>) = cases().into_iter().partition(|case| case.exclusive);
    let mut running = Vec::new();
    for case in shared {
        let fut = (case.run)(Arc::clone(&store), format!("{ns_root}/{}", case.name));
        running.push((case.name, tokio::spawn(tokio::time::timeout(CASE_TIMEOUT, fut))));
    }
    for (name, handle) in running {
        if let Some(failure) = outcome(handle.await) {
            failures.push(format!("{name}: {failure}"));
        }
    }
    for case in exclusive {
        let fut = (case.run)(Arc::clone(&store), format!("{ns_root}/{}", case.name));
        if let Some(failure) = outcome(tokio::spawn(tokio::time::timeout(CASE_TIMEOUT, fut)).await) {
            failures.push(format!("{}: {failure}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} conformance case(s) failed against {backend}:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

fn outcome(result: Result<Result<(), tokio::time::error::Elapsed>, tokio::task::JoinError>) -> Option<String> {
    match result {
        Ok(Ok(())) => None,
        Ok(Err(_)) => Some(format!("timed out after {CASE_TIMEOUT:?}")),
        Err(e) if e.is_panic() => {
            let panic = e.into_panic();
            Some(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned()),
            )
        }
        Err(e) => Some(e.to_string()),
    }
}

// ---------------------------------------------------------------------------------
// Key-value and revision bookkeeping.
// ---------------------------------------------------------------------------------

/// put/get/delete and the create revision, mod revision and version of each key.
pub async fn kv_put_get_delete(store: Arc<dyn Store>, ns: String) {
    let key = format!("{ns}/k");
    assert_eq!(
        store.get(&key).await.unwrap(),
        None,
        "a key never written must read as absent"
    );
    let r1 = store.put(&key, b"v1".to_vec(), None).await.unwrap();
    assert!(
        r1 > 1,
        "the first put must land after revision 1 (an empty store is at 1), got {r1}"
    );
    assert_eq!(
        store.get(&key).await.unwrap(),
        Some(kv(&key, "v1", r1, r1, 1)),
        "after the first put"
    );

    let r2 = store.put(&key, b"v2".to_vec(), None).await.unwrap();
    assert!(r2 > r1, "a second put must move the revision forward: {r1} then {r2}");
    assert_eq!(
        store.get(&key).await.unwrap(),
        Some(kv(&key, "v2", r1, r2, 2)),
        "the second put keeps the create revision, bumps mod revision and version"
    );

    assert_eq!(
        store.delete(&key).await.unwrap(),
        1,
        "deleting an existing key deletes 1"
    );
    assert_eq!(
        store.get(&key).await.unwrap(),
        None,
        "a deleted key must read as absent"
    );
    assert_eq!(store.delete(&key).await.unwrap(), 0, "deleting an absent key deletes 0");

    let r3 = store.put(&key, b"v3".to_vec(), None).await.unwrap();
    assert!(r3 > r2);
    assert_eq!(
        store.get(&key).await.unwrap(),
        Some(kv(&key, "v3", r3, r3, 1)),
        "a recreated key starts a new incarnation: new create revision, version 1"
    );
    let listed = store.range(&ns).await.unwrap();
    assert!(
        listed.revision >= r3,
        "a read after a put must be at or after the put's revision"
    );
}

/// The empty key is not a key.
pub async fn kv_empty_key_rejected(store: Arc<dyn Store>, _ns: String) {
    let put = store.put("", b"v".to_vec(), None).await;
    assert!(
        matches!(put, Err(StoreError::InvalidRequest(_))),
        "put with an empty key must be InvalidRequest, got {put:?}"
    );
    let get = store.get("").await;
    assert!(
        matches!(get, Err(StoreError::InvalidRequest(_))),
        "get of an empty key must be InvalidRequest, got {get:?}"
    );
    let delete = store.delete("").await;
    assert!(
        matches!(delete, Err(StoreError::InvalidRequest(_))),
        "delete of an empty key must be InvalidRequest, got {delete:?}"
    );
}

/// range returns exactly the keys under the prefix, sorted by key, at a revision no
/// older than the writes.
pub async fn range_prefix_sorted(store: Arc<dyn Store>, ns: String) {
    let prefix = format!("{ns}/r/");
    let mut last = 0;
    for name in ["m", "b", "z", "a", "b/nested"] {
        last = store
            .put(&format!("{prefix}{name}"), name.as_bytes().to_vec(), None)
            .await
            .unwrap();
    }
    // Keys that share the prefix as a string but not as a path element, or precede it.
    store.put(&format!("{ns}/r"), b"outside".to_vec(), None).await.unwrap();
    store.put(&format!("{ns}/r0"), b"outside".to_vec(), None).await.unwrap();
    store.put(&format!("{ns}/q"), b"outside".to_vec(), None).await.unwrap();

    let listed = store.range(&prefix).await.unwrap();
    let keys: Vec<&str> = listed.kvs.iter().map(|kv| kv.key.as_str()).collect();
    let expected: Vec<String> = ["a", "b", "b/nested", "m", "z"]
        .iter()
        .map(|n| format!("{prefix}{n}"))
        .collect();
    assert_eq!(keys, expected, "range must return exactly the prefix's keys, sorted");
    assert!(
        listed.revision >= last,
        "range revision {} is older than the last put {last}",
        listed.revision
    );
    for kv in &listed.kvs {
        assert_eq!(kv.value, &kv.key.as_bytes()[prefix.len()..], "value of {}", kv.key);
    }
    assert!(store
        .range(&format!("{ns}/nothing-here/"))
        .await
        .unwrap()
        .kvs
        .is_empty());
}

// ---------------------------------------------------------------------------------
// Transactions.
// ---------------------------------------------------------------------------------

/// "Create if absent" and the leader fence (create revision equals).
pub async fn txn_create_revision_compare(store: Arc<dyn Store>, ns: String) {
    let key = format!("{ns}/leader");
    let create = |value: &str| {
        Txn::new()
            .when([Compare::absent(&key)])
            .and_then([TxnOp::put(&key, value)])
            .or_else([TxnOp::get(&key)])
    };
    let first = store.txn(create("a")).await.unwrap();
    assert!(first.succeeded, "create-if-absent on an absent key must succeed");
    assert_eq!(first.responses, vec![TxnOpResponse::Put]);
    let created = store.get(&key).await.unwrap().expect("the created key");
    assert_eq!(
        created.create_revision, first.revision,
        "the key is created at the transaction's revision"
    );

    let second = store.txn(create("b")).await.unwrap();
    assert!(!second.succeeded, "create-if-absent on an existing key must fail");
    assert_eq!(
        second.responses,
        vec![TxnOpResponse::Get(Some(created.clone()))],
        "the failure branch runs"
    );
    assert_eq!(
        store.get(&key).await.unwrap().unwrap().value,
        b"a",
        "the losing write must not land"
    );

    let fenced = |fence: Revision, value: &str| {
        Txn::new()
            .when([Compare::created_at(&key, fence)])
            .and_then([TxnOp::put(format!("{ns}/data"), value)])
    };
    assert!(
        store
            .txn(fenced(created.create_revision, "ok"))
            .await
            .unwrap()
            .succeeded,
        "the current fence holds"
    );
    assert!(
        !store
            .txn(fenced(created.create_revision - 1, "stale"))
            .await
            .unwrap()
            .succeeded,
        "a wrong fence fails"
    );
    let gt = Txn::new().when([Compare::CreateRevision {
        key: key.clone(),
        op: CompareOp::Greater,
        revision: created.create_revision - 1,
    }]);
    assert!(store.txn(gt).await.unwrap().succeeded, "create revision > fence - 1");
    let lt = Txn::new().when([Compare::CreateRevision {
        key: key.clone(),
        op: CompareOp::Less,
        revision: created.create_revision,
    }]);
    assert!(!store.txn(lt).await.unwrap().succeeded, "create revision < itself");
    assert_eq!(
        store.get(&format!("{ns}/data")).await.unwrap().unwrap().value,
        b"ok",
        "only the fenced write with the right fence landed"
    );

    // The leader key deleted and recreated: the old fence no longer holds.
    store.delete(&key).await.unwrap();
    let recreated = store.txn(create("c")).await.unwrap();
    assert!(recreated.succeeded);
    assert!(
        !store
            .txn(fenced(created.create_revision, "deposed"))
            .await
            .unwrap()
            .succeeded,
        "a deposed leader's fence must fail"
    );
    assert_eq!(
        store.get(&format!("{ns}/data")).await.unwrap().unwrap().value,
        b"ok",
        "a deposed leader's write must not land"
    );
}

/// Compare-and-swap on the mod revision: a write based on a stale read fails.
pub async fn txn_mod_revision_stale_write_rejected(store: Arc<dyn Store>, ns: String) {
    let key = format!("{ns}/cas");
    let absent = Txn::new()
        .when([Compare::modified_at(&key, 0)])
        .and_then([TxnOp::put(&key, "0")]);
    assert!(
        store.txn(absent).await.unwrap().succeeded,
        "an absent key has mod revision 0"
    );
    let read = store.get(&key).await.unwrap().unwrap();

    let cas = |seen: Revision, value: &str| {
        Txn::new()
            .when([Compare::modified_at(&key, seen)])
            .and_then([TxnOp::put(&key, value)])
            .or_else([TxnOp::get(&key)])
    };
    let won = store.txn(cas(read.mod_revision, "1")).await.unwrap();
    assert!(won.succeeded, "a CAS on the current mod revision must succeed");
    let lost = store.txn(cas(read.mod_revision, "2")).await.unwrap();
    assert!(!lost.succeeded, "a CAS on a stale mod revision must fail");
    match &lost.responses[..] {
        [TxnOpResponse::Get(Some(current))] => {
            assert_eq!(current.value, b"1");
            assert_eq!(
                current.mod_revision, won.revision,
                "the failure branch sees the winning write"
            );
        }
        other => panic!("failure branch should have returned the key, got {other:?}"),
    }
    let now = store.get(&key).await.unwrap().unwrap();
    assert_eq!(
        (now.value.as_slice(), now.mod_revision, now.version),
        (&b"1"[..], won.revision, 2),
        "the stale write must not land"
    );
    let newer = Txn::new().when([Compare::ModRevision {
        key: key.clone(),
        op: CompareOp::Greater,
        revision: read.mod_revision,
    }]);
    assert!(
        store.txn(newer).await.unwrap().succeeded,
        "mod revision moved past the first read"
    );
    let not_equal = Txn::new().when([Compare::ModRevision {
        key: key.clone(),
        op: CompareOp::NotEqual,
        revision: won.revision,
    }]);
    assert!(!store.txn(not_equal).await.unwrap().succeeded);
}

/// Compares on the version: 0 when absent, counting puts since creation.
pub async fn txn_version_compare(store: Arc<dyn Store>, ns: String) {
    let key = format!("{ns}/v");
    let version = |op: CompareOp, version: i64| {
        Txn::new().when([Compare::Version {
            key: key.clone(),
            op,
            version,
        }])
    };
    assert!(
        store.txn(version(CompareOp::Equal, 0)).await.unwrap().succeeded,
        "an absent key has version 0"
    );
    for _ in 0..3 {
        store.put(&key, b"x".to_vec(), None).await.unwrap();
    }
    let table = [
        (CompareOp::Equal, 3, true),
        (CompareOp::Equal, 2, false),
        (CompareOp::NotEqual, 3, false),
        (CompareOp::Greater, 2, true),
        (CompareOp::Greater, 3, false),
        (CompareOp::Less, 4, true),
        (CompareOp::Less, 3, false),
    ];
    for (op, v, expected) in table {
        assert_eq!(
            store.txn(version(op, v)).await.unwrap().succeeded,
            expected,
            "version(3) {op:?} {v}"
        );
    }
    store.delete(&key).await.unwrap();
    store.put(&key, b"x".to_vec(), None).await.unwrap();
    assert!(
        store.txn(version(CompareOp::Equal, 1)).await.unwrap().succeeded,
        "version restarts at 1 after delete"
    );
}

/// Compares on the value, including the etcd rule that a value compare on a missing
/// key fails whatever the operator.
pub async fn txn_value_compare(store: Arc<dyn Store>, ns: String) {
    let key = format!("{ns}/val");
    let missing = format!("{ns}/missing");
    store.put(&key, b"b".to_vec(), None).await.unwrap();
    let value = |key: &str, op: CompareOp, v: &str| {
        Txn::new()
            .when([Compare::Value {
                key: key.to_owned(),
                op,
                value: v.as_bytes().to_vec(),
            }])
            .and_then([TxnOp::put(format!("{ns}/outcome"), "success")])
            .or_else([TxnOp::put(format!("{ns}/outcome"), "failure")])
    };
    let table = [
        (key.as_str(), CompareOp::Equal, "b", true),
        (key.as_str(), CompareOp::Equal, "a", false),
        (key.as_str(), CompareOp::NotEqual, "a", true),
        (key.as_str(), CompareOp::Greater, "a", true),
        (key.as_str(), CompareOp::Less, "a", false),
        (key.as_str(), CompareOp::Less, "c", true),
        (missing.as_str(), CompareOp::Equal, "", false),
        (missing.as_str(), CompareOp::NotEqual, "x", false),
    ];
    for (k, op, v, expected) in table {
        let resp = store.txn(value(k, op, v)).await.unwrap();
        assert_eq!(resp.succeeded, expected, "value({k}) {op:?} {v:?}");
        let outcome = store.get(&format!("{ns}/outcome")).await.unwrap().unwrap();
        assert_eq!(
            outcome.value,
            if expected { &b"success"[..] } else { &b"failure"[..] },
            "the branch that ran"
        );
        assert_eq!(
            outcome.mod_revision, resp.revision,
            "the branch's write is at the transaction's revision"
        );
    }
    assert!(
        store
            .txn(Txn::new().when([Compare::value_is(&key, "b"), Compare::absent(&missing)]))
            .await
            .unwrap()
            .succeeded
    );
    assert!(
        !store
            .txn(Txn::new().when([Compare::value_is(&key, "b"), Compare::absent(&key)]))
            .await
            .unwrap()
            .succeeded,
        "all compares must hold"
    );
}

/// All writes of one transaction share one revision; reads come back in op order.
pub async fn txn_writes_land_in_one_revision(store: Arc<dyn Store>, ns: String) {
    let (a, b, c) = (format!("{ns}/a"), format!("{ns}/b"), format!("{ns}/c"));
    store.put(&c, b"old".to_vec(), None).await.unwrap();
    let txn = Txn::new().and_then([
        TxnOp::put(&a, "1"),
        TxnOp::put(&b, "2"),
        TxnOp::delete(&c),
        TxnOp::get(&a),
    ]);
    let resp = store.txn(txn).await.unwrap();
    assert!(resp.succeeded, "a transaction without compares succeeds");
    assert_eq!(resp.responses.len(), 4);
    assert_eq!(
        &resp.responses[..3],
        &[
            TxnOpResponse::Put,
            TxnOpResponse::Put,
            TxnOpResponse::Delete { deleted: 1 }
        ]
    );
    let ka = store.get(&a).await.unwrap().unwrap();
    let kb = store.get(&b).await.unwrap().unwrap();
    assert_eq!(
        (ka.mod_revision, kb.mod_revision),
        (resp.revision, resp.revision),
        "one revision for the whole transaction"
    );
    assert_eq!(store.get(&c).await.unwrap(), None);

    let mut watch = store
        .watch_prefix(&format!("{ns}/"), Some(resp.revision))
        .await
        .unwrap();
    let events = recv_events(&mut watch, 3).await;
    assert!(
        events.iter().all(|e| e.revision() == resp.revision),
        "events of the transaction: {events:?}"
    );

    let read_only = store
        .txn(Txn::new().and_then([TxnOp::get(&a), TxnOp::get(&c)]))
        .await
        .unwrap();
    assert_eq!(
        read_only.responses,
        vec![TxnOpResponse::Get(Some(ka.clone())), TxnOpResponse::Get(None)]
    );
    assert!(read_only.revision >= resp.revision);
    assert_eq!(
        store.get(&a).await.unwrap().unwrap().mod_revision,
        resp.revision,
        "a read-only transaction writes nothing"
    );
}

/// delete_prefix removes exactly the keys under the prefix, in one revision.
pub async fn delete_prefix_deletes_only_the_prefix(store: Arc<dyn Store>, ns: String) {
    let prefix = format!("{ns}/d/");
    for name in ["1", "2", "3/x"] {
        store
            .put(&format!("{prefix}{name}"), b"x".to_vec(), None)
            .await
            .unwrap();
    }
    let outside = format!("{ns}/d");
    let sibling = format!("{ns}/d2");
    store.put(&outside, b"keep".to_vec(), None).await.unwrap();
    let last = store.put(&sibling, b"keep".to_vec(), None).await.unwrap();
    let mut watch = store.watch_prefix(&format!("{ns}/"), Some(last + 1)).await.unwrap();

    assert_eq!(
        store.delete_prefix(&prefix).await.unwrap(),
        3,
        "delete_prefix must report 3 deleted keys"
    );
    assert!(
        store.range(&prefix).await.unwrap().kvs.is_empty(),
        "nothing left under the prefix"
    );
    assert!(
        store.get(&outside).await.unwrap().is_some(),
        "{outside} is not under {prefix}"
    );
    assert!(
        store.get(&sibling).await.unwrap().is_some(),
        "{sibling} is not under {prefix}"
    );
    assert_eq!(store.delete_prefix(&prefix).await.unwrap(), 0, "nothing left to delete");

    let events = recv_events(&mut watch, 3).await;
    assert_eq!(events.len(), 3, "one delete event per key: {events:?}");
    assert!(
        events.iter().all(|e| matches!(e, WatchEvent::Delete { .. })),
        "{events:?}"
    );
    let revision = events[0].revision();
    assert!(
        revision > last && events.iter().all(|e| e.revision() == revision),
        "one revision for all: {events:?}"
    );
}

/// An empty prefix would delete the whole keyspace (etcd itself would do it): both
/// backends refuse it, as a call and inside a transaction, and delete nothing.
pub async fn delete_prefix_empty_rejected(store: Arc<dyn Store>, ns: String) {
    let key = format!("{ns}/survivor");
    store.put(&key, b"x".to_vec(), None).await.unwrap();
    let direct = store.delete_prefix("").await;
    assert!(
        matches!(direct, Err(StoreError::InvalidRequest(_))),
        "delete_prefix(\"\") must be InvalidRequest, got {direct:?}"
    );
    let in_txn = store
        .txn(Txn::new().and_then([TxnOp::DeletePrefix { prefix: String::new() }]))
        .await;
    assert!(
        matches!(in_txn, Err(StoreError::InvalidRequest(_))),
        "a transaction deleting the empty prefix must be InvalidRequest, got {in_txn:?}"
    );
    let in_failure_branch = store
        .txn(
            Txn::new()
                .when([Compare::absent(&key)])
                .or_else([TxnOp::DeletePrefix { prefix: String::new() }]),
        )
        .await;
    assert!(
        matches!(in_failure_branch, Err(StoreError::InvalidRequest(_))),
        "the failure branch is checked too, got {in_failure_branch:?}"
    );
    assert!(
        store.get(&key).await.unwrap().is_some(),
        "a refused delete deletes nothing"
    );
}

/// Both backends refuse the same malformed transactions (the shared validator,
/// `txn::validate`), with `InvalidRequest`, and write nothing.
pub async fn txn_invalid_requests_rejected_alike(store: Arc<dyn Store>, ns: String) {
    let (a, b) = (format!("{ns}/a"), format!("{ns}/b"));
    let cases = [
        ("empty compare key", Txn::new().when([Compare::absent("")])),
        (
            "empty key in the failure branch",
            Txn::new().or_else([TxnOp::delete("")]),
        ),
        (
            "a key put twice",
            Txn::new().and_then([TxnOp::put(&a, "1"), TxnOp::put(&a, "2")]),
        ),
        (
            "a key put and deleted",
            Txn::new().and_then([TxnOp::put(&a, "1"), TxnOp::delete(&a)]),
        ),
        (
            "a key put under a deleted prefix",
            Txn::new().and_then([
                TxnOp::put(&a, "1"),
                TxnOp::DeletePrefix {
                    prefix: format!("{ns}/"),
                },
            ]),
        ),
    ];
    for (what, txn) in cases {
        let result = store.txn(txn).await;
        assert!(
            matches!(result, Err(StoreError::InvalidRequest(_))),
            "{what}: must be InvalidRequest, got {result:?}"
        );
    }
    assert!(
        store.get(&a).await.unwrap().is_none(),
        "refused transactions write nothing"
    );
    // The same key in each branch, and a delete twice, are fine.
    let ok = store
        .txn(
            Txn::new()
                .when([Compare::absent(&a)])
                .and_then([TxnOp::put(&a, "1"), TxnOp::delete(&b), TxnOp::delete(&b)])
                .or_else([TxnOp::put(&a, "2")]),
        )
        .await
        .unwrap();
    assert!(ok.succeeded);
    assert_eq!(store.get(&a).await.unwrap().unwrap().value, b"1".to_vec());
}

// ---------------------------------------------------------------------------------
// Watches.
// ---------------------------------------------------------------------------------

/// A watch from a past revision replays exactly the events from there on, in order,
/// deletes included, then continues live with nothing repeated.
pub async fn watch_from_past_revision_replays_exactly(store: Arc<dyn Store>, ns: String) {
    let (a, b, c) = (format!("{ns}/a"), format!("{ns}/b"), format!("{ns}/c"));
    let r1 = store.put(&a, b"1".to_vec(), None).await.unwrap();
    let r2 = store.put(&b, b"1".to_vec(), None).await.unwrap();
    let r3 = store.put(&a, b"2".to_vec(), None).await.unwrap();
    let r4 = store
        .txn(Txn::new().and_then([TxnOp::put(&c, "1"), TxnOp::delete(&b)]))
        .await
        .unwrap()
        .revision;
    let r5 = store
        .txn(Txn::new().and_then([TxnOp::delete(&a)]))
        .await
        .unwrap()
        .revision;
    let r6 = store
        .txn(Txn::new().and_then([TxnOp::DeletePrefix {
            prefix: format!("{ns}/"),
        }]))
        .await
        .unwrap()
        .revision;
    let expected = vec![
        WatchEvent::Put(kv(&a, "1", r1, r1, 1)),
        WatchEvent::Put(kv(&b, "1", r2, r2, 1)),
        WatchEvent::Put(kv(&a, "2", r1, r3, 2)),
        WatchEvent::Delete {
            key: b.clone(),
            mod_revision: r4,
        },
        WatchEvent::Put(kv(&c, "1", r4, r4, 1)),
        WatchEvent::Delete {
            key: a.clone(),
            mod_revision: r5,
        },
        WatchEvent::Delete {
            key: c.clone(),
            mod_revision: r6,
        },
    ];

    let mut watch = store.watch_prefix(&format!("{ns}/"), Some(r1)).await.unwrap();
    let events = recv_events(&mut watch, expected.len()).await;
    assert_eq!(
        normalize(events),
        expected,
        "a watch from {r1} must replay every event since, once, in order"
    );
    let sentinel = format!("{ns}/sentinel");
    let rs = store.put(&sentinel, b"s".to_vec(), None).await.unwrap();
    let live = recv_events(&mut watch, 1).await;
    assert_eq!(
        live,
        vec![WatchEvent::Put(kv(&sentinel, "s", rs, rs, 1))],
        "after the replay, only the new event"
    );

    let mut from_middle = store.watch_prefix(&format!("{ns}/"), Some(r3)).await.unwrap();
    let events = recv_events(&mut from_middle, expected.len() - 2 + 1).await;
    let mut tail = expected[2..].to_vec();
    tail.push(WatchEvent::Put(kv(&sentinel, "s", rs, rs, 1)));
    assert_eq!(
        normalize(events),
        tail,
        "a watch from {r3} starts exactly at {r3} (inclusive)"
    );

    let mut only_c = store.watch_prefix(&c, Some(r1)).await.unwrap();
    let events = recv_events(&mut only_c, 2).await;
    assert_eq!(
        events,
        expected[4..]
            .iter()
            .filter(|e| e.key() == c)
            .cloned()
            .collect::<Vec<_>>(),
        "prefix filter"
    );
}

/// A watch without a start revision sees only what happens after it was created.
pub async fn watch_without_start_sees_only_future(store: Arc<dyn Store>, ns: String) {
    let (a, b) = (format!("{ns}/a"), format!("{ns}/b"));
    store.put(&a, b"before".to_vec(), None).await.unwrap();
    let mut watch = store.watch_prefix(&format!("{ns}/"), None).await.unwrap();
    let rb = store.put(&b, b"after".to_vec(), None).await.unwrap();
    let events = recv_events(&mut watch, 1).await;
    assert_eq!(
        events,
        vec![WatchEvent::Put(kv(&b, "after", rb, rb, 1))],
        "only the write made after the watch"
    );
    let rd = store
        .txn(Txn::new().and_then([TxnOp::delete(&a)]))
        .await
        .unwrap()
        .revision;
    let events = recv_events(&mut watch, 1).await;
    assert_eq!(
        events,
        vec![WatchEvent::Delete {
            key: a.clone(),
            mod_revision: rd
        }],
        "deletes are watched too"
    );
}

/// list_and_watch while a writer runs: the listing plus the watched events give the
/// final state, and no event at or before the listing's revision is delivered.
pub async fn list_and_watch_misses_nothing(store: Arc<dyn Store>, ns: String) {
    let prefix = format!("{ns}/law/");
    const WRITES: usize = 300;
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let writer = {
        let store = Arc::clone(&store);
        let prefix = prefix.clone();
        tokio::spawn(async move {
            let mut started = Some(started_tx);
            for i in 0..WRITES {
                let key = format!("{prefix}{}", i % 17);
                if i % 5 == 4 {
                    store.delete(&key).await.unwrap();
                } else {
                    store.put(&key, i.to_string().into_bytes(), None).await.unwrap();
                }
                if i == WRITES / 3 {
                    if let Some(tx) = started.take() {
                        let _ = tx.send(());
                    }
                }
            }
            store
                .put(&format!("{prefix}zz-done"), b"done".to_vec(), None)
                .await
                .unwrap()
        })
    };
    started_rx.await.unwrap();
    let (listed, mut watch) = list_and_watch(store.as_ref(), &prefix).await.unwrap();
    let done_revision = writer.await.unwrap();

    let mut state: BTreeMap<String, Vec<u8>> = listed.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
    let mut last = listed.revision;
    if done_revision > listed.revision {
        loop {
            let batch = next_batch(&mut watch).await;
            for event in batch {
                assert!(
                    event.revision() > listed.revision,
                    "event {event:?} is at or before the listing ({})",
                    listed.revision
                );
                assert!(
                    event.revision() >= last,
                    "event {event:?} out of order after revision {last}"
                );
                last = event.revision();
                match event {
                    WatchEvent::Put(kv) => state.insert(kv.key, kv.value),
                    WatchEvent::Delete { key, .. } => state.remove(&key),
                };
            }
            if last >= done_revision {
                break;
            }
        }
    }
    let actual: BTreeMap<String, Vec<u8>> = store
        .range(&prefix)
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    assert_eq!(
        state, actual,
        "listing + watched events must equal the final state (listed at {})",
        listed.revision
    );
}

/// A watcher that does not poll while ~2000 events are written still receives every
/// one of them afterwards, in order, each once.
pub async fn slow_watcher_gets_every_event(store: Arc<dyn Store>, ns: String) {
    const EVENTS: usize = 2000;
    const IN_FLIGHT: usize = 16;
    let prefix = format!("{ns}/slow/");
    let mut watch = store.watch_prefix(&prefix, None).await.unwrap();
    let mut written = Vec::with_capacity(EVENTS);
    for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(IN_FLIGHT) {
        let puts = chunk.iter().map(|i| {
            let store = Arc::clone(&store);
            let key = format!("{prefix}{:03}", i % 250);
            let value = i.to_string().into_bytes();
            async move { (store.put(&key, value.clone(), None).await.unwrap(), key, value) }
        });
        written.extend(futures::future::join_all(puts).await);
    }
    written.sort_by_key(|(revision, _, _)| *revision);

    let events = recv_events(&mut watch, EVENTS).await;
    assert_eq!(events.len(), EVENTS, "every event once, no more");
    for (i, (event, (revision, key, value))) in events.iter().zip(&written).enumerate() {
        match event {
            WatchEvent::Put(kv) if kv.mod_revision == *revision && &kv.key == key && &kv.value == value => {}
            other => panic!("event #{i} should be the put of {key} at {revision}, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------
// Leases.
// ---------------------------------------------------------------------------------

/// A lease left alone expires and takes its keys with it (a delete event is watched);
/// the expired lease can then neither be kept alive nor used.
pub async fn lease_expiry_deletes_keys(store: Arc<dyn Store>, ns: String) {
    let key = format!("{ns}/ephemeral");
    let plain = format!("{ns}/plain");
    let lease = store.lease_grant(TTL).await.unwrap();
    assert!(lease.id != 0, "lease ids are non-zero");
    let rp = store.put(&key, b"x".to_vec(), Some(lease.id)).await.unwrap();
    store.put(&plain, b"y".to_vec(), None).await.unwrap();
    assert_eq!(
        store.get(&key).await.unwrap().unwrap().lease,
        Some(lease.id),
        "the key carries its lease"
    );
    let mut watch = store.watch_prefix(&key, Some(rp + 1)).await.unwrap();

    eventually("the leased key to disappear after the lease's TTL", || {
        let store = Arc::clone(&store);
        let key = key.clone();
        async move { store.get(&key).await.unwrap().is_none() }
    })
    .await;
    let events = recv_events(&mut watch, 1).await;
    match &events[..] {
        [WatchEvent::Delete {
            key: deleted,
            mod_revision,
        }] if deleted == &key && *mod_revision > rp => {}
        other => panic!("expiry must be watched as one delete of {key} after {rp}, got {other:?}"),
    }
    assert!(
        store.get(&plain).await.unwrap().is_some(),
        "a key without the lease stays"
    );
    let keep_alive = store.lease_keep_alive(lease.id).await;
    assert!(
        matches!(keep_alive, Err(StoreError::LeaseNotFound(_))),
        "keep-alive of an expired lease: {keep_alive:?}"
    );
    let put = store.put(&key, b"x".to_vec(), Some(lease.id)).await;
    assert!(
        matches!(put, Err(StoreError::LeaseNotFound(_))),
        "put with an expired lease: {put:?}"
    );
    assert_eq!(store.get(&key).await.unwrap(), None, "the refused put must not land");
}

/// Keep-alives every 500 ms keep a lease's keys for well past its TTL.
pub async fn lease_keep_alive_keeps_keys(store: Arc<dyn Store>, ns: String) {
    let key = format!("{ns}/kept");
    let lease = store.lease_grant(TTL).await.unwrap();
    store.put(&key, b"x".to_vec(), Some(lease.id)).await.unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ttl = store
            .lease_keep_alive(lease.id)
            .await
            .unwrap_or_else(|e| panic!("keep-alive failed: {e}"));
        assert!(
            ttl > Duration::ZERO && ttl <= TTL + Duration::from_secs(1),
            "keep-alive returned TTL {ttl:?}"
        );
    }
    assert!(
        store.get(&key).await.unwrap().is_some(),
        "the key must survive 5 s of keep-alives on a {TTL:?} lease"
    );
    store.lease_revoke(lease.id).await.unwrap();
}

/// Revoking deletes the lease's keys at once, in one revision; the revoked lease is
/// then unknown.
pub async fn lease_revoke_deletes_keys_at_once(store: Arc<dyn Store>, ns: String) {
    let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    let keys: Vec<String> = (0..3).map(|i| format!("{ns}/l{i}")).collect();
    let mut last = 0;
    for key in &keys {
        last = store.put(key, b"x".to_vec(), Some(lease.id)).await.unwrap();
    }
    // Re-put without the lease: detached, must survive the revoke.
    let detached = format!("{ns}/detached");
    store.put(&detached, b"x".to_vec(), Some(lease.id)).await.unwrap();
    last = last.max(store.put(&detached, b"y".to_vec(), None).await.unwrap());
    assert_eq!(
        store.get(&detached).await.unwrap().unwrap().lease,
        None,
        "a put without lease detaches the key"
    );
    let mut watch = store.watch_prefix(&format!("{ns}/"), Some(last + 1)).await.unwrap();

    store.lease_revoke(lease.id).await.unwrap();
    for key in &keys {
        assert_eq!(
            store.get(key).await.unwrap(),
            None,
            "{key} must be gone as soon as revoke returns"
        );
    }
    assert!(store.get(&detached).await.unwrap().is_some(), "the detached key stays");
    let events = normalize(recv_events(&mut watch, keys.len()).await);
    let revision = events[0].revision();
    let deleted: Vec<&str> = events.iter().map(WatchEvent::key).collect();
    assert_eq!(
        deleted,
        keys.iter().map(String::as_str).collect::<Vec<_>>(),
        "one delete per key: {events:?}"
    );
    assert!(
        events
            .iter()
            .all(|e| matches!(e, WatchEvent::Delete { mod_revision, .. } if *mod_revision == revision)),
        "all keys deleted in one revision: {events:?}"
    );

    let keep_alive = store.lease_keep_alive(lease.id).await;
    assert!(
        matches!(keep_alive, Err(StoreError::LeaseNotFound(_))),
        "keep-alive of a revoked lease: {keep_alive:?}"
    );
    let put = store.put(&keys[0], b"x".to_vec(), Some(lease.id)).await;
    assert!(
        matches!(put, Err(StoreError::LeaseNotFound(_))),
        "put with a revoked lease: {put:?}"
    );
    let revoke = store.lease_revoke(lease.id).await;
    assert!(
        matches!(revoke, Err(StoreError::LeaseNotFound(_))),
        "revoking twice: {revoke:?}"
    );
    let in_txn = store
        .txn(Txn::new().and_then([TxnOp::put_with_lease(&keys[0], "x", lease.id)]))
        .await;
    assert!(
        matches!(in_txn, Err(StoreError::LeaseNotFound(_))),
        "txn put with a revoked lease: {in_txn:?}"
    );
    assert_eq!(store.get(&keys[0]).await.unwrap(), None);
}

/// A lease must live for some time.
pub async fn lease_zero_ttl_rejected(store: Arc<dyn Store>, _ns: String) {
    let grant = store.lease_grant(Duration::ZERO).await;
    assert!(
        matches!(grant, Err(StoreError::InvalidRequest(_))),
        "a zero TTL must be InvalidRequest, got {grant:?}"
    );
    let a = store.lease_grant(TTL).await.unwrap();
    let b = store.lease_grant(TTL).await.unwrap();
    assert_ne!(a.id, b.id, "lease ids are unique");
    assert!(a.ttl >= TTL, "granted TTL {:?} is shorter than asked", a.ttl);
    store.lease_revoke(a.id).await.unwrap();
    store.lease_revoke(b.id).await.unwrap();
}

/// health says healthy, with the backend kind and a current revision.
pub async fn health_reports_revision(store: Arc<dyn Store>, ns: String) {
    let revision = store.put(&format!("{ns}/h"), b"x".to_vec(), None).await.unwrap();
    let health = store.health().await;
    assert!(health.healthy, "the store must report healthy: {health:?}");
    assert_eq!(health.backend, store.backend());
    assert!(
        health.revision.is_some_and(|r| r >= revision),
        "health revision {:?} older than {revision}",
        health.revision
    );
    assert!(!health.endpoints.is_empty(), "health must name where the store is");
}

// ---------------------------------------------------------------------------------
// Compaction (exclusive: it discards store-wide history).
// ---------------------------------------------------------------------------------

/// After compacting to a revision, watches from before it fail with `Compacted`,
/// a watch from the compaction revision itself still works, and compacting to the
/// future is refused. Tolerates someone else having compacted further.
pub async fn compaction(store: Arc<dyn Store>, ns: String) {
    let key = format!("{ns}/c");
    let r1 = store.put(&key, b"1".to_vec(), None).await.unwrap();
    let r2 = store.put(&key, b"2".to_vec(), None).await.unwrap();
    let r3 = store.put(&key, b"3".to_vec(), None).await.unwrap();

    let mut compacted_beyond = false;
    match store.compact(r2).await {
        Ok(()) => {}
        Err(StoreError::Compacted { compact_revision, .. }) if compact_revision >= r2 => {
            compacted_beyond = compact_revision > r2
        }
        Err(e) => panic!("compact({r2}) failed: {e:?}"),
    }
    expect_compacted(store.watch_prefix(&key, Some(r1)).await, r1, r2).await;

    match store.watch_prefix(&key, Some(r2)).await {
        Ok(mut watch) => match next_item(&mut watch).await {
            Ok(first) => {
                let mut events = first;
                if events.len() < 2 {
                    events.extend(recv_events(&mut watch, 2 - events.len()).await);
                }
                assert_eq!(
                    events,
                    vec![
                        WatchEvent::Put(kv(&key, "2", r1, r2, 2)),
                        WatchEvent::Put(kv(&key, "3", r1, r3, 3))
                    ],
                    "a watch from the compaction revision {r2} replays from there"
                );
            }
            Err(StoreError::Compacted { compact_revision, .. }) if compact_revision > r2 => {}
            Err(e) => panic!("a watch from the compaction revision {r2} failed: {e:?}"),
        },
        Err(StoreError::Compacted { compact_revision, .. }) if compacted_beyond || compact_revision > r2 => {}
        Err(e) => panic!("a watch from the compaction revision {r2} failed: {e:?}"),
    }
    assert_eq!(
        store.get(&key).await.unwrap(),
        Some(kv(&key, "3", r1, r3, 3)),
        "compaction keeps current state"
    );

    let future = store.range(&ns).await.unwrap().revision + 1_000_000;
    let result = store.compact(future).await;
    assert!(
        matches!(result, Err(StoreError::InvalidRequest(_))),
        "compacting to a future revision: {result:?}"
    );
}

// ---------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------

fn kv(key: &str, value: &str, create_revision: Revision, mod_revision: Revision, version: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.as_bytes().to_vec(),
        create_revision,
        mod_revision,
        version,
        lease: None,
    }
}

/// The next batch's events, failing the case on error, end of stream or timeout.
async fn next_batch(watch: &mut WatchStream) -> Vec<WatchEvent> {
    next_item(watch).await.unwrap_or_else(|e| panic!("watch failed: {e:?}"))
}

async fn next_item(watch: &mut WatchStream) -> Result<Vec<WatchEvent>, StoreError> {
    match tokio::time::timeout(WAIT, watch.next()).await {
        Ok(Some(Ok(batch))) => {
            assert!(!batch.events.is_empty(), "a watch batch must not be empty");
            Ok(batch.events)
        }
        Ok(Some(Err(e))) => Err(e),
        Ok(None) => panic!("the watch stream ended"),
        Err(_) => panic!("no watch event within {WAIT:?}"),
    }
}

/// Receives at least `n` events (everything in the batches that bring them), checking
/// that revisions never go backwards.
async fn recv_events(watch: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut events: Vec<WatchEvent> = Vec::new();
    while events.len() < n {
        let batch = match tokio::time::timeout(WAIT, watch.next()).await {
            Ok(Some(Ok(batch))) => batch.events,
            Ok(Some(Err(e))) => panic!(
                "watch failed after {} of {n} events: {e:?}; got {events:?}",
                events.len()
            ),
            Ok(None) => panic!("watch ended after {} of {n} events: {events:?}", events.len()),
            Err(_) => panic!("only {} of {n} watch events within {WAIT:?}: {events:?}", events.len()),
        };
        assert!(!batch.is_empty(), "a watch batch must not be empty");
        events.extend(batch);
    }
    for pair in events.windows(2) {
        assert!(
            pair[0].revision() <= pair[1].revision(),
            "events out of revision order: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
    events
}

/// Orders events of one revision by key, so cases need not assume an order inside a
/// transaction.
fn normalize(mut events: Vec<WatchEvent>) -> Vec<WatchEvent> {
    events.sort_by(|a, b| (a.revision(), a.key()).cmp(&(b.revision(), b.key())));
    events
}

/// A watch from `requested` must fail with `Compacted`, at creation or as its first
/// item.
async fn expect_compacted(result: Result<WatchStream, StoreError>, requested: Revision, compacted_to: Revision) {
    let error = match result {
        Err(e) => e,
        Ok(mut watch) => match tokio::time::timeout(WAIT, watch.next()).await {
            Ok(Some(Err(e))) => e,
            Ok(other) => panic!("a watch from compacted revision {requested} must fail, got {other:?}"),
            Err(_) => {
                panic!("a watch from compacted revision {requested} neither failed nor delivered within {WAIT:?}")
            }
        },
    };
    match error {
        StoreError::Compacted {
            requested: r,
            compact_revision,
        } if r == requested && compact_revision >= compacted_to => {}
        other => panic!("a watch from {requested} after compaction to {compacted_to} must be Compacted, got {other:?}"),
    }
}

/// Polls `condition` every 100 ms until it holds, failing after [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
