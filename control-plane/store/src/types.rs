//! The store's value types: keys and revisions, transactions, watch events, leases,
//! errors. They mirror etcd's model so both backends can be exact.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A store-wide revision: every mutation increases it by one. Starts at 1 for an
/// empty store (as in etcd), so 0 can mean "no such key" in compares.
pub type Revision = i64;

/// A lease handle.
pub type LeaseId = i64;

/// Which backend a store is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Embedded,
    Etcd,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Embedded => "embedded",
            BackendKind::Etcd => "etcd",
        })
    }
}

/// One key with its value and metadata, as etcd reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the put that created this incarnation of the key.
    pub create_revision: Revision,
    /// Revision of the last put to this key.
    pub mod_revision: Revision,
    /// Number of puts since creation (1 after the first put).
    pub version: i64,
    /// The lease this key is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// A prefix read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// The store revision the read was taken at.
    pub revision: Revision,
}

/// How a compare relates the stored field to the given value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// One condition of a transaction. For a key that does not exist, its create and mod
/// revisions and its version are 0 and a value compare fails (as in etcd).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    CreateRevision {
        key: String,
        op: CompareOp,
        revision: Revision,
    },
    ModRevision {
        key: String,
        op: CompareOp,
        revision: Revision,
    },
    Version {
        key: String,
        op: CompareOp,
        version: i64,
    },
    Value {
        key: String,
        op: CompareOp,
        value: Vec<u8>,
    },
}

impl Compare {
    /// The key is absent.
    pub fn absent(key: impl Into<String>) -> Self {
        Compare::CreateRevision {
            key: key.into(),
            op: CompareOp::Equal,
            revision: 0,
        }
    }

    /// The key's create revision equals `revision`: the fence compare.
    pub fn created_at(key: impl Into<String>, revision: Revision) -> Self {
        Compare::CreateRevision {
            key: key.into(),
            op: CompareOp::Equal,
            revision,
        }
    }

    /// The key was last modified at `revision` (0: absent).
    pub fn modified_at(key: impl Into<String>, revision: Revision) -> Self {
        Compare::ModRevision {
            key: key.into(),
            op: CompareOp::Equal,
            revision,
        }
    }

    /// The key holds exactly `value`.
    pub fn value_is(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Compare::Value {
            key: key.into(),
            op: CompareOp::Equal,
            value: value.into(),
        }
    }

    /// The key this compare reads.
    pub fn key(&self) -> &str {
        match self {
            Compare::CreateRevision { key, .. }
            | Compare::ModRevision { key, .. }
            | Compare::Version { key, .. }
            | Compare::Value { key, .. } => key,
        }
    }
}

/// One operation inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
    DeletePrefix {
        prefix: String,
    },
    Get {
        key: String,
    },
}

impl TxnOp {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }

    pub fn put_with_lease(key: impl Into<String>, value: impl Into<Vec<u8>>, lease: LeaseId) -> Self {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        }
    }

    pub fn delete(key: impl Into<String>) -> Self {
        TxnOp::Delete { key: key.into() }
    }

    pub fn get(key: impl Into<String>) -> Self {
        TxnOp::Get { key: key.into() }
    }
}

/// A compare-and-swap transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }

    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }

    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }
}

/// The result of one transaction operation, in the order the ops were given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOpResponse {
    Put,
    Delete { deleted: u64 },
    Get(Option<KeyValue>),
}

/// The result of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every compare held (and so the `success` branch ran).
    pub succeeded: bool,
    /// The store revision after the transaction.
    pub revision: Revision,
    pub responses: Vec<TxnOpResponse>,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A put: the key's new state.
    Put(KeyValue),
    /// A delete (explicit, by prefix, or by lease expiry) at `mod_revision`.
    Delete { key: String, mod_revision: Revision },
}

impl WatchEvent {
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// The events of one or more revisions, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchBatch {
    pub events: Vec<WatchEvent>,
}

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    pub ttl: Duration,
}

/// What a health check saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreHealth {
    pub backend: BackendKind,
    pub healthy: bool,
    /// Human-readable: the error, or which endpoints answered.
    pub detail: String,
    /// The store revision, when the check could read it.
    pub revision: Option<Revision>,
    /// Endpoints (etcd) or the data directory (embedded).
    pub endpoints: Vec<String>,
}

/// Everything that can go wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached (after the bounded retries, for etcd).
    #[error("store unavailable at {endpoints}")]
    Unavailable {
        endpoints: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A watch asked for history that compaction discarded.
    #[error("revision {requested} has been compacted (history starts at {compact_revision}); re-list and watch again")]
    Compacted {
        requested: Revision,
        compact_revision: Revision,
    },
    /// The lease expired or was revoked.
    #[error("lease {0:x} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    /// A leader-only write was rejected because this replica no longer holds the
    /// leader key it was elected with (rule: leader fence).
    #[error("fenced write rejected by rule `leader-fence`: leader key {key} is no longer at create revision {fence}")]
    FenceLost { key: String, fence: Revision },
    /// The request itself was invalid (empty key, bad TTL, future revision, ...).
    #[error("invalid store request: {0}")]
    InvalidRequest(String),
    /// Local persistence failed (embedded backend).
    #[error("store persistence failed at {path}")]
    Persistence {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The data directory holds state this version cannot read.
    #[error("store data at {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    /// Any other backend error.
    #[error("store backend error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Whether retrying the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// A leader's fence: the leader key and the create revision it was elected with.
/// A write made under a fence lands only while the leader key still has that
/// create revision (see [`crate::election::fenced_txn`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub key: String,
    pub revision: Revision,
}

impl Fence {
    /// The compare that guards every leader-only write.
    pub fn compare(&self) -> Compare {
        Compare::created_at(self.key.clone(), self.revision)
    }
}
