//! The agent's reconciler driving a real BIRD 2 (speaker A) through the BIRD backend
//! (generated include file, `configure timeout`, read back, `configure confirm`),
//! peered with a real gobgpd router B (RFC 8326 import policy) that also hears a
//! second announcer C. Every claim is read from B's RIB.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use meridian_anycast_agent::backend::Backend;
use meridian_anycast_agent::bird::BirdBackend;
use meridian_anycast_agent::core::{Announced, AnycastPlan, Route, GRACEFUL_SHUTDOWN};
use meridian_anycast_agent::gobgp::RibPath;
use meridian_anycast_agent::reconcile::Reconciler;
use meridian_dns_core::plan::{AnycastAction, AnycastSnapshot};

const P: &str = "198.51.100.0/24";

fn plan(version: u64, ours: AnycastAction, n: u32, theirs: AnycastAction) -> AnycastPlan {
    let e = |pop: &str, action, prepend_count| AnycastSnapshot {
        pop: pop.into(),
        prefix: P.parse().unwrap(),
        action,
        prepend_count,
    };
    AnycastPlan {
        version,
        entries: vec![e("fra1", ours, n), e("ams1", theirs, 0)],
    }
}

fn a_path(a_ip: String, as_len: usize, gshut: bool, best_from: String) -> impl Fn(&[RibPath]) -> Result<(), String> {
    move |paths| {
        let p = from(paths, &a_ip).ok_or("no path from A")?;
        if p.as_path.len() != as_len || p.as_path.iter().any(|n| *n != AS_A) {
            return Err(format!("A's AS path is {:?}, want {as_len} × {AS_A}", p.as_path));
        }
        if p.communities.contains(&GRACEFUL_SHUTDOWN) != gshut {
            return Err(format!(
                "A's communities are {:?}, GSHUT wanted: {gshut}",
                p.communities
            ));
        }
        if p.next_hop != "192.0.2.10" {
            return Err(format!("A's next hop is {}", p.next_hop));
        }
        match best(paths) {
            Some(b) if b == best_from => Ok(()),
            other => Err(format!("best path from {other:?}, want {best_from}")),
        }
    }
}

