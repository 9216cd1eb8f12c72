//! The control plane's configuration: a TOML file (unknown keys rejected), then flags
//! and `MERIDIAN_*` environment variables on top, then validation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use meridian_core::ReplicaId;
use meridian_daemon::config::ConfigError;
use meridian_store::etcd::EtcdTls;
use serde::{Deserialize, Serialize};

/// The whole control-plane configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlPlaneConfig {
    /// This replica's id; defaults to `cp-<grpc port>`.
    pub replica_id: Option<String>,
    /// gRPC listener (API for probers, agents and meridianctl).
    pub grpc_addr: SocketAddr,
    /// The address other components should use to reach this replica's gRPC API
    /// (defaults to `grpc_addr`).
    pub advertise_addr: Option<String>,
    /// Admin HTTP listener (/metrics, /live, /ready).
    pub admin_addr: SocketAddr,
    /// Who may read the admin port: `[admin] open_on_loopback`.
    pub admin: AdminSettings,
    /// TLS for the gRPC API: `cert` and `key` this replica presents and, for mutual
    /// TLS, `client_ca` that client certificates (operators, probers, agents, other
    /// replicas) chain to. Replicas also verify each other against `client_ca` when a
    /// follower forwards a mutation to the leader, presenting their own `cert`.
    pub tls: meridian_tls::ServerTls,
    /// Serve plaintext gRPC on a non-loopback address. Without TLS the control plane
    /// refuses to listen beyond loopback unless this is set.
    pub insecure_plaintext: bool,
    pub store: StoreConfig,
    pub election: ElectionSettings,
    /// The durable event log's retention and queue.
    pub events: EventLogSettings,
    /// Who may call what: `[auth]` with `mode`, `[[auth.operators]]` and
    /// `[[auth.agents]]` (probers authenticate with their `[[probers]]` tokens).
    pub auth: crate::authz::AuthSettings,
    /// Bounds on the gRPC server: concurrent unary calls, their deadline, message
    /// size, open agent and probe streams.
    pub limits: crate::limits::LimitSettings,
    /// How long shutdown may take before remaining tasks are abandoned.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Probers allowed to report, each bound to its region by a bearer token. With
    /// none configured, probers are not authenticated (a warning says so) and each
    /// is trusted for the region it claims.
    pub probers: Vec<ProberCredential>,
}

/// One prober's credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProberCredential {
    pub id: String,
    pub region: String,
    /// The bearer token, inline.
    pub token: Option<String>,
    /// Or a file holding the token (trailing whitespace ignored).
    pub token_file: Option<PathBuf>,
}

/// Who a prober is, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProberIdentity {
    pub id: String,
    pub region: String,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        Self {
            replica_id: None,
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 7400)),
            advertise_addr: None,
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 7401)),
            admin: AdminSettings::default(),
            tls: meridian_tls::ServerTls::default(),
            insecure_plaintext: false,
            store: StoreConfig::default(),
            election: ElectionSettings::default(),
            events: EventLogSettings::default(),
            auth: crate::authz::AuthSettings::default(),
            limits: crate::limits::LimitSettings::default(),
            shutdown_grace: Duration::from_secs(10),
            probers: Vec::new(),
        }
    }
}

/// The admin port's access.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// On a loopback `admin_addr`, serve /metrics, /live and /ready in plaintext to
    /// anyone on the machine (scrapers, health checks). Otherwise — beyond loopback,
    /// or with this off — the port serves TLS with the gRPC API's `[tls]` files and
    /// every request needs a viewer credential (client certificate or bearer token).
    pub open_on_loopback: bool,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self { open_on_loopback: true }
    }
}

