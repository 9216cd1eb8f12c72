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
