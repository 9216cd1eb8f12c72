//! Meridian's durable state: one [`Store`] trait with two backends, and leader
//! election with fencing built on top of it.
//!
//! * [`etcd::EtcdStore`] talks to a real etcd cluster through `etcd-client`: the
//!   source of truth in production.
//! * [`embedded::EmbeddedStore`] is an in-process store with the same semantics
//!   (revisions, MVCC watches from a revision, compaction, leases whose expiry deletes
//!   keys), persisted to a data directory. It is the default on a single machine.
//!
//! The trait is deliberately shaped like etcd's KV/Watch/Lease API (keys, revisions,
//! compare-and-swap transactions) rather than a generic key-value interface: fencing
//! needs `compare(create_revision(leader_key) == fence)` inside the same transaction
//! as the write, and a lowest-common-denominator API could not express that.
//!
//! Leader election ([`election`]) is written once, against the trait, instead of
//! using etcd's own election API: both backends then share one implementation and
//! one set of tests, and the fence is simply the leader key's create revision.
//!
//! Written once for both backends: the request validator ([`txn::validate`]: both
//! refuse the same malformed transactions, the empty `DeletePrefix` included) and the
//! prefix follower ([`follow::Follower`]: list, watch, relist after a backoff) that
//! every replica loop uses instead of its own. The conformance suite both backends
//! must pass (`conformance`) is behind the `conformance` feature, which only
//! dev-dependencies enable, so production builds do not compile it.
//!
//! Architecture invariant: nothing outside this crate knows which backend it runs on,
//! except for display (`BackendKind`).

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod election;
pub mod embedded;
pub mod etcd;
pub mod follow;
pub mod txn;
mod types;

pub use types::*;

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;

/// A stream of watch batches; ends only when the store shuts down or the watch fails.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchBatch, StoreError>> + Send>>;

/// What the control plane needs from its durable store.
///
/// Keys are UTF-8 strings (all Meridian keys are), values are bytes. Every mutation
/// bumps the store-wide revision by one (a transaction bumps it once, however many
/// operations it holds, and not at all if it only reads).
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is, for status output and metrics labels.
    fn backend(&self) -> BackendKind;

    /// Reads one key at the current revision.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Reads every key starting with `prefix`, sorted by key, and the revision the
    /// read was taken at (use `revision + 1` to watch from there on).
    async fn range(&self, prefix: &str) -> Result<RangeResponse, StoreError>;

    /// Writes `key`, optionally attached to a lease. Returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<Revision, StoreError>;

    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    async fn delete(&self, key: &str) -> Result<u64, StoreError>;

    /// Deletes every key starting with `prefix`; returns how many were deleted.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError>;

    /// Runs a transaction atomically: if every compare holds, the `success` ops run,
    /// else the `failure` ops.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError>;

    /// Watches every key starting with `prefix`, from `start_revision` (inclusive) or,
    /// when `None`, from the next revision on. Events arrive in revision order, each
    /// revision at most once. A start revision that was compacted away fails with
    /// [`StoreError::Compacted`]; callers re-list (see [`list_and_watch`]).
    async fn watch_prefix(&self, prefix: &str, start_revision: Option<Revision>) -> Result<WatchStream, StoreError>;

    /// Grants a lease with the given time to live.
    async fn lease_grant(&self, ttl: Duration) -> Result<Lease, StoreError>;

    /// Refreshes a lease; returns its new remaining time to live. An expired or
    /// revoked lease fails with [`StoreError::LeaseNotFound`].
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError>;

    /// Revokes a lease, deleting every key attached to it.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Discards history before `revision`; watches from earlier revisions then fail
    /// with [`StoreError::Compacted`].
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// Checks that the store can serve requests now.
    async fn health(&self) -> StoreHealth;
}

/// Reads a prefix and returns its contents with a watch that continues exactly after
/// the read, so no change between the two is missed.
pub async fn list_and_watch(store: &dyn Store, prefix: &str) -> Result<(RangeResponse, WatchStream), StoreError> {
    let listed = store.range(prefix).await?;
    let watch = store.watch_prefix(prefix, Some(listed.revision + 1)).await?;
    Ok((listed, watch))
}
