//! Drain ladders end to end (issue [8]) with real processes over mutual TLS: a
//! control plane, probers in three regions, two DNS agents and simulated PoPs. A
//! ladder 100 → 50 → 0 % waits for both agents' ACKs at each rung (their answers
//! split between fra1 and ams1 on the 50 % rung) and completes with fra1 out; a
//! receiving PoP that dies during a bake rolls the next ladder back automatically,
//! and fra1 is answered again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use meridian_tests::dns::{dig, DnsAgent};
use meridian_tests::meridian::{ctl_json, meridianctl, meridianctl_as, ControlPlane, Prober};
use meridian_tests::targets::HttpTarget;
use meridian_tests::util::wait_for;

const DEADLINE: Duration = Duration::from_secs(90);
const ZONES: &str = "[[zones]]\norigin = \"example.net.\"\nns = [\"ns1.example.net.\"]\n[[zones.records]]\nname = \"ns1\"\ntype = \"A\"\nvalue = \"127.0.0.1\"\n[[zones.steered]]\nname = \"www\"\nanswers = 1\n";

/// The addresses both agents answered over `n` queries each.
async fn answered(agents: &[SocketAddr], n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for a in agents {
        for i in 0..n {
            // Different ECS subnets inside the region so sampling spreads.
            let subnet = format!("+subnet=127.0.{}.0/24", i % 250);
            seen.extend(dig(*a, &["www.example.net", "A", &subnet]).await.addresses());
        }
    }
    seen
}

async fn change(ep: &str, id: &str) -> serde_json::Value {
    let list = ctl_json(ep, &["changes"]).await;
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("change {id} not listed: {list}"))
}

