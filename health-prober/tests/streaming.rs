//! Streaming with no silent loss: every replica gets every result; a replica that
//! was down receives what was buffered for it, with the original timestamps; an
//! overflowing buffer counts its drops.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_was_down_receives_everything_buffered_meanwhile() {
    let a = FakeReplica::start(ReplicaState::new(), 0);
    let mut b = FakeReplica::start(ReplicaState::new(), 0);
    let b_port = b.addr.port();
    let (t1, _t1) = tcp_target_on(0).await;
    let (t2, _t2) = tcp_target_on(0).await;
    let set = assignments(1, vec![target("fra1", "one", tcp(t1)), target("ams1", "two", tcp(t2))]);
    a.state.assign(set.clone());
    b.state.assign(set);
    let mut prober = RunningProber::start(prober_config(vec![a.endpoint(), b.endpoint()]));
    let (sa, sb) = (a.state.clone(), b.state.clone());
    wait_for("both replicas receiving", || {
        (sa.results().len() >= 3 && sb.results().len() >= 3).then_some(())
    })
    .await;

    // b stops processing (sent batches stay unacknowledged), then dies.
    sb.acking.store(false, std::sync::atomic::Ordering::SeqCst);
    let stopped_at = SystemTime::now();
    let p = prober.prober.clone();
    wait_for("unacknowledged batches in flight to b", || {
        (p.stats().replicas[1].buffered >= 4).then_some(())
    })
    .await;
    b.stop();
    sb.acking.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for("replica a to keep receiving while b is down", || {
        (sa.results().iter().filter(|r| r.observed_at() > stopped_at).count() >= 10).then_some(())
    })
    .await;
    wait_for("the prober to notice b is down", || {
        (!p.stats().replicas[1].connected).then_some(())
    })
    .await;
    assert!(p.stats().replicas[1].buffered > 0);

    let restarted_at = SystemTime::now();
    let b2 = FakeReplica::start(sb.clone(), b_port);
    let produced_while_down: BTreeSet<_> = sa
        .results()
        .iter()
        .filter(|r| r.observed_at() > stopped_at && r.observed_at() < restarted_at)
        .map(Received::id)
        .collect();
    assert!(produced_while_down.len() >= 10);
    wait_for("b to receive every result produced while it was down", || {
        let got: BTreeSet<_> = sb.results().iter().map(Received::id).collect();
        produced_while_down.is_subset(&got).then_some(())
    })
    .await;
    // They arrived after the restart, with their original timestamps.
    let late: Vec<Received> = sb
        .results()
        .into_iter()
        .filter(|r| r.arrived >= restarted_at && r.observed_at() < restarted_at)
        .collect();
    assert!(
        late.len() >= produced_while_down.len(),
        "{} late of {}",
        late.len(),
        produced_while_down.len()
    );

    prober.stop().await;
    let all_a: BTreeSet<_> = sa.results().iter().map(Received::id).collect();
    let all_b: BTreeSet<_> = sb.results().iter().map(Received::id).collect();
    assert_eq!(all_a, all_b, "both replicas end with the same results");
    let stats = prober.prober.stats();
    for r in &stats.replicas {
        assert_eq!(r.dropped, 0, "{r:?}");
        assert_eq!(r.buffered, 0, "{r:?}");
    }
    assert!(stats.replicas[1].reconnects >= 1, "{stats:?}");
    drop(b2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_buffer_drops_the_oldest_and_counts_without_touching_the_other_replica() {
    let a = FakeReplica::start(ReplicaState::new(), 0);
    // A replica address where nothing listens.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (t, _t) = tcp_target_on(0).await;
    a.state.assign(assignments(1, vec![target("fra1", "one", tcp(t))]));
    let mut config = prober_config(vec![a.endpoint(), format!("http://{dead}")]);
    config.buffer_limit = 3;
    config.shutdown_grace = Duration::from_millis(500);
    let mut prober = RunningProber::start(config);
    let mut ready = prober.prober.readiness();
    tokio::time::timeout(DEADLINE, ready.wait_for(|r| r.is_ok()))
        .await
        .expect("ready with one replica up")
        .unwrap();
    let p = prober.prober.clone();
    let stats = wait_for("drops on the dead replica", || {
        let s = p.stats();
        (s.replicas[1].dropped >= 3).then_some(s)
    })
    .await;
    assert_eq!(stats.replicas[1].buffered, 3, "{stats:?}");
    assert_eq!(stats.replicas[0].dropped, 0, "{stats:?}");
    assert!(!stats.replicas[1].connected);
    let sa = a.state.clone();
    wait_for("the live replica to keep receiving", || {
        (sa.results().len() as u64 >= stats.replicas[1].dropped + 3).then_some(())
    })
    .await;
    // Shutdown is bounded even though the dead replica never takes its buffer.
    let stopping = std::time::Instant::now();
    prober.stop().await;
    assert!(stopping.elapsed() < DEADLINE);
    assert_eq!(
        prober.prober.stats().replicas[1].buffered,
        3,
        "what could not be delivered is still counted"
    );
}
