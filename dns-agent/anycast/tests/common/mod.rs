//! Real `gobgpd` daemons on loopback for the Anycast agent's tests: each test gets its
//! own 127.x.y.0/24 corner (one address per daemon) and ports picked at run time,
//! and every daemon is killed on drop. A missing gobgpd is a loud failure with the
//! command that installs it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use meridian_anycast_agent::gobgp::{apipb, GobgpBackend, GobgpSettings, RibPath};

/// Generous: CI machines are noisy, and a BGP session takes a few seconds.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Finds `tool` on PATH or panics with the apt command that installs it.
pub fn require_tool(tool: &str, apt_package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(tool);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "required tool `{tool}` is not installed: run `sudo apt-get install -y {apt_package}` \
         (or `bash scripts/setup.sh`, which installs everything the tests need)"
    );
}

/// Polls `check` until it returns `Some`, or panics after `deadline` naming `what`
/// and the last thing seen.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fresh 127.x.y.0/24 corner for one test, so tests running at once never share
/// an address.
pub fn loopback_net() -> [u8; 2] {
    static NEXT: AtomicU8 = AtomicU8::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    [100 + (std::process::id() % 100) as u8, n]
}

fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// One BGP peer of a daemon.
#[derive(Debug, Clone)]
pub struct Peer {
    pub ip: Ipv4Addr,
    pub asn: u32,
    pub port: u16,
}

/// A running gobgpd.
pub struct Gobgpd {
    pub name: String,
    pub ip: Ipv4Addr,
    pub asn: u32,
    pub bgp_port: u16,
    pub api: SocketAddr,
    child: Child,
    pub dir: tempfile::TempDir,
}

/// The RFC 8326 import policy: a path carrying GRACEFUL_SHUTDOWN (65535:0) gets a
/// local preference below every other path's (default 100), so any other path wins.
/// RFC 8326 suggests 0, but GoBGP's config reads `set-local-pref = 1` as "not set"
/// (the action silently disappears), so 1 it is.
pub const GSHUT_POLICY: &str = r#"
[[defined-sets.bgp-defined-sets.community-sets]]
  community-set-name = "graceful-shutdown"
  community-list = ["65535:0"]

[[policy-definitions]]
  name = "rfc8326"
  [[policy-definitions.statements]]
    name = "gshut-low-pref"
    [policy-definitions.statements.conditions.bgp-conditions.match-community-set]
      community-set = "graceful-shutdown"
      match-set-options = "any"
    [policy-definitions.statements.actions]
      route-disposition = "accept-route"
    [policy-definitions.statements.actions.bgp-actions]
      set-local-pref = 1
"#;

impl Gobgpd {
    /// Starts gobgpd `name` on `ip` with AS `asn`, peered with `peers`; `policy`
    /// adds RFC 8326's import policy.
    pub fn start(name: &str, ip: Ipv4Addr, asn: u32, bgp_port: u16, peers: &[Peer], rfc8326: bool) -> Gobgpd {
        let bin = require_tool("gobgpd", "gobgpd");
        let dir = tempfile::tempdir().unwrap();
        let api = SocketAddr::from(([127, 0, 0, 1], free_port(Ipv4Addr::LOCALHOST)));
        let mut toml = format!(
            "[global.config]\n  as = {asn}\n  router-id = \"{ip}\"\n  port = {bgp_port}\n  local-address-list = [\"{ip}\"]\n"
        );
        if rfc8326 {
            toml.push_str(
                "[global.apply-policy.config]\n  import-policy-list = [\"rfc8326\"]\n  default-import-policy = \"accept-route\"\n",
            );
        }
        for p in peers {
            toml.push_str(&format!(
                "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {}\n  \
                 [neighbors.transport.config]\n    local-address = \"{ip}\"\n    remote-port = {}\n  \
                 [neighbors.timers.config]\n    connect-retry = 1\n    hold-time = 9\n    keepalive-interval = 3\n",
                p.ip, p.asn, p.port
            ));
        }
        if rfc8326 {
            toml.push_str(GSHUT_POLICY);
        }
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, &toml).unwrap();
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
        let child = Command::new(bin)
            .arg("-f")
            .arg(&config)
            .arg("-p")
            .arg("--pprof-disable")
            .arg(format!("--api-hosts={api}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Gobgpd {
            name: name.into(),
            ip,
            asn,
            bgp_port,
            api,
            child,
            dir,
        }
    }

    pub fn as_peer(&self) -> Peer {
        Peer {
            ip: self.ip,
            asn: self.asn,
            port: self.bgp_port,
        }
    }

    /// A client of this daemon's API, announcing as this daemon with `next_hop`.
    pub fn backend(&self, next_hop: &str) -> GobgpBackend {
        GobgpBackend::new(GobgpSettings {
            api: self.api.to_string(),
            next_hop: next_hop.parse().unwrap(),
            next_hop_v6: None,
            local_as: self.asn,
            timeout: Duration::from_secs(5),
        })
        .unwrap()
    }

