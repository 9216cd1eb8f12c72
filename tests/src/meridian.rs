//! Meridian's own daemons and CLI as real processes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::util::{free_addr, target_bin_dir, wait_for};

/// Path of one of this workspace's binaries, or a panic saying how to build it.
pub fn bin(name: &str) -> PathBuf {
    let path = target_bin_dir().join(name);
    assert!(
        path.is_file(),
        "binary {} not found: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// One `meridian-control-plane` process, killed on drop.
pub struct ControlPlane {
    pub id: String,
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub log_path: PathBuf,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl ControlPlane {
    /// Starts a replica with `id`, ports picked now, logging to `dir/<id>.log`, and
    /// the given extra flags (store selection, lease TTL, ...).
    pub fn start(id: &str, dir: &Path, extra_args: &[&str]) -> Self {
        let mut cp = ControlPlane {
            id: id.to_string(),
            grpc_addr: free_addr(),
            admin_addr: free_addr(),
            log_path: dir.join(format!("{id}.log")),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        cp.spawn();
        cp
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open log");
        // Mutual TLS with the process's test CA; roles enforced (the default).
        let pki = crate::pki::pki();
        let me = pki.replica(&self.id);
        let child = Command::new(bin("meridian-control-plane"))
            .arg("--tls-cert")
            .arg(&me.cert)
            .arg("--tls-key")
            .arg(&me.key)
            .arg("--tls-client-ca")
            .arg(pki.ca_pem())
            .arg("--replica-id")
            .arg(&self.id)
            .arg("--grpc-addr")
            .arg(self.grpc_addr.to_string())
            .arg("--admin-addr")
            .arg(self.admin_addr.to_string())
            .args(&self.extra_args)
            .env("MERIDIAN_LOG", "info,meridian_store=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn meridian-control-plane");
        self.child = Some(child);
    }

    /// Restarts a stopped or killed replica with the same id, ports and flags.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn endpoint(&self) -> String {
        format!("https://{}", self.grpc_addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns the exit status.
    pub fn terminate(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let start = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            None => true,
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `meridianctl status -o json` against this replica; `None` when it does not answer.
    pub async fn status(&self) -> Option<serde_json::Value> {
        status_json(&self.endpoint()).await
    }

    /// Waits until this replica answers and reports `ready`.
    pub async fn wait_ready(&self) -> serde_json::Value {
        let what = format!("replica {} to become ready (log {})", self.id, self.log_path.display());
        wait_for(&what, Duration::from_secs(60), || async {
            self.status()
                .await
                .filter(|s| s["ready"] == serde_json::Value::Bool(true))
        })
        .await
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `meridianctl` with `args` (blocking, in a worker thread), as the harness's
/// admin: the test CA and an admin client certificate come from the environment
/// (MERIDIAN_CA, MERIDIAN_CERT, MERIDIAN_KEY), so `--ca`/`--cert`/`--key` in
/// `args` still win.
pub async fn meridianctl(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let pki = crate::pki::pki();
    let admin = pki.admin();
    let ca = pki.ca_pem();
    tokio::task::spawn_blocking(move || {
        Command::new(bin("meridianctl"))
            .env("MERIDIAN_CA", &ca)
            .env("MERIDIAN_CERT", &admin.cert)
            .env("MERIDIAN_KEY", &admin.key)
            .env_remove("MERIDIAN_CONTEXT")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run meridianctl")
    })
    .await
    .expect("join meridianctl")
}

/// Runs `meridianctl` as operator `name` with `role`: a client certificate issued
/// for them by the test CA (the control plane records that identity).
pub async fn meridianctl_as(name: &str, role: &str, args: &[&str]) -> Output {
    let me = crate::pki::pki().operator(name, role);
    let cert = me.cert.display().to_string();
    let key = me.key.display().to_string();
    let mut full = vec!["--cert", cert.as_str(), "--key", key.as_str()];
    full.extend_from_slice(args);
    meridianctl(&full).await
}

/// `meridianctl -e ENDPOINT status -o json`, parsed; `None` if the CLI could not
/// reach the replica (exit 1). Exit 2 (no leader / store unhealthy) still parses.
pub async fn status_json(endpoint: &str) -> Option<serde_json::Value> {
    let out = meridianctl(&["-e", endpoint, "--timeout", "3s", "status", "-o", "json"]).await;
    if out.status.code() == Some(1) {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// A minimal HTTP/1.0 GET against an admin listener: (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    };
    tokio::time::timeout(Duration::from_secs(5), fut).await.ok().flatten()
}

/// One `meridian-prober` process, killed on drop.
pub struct Prober {
    pub id: String,
    pub region: String,
    pub admin_addr: SocketAddr,
    pub log_path: PathBuf,
    child: Child,
}

impl Prober {
    /// Starts a prober for `region` reporting to `control_plane` (comma-separated
    /// URLs), authenticating with `token` when given.
    pub fn start(id: &str, region: &str, control_plane: &str, token: Option<&str>, dir: &Path) -> Self {
        let admin_addr = free_addr();
        let log_path = dir.join(format!("{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open log");
        let pki = crate::pki::pki();
        let me = pki.prober(id, region);
        let mut cmd = Command::new(bin("meridian-prober"));
        cmd.args(["--prober-id", id, "--region", region, "--control-plane", control_plane])
            .arg("--tls-ca")
            .arg(pki.ca_pem())
            .arg("--tls-cert")
            .arg(&me.cert)
            .arg("--tls-key")
            .arg(&me.key)
            .arg("--admin-addr")
            .arg(admin_addr.to_string())
            .env("MERIDIAN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log);
        if let Some(t) = token {
            cmd.env("MERIDIAN_PROBER_TOKEN", t);
        }
        let child = cmd.spawn().expect("spawn meridian-prober");
        Prober {
            id: id.to_string(),
            region: region.to_string(),
            admin_addr,
            log_path,
            child,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The value of a Prometheus sample line from the prober's /metrics whose name
    /// and labels start with `prefix` (e.g. `meridian_prober_buffered_results{replica="http://…"}`).
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        let (_, body) = http_get(self.admin_addr, "/metrics").await?;
        metric_value(&body, prefix)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sums the samples in a Prometheus text page whose line starts with `prefix`.
pub fn metric_value(page: &str, prefix: &str) -> Option<f64> {
    let mut found = None;
    for line in page.lines().filter(|l| l.starts_with(prefix)) {
        if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// `meridianctl -e ENDPOINT <args> -o json`, parsed; panics with the CLI's output
/// when it fails or prints no JSON.
pub async fn ctl_json(endpoint: &str, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["-e", endpoint, "--timeout", "10s"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "json"]);
    let out = meridianctl(&full).await;
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "meridianctl {args:?}: {e}\nstatus {:?}\nstdout {}\nstderr {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The weight of `pop` for `region` in a `meridianctl plan -o json` document; 0 when
/// the plan does not list the pair.
pub fn plan_weight(plan: &serde_json::Value, region: &str, pop: &str) -> f64 {
    plan["regions"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["region"] == region))
        .and_then(|r| {
            r["pops"]
                .as_array()?
                .iter()
                .find(|w| w["pop"] == pop)
                .and_then(|w| w["weight"].as_f64())
        })
        .unwrap_or(0.0)
}