fn no_path_from(ip: String) -> impl Fn(&[RibPath]) -> Result<(), String> {
    move |paths| match from(paths, &ip) {
        Some(p) => Err(format!("a path from {ip} is still there: {p:?}")),
        None => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bird_follows_each_rung_and_the_last_announcer_rule_holds() {
    let topo = BirdTopology::start().await;
    let t = &topo.t;
    let (a_ip, c_ip) = (t.a_ip.to_string(), t.c.ip.to_string());
    t.c.announce_incomplete(P, "192.0.2.20").await;
    let mut a = Reconciler::new("fra1", Arc::new(topo.a.backend(Duration::from_secs(30))));
    use AnycastAction::*;

    let out = a.reconcile(None).await;
    assert!(!out.changed);
    let out = a.reconcile(Some(&plan(1, Announce, 0, Announce))).await;
    assert!(out.applied && out.changed, "{out:?}");
    t.wait_router("A's plain path, best", P, a_path(a_ip.clone(), 1, false, a_ip.clone()))
        .await;
    let out = a.reconcile(Some(&plan(2, Prepend, 1, Announce))).await;
    assert!(out.applied, "{out:?}");
    t.wait_router("A ×1, C best", P, a_path(a_ip.clone(), 2, false, c_ip.clone()))
        .await;
    a.reconcile(Some(&plan(3, Prepend, 3, Announce))).await;
    t.wait_router("A ×3, C best", P, a_path(a_ip.clone(), 4, false, c_ip.clone()))
        .await;
    a.reconcile(Some(&plan(4, GracefulShutdown, 3, Announce))).await;
    t.wait_router("A GSHUT, C best", P, a_path(a_ip.clone(), 4, true, c_ip.clone()))
        .await;
    a.reconcile(Some(&plan(5, Withdraw, 0, Announce))).await;
    t.wait_router("A withdrawn", P, no_path_from(a_ip.clone())).await;
    a.reconcile(Some(&plan(6, Announce, 0, Announce))).await;
    t.wait_router(
        "rollback: A plain and best",
        P,
        a_path(a_ip.clone(), 1, false, a_ip.clone()),
    )
    .await;
    // Every push was confirmed: nothing is left for BIRD to undo.
    let conf = std::fs::read_to_string(&topo.a.include_file).unwrap();
    assert!(conf.contains("route 198.51.100.0/24 blackhole;"), "{conf}");

    // C leaves the plan: withdrawing the last announcer is refused.
    let out = a.reconcile(Some(&plan(7, Withdraw, 0, Withdraw))).await;
    assert!(!out.changed && out.report.unwrap()[0].detail.contains("last announcer"));
    a_path(a_ip.clone(), 1, false, a_ip.clone())(&t.router_paths(P).await.unwrap()).unwrap();

    // Drift by hand: the file emptied and BIRD reconfigured; the next reconcile puts
    // the route back and counts it.
    std::fs::write(
        &topo.a.include_file,
        "protocol static meridian_anycast {\n  ipv4;\n}\nprotocol static meridian_anycast6 {\n  ipv6;\n}\n",
    )
    .unwrap();
    let out = topo.a.birdc(&["configure"]);
    assert!(out.contains("Reconfigured"), "{out}");
    t.wait_router("A's route gone after the hand edit", P, no_path_from(a_ip.clone()))
        .await;
    let out = a.reconcile(Some(&plan(7, Withdraw, 0, Withdraw))).await;
    assert_eq!(out.drift_corrections, 1, "{out:?}");
    t.wait_router("A's route back", P, a_path(a_ip.clone(), 1, false, a_ip.clone()))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_never_confirmed_is_undone_by_bird_itself() {
    let topo = BirdTopology::start().await;
    let t = &topo.t;
    let a_ip = t.a_ip.to_string();
    let backend: BirdBackend = topo.a.backend(Duration::from_secs(2));
    let prefix: ipnet::IpNet = P.parse().unwrap();
    backend.announce(prefix, Route::default()).await.unwrap();
    t.wait_router("A's confirmed route", P, a_path(a_ip.clone(), 1, false, a_ip.clone()))
        .await;

    // A bad push (a withdraw of everything) whose agent dies before confirming.
    backend.push(&Announced::new(), false).await.unwrap();
    t.wait_router("the unconfirmed push in effect", P, no_path_from(a_ip.clone()))
        .await;
    // BIRD undoes it when the 2 s timeout runs out: the route comes back unchanged.
    t.wait_router("BIRD's own undo", P, a_path(a_ip.clone(), 1, false, a_ip.clone()))
        .await;
    assert_eq!(
        backend.read().await.unwrap().get(&prefix),
        Some(&Route::default()),
        "BIRD runs the confirmed configuration again"
    );

    // A push that cannot verify (a syntax error in the generated file is impossible,
    // so: BIRD refuses the file outright) leaves the previous file in place.
    let good = std::fs::read_to_string(&topo.a.include_file).unwrap();
    let bad = BirdBackend::new(meridian_anycast_agent::bird::BirdSettings {
        protocol: "not a name".into(),
        ..settings_of(&topo.a)
    });
    let err = bad
        .push(&[(prefix, Route::default())].into_iter().collect(), true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("syntax error"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&topo.a.include_file).unwrap(),
        good,
        "previous file back"
    );
    a_path(a_ip.clone(), 1, false, a_ip)(&t.router_paths(P).await.unwrap()).unwrap();
}

fn settings_of(bird: &Bird) -> meridian_anycast_agent::bird::BirdSettings {
    meridian_anycast_agent::bird::BirdSettings {
        birdc: require_tool("birdc", "bird2"),
        socket: bird.socket.clone(),
        include_file: bird.include_file.clone(),
        protocol: "meridian_anycast".into(),
        local_as: AS_A,
        configure_timeout: Duration::from_secs(2),
        verify_within: Duration::from_secs(10),
    }
}
