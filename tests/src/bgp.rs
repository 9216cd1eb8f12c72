//! BGP on loopback for the end-to-end benches: a gobgpd speaker (a PoP's) peered with
//! a gobgpd upstream router, the Anycast agent binary driving the speaker, and the
//! router's RIB read back through the `gobgp` CLI. Ports are picked at run time and
//! every process is killed on drop; a missing gobgpd is a loud failure with the
//! command that installs it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::util::{free_addr, require_tool};

/// A running gobgpd.
pub struct Gobgpd {
    pub ip: Ipv4Addr,
    pub asn: u32,
    pub bgp_port: u16,
    pub api: SocketAddr,
    child: Child,
}

impl Gobgpd {
    /// Starts gobgpd on `ip` (AS `asn`, BGP port `bgp_port`), peered with one
    /// neighbor (`peer_ip`, `peer_as`, `peer_port`); its config and log go in `dir`.
    pub fn start(dir: &Path, name: &str, ip: Ipv4Addr, asn: u32, bgp_port: u16, peer: (Ipv4Addr, u32, u16)) -> Self {
        let bin = require_tool("gobgpd", "gobgpd");
        let api = free_addr();
        let (peer_ip, peer_as, peer_port) = peer;
        let config = format!(
            "[global.config]\n  as = {asn}\n  router-id = \"{ip}\"\n  port = {bgp_port}\n  local-address-list = [\"{ip}\"]\n\
             [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{peer_ip}\"\n    peer-as = {peer_as}\n  \
             [neighbors.transport.config]\n    local-address = \"{ip}\"\n    remote-port = {peer_port}\n  \
             [neighbors.timers.config]\n    connect-retry = 1\n    hold-time = 9\n    keepalive-interval = 3\n"
        );
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(bin)
            .arg("-f")
            .arg(&path)
            .args(["-p", "--pprof-disable", &format!("--api-hosts={api}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Gobgpd {
            ip,
            asn,
            bgp_port,
            api,
            child,
        }
    }

    /// Whether this daemon's RIB holds `prefix` (read through the `gobgp` CLI).
    pub async fn has(&self, prefix: &str) -> bool {
        let cli = require_tool("gobgp", "gobgpd");
        let out = tokio::process::Command::new(cli)
            .args(["-p", &self.api.port().to_string(), "global", "rib", "-a", "ipv4"])
            .output()
            .await;
        out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(prefix))
    }
}

impl Drop for Gobgpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A speaker (AS 65001) and an upstream router (AS 65010) on two loopback addresses.
pub struct SpeakerAndRouter {
    pub speaker: Gobgpd,
    pub router: Gobgpd,
}

impl SpeakerAndRouter {
    /// `net`: the first three octets of two free loopback addresses (`.1`, `.2`).
    pub fn start(dir: &Path, net: [u8; 3]) -> Self {
        let ip = |z| Ipv4Addr::new(net[0], net[1], net[2], z);
        let (sa, ra) = (ip(1), ip(2));
        let free = |a: Ipv4Addr| {
            std::net::TcpListener::bind((a, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (sp, rp) = (free(sa), free(ra));
        let router = Gobgpd::start(dir, "router", ra, 65010, rp, (sa, 65001, sp));
        let speaker = Gobgpd::start(dir, "speaker", sa, 65001, sp, (ra, 65010, rp));
        SpeakerAndRouter { speaker, router }
    }
}

/// A running `meridian-anycast-agent`, killed on drop.
pub struct AnycastAgent {
    pub admin: SocketAddr,
    pub log: PathBuf,
    child: Child,
}

impl AnycastAgent {
    /// Starts the agent `id` for `pop`, following `control_plane` over mutual TLS with
    /// a certificate from the test CA, driving `speaker` (AS `speaker.asn`).
    pub fn start(dir: &Path, id: &str, pop: &str, control_plane: &[String], speaker: &Gobgpd) -> Self {
        let pki = crate::pki::pki();
        let me = pki.agent(id);
        let admin = free_addr();
        let eps: Vec<String> = control_plane.iter().map(|e| format!("\"{e}\"")).collect();
        let config = format!(
            "agent_id = \"{id}\"\npop = \"{pop}\"\ncontrol_plane = [{}]\nadmin_addr = \"{admin}\"\n\
             state_dir = \"{}\"\nreconcile_interval = \"1s\"\nreconnect_initial = \"100ms\"\nreconnect_max = \"1s\"\n\
             connect_timeout = \"1s\"\n\n[speaker]\nkind = \"gobgp\"\napi = \"{}\"\nnext_hop = \"192.0.2.10\"\nlocal_as = {}\n\n\
             [tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            eps.join(", "),
            dir.join(format!("{id}-state")).display(),
            speaker.api,
            speaker.asn,
            pki.ca_pem().display(),
            me.cert.display(),
            me.key.display(),
        );
        let path = dir.join(format!("{id}.toml"));
        std::fs::write(&path, config).unwrap();
        let log = dir.join(format!("{id}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(crate::meridian::bin("meridian-anycast-agent"))
            .arg("--config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        AnycastAgent { admin, log, child }
    }
}

impl Drop for AnycastAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
