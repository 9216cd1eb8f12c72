//! Steering end to end on real etcd with two control-plane replicas: agents on
//! different replicas receive the same plan versions in order, a NACKing agent shows
//! in `meridianctl agents`, drains and what-ifs name their guardrails, a restore
//! pins an old plan, and a leader kill neither skips nor repeats a version.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use meridian_tests::agent::TestAgent;
use meridian_tests::etcd::EtcdCluster;
use meridian_tests::meridian::{ctl_json, meridianctl, meridianctl_as, ControlPlane};
use meridian_tests::util::wait_for;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);

const TOPOLOGY: &str = r#"
[policy]
target_utilisation = 0.8

[[pops]]
id = "fra1"
capacity = 100
ipv4 = ["127.0.0.21"]
anycast_prefixes = ["192.0.2.0/24"]
[[pops.endpoints]]
name = "tcp"
kind = "tcp"
address = "127.0.0.21:9"

[[pops]]
id = "ams1"
capacity = 100
ipv4 = ["127.0.0.22"]
anycast_prefixes = ["192.0.2.0/24"]
[[pops.endpoints]]
name = "tcp"
kind = "tcp"
address = "127.0.0.22:9"

[[pops]]
id = "iad1"
capacity = 100
ipv4 = ["127.0.0.23"]
anycast_prefixes = ["198.51.100.0/24"]
[[pops.endpoints]]
name = "tcp"
kind = "tcp"
address = "127.0.0.23:9"

[[regions]]
id = "eu"
demand = 60
latency_hints = { fra1 = "10ms", ams1 = "15ms", iad1 = "90ms" }

[[regions]]
id = "us"
demand = 60
latency_hints = { iad1 = "10ms", fra1 = "90ms", ams1 = "95ms" }
"#;

/// Waits until every acking agent has received (at least) `version`.
async fn all_received(agents: &[&TestAgent], version: u64) {
    for a in agents {
        wait_for(
            &format!("agent {} to receive plan v{version}", a.id),
            DEADLINE,
            || async { a.versions().last().is_some_and(|v| *v >= version).then_some(()) },
        )
        .await;
    }
}

