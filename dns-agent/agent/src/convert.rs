//! The wire plan as the agent's domain snapshot, by hand: wire types stop here.
//! Addresses and prefixes are parsed once, on the way in; text that does not parse
//! is a rejection (the NACK reason names the region, PoP and value).

use meridian_dns_core::plan::{
    parse_addresses, parse_prefixes, AnycastAction, AnycastSnapshot, PlanRejection, PlanSnapshot, PopSnapshot,
    RegionSnapshot,
};
use meridian_proto::v1 as pb;

/// Converts a received `SteeringPlan`. Only the fields edge agents act on are kept;
/// weights and the rest are checked by the agent's validation.
pub fn snapshot_from_pb(p: pb::SteeringPlan) -> Result<PlanSnapshot, PlanRejection> {
    let version = p.version;
    let regions = p
        .regions
        .into_iter()
        .map(|r| {
            let client_prefixes = parse_prefixes(version, &r.region, &r.client_prefixes)?;
            let pops = r
                .pops
                .into_iter()
                .map(|w| {
                    let (ipv4, ipv6) = parse_addresses(version, &r.region, &w.pop, &w.ipv4, &w.ipv6)?;
                    Ok(PopSnapshot {
                        pop: w.pop,
                        weight: w.weight,
                        ipv4,
                        ipv6,
                    })
                })
                .collect::<Result<Vec<_>, PlanRejection>>()?;
            Ok(RegionSnapshot {
                region: r.region,
                client_prefixes,
                pops,
            })
        })
        .collect::<Result<Vec<_>, PlanRejection>>()?;
    let anycast = p
        .anycast
        .into_iter()
        .enumerate()
        .map(|(index, a)| anycast_from_pb(version, index, a))
        .collect::<Result<Vec<_>, PlanRejection>>()?;
    Ok(PlanSnapshot {
        version,
        created_at_unix_ms: p.created_at.map(|t| {
            t.seconds
                .saturating_mul(1000)
                .saturating_add(i64::from(t.nanos / 1_000_000))
        }),
        dns_ttl_seconds: p.dns_ttl_seconds,
        default_region: p.default_region,
        regions,
        epoch: p.epoch,
        content_hash: p.content_hash,
        anycast,
    })
}

/// One PoP's anycast entry: the prefix must parse and the action must be one this
/// agent knows. An unspecified or unknown action is a rejection, never a default: a
/// speaker must not guess between announcing and withdrawing.
fn anycast_from_pb(version: u64, index: usize, a: pb::PopAnycastState) -> Result<AnycastSnapshot, PlanRejection> {
    let bad = |message: String| PlanRejection::BadAnycast {
        version,
        index,
        pop: a.pop.clone(),
        prefix: a.prefix.clone(),
        message,
    };
    let prefix = a
        .prefix
        .trim()
        .parse()
        .map_err(|_| bad("the prefix does not parse".into()))?;
    let action = match pb::AnycastAction::try_from(a.action) {
        Ok(pb::AnycastAction::Announce) => AnycastAction::Announce,
        Ok(pb::AnycastAction::Prepend) => AnycastAction::Prepend,
        Ok(pb::AnycastAction::GracefulShutdown) => AnycastAction::GracefulShutdown,
        Ok(pb::AnycastAction::Withdraw) => AnycastAction::Withdraw,
        Ok(pb::AnycastAction::Unspecified) => return Err(bad("the action is unspecified".into())),
        Err(_) => return Err(bad(format!("unknown action {}", a.action))),
    };
    Ok(AnycastSnapshot {
        pop: a.pop.clone(),
        prefix,
        action,
        prepend_count: a.prepend_count,
    })
}

