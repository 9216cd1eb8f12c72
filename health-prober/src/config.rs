//! The prober's configuration: a TOML file (unknown keys rejected), then flags and
//! `MERIDIAN_*` environment variables on top, then validation that names the key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use meridian_core::ids::validate_id;
use meridian_daemon::config::ConfigError;
use serde::{Deserialize, Serialize};

/// The whole prober configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProberConfig {
    /// This prober's id (lowercase letters, digits, '-', '_').
    pub prober_id: String,
    /// The region (vantage point) this prober measures from.
    pub region: String,
    /// Every control-plane replica's gRPC endpoint (`http://host:port`). Results go
    /// to all of them; assignments come from the first one that answers.
    pub control_plane: Vec<String>,
    /// A bearer token sent as `authorization: Bearer <token>` on every call.
    /// Prefer `token_file` (or the MERIDIAN_PROBER_TOKEN environment variable).
    pub token: Option<String>,
    /// A file holding the bearer token (surrounding whitespace is ignored).
    pub token_file: Option<PathBuf>,
    /// TLS to the control plane (`https://` endpoints): `ca` verifies the replicas;
    /// `cert` and `key` are this prober's client certificate (mutual TLS; its
    /// subject says O=prober, OU=<region>).
    pub tls: meridian_tls::ClientTls,
    /// Admin HTTP listener (/metrics, /live, /ready).
    pub admin_addr: SocketAddr,
    /// Results buffered per replica while it is slow or unreachable; beyond this the
    /// oldest are dropped and counted.
    pub buffer_limit: usize,
    /// Probes in flight at once (an assignment set may lower or raise it).
    pub max_concurrency: usize,
    /// How long results may wait before they are sent as a batch.
    #[serde(with = "humantime_serde")]
    pub batch_interval: Duration,
    /// A batch is sent at once when it reaches this many results.
    pub batch_size: usize,
    /// Timeout for connecting to a control-plane replica.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A stream whose oldest unacknowledged batch is older than this is considered
    /// broken and reconnected (its batches are resent).
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// First reconnect delay; it doubles (with jitter) up to `reconnect_max`.
    #[serde(with = "humantime_serde")]
    pub reconnect_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// How long shutdown may take; buffered results are flushed within it.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ProberConfig {
    fn default() -> Self {
        Self {
            prober_id: String::new(),
            region: String::new(),
            control_plane: vec!["http://127.0.0.1:7400".into()],
            token: None,
            token_file: None,
            tls: meridian_tls::ClientTls::default(),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 7410)),
            buffer_limit: 100_000,
            max_concurrency: 256,
            batch_interval: Duration::from_millis(100),
            batch_size: 500,
            connect_timeout: Duration::from_secs(3),
            ack_timeout: Duration::from_secs(30),
            reconnect_initial: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Flags that override the file (each with a `MERIDIAN_*` env variable).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProberFlags {
    /// This prober's id.
    #[arg(long, env = "MERIDIAN_PROBER_ID")]
    pub prober_id: Option<String>,
    /// The region (vantage point) this prober measures from.
    #[arg(long, env = "MERIDIAN_REGION")]
    pub region: Option<String>,
    /// Control-plane gRPC endpoints, comma-separated.
    #[arg(long, env = "MERIDIAN_CONTROL_PLANE", value_delimiter = ',')]
    pub control_plane: Option<Vec<String>>,
    /// A file holding the bearer token for the control plane.
    #[arg(long, env = "MERIDIAN_PROBER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The bearer token itself (environment only, so it stays out of `ps`).
    #[arg(skip)]
    pub token: Option<String>,
    #[command(flatten)]
    pub tls: meridian_tls::ClientTlsFlags,
    /// Results buffered per replica.
    #[arg(long, env = "MERIDIAN_PROBER_BUFFER_LIMIT")]
    pub buffer_limit: Option<usize>,
    /// Probes in flight at once.
    #[arg(long, env = "MERIDIAN_PROBER_MAX_CONCURRENCY")]
    pub max_concurrency: Option<usize>,
}

impl ProberFlags {
    /// Reads the settings that only come from the environment.
    pub fn with_env(mut self) -> Self {
        if let Ok(token) = std::env::var("MERIDIAN_PROBER_TOKEN") {
            if !token.is_empty() {
                self.token = Some(token);
            }
        }
        self
    }
}

