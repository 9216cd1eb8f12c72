//! Steering plans as the agent keeps them: [`PlanSnapshot`] is the plan as received
//! (addresses and prefixes already parsed; also the on-disk cache format), and
//! [`validate`] turns it into a [`Plan`] ready for answering, or says exactly why it
//! must be rejected. Pure: no I/O, no wire types. The gRPC adapter (the edge-agent
//! crate) converts the wire plan with [`parse_addresses`] and [`parse_prefixes`], so
//! text is parsed once, on the way in, with the same rejection reasons.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A plan as it arrived, addresses and prefixes parsed but nothing else checked
/// (weights, duplicate regions, servability). This is also the on-disk cache format,
/// so a cached plan is validated exactly like a fresh one; addresses and prefixes are
/// written as text, as before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSnapshot {
    /// Only goes up; 0 is never a valid plan.
    pub version: u64,
    #[serde(default)]
    pub created_at_unix_ms: Option<i64>,
    /// 0: [`DEFAULT_TTL`].
    #[serde(default)]
    pub dns_ttl_seconds: u32,
    /// Empty: the first region.
    #[serde(default)]
    pub default_region: String,
    pub regions: Vec<RegionSnapshot>,
    /// The control plane's store identity; versions are comparable only within one
    /// epoch. Empty from control planes (and caches) that predate epochs.
    #[serde(default)]
    pub epoch: String,
    /// The control plane's hash of what the plan steers (empty when unknown).
    #[serde(default)]
    pub content_hash: String,
    /// What each PoP's BGP speaker should do with each anycast prefix (issue [9]).
    /// Read by the Anycast agent only; [`validate`] (the DNS agent's) ignores it.
    /// Left out of the cache file when empty, so DNS caches keep their shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anycast: Vec<AnycastSnapshot>,
}

/// One PoP's desired state for one anycast prefix, as the plan says it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnycastSnapshot {
    pub pop: String,
    pub prefix: IpNet,
    pub action: AnycastAction,
    /// How many times the PoP's AS is prepended (meaningful with
    /// [`AnycastAction::Prepend`], and kept under a graceful shutdown).
    #[serde(default)]
    pub prepend_count: u32,
}

/// The rungs of an anycast drain, from fully announced to withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnycastAction {
    /// Announced as is.
    Announce,
    /// Announced with the AS path prepended `prepend_count` times.
    Prepend,
    /// Announced with the GRACEFUL_SHUTDOWN community (65535:0, RFC 8326).
    GracefulShutdown,
    /// Not announced.
    Withdraw,
}

impl AnycastAction {
    /// The name used in logs, metrics labels and NACK reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            AnycastAction::Announce => "announce",
            AnycastAction::Prepend => "prepend",
            AnycastAction::GracefulShutdown => "graceful_shutdown",
            AnycastAction::Withdraw => "withdraw",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSnapshot {
    pub region: String,
    /// Host bits are allowed here and ignored by [`validate`].
    #[serde(default)]
    pub client_prefixes: Vec<IpNet>,
    pub pops: Vec<PopSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopSnapshot {
    pub pop: String,
    pub weight: f64,
    #[serde(default)]
    pub ipv4: Vec<Ipv4Addr>,
    #[serde(default)]
    pub ipv6: Vec<Ipv6Addr>,
}

/// A validated plan: every address and prefix parsed, every weight finite and not
/// negative, every region able to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub version: u64,
    /// As in [`PlanSnapshot::epoch`].
    pub epoch: String,
    /// As in [`PlanSnapshot::content_hash`].
    pub content_hash: String,
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
    #[error("plan v{version}: anycast[{index}] (PoP `{pop}`, prefix `{prefix}`): {message}")]
    BadAnycast {
        version: u64,
        index: usize,
        pop: String,
        prefix: String,
        message: String,
    },
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
            PlanRejection::BadAnycast { .. } => "bad_anycast",
        }
    }
}

