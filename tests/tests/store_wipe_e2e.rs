//! Plan epochs end to end: the control plane's store is wiped and restored under a
//! running DNS agent (the control plane stopped, its data directory deleted, started
//! again on a fresh store, the topology re-applied, then a PoP killed). The agent
//! follows the new store's plans although their versions are lower than the one it
//! held, never serves the PoP the new plan removed, and says the epoch changed (a
//! metric and a log line). Deadlines are generous; every wait is on a condition.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use meridian_tests::dns::{dig, DnsAgent};
use meridian_tests::meridian::{ctl_json, meridianctl, plan_weight as weight, ControlPlane, Prober};
use meridian_tests::targets::HttpTarget;
use meridian_tests::util::wait_for;

const DEADLINE: Duration = Duration::from_secs(90);
const ZONES: &str = "[[zones]]\norigin = \"example.net.\"\nns = [\"ns1.example.net.\"]\n[[zones.records]]\nname = \"ns1\"\ntype = \"A\"\nvalue = \"127.0.0.1\"\n[[zones.steered]]\nname = \"www\"\nanswers = 1\n";
const FRA: &str = "127.0.0.91";

async fn eu_answer(agent: SocketAddr) -> Vec<String> {
    dig(agent, &["www.example.net", "A", "+subnet=127.0.0.0/24"])
        .await
        .addresses()
}

