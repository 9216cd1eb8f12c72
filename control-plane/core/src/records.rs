//! Records the control plane stores, serialised as JSON (readable with `etcdctl get`).

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
}

/// The weights one client region uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionWeights {
    pub region: String,
    pub pops: Vec<PopWeightRecord>,
    /// The region's client prefixes (for DNS agents' region mapping).
    #[serde(default)]
    pub client_prefixes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopWeightRecord {
    pub pop: String,
    pub weight: f64,
    pub ipv4: Vec<String>,
    pub ipv6: Vec<String>,
}

/// A PoP's state in a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopPlanState {
    pub pop: String,
    /// up, degraded, down, unknown, drained.
    pub state: String,
    pub capacity: f64,
    pub load: f64,
    pub utilisation: f64,
}

/// One PoP's announcement of one anycast prefix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnycastAnnouncement {
    pub pop: String,
    pub prefix: String,
    /// announce, prepend, graceful_shutdown, withdraw.
    pub action: String,
    pub prepend_count: u32,
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
    pub kind: String,
    pub connected_at_unix_ms: u64,
    pub applied_version: u64,
    pub nacked_version: u64,
    pub nack_reason: String,
    pub last_sent_version: u64,
}
