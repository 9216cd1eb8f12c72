//! `meridian-control-plane`: parse flags and config, bind the listeners, run a replica.
//! Everything else lives in the library so tests can run replicas in-process.

use std::process::ExitCode;

use clap::Parser;
use meridian_control_plane::config::{ControlPlaneConfig, ControlPlaneFlags};
use meridian_daemon::{bootstrap, config, CommonArgs};

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
    bootstrap::run_main("meridian-control-plane", real_main(Args::parse()))
}

async fn real_main(args: Args) -> anyhow::Result<()> {
    let path = args.common.config.as_deref();
    let origin = config::origin(path);
    let file: ControlPlaneConfig = config::load(path)?;
    let validated = file.with_flags(&args.flags, args.common.admin_addr).validate(&origin)?;
    let Some(shutdown) = bootstrap::start(&args.common, &origin, &validated.config)? else {
        return Ok(());
    };
    let cfg = &validated.config;
    let grpc = bootstrap::bind(cfg.grpc_addr, "gRPC listener", "grpc_addr").await?;
    let admin = bootstrap::bind(cfg.admin_addr, "admin listener", "admin_addr").await?;
    meridian_control_plane::run(validated, grpc, admin, shutdown).await?;
    Ok(())
}
