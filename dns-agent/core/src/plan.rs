//! Steering plans as the agent keeps them: [`PlanDocument`] is the plan as received
//! (and as cached on disk), [`validate`] turns it into a [`Plan`] or says exactly why
//! it must be rejected. Pure: no I/O, no wire types (the gRPC adapter converts).

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A plan as it arrived: strings not yet parsed, weights not yet checked. This is also
/// the on-disk cache format, so a cached plan is validated exactly like a fresh one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanDocument {
    pub version: u64,
    #[serde(default)]
    pub created_at_unix_ms: Option<i64>,
    #[serde(default)]
    pub dns_ttl_seconds: u32,
    /// Empty: the first region.
    #[serde(default)]
    pub default_region: String,
    pub regions: Vec<RegionDocument>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionDocument {
    pub region: String,
    #[serde(default)]
    pub client_prefixes: Vec<String>,
    pub pops: Vec<PopDocument>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopDocument {
    pub pop: String,
    pub weight: f64,
    #[serde(default)]
    pub ipv4: Vec<String>,
    #[serde(default)]
    pub ipv6: Vec<String>,
}

/// A validated plan: every address and prefix parsed, every weight finite and not
/// negative, every region able to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub version: u64,
    pub created_at_unix_ms: Option<i64>,
    /// The answer TTL for steered names (the plan's, or [`DEFAULT_TTL`] when unset).
    pub ttl: u32,
    /// Index into `regions`.
    pub default_region: usize,
    pub regions: Vec<Region>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    pub name: String,
    pub prefixes: Vec<IpNet>,
    pub pops: Vec<PopWeight>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PopWeight {
    pub pop: String,
    pub weight: f64,
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
}

/// The TTL used when a plan carries none (0).
pub const DEFAULT_TTL: u32 = 20;

/// Why a plan was rejected; the `Display` text is the NACK reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanRejection {
    #[error("plan v{version} serves nothing: no region has a PoP with a positive weight and an address")]
    ServesNothing { version: u64 },
    #[error("plan v{version}: regions[{index}] has an empty name")]
    EmptyRegionName { version: u64, index: usize },
    #[error("plan v{version}: region `{region}` appears twice")]
    DuplicateRegion { version: u64, region: String },
    #[error("plan v{version}: region `{region}` PoP `{pop}` has weight {weight} (must be a finite number >= 0)")]
    InvalidWeight {
        version: u64,
        region: String,
        pop: String,
        weight: f64,
    },
    #[error("plan v{version}: region `{region}` PoP `{pop}` has an unparsable {family} address `{value}`")]
    BadAddress {
        version: u64,
        region: String,
        pop: String,
        family: &'static str,
        value: String,
    },
    #[error("plan v{version}: region `{region}` has an unparsable client prefix `{value}`")]
    BadPrefix {
        version: u64,
        region: String,
        value: String,
    },
    #[error("plan v{version}: client prefix {prefix} is mapped to both `{first}` and `{second}`")]
    AmbiguousPrefix {
        version: u64,
        prefix: IpNet,
        first: String,
        second: String,
    },
    #[error("plan v{version}: region `{region}` has no PoP with a positive weight and an address")]
    RegionUnservable { version: u64, region: String },
    #[error("plan v{version}: default region `{region}` is not one of the plan's regions")]
    UnknownDefaultRegion { version: u64, region: String },
}

impl PlanRejection {
    /// A short, fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PlanRejection::ServesNothing { .. } => "serves_nothing",
            PlanRejection::EmptyRegionName { .. } | PlanRejection::DuplicateRegion { .. } => "bad_region",
            PlanRejection::InvalidWeight { .. } => "invalid_weight",
            PlanRejection::BadAddress { .. } => "bad_address",
            PlanRejection::BadPrefix { .. } | PlanRejection::AmbiguousPrefix { .. } => "bad_prefix",
            PlanRejection::RegionUnservable { .. } => "region_unservable",
            PlanRejection::UnknownDefaultRegion { .. } => "unknown_default_region",
        }
    }
}

