//! The agent binary end to end: a real control plane (embedded store, mutual TLS)
//! publishes a plan whose anycast entries name fra1 and ams1 for one prefix; a real
//! `meridian-anycast-agent` for fra1 drives gobgpd A, peered with router B, which
//! also hears C (ams1's speaker). The route appears at B, `/ready` turns true, the
//! agent's report reaches the control plane (`meridianctl agents`), and when the
//! control plane is gone the route stays, drift is still corrected, and a SIGTERM
//! leaves the route in place (withdraw_on_shutdown = false). A second test runs a
//! drain ladder through the control plane (probers, bakes, analysis of the agent's
//! reports) and watches each Anycast rung arrive at the router, then the undrain.
//!
//! Needs the other binaries: `cargo build -p meridian-control-plane -p meridianctl
//! -p meridian-prober` (scripts/test.sh builds every binary first).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};

use common::*;
use meridian_anycast_agent::backend::Backend;
use meridian_tests::meridian::{ctl_json, http_get, meridianctl, ControlPlane};
use serde_json::Value;

const P: &str = "198.51.100.0/24";

const TOPOLOGY: &str = r#"
[[pops]]
id = "fra1"
capacity = 100
ipv4 = ["127.0.0.21"]
anycast_prefixes = ["198.51.100.0/24"]
[[pops.endpoints]]
name = "tcp"
kind = "tcp"
address = "127.0.0.21:9"

[[pops]]
id = "ams1"
capacity = 100
ipv4 = ["127.0.0.22"]
anycast_prefixes = ["198.51.100.0/24"]
[[pops.endpoints]]
name = "tcp"
kind = "tcp"
address = "127.0.0.22:9"

[[regions]]
id = "eu"
demand = 50
client_prefixes = ["10.1.0.0/16"]
latency_hints = { fra1 = "10ms", ams1 = "15ms" }
"#;

struct KillOnDrop(std::process::Child);

