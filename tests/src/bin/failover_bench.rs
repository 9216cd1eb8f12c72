//! End-to-end failover benchmark with real processes: real etcd, three control-plane
//! replicas, probers in three regions, two DNS agents and five simulated PoPs.
//!
//! * **kill**: after a random 0–2 s pause, a PoP's server is killed (connections
//!   refused); real DNS queries (`dig`, every 50 ms, against both agents) measure the
//!   time until no agent returns that PoP. Then the PoP is healed and we measure the
//!   time until it is back at full weight (through slow start).
//! * **kill + leader**: the same, with the control-plane leader SIGKILLed at the same
//!   moment as the PoP.
//! * **silent**: the same as kill, but the PoP goes silent instead (`sim_pops`'
//!   `/silence`: connections are accepted and never answered, so every health check
//!   times out — packets dropped after a power or network loss).
//! * **flap**: a PoP refuses a share of connections at random for a while (10 %, then
//!   20 % by default, healed and back UP between shares); it must never be removed
//!   from the answers.
//!
//! * **Anycast column** (issue [9]): fra1 and ams1 announce one anycast prefix; an
//!   Anycast agent for the victim drives a real gobgpd speaker peered with a gobgpd
//!   upstream router, and each trial also times the kill until the victim's route
//!   is gone from the router's RIB (read with the `gobgp` CLI every 20 ms), and the
//!   flap test counts the route's withdrawals there.
//!
//! Min / median / p99 are printed (and as JSON with `--json`). Everything runs on this
//! machine's 2 cores.
//!
//! The stack runs the production setup, as the e2e harness starts it: the replicas
//! serve mutual TLS with a per-run test CA and enforce roles; probers, DNS agents and
//! meridianctl (as an admin) present certificates from it. The report says so
//! (`"transport": "mtls"`), so a figure is never mistaken for a plaintext one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use std::sync::Arc;

use meridian_tests::bgp::{AnycastAgent, SpeakerAndRouter};
use meridian_tests::dns::{dig, DnsAgent};
use meridian_tests::etcd::EtcdCluster;
use meridian_tests::meridian::{ctl_json, meridianctl, ControlPlane, Prober};
use meridian_tests::util::{free_addr, wait_for};

/// Measure failover and failback times end to end.
#[derive(Debug, Parser)]
struct Args {
    /// Trials per scenario (p99 wants at least 20).
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// How long the flap test runs at each share, in seconds (0 skips it).
    #[arg(long, default_value_t = 300)]
    flap_seconds: u64,
    /// The flap test's shares of refused connections, run one after the other.
    #[arg(long, value_delimiter = ',', default_values_t = [0.1, 0.2], value_parser = parse_share)]
    flap_shares: Vec<f64>,
    /// Skip the leader-kill scenario.
    #[arg(long)]
    no_leader_kill: bool,
    /// Skip the silent-PoP scenario.
    #[arg(long)]
    no_silent: bool,
    /// Print one JSON object at the end.
    #[arg(long)]
    json: bool,
    /// Override the policy's probe interval (e.g. 500ms); default: the policy default.
    #[arg(long)]
    probe_interval: Option<String>,
}

fn parse_share(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| (0.0..=1.0).contains(v))
        .ok_or_else(|| format!("`{s}` is not a share in [0, 1]"))
}

const POPS: [(&str, &str); 5] = [
    ("fra1", "127.0.0.51"),
    ("ams1", "127.0.0.52"),
    ("iad1", "127.0.0.53"),
    ("sfo1", "127.0.0.54"),
    ("sin1", "127.0.0.55"),
];
/// How every component reaches the control plane (the harness's only setup).
const TRANSPORT: &str = "mtls";
/// The PoP that is killed: the only one eu's clients use while it is healthy.
const VICTIM: &str = "fra1";
const VICTIM_IP: &str = "127.0.0.51";
/// Announced by the victim (through its Anycast agent) and by ams1.
const ANYCAST_PREFIX: &str = "198.51.100.0/24";
const FLAPPER: &str = "iad1";
const FLAPPER_IP: &str = "127.0.0.53";

