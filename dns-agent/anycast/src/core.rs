//! The Anycast agent's decisions, with no I/O: what the PoP's speaker should announce
//! for each prefix given the plan and what it announces now, and the safety rules the
//! agent enforces on its own, whatever the plan says.
//!
//! Safety rules (issue [9]; the control plane has its own guardrails, these hold even
//! when it is wrong):
//!
//! * **Last announcer**: a prefix is never withdrawn, nor marked GRACEFUL_SHUTDOWN,
//!   when the plan shows no *other* PoP announcing it (any action but withdraw). The
//!   route stays as the agent last had it (without the GSHUT community) and the
//!   refusal is reported in `detail`. A prefix that disappears from the plan for this
//!   PoP counts as a withdraw request under the same rule, so a plan that forgot the
//!   anycast section withdraws nothing.
//! * **Ready first**: with no plan applied ([`decide`] with `None`), nothing is
//!   announced or withdrawn.
//! * **Control plane lost**: the caller keeps reconciling the last applied plan, so
//!   routes stay as they are (and drift is still corrected).
//! * **Shutdown**: routes are left alone unless `withdraw_on_shutdown`; then
//!   [`decide_shutdown`] withdraws, still under the last-announcer rule.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use meridian_dns_core::plan::{AnycastAction, AnycastSnapshot, PlanSnapshot};

/// The most prepends a plan may ask for: more only makes a huge AS path that routers
/// may drop, and no drain ladder needs it.
pub const MAX_PREPENDS: u32 = 10;

/// The GRACEFUL_SHUTDOWN well-known community (RFC 8326), 65535:0.
pub const GRACEFUL_SHUTDOWN: u32 = 0xFFFF_0000;

/// How a prefix is announced by the speaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Route {
    /// How many extra times our AS is on the path.
    pub prepends: u32,
    /// Carries the GRACEFUL_SHUTDOWN community.
    pub graceful_shutdown: bool,
}

impl Route {
    /// The plan action this route realises.
    pub fn action(&self) -> AnycastAction {
        if self.graceful_shutdown {
            AnycastAction::GracefulShutdown
        } else if self.prepends > 0 {
            AnycastAction::Prepend
        } else {
            AnycastAction::Announce
        }
    }
}

/// What a speaker announces: our locally originated routes, by prefix.
pub type Announced = BTreeMap<IpNet, Route>;

/// The anycast part of a plan, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnycastPlan {
    pub version: u64,
    pub entries: Vec<AnycastSnapshot>,
}

/// Why the anycast part of a plan is refused (the NACK reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plan v{version}: anycast[{index}] (PoP `{pop}`, prefix {prefix}): {message}")]
pub struct AnycastRejection {
    pub version: u64,
    pub index: usize,
    pub pop: String,
    pub prefix: IpNet,
    pub message: String,
}

/// Validates the anycast entries of a plan: every entry names a PoP, prefixes carry
/// no host bits, a PoP appears once per prefix, prepend counts are within
/// [`MAX_PREPENDS`] and a `prepend` asks for at least one.
pub fn validate(snapshot: &PlanSnapshot) -> Result<AnycastPlan, AnycastRejection> {
    let version = snapshot.version;
    let mut seen = BTreeSet::new();
    for (index, e) in snapshot.anycast.iter().enumerate() {
        let reject = |message: String| AnycastRejection {
            version,
            index,
            pop: e.pop.clone(),
            prefix: e.prefix,
            message,
        };
        if e.pop.is_empty() {
            return Err(reject("the PoP name is empty".into()));
        }
        if e.prefix.trunc() != e.prefix {
            return Err(reject(format!(
                "has host bits set (did you mean {}?)",
                e.prefix.trunc()
            )));
        }
        if !seen.insert((e.pop.as_str(), e.prefix)) {
            return Err(reject("appears twice for this PoP".into()));
        }
        if e.prepend_count > MAX_PREPENDS {
            return Err(reject(format!(
                "prepend_count {} is above the maximum of {MAX_PREPENDS}",
                e.prepend_count
            )));
        }
        if e.action == AnycastAction::Prepend && e.prepend_count == 0 {
            return Err(reject("action prepend with prepend_count 0".into()));
        }
    }
    Ok(AnycastPlan {
        version,
        entries: snapshot.anycast.clone(),
    })
}

