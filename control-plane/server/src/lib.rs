//! The Meridian control plane: one replica of the highly-available service that owns
//! durable state, elects a leader through the store, and serves the gRPC API.
//!
//! [`run`] takes already-bound listeners and a cancellation token, so tests run many
//! replicas in one process on port 0; `main.rs` only parses flags and binds.
//!
//! What a replica does today (later issues add health, steering and changes):
//! * opens the store (etcd when endpoints are configured, else embedded);
//! * campaigns for leadership ([`meridian_store::election`]) and registers itself in
//!   the replica registry under its lease;
//! * as leader, writes a fenced heartbeat on every lease renewal, which proves it
//!   still holds the fence and gives operators a "leader last wrote at" signal;
//! * watches store health, which drives `/ready` and the gRPC health service;
//! * serves `meridian.v1` (status today; the rest answers UNIMPLEMENTED naming the
//!   issue area), gRPC reflection and the standard health service.
//!
//! Architecture invariant: every leader-only write goes through
//! [`meridian_store::election::fenced_txn`].

pub mod config;
mod convert;
pub mod events;
mod grpc;
pub mod health;
pub mod ops;
mod plan_api;
pub mod plans;
mod probe_api;
mod replica;
pub mod steering;
pub mod topology;

pub use replica::{open_store, run, run_with_store, RunError};
