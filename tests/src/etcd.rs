//! Real etcd members on loopback: one or more `etcd` processes forming a fresh
//! cluster in a temporary directory, on ports picked at run time, killed on drop.
//! Members can be killed (SIGKILL) and restarted on their data directory to test how
//! clients live through member loss.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use meridian_store::etcd::{probe_endpoint, EtcdConfig, EtcdStore, RetryPolicy};
use meridian_store::Store;
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::util::{free_ports, require_tool, wait_for};

/// How long a fresh or restarted cluster may take to answer.
const START_DEADLINE: Duration = Duration::from_secs(30);

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log_file: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// A running etcd cluster; every member is killed when it is dropped.
pub struct EtcdCluster {
    etcd: PathBuf,
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    // Dropped last: the members' data and logs.
    dir: TempDir,
}

impl std::fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCluster")
            .field("endpoints", &self.endpoints())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl EtcdCluster {
    /// Starts a fresh cluster of `members` members and waits until it serves a
    /// put and a get. Panics, with the tail of each member's log, if it does not
    /// within 30 s.
    pub async fn start(members: usize) -> EtcdCluster {
        assert!(members >= 1, "an etcd cluster needs at least one member");
        let etcd = require_tool("etcd", "etcd-server");
        let dir = tempfile::Builder::new()
            .prefix("meridian-etcd-")
            .tempdir()
            .expect("create temp dir");
        // Every port of the cluster at once: a member whose peer and client ports
        // collided could not start.
        let ports = free_ports(2 * members);
        let members: Vec<Member> = (0..members)
            .map(|i| {
                let name = format!("m{i}");
                Member {
                    client_port: ports[2 * i],
                    peer_port: ports[2 * i + 1],
                    data_dir: dir.path().join(format!("{name}.data")),
                    log_file: dir.path().join(format!("{name}.log")),
                    name,
                    child: None,
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!(
            "meridian-test-{}",
            dir.path().file_name().and_then(|n| n.to_str()).unwrap_or("cluster")
        );
        let mut cluster = EtcdCluster {
            etcd,
            members,
            initial_cluster,
            token,
            dir,
        };
        for index in 0..cluster.members.len() {
            cluster.spawn(index, "new");
        }
        cluster.wait_until_serving().await;
        cluster
    }

    /// Client URLs of every member, dead or alive, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// [`Self::endpoints`] joined with commas, as `--etcd-endpoints` takes them.
    pub fn endpoints_csv(&self) -> String {
        self.endpoints().join(",")
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// The directory holding the members' data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills member `index` with SIGKILL and waits for it to exit.
    pub async fn kill(&mut self, index: usize) {
        let member = &mut self.members[index];
        let mut child = member
            .child
            .take()
            .unwrap_or_else(|| panic!("etcd member {} is not running", member.name));
        child.kill().await.expect("kill etcd member");
    }

    /// Restarts member `index` on its data directory and ports, joining the existing
    /// cluster, and waits until it answers a status request.
    pub async fn restart(&mut self, index: usize) {
        assert!(
            self.members[index].child.is_none(),
            "etcd member {index} is still running"
        );
        self.spawn(index, "existing");
        let endpoint = self.members[index].client_url();
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match probe_endpoint(&endpoint, None, Duration::from_secs(1)).await {
                Ok(status) if status.has_leader() => return,
                _ if Instant::now() > deadline => {
                    panic!(
                        "restarted etcd member {index} did not rejoin within {START_DEADLINE:?}\n{}",
                        self.log_tails()
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The index of the member that currently leads, asking each live member.
    pub async fn leader_index(&self) -> Option<usize> {
        for (index, member) in self.members.iter().enumerate() {
            if member.child.is_none() {
                continue;
            }
            if let Ok(status) = probe_endpoint(&member.client_url(), None, Duration::from_secs(1)).await {
                if status.is_leader() {
                    return Some(index);
                }
            }
        }
        None
    }

    /// Waits until some live member leads and returns its index.
    pub async fn wait_for_leader(&self) -> usize {
        wait_for("an etcd leader", Duration::from_secs(20), || self.leader_index()).await
    }

    /// Whether member `index` is running.
    pub fn is_running(&self, index: usize) -> bool {
        self.members[index].child.is_some()
    }

    /// The last lines of every member's log, for failure messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for member in &self.members {
            let log = std::fs::read_to_string(&member.log_file).unwrap_or_else(|e| format!("(no log: {e})"));
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            out.push_str(&format!(
                "--- etcd member {} ({}) log tail ---\n{}\n",
                member.name,
                member.client_url(),
                tail.join("\n")
            ));
        }
        out
    }

    fn spawn(&mut self, index: usize, state: &str) {
        let member = &self.members[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log_file)
            .expect("open etcd log");
        let stderr = log.try_clone().expect("clone etcd log handle");
        let client_url = member.client_url();
        let peer_url = member.peer_url();
        let child = Command::new(&self.etcd)
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .arg("--logger=zap")
            .arg(format!("--log-outputs={}", member.log_file.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start etcd member {}: {e}", member.name));
        self.members[index].child = Some(child);
    }

    async fn wait_until_serving(&mut self) {
        let mut config = EtcdConfig::new(self.endpoints());
        config.connect_timeout = Duration::from_secs(2);
        config.request_timeout = Duration::from_secs(2);
        config.retry = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        let deadline = Instant::now() + START_DEADLINE;
        let mut last_error = String::new();
        while Instant::now() < deadline {
            match self.try_put_get(config.clone()).await {
                Ok(()) => return,
                Err(e) => last_error = e,
            }
            let exited = self
                .members
                .iter_mut()
                .find_map(|m| match m.child.as_mut().map(Child::try_wait) {
                    Some(Ok(Some(status))) => Some((m.name.clone(), status)),
                    _ => None,
                });
            if let Some((name, status)) = exited {
                panic!(
                    "etcd member {name} exited during start-up ({status})\n{}",
                    self.log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "etcd cluster at {} did not serve a put/get within {START_DEADLINE:?} (last error: {last_error})\n{}",
            self.endpoints_csv(),
            self.log_tails()
        );
    }

    async fn try_put_get(&self, config: EtcdConfig) -> Result<(), String> {
        let store = EtcdStore::connect(config).await.map_err(|e| format!("{e:#?}"))?;
        store
            .put("/meridian-harness/ready", b"1".to_vec(), None)
            .await
            .map_err(|e| format!("{e:#?}"))?;
        match store.get("/meridian-harness/ready").await {
            Ok(Some(kv)) if kv.value == b"1" => Ok(()),
            other => Err(format!("unexpected get result {other:?}")),
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(child) = member.child.as_mut() {
                // SIGKILL now; tokio reaps the exited process in the background.
                let _ = child.start_kill();
            }
        }
    }
}
