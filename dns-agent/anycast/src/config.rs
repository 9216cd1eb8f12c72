//! The Anycast agent's configuration: source → parse (TOML, unknown keys rejected) →
//! [`AgentConfig::validate`], whose errors name the key (`speaker.next_hop`). The
//! control-plane keys (`control_plane`, `[tls]`, `token_file`, the plan cache and
//! reconnect timing) have the DNS agent's names and meaning.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use meridian_core::ids::validate_id;
use meridian_daemon::config::ConfigError;
use serde::{Deserialize, Serialize};

use crate::bird::BirdSettings;
use crate::gobgp::{usable_next_hop, GobgpSettings};

/// The agent's configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// This agent's id, as the control plane lists it.
    pub agent_id: String,
    /// The PoP whose anycast entries this agent follows.
    pub pop: String,
    /// Control-plane gRPC endpoints, tried in order.
    pub control_plane: Vec<String>,
    /// TLS to the control plane (`https://` endpoints), as in the DNS agent.
    pub tls: meridian_tls::ClientTls,
    /// A file holding this agent's bearer token.
    pub token_file: Option<PathBuf>,
    /// Admin HTTP listener (/metrics, /live, /ready).
    pub admin_addr: SocketAddr,
    /// Keep the last good plan on disk and reconcile it at start-up when no control
    /// plane answers.
    pub plan_cache: bool,
    /// Where the plan cache lives (default: as the DNS agent's, under
    /// `anycast-agent-<agent_id>`).
    pub state_dir: Option<PathBuf>,
    /// The BGP speaker this agent drives.
    pub speaker: SpeakerConfig,
    /// Reconcile this often even without a new plan (drift made by hand is put back
    /// within one interval).
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// Send the per-prefix report at least this often (and after every reconcile
    /// that changed something).
    #[serde(with = "humantime_serde")]
    pub report_interval: Duration,
    /// Withdraw our prefixes when the agent stops (still never the last announcer
    /// of a prefix). Off by default: routes stay as they are across agent restarts.
    pub withdraw_on_shutdown: bool,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
}

/// The speaker, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SpeakerConfig {
    /// gobgpd, through its gRPC API.
    Gobgp(GobgpConfig),
    /// BIRD 2, through a generated include file and `birdc configure timeout`.
    Bird(BirdConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BirdConfig {
    /// The `birdc` binary.
    #[serde(default = "default_birdc")]
    pub birdc: PathBuf,
    /// BIRD's control socket.
    #[serde(default = "default_bird_socket")]
    pub socket: PathBuf,
    /// The file the agent writes and `bird.conf` includes (create it empty, or with
    /// an empty `protocol static`, before BIRD first starts).
    pub include_file: PathBuf,
    /// The static protocol the file defines (IPv6: the same name with `6`); export
    /// `where proto = "<protocol>"` to the upstream sessions.
    #[serde(default = "default_bird_protocol")]
    pub protocol: String,
    /// The speaker's AS, used for prepends.
    pub local_as: u32,
    /// BIRD undoes a push not confirmed within this.
    #[serde(default = "default_configure_timeout", with = "humantime_serde")]
    pub configure_timeout: Duration,
}

fn default_birdc() -> PathBuf {
    PathBuf::from("/usr/sbin/birdc")
}

fn default_bird_socket() -> PathBuf {
    PathBuf::from("/run/bird/bird.ctl")
}

fn default_bird_protocol() -> String {
    "meridian_anycast".into()
}

fn default_configure_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GobgpConfig {
    /// gobgpd's API (`--api-hosts`), host:port.
    pub api: String,
    /// The next hop of IPv4 routes: must not be a loopback address (GoBGP treats an
    /// UPDATE with a loopback next hop as a withdraw).
    pub next_hop: Ipv4Addr,
    /// The next hop of IPv6 routes; without it IPv6 prefixes are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_v6: Option<Ipv6Addr>,
    /// The speaker's AS, used for prepends.
    pub local_as: u32,
    /// Each API call gives up after this.
    #[serde(default = "default_api_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_api_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            agent_id: String::new(),
            pop: String::new(),
            control_plane: vec!["http://127.0.0.1:7400".into()],
            tls: meridian_tls::ClientTls::default(),
            token_file: None,
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 7430)),
            plan_cache: true,
            state_dir: None,
            speaker: SpeakerConfig::Gobgp(GobgpConfig {
                api: "127.0.0.1:50051".into(),
                next_hop: Ipv4Addr::new(192, 0, 2, 10),
                next_hop_v6: None,
                local_as: 0,
                timeout: default_api_timeout(),
            }),
            reconcile_interval: Duration::from_secs(5),
            report_interval: Duration::from_secs(30),
            withdraw_on_shutdown: false,
            connect_timeout: Duration::from_secs(2),
            reconnect_initial: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Validated {
    /// With `state_dir` filled in when the plan cache is on and none was given.
    pub config: AgentConfig,
    pub credentials: meridian_edge_agent::Credentials,
    pub speaker: Speaker,
}

