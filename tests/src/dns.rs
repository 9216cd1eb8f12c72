//! The DNS agent as a real process, and real `dig` against it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::meridian::{bin, http_get, metric_value};
use crate::util::{free_addr, require_tool, wait_for};

/// One `meridian-dns-agent` process with its own config, state directory and log,
/// killed on drop. Restarting keeps the ports and the state directory.
pub struct DnsAgent {
    pub id: String,
    pub dns_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub state_dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
}

impl DnsAgent {
    /// Writes a config (ports picked now, `state_dir` under `dir`) with the given
    /// control-plane endpoints and zone TOML (`[[zones]]` tables), and starts it.
    pub fn start(id: &str, dir: &Path, control_plane: &[String], zones_toml: &str) -> Self {
        let dns_addr = free_addr();
        let admin_addr = free_addr();
        let state_dir = dir.join(format!("{id}-state"));
        let config_path = dir.join(format!("{id}.toml"));
        let endpoints: Vec<String> = control_plane.iter().map(|e| format!("\"{e}\"")).collect();
        // Mutual TLS to https:// control planes, with this agent's certificate.
        let tls = if control_plane.iter().any(|e| e.starts_with("https://")) {
            let pki = crate::pki::pki();
            let me = pki.agent(id);
            format!(
                "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                pki.ca_pem().display(),
                me.cert.display(),
                me.key.display()
            )
        } else {
            String::new()
        };
        let config = format!(
            "agent_id = \"{id}\"\ndns_addr = \"{dns_addr}\"\nadmin_addr = \"{admin_addr}\"\n\
             state_dir = \"{}\"\ncontrol_plane = [{}]\nudp_threads = 2\n\
             reconnect_initial = \"100ms\"\nreconnect_max = \"1s\"\nconnect_timeout = \"1s\"\n\n{tls}\n{zones_toml}\n",
            state_dir.display(),
            endpoints.join(", ")
        );
        std::fs::write(&config_path, config).expect("write agent config");
        let mut agent = DnsAgent {
            id: id.to_string(),
            dns_addr,
            admin_addr,
            state_dir,
            config_path,
            log_path: dir.join(format!("{id}.log")),
            child: None,
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open log");
        let child = Command::new(bin("meridian-dns-agent"))
            .arg("--config")
            .arg(&self.config_path)
            .env("MERIDIAN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn meridian-dns-agent");
        self.child = Some(child);
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills and starts again with the same config, ports and state directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `/ready` as (status code, body).
    pub async fn ready(&self) -> Option<(u16, String)> {
        http_get(self.admin_addr, "/ready").await
    }

    /// Waits until `/ready` answers with `code` and a body containing `text`.
    pub async fn wait_ready(&self, code: u16, text: &str) -> String {
        let what = format!(
            "agent {} /ready to be {code} with `{text}` (log {})",
            self.id,
            self.log_path.display()
        );
        wait_for(&what, Duration::from_secs(60), || async {
            self.ready()
                .await
                .filter(|(c, body)| *c == code && body.contains(text))
                .map(|(_, body)| body)
        })
        .await
    }

    /// The sum of the Prometheus samples starting with `prefix`.
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        let (_, body) = http_get(self.admin_addr, "/metrics").await?;
        metric_value(&body, prefix)
    }
}

impl Drop for DnsAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What `dig` printed, parsed.
#[derive(Debug, Clone, Default)]
pub struct DigAnswer {
    pub status: String,
    pub flags: Vec<String>,
    /// Answer-section records as (name, ttl, type, data).
    pub answers: Vec<(String, u32, String, String)>,
    pub authority: Vec<(String, u32, String, String)>,
    pub additional: Vec<(String, u32, String, String)>,
    /// The `CLIENT-SUBNET:` value echoed in the OPT pseudo-section.
    pub client_subnet: Option<String>,
    pub raw: String,
}

impl DigAnswer {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The data of A/AAAA answers.
    pub fn addresses(&self) -> Vec<String> {
        self.answers
            .iter()
            .filter(|(_, _, t, _)| t == "A" || t == "AAAA")
            .map(|(_, _, _, d)| d.clone())
            .collect()
    }
}

/// Runs `dig @server -p port <args>` (with a short timeout and one try) and parses
/// its output. Panics, saying how to install it, when dig is missing.
pub async fn dig(server: SocketAddr, args: &[&str]) -> DigAnswer {
    let dig = require_tool("dig", "bind9-dnsutils");
    let mut cmd_args = vec![
        format!("@{}", server.ip()),
        "-p".to_string(),
        server.port().to_string(),
        "+time=2".to_string(),
        "+tries=1".to_string(),
    ];
    cmd_args.extend(args.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || Command::new(dig).args(&cmd_args).output().expect("run dig"))
        .await
        .expect("join dig");
    parse_dig(&String::from_utf8_lossy(&out.stdout))
}

/// Parses dig's default output.
pub fn parse_dig(text: &str) -> DigAnswer {
    let mut a = DigAnswer {
        raw: text.to_string(),
        ..DigAnswer::default()
    };
    let mut section = "";
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix(";; ->>HEADER<<-") {
            if let Some(status) = rest.split("status: ").nth(1) {
                a.status = status.split(',').next().unwrap_or("").trim().to_string();
            }
        } else if let Some(rest) = line.strip_prefix(";; flags:") {
            let flags = rest.split(';').next().unwrap_or("");
            a.flags = flags.split_whitespace().map(|s| s.to_string()).collect();
        } else if let Some(rest) = line.strip_prefix("; CLIENT-SUBNET:") {
            a.client_subnet = Some(rest.trim().to_string());
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(";; ADDITIONAL SECTION") {
            section = "additional";
        } else if line.is_empty() || line.starts_with(';') {
            if line.is_empty() {
                section = "";
            }
        } else {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() >= 5 {
                let rec = (
                    parts[0].to_string(),
                    parts[1].parse().unwrap_or(0),
                    parts[3].to_string(),
                    parts[4..].join(" "),
                );
                match section {
                    "answer" => a.answers.push(rec),
                    "authority" => a.authority.push(rec),
                    "additional" => a.additional.push(rec),
                    _ => {}
                }
            }
        }
    }
    a
}

/// Runs dig in batch mode (`-f`): one query per line of `queries` (each line holds
/// dig arguments, e.g. `www.example.net A +subnet=10.1.2.0/24`), printing `+short`
/// answers. Returns the lines printed, in order.
pub async fn dig_batch(server: SocketAddr, queries: &[String], dir: &Path) -> Vec<String> {
    let dig = require_tool("dig", "bind9-dnsutils");
    let file = dir.join(format!("dig-batch-{}.txt", server.port()));
    std::fs::write(&file, queries.join("\n") + "\n").expect("write dig batch file");
    let args = vec![
        format!("@{}", server.ip()),
        "-p".to_string(),
        server.port().to_string(),
        "+time=2".to_string(),
        "+tries=2".to_string(),
        "+short".to_string(),
        "-f".to_string(),
        file.display().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || Command::new(dig).args(&args).output().expect("run dig"))
        .await
        .expect("join dig");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}
