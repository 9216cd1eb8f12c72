//! The durable event log end to end on real etcd with two control-plane replicas: a
//! drain carried out by the leader is in `meridianctl events -o json` asked from the
//! follower, with everything a postmortem needs; after the leader is killed, the new
//! leader answers with the same event (same id) and continues the sequence.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use meridian_tests::etcd::EtcdCluster;
use meridian_tests::meridian::{ctl_json, http_get, meridianctl, meridianctl_as, metric_value, ControlPlane};
use meridian_tests::util::wait_for;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);

const TOPOLOGY: &str = r#"
[policy]
target_utilisation = 0.8

[[pops]]
id = "fra1"
capacity = 100
ipv4 = ["127.0.0.31"]
[[pops.endpoints]]
name = "tcp"
kind = "tcp"
address = "127.0.0.31:9"

[[pops]]
id = "ams1"
capacity = 100
ipv4 = ["127.0.0.32"]
[[pops.endpoints]]
name = "tcp"
kind = "tcp"
address = "127.0.0.32:9"

[[regions]]
id = "eu"
demand = 30
latency_hints = { fra1 = "10ms", ams1 = "15ms" }
"#;

/// The events about `pop` in the last hour, as `endpoint` answers.
async fn pop_events(endpoint: &str, pop: &str) -> Vec<Value> {
    ctl_json(endpoint, &["events", "--pop", pop, "--since", "1h", "--limit", "100"])
        .await
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until `endpoint` shows an event of `kind` about `pop`, and returns it.
async fn wait_event(endpoint: &str, pop: &str, kind: &str) -> Value {
    wait_for(
        &format!("a {kind} event about {pop} on {endpoint}"),
        DEADLINE,
        || async { pop_events(endpoint, pop).await.into_iter().find(|e| e["kind"] == kind) },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_on_the_leader_is_in_every_replica_s_events_and_survives_the_leader() {
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
    let topo = dir.path().join("topology.toml");
    std::fs::write(&topo, TOPOLOGY).unwrap();
    let applied = ctl_json(&cps[0].endpoint(), &["apply", "-f", topo.to_str().unwrap()]).await;
    assert_eq!(applied["applied"], true, "{applied}");

    let leader = ctl_json(&cps[0].endpoint(), &["status"]).await["leader"]
        .as_str()
        .unwrap()
        .to_string();
    let (lead, follow) = if leader == "cp-a" { (0, 1) } else { (1, 0) };
    let (leader_ep, follower_ep) = (cps[lead].endpoint(), cps[follow].endpoint());

    // The drain is carried out on the leader.
    let out = meridianctl_as(
        "dave@noc",
        "operator",
        &[
            "-e",
            &leader_ep,
            "drain",
            "fra1",
            "--now",
            "--reason",
            "fibre cut on the Frankfurt ring",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Asked from the follower: the stored log, complete enough for a postmortem.
    let drain = wait_event(&follower_ep, "fra1", "drain").await;
    assert_eq!(drain["actor"], "operator:dave@noc", "{drain}");
    assert_eq!(drain["pop"], "fra1", "{drain}");
    assert_eq!(drain["replica"], leader.as_str(), "recorded by the leader: {drain}");
    assert!(
        drain["message"]
            .as_str()
            .unwrap()
            .contains("fibre cut on the Frankfurt ring"),
        "{drain}"
    );
    let id = drain["id"].as_u64().unwrap();
    assert!(id >= 1, "{drain}");
    let at = drain["at"].as_str().unwrap();
    let at_ms = drain["at_unix_ms"].as_i64().unwrap();
    let parsed = humantime::parse_rfc3339(at).unwrap_or_else(|e| panic!("`at` {at} is not RFC 3339: {e}"));
    assert_eq!(
        parsed.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64,
        at_ms,
        "{drain}"
    );
    for key in [
        "kind",
        "region",
        "evidence",
        "replica",
        "id",
        "at",
        "at_unix_ms",
        "message",
        "actor",
        "pop",
    ] {
        assert!(drain.get(key).is_some(), "missing {key}: {drain}");
    }
    // The leader answers with the very same entry.
    let on_leader = wait_event(&leader_ep, "fra1", "drain").await;
    assert_eq!(on_leader, drain);
    // The text view shows times as RFC 3339 times.
    let out = meridianctl(&["-e", &follower_ep, "events", "--pop", "fra1"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("#{id} {at} [drain] by operator:dave@noc")),
        "{text}"
    );

    // `--since` is measured back from now: a second later, a window of one second
    // no longer holds the drain, and one of an hour still does.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let recent = ctl_json(&follower_ep, &["events", "--pop", "fra1", "--since", "1s"]).await;
    assert_eq!(recent, Value::Array(Vec::new()), "{recent}");
    assert!(pop_events(&follower_ep, "fra1").await.contains(&drain));

    // The leader stored it (and the follower stored nothing of its own).
    let (_, page) = http_get(cps[lead].admin_addr, "/metrics").await.unwrap();
    assert!(metric_value(&page, "meridian_control_plane_events_stored_total").unwrap_or(0.0) >= 1.0);
    let (_, page) = http_get(cps[follow].admin_addr, "/metrics").await.unwrap();
    assert_eq!(
        metric_value(&page, "meridian_control_plane_events_stored_total").unwrap_or(0.0),
        0.0
    );

    // Kill the leader; the survivor leads and still has the drain, with the same id.
    cps[lead].kill();
    wait_for("the survivor to lead", DEADLINE, || async {
        let s = ctl_json(&follower_ep, &["status"]).await;
        (s["answering_replica_leads"] == true).then_some(())
    })
    .await;
    let after = pop_events(&follower_ep, "fra1").await;
    assert!(after.contains(&drain), "{after:?}");

    // The new leader continues the sequence: its undrain comes after, under its name.
    let out = meridianctl_as(
        "erin@noc",
        "operator",
        &["-e", &follower_ep, "undrain", "fra1", "--reason", "ring repaired"],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let undrain = wait_event(&follower_ep, "fra1", "undrain").await;
    assert!(undrain["id"].as_u64().unwrap() > id, "{undrain}");
    assert_eq!(undrain["replica"], cps[follow].id.as_str(), "{undrain}");
    assert_eq!(undrain["actor"], "operator:erin@noc", "{undrain}");
    let ids: Vec<u64> = pop_events(&follower_ep, "fra1")
        .await
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first, by id: {ids:?}");
}
