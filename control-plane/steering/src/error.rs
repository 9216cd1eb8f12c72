//! Errors of the steering core.

use crate::plan::GuardrailFiring;

/// Why the steering core could not compute a plan from its input.
///
/// Upstream validation (topology apply) should make these unreachable; the core checks
/// anyway, because a plan computed from a NaN capacity would be wrong in ways nobody
/// notices, and the caller keeps serving its last good plan instead (fail static).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SteeringError {
    /// A field of the input is out of range or inconsistent.
    #[error("{field}: {reason}")]
    InvalidInput {
        /// Path of the field, e.g. `pops[3].capacity` (index in the caller's order).
        field: String,
        /// What was expected.
        reason: String,
    },
    /// A what-if or drain check names a PoP that is not in the input.
    #[error("unknown PoP {pop:?}")]
    UnknownPop {
        /// The PoP id asked for.
        pop: String,
    },
}

impl SteeringError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SteeringError::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Why [`crate::check_drain`] did not approve a drain.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DrainError {
    /// A guardrail refuses it; `force` (with a reason, recorded by the caller) overrides.
    #[error("drain refused by guardrail {}: {}", .0.rule, .0.detail)]
    Refused(GuardrailFiring),
    /// The input itself is invalid or does not name the PoP.
    #[error(transparent)]
    Input(#[from] SteeringError),
}