/// The configuration the prober runs with: checked, with the token resolved.
#[derive(Debug, Clone)]
pub struct Validated {
    pub config: ProberConfig,
    /// The bearer token, read from `token` or `token_file`.
    pub token: Option<String>,
    /// TLS to the control plane, loaded (`None`: plaintext).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

impl ProberConfig {
    /// Applies flags on top of the file (flags win).
    pub fn with_flags(mut self, flags: &ProberFlags, admin_addr: Option<SocketAddr>) -> Self {
        if let Some(v) = &flags.prober_id {
            self.prober_id = v.clone();
        }
        if let Some(v) = &flags.region {
            self.region = v.clone();
        }
        if let Some(v) = &flags.control_plane {
            self.control_plane = v.clone();
        }
        if let Some(v) = &flags.token_file {
            self.token_file = Some(v.clone());
            self.token = None;
        }
        if let Some(v) = &flags.token {
            self.token = Some(v.clone());
            self.token_file = None;
        }
        flags.tls.apply(&mut self.tls);
        if let Some(v) = flags.buffer_limit {
            self.buffer_limit = v;
        }
        if let Some(v) = flags.max_concurrency {
            self.max_concurrency = v;
        }
        if let Some(v) = admin_addr {
            self.admin_addr = v;
        }
        self
    }

