//! Reconcile latency of the Anycast agent with the GoBGP backend (issue [9]): from a
//! plan that changes the prefix's state reaching the agent (the reconcile call) to the
//! change being visible in the upstream router's RIB (gobgpd B, read through its API
//! every 2 ms). Real daemons on loopback: speaker A (the agent's), router B, second
//! announcer C. Each trial flips fra1's announcement between plain and prepended ×3
//! (B's best path moves between A and C). Prints min / median / p99 (and max).
//!
//! `--backend bird` runs the same with BIRD 2 as speaker A (the agent's include file
//! and `birdc configure timeout` + `configure confirm` after the read-back).
//!
//!   cargo bench -p meridian-anycast-agent --bench reconcile [-- --trials 100 --backend gobgp|bird --json]

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use meridian_anycast_agent::backend::Backend;
use meridian_anycast_agent::core::{AnycastPlan, Route};
use meridian_anycast_agent::reconcile::Reconciler;
use meridian_dns_core::plan::{AnycastAction, AnycastSnapshot};

const P: &str = "198.51.100.0/24";

fn plan(version: u64, ours: AnycastAction, n: u32) -> AnycastPlan {
    let e = |pop: &str, action, prepend_count| AnycastSnapshot {
        pop: pop.into(),
        prefix: P.parse().unwrap(),
        action,
        prepend_count,
    };
    AnycastPlan {
        version,
        entries: vec![e("fra1", ours, n), e("ams1", AnycastAction::Announce, 0)],
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let trials: usize = args
        .iter()
        .position(|a| a == "--trials")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let json = args.iter().any(|a| a == "--json");
    let bird = args.windows(2).any(|w| w[0] == "--backend" && w[1] == "bird");
    let samples = if bird {
        let t = BirdTopology::start().await;
        t.t.c
            .backend("192.0.2.20")
            .announce(P.parse().unwrap(), Route::default())
            .await
            .unwrap();
        let agent = Reconciler::new("fra1", Arc::new(t.a.backend(Duration::from_secs(30))));
        let a_ip = t.t.a_ip.to_string();
        let router = &t.t;
        run(agent, trials, &a_ip, |p| async move { router.router_paths(p).await }).await
    } else {
        let t = Topology::start().await;
        t.c.backend("192.0.2.20")
            .announce(P.parse().unwrap(), Route::default())
            .await
            .unwrap();
        let agent = Reconciler::new("fra1", Arc::new(t.a.backend("192.0.2.10")));
        let a_ip = t.a_ip();
        let t = &t;
        run(agent, trials, &a_ip, |p| async move { t.router_paths(p).await }).await
    };
    report(samples, trials, if bird { "bird" } else { "gobgp" }, json);
}

/// Announces plainly, then flips prepend ×3 ↔ plain `trials` times, timing each
/// reconcile call until the router's RIB (read by `rib`) shows it.
async fn run<B, F, Fut>(mut agent: Reconciler<B>, trials: usize, a_ip: &str, rib: F) -> Vec<Duration>
where
    B: Backend,
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<meridian_anycast_agent::gobgp::RibPath>, String>>,
{
    agent.reconcile(Some(&plan(1, AnycastAction::Announce, 0))).await;
    let start = Instant::now();
    loop {
        let paths = rib(P).await.unwrap_or_default();
        if from(&paths, a_ip).is_some() {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "A's plain path never reached B");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut samples = Vec::with_capacity(trials);
    for i in 0..trials {
        let version = i as u64 + 2;
        // Odd trials: prepended ×3 (AS path of 4); even: plain (1).
        let (action, n, want_len) = if i % 2 == 0 {
            (AnycastAction::Prepend, 3, 4)
        } else {
            (AnycastAction::Announce, 0, 1)
        };
        let start = Instant::now();
        let out = agent.reconcile(Some(&plan(version, action, n))).await;
        assert!(out.applied, "trial {i}: {out:?}");
        loop {
            let paths = rib(P).await.unwrap();
            if from(&paths, a_ip).is_some_and(|p| p.as_path.len() == want_len) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "trial {i}: B never saw it: {paths:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(start.elapsed());
    }
    samples
}

fn report(mut samples: Vec<Duration>, trials: usize, backend: &str, json: bool) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    let (min, median, p99, max) = (
        ms(samples[0]),
        ms(pick(0.5)),
        ms(pick(0.99)),
        ms(samples[samples.len() - 1]),
    );
    if json {
        println!(
            "{{\"trials\":{trials},\"backend\":\"{backend}\",\"min_ms\":{min:.2},\"median_ms\":{median:.2},\"p99_ms\":{p99:.2},\"max_ms\":{max:.2}}}"
        );
    } else {
        let goal = if backend == "bird" { "1 s" } else { "100 ms" };
        println!("anycast reconcile → upstream RIB ({backend}, {trials} trials, prepend ×3 ↔ plain):");
        println!("  min {min:.1} ms, median {median:.1} ms, p99 {p99:.1} ms, max {max:.1} ms (goal p99 ≤ {goal})");
    }
}