/// Parses a PoP's addresses from their text (wire) form; the error is the NACK.
pub fn parse_addresses(
    version: u64,
    region: &str,
    pop: &str,
    ipv4: &[String],
    ipv6: &[String],
) -> Result<(Vec<Ipv4Addr>, Vec<Ipv6Addr>), PlanRejection> {
    let bad = |family, value: &String| PlanRejection::BadAddress {
        version,
        region: region.to_string(),
        pop: pop.to_string(),
        family,
        value: value.clone(),
    };
    let v4 = ipv4
        .iter()
        .map(|a| a.trim().parse::<Ipv4Addr>().map_err(|_| bad("IPv4", a)))
        .collect::<Result<Vec<_>, _>>()?;
    let v6 = ipv6
        .iter()
        .map(|a| a.trim().parse::<Ipv6Addr>().map_err(|_| bad("IPv6", a)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((v4, v6))
}

/// Parses a region's client prefixes from their text (wire) form.
pub fn parse_prefixes(version: u64, region: &str, prefixes: &[String]) -> Result<Vec<IpNet>, PlanRejection> {
    prefixes
        .iter()
        .map(|value| {
            value.trim().parse::<IpNet>().map_err(|_| PlanRejection::BadPrefix {
                version,
                region: region.to_string(),
                value: value.clone(),
            })
        })
        .collect()
}

/// Validates a received plan. Malformed input and a plan that would serve nothing are
/// both rejected, so the agent keeps its previous plan rather than degrading.
pub fn validate(snapshot: &PlanSnapshot) -> Result<Plan, PlanRejection> {
    let version = snapshot.version;
    let mut regions = Vec::with_capacity(snapshot.regions.len());
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut prefixes: HashMap<IpNet, &str> = HashMap::new();
    for (index, r) in snapshot.regions.iter().enumerate() {
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
            pops.push(PopWeight {
                pop: p.pop.clone(),
                weight: p.weight,
                ipv4: p.ipv4.clone(),
                ipv6: p.ipv6.clone(),
            });
        }
        let mut parsed = Vec::with_capacity(r.client_prefixes.len());
        for net in &r.client_prefixes {
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
    let default_region = if snapshot.default_region.is_empty() {
        0
    } else {
        *names
            .get(snapshot.default_region.as_str())
            .ok_or_else(|| PlanRejection::UnknownDefaultRegion {
                version,
                region: snapshot.default_region.clone(),
            })?
    };
    Ok(Plan {
        version,
        epoch: snapshot.epoch.clone(),
        content_hash: snapshot.content_hash.clone(),
        created_at_unix_ms: snapshot.created_at_unix_ms,
        ttl: if snapshot.dns_ttl_seconds == 0 {
            DEFAULT_TTL
        } else {
            snapshot.dns_ttl_seconds
        },
        default_region,
        regions,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn ips<T: std::str::FromStr>(v: &[&str]) -> Vec<T>
    where
        T::Err: std::fmt::Debug,
    {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    pub(crate) fn pop(name: &str, weight: f64, v4: &[&str], v6: &[&str]) -> PopSnapshot {
        PopSnapshot {
            pop: name.into(),
            weight,
            ipv4: ips(v4),
            ipv6: ips(v6),
        }
    }

    pub(crate) fn region(name: &str, prefixes: &[&str], pops: Vec<PopSnapshot>) -> RegionSnapshot {
        RegionSnapshot {
            region: name.into(),
            client_prefixes: ips(prefixes),
            pops,
        }
    }

    pub(crate) fn sample(version: u64) -> PlanSnapshot {
        PlanSnapshot {
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
            epoch: "e1".into(),
            content_hash: "h1".into(),
            anycast: Vec::new(),
        }
    }

    fn rejected(snapshot: &PlanSnapshot) -> PlanRejection {
        validate(snapshot).unwrap_err()
    }

    #[test]
    fn a_good_plan_validates() {
        let plan = validate(&sample(3)).unwrap();
        assert_eq!(plan.version, 3);
        assert_eq!(plan.ttl, 30);
        assert_eq!(plan.default_region, 1);
        assert_eq!(plan.regions[0].prefixes.len(), 2);
        let mut snapshot = sample(3);
        snapshot.dns_ttl_seconds = 0;
        snapshot.default_region.clear();
        let plan = validate(&snapshot).unwrap();
        assert_eq!((plan.ttl, plan.default_region), (DEFAULT_TTL, 0));
    }

    #[test]
    fn text_is_parsed_once_with_reasons_naming_the_value() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (v4, v6) = parse_addresses(4, "eu", "fra1", &s(&[" 192.0.2.1"]), &s(&["2001:db8::1"])).unwrap();
        assert_eq!((v4.len(), v6.len()), (1, 1));
        let r = parse_addresses(4, "eu", "fra1", &s(&["192.0.2.300"]), &[]).unwrap_err();
        assert_eq!(r.kind(), "bad_address");
        assert!(r.to_string().contains("IPv4 address `192.0.2.300`"), "{r}");
        let r = parse_addresses(4, "eu", "fra1", &[], &s(&["192.0.2.1"])).unwrap_err();
        assert_eq!(r.kind(), "bad_address");
        assert!(r.to_string().contains("`eu` PoP `fra1` has an unparsable IPv6"), "{r}");

        assert_eq!(parse_prefixes(4, "us", &s(&["10.1.7.7/16"])).unwrap().len(), 1);
        let r = parse_prefixes(4, "us", &s(&["10.2.0.0/33"])).unwrap_err();
        assert_eq!(r.kind(), "bad_prefix");
        assert!(
            r.to_string()
                .contains("`us` has an unparsable client prefix `10.2.0.0/33`"),
            "{r}"
        );
    }

    #[test]
    fn each_rejection_names_what_is_wrong() {
        let mut snapshot = sample(4);
        snapshot.regions[0].pops[1].weight = f64::NAN;
        let r = rejected(&snapshot);
        assert_eq!(r.kind(), "invalid_weight");
        assert!(r.to_string().contains("`eu` PoP `ams1` has weight NaN"), "{r}");

        let mut snapshot = sample(4);
        snapshot.regions[0].pops[0].weight = -1.0;
        assert_eq!(rejected(&snapshot).kind(), "invalid_weight");

        // Host bits are ignored, so 10.1.7.7/16 is eu's 10.1.0.0/16 again.
        let mut snapshot = sample(4);
        snapshot.regions[1].client_prefixes[0] = "10.1.7.7/16".parse().unwrap();
        let r = rejected(&snapshot);
        assert!(
            r.to_string().contains("10.1.0.0/16 is mapped to both `eu` and `us`"),
            "{r}"
        );

        let mut snapshot = sample(4);
        snapshot.regions[1].pops[0].ipv4.clear();
        let r = rejected(&snapshot);
        assert_eq!(r.kind(), "region_unservable");
        assert!(r.to_string().contains("region `us`"), "{r}");

        let mut snapshot = sample(4);
        snapshot.regions[1].pops[0].weight = 0.0;
        assert_eq!(rejected(&snapshot).kind(), "region_unservable");

        let mut snapshot = sample(4);
        for r in &mut snapshot.regions {
            for p in &mut r.pops {
                p.ipv4.clear();
                p.ipv6.clear();
            }
        }
        assert_eq!(
            rejected(&snapshot),
            PlanRejection::ServesNothing { version: 4 },
            "nothing to serve anywhere"
        );
        let mut snapshot = sample(4);
        snapshot.regions.clear();
        assert_eq!(rejected(&snapshot).kind(), "serves_nothing");

        let mut snapshot = sample(4);
        snapshot.default_region = "apac".into();
        assert_eq!(rejected(&snapshot).kind(), "unknown_default_region");

        let mut snapshot = sample(4);
        snapshot.regions[1].region = "eu".into();
        assert_eq!(rejected(&snapshot).kind(), "bad_region");

        let mut snapshot = sample(4);
        snapshot.regions[1].region.clear();
        assert_eq!(rejected(&snapshot).kind(), "bad_region");
    }

    #[test]
    fn the_cache_format_round_trips_with_addresses_as_text() {
        let snapshot = sample(9);
        let json = serde_json::to_string(&snapshot).unwrap();
        assert!(
            json.contains(r#""client_prefixes":["10.1.0.0/16","2001:db8:1::/48"]"#),
            "{json}"
        );
        assert!(json.contains(r#""ipv4":["192.0.2.1"]"#), "{json}");
        let back: PlanSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snapshot);
        // A cache written before addresses were typed (text, same shape) still loads.
        let old = r#"{"version":3,"regions":[{"region":"eu","client_prefixes":["10.1.2.3/16"],
            "pops":[{"pop":"fra1","weight":1.0,"ipv4":["192.0.2.1"]}]}]}"#;
        let back: PlanSnapshot = serde_json::from_str(old).unwrap();
        assert_eq!(
            validate(&back).unwrap().regions[0].prefixes[0].to_string(),
            "10.1.0.0/16"
        );
        // A cache written before epochs loads with neither; a new one keeps both.
        assert_eq!((back.epoch.as_str(), back.content_hash.as_str()), ("", ""));
        let served = validate(&snapshot).unwrap();
        assert_eq!((served.epoch.as_str(), served.content_hash.as_str()), ("e1", "h1"));
    }

    #[test]
    fn anycast_entries_round_trip_and_stay_out_of_dns_caches_when_empty() {
        let json = serde_json::to_string(&sample(9)).unwrap();
        assert!(!json.contains("anycast"), "{json}");
        let mut snapshot = sample(9);
        snapshot.anycast = vec![AnycastSnapshot {
            pop: "fra1".into(),
            prefix: "198.51.100.0/24".parse().unwrap(),
            action: AnycastAction::GracefulShutdown,
            prepend_count: 3,
        }];
        let json = serde_json::to_string(&snapshot).unwrap();
        assert!(
            json.contains(r#""anycast":[{"pop":"fra1","prefix":"198.51.100.0/24","action":"graceful_shutdown","prepend_count":3}]"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<PlanSnapshot>(&json).unwrap(), snapshot);
        // The DNS agent's validation ignores anycast entries.
        assert!(validate(&snapshot).is_ok());
    }
}
