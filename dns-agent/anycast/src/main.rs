//! `meridian-anycast-agent`: parse flags and config, bind the admin listener, run the
//! agent (`meridian_anycast_agent::agent::run`). Everything else lives in the library
//! so tests can drive the reconciler against real speakers without the daemon.

use std::process::ExitCode;

use clap::Parser;
use meridian_anycast_agent::config::AgentConfig;
use meridian_daemon::config;
use meridian_daemon::{bootstrap, CommonArgs};

/// A Meridian Anycast agent: makes this PoP's BGP speaker announce, prepend,
/// gracefully shut down or withdraw its anycast prefixes as the plan says.
#[derive(Debug, Parser)]
#[command(name = "meridian-anycast-agent", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// This agent's id.
    #[arg(long, env = "MERIDIAN_AGENT_ID")]
    agent_id: Option<String>,
    /// The PoP whose anycast entries this agent follows.
    #[arg(long, env = "MERIDIAN_POP")]
    pop: Option<String>,
    /// Control-plane gRPC endpoints, comma-separated.
    #[arg(long, env = "MERIDIAN_CONTROL_PLANE", value_delimiter = ',')]
    control_plane: Option<Vec<String>>,
    /// Directory for the cached last good plan.
    #[arg(long, env = "MERIDIAN_STATE_DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// Do not cache the last good plan on disk (`plan_cache = false`).
    #[arg(long, env = "MERIDIAN_NO_PLAN_CACHE")]
    no_plan_cache: bool,
}

fn main() -> ExitCode {
    bootstrap::run_main("meridian-anycast-agent", real_main(Args::parse()))
}

async fn real_main(args: Args) -> anyhow::Result<()> {
    let path = args.common.config.as_deref();
    let origin = config::origin(path);
    let mut cfg: AgentConfig = config::load(path)?;
    if let Some(v) = args.agent_id {
        cfg.agent_id = v;
    }
    if let Some(v) = args.pop {
        cfg.pop = v;
    }
    if let Some(v) = args.control_plane {
        cfg.control_plane = v;
    }
    if let Some(v) = args.common.admin_addr {
        cfg.admin_addr = v;
    }
    if let Some(v) = args.state_dir {
        cfg.state_dir = Some(v);
    }
    if args.no_plan_cache {
        cfg.plan_cache = false;
    }
    let validated = cfg.validate(&origin)?;
    let Some(shutdown) = bootstrap::start(&args.common, &origin, &validated.config)? else {
        return Ok(());
    };
    let admin = bootstrap::bind(validated.config.admin_addr, "admin listener", "admin_addr").await?;
    tracing::info!(
        agent = %validated.config.agent_id,
        pop = %validated.config.pop,
        speaker = %validated.speaker.describe(),
        admin = %admin.local_addr()?,
        replicas = ?validated.config.control_plane,
        "anycast agent starting"
    );
    meridian_anycast_agent::agent::run(validated, admin, shutdown)
        .await
        .map_err(anyhow::Error::msg)
}
