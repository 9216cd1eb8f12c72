//! Meridian's pure domain core: identifiers with their validation rules, who did
//! something ([`Actor`]), the layout of keys in the store, the records the control
//! plane keeps there (typed: states and actions are enums, addresses are `IpAddr`),
//! the topology document, probe outcomes, the slow-start machine and the one
//! reconnect backoff.
//!
//! This crate does no I/O and depends on no async runtime, gRPC or etcd crate, so
//! everything in it is testable with plain values; time is an argument. Health
//! verdicts, steering and the decision engine live in the sibling pure crates
//! (`meridian-health`, `meridian-steering`, `meridian-engine`).
//!
//! Decision: identifiers are validated newtypes (`ReplicaId`) rather than bare
//! strings, because they end up inside store keys, where a `/` or an empty id would
//! silently alias another record.

pub mod actor;
pub mod backoff;
pub mod ids;
pub mod keys;
pub mod plan_hash;
pub mod probe;
pub mod records;
pub mod slow_start;
pub mod topology;

pub use actor::{Actor, Identity};
pub use backoff::Backoff;
pub use ids::{IdError, ReplicaId};
