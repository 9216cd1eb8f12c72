//! Metric names of the query path (`meridian_dns_*`) and its pre-registered handles.
//!
//! The query path never formats a label or looks a metric up by name: the handles
//! for every (region, qtype, rcode) and (region, PoP) are registered when a plan is
//! put in service, and a query only increments an atomic. Handles must be created
//! after the daemon installs its recorder (before building the [`Responder`]);
//! without one they are no-ops, which is what the core's own tests use.
//!
//! [`Responder`]: crate::handler::Responder

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
