//! The wire plan as the agent's domain snapshot, by hand: wire types stop here.
//! Addresses and prefixes are parsed once, on the way in; text that does not parse
//! is a rejection (the NACK reason names the region, PoP and value).

use meridian_dns_core::plan::{
    parse_addresses, parse_prefixes, PlanRejection, PlanSnapshot, PopSnapshot, RegionSnapshot,
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
    })
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
