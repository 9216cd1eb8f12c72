//! `meridian-prober`: one process per region (vantage point). It will receive probe
//! assignments from the control plane and stream results back (issue [2]).
//!
//! Today it is the shared daemon skeleton with the prober's own configuration: config
//! validation, `--check-config`, the admin listener (`/ready` stays false, saying
//! why, until probing exists) and bounded shutdown. It does not pretend to probe.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use meridian_core::ids::validate_id;
use meridian_daemon::config::{self, ConfigError};
use meridian_daemon::shutdown::{self, Tasks};
use meridian_daemon::{telemetry, CommonArgs};
use serde::{Deserialize, Serialize};

/// A Meridian health prober: probes PoPs from one region and streams the results to
/// every control-plane replica.
#[derive(Debug, Parser)]
#[command(name = "meridian-prober", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// This prober's id.
    #[arg(long, env = "MERIDIAN_PROBER_ID")]
    prober_id: Option<String>,
    /// The region (vantage point) this prober measures from.
    #[arg(long, env = "MERIDIAN_REGION")]
    region: Option<String>,
    /// Control-plane gRPC endpoints, comma-separated.
    #[arg(long, env = "MERIDIAN_CONTROL_PLANE", value_delimiter = ',')]
    control_plane: Option<Vec<String>>,
}

/// The prober's configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ProberConfig {
    prober_id: String,
    region: String,
    control_plane: Vec<String>,
    admin_addr: SocketAddr,
}

impl Default for ProberConfig {
    fn default() -> Self {
        Self {
            prober_id: String::new(),
            region: String::new(),
            control_plane: vec!["http://127.0.0.1:7400".into()],
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 7410)),
        }
    }
}

impl ProberConfig {
    fn validate(self, origin: &str) -> Result<Self, ConfigError> {
        validate_id("prober", &self.prober_id).map_err(|e| ConfigError::invalid(origin, "prober_id", e.to_string()))?;
        validate_id("region", &self.region).map_err(|e| ConfigError::invalid(origin, "region", e.to_string()))?;
        if self.control_plane.is_empty() {
            return Err(ConfigError::invalid(origin, "control_plane", "at least one control-plane endpoint is required"));
        }
        Ok(self)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meridian-prober: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(real_main(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meridian-prober: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn real_main(args: Args) -> anyhow::Result<()> {
    let path = args.common.config.as_deref();
    let origin = config::origin(path);
    let mut cfg: ProberConfig = config::load(path)?;
    if let Some(v) = args.prober_id {
        cfg.prober_id = v;
    }
    if let Some(v) = args.region {
        cfg.region = v;
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
    let (_ready_tx, ready) = tokio::sync::watch::channel(Err("probing is not implemented yet (issue [2])".to_string()));
    tracing::info!(prober = %cfg.prober_id, region = %cfg.region, "prober started (skeleton: no probing yet)");
    let mut tasks = Tasks::new();
    tasks.spawn("admin-http", meridian_daemon::admin::serve(admin, ready, shutdown.clone()));
    tasks.run_until(shutdown, Duration::from_secs(5)).await.map_err(anyhow::Error::msg)
}