    /// Announces `prefix` from this daemon with ORIGIN INCOMPLETE (through the
    /// `gobgp` CLI): against a plain announcement of the same AS-path length it
    /// loses on origin, a step before the age and router-id tie-breaks, which
    /// depend on timing; against a longer AS path it still wins. Used for the
    /// second announcer, so "A best" and "C best" are never decided by a race.
    pub async fn announce_incomplete(&self, prefix: &str, next_hop: &str) {
        let cli = require_tool("gobgp", "gobgpd");
        let port = self.api.port().to_string();
        let args = [
            "-p",
            &port,
            "global",
            "rib",
            "-a",
            "ipv4",
            "add",
            prefix,
            "origin",
            "incomplete",
            "nexthop",
            next_hop,
        ];
        wait_for(
            "the announcement through the gobgp CLI",
            Duration::from_secs(60),
            || async {
                let out = tokio::process::Command::new(&cli)
                    .args(args)
                    .output()
                    .await
                    .map_err(|e| e.to_string())?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).into_owned())
                }
            },
        )
        .await;
    }

    /// The daemon's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.name))).unwrap_or_default()
    }

    /// Waits until the session to `peer` is established.
    pub async fn wait_established(&self, peer: Ipv4Addr) {
        let url = format!("http://{}", self.api);
        wait_for(&format!("{} to establish BGP with {peer}", self.name), DEADLINE, || {
            let url = url.clone();
            async move {
                let mut client = apipb::gobgp_api_client::GobgpApiClient::connect(url)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut stream = client
                    .list_peer(apipb::ListPeerRequest {
                        address: peer.to_string(),
                        enable_advertised: false,
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner();
                let mut last = "no such peer".to_string();
                while let Some(p) = stream.message().await.map_err(|e| e.to_string())? {
                    let state = p
                        .peer
                        .and_then(|p| p.state)
                        .map(|s| s.session_state)
                        .unwrap_or_default();
                    if state == apipb::peer_state::SessionState::Established as i32 {
                        return Ok(());
                    }
                    last = format!("session state {state}");
                }
                Err(last)
            }
        })
        .await;
    }
}

impl Drop for Gobgpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Speaker A (the agent's), router B (the upstream, RFC 8326 policy) and a second
/// announcer C, peered A–B and C–B, sessions established.
pub struct Topology {
    pub a: Gobgpd,
    pub b: Gobgpd,
    pub c: Gobgpd,
}

pub const AS_A: u32 = 65001;
pub const AS_B: u32 = 65002;
pub const AS_C: u32 = 65003;

impl Topology {
    pub async fn start() -> Topology {
        let [x, y] = loopback_net();
        let ip = |z: u8| Ipv4Addr::new(127, x, y, z);
        let (ia, ib, ic) = (ip(1), ip(2), ip(3));
        let (pa, pb, pc) = (free_port(ia), free_port(ib), free_port(ic));
        let peer = |ip, asn, port| Peer { ip, asn, port };
        let b = Gobgpd::start("b", ib, AS_B, pb, &[peer(ia, AS_A, pa), peer(ic, AS_C, pc)], true);
        let a = Gobgpd::start("a", ia, AS_A, pa, &[peer(ib, AS_B, pb)], false);
        let c = Gobgpd::start("c", ic, AS_C, pc, &[peer(ib, AS_B, pb)], false);
        b.wait_established(ia).await;
        b.wait_established(ic).await;
        Topology { a, b, c }
    }

    /// B's paths for `prefix`.
    pub async fn router_paths(&self, prefix: &str) -> Result<Vec<RibPath>, String> {
        let prefix: ipnet::IpNet = prefix.parse().unwrap();
        let rib = self.b.backend("192.0.2.99").rib().await.map_err(|e| e.to_string())?;
        Ok(rib.into_iter().filter(|p| p.prefix == prefix).collect())
    }

    /// Waits until B's paths for `prefix` satisfy `check` (which says what is wrong
    /// otherwise), and returns them.
    pub async fn wait_router<F>(&self, what: &str, prefix: &str, check: F) -> Vec<RibPath>
    where
        F: Fn(&[RibPath]) -> Result<(), String>,
    {
        let check = &check;
        wait_for(what, DEADLINE, || async move {
            let paths = self.router_paths(prefix).await?;
            check(&paths).map_err(|e| format!("{e}; B has {paths:?}"))?;
            Ok(paths)
        })
        .await
    }

    /// The IP B sees A as.
    pub fn a_ip(&self) -> String {
        self.a.ip.to_string()
    }

    pub fn c_ip(&self) -> String {
        self.c.ip.to_string()
    }
}

/// The path from `neighbor` among `paths`.
pub fn from<'a>(paths: &'a [RibPath], neighbor: &str) -> Option<&'a RibPath> {
    paths.iter().find(|p| p.neighbor == neighbor)
}

