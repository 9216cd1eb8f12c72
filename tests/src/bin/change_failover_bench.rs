//! Change-driver failover benchmark (issue [8]): with real etcd (3 members), two
//! control-plane replicas (lease TTL 2 s), probers in three regions and two HTTP
//! PoPs, a drain ladder (50 % → 0 %, 1.5 s bakes) is started; as soon as its first rung
//! bakes, the leader is SIGKILLed. The bake ends before the lease can expire, so the
//! figure is the time from the kill until the *new* leader resumes the change at the
//! same step — its analysis of rung 1, read from the change event it recorded — and
//! the goal is the lease TTL + 1 s. Each trial also checks from the event log that
//! rung 1 was neither applied, baked nor analysed twice, and that the ladder
//! completed. Then the killed replica is restarted, fra1 undrained, and the next
//! trial runs (the leader alternates).
//!
//! Min / median / max over the trials are printed (`--json` for one object); max is
//! the p99 for 10 trials. Mutual TLS with a per-run test CA, roles enforced.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use meridian_tests::etcd::EtcdCluster;
use meridian_tests::meridian::{ctl_json, meridianctl, ControlPlane, Prober};
use meridian_tests::targets::HttpTarget;
use meridian_tests::util::wait_for;

/// Time the change driver's takeover after a leader kill mid-bake.
#[derive(Debug, Parser)]
struct Args {
    /// Trials (a leader kill each).
    #[arg(long, default_value_t = 10)]
    trials: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

const DEADLINE: Duration = Duration::from_secs(90);
const LEASE_TTL_MS: u64 = 2_000;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

async fn change(ep: &str, id: &str) -> Option<serde_json::Value> {
    let list = ctl_json(ep, &["changes", "--limit", "1000"]).await;
    list.as_array()?.iter().find(|c| c["id"] == id).cloned()
}

/// The change's transitions recorded in the event log: (time, message).
async fn moves(ep: &str, id: &str) -> Vec<(u64, String)> {
    let events = ctl_json(ep, &["events", "--limit", "2000"]).await;
    events
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["kind"] == "change" && e["message"].as_str().is_some_and(|m| m.contains(id)))
                .map(|e| {
                    (
                        e["at_unix_ms"].as_u64().unwrap_or(0),
                        e["message"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let etcd = EtcdCluster::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let fra = HttpTarget::start(Ipv4Addr::new(127, 0, 0, 91)).await;
    let ams = HttpTarget::start(Ipv4Addr::new(127, 0, 0, 92)).await;
    let endpoints = etcd.endpoints_csv();
    let ttl = format!("{}ms", LEASE_TTL_MS);
    let cp_args = ["--etcd-endpoints", endpoints.as_str(), "--lease-ttl", ttl.as_str()];
    let mut cps: Vec<ControlPlane> = ["cp-a", "cp-b"]
        .iter()
        .map(|id| ControlPlane::start(id, dir.path(), &cp_args))
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

    let mut samples = Vec::new();
    for trial in 0..args.trials {
        let started = ctl_json(
            &all,
            &[
                "drain", "fra1", "--reason", "bench", "--steps", "50,0", "--bake", "1500ms",
            ],
        )
        .await;
        let id = started["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no change id: {started}"))
            .to_string();
        wait_for("the first rung to bake", DEADLINE, || async {
            let c = change(&all, &id).await?;
            (c["step"] == 1 && c["summary"].as_str()?.contains("(bake)")).then_some(())
        })
        .await;
        let leader = ctl_json(&all, &["status"]).await["leader"]
            .as_str()
            .unwrap()
            .to_string();
        let idx = cps.iter().position(|c| c.id == leader).unwrap();
        let killed_at = now_ms();
        cps[idx].kill();
        let survivor = eps[1 - idx].clone();
        let done = wait_for("the ladder to end under the new leader", DEADLINE, || async {
            let c = change(&survivor, &id).await?;
            (c["state"] != "progressing" && c["state"] != "pending").then_some(c)
        })
        .await;
        assert_eq!(done["state"], "completed", "trial {trial}: {done}");
        let moves = moves(&survivor, &id).await;
        let count = |to: &str| moves.iter().filter(|(_, m)| m.contains(&format!("→ {to} ("))).count();
        assert!(
            count("progressing step 1 (await ACKs)") <= 1,
            "trial {trial}: rung 1 applied twice: {moves:#?}"
        );
        assert!(
            count("progressing step 1 (bake)") <= 1,
            "trial {trial}: rung 1 baked twice: {moves:#?}"
        );
        assert_eq!(count("progressing step 1 (analyse)"), 1, "trial {trial}: {moves:#?}");
        let resumed_at = moves
            .iter()
            .find(|(_, m)| m.contains("→ progressing step 1 (analyse) ("))
            .map(|(t, _)| *t)
            .unwrap();
        let resumed = resumed_at.saturating_sub(killed_at);
        if !args.json {
            eprintln!("trial {trial}: the new leader resumed rung 1 {resumed} ms after the kill");
        }
        samples.push(resumed);
        // Back to the start: the killed replica returns, fra1 is undrained.
        cps[idx].restart();
        cps[idx].wait_ready().await;
        // Its own health view must be whole again before it can lead a change (a
        // leader without health data would pause the analysis as inconclusive).
        let restarted = eps[idx].clone();
        wait_for("the restarted replica to see every PoP UP", DEADLINE, || async {
            let health = ctl_json(&restarted, &["health"]).await;
            let pops = health["pops"].as_array()?;
            (pops.len() == 2 && pops.iter().all(|p| p["state"] == "UP")).then_some(())
        })
        .await;
        let out = meridianctl(&["-e", &all, "undrain", "fra1", "--reason", "bench"]).await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        wait_for("fra1 back in the plan", DEADLINE, || async {
            let plan = ctl_json(&all, &["plan"]).await;
            plan["pops"]
                .as_array()?
                .iter()
                .any(|p| p["pop"] == "fra1" && p["state"] != "DRAINED" && p["state"] != "drained")
                .then_some(())
        })
        .await;
    }
    samples.sort_unstable();
    let (min, median, max) = (samples[0], samples[samples.len() / 2], samples[samples.len() - 1]);
    let goal = LEASE_TTL_MS + 1_000;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "trials": samples.len(),
                "lease_ttl_ms": LEASE_TTL_MS,
                "min_ms": min,
                "median_ms": median,
                "max_ms": max,
                "goal_ms": goal,
                "transport": "mtls",
            })
        );
    } else {
        println!(
            "leader killed mid-bake → the new leader resumes the same step ({} trials, lease TTL {} ms, 3-member etcd, mTLS):",
            samples.len(),
            LEASE_TTL_MS
        );
        println!(
            "  min {min} ms, median {median} ms, max {max} ms (goal ≤ {goal} ms: {})",
            if max <= goal { "met" } else { "MISSED" }
        );
        println!("  each trial checked: rung 1 applied, baked and analysed once; the ladder completed");
    }
}
