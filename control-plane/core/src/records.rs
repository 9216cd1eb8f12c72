//! Records the control plane stores, serialised as JSON (readable with `etcdctl get`).

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ids::ReplicaId;

/// One live control-plane replica, registered under its lease (so it disappears when
/// the replica dies).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaRecord {
    pub id: ReplicaId,
    pub grpc_address: String,
    pub admin_address: String,
    /// Seconds since the Unix epoch.
    pub started_at_unix: u64,
    pub software_version: String,
}

/// The value of the leader key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderRecord {
    pub id: ReplicaId,
    pub grpc_address: String,
}

/// The value of the leader heartbeat key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderHeartbeat {
    pub leader: ReplicaId,
    /// The fence (leader key create revision) the write was made under.
    pub fence: i64,
    pub at_unix_ms: u64,
}

/// The pointer to the current plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanPointer {
    pub version: u64,
}

/// A published steering plan, as stored (`plan/history/<version>`) and shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredPlan {
    /// Only ever goes up; assigned by [`crate::keys::Keys::plan_version`]'s writer.
    pub version: u64,
    pub created_at_unix_ms: u64,
    /// The leader that published it.
    pub published_by: String,
    /// The topology revision it was computed from.
    pub topology_revision: i64,
    pub dns_ttl_seconds: u32,
    pub regions: Vec<RegionWeights>,
    pub pops: Vec<PopPlanState>,
    pub anycast: Vec<AnycastAnnouncement>,
    /// Why this plan was published: verdicts, drains and rules involved.
    pub reasons: Vec<String>,
    /// Guardrails that fired while computing it, each naming its rule.
    pub guardrails: Vec<String>,
    /// Set when an operator restored an earlier version's content.
    #[serde(default)]
    pub restored_from: Option<u64>,
    /// The region for clients no prefix matches.
    #[serde(default)]
    pub default_region: Option<String>,
    /// The identity of the store it was published in ([`StoreEpoch::epoch`]); empty
    /// in plans published before epochs existed. Set by the publisher.
    #[serde(default)]
    pub epoch: String,
    /// [`crate::plan_hash::content_hash`] of what the plan steers; empty in plans
    /// published before hashes existed. Set by the publisher.
    #[serde(default)]
    pub content_hash: String,
}

/// The store's identity (`cluster/epoch`): created once with the store, never
/// rewritten. A store wiped and re-created gets a new one, so plan versions are only
/// comparable within one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreEpoch {
    /// 128 random bits as 32 lowercase hex digits.
    pub epoch: String,
    pub created_at_unix_ms: u64,
    /// The replica that created it, as its first leader.
    pub created_by: String,
}

/// The weights one client region uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionWeights {
    pub region: String,
    pub pops: Vec<PopWeightRecord>,
    /// The region's client prefixes (for DNS agents' region mapping).
    #[serde(default)]
    pub client_prefixes: Vec<IpNet>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopWeightRecord {
    pub pop: String,
    pub weight: f64,
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
}

/// A PoP's state in a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopPlanState {
    pub pop: String,
    /// up, degraded, down, unknown, drained.
    pub state: PopState,
    pub capacity: f64,
    pub load: f64,
    pub utilisation: f64,
}

/// One PoP's announcement of one anycast prefix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnycastAnnouncement {
    pub pop: String,
    pub prefix: IpNet,
    /// announce, prepend, graceful_shutdown, withdraw.
    pub action: AnycastAction,
    pub prepend_count: u32,
}

/// A change freeze: until `until_unix_ms`, changes other than remedies (drains,
/// automatic failover, rollbacks) within its scope are refused unless an admin
/// overrides it. The global freeze is stored at `intents/freeze`, a PoP's at
/// `intents/freezes/pop/<id>`, a client region's at `intents/freezes/region/<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreezeRecord {
    pub reason: String,
    pub requested_by: String,
    pub at_unix_ms: u64,
    pub until_unix_ms: u64,
    /// What is frozen; absent (as in records written before scoped freezes): all.
    #[serde(default, skip_serializing_if = "FreezeScope::is_global")]
    pub scope: FreezeScope,
}

/// What a freeze covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "target", rename_all = "snake_case")]
pub enum FreezeScope {
    /// Every change anywhere.
    #[default]
    Global,
    /// Changes to one PoP, and changes that touch every PoP (topology applies,
    /// plan restores).
    Pop(String),
    /// Changes that touch every region (topology applies, plan restores).
    Region(String),
}

impl FreezeScope {
    pub fn is_global(&self) -> bool {
        matches!(self, FreezeScope::Global)
    }

