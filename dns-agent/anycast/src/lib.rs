//! `meridian-anycast-agent`: makes a PoP's BGP speaker announce, prepend, gracefully
//! shut down or withdraw the PoP's anycast prefixes as the control plane's plan says
//! (issue [9]), through a [`backend::Backend`]: GoBGP's gRPC API or BIRD 2.
//!
//! * [`core`]: the decisions, pure: the plan's anycast part validated, desired vs
//!   announced per prefix → changes, and the agent's own safety rules (the last
//!   announcer is never withdrawn; nothing before the first plan; routes stay when the
//!   control plane is gone and at shutdown unless configured).
//! * [`backend`] and [`gobgp`]: the speaker behind a trait, and GoBGP through its API
//!   (paths tracked by UUID, read back with ListPath); [`bird`]: BIRD 2 through a
//!   generated include file, `configure timeout`, a read-back, then `configure
//!   confirm` (a bad push undoes itself).
//! * [`reconcile`]: one reconcile (list, decide, change, list again), drift and error
//!   counts, the per-prefix report.
//! * [`config`], [`agent`] and `main`: the daemon around them, on the shared edge-agent
//!   follower (subscription, epochs, NACK, last-good-plan cache) and
//!   `meridian-daemon` (admin port, shutdown).
//!
//! Main decision: the agent reconciles the whole desired state against what the
//! speaker *reads back* (ListPath), on every plan and on a timer, rather than sending
//! the speaker a delta per plan. A path deleted or altered by hand, or lost in a
//! speaker restart, is put back by the next tick and counted, at the price of one
//! ListPath per tick. The safety rules live in the agent as well as in the control
//! plane, so a wrong plan (or a bug upstream) cannot withdraw a prefix everywhere.

pub mod agent;
pub mod backend;
pub mod bird;
pub mod config;
pub mod core;
pub mod gobgp;
pub mod metrics;
pub mod reconcile;
