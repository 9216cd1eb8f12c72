//! Meridian's pure domain core: identifiers with their validation rules, the layout of
//! keys in the store, and the records the control plane keeps there.
//!
//! This crate does no I/O and depends on no async runtime, gRPC or etcd crate, so
//! everything in it is testable with plain values. Later issues add the health
//! verdicts, the steering engine and the change state machine here (or in sibling
//! pure crates), with time passed in as an argument.
//!
//! Decision: identifiers are validated newtypes (`ReplicaId`) rather than bare
//! strings, because they end up inside store keys, where a `/` or an empty id would
//! silently alias another record.

pub mod actor;
pub mod backoff;
pub mod ids;
pub mod keys;
pub mod probe;
pub mod records;
pub mod slow_start;
pub mod topology;

pub use actor::{Actor, Identity};
pub use backoff::Backoff;
pub use ids::{IdError, ReplicaId};
