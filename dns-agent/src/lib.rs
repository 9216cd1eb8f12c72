//! `meridian-dns-agent`: authoritative DNS for Meridian's steered names, following
//! the control plane's plan (DESIGN.md, "Agents").
//!
//! A query for a steered name is answered from the current plan: the client's region
//! by longest-prefix match of its EDNS Client Subnet (or source address) on the
//! regions' client prefixes, then PoPs chosen by weight. Everything else in the
//! configured zones (SOA, NS, glue, TXT, NXDOMAIN/NODATA) comes from configuration.
//! The agent never talks to etcd: it subscribes to any control-plane replica, and
//! keeps serving its last good plan, cached on disk, when none is reachable.
//!
//! Crates: the answering core is `meridian-dns-core` (wire codec, zones, plan
//! validation, selection, the responder: no I/O) and the control-plane subscription
//! with the plan cache is `meridian-edge-agent`. This daemon crate keeps what is
//! specific to running a DNS server: [`config`], [`server`] (sockets), [`plans`] (the
//! plan sink: validate and swap the answer table), [`status`] and [`metrics`]
//! (readiness, gauges), and `main`.
//!
//! Main decision: the request path is one pure function from query bytes to answer
//! bytes over an immutable plan table behind `arc-swap`, served by our own small
//! UDP/TCP loops, instead of hickory-server's `Server` with a `RequestHandler`. The
//! same function serves UDP, TCP and the fuzz harness; malformed packets are counted
//! where they are seen; and the hot path does no per-packet task spawn, channel
//! hop, or general message decode/encode, which is what it takes to stand next to
//! gdnsd in the benchmark. hickory-proto stays as the independent decoder every test
//! checks our answers with.

pub mod config;
pub mod metrics;
pub mod plans;
pub mod server;
pub mod status;

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meridian_dns_core::handler::Responder;
use meridian_edge_agent::{AgentKind, MetricNames};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Validated;
use crate::plans::DnsPlans;
use crate::status::StatusBoard;

/// The sockets the agent serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    pub udp: UdpSocket,
    pub tcp: TcpListener,
    pub admin: TcpListener,
}

/// Runs the agent until `shutdown` fires (or a task fails).
pub async fn run(validated: Validated, listeners: Listeners, shutdown: CancellationToken) -> Result<(), String> {
    // The recorder must exist before the query path registers its metric handles.
    meridian_daemon::admin::metrics_handle()?;
    let cfg = validated.config;
    let responder = Arc::new(Responder::new(validated.zones, cfg.max_udp_payload));
    let status = Arc::new(StatusBoard::new(cfg.state_dir.as_ref()));
    if responder.zones().is_empty() {
        tracing::warn!("no zones configured: every query will be REFUSED");
    }
    let settings = Arc::new(meridian_edge_agent::Settings {
        endpoints: cfg.control_plane.clone(),
        agent_id: cfg.agent_id.clone(),
        kind: AgentKind::Dns,
        connect_timeout: cfg.connect_timeout,
        reconnect_initial: cfg.reconnect_initial,
        reconnect_max: cfg.reconnect_max,
        state_dir: cfg.state_dir.clone(),
        metrics: MetricNames::new(metrics::PREFIX),
    });
    let sink = Arc::new(DnsPlans {
        responder: responder.clone(),
        status: status.clone(),
    });
    meridian_edge_agent::load_cached(&settings, &*sink);

    let threads = if cfg.udp_threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        cfg.udp_threads
    };
    let mut tasks = meridian_daemon::shutdown::Tasks::new();
    tasks.spawn(
        "admin-http",
        meridian_daemon::admin::serve(listeners.admin, status.subscribe(), shutdown.clone()),
    );
    tasks.spawn(
        "dns-udp",
        server::serve_udp(listeners.udp, threads, responder.clone(), shutdown.clone()),
    );
    tasks.spawn(
        "dns-tcp",
        server::serve_tcp(
            listeners.tcp,
            responder.clone(),
            cfg.max_tcp_connections,
            cfg.tcp_idle_timeout,
            shutdown.clone(),
        ),
    );
    tasks.spawn(
        "plan-follower",
        meridian_edge_agent::run(settings, sink, shutdown.clone()),
    );
    tasks.spawn("plan-gauges", plan_gauges(responder, shutdown.clone()));
    tasks.run_until(shutdown, Duration::from_secs(5)).await
}

/// Keeps `meridian_dns_plan_version` and `meridian_dns_plan_age_seconds` current.
async fn plan_gauges(responder: Arc<Responder>, shutdown: CancellationToken) -> Result<(), String> {
    loop {
        let (version, age) = match responder.current() {
            Some(s) => {
                let now = meridian_edge_agent::unix_ms(SystemTime::now());
                let age = s
                    .plan
                    .created_at_unix_ms
                    .map_or(0.0, |c| (now - c).max(0) as f64 / 1000.0);
                (s.version() as f64, age)
            }
            None => (0.0, 0.0),
        };
        ::metrics::gauge!(metrics::PLAN_VERSION).set(version);
        ::metrics::gauge!(metrics::PLAN_AGE).set(age);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}
