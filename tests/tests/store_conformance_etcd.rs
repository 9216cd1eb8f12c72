//! The store conformance suite against real etcd: a single member, and a
//! three-member cluster that loses members while a writer and a watcher run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use meridian_store::conformance;
use meridian_store::etcd::{EtcdConfig, EtcdStore};
use meridian_store::{Compare, Revision, Store, StoreError, Txn, TxnOp, TxnOpResponse, WatchEvent, WatchStream};
use meridian_tests::etcd::EtcdCluster;
use meridian_tests::util::wait_for;
use tokio::task::JoinHandle;

/// The three-member tests run one at a time: six etcd members fsyncing on two shared
/// cores would measure the machine, not the client.
static THREE_MEMBER_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(cluster: &EtcdCluster) -> EtcdConfig {
    let mut config = EtcdConfig::from_endpoints_str(&cluster.endpoints_csv()).unwrap();
    config.connect_timeout = Duration::from_secs(5);
    config.request_timeout = Duration::from_secs(3);
    config
}

async fn connect(cluster: &EtcdCluster) -> Arc<EtcdStore> {
    Arc::new(EtcdStore::connect(config(cluster)).await.expect("connect to etcd"))
}

/// The next batch of a watch, within a generous deadline.
async fn next_events(watch: &mut WatchStream) -> Result<Vec<WatchEvent>, StoreError> {
    match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
        Ok(Some(batch)) => batch.map(|b| b.events),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within 10 s"),
    }
}

