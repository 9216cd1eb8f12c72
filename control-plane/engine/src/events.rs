//! The typed event vocabulary: everything the control plane records for
//! `meridianctl events` and, from issue [7] on, the durable audit log. Each event
//! says when, who ([`Actor`]) and what, as data; the wire and the logs get its kind
//! name, PoP or region, message and evidence from the methods here, so every
//! consumer words an event the same way.

use meridian_core::slow_start::SlowStartEvent;
use meridian_core::Actor;
use meridian_health::{HealthEvent, PopVerdict};
use serde::{Deserialize, Serialize};

/// One thing that happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_unix_ms: u64,
    pub actor: Actor,
    /// The role the actor acted with (operators whose credential carries one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A PoP's verdict changed.
    Verdict {
        pop: String,
        old: PopVerdict,
        new: PopVerdict,
        rule: String,
        evidence: Vec<String>,
    },
    /// A region's probers alone see most PoPs down; its votes are discounted.
    RegionSuspect {
        region: String,
        down_share: f64,
    },
    RegionRecovered {
        region: String,
    },
    /// The steering loop published a plan version.
    PlanPublished {
        version: u64,
        reasons: Vec<String>,
    },
    /// A guardrail fired in a published plan.
    GuardrailFired {
        version: u64,
        firing: String,
    },
    /// Failback progress of a recovering PoP.
    SlowStart(SlowStartEvent),
    /// An operator mutation (the actor says who).
    Operator(OperatorAction),
    /// A staged change moved (issue [8]): started, a rung applied, baked,
    /// analysed, paused, resumed, rolled back, completed.
    Change {
        id: String,
        pop: String,
        from: String,
        to: String,
        why: String,
    },
    /// A canary wave's hold on the fleet moved: held, released after the wave
    /// passed, released early by an urgent plan, or kept through a rollback.
    Rollout {
        change: String,
        what: String,
    },
    /// A call that was refused: by authorization, validation or a guardrail. The
    /// actor says who asked.
    Refused {
        /// The RPC or operation, e.g. `/meridian.v1.OperatorService/Drain` or `drain`.
        rpc: String,
        /// What it was aimed at (a PoP, a plan version), when known.
        target: Option<String>,
        /// Why, as the caller was told.
        reason: String,
    },
}

/// An operator mutation as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum OperatorAction {
    Drained {
        pop: String,
        reason: String,
        /// The guardrails `--force` overrode, if any.
        forced_past: Option<String>,
        /// Only for these client regions; empty: all.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        regions: Vec<String>,
    },
    Undrained {
        pop: String,
        reason: String,
    },
    TopologyApplied {
        revision: i64,
        reason: String,
        diff: Vec<String>,
    },
    PlanRestored {
        from: u64,
        version: u64,
        reason: String,
    },
    SteeringResumed {
        reason: String,
    },
    /// Changes frozen until a time (a release window).
    Frozen {
        until_unix_ms: u64,
        reason: String,
    },
    Unfrozen {
        reason: String,
    },
    /// An admin acted during a freeze.
    FreezeOverridden {
        operation: String,
        reason: String,
    },
}

impl Event {
    /// A health event, as the event log records it.
    pub fn from_health(event: HealthEvent) -> Event {
        let (at, kind) = match event {
            HealthEvent::Verdict {
                at,
                pop,
                old,
                new,
                rule,
                evidence,
            } => (
                at,
                EventKind::Verdict {
                    pop,
                    old,
                    new,
                    rule,
                    evidence,
                },
            ),
            HealthEvent::RegionSuspect { at, region, down_share } => {
                (at, EventKind::RegionSuspect { region, down_share })
            }
            HealthEvent::RegionRecovered { at, region } => (at, EventKind::RegionRecovered { region }),
        };
        Event {
            at_unix_ms: at.0,
            actor: Actor::Health,
            role: None,
            kind,
        }
    }

