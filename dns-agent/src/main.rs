//! `meridian-dns-agent`: parse flags and config, bind the DNS (UDP and TCP) and admin
//! listeners, run the agent. Everything else lives in the library so tests can run
//! the request path without sockets.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use meridian_daemon::config;
use meridian_daemon::{bootstrap, CommonArgs};
use meridian_dns_agent::config::AgentConfig;
use meridian_dns_agent::Listeners;

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
    /// DNS listener (UDP and TCP), e.g. 127.0.0.1:8053.
    #[arg(long, env = "MERIDIAN_DNS_ADDR")]
    dns_addr: Option<SocketAddr>,
    /// Control-plane gRPC endpoints, comma-separated.
    #[arg(long, env = "MERIDIAN_CONTROL_PLANE", value_delimiter = ',')]
    control_plane: Option<Vec<String>>,
    /// Directory for the cached last good plan (default: `dns-agent-<agent id>` under
    /// $STATE_DIRECTORY, else $XDG_STATE_HOME/meridian, else
    /// ~/.local/state/meridian, else ./meridian-state).
    #[arg(long, env = "MERIDIAN_STATE_DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// Do not cache the last good plan on disk (`plan_cache = false`).
    #[arg(long, env = "MERIDIAN_NO_PLAN_CACHE")]
    no_plan_cache: bool,
}

fn main() -> ExitCode {
    bootstrap::run_main("meridian-dns-agent", real_main(Args::parse()))
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
    let cfg = &validated.config;
    let admin = bootstrap::bind(cfg.admin_addr, "admin listener", "admin_addr").await?;
    // TCP first, so that port 0 picks one port for both transports.
    let tcp = bootstrap::bind(cfg.dns_addr, "DNS TCP listener", "dns_addr").await?;
    let dns_addr = tcp.local_addr()?;
    let udp = bind_udp(dns_addr, cfg.udp_socket_buffer)
        .map_err(|e| anyhow::anyhow!("cannot bind the DNS UDP socket `dns_addr` {dns_addr}: {e}"))?;
    tracing::info!(agent = %cfg.agent_id, dns = %dns_addr, admin = %cfg.admin_addr, replicas = ?cfg.control_plane, "dns agent starting");
    meridian_dns_agent::run(validated, Listeners { udp, tcp, admin }, shutdown)
        .await
        .map_err(anyhow::Error::msg)
}

/// Binds the UDP socket with deep kernel buffers (a failure to enlarge them is only
/// logged: the kernel caps them at its maximum anyway).
fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(buffer) {
        tracing::warn!(error = %e, buffer, "cannot enlarge the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(buffer) {
        tracing::warn!(error = %e, buffer, "cannot enlarge the UDP send buffer");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}
