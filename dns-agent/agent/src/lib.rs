//! `meridian-edge-agent`: what every Meridian edge agent needs to follow the control
//! plane, written once for the DNS agent and the Anycast agent to come.
//!
//! * [`follower`]: `WatchPlan` on any replica through the shared endpoint rotation,
//!   the hello with the applied version, versions that only go forward within one
//!   store epoch (a new epoch is followed, other content under a version in service
//!   is refused), ACK/NACK with the reason, and the hand-off to the agent's
//!   [`PlanSink`].
//! * [`convert`]: the wire plan as a [`meridian_dns_core::plan::PlanSnapshot`]; the
//!   only module that sees `meridian.v1` types.
//! * [`report`]: what the agent reports on the same stream (the Anycast agent's
//!   state per prefix), published on a watch channel the follower forwards.
//! * [`cache`]: the last good plan on disk, written atomically, loaded at start-up
//!   ([`load_cached`]) so an agent restarted during a control-plane outage serves it.
//!
//! Main decision: the follower is generic over a [`PlanSink`] (validate and swap in,
//! observe connection changes) instead of knowing the DNS answer table, so the
//! Anycast agent reuses the subscription, the version rules and the cache and only
//! writes what it does with a plan. The sink validates synchronously and the follower
//! caches only what the sink accepted, so the cache never holds a plan the agent
//! refused.
//!
//! Architecture invariant: an edge agent talks only to control-plane replicas, never
//! to the store; the plan's text is parsed once, in [`convert`].

pub mod cache;
pub mod convert;
pub mod follower;
pub mod report;
pub mod settings;

use std::time::{SystemTime, UNIX_EPOCH};

pub use follower::{
    load_cached, run, run_with_reports, AgentEvent, AgentKind, Applied, Credentials, MetricNames, PlanSink, Rejection,
    Settings, Verdict,
};

/// Milliseconds since the Unix epoch (0 before it, saturating far after).
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use meridian_dns_core::plan::{PlanSnapshot, PopSnapshot, RegionSnapshot};

    /// A plan with two regions, as the follower and the cache receive it.
    pub(crate) fn sample(version: u64) -> PlanSnapshot {
        let pop = |name: &str, weight: f64, v4: &str| PopSnapshot {
            pop: name.into(),
            weight,
            ipv4: vec![v4.parse().unwrap()],
            ipv6: vec![],
        };
        PlanSnapshot {
            version,
            created_at_unix_ms: Some(1_700_000_000_000),
            dns_ttl_seconds: 30,
            default_region: "us".into(),
            regions: vec![
                RegionSnapshot {
                    region: "eu".into(),
                    client_prefixes: vec!["10.1.0.0/16".parse().unwrap()],
                    pops: vec![pop("fra1", 0.75, "192.0.2.1"), pop("ams1", 0.25, "192.0.2.2")],
                },
                RegionSnapshot {
                    region: "us".into(),
                    client_prefixes: vec!["10.2.0.0/16".parse().unwrap()],
                    pops: vec![pop("iad1", 1.0, "192.0.2.3")],
                },
            ],
            epoch: String::new(),
            content_hash: String::new(),
            anycast: Vec::new(),
        }
    }

    #[test]
    fn unix_ms_is_saturating() {
        assert_eq!(super::unix_ms(std::time::UNIX_EPOCH), 0);
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1234);
        assert_eq!(super::unix_ms(t), 1234);
    }
}