/// The speaker's settings, validated.
#[derive(Debug, Clone)]
pub enum Speaker {
    Gobgp(GobgpSettings),
    Bird(BirdSettings),
}

impl Speaker {
    /// Where the speaker is reached, for logs.
    pub fn describe(&self) -> String {
        match self {
            Speaker::Gobgp(g) => format!("gobgp at {}", g.api),
            Speaker::Bird(b) => format!("bird at {} (file {})", b.socket.display(), b.include_file.display()),
        }
    }
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

/// The default plan cache directory: as the DNS agent's (`$STATE_DIRECTORY`, else
/// `$XDG_STATE_HOME/meridian`, else `$HOME/.local/state/meridian`, else
/// `./meridian-state`), followed by `anycast-agent-<agent_id>`.
pub fn default_state_dir(agent_id: &str, env: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    meridian_edge_agent::settings::default_state_dir("anycast-agent", agent_id, env)
}

impl AgentConfig {
    /// Checks every key; the error names the first wrong one.
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
        validate_id("pop", &self.pop).map_err(|e| invalid("pop", e.to_string()))?;
        let credentials = meridian_edge_agent::settings::control_plane_credentials(
            &self.control_plane,
            &self.tls,
            self.token_file.as_deref(),
        )
        .map_err(|e| invalid(&e.key, e.message))?;
        let speaker = match &self.speaker {
            SpeakerConfig::Gobgp(g) => Speaker::Gobgp(validate_gobgp(g, &invalid)?),
            SpeakerConfig::Bird(b) => Speaker::Bird(validate_bird(b, &invalid)?),
        };
        for (key, value) in [
            ("reconcile_interval", self.reconcile_interval),
            ("report_interval", self.report_interval),
            ("connect_timeout", self.connect_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be longer than 0s".into()));
            }
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
                    "must not be empty (omit it for the default directory, or set plan_cache = false)".into(),
                ));
            }
        }
        if self.plan_cache && self.state_dir.is_none() {
            self.state_dir = Some(default_state_dir(&self.agent_id, env));
        }
        Ok(Validated {
            config: self,
            credentials,
            speaker,
        })
    }
}