async fn start_ladder(ep: &str, bake: &str) -> String {
    let out = meridianctl_as(
        "otto",
        "operator",
        &[
            "-e",
            ep,
            "drain",
            "fra1",
            "--reason",
            "maintenance",
            "--steps",
            "50,0",
            "--bake",
            bake,
            "-o",
            "json",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total_steps"], 2, "{v}");
    assert_eq!(v["started_by"], "operator:otto", "{v}");
    v["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_ladder_shifts_real_agents_rung_by_rung_and_a_dead_receiver_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let fra = HttpTarget::start(Ipv4Addr::new(127, 0, 0, 71)).await;
    let mut ams = HttpTarget::start(Ipv4Addr::new(127, 0, 0, 72)).await;
    let iad = HttpTarget::start(Ipv4Addr::new(127, 0, 0, 73)).await;
    let data = dir.path().join("data");
    let cp = ControlPlane::start("cp-1", dir.path(), &["--data-dir", data.to_str().unwrap()]);
    cp.wait_ready().await;
    let ep = cp.endpoint();
    let topology = format!(
        r#"
[policy]
latency_source = "hints"
slow_start_stages = [1.0]

[[pops]]
id = "fra1"
capacity = 100
ipv4 = ["127.0.0.71"]
[[pops.endpoints]]
name = "http"
kind = "http"
url = "{fra}"

[[pops]]
id = "ams1"
capacity = 100
ipv4 = ["127.0.0.72"]
[[pops.endpoints]]
name = "http"
kind = "http"
url = "{ams}"

[[pops]]
id = "iad1"
capacity = 100
ipv4 = ["127.0.0.73"]
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
    let out = meridianctl(&["-e", &ep, "apply", "-f", topo.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _probers: Vec<Prober> = ["eu", "us", "ap"]
        .iter()
        .map(|r| Prober::start(&format!("p-{r}"), r, &ep, None, dir.path()))
        .collect();
    let agents: Vec<DnsAgent> = ["dns-1", "dns-2"]
        .iter()
        .map(|id| DnsAgent::start(id, dir.path(), std::slice::from_ref(&ep), ZONES))
        .collect();
    let addrs: Vec<SocketAddr> = agents.iter().map(|a| a.dns_addr).collect();
    let (fra_ip, ams_ip) = ("127.0.0.71".to_string(), "127.0.0.72".to_string());
    wait_for("every PoP UP and both agents answering fra1", DEADLINE, || async {
        let health = ctl_json(&ep, &["health"]).await;
        let all_up = health["pops"].as_array()?.iter().all(|p| p["state"] == "UP");
        (all_up && answered(&addrs, 3).await == BTreeSet::from([fra_ip.clone()])).then_some(())
    })
    .await;

    // The ladder: on the 50 % rung both agents have ACKed and answer both PoPs.
    let id = start_ladder(&ep, "8s").await;
    wait_for("the first rung to bake with both agents ACKed", DEADLINE, || async {
        let c = change(&ep, &id).await;
        (c["step"] == 1 && c["summary"].as_str()?.contains("(bake)")).then_some(())
    })
    .await;
    let plan = ctl_json(&ep, &["plan"]).await;
    let version = plan["version"].as_u64().unwrap();
    let agents_now = ctl_json(&ep, &["agents"]).await;
    for a in agents_now.as_array().unwrap() {
        assert!(
            a["applied_version"].as_u64().unwrap() >= version,
            "an agent baking a rung has its plan: {agents_now}"
        );
    }
    wait_for(
        "answers split between fra1 and ams1 on the 50 % rung",
        DEADLINE,
        || async {
            let seen = answered(&addrs, 20).await;
            (seen.contains(&fra_ip) && seen.contains(&ams_ip)).then_some(())
        },
    )
    .await;
    let done = wait_for("the ladder to complete", DEADLINE, || async {
        let c = change(&ep, &id).await;
        (c["state"] == "completed").then_some(c)
    })
    .await;
    assert_eq!(done["step"], 2, "{done}");
    wait_for("fra1 out of both agents' answers", DEADLINE, || async {
        let seen = answered(&addrs, 5).await;
        (!seen.is_empty() && !seen.contains(&fra_ip)).then_some(())
    })
    .await;

    // Back in service; a second ladder whose receiver dies during the bake rolls
    // back by itself, and fra1 is answered again.
    let out = meridianctl(&["-e", &ep, "undrain", "fra1", "--reason", "done"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("fra1 answered again", DEADLINE, || async {
        (answered(&addrs, 3).await == BTreeSet::from([fra_ip.clone()])).then_some(())
    })
    .await;
    let id = start_ladder(&ep, "20s").await;
    wait_for("the first rung to bake", DEADLINE, || async {
        let c = change(&ep, &id).await;
        c["summary"].as_str()?.contains("(bake)").then_some(())
    })
    .await;
    ams.kill();
    let rolled = wait_for("an automatic rollback", DEADLINE, || async {
        let c = change(&ep, &id).await;
        (c["state"] == "rolled_back").then_some(c)
    })
    .await;
    let events = ctl_json(&ep, &["events", "--limit", "200"]).await;
    assert!(
        events.as_array().unwrap().iter().any(|e| e["kind"] == "change"
            && e["message"].as_str().unwrap().contains("DOWN: ams1")
            && e["message"].as_str().unwrap().contains("rolling_back")),
        "the rollback names the dead receiver: {rolled} {events}"
    );
    wait_for("fra1 answered again after the rollback", DEADLINE, || async {
        (answered(&addrs, 3).await == BTreeSet::from([fra_ip.clone()])).then_some(())
    })
    .await;
    drop(agents);
}

/// The leader is killed while a rung bakes, on a 3-member etcd: the new leader
/// resumes the same step — the rung is applied and ACKed once, analysed once after
/// its bake deadline — and the ladder completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_bake_is_succeeded_at_the_same_step() {
    use meridian_tests::etcd::EtcdCluster;
    let etcd = EtcdCluster::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let fra = HttpTarget::start(Ipv4Addr::new(127, 0, 0, 81)).await;
    let ams = HttpTarget::start(Ipv4Addr::new(127, 0, 0, 82)).await;
    let endpoints = etcd.endpoints_csv();
    let args = ["--etcd-endpoints", endpoints.as_str(), "--lease-ttl", "2s"];
    let mut cps: Vec<ControlPlane> = ["cp-a", "cp-b"]
        .iter()
        .map(|id| ControlPlane::start(id, dir.path(), &args))
        .collect();
    for cp in &cps {
        cp.wait_ready().await;
    }
    let eps: Vec<String> = cps.iter().map(|c| c.endpoint()).collect();
    let all = eps.join(",");
    let topology = format!(
        r#"
[policy]
latency_source = "hints"
[[pops]]
id = "fra1"
capacity = 100
ipv4 = ["127.0.0.81"]
[[pops.endpoints]]
name = "http"
kind = "http"
url = "{fra}"
[[pops]]
id = "ams1"
capacity = 100
ipv4 = ["127.0.0.82"]
[[pops.endpoints]]
name = "http"
kind = "http"
url = "{ams}"
[[regions]]
id = "eu"
demand = 50
client_prefixes = ["127.0.0.0/8"]
latency_hints = {{ fra1 = "10ms", ams1 = "12ms" }}
"#,
        fra = fra.url(),
        ams = ams.url()
    );
    let topo = dir.path().join("topology.toml");
    std::fs::write(&topo, topology).unwrap();
    let out = meridianctl(&["-e", &all, "apply", "-f", topo.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _probers: Vec<Prober> = ["eu", "us", "ap"]
        .iter()
        .map(|r| Prober::start(&format!("p-{r}"), r, &all, None, dir.path()))
        .collect();
    wait_for("every PoP UP", DEADLINE, || async {
        let health = ctl_json(&all, &["health"]).await;
        let pops = health["pops"].as_array()?;
        (pops.len() == 2 && pops.iter().all(|p| p["state"] == "UP")).then_some(())
    })
    .await;

    let id = start_ladder(&all, "10s").await;
    wait_for("the first rung to bake", DEADLINE, || async {
        let c = change(&all, &id).await;
        (c["step"] == 1 && c["summary"].as_str()?.contains("(bake)")).then_some(())
    })
    .await;
    let leader = ctl_json(&all, &["status"]).await["leader"]
        .as_str()
        .unwrap()
        .to_string();
    let idx = cps.iter().position(|c| c.id == leader).unwrap();
    cps[idx].kill();
    let survivor = eps[1 - idx].clone();
    let done = wait_for("the ladder to complete under the new leader", DEADLINE, || async {
        let c = change(&survivor, &id).await;
        (c["state"] == "completed").then_some(c)
    })
    .await;
    assert_eq!(done["step"], 2, "{done}");

    // Read the step's history from the event log: never repeated, not skipped.
    let events = ctl_json(&survivor, &["events", "--limit", "500"]).await;
    let moves: Vec<(u64, String)> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "change" && e["message"].as_str().unwrap().contains(&id))
        .map(|e| {
            (
                e["at_unix_ms"].as_u64().unwrap(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    eprintln!("change {id} after the leader kill: {moves:#?}");
    let count = |to: &str| moves.iter().filter(|(_, m)| m.contains(&format!("→ {to} ("))).count();
    assert!(
        count("progressing step 1 (await ACKs)") <= 1,
        "rung 1 applied twice: {moves:#?}"
    );
    assert!(
        count("progressing step 1 (bake)") <= 1,
        "rung 1 baked twice: {moves:#?}"
    );
    assert_eq!(
        count("progressing step 1 (analyse)"),
        1,
        "rung 1 analysed once: {moves:#?}"
    );
    assert_eq!(count("completed"), 1, "{moves:#?}");
    // If the old leader's "bake" event was stored before it died, the analysis came
    // at least the bake's length after it (the deadline was kept, not restarted
    // short or skipped).
    let at = |to: &str| {
        moves
            .iter()
            .find(|(_, m)| m.contains(&format!("→ {to} (")))
            .map(|(t, _)| *t)
    };
    if let (Some(bake), Some(analyse)) = (at("progressing step 1 (bake)"), at("progressing step 1 (analyse)")) {
        assert!(
            analyse >= bake + 10_000,
            "analysed {} ms into a 10 s bake",
            analyse - bake
        );
    }
    drop(etcd);
}

/// A canary wave of one real DNS agent: it answers a ladder's 50 % rung while the
/// fleet's agent, held on the plan from before, keeps answering fra1 only; when the
/// canary agent dies during its bake, the canary analysis fails, the change rolls
/// back, and the fleet never answered the rung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_agent_answers_a_rung_first_and_its_death_rolls_back_before_the_fleet_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let fra = HttpTarget::start(Ipv4Addr::new(127, 0, 0, 74)).await;
    let ams = HttpTarget::start(Ipv4Addr::new(127, 0, 0, 75)).await;
    let data = dir.path().join("data");
    let cp = ControlPlane::start("cp-1", dir.path(), &["--data-dir", data.to_str().unwrap()]);
    cp.wait_ready().await;
    let ep = cp.endpoint();
    let topology = format!(
        r#"
[policy]
latency_source = "hints"
canary_agents = ["dns-canary"]
canary_bake = "8s"

[[pops]]
id = "fra1"
capacity = 100
ipv4 = ["127.0.0.74"]
[[pops.endpoints]]
name = "http"
kind = "http"
url = "{fra}"

[[pops]]
id = "ams1"
capacity = 100
ipv4 = ["127.0.0.75"]
[[pops.endpoints]]
name = "http"
kind = "http"
url = "{ams}"

[[regions]]
id = "eu"
demand = 50
client_prefixes = ["127.0.0.0/8"]
latency_hints = {{ fra1 = "10ms", ams1 = "12ms" }}
"#,
        fra = fra.url(),
        ams = ams.url(),
    );
    let topo = dir.path().join("topology.toml");
    std::fs::write(&topo, topology).unwrap();
    let out = meridianctl(&["-e", &ep, "apply", "-f", topo.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _probers: Vec<Prober> = ["eu", "us", "ap"]
        .iter()
        .map(|r| Prober::start(&format!("p-{r}"), r, &ep, None, dir.path()))
        .collect();
    let mut canary = DnsAgent::start("dns-canary", dir.path(), std::slice::from_ref(&ep), ZONES);
    let fleet = DnsAgent::start("dns-fleet", dir.path(), std::slice::from_ref(&ep), ZONES);
    let (fra_ip, ams_ip) = ("127.0.0.74".to_string(), "127.0.0.75".to_string());
    wait_for("every PoP UP and both agents answering fra1", DEADLINE, || async {
        let health = ctl_json(&ep, &["health"]).await;
        let all_up = health["pops"].as_array()?.iter().all(|p| p["state"] == "UP");
        (all_up && answered(&[canary.dns_addr, fleet.dns_addr], 3).await == BTreeSet::from([fra_ip.clone()]))
            .then_some(())
    })
    .await;

    let id = start_ladder(&ep, "5s").await;
    // The canary answers the rung (both PoPs); the fleet is held and answers fra1.
    wait_for("the canary agent answering the 50 % rung", DEADLINE, || async {
        let seen = answered(&[canary.dns_addr], 20).await;
        (seen.contains(&fra_ip) && seen.contains(&ams_ip)).then_some(())
    })
    .await;
    let agents = ctl_json(&ep, &["agents"]).await;
    let fleet_row = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == "dns-fleet")
        .cloned()
        .unwrap();
    assert_eq!(fleet_row["wave"], "fleet", "{agents}");
    assert!(
        fleet_row["held_on_version"].as_u64().is_some(),
        "the fleet is held: {agents}"
    );
    assert_eq!(
        answered(&[fleet.dns_addr], 20).await,
        BTreeSet::from([fra_ip.clone()]),
        "the fleet answers the plan from before while the canary bakes"
    );
    // The canary agent dies during its bake: the canary analysis fails.
    canary.kill();
    let rolled = wait_for("the change to roll back", DEADLINE, || async {
        let c = change(&ep, &id).await;
        (c["state"] == "rolled_back").then_some(c)
    })
    .await;
    let events = ctl_json(&ep, &["events", "--limit", "300"]).await;
    assert!(
        events.as_array().unwrap().iter().any(|e| e["kind"] == "change"
            && e["message"].as_str().unwrap().contains(&id)
            && e["message"].as_str().unwrap().contains("canary agent(s) disconnected")),
        "the rollback names the lost canary agent: {rolled} {events}"
    );
    // Released after the rollback's plan: the fleet still answers fra1 only.
    wait_for("the fleet released and answering fra1 only", DEADLINE, || async {
        let agents = ctl_json(&ep, &["agents"]).await;
        let row = agents
            .as_array()?
            .iter()
            .find(|a| a["agent_id"] == "dns-fleet")?
            .clone();
        (row["held_on_version"].is_null() && answered(&[fleet.dns_addr], 10).await == BTreeSet::from([fra_ip.clone()]))
            .then_some(())
    })
    .await;
    drop(fleet);
}
