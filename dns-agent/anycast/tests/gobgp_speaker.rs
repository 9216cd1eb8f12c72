//! The agent's reconciler driving a real gobgpd (speaker A), peered with a real
//! upstream router B (gobgpd with an RFC 8326 import policy: GRACEFUL_SHUTDOWN →
//! local preference 1, as GoBGP cannot set 0) that also hears a second announcer C (another PoP) of the
//! same prefix. Every claim is read from B's RIB through its API: the AS path, the
//! communities and which path is best.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use meridian_anycast_agent::backend::Backend;
use meridian_anycast_agent::core::{AnycastPlan, Route, GRACEFUL_SHUTDOWN};
use meridian_anycast_agent::gobgp::GobgpBackend;
use meridian_anycast_agent::reconcile::Reconciler;
use meridian_dns_core::plan::{AnycastAction, AnycastSnapshot};

const P: &str = "198.51.100.0/24";
const NEXT_HOP_A: &str = "192.0.2.10";
const NEXT_HOP_C: &str = "192.0.2.20";

/// A plan where fra1 (A) does `ours` ×`n` and ams1 (C) does `theirs`.
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

fn agent(t: &Topology) -> Reconciler<GobgpBackend> {
    Reconciler::new("fra1", Arc::new(t.a.backend(NEXT_HOP_A)))
}

/// Checks that A's path at B has `as_len` ASes, carries GSHUT or not, and that the
/// best path comes from `best_from`.
fn a_path(
    t: &Topology,
    as_len: usize,
    gshut: bool,
    best_from: &str,
) -> impl Fn(&[meridian_anycast_agent::gobgp::RibPath]) -> Result<(), String> {
    let (a, best_ip) = (t.a_ip(), best_from.to_string());
    move |paths| {
        let p = from(paths, &a).ok_or("no path from A")?;
        if p.as_path.len() != as_len || p.as_path.iter().any(|n| *n != AS_A) {
            return Err(format!("A's AS path is {:?}, want {as_len} × {AS_A}", p.as_path));
        }
        if p.communities.contains(&GRACEFUL_SHUTDOWN) != gshut {
            return Err(format!(
                "A's communities are {:?}, GSHUT wanted: {gshut}",
                p.communities
            ));
        }
        if p.next_hop != NEXT_HOP_A {
            return Err(format!("A's next hop is {}", p.next_hop));
        }
        match best(paths) {
            Some(b) if b == best_ip => Ok(()),
            other => Err(format!("best path from {other:?}, want {best_ip}")),
        }
    }
}

