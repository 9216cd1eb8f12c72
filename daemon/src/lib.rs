//! The skeleton every Meridian daemon shares, so the control plane, the prober and the
//! agents behave the same way in operation:
//!
//! * [`config`]: TOML files with unknown keys rejected, a validate step, and errors
//!   that name the file, the key and what was expected; `--check-config`.
//! * [`CommonArgs`]: the flags every daemon takes, each with a `MERIDIAN_*` env override.
//! * [`admin`]: the admin HTTP listener with `/metrics` (Prometheus), `/live`, `/ready`.
//! * [`telemetry`]: `tracing` logs as text or JSON.
//! * [`shutdown`]: SIGTERM/SIGINT cancel one `CancellationToken`; tasks drain under a
//!   bounded grace period and whatever did not finish is logged.
//! * [`bootstrap`]: the `main()` every daemon repeats (runtime, `--check-config`,
//!   logs, signal, bind errors naming the key, exit code), written once.
//! * [`failover`]: the one endpoint-failover loop for clients of the control plane
//!   (endpoints in order, backoff with jitter after a whole round failed, reset after
//!   a healthy session).
//!
//! Decision: servers take already-bound listeners and a cancellation token
//! (`run(listener, shutdown)`), so tests bind port 0 and run many servers in one
//! process; `main.rs` stays thin. The alternative, each server binding from its
//! config, makes tests race for ports.

pub mod admin;
pub mod bootstrap;
pub mod config;
pub mod failover;
pub mod shutdown;
pub mod telemetry;

use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags every Meridian daemon takes. Flags override the config file; each flag can
/// also be set from the environment variable named in its help.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// The TOML config file. Without one, built-in defaults and flags are used.
    #[arg(long, short = 'c', env = "MERIDIAN_CONFIG")]
    pub config: Option<PathBuf>,

    /// Load and validate the configuration, print it, and exit (0 when valid).
    #[arg(long)]
    pub check_config: bool,

    /// Admin HTTP listener (/metrics, /live, /ready), e.g. 127.0.0.1:9400.
    #[arg(long, env = "MERIDIAN_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,

    /// Log format.
    #[arg(long, env = "MERIDIAN_LOG_FORMAT", value_enum, default_value_t = telemetry::LogFormat::Text)]
    pub log_format: telemetry::LogFormat,

    /// Log filter in `tracing` EnvFilter syntax, e.g. `info` or `meridian_store=debug,info`.
    #[arg(long, env = "MERIDIAN_LOG", default_value = "info")]
    pub log: String,
}
