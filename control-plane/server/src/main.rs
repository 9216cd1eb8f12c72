//! `meridian-control-plane`: parse flags and config, bind the listeners, run a replica.
//! Everything else lives in the library so tests can run replicas in-process.

use std::process::ExitCode;

use clap::Parser;
use meridian_control_plane::config::{ControlPlaneConfig, ControlPlaneFlags};
use meridian_daemon::{config, shutdown, telemetry, CommonArgs};

/// The Meridian control plane: durable state on etcd (or the embedded store), one
/// leader elected among replicas, and the gRPC API for probers, agents and meridianctl.
///
/// With no etcd endpoints it runs on the embedded store in --data-dir; with
/// --etcd-endpoints it joins the replicas sharing that etcd cluster.
#[derive(Debug, Parser)]
#[command(name = "meridian-control-plane", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    flags: ControlPlaneFlags,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meridian-control-plane: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(real_main(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meridian-control-plane: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn real_main(args: Args) -> anyhow::Result<()> {
    let path = args.common.config.as_deref();
    let origin = config::origin(path);
    let file: ControlPlaneConfig = config::load(path)?;
    let validated = file.with_flags(&args.flags, args.common.admin_addr).validate(&origin)?;
    if args.common.check_config {
        println!("{}: ok", origin);
        println!("{}", toml::to_string_pretty(&validated.config)?);
        return Ok(());
    }
    telemetry::init(args.common.log_format, &args.common.log).map_err(anyhow::Error::msg)?;
    let cfg = &validated.config;
    let grpc = tokio::net::TcpListener::bind(cfg.grpc_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the gRPC listener `grpc_addr` {}: {e}", cfg.grpc_addr))?;
    let admin = tokio::net::TcpListener::bind(cfg.admin_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the admin listener `admin_addr` {}: {e}", cfg.admin_addr))?;
    let shutdown = shutdown::on_signal();
    meridian_control_plane::run(validated, grpc, admin, shutdown).await?;
    Ok(())
}