fn weights(plan: &Value, region: &str) -> Vec<(String, f64)> {
    plan["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == region)
        .map(|r| {
            r["pops"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| (w["pop"].as_str().unwrap().to_string(), w["weight"].as_f64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

async fn current_version(ep: &str) -> u64 {
    ctl_json(ep, &["plan"]).await["version"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_on_different_replicas_follow_the_same_versions_across_a_leader_kill() {
    let etcd = EtcdCluster::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let endpoints = etcd.endpoints_csv();
    let args = ["--etcd-endpoints", endpoints.as_str(), "--lease-ttl", "2s"];
    let mut cps: Vec<ControlPlane> = ["cp-a", "cp-b"]
        .iter()
        .map(|id| ControlPlane::start(id, dir.path(), &args))
        .collect();
    for cp in &cps {
        cp.wait_ready().await;
    }
    let (ep_a, ep_b) = (cps[0].endpoint(), cps[1].endpoint());

    let topo = dir.path().join("topology.toml");
    std::fs::write(&topo, TOPOLOGY).unwrap();
    // Applied through either replica: a follower forwards to the leader.
    let applied = ctl_json(&ep_b, &["apply", "-f", topo.to_str().unwrap()]).await;
    assert_eq!(applied["applied"], true, "{applied}");

    // The first plan: with no probe data every PoP is UNKNOWN, which steering treats
    // as usable (fail static). eu fills fra1 to 80 % (60 of 100 fits), us uses iad1.
    let plan = wait_for("the first plan", DEADLINE, || async {
        let out = meridianctl(&["-e", &ep_a, "plan", "-o", "json"]).await;
        serde_json::from_slice::<Value>(&out.stdout).ok()
    })
    .await;
    assert_eq!(plan["version"], 1, "{plan}");
    assert_eq!(weights(&plan, "eu"), vec![("fra1".to_string(), 1.0)], "{plan}");
    assert_eq!(weights(&plan, "us"), vec![("iad1".to_string(), 1.0)], "{plan}");

    // Agents on different replicas, one of them rejecting every plan.
    let a1 = TestAgent::start("dns-a", vec![ep_a.clone(), ep_b.clone()], None);
    let a2 = TestAgent::start("dns-b", vec![ep_b.clone(), ep_a.clone()], None);
    let grumpy = TestAgent::start(
        "dns-grumpy",
        vec![ep_a.clone()],
        Some("plan serves nothing for region eu (test)"),
    );
    let acking = [&a1, &a2];
    all_received(&acking, 1).await;
    let agents = wait_for("meridianctl agents to show the NACK", DEADLINE, || async {
        let v = ctl_json(&ep_b, &["agents"]).await;
        let list = v.as_array()?.clone();
        let nack = list.iter().find(|a| a["agent_id"] == "dns-grumpy")?;
        (nack["nacked_version"] == 1
            && list.len() == 3
            && list.iter().filter(|a| a["applied_version"] == 1).count() == 2)
            .then_some(list)
    })
    .await;
    let grumpy_row = agents.iter().find(|a| a["agent_id"] == "dns-grumpy").unwrap();
    assert!(
        grumpy_row["nack_reason"].as_str().unwrap().contains("serves nothing"),
        "{grumpy_row}"
    );
    assert_eq!(grumpy_row["replica"], "cp-a");

    // What-if changes nothing and names the guardrail that would fire: iad1 is the
    // last PoP announcing 198.51.100.0/24.
    let what_if = ctl_json(&ep_a, &["what-if", "down", "iad1"]).await;
    let fired: Vec<&str> = what_if["guardrails_fired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert!(fired.iter().any(|g| g.contains("last-pop-for-prefix")), "{what_if}");
    assert_eq!(current_version(&ep_a).await, 1, "what-if must not publish");

    // A drain that would leave the rest over capacity is refused, naming the rule.
    let out = meridianctl(&["-e", &ep_a, "drain", "iad1", "--now", "--reason", "maintenance"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("last-pop") || err.contains("drain-over-capacity"), "{err}");

    // Drain fra1 (ams1 takes eu) → v2, on every agent, through the follower, which
    // forwards the caller's identity to the leader.
    let out = meridianctl_as(
        "carol@noc",
        "operator",
        &["-e", &ep_b, "drain", "fra1", "--now", "--reason", "fibre cut"],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    all_received(&acking, 2).await;
    let plan = ctl_json(&ep_b, &["plan"]).await;
    assert!(weights(&plan, "eu").iter().all(|(p, _)| p != "fra1"), "{plan}");
    assert!(
        plan["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("fra1")),
        "{plan}"
    );

    // The leader's event log says who drained, why, and what was published.
    let leader_now = ctl_json(&ep_a, &["status"]).await["leader"]
        .as_str()
        .unwrap()
        .to_string();
    let leader_ep = if leader_now == "cp-a" { &ep_a } else { &ep_b };
    let events = ctl_json(leader_ep, &["events", "--limit", "100"]).await;
    let events = events.as_array().unwrap();
    assert!(
        events.iter().any(|e| e["kind"] == "drain"
            && e["actor"] == "operator:carol@noc"
            && e["message"].as_str().unwrap().contains("fibre cut")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "plan_published" && e["message"] == "published plan v2"),
        "{events:?}"
    );

    // Kill the leader; the survivor takes over and continues at v3, not v2 or v4.
    let leader = ctl_json(&ep_a, &["status"]).await["leader"]
        .as_str()
        .unwrap()
        .to_string();
    let (dead, alive) = if leader == "cp-a" { (0, 1) } else { (1, 0) };
    cps[dead].kill();
    let alive_ep = cps[alive].endpoint();
    wait_for("the survivor to lead", DEADLINE, || async {
        let s = ctl_json(&alive_ep, &["status"]).await;
        (s["answering_replica_leads"] == true).then_some(())
    })
    .await;
    let out = meridianctl(&["-e", &alive_ep, "undrain", "fra1", "--reason", "fibre fixed"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    all_received(&acking, 3).await;

    // Restore v2 and pin it: v4 has v2's weights; steering stays pinned.
    let restored = ctl_json(
        &alive_ep,
        &["restore-plan", "2", "--reason", "roll back to the drained plan"],
    )
    .await;
    assert_eq!(restored["version"], 4);
    assert_eq!(restored["restored_from"], 2);
    all_received(&acking, 4).await;
    let resumed = ctl_json(&alive_ep, &["resume-steering"]).await;
    assert_eq!(resumed["was_pinned"], true);
    all_received(&acking, 5).await;

    // Every acking agent saw exactly 1, 2, 3, ... in order (reconnects may resend
    // the current version, never skip or go back).
    for a in acking {
        let mut seen = a.versions();
        seen.dedup();
        assert_eq!(
            seen,
            (1..=seen.len() as u64).collect::<Vec<_>>(),
            "agent {} saw {seen:?}",
            a.id
        );
        assert!(*seen.last().unwrap() >= 5);
    }
    // The store's history has every version once.
    for v in 1..=5 {
        let p = ctl_json(&alive_ep, &["plan", "--version", &v.to_string()]).await;
        assert_eq!(p["version"], v);
    }
    // The plan after resuming is computed again: fra1 back for eu.
    let plan = ctl_json(&alive_ep, &["plan", "--region", "eu"]).await;
    assert_eq!(weights(&plan, "eu"), vec![("fra1".to_string(), 1.0)], "{plan}");
    drop(grumpy);
}
