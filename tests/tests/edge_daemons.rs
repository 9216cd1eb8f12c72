//! The prober and DNS agent share the daemon skeleton: validated config,
//! `--check-config`, the admin listener with an honest `/ready`, bounded shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use meridian_tests::meridian::{bin, http_get};
use meridian_tests::util::{free_addr, wait_for};

fn check_config(binary: &str, toml: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("daemon.toml");
    std::fs::write(&path, toml).unwrap();
    Command::new(bin(binary))
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .unwrap()
}

#[test]
fn prober_and_agent_configs_are_validated() {
    let ok = check_config("meridian-prober", "prober_id = \"p1\"\nregion = \"eu-west\"\n");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let bad = check_config(
        "meridian-prober",
        "prober_id = \"p1\"\nregion = \"eu-west\"\nintervall = \"1s\"\n",
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("intervall"));
    let bad = check_config("meridian-prober", "prober_id = \"p1\"\nregion = \"EU West\"\n");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("`region`"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let ok = check_config(
        "meridian-dns-agent",
        "agent_id = \"dns-1\"\ndns_addr = \"127.0.0.1:5353\"\n",
    );
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let bad = check_config("meridian-dns-agent", "agent_id = \"dns-1\"\ndns_addr = 53\n");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("dns_addr"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prober_without_a_control_plane_is_not_ready_says_why_and_stops_on_sigterm() {
    let admin = free_addr();
    let nowhere = format!("http://{}", free_addr());
    let mut child = KillOnDrop(
        Command::new(bin("meridian-prober"))
            .args([
                "--prober-id",
                "p1",
                "--region",
                "eu",
                "--control-plane",
                &nowhere,
                "--admin-addr",
                &admin.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (code, body) = wait_for("the prober's admin listener", Duration::from_secs(60), || {
        http_get(admin, "/ready")
    })
    .await;
    assert_eq!(code, 503);
    assert!(body.contains("no probe assignments"), "{body}");
    assert_eq!(http_get(admin, "/live").await.unwrap().0, 200);
    Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    let status = wait_for("the prober to exit after SIGTERM", Duration::from_secs(30), || {
        let s = child.0.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(status.success(), "{status:?}");
}

/// Kills the child process when the test ends, even when an assertion failed.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
