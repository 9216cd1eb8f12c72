//! Metric names of the DNS daemon (`meridian_dns_*`) outside the query path, whose
//! names and handles live in `meridian_dns_core::metrics`. The plan follower's
//! counters (`meridian_dns_plans_received_total`, `meridian_dns_plan_nacks_total`,
//! `meridian_dns_control_plane_reconnects_total`,
//! `meridian_dns_plan_epoch_changes_total`,
//! `meridian_dns_plan_cache_write_failures_total`) are emitted by
//! `meridian-edge-agent` under the [`PREFIX`] given to it.

pub use meridian_dns_core::metrics::{ANSWERS, ECS_QUERIES, MALFORMED, QUERIES, TRUNCATED};

/// The prefix of every DNS agent metric; the edge agent's names are built on it.
pub const PREFIX: &str = "meridian_dns";

/// The plan version being served (0: none).
pub const PLAN_VERSION: &str = "meridian_dns_plan_version";
/// Seconds since the served plan was created by the control plane.
pub const PLAN_AGE: &str = "meridian_dns_plan_age_seconds";
/// 1 while the plan being served was loaded from the local cache and no control
/// plane has been reached since.
pub const SERVING_CACHED: &str = "meridian_dns_serving_cached_plan";
/// 1 while a plan stream to a control-plane replica is open.
pub const CONTROL_PLANE_CONNECTED: &str = "meridian_dns_control_plane_connected";
/// Plan stream ends, by `replica`.
pub const RECONNECTS: &str = "meridian_dns_control_plane_reconnects_total";
/// Plans received, by `outcome`: `applied`, `repeated` (same version, ACKed again),
/// `stale` (older, NACKed), `rejected` (invalid, NACKed), `content_differs` (the
/// version in service with other content, NACKed).
pub const PLANS_RECEIVED: &str = "meridian_dns_plans_received_total";
/// Plans of another control-plane store epoch applied (the store was re-created and
/// the agent followed its numbering).
pub const PLAN_EPOCH_CHANGES: &str = "meridian_dns_plan_epoch_changes_total";
/// Plans NACKed because they were invalid, by `reason` (a fixed label per rule).
pub const PLAN_NACKS: &str = "meridian_dns_plan_nacks_total";
/// Failures writing the plan cache to `state_dir`.
pub const CACHE_WRITE_FAILURES: &str = "meridian_dns_plan_cache_write_failures_total";
/// TCP connections open.
pub const TCP_CONNECTIONS: &str = "meridian_dns_tcp_connections";
/// TCP connections closed for taking too long, by `phase`: `idle` (no query began
/// within `tcp_idle_timeout`), `read` (a query began but did not arrive in full
/// within it), `write` (an answer could not be written within `tcp_write_timeout`:
/// the client does not read).
pub const TCP_TIMEOUTS: &str = "meridian_dns_tcp_timeouts_total";
/// TCP connections closed as soon as they were accepted, by `reason`: `per_client`
/// (the client address already had `max_tcp_connections_per_client` open).
pub const TCP_CONN_REFUSED: &str = "meridian_dns_tcp_conn_refused_total";
/// UDP responses held back by response rate limiting, by `action`: `drop` (not
/// sent) or `slip` (sent truncated, TC=1, without records).
pub const RRL: &str = "meridian_dns_rrl_total";
/// 1 while the last good plan is cached on disk, 0 when the cache is off or its
/// directory could not be created.
pub const PLAN_CACHE_ENABLED: &str = "meridian_dns_plan_cache_enabled";
