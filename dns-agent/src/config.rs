//! The agent's configuration: source → parse (TOML, unknown keys rejected) →
//! [`AgentConfig::validate`], whose errors name the key (`zones[0].steered[1].name`).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meridian_core::ids::validate_id;
use meridian_daemon::config::ConfigError;
use serde::{Deserialize, Serialize};

use meridian_dns_core::rrl::RrlConfig;
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
    /// TLS to the control plane (`https://` endpoints): `ca` verifies the replicas;
    /// `cert` and `key` are this agent's client certificate (CN = agent_id, O = agent).
    pub tls: meridian_tls::ClientTls,
    /// A file holding this agent's bearer token (`[[auth.agents]]` on the control
    /// plane), for deployments that use tokens instead of client certificates.
    pub token_file: Option<PathBuf>,
    /// Admin HTTP listener (/metrics, /live, /ready).
    pub admin_addr: SocketAddr,
    /// Keep the last good plan on disk and serve it at start-up when no control
    /// plane answers (static stability). On by default; `false` (or
    /// `--no-plan-cache`) turns it off, and a restart without a control plane then
    /// serves SERVFAIL for steered names.
    pub plan_cache: bool,
    /// Where the plan cache lives. Unset: `$STATE_DIRECTORY` (systemd's
    /// `StateDirectory=`), else `$XDG_STATE_HOME/meridian`, else
    /// `$HOME/.local/state/meridian`, else `./meridian-state`, each followed by
    /// `dns-agent-<agent_id>` (see [`default_state_dir`]). A directory that cannot be
    /// created is logged and the agent runs without the cache.
    pub state_dir: Option<PathBuf>,
    /// Threads answering UDP (0: one per core).
    pub udp_threads: usize,
    /// Largest UDP response we send to EDNS clients (RFC 9715 suggests 1232).
    pub max_udp_payload: u16,
    /// Kernel receive and send buffer of the UDP socket, in bytes (capped by
    /// net.core.rmem_max / wmem_max). A deep receive queue absorbs bursts that
    /// would otherwise be dropped while the threads are busy.
    pub udp_socket_buffer: usize,
    /// Open TCP connections at once; more wait (in the kernel's accept queue) for a
    /// slot.
    pub max_tcp_connections: usize,
    /// Open TCP connections from one client address at once; one more is closed as
    /// soon as it is accepted.
    pub max_tcp_connections_per_client: usize,
    /// Each query on a TCP connection must arrive in full within this, counted from
    /// the connection's start or the previous answer; else the connection is closed
    /// (idle, or a client that never finishes its message).
    #[serde(with = "humantime_serde")]
    pub tcp_idle_timeout: Duration,
    /// Writing one answer must finish within this; a client that does not read its
    /// answers is disconnected.
    #[serde(with = "humantime_serde")]
    pub tcp_write_timeout: Duration,
    /// Response rate limiting per client prefix over UDP (off unless
    /// `rrl.responses_per_second` is set).
    pub rrl: RrlConfig,
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
            tls: meridian_tls::ClientTls::default(),
            token_file: None,
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 7420)),
            plan_cache: true,
            state_dir: None,
            udp_threads: 0,
            max_udp_payload: 1232,
            udp_socket_buffer: 4 << 20,
            max_tcp_connections: 1024,
            max_tcp_connections_per_client: 32,
            tcp_idle_timeout: Duration::from_secs(10),
            tcp_write_timeout: Duration::from_secs(5),
            rrl: RrlConfig::default(),
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
    /// With `state_dir` filled in with the default when the plan cache is on and
    /// none was given, so `--check-config` shows where the cache goes.
    pub config: AgentConfig,
    pub zones: Zones,
    /// The token and TLS the agent presents to the control plane.
    pub credentials: meridian_edge_agent::Credentials,
}

