//! Automatic DNS failover end to end (shorter than `scripts/bench-failover.sh`, with
//! no timing assertions beyond generous deadlines): a control plane, probers in three
//! regions, two DNS agents and simulated PoPs. A killed PoP leaves every agent's
//! answers; healed, it comes back through the slow-start stages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use meridian_tests::dns::{dig, DnsAgent};
use meridian_tests::meridian::{ctl_json, meridianctl, plan_weight as weight, ControlPlane, Prober};
use meridian_tests::targets::HttpTarget;
use meridian_tests::util::wait_for;

const DEADLINE: Duration = Duration::from_secs(90);
const ZONES: &str = "[[zones]]\norigin = \"example.net.\"\nns = [\"ns1.example.net.\"]\n[[zones.records]]\nname = \"ns1\"\ntype = \"A\"\nvalue = \"127.0.0.1\"\n[[zones.steered]]\nname = \"www\"\nanswers = 1\n";

async fn eu_answers(agents: &[SocketAddr]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for a in agents {
        out.push(
            dig(*a, &["www.example.net", "A", "+subnet=127.0.0.0/24"])
                .await
                .addresses(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_pop_leaves_every_agents_answers_and_returns_through_slow_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut fra = HttpTarget::start(Ipv4Addr::new(127, 0, 0, 61)).await;
    let ams = HttpTarget::start(Ipv4Addr::new(127, 0, 0, 62)).await;
    let iad = HttpTarget::start(Ipv4Addr::new(127, 0, 0, 63)).await;
    let data = dir.path().join("data");
    let cp = ControlPlane::start("cp-1", dir.path(), &["--data-dir", data.to_str().unwrap()]);
    cp.wait_ready().await;
    let ep = cp.endpoint();

    let topology = format!(
        r#"
[policy]
latency_source = "hints"
slow_start_stages = [0.1, 0.5, 1.0]
slow_start_bake = "1s"

[[pops]]
id = "fra1"
capacity = 100
ipv4 = ["127.0.0.61"]
[[pops.endpoints]]
name = "http"
kind = "http"
url = "{fra}"

[[pops]]
id = "ams1"
capacity = 100
ipv4 = ["127.0.0.62"]
[[pops.endpoints]]
name = "http"
kind = "http"
url = "{ams}"

[[pops]]
id = "iad1"
capacity = 100
ipv4 = ["127.0.0.63"]
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
    let fra_ip = "127.0.0.61".to_string();
    wait_for("both agents to answer with fra1 and every PoP UP", DEADLINE, || async {
        let health = ctl_json(&ep, &["health"]).await;
        let all_up = health["pops"].as_array()?.iter().all(|p| p["state"] == "UP");
        (all_up && eu_answers(&addrs).await.iter().all(|a| a == &vec![fra_ip.clone()])).then_some(())
    })
    .await;

    // Kill fra1: it leaves every agent's answers.
    fra.kill();
    let start = std::time::Instant::now();
    wait_for("fra1 to leave every agent's answers", DEADLINE, || async {
        let all = eu_answers(&addrs).await;
        all.iter().all(|a| !a.is_empty() && !a.contains(&fra_ip)).then_some(())
    })
    .await;
    eprintln!("fra1 left both agents' answers after {:?}", start.elapsed());
    let (_, removed_at) = wait_for("fra1's verdict to be DOWN", DEADLINE, || async {
        let plan = ctl_json(&ep, &["plan"]).await;
        let health = ctl_json(&ep, &["health"]).await;
        let down = health["pops"]
            .as_array()?
            .iter()
            .any(|p| p["pop"] == "fra1" && p["state"] == "DOWN");
        down.then(|| ((), plan["version"].as_u64().unwrap()))
    })
    .await;

    // Heal it: the plan takes it back in stages; the agents end up answering fra1.
    fra.heal().await;
    let back_at = wait_for(
        "fra1 back at full weight in every agent's answers",
        DEADLINE,
        || async {
            let plan = ctl_json(&ep, &["plan"]).await;
            let full = weight(&plan, "eu", "fra1") > 0.999;
            (full && eu_answers(&addrs).await.iter().all(|a| a == &vec![fra_ip.clone()]))
                .then(|| plan["version"].as_u64().unwrap())
        },
    )
    .await;
    let mut stages = Vec::new();
    for v in removed_at..=back_at {
        let w = weight(
            &ctl_json(&ep, &["plan", "--version", &v.to_string()]).await,
            "eu",
            "fra1",
        );
        if stages.last() != Some(&w) {
            stages.push(w);
        }
    }
    let close = |a: f64, b: f64| (a - b).abs() < 0.02;
    let i10 = stages
        .iter()
        .position(|w| close(*w, 0.1))
        .unwrap_or_else(|| panic!("no 10% stage: {stages:?}"));
    let i50 = stages
        .iter()
        .position(|w| close(*w, 0.5))
        .unwrap_or_else(|| panic!("no 50% stage: {stages:?}"));
    assert!(close(stages[0], 0.0) && i10 < i50, "not a slow start: {stages:?}");
    drop(agents);
}