/// The agent's decision for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixDecision {
    pub prefix: IpNet,
    /// What the plan asks of this PoP (`Withdraw` when it does not mention the prefix
    /// for this PoP any more) and the prepend count.
    pub desired: (AnycastAction, u32),
    /// What the speaker should announce after this reconcile (`None`: nothing).
    pub target: Option<Route>,
    /// What the speaker announced before it.
    pub actual: Option<Route>,
    /// Why `target` differs from `desired`: a refusal by the safety rules.
    pub refusal: Option<String>,
}

/// One change to make on the speaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Announce { prefix: IpNet, route: Route },
    Withdraw { prefix: IpNet },
}

impl Op {
    pub fn prefix(&self) -> IpNet {
        match self {
            Op::Announce { prefix, .. } | Op::Withdraw { prefix } => *prefix,
        }
    }
}

/// What to do now, and what to remember.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Every prefix the agent manages, in prefix order.
    pub prefixes: Vec<PrefixDecision>,
    /// The changes that bring the speaker to the targets.
    pub ops: Vec<Op>,
    /// The routes the agent means to have announced: pass it back as `kept` next
    /// time. It is how a prefix that left the plan is still known and how a refused
    /// withdraw keeps the route even after it was deleted by hand.
    pub kept: Announced,
}

/// Decides what the speaker should announce. `plan` is the last applied plan (`None`
/// before the first: nothing is done), `actual` what the speaker announces now,
/// `kept` the previous decision's [`Decision::kept`]. Locally originated routes for
/// prefixes the agent never managed are left alone.
pub fn decide(pop: &str, plan: Option<&AnycastPlan>, actual: &Announced, kept: &Announced) -> Decision {
    match plan {
        None => Decision {
            kept: kept.clone(),
            ..Decision::default()
        },
        Some(plan) => decide_with(pop, plan, actual, kept, false),
    }
}

/// The decision at shutdown with `withdraw_on_shutdown`: every managed prefix is
/// withdrawn where another PoP announces it, and kept (refused) where none does.
pub fn decide_shutdown(pop: &str, plan: Option<&AnycastPlan>, actual: &Announced, kept: &Announced) -> Decision {
    match plan {
        None => Decision {
            kept: kept.clone(),
            ..Decision::default()
        },
        Some(plan) => decide_with(pop, plan, actual, kept, true),
    }
}

