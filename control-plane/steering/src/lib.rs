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
//! # Decision: exact where it fits the budget, a fair greedy beyond
//!
//! Networks of up to [`EXACT_LIMIT_PAIRS`] (region, PoP) pairs are solved *exactly* as
//! a min-cost flow (`solve.rs`: successive shortest paths, one region at a time, with
//! Dijkstra and potentials, on per-region lists of the lowest-latency PoPs that are
//! widened until an LP optimality certificate — no negative reduced cost on any arc
//! left out — holds for the whole problem). Larger networks use `fast.rs`: a global
//! greedy over (region, PoP) pairs in latency order (per-region top-k lists merged
//! through one heap, every PoP's target filled before any headroom), then a bounded
//! pass of 2-region/2-PoP swaps.
//!
//! The exact solver alone was the first choice and was rejected for the design size:
//! under contention it needs thousands of augmentations and more than one round of
//! list widening (40 ms at 60 % load, seconds near full load on 1,000 × 300), against a
//! 10 ms budget. Pure greedy everywhere was rejected too: on small instances it is up
//! to ~28 % off the optimum (see `tests/lp_optimum.rs`), and small networks can afford
//! the exact answer.
//!
//! # What it guarantees, and what not
//!
//! - Always: weights of every region are ≥ 0 and sum to 1 (within 1e-9); every region
//!   has at least one PoP whenever its residency allows any PoP at all; every unit of
//!   demand is placed; same input, same plan, bit for bit, whatever the order of the
//!   input's lists; no PoP's headroom is used while a PoP the same region may use has
//!   room below target (both algorithms fill targets first).
//! - Up to [`EXACT_LIMIT_PAIRS`]: the assignment is the exact optimum of the
//!   lexicographic problem above (floating-point tolerance). The exact solver also has
//!   a work budget; past it, the rest is placed greedily and the plan says so.
//! - Beyond: no bound on the gap to the optimum. The greedy takes the globally cheapest
//!   pairs first and the swaps repair two-region contention; longer chains of
//!   displacement are not repaired (observed: ~1.7 % above the optimum on the 1,000 × 300
//!   benchmark at 60 % load; up to 28 % on adversarial small instances).
//! - Not guaranteed: continuity. An optimum can jump between equally good assignments
//!   on a tiny input change; `meridian_engine::worth_publishing` (publish only on a
//!   state change or a weight move above the threshold) keeps agents from churning.
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

mod blend;
mod compute;
mod error;
mod fast;
mod guardrail;
mod model;
mod plan;
mod solve;
#[cfg(test)]
mod tests;

pub use blend::blend;
pub use compute::{compute, compute_with, Solver, EXACT_LIMIT_PAIRS};
pub use error::{DrainError, SteeringError};
pub use guardrail::{check_drain, what_if};
pub use model::{
    LatencyMatrix, LatencyTable, PopInput, PopUsability, RegionInput, Scenario, SteeringInput, SteeringPolicy,
};
pub use plan::{AnycastIntent, GuardrailFiring, GuardrailRule, Plan, PopLoad, PopWeight};
