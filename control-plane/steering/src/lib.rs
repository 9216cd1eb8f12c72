//! Meridian's steering core: from PoPs (capacity, health, drains), client regions
//! (demand), the latency matrix and the policy, it computes a [`Plan`] — for every
//! client region the PoPs to answer with and their weights, for every PoP its load and
//! anycast intent — and applies the guardrails. It is pure: no I/O, no clock, no async
//! runtime; the control plane feeds it values and publishes what it returns.
//!
//! # Model
//!
//! A PoP is *in service* when it is usable, or unknown (no data: fail static), or down
//! while the failover cap is exceeded (fail open). Client region r may use PoP p when p
//! is in service, r is not in p's `unreachable_from` (DEGRADED), and r's residency
//! constraint (`allowed_pops`) allows p. Load is then assigned as a transportation
//! problem, lexicographically:
//!
//! 1. place as much demand as possible within `capacity × target_utilisation`;
//! 2. place the rest in the headroom up to full capacity (load *spills over by
//!    headroom* to the next-lowest-latency PoPs, rather than the next closest taking
//!    everything);
//! 3. within that, minimise the total latency-weighted demand Σ demand·weight·latency.
//!
//! Regions compete for shared capacity only through that global objective, never by
//! their order in the input. When the usable capacity is short of total demand, the
//! demand is scaled down until it fits, solved, and scaled back up, so the overload
//! lands on the PoPs in proportion to their capacity and no region is starved; demand a
//! region cannot place at all (its own PoPs are full, e.g. under a residency
//! constraint) is spread over its PoPs in proportion to capacity. A region with zero
//! demand gets all its weight on its lowest-latency PoP, so DNS can answer it.
//!
//! # Decision: an exact min-cost flow, not a greedy fill
//!
//! The fill is solved *exactly* as a min-cost flow (successive shortest paths with
//! Dijkstra and potentials, see `solve.rs`), on per-region lists of the lowest-latency
//! eligible PoPs that are widened until an LP optimality certificate (no negative
//! reduced cost on any arc left out) holds for the whole problem. The alternative
//! considered — a global greedy over (region, PoP) pairs sorted by latency, repaired by
//! a bounded pass of 2-region/2-PoP swaps — was rejected: it needs a full sort of all
//! 300 k pairs (most of the 10 ms budget), and a bounded swap pass gives no bound on the
//! gap to the optimum (a displaced region may have to move along a chain of more than
//! two PoPs). Successive shortest paths do the same "cheapest pair first" work when
//! there is no contention and repair contention along chains of any length.
//!
//! # What it guarantees, and what not
//!
//! - Weights of every region are ≥ 0 and sum to 1 (within 1e-9); every region has at
//!   least one PoP whenever its residency allows any PoP at all.
//! - The assignment is the exact optimum of the lexicographic problem above (up to
//!   floating-point tolerance, ~1e-9 relative), so no load sits in a PoP's headroom
//!   while a PoP the same region may use has room below its target.
//! - Same input, same plan, bit for bit, whatever the order of the input's lists.
//! - Not guaranteed: continuity. The optimum of a degenerate problem can jump between
//!   equally good assignments on a tiny input change; [`plan_changed`] (publish only on
//!   a state change or a weight move above the threshold) is what keeps agents from
//!   churning. Not guaranteed either: a time bound on adversarial inputs; the solve is
//!   bounded by a number of augmentations, past which the rest of the demand is spread
//!   by capacity and the plan says so in its reasons.
//!
//! # Guardrails
//!
//! Checked by [`compute`] for automatic removals and by [`check_drain`] for operators;
//! every firing names its [`GuardrailRule`]: the failover cap (fail open past it), never
//! the last PoP of a region, never the last announcer of an anycast prefix, and no drain
//! that pushes the rest over capacity unless forced.
//!
//! # Room for what comes next
//!
//! Cost-aware steering adds a price per PoP to the arc cost (`latency + λ·price`);
//! residency is already the optional `allowed_pops` of a region; a third-party CDN used
//! as overflow is one more PoP with its capacity and latency. None changes the solver.

mod compute;
mod error;
mod fast;
mod guardrail;
mod model;
mod plan;
mod solve;
#[cfg(test)]
mod tests;

pub use compute::{compute, compute_with, Solver, EXACT_LIMIT_PAIRS};
pub use error::{DrainError, SteeringError};
pub use guardrail::{check_drain, what_if};
pub use model::{LatencyMatrix, PopInput, PopUsability, RegionInput, Scenario, SteeringInput, SteeringPolicy};
pub use plan::{plan_changed, AnycastIntent, GuardrailFiring, GuardrailRule, Plan, PopLoad, PopWeight};