fn decide_with(pop: &str, plan: &AnycastPlan, actual: &Announced, kept: &Announced, withdraw_all: bool) -> Decision {
    let ours: BTreeMap<IpNet, &AnycastSnapshot> = plan
        .entries
        .iter()
        .filter(|e| e.pop == pop)
        .map(|e| (e.prefix, e))
        .collect();
    let managed: BTreeSet<IpNet> = ours.keys().chain(kept.keys()).copied().collect();
    let mut decision = Decision::default();
    for prefix in managed {
        let others = plan
            .entries
            .iter()
            .filter(|e| e.prefix == prefix && e.pop != pop && e.action != AnycastAction::Withdraw)
            .count();
        let desired = match (withdraw_all, ours.get(&prefix)) {
            (true, _) | (false, None) => (AnycastAction::Withdraw, 0),
            (false, Some(e)) => (e.action, e.prepend_count),
        };
        let last = |what: &str| {
            format!(
                "{what} refused: plan v{} shows no other PoP announcing {prefix} (last announcer)",
                plan.version
            )
        };
        let (target, refusal) = match desired {
            (AnycastAction::Announce, _) => (Some(Route::default()), None),
            (AnycastAction::Prepend, n) => (
                Some(Route {
                    prepends: n,
                    graceful_shutdown: false,
                }),
                None,
            ),
            (AnycastAction::GracefulShutdown, n) if others > 0 => (
                Some(Route {
                    prepends: n,
                    graceful_shutdown: true,
                }),
                None,
            ),
            (AnycastAction::GracefulShutdown, n) => (
                Some(Route {
                    prepends: n,
                    graceful_shutdown: false,
                }),
                Some(last("graceful shutdown")),
            ),
            (AnycastAction::Withdraw, _) if others > 0 => (None, None),
            (AnycastAction::Withdraw, _) => {
                // Keep what the agent meant to announce (or, after a restart, what
                // the speaker announces), never with GSHUT: the last announcer must
                // stay preferred.
                let keep = kept.get(&prefix).or_else(|| actual.get(&prefix)).map(|r| Route {
                    prepends: r.prepends,
                    graceful_shutdown: false,
                });
                let what = if withdraw_all {
                    "withdraw on shutdown"
                } else if ours.contains_key(&prefix) {
                    "withdraw"
                } else {
                    "withdraw (the prefix left the plan for this PoP)"
                };
                let refusal = keep.map(|_| last(what));
                (keep, refusal)
            }
        };
        let now = actual.get(&prefix).copied();
        if target != now {
            decision.ops.push(match target {
                Some(route) => Op::Announce { prefix, route },
                None => Op::Withdraw { prefix },
            });
        }
        if let Some(route) = target {
            decision.kept.insert(prefix, route);
        }
        decision.prefixes.push(PrefixDecision {
            prefix,
            desired,
            target,
            actual: now,
            refusal,
        });
    }
    decision
}

