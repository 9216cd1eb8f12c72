//! The Meridian control plane: one replica of the highly-available service that owns
//! durable state, elects a leader through the store, and serves the gRPC API.
//!
//! [`run`] takes already-bound listeners and a cancellation token, so tests run many
//! replicas in one process on port 0; `main.rs` only parses flags and binds.
//!
//! What a replica does:
//! * opens the store (etcd when endpoints are configured, else embedded);
//! * campaigns for leadership ([`meridian_store::election`]) and registers itself in
//!   the replica registry under its lease;
//! * as leader, writes a fenced heartbeat on every lease renewal, which proves it
//!   still holds the fence and gives operators a "leader last wrote at" signal;
//! * ingests probe results into its health view (`health`) and, as leader, ticks the
//!   pure steering driver of `meridian-engine` and publishes plans (`steering`);
//! * carries out operator mutations through the operations layer (`ops`) and records
//!   every event in its event log (`events`);
//! * watches store health, which drives `/ready` and the gRPC health service;
//! * serves `meridian.v1` (RPCs of later issues answer UNIMPLEMENTED naming the
//!   issue), gRPC reflection and the standard health service.
//!
//! Decision: the server is a thin shell. Every decision is a pure function in
//! `meridian-health`, `meridian-steering` or `meridian-engine`; this crate feeds them
//! inputs and carries out their outputs. Rejected: deciding inside the handlers and
//! loops, where it could only be tested end to end.
//!
//! Architecture invariant: every leader-only write goes through
//! [`meridian_store::election::fenced_txn`].

pub mod authz;
mod changes;
pub mod config;
mod convert;
pub mod events;
mod grpc;
pub mod health;
pub mod limits;
pub mod ops;
mod plan_api;
pub mod plans;
mod probe_api;
mod replica;
pub mod steering;
pub mod topology;

/// The error and its sources, joined, for one-line reports and status messages.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

pub use replica::{open_store, run, run_with_store, RunError};
