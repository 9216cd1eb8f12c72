//! Meridian's decision engine: the pure functions that turn what the control plane
//! knows into what it should do. The server only feeds them inputs and carries out
//! their outputs (store writes, events, metrics).
//!
//! - [`driver`]: the steering driver. `SteeringDriver::tick(now, view) -> Ready`
//!   takes a health snapshot, the topology, the intents and the plan in force, and
//!   returns the plan to publish (if any) and the events to record. It owns the
//!   slow-start machine and the latency damper; time is an argument.
//! - [`publish`]: the one function that decides whether a new plan is worth
//!   publishing over the one in force.
//! - [`intents`]: operator intents (drains, the plan pin) decoded from the store.
//! - [`change`]: staged, reversible changes (issue [8]): the change record and its
//!   pure state machine (`advance`, `pause`, `resume`, `rollback`, `revert`).
//! - [`events`]: the typed event vocabulary (verdicts, suspect regions, plans,
//!   guardrails, slow start, operator actions with their actor).
//!
//! Decision: modelled on raft-rs (`tick()` / `Ready`): the driver never performs an
//! effect, so every decision is unit-tested with plain values and a fake clock, and
//! the compute runs on a snapshot, outside any lock ingest takes. Rejected: keeping
//! this logic in the server crate next to tokio, where it read the wall clock and ran
//! under the health view's mutex.

pub mod change;
pub mod driver;
pub mod events;
pub mod intents;
pub mod publish;

pub use driver::{build_input, to_stored, LatencyDamper, Ready, SteeringDriver, SteeringView};
pub use events::{Event, EventKind, OperatorAction};
pub use intents::Intents;
pub use publish::{is_urgent, worth_publishing};