    /// Checks every value; errors name `origin` (the file or "flags and defaults")
    /// and the key.
    pub fn validate(self, origin: &str) -> Result<Validated, ConfigError> {
        let bad = |key: &str, msg: String| ConfigError::invalid(origin, key, msg);
        validate_id("prober", &self.prober_id).map_err(|e| bad("prober_id", e.to_string()))?;
        validate_id("region", &self.region).map_err(|e| bad("region", e.to_string()))?;
        if self.control_plane.is_empty() {
            return Err(bad(
                "control_plane",
                "at least one control-plane endpoint is required".into(),
            ));
        }
        for (i, endpoint) in self.control_plane.iter().enumerate() {
            check_endpoint(endpoint).map_err(|m| bad("control_plane", format!("endpoint {endpoint:?}: {m}")))?;
            if self.control_plane[..i].contains(endpoint) {
                return Err(bad("control_plane", format!("endpoint {endpoint:?} is listed twice")));
            }
        }
        let token = match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => return Err(bad("token", "set `token` or `token_file`, not both".into())),
            (Some(t), None) => Some(t.trim().to_string()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| bad("token_file", format!("cannot read {}: {e}", path.display())))?;
                Some(text.trim().to_string())
            }
            (None, None) => None,
        };
        if let Some(t) = &token {
            let key = if self.token_file.is_some() {
                "token_file"
            } else {
                "token"
            };
            if t.is_empty() {
                return Err(bad(key, "the token is empty".into()));
            }
            if !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad(key, "the token must be printable ASCII without spaces".into()));
            }
        }
        let tls = self.tls.load().map_err(|e| match e {
            meridian_tls::TlsError::Setting { field, message } => bad(&field, message),
            other => bad("tls", other.to_string()),
        })?;
        for endpoint in &self.control_plane {
            meridian_tls::check_endpoint(endpoint, tls.as_ref(), token.is_some())
                .map_err(|e| bad("control_plane", e.to_string()))?;
        }
        in_range(origin, "buffer_limit", self.buffer_limit, 1, 10_000_000)?;
        in_range(origin, "max_concurrency", self.max_concurrency, 1, 65_536)?;
        in_range(origin, "batch_size", self.batch_size, 1, 100_000)?;
        dur_range(
            origin,
            "batch_interval",
            self.batch_interval,
            Duration::from_millis(1),
            Duration::from_secs(60),
        )?;
        dur_range(
            origin,
            "connect_timeout",
            self.connect_timeout,
            Duration::from_millis(10),
            Duration::from_secs(300),
        )?;
        dur_range(
            origin,
            "ack_timeout",
            self.ack_timeout,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )?;
        dur_range(
            origin,
            "reconnect_initial",
            self.reconnect_initial,
            Duration::from_millis(1),
            Duration::from_secs(60),
        )?;
        dur_range(
            origin,
            "reconnect_max",
            self.reconnect_max,
            self.reconnect_initial,
            Duration::from_secs(600),
        )?;
        dur_range(
            origin,
            "shutdown_grace",
            self.shutdown_grace,
            Duration::from_millis(100),
            Duration::from_secs(600),
        )?;
        Ok(Validated {
            config: self,
            token,
            tls,
        })
    }

    /// The configuration as `--check-config` prints it: the token is never shown.
    pub fn redacted(&self) -> Self {
        let mut c = self.clone();
        if c.token.is_some() {
            c.token = Some("<redacted>".into());
        }
        c
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: tonic::codegen::http::Uri = endpoint.parse().map_err(|e| format!("not a URI: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("expected http://host:port or https://host:port".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    Ok(())
}

fn in_range(origin: &str, key: &str, v: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if v < min || v > max {
        return Err(ConfigError::invalid(
            origin,
            key,
            format!("{v} is out of range {min}..={max}"),
        ));
    }
    Ok(())
}

fn dur_range(origin: &str, key: &str, v: Duration, min: Duration, max: Duration) -> Result<(), ConfigError> {
    if v < min || v > max {
        return Err(ConfigError::invalid(
            origin,
            key,
            format!("{v:?} is out of range {min:?}..={max:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Result<Validated, String> {
        let cfg: ProberConfig = meridian_daemon::config::parse(Path::new("p.toml"), text).map_err(|e| e.to_string())?;
        cfg.validate("file p.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn a_minimal_file_takes_the_defaults() {
        let v = parse("prober_id = \"p1\"\nregion = \"eu-west\"\n").unwrap();
        assert_eq!(v.config.buffer_limit, 100_000);
        assert_eq!(v.config.max_concurrency, 256);
        assert_eq!(v.config.batch_interval, Duration::from_millis(100));
        assert_eq!(v.token, None);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("region = \"eu\"\nprober_id = \"p1\"\nintervall = \"1s\"\n", "intervall"),
            ("prober_id = \"p1\"\nregion = \"EU West\"\n", "`region`"),
            (
                "prober_id = \"p1\"\nregion = \"eu\"\ncontrol_plane = []\n",
                "`control_plane`",
            ),
            (
                "prober_id = \"p1\"\nregion = \"eu\"\ncontrol_plane = [\"https://cp:7400\"]\n",
                "TLS",
            ),
            (
                "prober_id = \"p1\"\nregion = \"eu\"\ncontrol_plane = [\"http://a:1\", \"http://a:1\"]\n",
                "twice",
            ),
            (
                "prober_id = \"p1\"\nregion = \"eu\"\nbuffer_limit = 0\n",
                "`buffer_limit`",
            ),
            (
                "prober_id = \"p1\"\nregion = \"eu\"\nbatch_interval = \"0s\"\n",
                "`batch_interval`",
            ),
            (
                "prober_id = \"p1\"\nregion = \"eu\"\nreconnect_initial = \"5s\"\nreconnect_max = \"1s\"\n",
                "`reconnect_max`",
            ),
            (
                "prober_id = \"p1\"\nregion = \"eu\"\ntoken = \"a\"\ntoken_file = \"/x\"\n",
                "not both",
            ),
            (
                "prober_id = \"p1\"\nregion = \"eu\"\ntoken = \"two words\"\n",
                "`token`",
            ),
            (
                "prober_id = \"p1\"\nregion = \"eu\"\ntoken_file = \"/nonexistent/token\"\n",
                "/nonexistent/token",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want) && err.contains("p.toml"), "{text:?}: {err}");
        }
    }

    #[test]
    fn the_token_comes_from_a_file_and_is_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        let v = parse(&format!(
            "prober_id = \"p1\"\nregion = \"eu\"\ntoken_file = {:?}\n",
            path.display().to_string()
        ))
        .unwrap();
        assert_eq!(v.token.as_deref(), Some("s3cret"));
        let v = parse("prober_id = \"p1\"\nregion = \"eu\"\ntoken = \"s3cret\"\n").unwrap();
        let shown = toml::to_string(&v.config.redacted()).unwrap();
        assert!(!shown.contains("s3cret") && shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn flags_override_the_file() {
        let flags = ProberFlags {
            region: Some("us-east".into()),
            max_concurrency: Some(8),
            token: Some("t".into()),
            ..Default::default()
        };
        let cfg = ProberConfig {
            prober_id: "p1".into(),
            region: "eu".into(),
            token_file: Some("/x".into()),
            ..Default::default()
        };
        let v = cfg.with_flags(&flags, None).validate("flags").unwrap();
        assert_eq!(v.config.region, "us-east");
        assert_eq!(v.config.max_concurrency, 8);
        assert_eq!(v.token.as_deref(), Some("t"));
    }
}