/// An Anycast agent's report as the wire message.
pub fn anycast_report_to_pb(prefixes: &[crate::report::AnycastPrefixReport]) -> pb::AnycastReport {
    let action = |a: AnycastAction| match a {
        AnycastAction::Announce => pb::AnycastAction::Announce,
        AnycastAction::Prepend => pb::AnycastAction::Prepend,
        AnycastAction::GracefulShutdown => pb::AnycastAction::GracefulShutdown,
        AnycastAction::Withdraw => pb::AnycastAction::Withdraw,
    } as i32;
    pb::AnycastReport {
        prefixes: prefixes
            .iter()
            .map(|p| pb::AnycastPrefixState {
                prefix: p.prefix.to_string(),
                desired: action(p.desired),
                desired_prepend: p.desired_prepend,
                actual: action(p.actual),
                actual_prepend: p.actual_prepend,
                detail: p.detail.clone(),
                plan_version: p.plan_version,
            })
            .collect(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use meridian_dns_core::plan::validate;

    pub(crate) fn wire_plan(version: u64) -> pb::SteeringPlan {
        pb::SteeringPlan {
            version,
            created_at: Some(meridian_proto::prost_types::Timestamp {
                seconds: 10,
                nanos: 5_000_000,
            }),
            regions: vec![pb::RegionSteering {
                region: "eu".into(),
                pops: vec![pb::PopWeight {
                    pop: "fra1".into(),
                    weight: 1.0,
                    ipv4: vec!["192.0.2.1".into()],
                    ipv6: vec!["2001:db8::1".into()],
                }],
                client_prefixes: vec!["10.0.0.0/8".into()],
            }],
            dns_ttl_seconds: 30,
            default_region: "eu".into(),
            ..Default::default()
        }
    }

    #[test]
    fn wire_plans_convert_by_hand() {
        let snapshot = snapshot_from_pb(wire_plan(4)).unwrap();
        assert_eq!(snapshot.created_at_unix_ms, Some(10_005));
        assert_eq!(snapshot.regions[0].client_prefixes[0].to_string(), "10.0.0.0/8");
        assert_eq!(snapshot.regions[0].pops[0].ipv6[0].to_string(), "2001:db8::1");
        assert!(validate(&snapshot).is_ok());
        assert_eq!((snapshot.epoch.as_str(), snapshot.content_hash.as_str()), ("", ""));
        let mut p = wire_plan(4);
        p.epoch = "e1".into();
        p.content_hash = "h1".into();
        let snapshot = snapshot_from_pb(p).unwrap();
        assert_eq!((snapshot.epoch.as_str(), snapshot.content_hash.as_str()), ("e1", "h1"));
    }

    #[test]
    fn anycast_entries_convert_and_an_unspecified_action_is_rejected() {
        let mut p = wire_plan(4);
        p.anycast = vec![pb::PopAnycastState {
            pop: "fra1".into(),
            prefix: "198.51.100.0/24".into(),
            action: pb::AnycastAction::Prepend as i32,
            prepend_count: 3,
        }];
        let snapshot = snapshot_from_pb(p.clone()).unwrap();
        assert_eq!(
            snapshot.anycast,
            [AnycastSnapshot {
                pop: "fra1".into(),
                prefix: "198.51.100.0/24".parse().unwrap(),
                action: AnycastAction::Prepend,
                prepend_count: 3,
            }]
        );
        for (action, text) in [(0, "the action is unspecified"), (42, "unknown action 42")] {
            let mut bad = p.clone();
            bad.anycast[0].action = action;
            let r = snapshot_from_pb(bad).unwrap_err();
            assert_eq!(r.kind(), "bad_anycast");
            assert!(r.to_string().contains(text), "{r}");
            assert!(r.to_string().contains("anycast[0] (PoP `fra1`"), "{r}");
        }
        let mut bad = p;
        bad.anycast[0].prefix = "198.51.100.0/33".into();
        assert!(snapshot_from_pb(bad)
            .unwrap_err()
            .to_string()
            .contains("the prefix does not parse"));
    }

    #[test]
    fn unparsable_text_is_a_rejection_naming_it() {
        let mut p = wire_plan(4);
        p.regions[0].client_prefixes = vec!["10.0.0.0/33".into()];
        let r = snapshot_from_pb(p).unwrap_err();
        assert_eq!(r.kind(), "bad_prefix");
        let mut p = wire_plan(4);
        p.regions[0].pops[0].ipv6 = vec!["192.0.2.1".into()];
        let r = snapshot_from_pb(p).unwrap_err();
        assert!(
            r.to_string()
                .contains("PoP `fra1` has an unparsable IPv6 address `192.0.2.1`"),
            "{r}"
        );
    }
}