fn validate_gobgp(
    g: &GobgpConfig,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<GobgpSettings, ConfigError> {
    if g.api.parse::<SocketAddr>().is_err() && !g.api.contains(':') {
        return Err(invalid(
            "speaker.api",
            format!("`{}` must be host:port, such as 127.0.0.1:50051", g.api),
        ));
    }
    if !usable_next_hop(IpAddr::V4(g.next_hop)) {
        return Err(invalid(
            "speaker.next_hop",
            format!(
                "{} cannot be announced: GoBGP treats a loopback next hop as a withdraw (use the PoP's \
                     address toward its routers, e.g. 192.0.2.10)",
                g.next_hop
            ),
        ));
    }
    if let Some(v6) = g.next_hop_v6 {
        if !usable_next_hop(IpAddr::V6(v6)) {
            return Err(invalid(
                "speaker.next_hop_v6",
                format!("{v6} cannot be announced as a next hop"),
            ));
        }
    }
    if g.local_as == 0 {
        return Err(invalid(
            "speaker.local_as",
            "the speaker's AS number is required".into(),
        ));
    }
    if g.timeout.is_zero() {
        return Err(invalid("speaker.timeout", "must be longer than 0s".into()));
    }
    Ok(GobgpSettings {
        api: g.api.clone(),
        next_hop: g.next_hop,
        next_hop_v6: g.next_hop_v6,
        local_as: g.local_as,
        timeout: g.timeout,
    })
}

fn validate_bird(b: &BirdConfig, invalid: &impl Fn(&str, String) -> ConfigError) -> Result<BirdSettings, ConfigError> {
    if b.include_file.as_os_str().is_empty() {
        return Err(invalid(
            "speaker.include_file",
            "the file bird.conf includes is required".into(),
        ));
    }
    if b.protocol.is_empty() || !b.protocol.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(invalid(
            "speaker.protocol",
            format!("`{}` must be a BIRD protocol name (letters, digits, _)", b.protocol),
        ));
    }
    if b.local_as == 0 {
        return Err(invalid(
            "speaker.local_as",
            "the speaker's AS number is required".into(),
        ));
    }
    if b.configure_timeout < Duration::from_secs(1) {
        return Err(invalid(
            "speaker.configure_timeout",
            "must be at least 1s (BIRD counts whole seconds)".into(),
        ));
    }
    Ok(BirdSettings {
        birdc: b.birdc.clone(),
        socket: b.socket.clone(),
        include_file: b.include_file.clone(),
        protocol: b.protocol.clone(),
        local_as: b.local_as,
        configure_timeout: b.configure_timeout,
        verify_within: Duration::from_secs(5),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SAMPLE: &str = r#"
agent_id = "anycast-fra1"
pop = "fra1"
control_plane = ["http://127.0.0.1:7400"]
reconcile_interval = "2s"
withdraw_on_shutdown = false

[speaker]
kind = "gobgp"
api = "127.0.0.1:50051"
next_hop = "192.0.2.10"
local_as = 65001
"#;

    fn parse(text: &str) -> Result<Validated, String> {
        let cfg: AgentConfig =
            meridian_daemon::config::parse(Path::new("anycast.toml"), text).map_err(|e| e.to_string())?;
        cfg.validate_with_env("file anycast.toml", |_| None)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_sample_validates_and_the_example_file_too() {
        let v = parse(SAMPLE).unwrap();
        match &v.speaker {
            Speaker::Gobgp(g) => assert_eq!(g.local_as, 65001),
            other => panic!("{other:?}"),
        }
        assert_eq!(v.config.reconcile_interval, Duration::from_secs(2));
        assert_eq!(
            v.config.state_dir.unwrap(),
            PathBuf::from("meridian-state/anycast-agent-anycast-fra1")
        );
        let example = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/config/anycast-agent.toml"
        ))
        .unwrap();
        parse(&example).unwrap();
        let bird = parse(&SAMPLE.replace(
            "kind = \"gobgp\"\napi = \"127.0.0.1:50051\"\nnext_hop = \"192.0.2.10\"\n",
            "kind = \"bird\"\ninclude_file = \"/etc/bird/meridian-anycast.conf\"\n",
        ))
        .unwrap();
        match bird.speaker {
            Speaker::Bird(b) => {
                assert_eq!(b.socket, PathBuf::from("/run/bird/bird.ctl"));
                assert_eq!(b.configure_timeout, Duration::from_secs(30));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                SAMPLE.replace("192.0.2.10", "127.0.0.1"),
                "`speaker.next_hop`: 127.0.0.1 cannot be announced",
            ),
            (SAMPLE.replace("local_as = 65001", "local_as = 0"), "`speaker.local_as`"),
            (SAMPLE.replace("pop = \"fra1\"", "pop = \"\""), "`pop`"),
            (SAMPLE.replace("\"2s\"", "\"0s\""), "`reconcile_interval`"),
            (SAMPLE.replace("kind = \"gobgp\"", "kind = \"quagga\""), "quagga"),
            (
                SAMPLE.replace("local_as = 65001", "local_as = 65001\nnexthop = \"x\""),
                "nexthop",
            ),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