fn topology(port: u16, probe_interval: Option<&str>) -> String {
    let mut t = String::from(
        "[policy]\n# The safe defaults: quorum of regions, fall 2, fast confirmation.\nlatency_source = \"hints\"\nslow_start_bake = \"2s\"\n",
    );
    if let Some(i) = probe_interval {
        t.push_str(&format!("probe_interval = \"{i}\"\n"));
    }
    for (name, ip) in POPS {
        // The victim and ams1 announce the same anycast prefix (ams1 keeps it up
        // when the victim's route goes).
        let anycast = if name == VICTIM || name == "ams1" {
            format!("anycast_prefixes = [\"{ANYCAST_PREFIX}\"]\n")
        } else {
            String::new()
        };
        t.push_str(&format!(
            "\n[[pops]]\nid = \"{name}\"\ncapacity = 100\nipv4 = [\"{ip}\"]\n{anycast}[[pops.endpoints]]\nname = \"http\"\nkind = \"http\"\nurl = \"http://{ip}:{port}/health\"\n"
        ));
    }
    t.push_str(
        r#"
[[regions]]
id = "eu"
demand = 50
client_prefixes = ["127.0.0.0/8"]
latency_hints = { fra1 = "10ms", ams1 = "12ms", iad1 = "85ms", sfo1 = "150ms", sin1 = "160ms" }

[[regions]]
id = "us"
demand = 50
client_prefixes = ["10.2.0.0/16"]
latency_hints = { iad1 = "10ms", sfo1 = "60ms", fra1 = "85ms", ams1 = "90ms", sin1 = "200ms" }

[[regions]]
id = "ap"
demand = 50
client_prefixes = ["10.3.0.0/16"]
latency_hints = { sin1 = "10ms", sfo1 = "120ms", fra1 = "160ms", ams1 = "165ms", iad1 = "210ms" }
"#,
    );
    t
}

const ZONES: &str = "[[zones]]\norigin = \"example.net.\"\nns = [\"ns1.example.net.\"]\n[[zones.records]]\nname = \"ns1\"\ntype = \"A\"\nvalue = \"127.0.0.1\"\n[[zones.steered]]\nname = \"www\"\nanswers = 1\n";

/// The addresses every agent returns for `www` from region eu, one dig each.
async fn answers(agents: &[SocketAddr], subnet: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for a in agents {
        out.push(
            dig(*a, &["www.example.net", "A", &format!("+subnet={subnet}")])
                .await
                .addresses(),
        );
    }
    out
}

struct Stats {
    samples: Vec<Duration>,
}

impl Stats {
    fn summary(&self) -> serde_json::Value {
        let mut s: Vec<f64> = self.samples.iter().map(|d| d.as_secs_f64()).collect();
        s.sort_by(f64::total_cmp);
        if s.is_empty() {
            return serde_json::json!(null);
        }
        let p = |q: f64| s[((s.len() as f64 - 1.0) * q).round() as usize];
        serde_json::json!({"n": s.len(), "min_s": s[0], "median_s": p(0.5), "p99_s": p(0.99), "max_s": s[s.len() - 1]})
    }
}

async fn sim(control: SocketAddr, action: &str, pop: &str) {
    let out = tokio::process::Command::new("curl")
        .args(["-sf", "-X", "POST", &format!("http://{control}/{action}/{pop}")])
        .output()
        .await
        .expect("curl");
    assert!(out.status.success(), "sim_pops {action} {pop}: {out:?}");
}

/// What happens to the victim in an outage scenario.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// The PoP's server stops: connections refused.
    Kill,
    /// The PoP goes silent: connections accepted, never answered.
    Silence,
}

impl Outage {
    /// The `sim_pops` control action.
    fn action(self) -> &'static str {
        match self {
            Outage::Kill => "fail",
            Outage::Silence => "silence",
        }
    }
}

/// The running stack, as the scenarios use it.
struct Stack {
    cps: Vec<ControlPlane>,
    /// The replicas' endpoints, comma-separated (for meridianctl).
    replicas: String,
    /// `sim_pops`' control API.
    control: SocketAddr,
    agent_addrs: Vec<SocketAddr>,
    bgp: Arc<SpeakerAndRouter>,
}

impl Stack {
    /// Whether every agent answers eu with the victim alone.
    async fn victim_only(&self) -> bool {
        answers(&self.agent_addrs, "127.0.0.0/24")
            .await
            .iter()
            .all(|a| a == &vec![VICTIM_IP.to_string()])
    }

    /// Waits until `pop`'s verdict is `state`.
    async fn wait_state(&self, pop: &str, state: &str) {
        wait_for(
            &format!("{pop}'s verdict to be {state}"),
            Duration::from_secs(120),
            || async {
                let health = ctl_json(&self.replicas, &["health"]).await;
                health["pops"]
                    .as_array()?
                    .iter()
                    .any(|p| p["pop"] == pop && p["state"] == state)
                    .then_some(())
            },
        )
        .await;
    }
}