impl Validated {
    /// Where the last good plan is cached; `None` when the cache is off.
    pub fn plan_cache_dir(&self) -> Option<&Path> {
        if self.config.plan_cache {
            self.config.state_dir.as_deref()
        } else {
            None
        }
    }
}

/// The plan cache directory used when `state_dir` is not set: the first of
/// `$STATE_DIRECTORY` (the first entry; set by systemd's `StateDirectory=`),
/// `$XDG_STATE_HOME/meridian`, `$HOME/.local/state/meridian` and `./meridian-state`
/// (relative to the working directory), followed by `dns-agent-<agent_id>` so agents
/// sharing a host or a user do not share a cache. Each works unprivileged; `env`
/// reads an environment variable (empty values count as unset).
pub fn default_state_dir(agent_id: &str, env: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    meridian_edge_agent::settings::default_state_dir("dns-agent", agent_id, env)
}

impl AgentConfig {
    /// Checks every key; the error names the first wrong one. The default
    /// `state_dir` comes from the process environment ([`default_state_dir`]).
    pub fn validate(self, origin: &str) -> Result<Validated, ConfigError> {
        self.validate_with_env(origin, |name| std::env::var_os(name))
    }

    /// [`Self::validate`] with the environment given.
    pub fn validate_with_env(
        mut self,
        origin: &str,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Validated, ConfigError> {
        let invalid = |key: &str, msg: String| ConfigError::invalid(origin, key, msg);
        validate_id("agent", &self.agent_id).map_err(|e| invalid("agent_id", e.to_string()))?;
        let credentials = meridian_edge_agent::settings::control_plane_credentials(
            &self.control_plane,
            &self.tls,
            self.token_file.as_deref(),
        )
        .map_err(|e| invalid(&e.key, e.message))?;
        if self.max_udp_payload < 512 {
            return Err(invalid(
                "max_udp_payload",
                format!("{} is below the DNS minimum of 512", self.max_udp_payload),
            ));
        }
        if self.max_tcp_connections == 0 {
            return Err(invalid("max_tcp_connections", "must be at least 1".into()));
        }
        if self.max_tcp_connections_per_client == 0 {
            return Err(invalid("max_tcp_connections_per_client", "must be at least 1".into()));
        }
        for (key, value) in [
            ("tcp_idle_timeout", self.tcp_idle_timeout),
            ("tcp_write_timeout", self.tcp_write_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be longer than 0s".into()));
            }
        }
        self.rrl
            .validate()
            .map_err(|e| invalid(&format!("rrl.{}", e.key), e.message))?;
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
                    "must not be empty (omit it for the default directory, or set plan_cache = false)".into(),
                ));
            }
        }
        if self.plan_cache && self.state_dir.is_none() {
            self.state_dir = Some(default_state_dir(&self.agent_id, env));
        }
        let zones = zone_config::compile(&self.zones).map_err(|e| invalid(&e.key, e.message))?;
        Ok(Validated {
            config: self,
            zones,
            credentials,
        })
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

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(v))
    }

    fn validate_in(text: &str, vars: &[(&str, &str)]) -> Validated {
        let cfg: AgentConfig = meridian_daemon::config::parse(Path::new("agent.toml"), text).unwrap();
        cfg.validate_with_env("file agent.toml", env(vars)).unwrap()
    }

    #[test]
    fn the_plan_cache_is_on_by_default_in_an_unprivileged_directory() {
        let minimal = "agent_id = \"dns-1\"\n";
        assert!(AgentConfig::default().plan_cache);
        let cases: [(&[(&str, &str)], &str); 6] = [
            (
                &[
                    ("STATE_DIRECTORY", "/var/lib/meridian:/var/lib/other"),
                    ("HOME", "/home/u"),
                ],
                "/var/lib/meridian/dns-agent-dns-1",
            ),
            (
                &[("XDG_STATE_HOME", "/home/u/state"), ("HOME", "/home/u")],
                "/home/u/state/meridian/dns-agent-dns-1",
            ),
            (&[("HOME", "/home/u")], "/home/u/.local/state/meridian/dns-agent-dns-1"),
            (
                &[("XDG_STATE_HOME", ""), ("HOME", "/home/u")],
                "/home/u/.local/state/meridian/dns-agent-dns-1",
            ),
            (&[], "meridian-state/dns-agent-dns-1"),
            (&[("STATE_DIRECTORY", "")], "meridian-state/dns-agent-dns-1"),
        ];
        for (vars, dir) in cases {
            let v = validate_in(minimal, vars);
            assert_eq!(v.plan_cache_dir(), Some(Path::new(dir)), "{vars:?}");
            // --check-config shows the directory the cache goes to.
            assert_eq!(v.config.state_dir.as_deref(), Some(Path::new(dir)));
        }
        // An explicit state_dir wins over the environment.
        let v = validate_in(&format!("{minimal}state_dir = \"/srv/dns\"\n"), &[("HOME", "/home/u")]);
        assert_eq!(v.plan_cache_dir(), Some(Path::new("/srv/dns")));
    }

    #[test]
    fn the_plan_cache_can_be_turned_off() {
        let off = "agent_id = \"dns-1\"\nplan_cache = false\n";
        let v = validate_in(off, &[("HOME", "/home/u")]);
        assert_eq!(v.plan_cache_dir(), None);
        assert_eq!(v.config.state_dir, None, "no default directory is invented");
        // Off wins over a state_dir (the flag --no-plan-cache sets plan_cache = false
        // on top of any file).
        let v = validate_in(&format!("{off}state_dir = \"/srv/dns\"\n"), &[]);
        assert_eq!(v.plan_cache_dir(), None);
    }

    #[test]
    fn tcp_limits_and_rrl_have_safe_defaults() {
        let v = validate_in("agent_id = \"dns-1\"\n", &[]);
        let c = &v.config;
        assert_eq!(c.tcp_idle_timeout, Duration::from_secs(10));
        assert_eq!(c.tcp_write_timeout, Duration::from_secs(5));
        assert_eq!(c.max_tcp_connections_per_client, 32);
        assert!(!c.rrl.enabled(), "RRL is off by default, as in BIND and Knot");
        let v = validate_in(
            "agent_id = \"dns-1\"\ntcp_write_timeout = \"500ms\"\n[rrl]\nresponses_per_second = 20\nslip = 3\n",
            &[],
        );
        assert_eq!(v.config.tcp_write_timeout, Duration::from_millis(500));
        assert!(v.config.rrl.enabled());
        assert_eq!((v.config.rrl.slip, v.config.rrl.ipv4_prefix_length), (3, 24));
    }

    #[test]
    fn the_example_config_in_deploy_validates() {
        let text = include_str!("../../deploy/config/dns-agent.toml");
        let v = parse(text).unwrap();
        assert!(!v.zones.is_empty());
        assert!(v.config.plan_cache);
        assert!(!v.config.rrl.enabled(), "the example keeps RRL off, the default");
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
            (
                SAMPLE.replace("state_dir =", "max_tcp_connections_per_client = 0\nstate_dir ="),
                "max_tcp_connections_per_client",
            ),
            (
                SAMPLE.replace("state_dir =", "tcp_write_timeout = \"0s\"\nstate_dir ="),
                "tcp_write_timeout",
            ),
            (
                format!("{SAMPLE}\n[rrl]\nipv6_prefix_length = 200\n"),
                "rrl.ipv6_prefix_length",
            ),
            (format!("{SAMPLE}\n[rrl]\nslipp = 2\n"), "slipp"),
        ];
        for (text, key) in cases {
            let err = parse(&text).unwrap_err();
            let key = key.replace("zones[2]", "zones[0]");
            assert!(err.contains(&key), "expected `{key}` in: {err}");
        }
    }
}
