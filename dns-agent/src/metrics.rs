//! Metric names (`meridian_dns_*`) and pre-registered handles for the query path.
//!
//! The query path never formats a label or looks a metric up by name: the handles
//! for every (region, qtype, rcode) and (region, PoP) are registered when a plan is
//! applied, and a query only increments an atomic. Handles must be created after
//! the recorder is installed (`meridian_daemon::admin::metrics_handle`), which
//! `run` does first.

use metrics::Counter;

use crate::wire::{self, Rcode};

/// Queries answered, by `qtype`, `rcode` and `region` ("none" when no region was
/// involved: not a steered name, or no plan).
pub const QUERIES: &str = "meridian_dns_queries_total";
/// A/AAAA records served, by `region` and `pop`.
pub const ANSWERS: &str = "meridian_dns_answers_total";
/// Queries carrying EDNS Client Subnet, by `family`.
pub const ECS_QUERIES: &str = "meridian_dns_ecs_queries_total";
/// Packets that were not well-formed queries, by `action`: `dropped` (no usable
/// header, or a response), `formerr`, `notimp`.
pub const MALFORMED: &str = "meridian_dns_malformed_total";
/// UDP answers sent truncated (TC) because they did not fit.
pub const TRUNCATED: &str = "meridian_dns_truncated_total";
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
/// `stale` (older, NACKed), `rejected` (invalid, NACKed).
pub const PLANS_RECEIVED: &str = "meridian_dns_plans_received_total";
/// Plans NACKed because they were invalid, by `reason` (a fixed label per rule).
pub const PLAN_NACKS: &str = "meridian_dns_plan_nacks_total";
/// Failures writing the plan cache to `state_dir`.
pub const CACHE_WRITE_FAILURES: &str = "meridian_dns_plan_cache_write_failures_total";
/// TCP connections open.
pub const TCP_CONNECTIONS: &str = "meridian_dns_tcp_connections";

/// Query-type buckets for the `qtype` label.
const QTYPES: [&str; 8] = ["A", "AAAA", "SOA", "NS", "TXT", "ANY", "OTHER", "UNPARSED"];
pub const QTYPE_UNPARSED: usize = 7;

pub fn qtype_bucket(qtype: u16) -> usize {
    match qtype {
        wire::TYPE_A => 0,
        wire::TYPE_AAAA => 1,
        wire::TYPE_SOA => 2,
        wire::TYPE_NS => 3,
        wire::TYPE_TXT => 4,
        wire::TYPE_ANY => 5,
        _ => 6,
    }
}

/// `meridian_dns_queries_total` handles for one set of regions (slot 0 is "none").
#[derive(Debug, Clone)]
pub struct QueryCounters {
    counters: Vec<Counter>,
}

impl QueryCounters {
    pub fn new(regions: &[String]) -> Self {
        let mut counters = Vec::with_capacity((regions.len() + 1) * QTYPES.len() * Rcode::ALL.len());
        for region in std::iter::once("none").chain(regions.iter().map(String::as_str)) {
            for qtype in QTYPES {
                for rcode in Rcode::ALL {
                    counters.push(metrics::counter!(
                        QUERIES,
                        "qtype" => qtype,
                        "rcode" => rcode.as_str(),
                        "region" => region.to_string()
                    ));
                }
            }
        }
        QueryCounters { counters }
    }

    /// `region`: index into the plan's regions, `None` for "none".
    pub fn get(&self, region: Option<usize>, qtype_bucket: usize, rcode: Rcode) -> Option<&Counter> {
        let slot = region.map_or(0, |r| r + 1);
        self.counters
            .get((slot * QTYPES.len() + qtype_bucket) * Rcode::ALL.len() + rcode.index())
    }
}

/// Counters that do not depend on the plan.
#[derive(Debug, Clone)]
pub struct PathCounters {
    pub ecs_v4: Counter,
    pub ecs_v6: Counter,
    pub dropped: Counter,
    pub formerr: Counter,
    pub notimp: Counter,
    pub truncated: Counter,
}

impl PathCounters {
    pub fn new() -> Self {
        PathCounters {
            ecs_v4: metrics::counter!(ECS_QUERIES, "family" => "ipv4"),
            ecs_v6: metrics::counter!(ECS_QUERIES, "family" => "ipv6"),
            dropped: metrics::counter!(MALFORMED, "action" => "dropped"),
            formerr: metrics::counter!(MALFORMED, "action" => "formerr"),
            notimp: metrics::counter!(MALFORMED, "action" => "notimp"),
            truncated: metrics::counter!(TRUNCATED),
        }
    }
}

impl Default for PathCounters {
    fn default() -> Self {
        Self::new()
    }
}
