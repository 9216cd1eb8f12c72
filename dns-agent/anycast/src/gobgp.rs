//! The GoBGP backend: `gobgpd`'s gRPC API (package `apipb`, generated at build time
//! from Debian's protos). Routes are added to the global RIB with `AddPath`, which
//! answers a UUID; the agent keeps the newest UUID per prefix and deletes by it, and
//! reads `ListPath` back for what is really there, so a path deleted or changed by
//! hand is seen and corrected by the next reconcile.
//!
//! Path attributes: ORIGIN IGP; an AS_PATH of our AS repeated `prepends` times (GoBGP
//! prepends our AS once more when it sends a locally originated path to an eBGP
//! peer, so the upstream sees `prepends + 1` copies); an explicit next hop from the
//! configuration (GoBGP treats an UPDATE with a loopback next hop as a withdraw, and
//! keeps a local path's next hop when it is set); the GRACEFUL_SHUTDOWN community
//! (65535:0) when asked. IPv6 prefixes go in an MP_REACH_NLRI attribute with the
//! IPv6 next hop, and need `next_hop_v6`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Duration;

use ipnet::IpNet;
use prost::Message;
use prost_types::Any;
use tonic::transport::Channel;

use crate::backend::{Backend, BackendError};
use crate::core::{Announced, Route, GRACEFUL_SHUTDOWN};

/// GoBGP's API (`apipb`), client only.
#[allow(clippy::all, missing_docs)]
pub mod apipb {
    tonic::include_proto!("apipb");
}

use apipb::gobgp_api_client::GobgpApiClient;

/// How to reach the speaker and what to announce with.
#[derive(Debug, Clone)]
pub struct GobgpSettings {
    /// The API address, e.g. `127.0.0.1:50051`.
    pub api: String,
    /// The next hop of IPv4 routes (never a loopback address).
    pub next_hop: Ipv4Addr,
    /// The next hop of IPv6 routes; IPv6 prefixes are refused without one.
    pub next_hop_v6: Option<Ipv6Addr>,
    /// Our AS, repeated on the AS path for prepends.
    pub local_as: u32,
    /// Each API call gives up after this.
    pub timeout: Duration,
}

/// A `gobgpd` driven through its API.
#[derive(Debug)]
pub struct GobgpBackend {
    settings: GobgpSettings,
    client: GobgpApiClient<Channel>,
    /// The UUID `AddPath` gave for each prefix's newest path.
    uuids: Mutex<HashMap<IpNet, Vec<u8>>>,
}

/// One path of a GoBGP RIB, decoded: what tests and `list` read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RibPath {
    pub prefix: IpNet,
    /// The peer it came from; empty for a locally originated path.
    pub neighbor: String,
    pub best: bool,
    pub as_path: Vec<u32>,
    pub communities: Vec<u32>,
    pub next_hop: String,
    pub local_pref: Option<u32>,
}

impl RibPath {
    /// Originated by this speaker (through the API or `gobgp global rib add`).
    pub fn is_local(&self) -> bool {
        self.neighbor.is_empty()
    }
}

impl GobgpBackend {
    /// A client for the API at `settings.api`; connects lazily, so a speaker that
    /// starts after the agent is fine.
    pub fn new(settings: GobgpSettings) -> Result<Self, BackendError> {
        let url = format!("http://{}", settings.api);
        let channel = tonic::transport::Endpoint::from_shared(url)
            .map_err(|e| BackendError::Unreachable {
                api: settings.api.clone(),
                message: e.to_string(),
            })?
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(GobgpBackend {
            client: GobgpApiClient::new(channel),
            settings,
            uuids: Mutex::new(HashMap::new()),
        })
    }

    /// Every path of the speaker's global RIB (IPv4 and IPv6 unicast), decoded.
    pub async fn rib(&self) -> Result<Vec<RibPath>, BackendError> {
        let mut out = Vec::new();
        for v6 in [false, true] {
            let request = apipb::ListPathRequest {
                table_type: apipb::TableType::Global as i32,
                family: Some(family(v6)),
                ..Default::default()
            };
            let mut stream = self
                .client
                .clone()
                .list_path(request)
                .await
                .map_err(|s| self.status_error("ListPath", s))?
                .into_inner();
            while let Some(item) = stream.message().await.map_err(|s| self.status_error("ListPath", s))? {
                let Some(dest) = item.destination else { continue };
                let prefix: IpNet = dest
                    .prefix
                    .parse()
                    .map_err(|_| BackendError::Unexpected(format!("ListPath prefix `{}`", dest.prefix)))?;
                for path in dest.paths {
                    out.push(decode_path(prefix, &path)?);
                }
            }
        }
        Ok(out)
    }

