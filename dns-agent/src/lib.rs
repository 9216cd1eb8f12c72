//! `meridian-dns-agent`: authoritative DNS for Meridian's steered names, following
//! the control plane's plan (DESIGN.md, "Agents").
//!
//! A query for a steered name is answered from the current plan: the client's region
//! by longest-prefix match of its EDNS Client Subnet (or source address) on the
//! regions' client prefixes, then PoPs chosen by weight. Everything else in the
//! configured zones (SOA, NS, glue, TXT, NXDOMAIN/NODATA) comes from configuration.
//! The agent never talks to etcd: it subscribes to any control-plane replica, and
//! keeps serving its last good plan, cached on disk (on by default, see
//! [`config::default_state_dir`]), when none is reachable. Abuse is bounded where it
//! is cheap to bound: TCP connections per address and per-query deadlines
//! ([`server`]), response rate limiting per client prefix over UDP (off by default),
//! and ANY answered with one RRset (RFC 8482, in the core).
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

use std::hash::BuildHasher;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meridian_dns_core::handler::Responder;
use meridian_dns_core::rrl::RateLimiter;
use meridian_edge_agent::{AgentKind, MetricNames};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Validated;
use crate::plans::DnsPlans;
use crate::server::TcpLimits;
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
    let cache_dir = validated.plan_cache_dir().and_then(prepare_cache_dir);
    ::metrics::gauge!(metrics::PLAN_CACHE_ENABLED).set(if cache_dir.is_some() { 1.0 } else { 0.0 });
    let validated_credentials = validated.credentials;
    let cfg = validated.config;
    let responder = Arc::new(Responder::new(validated.zones, cfg.max_udp_payload));
    let status = Arc::new(StatusBoard::new(cache_dir.as_ref()));
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
        state_dir: cache_dir,
        metrics: MetricNames::new(metrics::PREFIX),
        credentials: validated_credentials,
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
    let rrl = cfg.rrl.enabled().then(|| {
        tracing::info!(
            responses_per_second = cfg.rrl.responses_per_second,
            slip = cfg.rrl.slip,
            ipv4_prefix_length = cfg.rrl.ipv4_prefix_length,
            ipv6_prefix_length = cfg.rrl.ipv6_prefix_length,
            table_size = cfg.rrl.table_size,
            "response rate limiting on (UDP)"
        );
        // A per-process secret for the limiter's table, so clients cannot aim
        // their prefixes at one bucket.
        let seed = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        RateLimiter::new(&cfg.rrl, seed)
    });
    tasks.spawn(
        "dns-udp",
        server::serve_udp(listeners.udp, threads, responder.clone(), rrl, shutdown.clone()),
    );
    let limits = TcpLimits {
        max_connections: cfg.max_tcp_connections,
        max_per_client: cfg.max_tcp_connections_per_client,
        idle_timeout: cfg.tcp_idle_timeout,
        write_timeout: cfg.tcp_write_timeout,
    };
    tasks.spawn(
        "dns-tcp",
        server::serve_tcp(listeners.tcp, responder.clone(), limits, shutdown.clone()),
    );
    tasks.spawn(
        "plan-follower",
        meridian_edge_agent::run(settings, sink, shutdown.clone()),
    );
    tasks.spawn("plan-gauges", plan_gauges(responder, shutdown.clone()));
    tasks.run_until(shutdown, Duration::from_secs(5)).await
}

/// Creates the plan cache directory. One that cannot be created is a warning, not
/// a failure: the agent serves without the cache (and says so on `/ready` while it
/// has no plan, and in `meridian_dns_plan_cache_enabled`).
pub fn prepare_cache_dir(dir: &Path) -> Option<PathBuf> {
    match std::fs::create_dir_all(dir) {
        Ok(()) => {
            tracing::info!(state_dir = %dir.display(), "caching the last good plan here");
            Some(dir.to_path_buf())
        }
        Err(e) => {
            tracing::warn!(
                state_dir = %dir.display(),
                error = %e,
                "cannot create the plan cache directory {}; running WITHOUT the last-good-plan cache \
                 (set state_dir to a writable directory, or plan_cache = false to silence this)",
                dir.display()
            );
            None
        }
    }
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