/// Where durable state lives. With no etcd endpoints, the embedded store is used.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// etcd client URLs, e.g. `["http://10.0.0.1:2379", "http://10.0.0.2:2379"]`.
    pub etcd_endpoints: Vec<String>,
    /// TLS for etcd (CA, client certificate and key).
    pub etcd_tls: Option<EtcdTls>,
    /// How long to wait for etcd at start-up before giving up.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Per-request timeout.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The embedded store's data directory.
    pub data_dir: PathBuf,
    /// The root of every Meridian key.
    pub key_prefix: String,
    /// How often the leader compacts store history.
    #[serde(with = "humantime_serde")]
    pub compaction_interval: Duration,
    /// How many revisions of history compaction keeps (watchers that fall further
    /// behind re-list).
    pub compaction_retain_revisions: i64,
    /// How many published plan versions the leader keeps (older ones are deleted at
    /// each compaction tick, so etcd's quota or the embedded snapshot stays bounded;
    /// `restore-plan` reaches back this far).
    pub plan_history: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            etcd_endpoints: Vec::new(),
            etcd_tls: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(3),
            data_dir: PathBuf::from("meridian-data"),
            key_prefix: "/meridian".to_string(),
            compaction_interval: Duration::from_secs(300),
            compaction_retain_revisions: 10_000,
            plan_history: 1_000,
        }
    }
}

/// Leader election settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElectionSettings {
    /// The leader lease's time to live: a dead leader is replaced within about this long.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
}

impl Default for ElectionSettings {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(2),
        }
    }
}

/// The durable event log (`<root>/events/` in the store): the leader appends and
/// prunes it; every replica reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventLogSettings {
    /// Events older than this are pruned.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// At most this many events are kept (the oldest go first).
    pub max_count: u64,
    /// How often the leader prunes.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
    /// How many events may wait for the background writer; past this, new events are
    /// dropped from the store (counted, logged) but stay in the replica's memory.
    pub queue: usize,
}

impl Default for EventLogSettings {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_count: 100_000,
            prune_interval: Duration::from_secs(60),
            queue: 10_000,
        }
    }
}

/// Flags that override the file (each with a `MERIDIAN_*` env variable).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ControlPlaneFlags {
    /// This replica's id (lowercase letters, digits, '-', '_').
    #[arg(long, env = "MERIDIAN_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// gRPC listener address.
    #[arg(long, env = "MERIDIAN_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// Address advertised to other components (defaults to the gRPC listener).
    #[arg(long, env = "MERIDIAN_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// Comma-separated etcd client URLs; when empty, the embedded store is used.
    #[arg(long, env = "MERIDIAN_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Option<Vec<String>>,
    /// The embedded store's data directory.
    #[arg(long, env = "MERIDIAN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Root prefix of every Meridian key in the store.
    #[arg(long, env = "MERIDIAN_KEY_PREFIX")]
    pub key_prefix: Option<String>,
    /// Leader lease time to live, e.g. `3s`.
    #[arg(long, env = "MERIDIAN_LEASE_TTL", value_parser = humantime::parse_duration)]
    pub lease_ttl: Option<Duration>,
    /// PEM certificate the gRPC API presents (with --tls-key); overrides [tls] cert.
    #[arg(long, env = "MERIDIAN_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "MERIDIAN_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA that client certificates chain to (mutual TLS).
    #[arg(long, env = "MERIDIAN_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve plaintext gRPC on a non-loopback address (refused without this).
    #[arg(long, env = "MERIDIAN_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Validated {
    pub replica_id: ReplicaId,
    /// Bearer token → principal (operators, agents, probers), for the authorization
    /// layer.
    pub credentials: std::sync::Arc<crate::authz::Credentials>,
    /// Bearer token → prober identity; empty when prober auth is off.
    pub prober_tokens: std::collections::HashMap<String, ProberIdentity>,
    pub advertise_addr: String,
    /// Where the bootstrap admin token lives, when roles are enforced and no
    /// operator credential and no client CA are configured.
    pub bootstrap_admin: Option<PathBuf>,
    /// The gRPC server's TLS, loaded (`None`: plaintext).
    pub server_tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// How a follower reaches the leader when it forwards a mutation: the cluster CA
    /// and this replica's own certificate (`None`: plaintext).
    pub forward_tls: Option<tonic::transport::ClientTlsConfig>,
    /// TLS for the admin port (`None`: plaintext).
    pub admin_tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// Whether every admin request needs a viewer credential.
    pub admin_checked: bool,
    pub config: ControlPlaneConfig,
}

