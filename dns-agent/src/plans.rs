//! The DNS agent's [`PlanSink`]: a plan the edge agent's follower accepted is
//! validated by the DNS core, compiled into the answer table and swapped in (queries
//! never wait for it); connection changes go to the [`StatusBoard`] behind `/ready`.

use std::sync::Arc;

use meridian_dns_core::handler::{Responder, Served};
use meridian_dns_core::plan::{self, PlanSnapshot};
use meridian_edge_agent::{AgentEvent, Applied, PlanSink, Rejection};

use crate::metrics as m;
use crate::status::StatusBoard;

/// Where accepted plans go.
#[derive(Debug)]
pub struct DnsPlans {
    pub responder: Arc<Responder>,
    pub status: Arc<StatusBoard>,
}

impl PlanSink for DnsPlans {
    fn applied(&self) -> Applied {
        self.responder.current().map_or_else(Applied::default, |p| Applied {
            version: p.version(),
            epoch: p.plan.epoch.clone(),
            content_hash: p.plan.content_hash.clone(),
        })
    }

    fn install(&self, snapshot: &PlanSnapshot) -> Result<(), Rejection> {
        let plan = plan::validate(snapshot)?;
        let version = plan.version;
        self.responder.swap(Arc::new(Served::new(plan)));
        metrics::gauge!(m::PLAN_VERSION).set(version as f64);
        Ok(())
    }

    fn observe(&self, event: AgentEvent<'_>) {
        match event {
            AgentEvent::Connected { replica } => self.status.connected(replica),
            AgentEvent::Unreachable { replica, reason } => self.status.unreachable(format!("{replica}: {reason}")),
            AgentEvent::Confirmed { version, replica } => self.status.applied(version, replica),
            AgentEvent::LoadedFromCache { version } => self.status.loaded_from_cache(version),
            AgentEvent::CacheUnusable { reason } => self.status.cache_unusable(reason),
            // Logged and counted by the follower; the next `Confirmed` updates /ready.
            AgentEvent::EpochChanged { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_dns_core::zones::Zones;
    use meridian_edge_agent::MetricNames;

    fn snapshot(version: u64, weight: f64) -> PlanSnapshot {
        let mut s: PlanSnapshot = serde_json::from_value(serde_json::json!({
            "version": version,
            "regions": [{"region": "eu", "client_prefixes": ["10.1.0.0/16"],
                         "pops": [{"pop": "fra1", "weight": 1.0, "ipv4": ["192.0.2.1"]}]}]
        }))
        .unwrap();
        s.regions[0].pops[0].weight = weight;
        s
    }

    #[test]
    fn accepted_plans_are_served_and_refused_ones_leave_the_old_table() {
        let sink = DnsPlans {
            responder: Arc::new(Responder::new(Zones::default(), 1232)),
            status: Arc::new(StatusBoard::new(None)),
        };
        assert_eq!(sink.applied_version(), 0);
        let mut first = snapshot(3, 1.0);
        first.epoch = "e1".into();
        first.content_hash = "h3".into();
        sink.install(&first).unwrap();
        assert_eq!(
            sink.applied(),
            Applied {
                version: 3,
                epoch: "e1".into(),
                content_hash: "h3".into()
            }
        );
        let refused = sink.install(&snapshot(4, f64::INFINITY)).unwrap_err();
        assert_eq!(refused.kind, "invalid_weight");
        assert_eq!(sink.applied_version(), 3, "the previous table stays");
        sink.observe(AgentEvent::Connected { replica: "http://cp" });
        sink.observe(AgentEvent::Confirmed {
            version: 3,
            replica: "http://cp",
        });
        assert_eq!(
            sink.status.readiness().unwrap(),
            "serving plan v3 from control plane http://cp"
        );
        sink.observe(AgentEvent::Unreachable {
            replica: "http://cp",
            reason: "stream failed",
        });
        assert_eq!(
            sink.status.readiness().unwrap(),
            "serving cached plan v3; control plane unreachable: http://cp: stream failed"
        );
    }

    #[test]
    fn the_follower_metric_names_are_the_documented_ones() {
        let names = MetricNames::new(m::PREFIX);
        assert_eq!(names.reconnects, m::RECONNECTS);
        assert_eq!(names.plans_received, m::PLANS_RECEIVED);
        assert_eq!(names.plan_epoch_changes, m::PLAN_EPOCH_CHANGES);
        assert_eq!(names.plan_nacks, m::PLAN_NACKS);
        assert_eq!(names.cache_write_failures, m::CACHE_WRITE_FAILURES);
    }
}