/// The neighbor of the best path.
pub fn best(paths: &[RibPath]) -> Option<String> {
    paths.iter().find(|p| p.best).map(|p| p.neighbor.clone())
}

/// A running BIRD 2 with one eBGP session to `peer`, exporting the agent's static
/// protocol with next hop 192.0.2.10 (a loopback next hop reads as a withdraw at a
/// GoBGP router).
pub struct Bird {
    pub ip: Ipv4Addr,
    pub socket: PathBuf,
    pub include_file: PathBuf,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Bird {
    pub fn start(ip: Ipv4Addr, asn: u32, bgp_port: u16, peer: &Peer) -> Bird {
        let bin = require_tool("bird", "bird2");
        require_tool("birdc", "bird2");
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("bird.ctl");
        let include_file = dir.path().join("meridian-anycast.conf");
        // What the agent's backend writes for no routes: both protocols, empty.
        std::fs::write(
            &include_file,
            "protocol static meridian_anycast {\n  ipv4;\n}\nprotocol static meridian_anycast6 {\n  ipv6;\n}\n",
        )
        .unwrap();
        let config = dir.path().join("bird.conf");
        std::fs::write(
            &config,
            format!(
                "router id {ip};\nprotocol device {{}}\ninclude \"{}\";\n\
                 protocol bgp upstream {{\n  local {ip} port {bgp_port} as {asn};\n  neighbor {} port {} as {};\n  \
                 multihop;\n  connect retry time 1;\n  \
                 ipv4 {{ import none; export where proto = \"meridian_anycast\"; next hop address 192.0.2.10; }};\n}}\n",
                include_file.display(),
                peer.ip,
                peer.port,
                peer.asn
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("bird.log")).unwrap();
        let child = Command::new(bin)
            .arg("-f")
            .arg("-c")
            .arg(&config)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(dir.path().join("bird.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Bird {
            ip,
            socket,
            include_file,
            child,
            dir,
        }
    }

    pub fn backend(&self, configure_timeout: Duration) -> meridian_anycast_agent::bird::BirdBackend {
        meridian_anycast_agent::bird::BirdBackend::new(meridian_anycast_agent::bird::BirdSettings {
            birdc: require_tool("birdc", "bird2"),
            socket: self.socket.clone(),
            include_file: self.include_file.clone(),
            protocol: "meridian_anycast".into(),
            local_as: AS_A,
            configure_timeout,
            verify_within: Duration::from_secs(10),
        })
    }

    /// `birdc` with `args`, its output.
    pub fn birdc(&self, args: &[&str]) -> String {
        let out = Command::new(require_tool("birdc", "bird2"))
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// BIRD as speaker A, gobgpd router B (RFC 8326 policy) and second announcer C.
pub struct BirdTopology {
    pub a: Bird,
    pub t: RouterAndOther,
}

/// Router B and announcer C, whatever A is.
pub struct RouterAndOther {
    pub b: Gobgpd,
    pub c: Gobgpd,
    pub a_ip: Ipv4Addr,
}

impl BirdTopology {
    pub async fn start() -> BirdTopology {
        let [x, y] = loopback_net();
        let ip = |z: u8| Ipv4Addr::new(127, x, y, z);
        let (ia, ib, ic) = (ip(1), ip(2), ip(3));
        let (pa, pb, pc) = (free_port(ia), free_port(ib), free_port(ic));
        let peer = |ip, asn, port| Peer { ip, asn, port };
        let b = Gobgpd::start("b", ib, AS_B, pb, &[peer(ia, AS_A, pa), peer(ic, AS_C, pc)], true);
        let a = Bird::start(ia, AS_A, pa, &peer(ib, AS_B, pb));
        let c = Gobgpd::start("c", ic, AS_C, pc, &[peer(ib, AS_B, pb)], false);
        b.wait_established(ia).await;
        b.wait_established(ic).await;
        BirdTopology {
            a,
            t: RouterAndOther { b, c, a_ip: ia },
        }
    }
}

impl RouterAndOther {
    pub async fn router_paths(&self, prefix: &str) -> Result<Vec<RibPath>, String> {
        let prefix: ipnet::IpNet = prefix.parse().unwrap();
        let rib = self.b.backend("192.0.2.99").rib().await.map_err(|e| e.to_string())?;
        Ok(rib.into_iter().filter(|p| p.prefix == prefix).collect())
    }

    pub async fn wait_router<F>(&self, what: &str, prefix: &str, check: F) -> Vec<RibPath>
    where
        F: Fn(&[RibPath]) -> Result<(), String>,
    {
        let check = &check;
        wait_for(what, DEADLINE, || async move {
            let paths = self.router_paths(prefix).await?;
            check(&paths).map_err(|e| format!("{e}; B has {paths:?}"))?;
            Ok(paths)
        })
        .await
    }
}
