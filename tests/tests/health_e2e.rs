//! Distributed health probing end to end: a real control plane, real
//! `meridian-prober` processes in three regions, and real HTTP, TCP and DNS targets
//! on loopback addresses.
//!
//! One test walks through the scenarios in order (each process start is costly on
//! two cores): cold start is UNKNOWN; a killed target goes DOWN and comes back; a
//! target failing from one region only is DEGRADED; a region whose probers see
//! everything down becomes suspect and turns nothing DOWN; a control-plane restart
//! starts from UNKNOWN and receives the results probers buffered while it was down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use meridian_tests::meridian::{ctl_json, http_get, meridianctl, metric_value, ControlPlane, Prober};
use meridian_tests::targets::{DnsTarget, HttpTarget, TcpTarget};
use meridian_tests::util::wait_for;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);
const REGIONS: [(&str, &str, &str); 3] = [
    ("p-eu", "eu", "token-for-the-eu-prober-0001"),
    ("p-us", "us", "token-for-the-us-prober-0002"),
    ("p-ap", "ap", "token-for-the-ap-prober-0003"),
];

fn verdicts(health: &Value) -> Vec<(String, String)> {
    health["pops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["pop"].as_str().unwrap().to_string(),
                p["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pop_weight(plan: &Value, region: &str, pop: &str) -> f64 {
    plan["regions"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["region"] == region))
        .and_then(|r| {
            r["pops"]
                .as_array()?
                .iter()
                .find(|w| w["pop"] == pop)
                .map(|w| w["weight"].as_f64().unwrap())
        })
        .unwrap_or(0.0)
}

fn verdict_of(health: &Value, pop: &str) -> String {
    verdicts(health)
        .into_iter()
        .find(|(p, _)| p == pop)
        .map(|(_, s)| s)
        .unwrap_or_default()
}

async fn wait_verdict(endpoint: &str, pop: &str, want: &str) -> (Value, Duration) {
    let start = Instant::now();
    let what = format!("{pop} to become {want}");
    let health = wait_for(&what, DEADLINE, || async {
        let h = ctl_json(endpoint, &["health"]).await;
        (verdict_of(&h, pop) == want).then_some(h)
    })
    .await;
    (health, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probers_in_three_regions_drive_verdicts_through_failures_suspicion_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Simulated PoPs on distinct loopback addresses.
    let web_a = HttpTarget::start(Ipv4Addr::new(127, 0, 0, 11)).await;
    let mut web_b = HttpTarget::start(Ipv4Addr::new(127, 0, 0, 12)).await;
    let web_c = HttpTarget::start(Ipv4Addr::new(127, 0, 0, 13)).await;
    let tcp_a = TcpTarget::start(Ipv4Addr::new(127, 0, 0, 11)).await;
    let dns_a = DnsTarget::start(Ipv4Addr::new(127, 0, 0, 11)).await;

    let mut config = String::new();
    for (id, region, token) in REGIONS {
        config.push_str(&format!(
            "[[probers]]\nid = \"{id}\"\nregion = \"{region}\"\ntoken = \"{token}\"\n"
        ));
    }
    let config_path = dir.path().join("cp.toml");
    std::fs::write(&config_path, config).unwrap();
    let data = dir.path().join("data");
    let (config_arg, data_arg) = (config_path.display().to_string(), data.display().to_string());
    let mut cp = ControlPlane::start("cp-1", dir.path(), &["--config", &config_arg, "--data-dir", &data_arg]);
    cp.wait_ready().await;
    let ep = cp.endpoint();

    let topology = format!(
        r#"
[policy]
probe_interval = "300ms"
confirm_interval = "100ms"
freshness = "2s"
rise = 2
fall = 2
min_regions = 2
suspect_min_pops = 3
slow_start_stages = [0.1, 0.5, 1.0]
slow_start_bake = "1s"

[[regions]]
id = "clients"
demand = 50
latency_hints = {{ pop-b = "5ms", pop-a = "20ms", pop-c = "30ms" }}

[[pops]]
id = "pop-a"
capacity = 100
ipv4 = ["127.0.0.11"]
[[pops.endpoints]]
name = "http"
kind = "http"
url = "{a}"
[[pops.endpoints]]
name = "tcp"
kind = "tcp"
address = "{tcp}"
[[pops.endpoints]]
name = "dns"
kind = "dns"
server = "{dns}"
query_name = "health.example.net"

[[pops]]
id = "pop-b"
capacity = 100
ipv4 = ["127.0.0.12"]
[[pops.endpoints]]
name = "http"
kind = "http"
url = "{b}"

[[pops]]
id = "pop-c"
capacity = 100
ipv4 = ["127.0.0.13"]
[[pops.endpoints]]
name = "http"
kind = "http"
url = "{c}"
"#,
        a = web_a.url(),
        b = web_b.url(),
        c = web_c.url(),
        tcp = tcp_a.addr,
        dns = dns_a.addr
    );
    let topo_path = dir.path().join("topology.toml");
    std::fs::write(&topo_path, &topology).unwrap();

    // An invalid topology is refused with every error and its path; nothing stored.
    let bad_path = dir.path().join("bad.toml");
    std::fs::write(
        &bad_path,
        topology
            .replace(
                "capacity = 100\nipv4 = [\"127.0.0.12\"]",
                "capacity = -1\nipv4 = [\"127.0.0.12\"]",
            )
            .replace("min_regions = 2", "min_regions = 0"),
    )
    .unwrap();
    let bad = ctl_json(&ep, &["apply", "-f", bad_path.to_str().unwrap()]).await;
    let errors: Vec<&str> = bad["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(errors.iter().any(|e| e.starts_with("pops[1].capacity")), "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("policy.min_regions")), "{errors:?}");
    assert_eq!(bad["applied"], false);

    let dry = ctl_json(&ep, &["apply", "-f", topo_path.to_str().unwrap(), "--dry-run"]).await;
    assert_eq!(dry["applied"], false);
    assert!(
        dry["diff"].as_array().unwrap().iter().any(|d| d == "+ pop pop-a"),
        "{dry}"
    );
    let applied = ctl_json(&ep, &["apply", "-f", topo_path.to_str().unwrap()]).await;
    assert_eq!(applied["applied"], true, "{applied}");

    // Cold start: with no probe data every PoP is UNKNOWN — not UP, not DOWN.
    let health = wait_for("the topology's PoPs in the health matrix", DEADLINE, || async {
        let h = ctl_json(&ep, &["health"]).await;
        (verdicts(&h).len() == 3).then_some(h)
    })
    .await;
    assert!(verdicts(&health).iter().all(|(_, s)| s == "UNKNOWN"), "{health}");

    let probers: Vec<Prober> = REGIONS
        .iter()
        .map(|(id, region, token)| Prober::start(id, region, &ep, Some(token), dir.path()))
        .collect();
    for pop in ["pop-a", "pop-b", "pop-c"] {
        wait_verdict(&ep, pop, "UP").await;
    }
    let explain = ctl_json(&ep, &["explain", "pop-a"]).await;
    let regions: Vec<&str> = explain["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["region"].as_str().unwrap())
        .collect();
    assert_eq!(regions, ["ap", "eu", "us"], "{explain}");
    let endpoints: Vec<&str> = explain["regions"][0]["probers"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(
        endpoints,
        ["dns", "http", "tcp"],
        "all three probe kinds report: {explain}"
    );

    // A killed target: DOWN within fall × interval plus an interval (here ≈ 0.5 s;
    // the deadline is generous because the machine is shared).
    web_b.kill();
    let (health, took) = wait_verdict(&ep, "pop-b", "DOWN").await;
    eprintln!("pop-b DOWN observed after {took:?}");
    assert_eq!(verdict_of(&health, "pop-a"), "UP");
    let explain = ctl_json(&ep, &["explain", "pop-b"]).await;
    let classes: Vec<String> = explain["regions"][0]["probers"][0]["endpoints"][0]["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["failure_class"].as_str().unwrap().to_string())
        .collect();
    assert!(
        classes.iter().any(|c| c == "refused"),
        "a dead server's probes fail as refused: {classes:?}"
    );
    assert!(explain["rule"].as_str().unwrap().contains("quorum"), "{explain}");
    let down_version = wait_for("a plan without pop-b", DEADLINE, || async {
        let plan = ctl_json(&ep, &["plan"]).await;
        let clients = plan["regions"]
            .as_array()?
            .iter()
            .find(|r| r["region"] == "clients")?
            .clone();
        clients["pops"]
            .as_array()?
            .iter()
            .all(|w| w["pop"] != "pop-b")
            .then(|| plan["version"].as_u64().unwrap())
    })
    .await;
    web_b.heal().await;
    wait_verdict(&ep, "pop-b", "UP").await;

    // Failback is a slow start: pop-b's share of `clients` goes 10 % → 50 % → 100 %,
    // one published version per stage (read back from the plan history).
    let full_version = wait_for("pop-b back at full weight", DEADLINE, || async {
        let plan = ctl_json(&ep, &["plan"]).await;
        (pop_weight(&plan, "clients", "pop-b") > 0.99).then(|| plan["version"].as_u64().unwrap())
    })
    .await;
    let mut stages = Vec::new();
    for v in down_version..=full_version {
        let plan = ctl_json(&ep, &["plan", "--version", &v.to_string()]).await;
        let w = pop_weight(&plan, "clients", "pop-b");
        if stages.last() != Some(&w) {
            stages.push(w);
        }
    }
    let close = |a: f64, b: f64| (a - b).abs() < 0.02;
    assert!(close(stages[0], 0.0), "removed first: {stages:?}");
    let i10 = stages
        .iter()
        .position(|w| close(*w, 0.1))
        .unwrap_or_else(|| panic!("no 10% stage: {stages:?}"));
    let i50 = stages
        .iter()
        .position(|w| close(*w, 0.5))
        .unwrap_or_else(|| panic!("no 50% stage: {stages:?}"));
    assert!(
        i10 < i50 && close(*stages.last().unwrap(), 1.0),
        "stages out of order: {stages:?}"
    );
    let events = ctl_json(&ep, &["events", "--pop", "pop-b", "--limit", "200"]).await;
    assert!(
        events.as_array().unwrap().iter().any(|e| e["kind"] == "slow_start"),
        "{events}"
    );

    // Unreachable from one region only: DEGRADED naming that region, not DOWN.
    web_c.fail_for(&["eu"]);
    let (health, _) = wait_verdict(&ep, "pop-c", "DEGRADED").await;
    let row = health["pops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pop"] == "pop-c")
        .unwrap();
    assert_eq!(row["down_regions"], serde_json::json!(["eu"]), "{row}");
    web_c.fail_for(&[]);
    wait_verdict(&ep, "pop-c", "UP").await;

    // All probes from one region fail at once: the region is suspect, no PoP DOWN.
    for t in [&web_a, &web_b, &web_c] {
        t.fail_for(&["ap"]);
    }
    let health = wait_for("region ap to become suspect", DEADLINE, || async {
        let h = ctl_json(&ep, &["health"]).await;
        h["suspect_regions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "ap")
            .then_some(h)
    })
    .await;
    assert!(
        verdicts(&health).iter().all(|(_, s)| s != "DOWN"),
        "a broken vantage point turns nothing DOWN: {health}"
    );
    // Hold it a little: nothing may go DOWN while ap is suspect.
    for _ in 0..5 {
        let h = ctl_json(&ep, &["health"]).await;
        assert!(verdicts(&h).iter().all(|(_, s)| s != "DOWN"), "{h}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = ctl_json(&ep, &["events", "--limit", "500"]).await;
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "region_suspect" && e["region"] == "ap"),
        "{events}"
    );
    for t in [&web_a, &web_b, &web_c] {
        t.fail_for(&[]);
    }
    wait_for("region ap to recover", DEADLINE, || async {
        let h = ctl_json(&ep, &["health"]).await;
        h["suspect_regions"].as_array().unwrap().is_empty().then_some(())
    })
    .await;

    // Restart the control plane. While it is down, probers buffer its results.
    let replica_label = format!("meridian_prober_buffered_results{{replica=\"{ep}\"}}");
    cp.kill();
    let killed_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for p in &probers {
        wait_for(
            &format!("{} to buffer results for the dead replica", p.id),
            DEADLINE,
            || async { p.metric(&replica_label).await.filter(|v| *v >= 5.0) },
        )
        .await;
    }
    let restarted_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    cp.restart();
    cp.wait_ready().await;
    // The buffers drain into the restarted replica, nothing dropped.
    for p in &probers {
        wait_for(
            &format!("{} to deliver its buffered results", p.id),
            DEADLINE,
            || async { p.metric(&replica_label).await.filter(|v| *v == 0.0) },
        )
        .await;
        let (_, page) = http_get(p.admin_addr, "/metrics").await.unwrap();
        assert_eq!(
            metric_value(&page, "meridian_prober_results_dropped_total").unwrap_or(0.0),
            0.0,
            "{}",
            p.log()
        );
    }
    let (_, page) = http_get(cp.admin_addr, "/metrics").await.unwrap();
    let received = metric_value(&page, "meridian_control_plane_probe_results_total").unwrap_or(0.0);
    assert!(
        received >= 15.0,
        "the restarted replica received the buffered results: {received}"
    );

    // After the restart every verdict started from UNKNOWN: its first change for each
    // PoP goes from unknown (the topology came back from the persisted store).
    for pop in ["pop-a", "pop-b", "pop-c"] {
        wait_verdict(&ep, pop, "UP").await;
    }
    // The restarted replica stores what it saw once it leads again (the old
    // incarnation's leader key lives until its lease expires), so wait for it.
    let events = wait_for(
        "the restarted replica's verdicts in the event log",
        DEADLINE,
        || async {
            let events = ctl_json(&ep, &["events", "--limit", "2000"]).await;
            let after = |pop: &str| {
                events.as_array().unwrap().iter().any(|e| {
                    e["kind"] == "verdict" && e["pop"] == pop && e["at_unix_ms"].as_i64().unwrap() >= killed_at_ms
                })
            };
            ["pop-a", "pop-b", "pop-c"].iter().all(|p| after(p)).then_some(events)
        },
    )
    .await;
    let events_list = events.as_array().unwrap();
    // The event log is in the store: what happened before the restart is still there,
    // and ids keep going up across it.
    assert!(
        events_list
            .iter()
            .any(|e| e["kind"] == "verdict" && e["at_unix_ms"].as_i64().unwrap() < killed_at_ms),
        "{events}"
    );
    let ids: Vec<u64> = events_list.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    for pop in ["pop-a", "pop-b", "pop-c"] {
        let first = events_list
            .iter()
            .find(|e| e["kind"] == "verdict" && e["pop"] == pop && e["at_unix_ms"].as_i64().unwrap() >= killed_at_ms)
            .unwrap_or_else(|| panic!("no event for {pop} after the restart: {events}"));
        assert!(first["at_unix_ms"].as_i64().unwrap() >= restarted_at_ms - 1000);
        assert!(
            first["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{pop}: UNKNOWN →")),
            "{first}"
        );
    }

    // A prober that claims a region its token is not for is refused.
    let out = meridianctl(&["-e", &ep, "status"]).await;
    assert!(out.status.success());
    let rogue = Prober::start("p-eu", "us", &ep, Some(REGIONS[0].2), dir.path());
    wait_for("the rogue prober to be refused", DEADLINE, || async {
        let log = rogue.log();
        (log.contains("PermissionDenied") || log.contains("permission") || log.contains("may not report")).then_some(())
    })
    .await;
    drop(rogue);
    drop(probers);
}