    fn uuids(&self) -> std::sync::MutexGuard<'_, HashMap<IpNet, Vec<u8>>> {
        self.uuids.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn status_error(&self, what: &str, status: tonic::Status) -> BackendError {
        if matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded) {
            BackendError::Unreachable {
                api: self.settings.api.clone(),
                message: format!("{what}: {}", status.message()),
            }
        } else {
            BackendError::Refused {
                what: what.to_string(),
                status: Box::new(status),
            }
        }
    }

    /// The path announcing `prefix` with `route`.
    fn path(&self, prefix: IpNet, route: Route) -> Result<apipb::Path, BackendError> {
        let v6 = matches!(prefix, IpNet::V6(_));
        let nlri = any(
            "IPAddressPrefix",
            &apipb::IpAddressPrefix {
                prefix_len: u32::from(prefix.prefix_len()),
                prefix: prefix.network().to_string(),
            },
        );
        let mut pattrs = vec![any("OriginAttribute", &apipb::OriginAttribute { origin: 0 })];
        if route.prepends > 0 {
            pattrs.push(any(
                "AsPathAttribute",
                &apipb::AsPathAttribute {
                    segments: vec![apipb::AsSegment {
                        r#type: apipb::as_segment::Type::AsSequence as i32,
                        numbers: vec![self.settings.local_as; route.prepends as usize],
                    }],
                },
            ));
        }
        if v6 {
            let Some(next_hop) = self.settings.next_hop_v6 else {
                return Err(BackendError::Unsupported(format!(
                    "{prefix} is IPv6 and the speaker has no `next_hop_v6`"
                )));
            };
            pattrs.push(any(
                "MpReachNLRIAttribute",
                &apipb::MpReachNlriAttribute {
                    family: Some(family(true)),
                    next_hops: vec![next_hop.to_string()],
                    nlris: vec![nlri.clone()],
                },
            ));
        } else {
            pattrs.push(any(
                "NextHopAttribute",
                &apipb::NextHopAttribute {
                    next_hop: self.settings.next_hop.to_string(),
                },
            ));
        }
        if route.graceful_shutdown {
            pattrs.push(any(
                "CommunitiesAttribute",
                &apipb::CommunitiesAttribute {
                    communities: vec![GRACEFUL_SHUTDOWN],
                },
            ));
        }
        Ok(apipb::Path {
            nlri: Some(nlri),
            pattrs,
            family: Some(family(v6)),
            ..Default::default()
        })
    }
}

#[async_trait::async_trait]
impl Backend for GobgpBackend {
    async fn list(&self) -> Result<Announced, BackendError> {
        Ok(self
            .rib()
            .await?
            .into_iter()
            .filter(RibPath::is_local)
            .map(|p| {
                let route = Route {
                    prepends: u32::try_from(p.as_path.len()).unwrap_or(u32::MAX),
                    graceful_shutdown: p.communities.contains(&GRACEFUL_SHUTDOWN),
                };
                (p.prefix, route)
            })
            .collect())
    }

    async fn announce(&self, prefix: IpNet, route: Route) -> Result<(), BackendError> {
        let path = self.path(prefix, route)?;
        let request = apipb::AddPathRequest {
            table_type: apipb::TableType::Global as i32,
            path: Some(path),
            ..Default::default()
        };
        let answer = self
            .client
            .clone()
            .add_path(request)
            .await
            .map_err(|s| self.status_error(&format!("AddPath {prefix}"), s))?
            .into_inner();
        // A new path of ours for the prefix replaces the previous one in GoBGP's
        // table (same source, same NLRI), so only the newest UUID is kept.
        self.uuids().insert(prefix, answer.uuid);
        Ok(())
    }

    async fn withdraw(&self, prefix: IpNet) -> Result<(), BackendError> {
        let v6 = matches!(prefix, IpNet::V6(_));
        let uuid = self.uuids().remove(&prefix);
        if let Some(uuid) = uuid {
            let request = apipb::DeletePathRequest {
                table_type: apipb::TableType::Global as i32,
                family: Some(family(v6)),
                uuid,
                ..Default::default()
            };
            match self.client.clone().delete_path(request).await {
                Ok(_) => return Ok(()),
                // Not known any more (the path was replaced or deleted by hand, or
                // gobgpd restarted): delete by prefix below.
                Err(status) => {
                    tracing::debug!(%prefix, error = %status, "DeletePath by UUID failed; deleting by prefix")
                }
            }
        }
        let request = apipb::DeletePathRequest {
            table_type: apipb::TableType::Global as i32,
            family: Some(family(v6)),
            path: Some(self.path(prefix, Route::default())?),
            ..Default::default()
        };
        self.client
            .clone()
            .delete_path(request)
            .await
            .map_err(|s| self.status_error(&format!("DeletePath {prefix}"), s))?;
        Ok(())
    }
}