    /// `global`, `pop` or `region`.
    pub fn kind(&self) -> &'static str {
        match self {
            FreezeScope::Global => "global",
            FreezeScope::Pop(_) => "pop",
            FreezeScope::Region(_) => "region",
        }
    }

    /// The PoP or region id; empty for the global freeze.
    pub fn target(&self) -> &str {
        match self {
            FreezeScope::Global => "",
            FreezeScope::Pop(id) | FreezeScope::Region(id) => id,
        }
    }
}

impl std::fmt::Display for FreezeScope {
    /// `global`, `PoP fra1`, `region eu-west`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FreezeScope::Global => f.write_str("global"),
            FreezeScope::Pop(id) => write!(f, "PoP {id}"),
            FreezeScope::Region(id) => write!(f, "region {id}"),
        }
    }
}

/// An operator's drain of a PoP (`intents/drains/<pop>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainIntent {
    pub pop: String,
    pub reason: String,
    pub requested_by: String,
    pub at_unix_ms: u64,
    /// The drain was forced past a guardrail; the rule it overrode.
    pub forced_past: Option<String>,
    /// A rung of a drain ladder: the share of its weight the PoP keeps (1–99).
    /// Absent (or 0): fully drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_percent: Option<u8>,
    /// Only these client regions stop being served from the PoP; empty: all. A
    /// per-region drain leaves the PoP in service for every other region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// A rung of a drain ladder's Anycast side (issue [9]): what the PoP's prefixes
    /// announce meanwhile (prepended, GRACEFUL_SHUTDOWN; a withdraw comes with the
    /// full drain). `None`: announced as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anycast: Option<AnycastStep>,
}

/// What a PoP's Anycast prefixes announce on one rung of a drain ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnycastStep {
    pub action: AnycastAction,
    /// AS-path prepends with `action` = prepend.
    #[serde(default)]
    pub prepend: u32,
}

impl AnycastStep {
    pub fn describe(&self) -> String {
        match self.action {
            AnycastAction::Prepend => format!("prepend ×{}", self.prepend),
            AnycastAction::GracefulShutdown => "GRACEFUL_SHUTDOWN".into(),
            AnycastAction::Withdraw => "withdraw".into(),
            AnycastAction::Announce => "announce".into(),
        }
    }
}

impl DrainIntent {
    /// The share of its weight the PoP keeps, when partly drained.
    pub fn partial(&self) -> Option<f64> {
        self.weight_percent
            .filter(|w| (1..100).contains(w))
            .map(|w| f64::from(w) / 100.0)
    }
}

/// An operator's capacity override of a PoP (`intents/capacity/<pop>`): steering
/// plans with `capacity` instead of the topology's, until `until_unix_ms` when set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityOverride {
    pub pop: String,
    pub capacity: f64,
    pub reason: String,
    pub requested_by: String,
    pub at_unix_ms: u64,
    /// A temporary override ends here; `None`: until reverted or replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_unix_ms: Option<u64>,
}

impl CapacityOverride {
    /// Whether it applies at `now_ms`.
    pub fn in_force(&self, now_ms: u64) -> bool {
        self.until_unix_ms.is_none_or(|until| now_ms < until)
    }
}

/// A pin: steering publishes nothing while it exists (set by a plan restore).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanPin {
    pub version: u64,
    pub reason: String,
    pub requested_by: String,
    pub at_unix_ms: u64,
}

/// A canary wave's hold on the fleet (`plan/current/fleet-hold`, issue [8]): while it
/// exists, agents outside `canary` are served plan `fleet_version` (the plan before
/// the change's step) instead of the newest. Written with the step's intent by the
/// change driver, deleted when the wave passes, and released at once by an urgent
/// plan (a PoP newly DOWN). A rollback keeps the fleet held until a plan newer than
/// `release_after` (the one computed from the restored intents) exists, so the
/// fleet never sees the rolled-back step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetHold {
    /// The change whose step the canary wave is trying.
    pub change: String,
    pub fleet_version: u64,
    pub canary: Vec<String>,
    pub since_unix_ms: u64,
    /// Set by a rollback: the hold ends once a version above this one is published
    /// (or after a short grace, when the restored intents change nothing).
    #[serde(default)]
    pub release_after: Option<u64>,
}

impl FleetHold {
    /// Whether `agent` must be served the held plan while the newest is `latest`.
    pub fn holds(&self, agent: &str, latest: u64) -> bool {
        if self.release_after.is_some_and(|v| latest > v) {
            return false;
        }
        !self.canary.iter().any(|a| a == agent)
    }
}

