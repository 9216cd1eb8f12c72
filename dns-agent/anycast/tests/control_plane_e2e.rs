//! The agent binary end to end: a real control plane (embedded store, mutual TLS)
//! publishes a plan whose anycast entries name fra1 and ams1 for one prefix; a real
//! `meridian-anycast-agent` for fra1 drives gobgpd A, peered with router B, which
//! also hears C (ams1's speaker). The route appears at B, `/ready` turns true, the
//! agent's report reaches the control plane (`meridianctl agents`), and when the
//! control plane is gone the route stays, drift is still corrected, and a SIGTERM
//! leaves the route in place (withdraw_on_shutdown = false).
//!
//! Needs the control plane's binary: `cargo build -p meridian-control-plane
//! -p meridianctl` (scripts/test.sh builds every binary first).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};

use common::*;
use meridian_anycast_agent::backend::Backend;
use meridian_anycast_agent::core::Route;
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

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_follows_the_control_plane_and_keeps_its_routes_without_it() {
    let t = Topology::start().await;
    t.c.backend("192.0.2.20")
        .announce(P.parse().unwrap(), Route::default())
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cp-data").display().to_string();
    let mut cp = ControlPlane::start("cp-1", dir.path(), &["--data-dir", &data, "--lease-ttl", "2s"]);
    cp.wait_ready().await;
    let ep = cp.endpoint();
    let topo = dir.path().join("topology.toml");
    std::fs::write(&topo, TOPOLOGY).unwrap();
    let applied = ctl_json(&ep, &["apply", "-f", topo.to_str().unwrap()]).await;
    assert_eq!(applied["applied"], true, "{applied}");

    let pki = meridian_tests::pki::pki();
    let me = pki.agent("anycast-fra1");
    let admin = meridian_tests::util::free_addr();
    let config = format!(
        "agent_id = \"anycast-fra1\"\npop = \"fra1\"\ncontrol_plane = [\"{ep}\"]\nadmin_addr = \"{admin}\"\n\
         state_dir = \"{}\"\nreconcile_interval = \"500ms\"\nreconnect_initial = \"100ms\"\nreconnect_max = \"1s\"\n\
         connect_timeout = \"1s\"\n\n[speaker]\nkind = \"gobgp\"\napi = \"{}\"\nnext_hop = \"192.0.2.10\"\nlocal_as = {AS_A}\n\n\
         [tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.path().join("agent-state").display(),
        t.a.api,
        pki.ca_pem().display(),
        me.cert.display(),
        me.key.display(),
    );
    let config_path = dir.path().join("anycast-agent.toml");
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(dir.path().join("anycast-agent.log")).unwrap();
    let mut agent = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_meridian-anycast-agent"))
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
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