impl ControlPlaneConfig {
    /// Applies flags on top of the file (flags win).
    pub fn with_flags(mut self, flags: &ControlPlaneFlags, admin_addr: Option<SocketAddr>) -> Self {
        if let Some(v) = &flags.replica_id {
            self.replica_id = Some(v.clone());
        }
        if let Some(v) = flags.grpc_addr {
            self.grpc_addr = v;
        }
        if let Some(v) = &flags.advertise_addr {
            self.advertise_addr = Some(v.clone());
        }
        if let Some(v) = &flags.etcd_endpoints {
            self.store.etcd_endpoints = v
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if let Some(v) = &flags.data_dir {
            self.store.data_dir = v.clone();
        }
        if let Some(v) = &flags.key_prefix {
            self.store.key_prefix = v.clone();
        }
        if let Some(v) = flags.lease_ttl {
            self.election.lease_ttl = v;
        }
        if let Some(v) = admin_addr {
            self.admin_addr = v;
        }
        if let Some(v) = &flags.tls_cert {
            self.tls.cert = Some(v.clone());
        }
        if let Some(v) = &flags.tls_key {
            self.tls.key = Some(v.clone());
        }
        if let Some(v) = &flags.tls_client_ca {
            self.tls.client_ca = Some(v.clone());
        }
        if flags.insecure_plaintext {
            self.insecure_plaintext = true;
        }
        self
    }

    /// Checks the configuration; `origin` names where it came from for errors.
    pub fn validate(self, origin: &str) -> Result<Validated, ConfigError> {
        let replica_id = self
            .replica_id
            .clone()
            .unwrap_or_else(|| format!("cp-{}", self.grpc_addr.port()));
        let replica_id =
            ReplicaId::new(replica_id).map_err(|e| ConfigError::invalid(origin, "replica_id", e.to_string()))?;
        let ttl = self.election.lease_ttl;
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(60) {
            return Err(ConfigError::invalid(
                origin,
                "election.lease_ttl",
                format!("must be between 1s and 60s, got {ttl:?}"),
            ));
        }
        if !self.store.key_prefix.starts_with('/') || self.store.key_prefix.len() < 2 {
            return Err(ConfigError::invalid(
                origin,
                "store.key_prefix",
                "must start with '/' and name a root, e.g. \"/meridian\"",
            ));
        }
        for (i, ep) in self.store.etcd_endpoints.iter().enumerate() {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                return Err(ConfigError::invalid(
                    origin,
                    &format!("store.etcd_endpoints[{i}]"),
                    format!("`{ep}` must be a URL starting with http:// or https://"),
                ));
            }
        }
        if self.store.connect_timeout.is_zero() || self.store.request_timeout.is_zero() {
            return Err(ConfigError::invalid(
                origin,
                "store.request_timeout",
                "timeouts must be greater than zero",
            ));
        }
        if self.store.plan_history < 10 {
            return Err(ConfigError::invalid(
                origin,
                "store.plan_history",
                format!("keep at least 10 plan versions, got {}", self.store.plan_history),
            ));
        }
        if self.store.compaction_retain_revisions < 100 || self.store.compaction_interval < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                origin,
                "store.compaction_retain_revisions",
                "keep at least 100 revisions and compact at most once a second",
            ));
        }
        if self.events.max_age < Duration::from_secs(60) {
            return Err(ConfigError::invalid(
                origin,
                "events.max_age",
                format!("keep events for at least 1m, got {:?}", self.events.max_age),
            ));
        }
        if self.events.max_count < 100 {
            return Err(ConfigError::invalid(
                origin,
                "events.max_count",
                format!("keep at least 100 events, got {}", self.events.max_count),
            ));
        }
        if self.events.prune_interval < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                origin,
                "events.prune_interval",
                "prune at most once a second",
            ));
        }
        if self.events.queue < 100 {
            return Err(ConfigError::invalid(
                origin,
                "events.queue",
                format!("queue at least 100 events, got {}", self.events.queue),
            ));
        }
        self.limits
            .check()
            .map_err(|(key, message)| ConfigError::invalid(origin, key, message))?;
        let mut prober_tokens = std::collections::HashMap::new();
        for (i, p) in self.probers.iter().enumerate() {
            let at = |field: &str| format!("probers[{i}].{field}");
            meridian_core::ids::validate_id("prober", &p.id)
                .map_err(|e| ConfigError::invalid(origin, &at("id"), e.to_string()))?;
            meridian_core::ids::validate_id("region", &p.region)
                .map_err(|e| ConfigError::invalid(origin, &at("region"), e.to_string()))?;
            let token = match (&p.token, &p.token_file) {
                (Some(t), None) => t.clone(),
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|e| {
                        ConfigError::invalid(
                            origin,
                            &at("token_file"),
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?
                    .trim()
                    .to_string(),
                _ => {
                    return Err(ConfigError::invalid(
                        origin,
                        &at("token"),
                        "set exactly one of `token` and `token_file`",
                    ))
                }
            };
            if token.len() < 16 {
                return Err(ConfigError::invalid(
                    origin,
                    &at("token"),
                    "must be at least 16 characters",
                ));
            }
            let identity = ProberIdentity {
                id: p.id.clone(),
                region: p.region.clone(),
            };
            if prober_tokens.insert(token, identity).is_some() {
                return Err(ConfigError::invalid(
                    origin,
                    &at("token"),
                    "the same token is given to two probers",
                ));
            }
        }
        let tls_error = |e: meridian_tls::TlsError| match e {
            meridian_tls::TlsError::Setting { field, message } => ConfigError::invalid(origin, &field, message),
            other => ConfigError::invalid(origin, "tls", other.to_string()),
        };
        let server_tls = if self.tls.enabled() {
            Some(meridian_tls::rustls_server_config(&self.tls, &[b"h2"]).map_err(tls_error)?)
        } else {
            self.tls.check("tls").map_err(tls_error)?;
            None
        };
        if server_tls.is_none() && !self.grpc_addr.ip().is_loopback() && !self.insecure_plaintext {
            return Err(ConfigError::invalid(
                origin,
                "tls",
                format!(
                    "refusing to serve plaintext gRPC on {}, beyond loopback: set [tls] cert and key (and client_ca for mutual TLS), or pass --insecure-plaintext (insecure_plaintext = true) to accept that anyone on the network can read tokens and results",
                    self.grpc_addr
                ),
            ));
        }
        let forward_tls = match (&server_tls, &self.tls.client_ca) {
            (Some(_), Some(ca)) => meridian_tls::ClientTls {
                ca: Some(ca.clone()),
                cert: self.tls.cert.clone(),
                key: self.tls.key.clone(),
                server_name: None,
            }
            .load()
            .map_err(tls_error)?,
            _ => None,
        };
        let bootstrap_admin = (self.auth.mode == crate::authz::AuthMode::Enforce
            && self.auth.operators.is_empty()
            && self.tls.client_ca.is_none())
        .then(|| self.store.data_dir.join("bootstrap-admin.token"));
        // The admin port: open plaintext on loopback (by default); otherwise TLS with
        // the API's files and a viewer credential on every request.
        let admin_open = self.admin.open_on_loopback && self.admin_addr.ip().is_loopback();
        let (admin_tls, admin_checked) = if admin_open {
            (None, false)
        } else if server_tls.is_some() {
            let config = meridian_tls::rustls_server_config(&self.tls, &[b"http/1.1"]).map_err(tls_error)?;
            (Some(config), self.auth.mode == crate::authz::AuthMode::Enforce)
        } else if self.insecure_plaintext {
            (None, self.auth.mode == crate::authz::AuthMode::Enforce)
        } else {
            return Err(ConfigError::invalid(
                origin,
                "admin_addr",
                format!(
                    "refusing to serve the admin port on {} without TLS (it is beyond loopback, or admin.open_on_loopback = false): set [tls] cert and key, or pass --insecure-plaintext",
                    self.admin_addr
                ),
            ));
        };
        let scheme = if server_tls.is_some() { "https" } else { "http" };
        let advertise_addr = self
            .advertise_addr
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}", self.grpc_addr));
        let credentials = self
            .auth
            .credentials(prober_tokens.iter())
            .map_err(|(key, message)| ConfigError::invalid(origin, &key, message))?;
        Ok(Validated {
            replica_id,
            credentials: std::sync::Arc::new(credentials),
            prober_tokens,
            advertise_addr,
            bootstrap_admin,
            server_tls,
            forward_tls,
            admin_tls,
            admin_checked,
            config: self,
        })
    }

    pub fn uses_etcd(&self) -> bool {
        !self.store.etcd_endpoints.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<ControlPlaneConfig, ConfigError> {
        meridian_daemon::config::parse(Path::new("cp.toml"), text)
    }

    #[test]
    fn defaults_are_valid_and_embedded() {
        let v = ControlPlaneConfig::default().validate("defaults").unwrap();
        assert_eq!(v.replica_id.as_str(), "cp-7400");
        assert!(!v.config.uses_etcd());
    }

    #[test]
    fn unknown_keys_and_bad_types_are_rejected() {
        let err = parse("[store]\netcd_endpoint = [\"http://x:1\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cp.toml") && err.contains("etcd_endpoint"), "{err}");
        let err = parse("[election]\nlease_ttl = 5\n").unwrap_err().to_string();
        assert!(err.contains("lease_ttl"), "{err}");
        let err = parse("grpc_addr = \"nowhere\"\n").unwrap_err().to_string();
        assert!(err.contains("grpc_addr"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let cfg = parse("[store]\netcd_endpoints = [\"http://a:1\", \"b:2\"]\n").unwrap();
        let err = cfg.validate("file cp.toml").unwrap_err().to_string();
        assert!(
            err.contains("store.etcd_endpoints[1]") && err.contains("b:2") && err.contains("cp.toml"),
            "{err}"
        );
        let cfg = parse("[election]\nlease_ttl = \"100ms\"\n").unwrap();
        assert!(cfg
            .validate("x")
            .unwrap_err()
            .to_string()
            .contains("election.lease_ttl"));
        let cfg = parse("replica_id = \"CP 1\"\n").unwrap();
        assert!(cfg.validate("x").unwrap_err().to_string().contains("replica_id"));
    }

    #[test]
    fn event_retention_defaults_to_a_week_and_100k_and_is_checked() {
        let v = ControlPlaneConfig::default().validate("d").unwrap();
        assert_eq!(v.config.events.max_age, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(v.config.events.max_count, 100_000);
        let cfg = parse("[events]\nmax_age = \"30d\"\nmax_count = 5000\n").unwrap();
        let v = cfg.validate("x").unwrap();
        assert_eq!(
            (v.config.events.max_age, v.config.events.max_count),
            (Duration::from_secs(30 * 24 * 3600), 5000)
        );
        let cfg = parse("[events]\nmax_count = 10\n").unwrap();
        assert!(cfg.validate("x").unwrap_err().to_string().contains("events.max_count"));
        let cfg = parse("[events]\nmax_age = \"5s\"\n").unwrap();
        assert!(cfg.validate("x").unwrap_err().to_string().contains("events.max_age"));
    }

    #[test]
    fn prober_credentials_are_checked() {
        let cfg = parse("[[probers]]\nid = \"p1\"\nregion = \"eu-west\"\ntoken = \"0123456789abcdef\"\n").unwrap();
        let v = cfg.validate("x").unwrap();
        assert_eq!(
            v.prober_tokens["0123456789abcdef"],
            ProberIdentity {
                id: "p1".into(),
                region: "eu-west".into()
            }
        );
        let cfg = parse("[[probers]]\nid = \"p1\"\nregion = \"eu-west\"\ntoken = \"short\"\n").unwrap();
        assert!(cfg.validate("x").unwrap_err().to_string().contains("probers[0].token"));
        let cfg = parse("[[probers]]\nid = \"p1\"\nregion = \"eu-west\"\n").unwrap();
        assert!(cfg.validate("x").unwrap_err().to_string().contains("exactly one"));
    }

    #[test]
    fn flags_override_the_file() {
        let cfg = parse("replica_id = \"a\"\n[store]\netcd_endpoints = [\"http://a:1\"]\n").unwrap();
        let flags = ControlPlaneFlags {
            replica_id: Some("b".into()),
            etcd_endpoints: Some(vec![" http://c:3 ".into(), "".into()]),
            ..Default::default()
        };
        let v = cfg.with_flags(&flags, None).validate("x").unwrap();
        assert_eq!(v.replica_id.as_str(), "b");
        assert_eq!(v.config.store.etcd_endpoints, vec!["http://c:3".to_string()]);
    }

    #[test]
    fn plan_history_keeps_a_thousand_by_default_and_at_least_ten() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg.store.plan_history, 1_000);
        let cfg = parse("[store]\nplan_history = 3\n").unwrap();
        let err = cfg.validate("cp.toml").unwrap_err().to_string();
        assert!(err.contains("store.plan_history"), "{err}");
    }
}
