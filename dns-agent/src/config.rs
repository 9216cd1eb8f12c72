//! The agent's configuration: source → parse (TOML, unknown keys rejected) →
//! [`AgentConfig::validate`], whose errors name the key (`zones[0].steered[1].name`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use meridian_core::ids::validate_id;
use meridian_daemon::config::ConfigError;
use serde::{Deserialize, Serialize};

pub use meridian_dns_core::zone_config::{self, RecordConfig, SteeredConfig, ZoneConfig};
use meridian_dns_core::zones::Zones;

/// The agent's configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// This agent's id, as the control plane lists it.
    pub agent_id: String,
    /// The DNS listener, UDP and TCP on the same address.
    pub dns_addr: SocketAddr,
    /// Control-plane gRPC endpoints, tried in order.
    pub control_plane: Vec<String>,
    /// Admin HTTP listener (/metrics, /live, /ready).
    pub admin_addr: SocketAddr,
    /// Where the last good plan is cached (static stability). Unset: no cache, and a
    /// restart without a control plane serves SERVFAIL for steered names.
    pub state_dir: Option<PathBuf>,
    /// Threads answering UDP (0: one per core).
    pub udp_threads: usize,
    /// Largest UDP response we send to EDNS clients (RFC 9715 suggests 1232).
    pub max_udp_payload: u16,
    /// Kernel receive and send buffer of the UDP socket, in bytes (capped by
    /// net.core.rmem_max / wmem_max). A deep receive queue absorbs bursts that
    /// would otherwise be dropped while the threads are busy.
    pub udp_socket_buffer: usize,
    /// Open TCP connections at once; more wait for a slot.
    pub max_tcp_connections: usize,
    /// A TCP connection idle this long is closed.
    #[serde(with = "humantime_serde")]
    pub tcp_idle_timeout: Duration,
    /// Connecting to one control-plane replica gives up after this.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Reconnect backoff after every replica failed: first and largest delay.
    #[serde(with = "humantime_serde")]
    pub reconnect_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// The zones served authoritatively.
    pub zones: Vec<ZoneConfig>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            agent_id: String::new(),
            dns_addr: SocketAddr::from(([127, 0, 0, 1], 8053)),
            control_plane: vec!["http://127.0.0.1:7400".into()],
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 7420)),
            state_dir: None,
            udp_threads: 0,
            max_udp_payload: 1232,
            udp_socket_buffer: 4 << 20,
            max_tcp_connections: 1024,
            tcp_idle_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            reconnect_initial: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            zones: Vec::new(),
        }
    }
}

/// A validated configuration and the zones compiled from it.
#[derive(Debug, Clone)]
pub struct Validated {
    pub config: AgentConfig,
    pub zones: Zones,
}

impl AgentConfig {
    /// Checks every key; the error names the first wrong one.
    pub fn validate(self, origin: &str) -> Result<Validated, ConfigError> {
        let invalid = |key: &str, msg: String| ConfigError::invalid(origin, key, msg);
        validate_id("agent", &self.agent_id).map_err(|e| invalid("agent_id", e.to_string()))?;
        if self.control_plane.is_empty() {
            return Err(invalid(
                "control_plane",
                "at least one control-plane endpoint is required".into(),
            ));
        }
        for (i, ep) in self.control_plane.iter().enumerate() {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                return Err(invalid(
                    &format!("control_plane[{i}]"),
                    format!("`{ep}` must be a URL such as http://127.0.0.1:7400"),
                ));
            }
        }
        if self.max_udp_payload < 512 {
            return Err(invalid(
                "max_udp_payload",
                format!("{} is below the DNS minimum of 512", self.max_udp_payload),
            ));
        }
        if self.max_tcp_connections == 0 {
            return Err(invalid("max_tcp_connections", "must be at least 1".into()));
        }
        if self.reconnect_initial.is_zero() || self.reconnect_max < self.reconnect_initial {
            return Err(invalid(
                "reconnect_max",
                "reconnect_initial must be > 0 and reconnect_max >= reconnect_initial".into(),
            ));
        }
        if let Some(dir) = &self.state_dir {
            if dir.as_os_str().is_empty() {
                return Err(invalid(
                    "state_dir",
                    "must not be empty (omit it to disable the cache)".into(),
                ));
            }
        }
        let zones = zone_config::compile(&self.zones).map_err(|e| invalid(&e.key, e.message))?;
        Ok(Validated { config: self, zones })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_dns_core::wire::name_from_text;
    use meridian_dns_core::zones::Lookup;
    use std::path::Path;

    pub(crate) const SAMPLE: &str = r#"
agent_id = "dns-1"
dns_addr = "127.0.0.1:5353"
control_plane = ["http://127.0.0.1:7400", "http://127.0.0.1:7401"]
state_dir = "/var/lib/meridian/dns-agent"

[[zones]]
origin = "example.net."
ns = ["ns1", "ns2.example.net."]
soa_rname = "hostmaster.example.net."
soa_serial = 2024010101

[[zones.steered]]
name = "www"
answers = 2

[[zones.steered]]
name = "api.example.net."

[[zones.records]]
name = "ns1"
type = "A"
value = "127.0.0.53"

[[zones.records]]
name = "ns2"
type = "AAAA"
value = "::1"

[[zones.records]]
name = "@"
type = "TXT"
value = "v=meridian"
"#;

    fn parse(text: &str) -> Result<Validated, String> {
        let cfg: AgentConfig =
            meridian_daemon::config::parse(Path::new("agent.toml"), text).map_err(|e| e.to_string())?;
        cfg.validate("file agent.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn the_sample_config_validates() {
        let v = parse(SAMPLE).unwrap();
        let www = name_from_text("www.example.net.").unwrap();
        match v.zones.lookup(&www) {
            Lookup::Found { data, .. } => assert_eq!(data.steered.as_ref().unwrap().answers, 2),
            other => panic!("{other:?}"),
        }
        // The old minimal config (no zones) still works.
        parse("agent_id = \"dns-1\"\ndns_addr = \"127.0.0.1:5353\"\n").unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                SAMPLE.replace("answers = 2", "answers = 0"),
                "zones[0].steered[0].answers",
            ),
            (
                SAMPLE.replace("name = \"www\"", "name = \"w w\""),
                "zones[0].steered[0].name",
            ),
            (
                SAMPLE.replace("value = \"127.0.0.53\"", "value = \"x\""),
                "zones[0].records[0].value",
            ),
            (
                SAMPLE.replace("type = \"TXT\"", "type = \"MX\""),
                "zones[2].records[2].type",
            ),
            (
                SAMPLE.replace("name = \"api.example.net.\"", "name = \"api.example.org.\""),
                "zones[0].steered[1].name",
            ),
            (SAMPLE.replace("ns = [\"ns1\",", "ns = [\"ns3\","), "zones[0].ns[0]"),
            (
                SAMPLE.replace("origin = \"example.net.\"", "origin = \".\""),
                "zones[0].origin",
            ),
            (
                SAMPLE.replace("http://127.0.0.1:7401", "127.0.0.1:7401"),
                "control_plane[1]",
            ),
            (
                SAMPLE.replace("agent_id = \"dns-1\"", "agent_id = \"DNS 1\""),
                "agent_id",
            ),
            (SAMPLE.replace("answers = 2", "answers = 2\nanswer = 3"), "answer"),
        ];
        for (text, key) in cases {
            let err = parse(&text).unwrap_err();
            let key = key.replace("zones[2]", "zones[0]");
            assert!(err.contains(&key), "expected `{key}` in: {err}");
        }
    }
}