/// Validates a received plan. Malformed input and a plan that would serve nothing are
/// both rejected, so the agent keeps its previous plan rather than degrading.
pub fn validate(doc: &PlanDocument) -> Result<Plan, PlanRejection> {
    let version = doc.version;
    let mut regions = Vec::with_capacity(doc.regions.len());
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut prefixes: HashMap<IpNet, &str> = HashMap::new();
    for (index, r) in doc.regions.iter().enumerate() {
        if r.region.is_empty() {
            return Err(PlanRejection::EmptyRegionName { version, index });
        }
        if names.insert(&r.region, index).is_some() {
            return Err(PlanRejection::DuplicateRegion {
                version,
                region: r.region.clone(),
            });
        }
        let mut pops = Vec::with_capacity(r.pops.len());
        for p in &r.pops {
            if !p.weight.is_finite() || p.weight < 0.0 {
                return Err(PlanRejection::InvalidWeight {
                    version,
                    region: r.region.clone(),
                    pop: p.pop.clone(),
                    weight: p.weight,
                });
            }
            let bad = |family, value: &String| PlanRejection::BadAddress {
                version,
                region: r.region.clone(),
                pop: p.pop.clone(),
                family,
                value: value.clone(),
            };
            let ipv4 = p
                .ipv4
                .iter()
                .map(|a| a.trim().parse::<Ipv4Addr>().map_err(|_| bad("IPv4", a)))
                .collect::<Result<Vec<_>, _>>()?;
            let ipv6 = p
                .ipv6
                .iter()
                .map(|a| a.trim().parse::<Ipv6Addr>().map_err(|_| bad("IPv6", a)))
                .collect::<Result<Vec<_>, _>>()?;
            pops.push(PopWeight {
                pop: p.pop.clone(),
                weight: p.weight,
                ipv4,
                ipv6,
            });
        }
        let mut parsed = Vec::with_capacity(r.client_prefixes.len());
        for value in &r.client_prefixes {
            let net: IpNet = value.trim().parse().map_err(|_| PlanRejection::BadPrefix {
                version,
                region: r.region.clone(),
                value: value.clone(),
            })?;
            // Host bits are ignored: 10.1.2.3/16 means 10.1.0.0/16.
            let net = net.trunc();
            if let Some(first) = prefixes.insert(net, &r.region) {
                if first != r.region {
                    return Err(PlanRejection::AmbiguousPrefix {
                        version,
                        prefix: net,
                        first: first.to_string(),
                        second: r.region.clone(),
                    });
                }
                continue;
            }
            parsed.push(net);
        }
        regions.push(Region {
            name: r.region.clone(),
            prefixes: parsed,
            pops,
        });
    }
    let servable = |r: &Region| {
        r.pops
            .iter()
            .any(|p| p.weight > 0.0 && (!p.ipv4.is_empty() || !p.ipv6.is_empty()))
    };
    if !regions.iter().any(servable) {
        return Err(PlanRejection::ServesNothing { version });
    }
    if let Some(r) = regions.iter().find(|r| !servable(r)) {
        return Err(PlanRejection::RegionUnservable {
            version,
            region: r.name.clone(),
        });
    }
    let default_region = if doc.default_region.is_empty() {
        0
    } else {
        *names
            .get(doc.default_region.as_str())
            .ok_or_else(|| PlanRejection::UnknownDefaultRegion {
                version,
                region: doc.default_region.clone(),
            })?
    };
    Ok(Plan {
        version,
        created_at_unix_ms: doc.created_at_unix_ms,
        ttl: if doc.dns_ttl_seconds == 0 {
            DEFAULT_TTL
        } else {
            doc.dns_ttl_seconds
        },
        default_region,
        regions,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn pop(name: &str, weight: f64, v4: &[&str], v6: &[&str]) -> PopDocument {
        PopDocument {
            pop: name.into(),
            weight,
            ipv4: v4.iter().map(|s| s.to_string()).collect(),
            ipv6: v6.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub(crate) fn region(name: &str, prefixes: &[&str], pops: Vec<PopDocument>) -> RegionDocument {
        RegionDocument {
            region: name.into(),
            client_prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
            pops,
        }
    }

    pub(crate) fn sample(version: u64) -> PlanDocument {
        PlanDocument {
            version,
            created_at_unix_ms: Some(1_700_000_000_000),
            dns_ttl_seconds: 30,
            default_region: "us".into(),
            regions: vec![
                region(
                    "eu",
                    &["10.1.0.0/16", "2001:db8:1::/48"],
                    vec![
                        pop("fra1", 0.75, &["192.0.2.1"], &["2001:db8::1"]),
                        pop("ams1", 0.25, &["192.0.2.2"], &[]),
                    ],
                ),
                region("us", &["10.2.0.0/16"], vec![pop("iad1", 1.0, &["192.0.2.3"], &[])]),
            ],
        }
    }

    fn rejected(doc: &PlanDocument) -> PlanRejection {
        validate(doc).unwrap_err()
    }

    #[test]
    fn a_good_plan_validates() {
        let plan = validate(&sample(3)).unwrap();
        assert_eq!(plan.version, 3);
        assert_eq!(plan.ttl, 30);
        assert_eq!(plan.default_region, 1);
        assert_eq!(plan.regions[0].prefixes.len(), 2);
        let mut doc = sample(3);
        doc.dns_ttl_seconds = 0;
        doc.default_region.clear();
        let plan = validate(&doc).unwrap();
        assert_eq!((plan.ttl, plan.default_region), (DEFAULT_TTL, 0));
    }

    #[test]
    fn each_rejection_names_what_is_wrong() {
        let mut doc = sample(4);
        doc.regions[0].pops[1].weight = f64::NAN;
        let r = rejected(&doc);
        assert_eq!(r.kind(), "invalid_weight");
        assert!(r.to_string().contains("`eu` PoP `ams1` has weight NaN"), "{r}");

        let mut doc = sample(4);
        doc.regions[0].pops[0].weight = -1.0;
        assert_eq!(rejected(&doc).kind(), "invalid_weight");

        let mut doc = sample(4);
        doc.regions[0].pops[0].ipv4[0] = "192.0.2.300".into();
        let r = rejected(&doc);
        assert!(r.to_string().contains("IPv4 address `192.0.2.300`"), "{r}");

        let mut doc = sample(4);
        doc.regions[0].pops[0].ipv6[0] = "192.0.2.1".into();
        assert_eq!(rejected(&doc).kind(), "bad_address");

        let mut doc = sample(4);
        doc.regions[1].client_prefixes[0] = "10.2.0.0/33".into();
        let r = rejected(&doc);
        assert!(
            r.to_string()
                .contains("`us` has an unparsable client prefix `10.2.0.0/33`"),
            "{r}"
        );

        let mut doc = sample(4);
        doc.regions[1].client_prefixes[0] = "10.1.7.7/16".into();
        let r = rejected(&doc);
        assert!(
            r.to_string().contains("10.1.0.0/16 is mapped to both `eu` and `us`"),
            "{r}"
        );

        let mut doc = sample(4);
        doc.regions[1].pops[0].ipv4.clear();
        let r = rejected(&doc);
        assert_eq!(r.kind(), "region_unservable");
        assert!(r.to_string().contains("region `us`"), "{r}");

        let mut doc = sample(4);
        doc.regions[1].pops[0].weight = 0.0;
        assert_eq!(rejected(&doc).kind(), "region_unservable");

        let mut doc = sample(4);
        for r in &mut doc.regions {
            for p in &mut r.pops {
                p.ipv4.clear();
                p.ipv6.clear();
            }
        }
        assert_eq!(
            rejected(&doc),
            PlanRejection::ServesNothing { version: 4 },
            "nothing to serve anywhere"
        );
        let mut doc = sample(4);
        doc.regions.clear();
        assert_eq!(rejected(&doc).kind(), "serves_nothing");

        let mut doc = sample(4);
        doc.default_region = "apac".into();
        assert_eq!(rejected(&doc).kind(), "unknown_default_region");

        let mut doc = sample(4);
        doc.regions[1].region = "eu".into();
        assert_eq!(rejected(&doc).kind(), "bad_region");
    }

    #[test]
    fn the_cache_format_round_trips() {
        let doc = sample(9);
        let json = serde_json::to_string(&doc).unwrap();
        let back: PlanDocument = serde_json::from_str(&json).unwrap();
        assert_eq!(back, doc);
    }
}
