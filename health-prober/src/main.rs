//! `meridian-prober`: parse flags and config, bind the admin listener, run the
//! prober. Everything else lives in the library so tests run probers in-process.

use std::process::ExitCode;

use clap::Parser;
use meridian_daemon::{config, shutdown, telemetry, CommonArgs};
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
    let file: ProberConfig = config::load(path)?;
    let flags = args.flags.with_env();
    let validated = file.with_flags(&flags, args.common.admin_addr).validate(&origin)?;
    if args.common.check_config {
        println!(
            "{origin}: ok\n{}",
            toml::to_string_pretty(&validated.config.redacted())?
        );
        return Ok(());
    }
    telemetry::init(args.common.log_format, &args.common.log).map_err(anyhow::Error::msg)?;
    let cfg = &validated.config;
    let admin = tokio::net::TcpListener::bind(cfg.admin_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the admin listener `admin_addr` {}: {e}", cfg.admin_addr))?;
    tracing::info!(prober = %cfg.prober_id, region = %cfg.region, replicas = ?cfg.control_plane, "prober starting");
    let shutdown = shutdown::on_signal();
    meridian_prober::run(validated, admin, shutdown)
        .await
        .map_err(anyhow::Error::msg)
}