/// The agents one replica has connected (`agents/<replica>`), refreshed while it lives.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentTable {
    pub replica: String,
    pub agents: Vec<AgentRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRecord {
    pub agent_id: String,
    /// dns or anycast.
    pub kind: AgentKind,
    pub connected_at_unix_ms: u64,
    pub applied_version: u64,
    pub nacked_version: u64,
    pub nack_reason: String,
    pub last_sent_version: u64,
    /// An Anycast agent's last report: per prefix, desired and actual (issue [9]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anycast: Vec<AnycastPrefixStatus>,
}

/// One prefix as an Anycast agent reports it: what the plan asks for and what its
/// BGP speaker announces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnycastPrefixStatus {
    pub prefix: String,
    pub desired: AnycastAction,
    pub desired_prepend: u32,
    pub actual: AnycastAction,
    pub actual_prepend: u32,
    /// Why actual differs from desired; empty when they agree.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    pub plan_version: u64,
}

impl AnycastPrefixStatus {
    /// Whether the speaker announces what the plan asks for.
    pub fn in_sync(&self) -> bool {
        self.desired == self.actual
            && (self.desired != AnycastAction::Prepend || self.desired_prepend == self.actual_prepend)
    }
}

/// A PoP's state in a plan: its health verdict, or drained by an operator. Stored as
/// its snake_case name; an unknown name fails to decode (never a silent default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PopState {
    Unknown,
    Up,
    Degraded,
    Down,
    Drained,
}

impl PopState {
    pub fn as_str(self) -> &'static str {
        match self {
            PopState::Unknown => "unknown",
            PopState::Up => "up",
            PopState::Degraded => "degraded",
            PopState::Down => "down",
            PopState::Drained => "drained",
        }
    }
}

impl std::fmt::Display for PopState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the Anycast agent of a PoP does with one prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnycastAction {
    Announce,
    /// Announce with the AS path prepended `prepend_count` times.
    Prepend,
    /// Announce with the GRACEFUL_SHUTDOWN community (65535:0).
    GracefulShutdown,
    Withdraw,
}

impl AnycastAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AnycastAction::Announce => "announce",
            AnycastAction::Prepend => "prepend",
            AnycastAction::GracefulShutdown => "graceful_shutdown",
            AnycastAction::Withdraw => "withdraw",
        }
    }
}

impl std::fmt::Display for AnycastAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which kind of edge agent subscribed to plans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentKind {
    Dns,
    Anycast,
}

impl AgentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Dns => "dns",
            AgentKind::Anycast => "anycast",
        }
    }
}

#[cfg(test)]
mod typed_tests {
    use super::*;

    #[test]
    fn stored_names_round_trip_and_unknown_names_are_errors() {
        for s in [
            PopState::Unknown,
            PopState::Up,
            PopState::Degraded,
            PopState::Down,
            PopState::Drained,
        ] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<PopState>(&json).unwrap(), s);
        }
        for a in [
            AnycastAction::Announce,
            AnycastAction::Prepend,
            AnycastAction::GracefulShutdown,
            AnycastAction::Withdraw,
        ] {
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.as_str()));
            assert_eq!(serde_json::from_str::<AnycastAction>(&json).unwrap(), a);
        }
        assert!(serde_json::from_str::<AnycastAction>("\"teleport\"").is_err());
        assert!(serde_json::from_str::<PopState>("\"sideways\"").is_err());
        assert!(serde_json::from_str::<AgentKind>("\"bgp\"").is_err());
        // Plans stored before the types existed decode unchanged.
        let old = r#"{"pop":"fra1","prefix":"192.0.2.0/24","action":"withdraw","prepend_count":0}"#;
        let a: AnycastAnnouncement = serde_json::from_str(old).unwrap();
        assert_eq!(a.action, AnycastAction::Withdraw);
        assert_eq!(a.prefix, "192.0.2.0/24".parse::<IpNet>().unwrap());
        let w: PopWeightRecord =
            serde_json::from_str(r#"{"pop":"fra1","weight":1.0,"ipv4":["192.0.2.1"],"ipv6":["2001:db8::1"]}"#).unwrap();
        assert_eq!(w.ipv4, vec![Ipv4Addr::new(192, 0, 2, 1)]);
        // A stored address that does not parse is an error, never silently dropped.
        assert!(serde_json::from_str::<PopWeightRecord>(
            r#"{"pop":"x","weight":1.0,"ipv4":["192.0.2.300"],"ipv6":[]}"#
        )
        .is_err());
    }
}