async fn apply(ep: &str, topo: &Path) {
    let out = meridianctl(&["-e", ep, "apply", "-f", topo.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The control plane's current plan version (0: none yet).
async fn cp_version(ep: &str) -> u64 {
    ctl_json(ep, &["plan"]).await["version"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_store_wipe_agents_follow_the_new_numbering_and_never_serve_a_removed_pop() {
    let dir = tempfile::tempdir().unwrap();
    let mut fra = HttpTarget::start(Ipv4Addr::new(127, 0, 0, 91)).await;
    let ams = HttpTarget::start(Ipv4Addr::new(127, 0, 0, 92)).await;
    let iad = HttpTarget::start(Ipv4Addr::new(127, 0, 0, 93)).await;
    let data = dir.path().join("data");
    let mut cp = ControlPlane::start("cp-1", dir.path(), &["--data-dir", data.to_str().unwrap()]);
    cp.wait_ready().await;
    let ep = cp.endpoint();

    let topology = format!(
        r#"
[policy]
latency_source = "hints"

[[pops]]
id = "fra1"
capacity = 100
ipv4 = ["127.0.0.91"]
[[pops.endpoints]]
name = "http"
kind = "http"
url = "{fra}"

[[pops]]
id = "ams1"
capacity = 100
ipv4 = ["127.0.0.92"]
[[pops.endpoints]]
name = "http"
kind = "http"
url = "{ams}"

[[pops]]
id = "iad1"
capacity = 100
ipv4 = ["127.0.0.93"]
[[pops.endpoints]]
name = "http"
kind = "http"
url = "{iad}"

[[regions]]
id = "eu"
demand = 50
client_prefixes = ["127.0.0.0/8"]
latency_hints = {{ fra1 = "10ms", ams1 = "12ms", iad1 = "80ms" }}
"#,
        fra = fra.url(),
        ams = ams.url(),
        iad = iad.url()
    );
    let topo = dir.path().join("topology.toml");
    std::fs::write(&topo, topology).unwrap();
    apply(&ep, &topo).await;

    let _probers: Vec<Prober> = ["eu", "us", "ap"]
        .iter()
        .map(|r| Prober::start(&format!("p-{r}"), r, &ep, None, dir.path()))
        .collect();
    let agent = DnsAgent::start("dns-1", dir.path(), std::slice::from_ref(&ep), ZONES);
    let fra_ip = FRA.to_string();
    wait_for("the agent to answer fra1 with every PoP UP", DEADLINE, || async {
        let health = ctl_json(&ep, &["health"]).await;
        let all_up = health["pops"].as_array()?.iter().all(|p| p["state"] == "UP");
        (all_up && eu_answer(agent.dns_addr).await == vec![fra_ip.clone()]).then_some(())
    })
    .await;

    // Push the first store's numbering well above where a fresh store starts: each
    // drain and undrain of iad1 publishes a plan.
    for _ in 0..4 {
        for cmd in ["drain", "undrain"] {
            let before = cp_version(&ep).await;
            let mut args = vec!["-e", ep.as_str(), cmd, "iad1"];
            if cmd == "drain" {
                args.extend(["--now", "--reason", "store wipe e2e"]);
            }
            let out = meridianctl(&args).await;
            assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
            wait_for("the drain or undrain to be published", DEADLINE, || async {
                (cp_version(&ep).await > before).then_some(())
            })
            .await;
        }
    }
    let old_version = cp_version(&ep).await;
    wait_for("the agent to serve the first store's newest plan", DEADLINE, || async {
        (agent.metric("meridian_dns_plan_version").await? as u64 == old_version).then_some(())
    })
    .await;
    assert!(old_version >= 9, "v{old_version}");
    assert_eq!(
        agent
            .metric("meridian_dns_plan_epoch_changes_total")
            .await
            .unwrap_or(0.0),
        0.0
    );

    // Wipe: stop the control plane, delete its store, start it on a fresh one.
    assert!(
        cp.terminate(Duration::from_secs(30)).is_some(),
        "the control plane did not stop"
    );
    std::fs::remove_dir_all(&data).unwrap();
    cp.restart();
    cp.wait_ready().await;
    apply(&ep, &topo).await;
    let restored = std::time::Instant::now();

    // The agent follows the new store although its versions are lower.
    let new_version = wait_for("the agent to follow the new store's plan", DEADLINE, || async {
        let v = cp_version(&ep).await;
        let served = agent.metric("meridian_dns_plan_version").await? as u64;
        let changed = agent.metric("meridian_dns_plan_epoch_changes_total").await? >= 1.0;
        (v > 0 && served == v && changed).then_some(v)
    })
    .await;
    assert!(new_version < old_version, "v{new_version} after v{old_version}");
    eprintln!(
        "the agent followed the new store (v{new_version} after v{old_version}) {:?} after the topology was re-applied",
        restored.elapsed()
    );
    let log = agent.log();
    assert!(
        log.contains("control plane store changed epoch") && log.contains("following its numbering"),
        "the agent's log does not say the epoch changed:\n{log}"
    );

    // Kill fra1: the new store's plan removes it, the agent applies that plan (lower
    // than anything the first store published) and stops answering it.
    fra.kill();
    let removed_at = wait_for("a plan of the new store without fra1", DEADLINE, || async {
        let plan = ctl_json(&ep, &["plan"]).await;
        let v = plan["version"].as_u64()?;
        (weight(&plan, "eu", "fra1") == 0.0 && v > 0).then_some(v)
    })
    .await;
    assert!(removed_at < old_version, "v{removed_at} after v{old_version}");
    wait_for("the agent to apply the plan without fra1", DEADLINE, || async {
        let served = agent.metric("meridian_dns_plan_version").await? as u64;
        (served >= removed_at && served < old_version).then_some(())
    })
    .await;
    // From the moment that plan is in service, fra1 is never answered.
    for _ in 0..40 {
        let answer = eu_answer(agent.dns_addr).await;
        assert!(!answer.is_empty(), "no answer after the wipe");
        assert!(
            !answer.contains(&fra_ip),
            "the agent served fra1, which plan v{removed_at} of the new store removed: {answer:?}"
        );
    }
    assert_eq!(
        agent.metric("meridian_dns_plan_epoch_changes_total").await,
        Some(1.0),
        "one epoch change, counted once"
    );
    let nacks = agent
        .metric("meridian_dns_plans_received_total{outcome=\"stale\"")
        .await;
    assert_eq!(
        nacks.unwrap_or(0.0),
        0.0,
        "no plan of the new store was refused as stale"
    );
}
