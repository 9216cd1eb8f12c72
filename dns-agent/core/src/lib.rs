//! `meridian-dns-core`: the DNS agent's answering core, with no I/O. Query bytes and
//! the client's address go in, answer bytes come out; a received plan goes in, a
//! validated answer table (or the reason to NACK it) comes out.
//!
//! Code map: [`wire`] (a small hand-written DNS codec), [`zones`] and
//! [`zone_config`] (the authoritative data from configuration), [`plan`] (the plan
//! as received, [`plan::PlanSnapshot`], and its validation), [`select`] (region by
//! longest-prefix match, PoPs by weight), [`handler`] ([`handler::Responder`]: bytes
//! in, bytes out, the plan behind `arc-swap`), [`rrl`] (response rate limiting per
//! client prefix: the decision, with time passed in), [`metrics`] (the query path's
//! pre-registered counters).
//!
//! Main decision: the whole request path is one pure function over an immutable plan
//! table, kept in a crate that cannot depend on tokio, tonic, prost or the proto
//! crate, so the sockets (the DNS daemon), the control-plane subscription (the edge
//! agent) and the fuzz harness all drive the same code and none of them can leak into
//! it. The rejected alternative, modules inside the daemon crate, kept the core pure
//! only by convention. It uses our own codec instead of hickory-server: the
//! task-per-packet path of hickory-server measured well below gdnsd, and the hot path
//! here does no per-packet allocation of a general message; hickory-proto stays the
//! independent decoder every test checks our answers with.
//!
//! Architecture invariant: nothing here does I/O or reads a clock; randomness for
//! PoP choice comes from a per-thread generator behind [`select::Rng64`]; a query
//! never takes a lock a plan swap holds.

pub mod handler;
pub mod metrics;
pub mod plan;
pub mod rrl;
pub mod select;
pub mod wire;
pub mod zone_config;
pub mod zones;
