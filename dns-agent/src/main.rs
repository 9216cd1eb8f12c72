//! `meridian-dns-agent`: authoritative DNS for Meridian's steered names, following
//! the control plane's plan (issue [4]).
//!
//! Today it is the shared daemon skeleton with the agent's own configuration: config
//! validation, `--check-config`, the admin listener (`/ready` stays false, saying
//! why, until it serves DNS) and bounded shutdown. It does not pretend to answer.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use meridian_core::ids::validate_id;
use meridian_daemon::config::{self, ConfigError};
use meridian_daemon::shutdown::{self, Tasks};
use meridian_daemon::{telemetry, CommonArgs};
use serde::{Deserialize, Serialize};

/// A Meridian DNS agent: answers authoritative queries for steered names with the
/// healthy, weighted PoPs of the client's region.
#[derive(Debug, Parser)]
#[command(name = "meridian-dns-agent", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// This agent's id.
    #[arg(long, env = "MERIDIAN_AGENT_ID")]
    agent_id: Option<String>,
    /// DNS listener (UDP and TCP), e.g. 127.0.0.1:5353.
    #[arg(long, env = "MERIDIAN_DNS_ADDR")]
    dns_addr: Option<SocketAddr>,
    /// Control-plane gRPC endpoints, comma-separated.
    #[arg(long, env = "MERIDIAN_CONTROL_PLANE", value_delimiter = ',')]
    control_plane: Option<Vec<String>>,
}

/// The agent's configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AgentConfig {
    agent_id: String,
    dns_addr: SocketAddr,
    control_plane: Vec<String>,
    admin_addr: SocketAddr,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            agent_id: String::new(),
            dns_addr: SocketAddr::from(([127, 0, 0, 1], 5353)),
            control_plane: vec!["http://127.0.0.1:7400".into()],
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 7420)),
        }
    }
}

impl AgentConfig {
    fn validate(self, origin: &str) -> Result<Self, ConfigError> {
        validate_id("agent", &self.agent_id).map_err(|e| ConfigError::invalid(origin, "agent_id", e.to_string()))?;
        if self.control_plane.is_empty() {
            return Err(ConfigError::invalid(
                origin,
                "control_plane",
                "at least one control-plane endpoint is required",
            ));
        }
        Ok(self)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meridian-dns-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(real_main(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meridian-dns-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn real_main(args: Args) -> anyhow::Result<()> {
    let path = args.common.config.as_deref();
    let origin = config::origin(path);
    let mut cfg: AgentConfig = config::load(path)?;
    if let Some(v) = args.agent_id {
        cfg.agent_id = v;
    }
    if let Some(v) = args.dns_addr {
        cfg.dns_addr = v;
    }
    if let Some(v) = args.control_plane {
        cfg.control_plane = v;
    }
    if let Some(v) = args.common.admin_addr {
        cfg.admin_addr = v;
    }
    let cfg = cfg.validate(&origin)?;
    if args.common.check_config {
        println!("{origin}: ok\n{}", toml::to_string_pretty(&cfg)?);
        return Ok(());
    }
    telemetry::init(args.common.log_format, &args.common.log).map_err(anyhow::Error::msg)?;
    let admin = tokio::net::TcpListener::bind(cfg.admin_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the admin listener `admin_addr` {}: {e}", cfg.admin_addr))?;
    let shutdown = shutdown::on_signal();
    let (_ready_tx, ready) =
        tokio::sync::watch::channel(Err("DNS serving is not implemented yet (issue [4])".to_string()));
    tracing::info!(agent = %cfg.agent_id, "dns agent started (skeleton: not serving DNS yet)");
    let mut tasks = Tasks::new();
    tasks.spawn(
        "admin-http",
        meridian_daemon::admin::serve(admin, ready, shutdown.clone()),
    );
    tasks
        .run_until(shutdown, Duration::from_secs(5))
        .await
        .map_err(anyhow::Error::msg)
}