/// The action a speaker's state stands for, with its prepend count (`Withdraw, 0`
/// when nothing is announced).
pub fn action_of(route: Option<Route>) -> (AnycastAction, u32) {
    match route {
        None => (AnycastAction::Withdraw, 0),
        Some(r) => (r.action(), r.prepends),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AnycastAction::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    const P: &str = "198.51.100.0/24";

    fn entry(pop: &str, prefix: &str, action: AnycastAction, prepend_count: u32) -> AnycastSnapshot {
        AnycastSnapshot {
            pop: pop.into(),
            prefix: net(prefix),
            action,
            prepend_count,
        }
    }

    fn plan(entries: Vec<AnycastSnapshot>) -> AnycastPlan {
        AnycastPlan { version: 7, entries }
    }

    fn route(prepends: u32, gshut: bool) -> Route {
        Route {
            prepends,
            graceful_shutdown: gshut,
        }
    }

    fn announced(routes: &[(&str, Route)]) -> Announced {
        routes.iter().map(|(p, r)| (net(p), *r)).collect()
    }

    /// fra1 (us) and ams1 (the other announcer), each with an action.
    fn two_pops(ours: AnycastAction, n: u32, theirs: AnycastAction) -> AnycastPlan {
        plan(vec![entry("fra1", P, ours, n), entry("ams1", P, theirs, 0)])
    }

    #[test]
    fn each_rung_becomes_the_route_it_names() {
        let cases = [
            (Announce, 0, Some(route(0, false))),
            (Prepend, 1, Some(route(1, false))),
            (Prepend, 3, Some(route(3, false))),
            (GracefulShutdown, 0, Some(route(0, true))),
            (GracefulShutdown, 3, Some(route(3, true))),
            (Withdraw, 0, None),
        ];
        for (action, n, want) in cases {
            let d = decide(
                "fra1",
                Some(&two_pops(action, n, Announce)),
                &Announced::new(),
                &Announced::new(),
            );
            assert_eq!(d.prefixes[0].target, want, "{action:?} ×{n}");
            assert_eq!(d.prefixes[0].refusal, None);
            let ops: Vec<Op> = want
                .map(|route| Op::Announce { prefix: net(P), route })
                .into_iter()
                .collect();
            assert_eq!(d.ops, ops, "{action:?} ×{n} from nothing");
        }
    }

    #[test]
    fn the_diff_changes_only_what_differs() {
        let actual = announced(&[(P, route(1, false))]);
        let d = decide("fra1", Some(&two_pops(Prepend, 1, Announce)), &actual, &actual);
        assert!(d.ops.is_empty(), "already there: {d:?}");
        let d = decide("fra1", Some(&two_pops(Prepend, 3, Announce)), &actual, &actual);
        assert_eq!(
            d.ops,
            [Op::Announce {
                prefix: net(P),
                route: route(3, false)
            }]
        );
        let d = decide("fra1", Some(&two_pops(Withdraw, 0, Announce)), &actual, &actual);
        assert_eq!(d.ops, [Op::Withdraw { prefix: net(P) }]);
        assert!(d.kept.is_empty());
        // Drift: the route was deleted by hand; the same target brings it back.
        let d = decide(
            "fra1",
            Some(&two_pops(Prepend, 1, Announce)),
            &Announced::new(),
            &actual,
        );
        assert_eq!(
            d.ops,
            [Op::Announce {
                prefix: net(P),
                route: route(1, false)
            }]
        );
    }

    #[test]
    fn other_pops_and_unmanaged_routes_are_left_alone() {
        let p = plan(vec![entry("ams1", "203.0.113.0/24", Announce, 0)]);
        let actual = announced(&[("192.0.2.0/24", route(0, false))]);
        let d = decide("fra1", Some(&p), &actual, &Announced::new());
        assert!(d.ops.is_empty() && d.prefixes.is_empty(), "{d:?}");
    }

    #[test]
    fn the_last_announcer_never_withdraws() {
        let actual = announced(&[(P, route(0, false))]);
        for theirs in [Some(Withdraw), None] {
            let mut p = two_pops(Withdraw, 0, Withdraw);
            if theirs.is_none() {
                p.entries.truncate(1);
            }
            let d = decide("fra1", Some(&p), &actual, &actual);
            assert!(d.ops.is_empty(), "{d:?}");
            assert_eq!(d.prefixes[0].target, Some(route(0, false)));
            assert_eq!(d.prefixes[0].desired, (Withdraw, 0));
            let why = d.prefixes[0].refusal.clone().unwrap();
            assert_eq!(
                why,
                "withdraw refused: plan v7 shows no other PoP announcing 198.51.100.0/24 (last announcer)"
            );
            assert_eq!(d.kept, actual, "remembered");
        }
        // Even after the route was deleted by hand, the kept route comes back.
        let d = decide(
            "fra1",
            Some(&two_pops(Withdraw, 0, Withdraw)),
            &Announced::new(),
            &actual,
        );
        assert_eq!(
            d.ops,
            [Op::Announce {
                prefix: net(P),
                route: route(0, false)
            }]
        );
        // Another PoP under graceful shutdown or prepended still announces it.
        for theirs in [GracefulShutdown, Prepend, Announce] {
            let d = decide("fra1", Some(&two_pops(Withdraw, 0, theirs)), &actual, &actual);
            assert_eq!(d.ops, [Op::Withdraw { prefix: net(P) }], "{theirs:?}");
        }
        // Nothing announced and nothing to keep: nothing to refuse either.
        let d = decide(
            "fra1",
            Some(&two_pops(Withdraw, 0, Withdraw)),
            &Announced::new(),
            &Announced::new(),
        );
        assert!(d.ops.is_empty());
        assert_eq!((d.prefixes[0].target, d.prefixes[0].refusal.clone()), (None, None));
    }

    #[test]
    fn the_last_announcer_is_never_marked_graceful_shutdown() {
        let actual = announced(&[(P, route(3, true))]);
        let d = decide("fra1", Some(&two_pops(GracefulShutdown, 3, Withdraw)), &actual, &actual);
        assert_eq!(
            d.ops,
            [Op::Announce {
                prefix: net(P),
                route: route(3, false)
            }]
        );
        assert!(d.prefixes[0]
            .refusal
            .clone()
            .unwrap()
            .starts_with("graceful shutdown refused"));
        // A GSHUT route kept by a refused withdraw loses its community too.
        let d = decide("fra1", Some(&two_pops(Withdraw, 0, Withdraw)), &actual, &actual);
        assert_eq!(d.prefixes[0].target, Some(route(3, false)));
    }

    #[test]
    fn a_prefix_leaving_the_plan_is_withdrawn_only_where_another_pop_announces_it() {
        let kept = announced(&[(P, route(0, false))]);
        let other_only = plan(vec![entry("ams1", P, Announce, 0)]);
        let d = decide("fra1", Some(&other_only), &kept, &kept);
        assert_eq!(d.ops, [Op::Withdraw { prefix: net(P) }]);
        let empty = plan(vec![]);
        let d = decide("fra1", Some(&empty), &kept, &kept);
        assert!(d.ops.is_empty());
        assert!(d.prefixes[0].refusal.clone().unwrap().contains("left the plan"));
    }

    #[test]
    fn nothing_is_announced_before_the_first_plan() {
        let actual = announced(&[(P, route(0, false))]);
        let d = decide("fra1", None, &actual, &Announced::new());
        assert_eq!(d, Decision::default());
        // Not withdrawn either: routes a previous run left stay until a plan says.
        let d = decide("fra1", None, &Announced::new(), &actual);
        assert!(d.ops.is_empty());
        assert_eq!(d.kept, actual);
    }

    #[test]
    fn shutdown_withdraws_only_where_safe() {
        let actual = announced(&[(P, route(0, false)), ("203.0.113.0/24", route(0, false))]);
        let p = plan(vec![
            entry("fra1", P, Announce, 0),
            entry("ams1", P, Announce, 0),
            entry("fra1", "203.0.113.0/24", Announce, 0),
        ]);
        let d = decide_shutdown("fra1", Some(&p), &actual, &actual);
        assert_eq!(d.ops, [Op::Withdraw { prefix: net(P) }]);
        assert_eq!(d.prefixes[1].prefix, net("203.0.113.0/24"));
        assert!(d.prefixes[1]
            .refusal
            .clone()
            .unwrap()
            .starts_with("withdraw on shutdown refused"));
        assert!(decide_shutdown("fra1", None, &actual, &actual).ops.is_empty());
    }

    #[test]
    fn validation_refuses_what_a_speaker_must_not_guess() {
        let snapshot = |entries: Vec<AnycastSnapshot>| PlanSnapshot {
            version: 3,
            created_at_unix_ms: None,
            dns_ttl_seconds: 0,
            default_region: String::new(),
            regions: vec![],
            epoch: String::new(),
            content_hash: String::new(),
            anycast: entries,
        };
        assert!(validate(&snapshot(vec![entry("fra1", P, Prepend, 3)])).is_ok());
        let cases = [
            (vec![entry("", P, Announce, 0)], "the PoP name is empty"),
            (vec![entry("fra1", "198.51.100.1/24", Announce, 0)], "host bits"),
            (
                vec![entry("fra1", P, Announce, 0), entry("fra1", P, Withdraw, 0)],
                "appears twice",
            ),
            (vec![entry("fra1", P, Prepend, 11)], "above the maximum of 10"),
            (vec![entry("fra1", P, Prepend, 0)], "prepend_count 0"),
        ];
        for (entries, want) in cases {
            let e = validate(&snapshot(entries)).unwrap_err().to_string();
            assert!(e.contains(want) && e.starts_with("plan v3: anycast["), "{e}");
        }
    }

    #[test]
    fn routes_name_their_action() {
        assert_eq!(action_of(None), (Withdraw, 0));
        assert_eq!(action_of(Some(route(0, false))), (Announce, 0));
        assert_eq!(action_of(Some(route(2, false))), (Prepend, 2));
        assert_eq!(action_of(Some(route(2, true))), (GracefulShutdown, 2));
    }
}