/// The outage scenarios (kill, kill + leader, silent): `trials` times, after a random
/// 0–2 s pause, the victim goes down (`outage`), with the leader SIGKILLed at the same
/// moment if asked; times until no agent returns the victim and until its anycast
/// route leaves the router, then heals it and times until it is back at full weight.
async fn outage_scenario(
    stack: &mut Stack,
    outage: Outage,
    with_leader_kill: bool,
    trials: usize,
) -> serde_json::Value {
    let mut removal = Stats { samples: Vec::new() };
    let mut route_removal = Stats { samples: Vec::new() };
    let mut failback = Stats { samples: Vec::new() };
    // Where the time goes, from the events: the kill to the first verdict change
    // (a region saw it), to DOWN (the quorum), to the first plan published after.
    let mut first_verdict = Stats { samples: Vec::new() };
    let mut down_verdict = Stats { samples: Vec::new() };
    let mut first_plan = Stats { samples: Vec::new() };
    for trial in 0..trials {
        let pause = Duration::from_millis(rand::random::<u64>() % 2000);
        tokio::time::sleep(pause).await;
        let mut killed_leader = None;
        let start = Instant::now();
        let start_ms = unix_ms_now();
        sim(stack.control, outage.action(), VICTIM).await;
        // The route at the router, timed from the same moment.
        let route_gone = {
            let bgp = stack.bgp.clone();
            tokio::spawn(async move {
                while bgp.router.has(ANYCAST_PREFIX).await {
                    if start.elapsed() > Duration::from_secs(60) {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Some(start.elapsed())
            })
        };
        if with_leader_kill {
            let status = ctl_json(&stack.replicas, &["status"]).await;
            let leader = status["leader"].as_str().unwrap_or_default().to_string();
            if let Some(i) = stack.cps.iter().position(|c| c.id == leader) {
                stack.cps[i].kill();
                killed_leader = Some(i);
            }
        }
        // Poll every 50 ms until no agent returns the victim.
        loop {
            let all = answers(&stack.agent_addrs, "127.0.0.0/24").await;
            if all.iter().all(|a| !a.is_empty() && !a.contains(&VICTIM_IP.to_string())) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the victim never left the answers ({outage:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = start.elapsed();
        removal.samples.push(took);
        let timeline = timeline(stack, start_ms).await;
        for (stats, at) in [
            (&mut first_verdict, timeline.0),
            (&mut down_verdict, timeline.1),
            (&mut first_plan, timeline.2),
        ] {
            stats.samples.extend(at);
        }
        let route_took = route_gone
            .await
            .unwrap()
            .expect("the victim's route never left the router");
        route_removal.samples.push(route_took);
        if let Some(i) = killed_leader {
            stack.cps[i].restart();
            stack.cps[i].wait_ready().await;
        }
        // A real outage lasts: let the verdict settle on DOWN (every region agrees)
        // before healing, so failback starts from a removed PoP.
        stack.wait_state(VICTIM, "DOWN").await;
        let healed = Instant::now();
        sim(stack.control, "heal", VICTIM).await;
        loop {
            let plan = ctl_json(&stack.replicas, &["plan", "--region", "eu"]).await;
            let full = plan["regions"][0]["pops"].as_array().is_some_and(|ws| {
                ws.iter()
                    .any(|w| w["pop"] == VICTIM && w["weight"].as_f64().unwrap_or(0.0) > 0.999)
            });
            if full && stack.victim_only().await {
                break;
            }
            assert!(
                healed.elapsed() < Duration::from_secs(120),
                "the victim never came back at full weight"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        failback.samples.push(healed.elapsed());
        eprintln!(
            "trial {trial} ({outage:?}, leader kill: {with_leader_kill}): removed after {took:?} (route gone at the router after {route_took:?}; first verdict change {:?}, DOWN {:?}, first plan {:?}), back at full weight after {:?}",
            timeline.0,
            timeline.1,
            timeline.2,
            healed.elapsed()
        );
        wait_for(
            "the victim's route back at the router",
            Duration::from_secs(60),
            || async { stack.bgp.router.has(ANYCAST_PREFIX).await.then_some(()) },
        )
        .await;
    }
    serde_json::json!({
        "removal": removal.summary(),
        "anycast_route_removal": route_removal.summary(),
        "failback_full_weight": failback.summary(),
        "events_first_verdict_change": first_verdict.summary(),
        "events_down": down_verdict.summary(),
        "events_first_plan": first_plan.summary(),
    })
}

/// The flap test at one share: the flapper (us's only PoP in use) refuses `share` of
/// connections for `seconds`; counts its removals from us's answers, unanswered
/// queries, the victim's anycast route withdrawals and the flapper's DOWN and
/// DEGRADED verdicts. Heals the flapper and waits until it is UP and back in every
/// answer before returning, so the next share starts clean.
async fn flap_scenario(stack: &Stack, share: f64, seconds: u64) -> serde_json::Value {
    let since_ms = unix_ms_now();
    sim(stack.control, "flaky", &format!("{FLAPPER}?refuse={share}")).await;
    let start = Instant::now();
    let (mut queries, mut removals, mut was_present, mut unanswered) = (0u64, 0u64, true, 0u64);
    let (mut route_withdrawals, mut route_was) = (0u64, stack.bgp.router.has(ANYCAST_PREFIX).await);
    while start.elapsed() < Duration::from_secs(seconds) {
        let all = answers(&stack.agent_addrs, "10.2.0.0/24").await;
        queries += all.len() as u64;
        // A query dig got no answer to (a lost UDP packet on a busy machine) says
        // nothing about the plan: count it apart, not as a removal.
        unanswered += all.iter().filter(|a| a.is_empty()).count() as u64;
        let present = all
            .iter()
            .filter(|a| !a.is_empty())
            .all(|a| a.contains(&FLAPPER_IP.to_string()));
        if was_present && !present {
            removals += 1;
        }
        was_present = present;
        // The victim's route must not move while another PoP flaps.
        let route = stack.bgp.router.has(ANYCAST_PREFIX).await;
        if route_was && !route {
            route_withdrawals += 1;
        }
        route_was = route;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sim(stack.control, "heal", FLAPPER).await;
    // Only this share's verdicts: events since it started (earlier shares' are older).
    let events = ctl_json(&stack.replicas, &["events", "--pop", FLAPPER, "--limit", "2000"]).await;
    let count = |what: &str| {
        events
            .as_array()
            .map(|e| {
                e.iter()
                    .filter(|e| e["at_unix_ms"].as_i64().unwrap_or(0) >= since_ms)
                    .filter(|e| e["message"].as_str().unwrap_or("").contains(what))
                    .count()
            })
            .unwrap_or(0)
    };
    let (downs, degraded) = (count("→ DOWN"), count("→ DEGRADED"));
    // Each removal verdict with its time into the share, to tell a learning-phase
    // removal (the first seconds) from one in the steady state.
    let removals_seen: Vec<String> = events
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| e["at_unix_ms"].as_i64().unwrap_or(0) >= since_ms)
                .filter_map(|e| {
                    let m = e["message"].as_str().unwrap_or("");
                    (m.contains("→ DOWN") || m.contains("→ DEGRADED")).then(|| {
                        let at = e["at_unix_ms"].as_i64().unwrap_or(0) - since_ms;
                        format!("+{:.1}s {m}", at as f64 / 1000.0)
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    eprintln!(
        "flap at {share}: {removals} removals from answers, {unanswered} unanswered of {queries} queries, {downs} DOWN and {degraded} DEGRADED verdicts, {route_withdrawals} route withdrawals {removals_seen:?}"
    );
    stack.wait_state(FLAPPER, "UP").await;
    wait_for(
        "every agent to answer us with the flapper again",
        Duration::from_secs(120),
        || async {
            answers(&stack.agent_addrs, "10.2.0.0/24")
                .await
                .iter()
                .all(|a| a.contains(&FLAPPER_IP.to_string()))
                .then_some(())
        },
    )
    .await;
    serde_json::json!({"seconds": seconds, "refuse_share": share, "queries": queries, "removals_from_answers": removals, "anycast_route_withdrawals": route_withdrawals, "unanswered_queries": unanswered, "down_verdicts": downs, "degraded_verdicts": degraded, "removal_verdicts": removals_seen})
}

/// Now, in ms since the Unix epoch (as events' `at_unix_ms`).
fn unix_ms_now() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(now.as_millis()).unwrap()
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdCluster::start(1).await;
    let endpoints = etcd.endpoints_csv();
    let cps: Vec<ControlPlane> = ["cp-1", "cp-2", "cp-3"]
        .iter()
        .map(|id| {
            ControlPlane::start(
                id,
                dir.path(),
                &["--etcd-endpoints", endpoints.as_str(), "--lease-ttl", "2s"],
            )
        })
        .collect();
    for cp in &cps {
        cp.wait_ready().await;
    }
    let replica_list: Vec<String> = cps.iter().map(|c| c.endpoint()).collect();
    let replicas = replica_list.join(",");

    // Simulated PoPs on a port picked now, and their control API.
    let pop_port = free_addr().port();
    let control = free_addr();
    let pops_arg: Vec<String> = POPS.iter().map(|(n, ip)| format!("{n}={ip}:{pop_port}")).collect();
    let sim_log = std::fs::File::create(dir.path().join("sim_pops.log")).unwrap();
    let mut sim_pops = std::process::Command::new(meridian_tests::meridian::bin("sim_pops"))
        .args(["--pops", &pops_arg.join(","), "--control", &control.to_string()])
        .stdout(sim_log.try_clone().unwrap())
        .stderr(sim_log)
        .spawn()
        .unwrap();

    let topo = dir.path().join("topology.toml");
    std::fs::write(&topo, topology(pop_port, args.probe_interval.as_deref())).unwrap();
    let out = meridianctl(&["-e", &replicas, "apply", "-f", topo.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let _probers: Vec<Prober> = ["eu", "us", "ap"]
        .iter()
        .map(|r| Prober::start(&format!("p-{r}"), r, &replicas, None, dir.path()))
        .collect();
    let agents: Vec<DnsAgent> = ["dns-1", "dns-2"]
        .iter()
        .map(|id| DnsAgent::start(id, dir.path(), &replica_list, ZONES))
        .collect();
    let agent_addrs: Vec<SocketAddr> = agents.iter().map(|a| a.dns_addr).collect();
    // The victim's BGP speaker, the upstream router and the Anycast agent.
    let bgp = Arc::new(SpeakerAndRouter::start(dir.path(), [127, 0, 91]));
    let _anycast = AnycastAgent::start(dir.path(), "anycast-fra1", VICTIM, &replica_list, &bgp.speaker);
    wait_for("the victim's route at the router", Duration::from_secs(120), || async {
        bgp.router.has(ANYCAST_PREFIX).await.then_some(())
    })
    .await;
    let mut stack = Stack {
        cps,
        replicas,
        control,
        agent_addrs,
        bgp,
    };
    wait_for(
        "every agent to answer eu with the victim",
        Duration::from_secs(120),
        || async { stack.victim_only().await.then_some(()) },
    )
    .await;
    eprintln!("stack up ({TRANSPORT}: mutual TLS, roles enforced): etcd, 3 replicas, 3 probers, 2 DNS agents, 5 PoPs; starting trials");

    let mut results = serde_json::Map::new();
    results.insert("transport".into(), serde_json::json!(TRANSPORT));
    let mut scenarios = vec![("kill", Outage::Kill, false)];
    if !args.no_leader_kill {
        scenarios.push(("kill_with_leader_kill", Outage::Kill, true));
    }
    if !args.no_silent {
        scenarios.push(("silent", Outage::Silence, false));
    }
    for (key, outage, with_leader_kill) in scenarios {
        let summary = outage_scenario(&mut stack, outage, with_leader_kill, args.trials).await;
        results.insert(key.into(), summary);
    }

    if args.flap_seconds > 0 && !args.flap_shares.is_empty() {
        let mut flaps = Vec::new();
        for &share in &args.flap_shares {
            flaps.push(flap_scenario(&stack, share, args.flap_seconds).await);
        }
        results.insert("flap".into(), serde_json::Value::Array(flaps));
    }
    let _ = sim_pops.kill();
    let _ = sim_pops.wait();
    drop(etcd);

    let report = serde_json::Value::Object(results);
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report).unwrap());
    }
}

/// From the events (stamped by the replica that recorded them, on this machine's
/// clock): how long after `start_ms` the victim's verdict first changed, turned
/// DOWN, and the first plan was published.
async fn timeline(stack: &Stack, start_ms: i64) -> (Option<Duration>, Option<Duration>, Option<Duration>) {
    let events = ctl_json(&stack.replicas, &["events", "--limit", "200"]).await;
    let after = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        events
            .as_array()?
            .iter()
            .filter(|e| e["at_unix_ms"].as_i64().unwrap_or(0) >= start_ms)
            .filter(|e| pred(e))
            .map(|e| e["at_unix_ms"].as_i64().unwrap_or(0))
            .min()
            .map(|at| Duration::from_millis((at - start_ms).max(0) as u64))
    };
    let verdict = |e: &serde_json::Value| {
        let m = e["message"].as_str().unwrap_or("");
        m.starts_with(&format!("{VICTIM}:")) && m.contains(" → ")
    };
    (
        after(&verdict),
        after(&|e| verdict(e) && e["message"].as_str().unwrap_or("").contains("→ DOWN")),
        after(&|e| e["kind"] == "plan_published"),
    )
}
