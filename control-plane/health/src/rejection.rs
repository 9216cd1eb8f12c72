//! Why a probe result was refused.

use std::time::Duration;

use crate::report::RejectReason;
use crate::time::UnixMillis;

/// A result the core refused. One bad result never affects the others of its batch:
/// the caller counts it (see [`crate::HealthStats`]), logs it rate-limited, and goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("unknown PoP `{pop}`")]
    UnknownPop { pop: String },
    #[error("unknown endpoint `{endpoint}` of PoP `{pop}`")]
    UnknownEndpoint { pop: String, endpoint: String },
    #[error("result observed at {observed_at} is {skew:?} in the future, more than max_future_skew {max:?}")]
    FromTheFuture {
        observed_at: UnixMillis,
        skew: Duration,
        max: Duration,
    },
    #[error("result observed at {observed_at} is {age:?} old, more than max_age {max:?}")]
    TooOld {
        observed_at: UnixMillis,
        age: Duration,
        max: Duration,
    },
    #[error("malformed result: {0}")]
    Invalid(String),
}

impl Rejection {
    pub fn reason(&self) -> RejectReason {
        match self {
            Rejection::UnknownPop { .. } => RejectReason::UnknownPop,
            Rejection::UnknownEndpoint { .. } => RejectReason::UnknownEndpoint,
            Rejection::FromTheFuture { .. } => RejectReason::FromTheFuture,
            Rejection::TooOld { .. } => RejectReason::TooOld,
            Rejection::Invalid(_) => RejectReason::Invalid,
        }
    }
}