fn no_path_from(ip: String) -> impl Fn(&[meridian_anycast_agent::gobgp::RibPath]) -> Result<(), String> {
    move |paths| match from(paths, &ip) {
        Some(p) => Err(format!("a path from {ip} is still there: {p:?}")),
        None => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_rung_of_a_drain_ladder_moves_the_routers_best_path_and_rollback_restores_it() {
    let t = Topology::start().await;
    t.c.announce_incomplete(P, NEXT_HOP_C).await;
    t.wait_router("C's path at B", P, |p| {
        from(p, &t.c_ip()).map(|_| ()).ok_or("no path from C".into())
    })
    .await;
    let mut a = agent(&t);
    let (c_ip, a_ip) = (t.c_ip(), t.a_ip());

    // Before the first plan the agent announces nothing.
    let out = a.reconcile(None).await;
    assert!(!out.changed && out.report.is_none());
    assert!(
        a.backend().list().await.unwrap().is_empty(),
        "speaker A announces nothing"
    );

    use AnycastAction::*;
    // Plain announce: equal AS paths, A wins on origin (C's is INCOMPLETE).
    let out = a.reconcile(Some(&plan(1, Announce, 0, Announce))).await;
    assert!(out.applied && out.changed, "{out:?}");
    t.wait_router("A's plain path best at B", P, a_path(&t, 1, false, &a_ip))
        .await;
    // Prepend ×1 and ×3: A's AS path grows and B prefers C.
    a.reconcile(Some(&plan(2, Prepend, 1, Announce))).await;
    t.wait_router("A prepended ×1, C best", P, a_path(&t, 2, false, &c_ip))
        .await;
    a.reconcile(Some(&plan(3, Prepend, 3, Announce))).await;
    t.wait_router("A prepended ×3, C best", P, a_path(&t, 4, false, &c_ip))
        .await;
    // GRACEFUL_SHUTDOWN (kept with the prepends): 65535:0 reaches B.
    let out = a.reconcile(Some(&plan(4, GracefulShutdown, 3, Announce))).await;
    assert!(out.applied, "{out:?}");
    t.wait_router("A under GSHUT, C best", P, a_path(&t, 4, true, &c_ip))
        .await;
    // Withdraw: A's path leaves B.
    let out = a.reconcile(Some(&plan(5, Withdraw, 0, Announce))).await;
    let report = out.report.unwrap();
    assert_eq!((report[0].actual, report[0].detail.as_str()), (Withdraw, ""));
    t.wait_router("A's path withdrawn", P, no_path_from(a_ip.clone())).await;
    // Rollback: the plain announcement again, best again.
    a.reconcile(Some(&plan(6, Announce, 0, Announce))).await;
    t.wait_router("A's plain path back and best", P, a_path(&t, 1, false, &a_ip))
        .await;
    // A dead PoP is withdrawn in one step from any rung.
    a.reconcile(Some(&plan(7, Prepend, 3, Announce))).await;
    t.wait_router("A prepended ×3", P, a_path(&t, 4, false, &c_ip)).await;
    a.reconcile(Some(&plan(8, Withdraw, 0, Announce))).await;
    t.wait_router("A withdrawn in one step", P, no_path_from(a_ip.clone()))
        .await;
    // Shutdown with withdraw_on_shutdown: withdrawn, since C announces.
    a.reconcile(Some(&plan(9, Announce, 0, Announce))).await;
    t.wait_router("A back", P, a_path(&t, 1, false, &a_ip)).await;
    let out = a.withdraw_for_shutdown(Some(&plan(9, Announce, 0, Announce))).await;
    assert!(out.changed);
    t.wait_router("A withdrawn at shutdown", P, no_path_from(a_ip)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_alone_moves_the_best_path_through_the_routers_policy() {
    let t = Topology::start().await;
    // C's path is longer (one prepend), so only local preference can make it win.
    t.c.backend(NEXT_HOP_C)
        .announce(
            P.parse().unwrap(),
            Route {
                prepends: 1,
                graceful_shutdown: false,
            },
        )
        .await
        .unwrap();
    let mut a = agent(&t);
    let (c_ip, a_ip) = (t.c_ip(), t.a_ip());
    a.reconcile(Some(&plan(1, AnycastAction::Announce, 0, AnycastAction::Announce)))
        .await;
    t.wait_router("A best on the shorter AS path", P, |paths| {
        from(paths, &c_ip).ok_or("no path from C")?;
        a_path(&t, 1, false, &a_ip)(paths)
    })
    .await;
    a.reconcile(Some(&plan(
        2,
        AnycastAction::GracefulShutdown,
        0,
        AnycastAction::Announce,
    )))
    .await;
    t.wait_router(
        "C best once A carries 65535:0 (RFC 8326: local-pref 1)",
        P,
        a_path(&t, 1, true, &c_ip),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_announcer_keeps_its_route_and_drift_made_by_hand_is_corrected() {
    let t = Topology::start().await;
    let mut a = agent(&t);
    let a_ip = t.a_ip();
    use AnycastAction::*;
    a.reconcile(Some(&plan(1, Announce, 0, Announce))).await;
    t.wait_router("A's path at B", P, a_path(&t, 1, false, &a_ip)).await;

    // C leaves the plan (withdrawn there): A is the last announcer. A withdraw and
    // a graceful shutdown are both refused, and the route stays as it was.
    let out = a.reconcile(Some(&plan(2, Withdraw, 0, Withdraw))).await;
    assert!(out.applied && !out.changed, "{out:?}");
    let report = out.report.unwrap();
    assert_eq!((report[0].desired, report[0].actual), (Withdraw, Announce));
    assert!(report[0].detail.contains("last announcer"), "{}", report[0].detail);
    let out = a.reconcile(Some(&plan(3, GracefulShutdown, 0, Withdraw))).await;
    assert!(!out.changed);
    assert!(out.report.unwrap()[0].detail.starts_with("graceful shutdown refused"));
    let out = a
        .withdraw_for_shutdown(Some(&plan(3, GracefulShutdown, 0, Withdraw)))
        .await;
    assert!(!out.changed, "not even at shutdown");
    let paths = t.router_paths(P).await.unwrap();
    a_path(&t, 1, false, &a_ip)(&paths).unwrap();

    // Someone deletes the path on A by hand.
    let gobgp = require_tool("gobgp", "gobgpd");
    let status = std::process::Command::new(gobgp)
        .args([
            "-u",
            "127.0.0.1",
            "-p",
            &t.a.api.port().to_string(),
            "global",
            "rib",
            "-a",
            "ipv4",
            "del",
            P,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    t.wait_router("A's path gone after the hand deletion", P, no_path_from(a_ip.clone()))
        .await;
    // The next reconcile (timer) puts it back and counts the drift.
    let out = a.reconcile(Some(&plan(3, GracefulShutdown, 0, Withdraw))).await;
    assert_eq!(out.drift_corrections, 1, "{out:?}");
    assert!(out.applied);
    t.wait_router("A's path back", P, a_path(&t, 1, false, &a_ip)).await;

    // A path changed by hand (prepended ×2 through the API) is put back too.
    t.a.backend(NEXT_HOP_A)
        .announce(
            P.parse().unwrap(),
            Route {
                prepends: 2,
                graceful_shutdown: false,
            },
        )
        .await
        .unwrap();
    t.wait_router("A's path altered", P, |p| match from(p, &a_ip) {
        Some(path) if path.as_path.len() == 3 => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await;
    let out = a.reconcile(Some(&plan(3, GracefulShutdown, 0, Withdraw))).await;
    assert_eq!(out.drift_corrections, 1);
    t.wait_router("A's path restored", P, a_path(&t, 1, false, &a_ip)).await;
}