/// What the shared conformance suite leaves open and the etcd backend pins down:
/// errors carry the lease id, compaction is idempotent, a compacted watch ends.
async fn etcd_specifics(store: &dyn Store, prefix: &str) {
    let key = |k: &str| format!("{prefix}{k}");

    let lease = store.lease_grant(Duration::from_millis(2500)).await.unwrap();
    assert_eq!(lease.ttl, Duration::from_secs(3), "TTLs round up to whole seconds");
    store.put(&key("leased"), b"l".to_vec(), Some(lease.id)).await.unwrap();
    assert_eq!(store.get(&key("leased")).await.unwrap().unwrap().lease, Some(lease.id));
    let ttl = store.lease_keep_alive(lease.id).await.unwrap();
    assert!(ttl > Duration::ZERO && ttl <= Duration::from_secs(3), "{ttl:?}");
    store.lease_revoke(lease.id).await.unwrap();
    let not_found = |r: Result<(), StoreError>| matches!(r, Err(StoreError::LeaseNotFound(id)) if id == lease.id);
    assert!(not_found(store.lease_keep_alive(lease.id).await.map(|_| ())));
    assert!(not_found(store.lease_revoke(lease.id).await));
    assert!(not_found(
        store
            .put(&key("orphan"), b"o".to_vec(), Some(lease.id))
            .await
            .map(|_| ())
    ));
    let txn = Txn::new()
        .when([Compare::absent(key("orphan"))])
        .and_then([TxnOp::put_with_lease(key("orphan"), "o", lease.id)]);
    assert!(not_found(store.txn(txn).await.map(|_| ())));

    let read_only = store
        .txn(Txn::new().and_then([TxnOp::get(key("missing"))]))
        .await
        .unwrap();
    assert_eq!(read_only.responses, vec![TxnOpResponse::Get(None)]);

    let old = store.put(&key("c"), b"1".to_vec(), None).await.unwrap();
    let now = store.put(&key("c"), b"2".to_vec(), None).await.unwrap();
    store.compact(now).await.unwrap();
    store
        .compact(now)
        .await
        .expect("compacting again to the same revision is a no-op");
    let mut watch = store.watch_prefix(&key("c"), Some(old)).await.unwrap();
    match next_events(&mut watch).await {
        Err(StoreError::Compacted {
            requested,
            compact_revision,
        }) => {
            assert_eq!(requested, old);
            assert!(compact_revision >= now, "{compact_revision} < {now}");
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    let end = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap();
    assert!(end.is_none(), "the watch ends after Compacted");

    let health = store.health().await;
    assert!(health.healthy, "{health:?}");
    assert!(health.revision.unwrap() >= now);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_member_conformance() {
    let cluster = EtcdCluster::start(1).await;
    let store = connect(&cluster).await;
    let started = Instant::now();
    conformance::run_all(store.clone(), "/conformance").await;
    eprintln!("conformance cases against 1 member took {:?}", started.elapsed());
    etcd_specifics(store.as_ref(), "/etcd-specifics/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoints_fail_after_connect_timeout() {
    let port = meridian_tests::util::free_port();
    let mut config = EtcdConfig::from_endpoints_str(&format!("http://127.0.0.1:{port}")).unwrap();
    config.connect_timeout = Duration::from_secs(1);
    let started = Instant::now();
    match EtcdStore::connect(config).await {
        Err(StoreError::Unavailable { endpoints, .. }) => assert!(endpoints.contains(&port.to_string()), "{endpoints}"),
        other => panic!("expected Unavailable, got {:?}", other.map(|_| ())),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "connect took {:?}",
        started.elapsed()
    );
}

/// What a watcher saw: (revision, key) of each event, or why it failed.
type Seen = Result<Vec<(Revision, String)>, String>;

/// What the writer did.
#[derive(Default)]
struct Written {
    /// (revision, key) of every acknowledged put, in order.
    acked: Vec<(Revision, String)>,
    errors: Vec<String>,
}

/// Puts `{prefix}{n}` every 10 ms until `stop`.
fn spawn_writer(store: Arc<EtcdStore>, prefix: &'static str, stop: Arc<AtomicBool>) -> JoinHandle<Written> {
    tokio::spawn(async move {
        let mut written = Written::default();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("{prefix}{i:06}");
            match store.put(&key, i.to_string().into_bytes(), None).await {
                Ok(revision) => written.acked.push((revision, key)),
                Err(e) => written.errors.push(format!("put {key}: {e:?}")),
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        written
    })
}

/// Collects (revision, key) of every event until `done_key` shows up.
fn spawn_watcher(mut watch: WatchStream, done_key: String) -> JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(batch) = watch.next().await {
            match batch {
                Ok(batch) => {
                    for event in batch.events {
                        let done = event.key() == done_key;
                        seen.push((event.revision(), event.key().to_owned()));
                        if done {
                            return Ok(seen);
                        }
                    }
                }
                Err(e) => return Err(format!("watch failed after {} events: {e:?}", seen.len())),
            }
        }
        Err(format!("watch ended after {} events", seen.len()))
    })
}

/// Stops the writer, writes `done_key`, and checks that every write succeeded and
/// that each watcher saw every acknowledged write exactly once, in order.
async fn finish_and_check(
    store: &EtcdStore,
    stop: &AtomicBool,
    writer: JoinHandle<Written>,
    watchers: Vec<JoinHandle<Seen>>,
    done_key: &str,
) {
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    let done = store.put(done_key, b"".to_vec(), None).await.unwrap();
    assert!(written.errors.is_empty(), "puts failed: {:#?}", written.errors);
    assert!(
        written.acked.len() > 20,
        "the writer made too little progress: {}",
        written.acked.len()
    );
    let acked_set: HashSet<&(Revision, String)> = written.acked.iter().collect();
    let written_keys: HashSet<&str> = written.acked.iter().map(|(_, k)| k.as_str()).collect();
    for (index, watcher) in watchers.into_iter().enumerate() {
        let seen = tokio::time::timeout(Duration::from_secs(20), watcher)
            .await
            .expect("watcher finished")
            .unwrap();
        let seen = seen.unwrap_or_else(|e| panic!("watcher {index}: {e}"));
        eprintln!(
            "watcher {index}: {} events up to revision {done} for {} acknowledged puts",
            seen.len(),
            written.acked.len()
        );
        // In order, each revision once.
        assert!(
            seen.windows(2).all(|w| w[0].0 < w[1].0),
            "watcher {index}: revisions not strictly increasing"
        );
        // Every acknowledged write, seen.
        let seen_set: HashSet<&(Revision, String)> = seen.iter().collect();
        let missing: Vec<_> = written.acked.iter().filter(|w| !seen_set.contains(w)).collect();
        assert!(
            missing.is_empty(),
            "watcher {index} missed {} writes, first {:?}",
            missing.len(),
            missing.first()
        );
        // Nothing else, except a put applied twice because a retry followed an
        // ambiguous failure (its key is one the writer wrote).
        let extra: Vec<_> = seen
            .iter()
            .filter(|s| !acked_set.contains(s) && s.1 != done_key)
            .collect();
        assert!(
            extra.iter().all(|(_, k)| written_keys.contains(k.as_str())),
            "writes nobody made: {extra:?}"
        );
        if !extra.is_empty() {
            eprintln!("note: {} puts were applied twice after ambiguous failures", extra.len());
        }
    }
}

/// Waits until every configured endpoint answers with a leader.
async fn wait_all_healthy(store: &Arc<EtcdStore>) {
    wait_for(
        "the store to report every member healthy",
        Duration::from_secs(20),
        || {
            let store = store.clone();
            async move {
                let health = store.health().await;
                (health.healthy && !health.detail.contains("failed")).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_across_rolling_restart() {
    let _serial = THREE_MEMBER_TESTS.lock().await;
    let started = Instant::now();
    let mut cluster = EtcdCluster::start(3).await;
    let store = connect(&cluster).await;
    let stop = Arc::new(AtomicBool::new(false));
    let watch = store.watch_prefix("/rolling/", None).await.unwrap();
    let watcher = spawn_watcher(watch, "/rolling/done".into());
    let writer = spawn_writer(store.clone(), "/rolling/", stop.clone());
    // Every member goes down once, so the watch's member surely does.
    for member in 0..cluster.member_count() {
        tokio::time::sleep(Duration::from_millis(700)).await;
        eprintln!("rolling: killing m{member} at {:?}", started.elapsed());
        cluster.kill(member).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.restart(member).await;
        wait_all_healthy(&store).await;
    }
    finish_and_check(&store, &stop, writer, vec![watcher], "/rolling/done").await;
    eprintln!("rolling restart done at {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_survive_member_loss() {
    let _serial = THREE_MEMBER_TESTS.lock().await;
    let started = Instant::now();
    let mut cluster = EtcdCluster::start(3).await;
    let store = connect(&cluster).await;
    eprintln!("3-member cluster up after {:?}", started.elapsed());

    // A lease kept alive through everything, with a key on it.
    let kept = store.lease_grant(Duration::from_secs(5)).await.unwrap();
    store
        .put("/chaos-lease/kept", b"alive".to_vec(), Some(kept.id))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let keeper = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = store.lease_keep_alive(kept.id).await {
                    failures.push(format!("{e:?}"));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            failures
        })
    };

    // Watchers from now on (several, so some sit on the members that die), and a
    // writer putting every 10 ms.
    let prefix = "/chaos/";
    let mut watchers = Vec::new();
    for _ in 0..3 {
        watchers.push(spawn_watcher(
            store.watch_prefix(prefix, None).await.unwrap(),
            "/chaos/done".into(),
        ));
    }
    let writer = spawn_writer(store.clone(), prefix, stop.clone());

    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (0..3).find(|&i| i != leader).unwrap();
    eprintln!("killing follower m{follower} at {:?}", started.elapsed());
    cluster.kill(follower).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    eprintln!("restarting m{follower} at {:?}", started.elapsed());
    cluster.restart(follower).await;
    wait_all_healthy(&store).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let leader = cluster.wait_for_leader().await;
    eprintln!("killing leader m{leader} at {:?}", started.elapsed());
    cluster.kill(leader).await;
    let new_leader = cluster.wait_for_leader().await;
    eprintln!("m{new_leader} leads at {:?}", started.elapsed());
    assert_ne!(new_leader, leader);

    // Leases work with the old leader gone.
    let fresh = store.lease_grant(Duration::from_secs(10)).await.unwrap();
    store
        .put("/chaos-lease/fresh", b"f".to_vec(), Some(fresh.id))
        .await
        .unwrap();
    assert!(store.lease_keep_alive(fresh.id).await.unwrap() > Duration::ZERO);
    store.lease_revoke(fresh.id).await.unwrap();
    assert_eq!(store.get("/chaos-lease/fresh").await.unwrap(), None);

    tokio::time::sleep(Duration::from_secs(2)).await;
    finish_and_check(&store, &stop, writer, watchers, "/chaos/done").await;
    stop.store(true, Ordering::Relaxed);
    let keepalive_failures = keeper.await.unwrap();
    eprintln!(
        "{} keep-alive failures; at {:?}",
        keepalive_failures.len(),
        started.elapsed()
    );

    // The kept lease survived; keep-alives may have failed transiently, but not for
    // as long as its TTL.
    let kv = store
        .get("/chaos-lease/kept")
        .await
        .unwrap()
        .expect("the kept lease's key survived");
    assert_eq!(kv.lease, Some(kept.id));
    assert!(
        store.lease_keep_alive(kept.id).await.is_ok(),
        "kept lease lost; keep-alive failures: {keepalive_failures:#?}"
    );

    // With one member of three down the store is still healthy and says which failed.
    let health = store.health().await;
    assert!(health.healthy, "{health:?}");
    assert!(
        health.detail.contains(&cluster.endpoints()[leader]),
        "{}",
        health.detail
    );

    conformance::run_all(store.clone(), "/after-loss").await;
    eprintln!("done at {:?}", started.elapsed());
}
