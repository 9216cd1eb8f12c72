//! The content hash of a stored plan: what agents compare when a plan arrives under a
//! version they already hold, to tell a repeat from different content published
//! under the same number (a restored store).
//!
//! The hash covers what the plan steers: the TTL, the default region, every region's
//! weights, addresses and client prefixes, the PoP states and the Anycast intents. It
//! leaves out the version, the creation time, the publisher, the reasons, the
//! guardrail texts, the topology revision, the restore marker and the epoch, which
//! describe how the plan came to be, not where traffic goes. The input is the plan's
//! JSON (fields in declaration order, lists in the plan's order: the steering core
//! gives the same order for the same input), hashed with 128-bit FNV-1a. We did not
//! pull in a SHA-2 crate: the hash detects accidents (two stores numbering
//! differently), not adversaries, who would have to write to the store anyway.

use serde::Serialize;

use crate::records::{AnycastAnnouncement, PopPlanState, RegionWeights, StoredPlan};

/// The content hash of `plan`, as 32 lowercase hex digits.
pub fn content_hash(plan: &StoredPlan) -> String {
    let content = Content {
        dns_ttl_seconds: plan.dns_ttl_seconds,
        default_region: plan.default_region.as_deref(),
        regions: &plan.regions,
        pops: &plan.pops,
        anycast: &plan.anycast,
    };
    // Serialising plain records to JSON cannot fail: no maps with non-string keys,
    // no custom serialisers that error. Should it ever, the hash of nothing still
    // differs from any real plan's, and the empty input is visible in tests.
    let bytes = serde_json::to_vec(&content).unwrap_or_default();
    format!("{:032x}", fnv1a_128(&bytes))
}

/// The fields of a plan that decide where traffic goes, borrowed, in a fixed order.
#[derive(Serialize)]
struct Content<'a> {
    dns_ttl_seconds: u32,
    default_region: Option<&'a str>,
    regions: &'a [RegionWeights],
    pops: &'a [PopPlanState],
    anycast: &'a [AnycastAnnouncement],
}

/// 128-bit FNV-1a (offset basis and prime from the FNV specification).
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u128::from(*b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::PopWeightRecord;

    fn plan() -> StoredPlan {
        StoredPlan {
            version: 3,
            created_at_unix_ms: 1,
            published_by: "cp-1".into(),
            topology_revision: 7,
            dns_ttl_seconds: 20,
            regions: vec![RegionWeights {
                region: "eu".into(),
                pops: vec![
                    PopWeightRecord {
                        pop: "fra1".into(),
                        weight: 0.75,
                        ipv4: vec!["192.0.2.1".parse().unwrap()],
                        ipv6: vec![],
                    },
                    PopWeightRecord {
                        pop: "ams1".into(),
                        weight: 0.25,
                        ipv4: vec!["192.0.2.2".parse().unwrap()],
                        ipv6: vec![],
                    },
                ],
                client_prefixes: vec!["10.1.0.0/16".parse().unwrap()],
            }],
            pops: vec![],
            anycast: vec![],
            reasons: vec!["PoP fra1: down → up".into()],
            guardrails: vec![],
            restored_from: None,
            default_region: Some("eu".into()),
            epoch: String::new(),
            content_hash: String::new(),
        }
    }

    #[test]
    fn fnv_matches_the_published_test_vectors() {
        assert_eq!(fnv1a_128(b""), 0x6c62272e07bb014262b821756295c58d);
        assert_eq!(fnv1a_128(b"a"), 0xd228cb696f1a8caf78912b704e4a8964);
    }

    #[test]
    fn the_hash_ignores_how_the_plan_came_to_be() {
        let a = plan();
        let mut b = plan();
        b.version = 99;
        b.created_at_unix_ms = 2;
        b.published_by = "cp-2".into();
        b.reasons = vec!["restored".into()];
        b.guardrails = vec!["max-failover-capacity".into()];
        b.topology_revision = 1;
        b.restored_from = Some(1);
        b.epoch = "other".into();
        b.content_hash = "stale".into();
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_eq!(content_hash(&a).len(), 32);
        assert!(content_hash(&a).chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn the_hash_changes_with_where_traffic_goes() {
        let base = content_hash(&plan());
        let mut weight = plan();
        weight.regions[0].pops[0].weight = 0.5;
        let mut address = plan();
        address.regions[0].pops[1].ipv4 = vec!["192.0.2.9".parse().unwrap()];
        let mut removed = plan();
        removed.regions[0].pops.pop();
        let mut ttl = plan();
        ttl.dns_ttl_seconds = 30;
        let mut default = plan();
        default.default_region = None;
        let hashes = [&weight, &address, &removed, &ttl, &default].map(content_hash);
        for (i, h) in hashes.iter().enumerate() {
            assert_ne!(h, &base, "change {i} must change the hash");
        }
    }

    #[test]
    fn plans_stored_before_epochs_still_decode() {
        let mut old = serde_json::to_value(plan()).unwrap();
        let obj = old.as_object_mut().unwrap();
        obj.remove("epoch");
        obj.remove("content_hash");
        let back: StoredPlan = serde_json::from_value(old).unwrap();
        assert_eq!(back.epoch, "");
        assert_eq!(back.content_hash, "");
        assert_eq!(back.version, 3);
    }
}
