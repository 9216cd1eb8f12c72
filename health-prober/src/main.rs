//! `meridian-prober`: parse flags and config, bind the admin listener, run the
//! prober. Everything else lives in the library so tests run probers in-process.

use std::process::ExitCode;

use clap::Parser;
use meridian_daemon::{bootstrap, config, CommonArgs};
use meridian_prober::{ProberConfig, ProberFlags};

/// A Meridian health prober: probes PoPs from one region and streams the results to
/// every control-plane replica.
#[derive(Debug, Parser)]
#[command(name = "meridian-prober", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    flags: ProberFlags,
}

fn main() -> ExitCode {
    bootstrap::run_main("meridian-prober", real_main(Args::parse()))
}

async fn real_main(args: Args) -> anyhow::Result<()> {
    let path = args.common.config.as_deref();
    let origin = config::origin(path);
    let file: ProberConfig = config::load(path)?;
    let flags = args.flags.with_env();
    let validated = file.with_flags(&flags, args.common.admin_addr).validate(&origin)?;
    let Some(shutdown) = bootstrap::start(&args.common, &origin, &validated.config.redacted())? else {
        return Ok(());
    };
    let cfg = &validated.config;
    let admin = bootstrap::bind(cfg.admin_addr, "admin listener", "admin_addr").await?;
    tracing::info!(prober = %cfg.prober_id, region = %cfg.region, replicas = ?cfg.control_plane, "prober starting");
    meridian_prober::run(validated, admin, shutdown)
        .await
        .map_err(anyhow::Error::msg)
}