fn family(v6: bool) -> apipb::Family {
    apipb::Family {
        afi: if v6 {
            apipb::family::Afi::Ip6
        } else {
            apipb::family::Afi::Ip
        } as i32,
        safi: apipb::family::Safi::Unicast as i32,
    }
}

fn any(name: &str, message: &impl Message) -> Any {
    Any {
        type_url: format!("type.googleapis.com/apipb.{name}"),
        value: message.encode_to_vec(),
    }
}

fn decode_path(prefix: IpNet, path: &apipb::Path) -> Result<RibPath, BackendError> {
    let mut out = RibPath {
        prefix,
        // GoBGP shows a local path's source as "<nil>" (or nothing).
        neighbor: match path.neighbor_ip.as_str() {
            "<nil>" | "0.0.0.0" | "::" => String::new(),
            other => other.to_string(),
        },
        best: path.best,
        as_path: Vec::new(),
        communities: Vec::new(),
        next_hop: String::new(),
        local_pref: None,
    };
    let bad = |what: &str, e: prost::DecodeError| BackendError::Unexpected(format!("{what} of {prefix}: {e}"));
    for attr in &path.pattrs {
        let name = attr.type_url.rsplit('/').next().unwrap_or_default();
        match name {
            "apipb.AsPathAttribute" => {
                let a = apipb::AsPathAttribute::decode(attr.value.as_slice()).map_err(|e| bad("AS_PATH", e))?;
                out.as_path = a.segments.into_iter().flat_map(|s| s.numbers).collect();
            }
            "apipb.CommunitiesAttribute" => {
                let c =
                    apipb::CommunitiesAttribute::decode(attr.value.as_slice()).map_err(|e| bad("COMMUNITIES", e))?;
                out.communities = c.communities;
            }
            "apipb.NextHopAttribute" => {
                let n = apipb::NextHopAttribute::decode(attr.value.as_slice()).map_err(|e| bad("NEXT_HOP", e))?;
                out.next_hop = n.next_hop;
            }
            "apipb.MpReachNLRIAttribute" => {
                let m =
                    apipb::MpReachNlriAttribute::decode(attr.value.as_slice()).map_err(|e| bad("MP_REACH_NLRI", e))?;
                if let Some(n) = m.next_hops.into_iter().next() {
                    out.next_hop = n;
                }
            }
            "apipb.LocalPrefAttribute" => {
                let l = apipb::LocalPrefAttribute::decode(attr.value.as_slice()).map_err(|e| bad("LOCAL_PREF", e))?;
                out.local_pref = Some(l.local_pref);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Whether `addr` may be announced as a next hop (GoBGP treats a loopback next hop
/// as a withdraw; an unspecified one is meaningless).
pub fn usable_next_hop(addr: IpAddr) -> bool {
    !(addr.is_loopback() || addr.is_unspecified() || addr.is_multicast())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> GobgpBackend {
        GobgpBackend::new(GobgpSettings {
            api: "127.0.0.1:1".into(),
            next_hop: "192.0.2.10".parse().unwrap(),
            next_hop_v6: None,
            local_as: 65001,
            timeout: Duration::from_secs(1),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn paths_carry_prepends_the_next_hop_and_gshut() {
        let b = backend();
        let p = b
            .path(
                "198.51.100.0/24".parse().unwrap(),
                Route {
                    prepends: 3,
                    graceful_shutdown: true,
                },
            )
            .unwrap();
        let decoded = decode_path("198.51.100.0/24".parse().unwrap(), &p).unwrap();
        assert_eq!(decoded.as_path, [65001, 65001, 65001]);
        assert_eq!(decoded.communities, [GRACEFUL_SHUTDOWN]);
        assert_eq!(decoded.next_hop, "192.0.2.10");
        assert!(decoded.is_local());
        let plain = b.path("198.51.100.0/24".parse().unwrap(), Route::default()).unwrap();
        assert_eq!(plain.pattrs.len(), 2, "origin and next hop only");
        let nlri = apipb::IpAddressPrefix::decode(plain.nlri.unwrap().value.as_slice()).unwrap();
        assert_eq!((nlri.prefix.as_str(), nlri.prefix_len), ("198.51.100.0", 24));
        let err = b.path("2001:db8::/48".parse().unwrap(), Route::default()).unwrap_err();
        assert!(err.to_string().contains("next_hop_v6"), "{err}");
    }

    #[test]
    fn loopback_next_hops_are_unusable() {
        assert!(!usable_next_hop("127.0.0.1".parse().unwrap()));
        assert!(!usable_next_hop("0.0.0.0".parse().unwrap()));
        assert!(!usable_next_hop("::1".parse().unwrap()));
        assert!(usable_next_hop("192.0.2.10".parse().unwrap()));
    }
}