/// Starts `meridian-anycast-agent` for fra1 driving speaker A, following `ep` over
/// mutual TLS; its log is `dir/anycast-agent.log`.
fn start_agent(t: &Topology, ep: &str, dir: &std::path::Path) -> (KillOnDrop, std::net::SocketAddr) {
    let pki = meridian_tests::pki::pki();
    let me = pki.agent("anycast-fra1");
    let admin = meridian_tests::util::free_addr();
    let config = format!(
        "agent_id = \"anycast-fra1\"\npop = \"fra1\"\ncontrol_plane = [\"{ep}\"]\nadmin_addr = \"{admin}\"\n\
         state_dir = \"{}\"\nreconcile_interval = \"500ms\"\nreconnect_initial = \"100ms\"\nreconnect_max = \"1s\"\n\
         connect_timeout = \"1s\"\n\n[speaker]\nkind = \"gobgp\"\napi = \"{}\"\nnext_hop = \"192.0.2.10\"\nlocal_as = {AS_A}\n\n\
         [tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.join("agent-state").display(),
        t.a.api,
        pki.ca_pem().display(),
        me.cert.display(),
        me.key.display(),
    );
    let config_path = dir.join("anycast-agent.toml");
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(dir.join("anycast-agent.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_meridian-anycast-agent"))
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    (KillOnDrop(child), admin)
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_follows_the_control_plane_and_keeps_its_routes_without_it() {
    let t = Topology::start().await;
    t.c.announce_incomplete(P, "192.0.2.20").await;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cp-data").display().to_string();
    let mut cp = ControlPlane::start("cp-1", dir.path(), &["--data-dir", &data, "--lease-ttl", "2s"]);
    cp.wait_ready().await;
    let ep = cp.endpoint();
    let topo = dir.path().join("topology.toml");
    std::fs::write(&topo, TOPOLOGY).unwrap();
    let applied = ctl_json(&ep, &["apply", "-f", topo.to_str().unwrap()]).await;
    assert_eq!(applied["applied"], true, "{applied}");

    let (agent, admin) = start_agent(&t, &ep, dir.path());
    let mut agent = agent;
    let agent_log = || std::fs::read_to_string(dir.path().join("anycast-agent.log")).unwrap_or_default();

    let a_ip = t.a_ip();
    t.wait_router("fra1's route at the router", P, |paths| {
        let p = from(paths, &a_ip).ok_or_else(|| format!("no path from A; agent log:\n{}", agent_log()))?;
        if p.as_path != [AS_A] || p.next_hop != "192.0.2.10" {
            return Err(format!("unexpected {p:?}"));
        }
        Ok(())
    })
    .await;
    let body = wait_for("the agent to be ready", DEADLINE, || async {
        match http_get(admin, "/ready").await {
            Some((200, body)) => Ok(body),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(body.contains("applied to the speaker"), "{body}");

    // The agent's report reaches the control plane.
    wait_for("the report in `meridianctl agents`", DEADLINE, || async {
        let out = meridianctl(&["-e", &ep, "agents", "-o", "json"]).await;
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let text = v.to_string();
        let agents = v.as_array().or_else(|| v["agents"].as_array()).ok_or(text.clone())?;
        let me = agents
            .iter()
            .find(|a| a["agent_id"] == "anycast-fra1")
            .ok_or(text.clone())?;
        let prefix = me["anycast"].as_array().and_then(|a| a.first()).ok_or(text.clone())?;
        if prefix["prefix"] == P && prefix["actual"] == "announce" && prefix["desired"] == "announce" {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;

    // The control plane goes away: still ready (says so), the route stays.
    cp.kill();
    let body = wait_for("/ready to say the control plane is unreachable", DEADLINE, || async {
        match http_get(admin, "/ready").await {
            Some((200, body)) if body.contains("control plane unreachable") => Ok(body),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(body.contains("keeping the routes"), "{body}");
    assert!(
        from(&t.router_paths(P).await.unwrap(), &a_ip).is_some(),
        "the route stays"
    );

    // Drift made by hand is still corrected from the last applied plan.
    let status = Command::new(require_tool("gobgp", "gobgpd"))
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
    wait_for("the agent to put the route back", DEADLINE, || async {
        let a = t.a.backend("192.0.2.10").list().await.map_err(|e| e.to_string())?;
        a.get(&P.parse().unwrap()).map(|_| ()).ok_or("not yet".to_string())
    })
    .await;
    t.wait_router("fra1's route back at the router", P, |paths| {
        from(paths, &a_ip).map(|_| ()).ok_or("no path from A".into())
    })
    .await;

    // SIGTERM: the agent exits 0 and leaves the route.
    Command::new("kill")
        .args(["-TERM", &agent.0.id().to_string()])
        .status()
        .unwrap();
    let status = wait_for("the agent to exit", DEADLINE, || {
        let s = agent.0.try_wait().unwrap();
        async move { s.ok_or("running".to_string()) }
    })
    .await;
    assert!(status.success(), "{status:?}\n{}", agent_log());
    let a = t.a.backend("192.0.2.10").list().await.unwrap();
    assert!(
        a.contains_key(&P.parse().unwrap()),
        "the route stays after the agent stops"
    );
    assert!(agent_log().contains("the speaker keeps its routes"), "{}", agent_log());
}

/// A drain ladder run by the control plane (probers, health, bakes, analysis) moves
/// the router's best path rung by rung through the agent: prepend ×1, ×3,
/// GRACEFUL_SHUTDOWN, withdraw; an undrain brings the plain announcement back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_ladder_from_the_control_plane_moves_the_routers_best_path_rung_by_rung() {
    let t = Topology::start().await;
    t.c.announce_incomplete(P, "192.0.2.20").await;
    let fra = meridian_tests::targets::HttpTarget::start(std::net::Ipv4Addr::new(127, 0, 0, 91)).await;
    let ams = meridian_tests::targets::HttpTarget::start(std::net::Ipv4Addr::new(127, 0, 0, 92)).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cp-data").display().to_string();
    let cp = ControlPlane::start("cp-1", dir.path(), &["--data-dir", &data]);
    cp.wait_ready().await;
    let ep = cp.endpoint();
    let topology = format!(
        "[policy]\nlatency_source = \"hints\"\nslow_start_stages = [1.0]\n\n\
         [[pops]]\nid = \"fra1\"\ncapacity = 100\nipv4 = [\"127.0.0.91\"]\nanycast_prefixes = [\"{P}\"]\n\
         [[pops.endpoints]]\nname = \"http\"\nkind = \"http\"\nurl = \"{}\"\n\n\
         [[pops]]\nid = \"ams1\"\ncapacity = 100\nipv4 = [\"127.0.0.92\"]\nanycast_prefixes = [\"{P}\"]\n\
         [[pops.endpoints]]\nname = \"http\"\nkind = \"http\"\nurl = \"{}\"\n\n\
         [[regions]]\nid = \"eu\"\ndemand = 50\nclient_prefixes = [\"10.1.0.0/16\"]\n\
         latency_hints = {{ fra1 = \"10ms\", ams1 = \"12ms\" }}\n",
        fra.url(),
        ams.url()
    );
    let topo = dir.path().join("topology.toml");
    std::fs::write(&topo, topology).unwrap();
    let applied = ctl_json(&ep, &["apply", "-f", topo.to_str().unwrap()]).await;
    assert_eq!(applied["applied"], true, "{applied}");
    let _probers: Vec<meridian_tests::meridian::Prober> = ["eu", "us", "ap"]
        .iter()
        .map(|r| meridian_tests::meridian::Prober::start(&format!("p-{r}"), r, &ep, None, dir.path()))
        .collect();
    let (_agent, _admin) = start_agent(&t, &ep, dir.path());
    let a_ip = t.a_ip();
    wait_for("every PoP UP", DEADLINE, || async {
        let health = ctl_json(&ep, &["health"]).await;
        let all_up = health["pops"]
            .as_array()
            .is_some_and(|p| p.iter().all(|p| p["state"] == "UP"));
        if all_up {
            Ok(())
        } else {
            Err(health.to_string())
        }
    })
    .await;
    t.wait_router("fra1's plain route", P, |paths| {
        let p = from(paths, &a_ip).ok_or("no path from A")?;
        (p.as_path.len() == 1).then_some(()).ok_or(format!("{p:?}"))
    })
    .await;

    let out = meridian_tests::meridian::meridianctl_as(
        "otto",
        "operator",
        &[
            "-e",
            &ep,
            "drain",
            "fra1",
            "--reason",
            "maintenance",
            "--steps",
            "75,50,25,0",
            "--bake",
            "3s",
            "-o",
            "json",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let started: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = started["id"].as_str().unwrap().to_string();
    let agent_log = || std::fs::read_to_string(dir.path().join("anycast-agent.log")).unwrap_or_default();
    let rung = |as_len: usize, gshut: bool| {
        let a_ip = a_ip.clone();
        move |paths: &[meridian_anycast_agent::gobgp::RibPath]| {
            let p = from(paths, &a_ip).ok_or("no path from A")?;
            let has_gshut = p.communities.contains(&meridian_anycast_agent::core::GRACEFUL_SHUTDOWN);
            if p.as_path.len() == as_len && has_gshut == gshut {
                Ok(())
            } else {
                Err(format!("A has {p:?}"))
            }
        }
    };
    t.wait_router("rung 1: prepend ×1", P, rung(2, false)).await;
    t.wait_router("rung 2: prepend ×3", P, rung(4, false)).await;
    t.wait_router("rung 3: GRACEFUL_SHUTDOWN", P, |paths| {
        let p = from(paths, &a_ip).ok_or("no path from A")?;
        p.communities
            .contains(&meridian_anycast_agent::core::GRACEFUL_SHUTDOWN)
            .then_some(())
            .ok_or(format!("A has {p:?}"))
    })
    .await;
    t.wait_router("rung 4: withdrawn", P, |paths| match from(paths, &a_ip) {
        None => Ok(()),
        Some(p) => Err(format!("A still has {p:?}; agent log:\n{}", agent_log())),
    })
    .await;
    // Each rung was ACKed and analysed with the agent's reports: the ladder completes.
    wait_for("the ladder to complete", DEADLINE, || async {
        let list = ctl_json(&ep, &["changes"]).await;
        let c = list
            .as_array()
            .and_then(|l| l.iter().find(|c| c["id"] == id.as_str()).cloned())
            .ok_or(list.to_string())?;
        if c["state"] == "completed" {
            Ok(())
        } else {
            Err(c.to_string())
        }
    })
    .await;
    let out = meridian_tests::meridian::meridianctl_as(
        "otto",
        "operator",
        &["-e", &ep, "undrain", "fra1", "--reason", "done", "-o", "json"],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    t.wait_router("undrained: fra1's plain route back", P, rung(1, false))
        .await;
}