    /// The stable, script-facing name of the event's kind (`meridianctl events -o json`).
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            EventKind::Verdict { .. } => "verdict",
            EventKind::RegionSuspect { .. } => "region_suspect",
            EventKind::RegionRecovered { .. } => "region_recovered",
            EventKind::PlanPublished { .. } => "plan_published",
            EventKind::GuardrailFired { .. } => "guardrail",
            EventKind::SlowStart(_) => "slow_start",
            EventKind::Refused { .. } => "refused",
            EventKind::Change { .. } => "change",
            EventKind::Rollout { .. } => "rollout",
            EventKind::Operator(a) => match a {
                OperatorAction::Drained { .. } => "drain",
                OperatorAction::Undrained { .. } => "undrain",
                OperatorAction::TopologyApplied { .. } => "topology_applied",
                OperatorAction::PlanRestored { .. } => "plan_restored",
                OperatorAction::SteeringResumed { .. } => "steering_resumed",
                OperatorAction::Frozen { .. } => "freeze",
                OperatorAction::Unfrozen { .. } => "unfreeze",
                OperatorAction::FreezeOverridden { .. } => "freeze_override",
            },
        }
    }

    /// The PoP the event is about, if one.
    pub fn pop(&self) -> Option<&str> {
        match &self.kind {
            EventKind::Verdict { pop, .. } => Some(pop),
            EventKind::SlowStart(s) => Some(match s {
                SlowStartEvent::Started { pop, .. }
                | SlowStartEvent::Advanced { pop, .. }
                | SlowStartEvent::Completed { pop }
                | SlowStartEvent::Aborted { pop, .. } => pop,
            }),
            EventKind::Operator(OperatorAction::Drained { pop, .. } | OperatorAction::Undrained { pop, .. }) => {
                Some(pop)
            }
            EventKind::Refused {
                target: Some(t), rpc, ..
            } if rpc == "drain" || rpc == "undrain" => Some(t),
            EventKind::Change { pop, .. } => Some(pop),
            _ => None,
        }
    }

    /// The region the event is about, if one.
    pub fn region(&self) -> Option<&str> {
        match &self.kind {
            EventKind::RegionSuspect { region, .. } | EventKind::RegionRecovered { region } => Some(region),
            _ => None,
        }
    }

    /// One line for humans.
    pub fn message(&self) -> String {
        match &self.kind {
            EventKind::Verdict {
                pop, old, new, rule, ..
            } => format!("{pop}: {old} → {new} ({rule})"),
            EventKind::RegionSuspect { region, down_share } => format!(
                "region {region} is suspect: its probers alone see {:.0}% of PoPs down; its votes are discounted",
                down_share * 100.0
            ),
            EventKind::RegionRecovered { region } => format!("region {region} recovered; its votes count again"),
            EventKind::PlanPublished { version, .. } => format!("published plan v{version}"),
            EventKind::GuardrailFired { version, firing } => format!("plan v{version}: {firing}"),
            EventKind::SlowStart(s) => match s {
                SlowStartEvent::Started { pop, factor } => {
                    format!("{pop} is back: slow start at {:.0}% of its weight", factor * 100.0)
                }
                SlowStartEvent::Advanced { pop, factor, .. } => {
                    format!("{pop}: slow start advanced to {:.0}%", factor * 100.0)
                }
                SlowStartEvent::Completed { pop } => format!("{pop}: slow start completed; full weight"),
                SlowStartEvent::Aborted { pop, stage } => {
                    format!("{pop} failed again during slow start (stage {stage}); removed")
                }
            },
            EventKind::Change { id, from, to, why, .. } => format!("change {id}: {from} → {to} ({why})"),
            EventKind::Rollout { change, what } => format!("canary wave of change {change}: {what}"),
            EventKind::Refused { rpc, target, reason } => match target {
                Some(t) => format!("refused {rpc} of {t}: {reason}"),
                None => format!("refused {rpc}: {reason}"),
            },
            EventKind::Operator(a) => match a {
                OperatorAction::Drained {
                    pop, reason, regions, ..
                } if !regions.is_empty() => {
                    format!("PoP {pop} drained for {}: {reason}", regions.join(", "))
                }
                OperatorAction::Drained { pop, reason, .. } => format!("PoP {pop} drained: {reason}"),
                OperatorAction::Undrained { pop, reason } => format!("PoP {pop} undrained: {reason}"),
                OperatorAction::TopologyApplied { revision, reason, .. } => {
                    format!("topology applied at revision {revision}: {reason}")
                }
                OperatorAction::PlanRestored { from, version, reason } => {
                    format!("plan v{from} restored as v{version} and steering pinned: {reason}")
                }
                OperatorAction::SteeringResumed { reason } => format!("steering resumed: {reason}"),
                OperatorAction::Frozen { until_unix_ms, reason } => {
                    format!("changes frozen until {until_unix_ms} (unix ms): {reason}")
                }
                OperatorAction::Unfrozen { reason } => format!("changes unfrozen: {reason}"),
                OperatorAction::FreezeOverridden { operation, reason } => {
                    format!("{operation} during a freeze, overridden by an admin: {reason}")
                }
            },
        }
    }

    /// Supporting lines: per-region evidence, the reasons a plan was published, the
    /// topology diff, the guardrails a drain was forced past.
    pub fn evidence(&self) -> Vec<String> {
        match &self.kind {
            EventKind::Verdict { evidence, .. } => evidence.clone(),
            EventKind::PlanPublished { reasons, .. } => reasons.clone(),
            EventKind::Operator(OperatorAction::TopologyApplied { diff, .. }) => diff.clone(),
            EventKind::Operator(OperatorAction::Drained {
                forced_past: Some(rules),
                ..
            }) => vec![format!("forced past guardrail {rules}")],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_core::Identity;
    use meridian_health::UnixMillis;

    #[test]
    fn health_events_keep_their_time_pop_region_and_wording() {
        let e = Event::from_health(HealthEvent::Verdict {
            at: UnixMillis(42),
            pop: "fra1".into(),
            old: PopVerdict::Up,
            new: PopVerdict::Down,
            rule: "quorum".into(),
            evidence: vec!["eu: DOWN".into()],
        });
        assert_eq!((e.at_unix_ms, e.kind_name(), e.pop()), (42, "verdict", Some("fra1")));
        assert_eq!(e.actor, Actor::Health);
        assert_eq!(e.message(), "fra1: UP → DOWN (quorum)");
        assert_eq!(e.evidence(), vec!["eu: DOWN".to_string()]);
        let s = Event::from_health(HealthEvent::RegionSuspect {
            at: UnixMillis(1),
            region: "ap".into(),
            down_share: 0.8,
        });
        assert_eq!(
            (s.kind_name(), s.region(), s.pop()),
            ("region_suspect", Some("ap"), None)
        );
        assert!(s.message().contains("80%"), "{}", s.message());
    }

    #[test]
    fn operator_actions_name_the_actor_and_what_was_forced() {
        let alice = Actor::Operator(Identity::new("alice@ops").unwrap());
        let e = Event {
            at_unix_ms: 7,
            actor: alice.clone(),
            role: None,
            kind: EventKind::Operator(OperatorAction::Drained {
                pop: "fra1".into(),
                reason: "fibre cut".into(),
                forced_past: Some("drain-over-capacity".into()),
                regions: Vec::new(),
            }),
        };
        assert_eq!((e.kind_name(), e.pop()), ("drain", Some("fra1")));
        assert_eq!(e.message(), "PoP fra1 drained: fibre cut");
        assert_eq!(
            e.evidence(),
            vec!["forced past guardrail drain-over-capacity".to_string()]
        );
        assert_eq!(e.actor.to_string(), "operator:alice@ops");
        // The event survives a JSON round trip (what a durable log will store).
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
        let slow = Event {
            at_unix_ms: 8,
            actor: Actor::Steering,
            role: None,
            kind: EventKind::SlowStart(SlowStartEvent::Started {
                pop: "ams1".into(),
                factor: 0.1,
            }),
        };
        assert_eq!((slow.kind_name(), slow.pop()), ("slow_start", Some("ams1")));
        assert_eq!(slow.message(), "ams1 is back: slow start at 10% of its weight");
    }
}
