//! Who did something: an operator identity, or one of Meridian's own loops. Every
//! operator action and every event carries one, so "who drained fra1" has an answer.
//!
//! Until mTLS arrives (issue [7]) the operator identity is what the client *claims*
//! (meridianctl sends `user@host`); [7] replaces the claim with the certificate's
//! subject without changing this type.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest identity kept; longer claims are refused, not truncated.
pub const MAX_IDENTITY_LEN: usize = 128;

/// An operator's identity: non-empty, at most [`MAX_IDENTITY_LEN`] bytes, printable
/// ASCII without spaces (it ends up in logs and tables).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Identity(String);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("identity `{value}`: {problem}")]
pub struct IdentityError {
    pub value: String,
    pub problem: &'static str,
}

impl Identity {
    pub fn new(value: impl Into<String>) -> Result<Self, IdentityError> {
        let value = value.into();
        let problem = if value.is_empty() {
            Some("must not be empty")
        } else if value.len() > MAX_IDENTITY_LEN {
            Some("longer than 128 bytes")
        } else if !value.bytes().all(|b| b.is_ascii_graphic()) {
            Some("only printable ASCII without spaces is allowed")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(IdentityError { value, problem }),
            None => Ok(Self(value)),
        }
    }

    /// The identity of a caller that presented none.
    pub fn anonymous() -> Self {
        Self("anonymous".to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Identity {
    type Error = IdentityError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Identity> for String {
    fn from(id: Identity) -> Self {
        id.0
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who did it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "identity", rename_all = "snake_case")]
pub enum Actor {
    /// Someone through the operator API.
    Operator(Identity),
    /// The steering loop on the leader (plans, guardrails, slow start).
    Steering,
    /// Health aggregation (verdicts, suspect regions).
    Health,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Operator(id) => write!(f, "operator:{id}"),
            Actor::Steering => f.write_str("steering"),
            Actor::Health => f.write_str("health"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_validated_and_shown_with_their_kind() {
        assert_eq!(Identity::new("alice@ops-1").unwrap().as_str(), "alice@ops-1");
        assert!(Identity::new("").is_err());
        assert!(Identity::new("two words").is_err());
        assert!(Identity::new("x".repeat(129)).is_err());
        assert!(Identity::new("x".repeat(128)).is_ok());
        let e = Identity::new("bad\nline").unwrap_err();
        assert!(e.to_string().contains("printable ASCII"), "{e}");
        let alice = Actor::Operator(Identity::new("alice").unwrap());
        assert_eq!(alice.to_string(), "operator:alice");
        assert_eq!(Actor::Steering.to_string(), "steering");
        let json = serde_json::to_string(&alice).unwrap();
        assert_eq!(serde_json::from_str::<Actor>(&json).unwrap(), alice);
        assert!(serde_json::from_str::<Identity>("\"a b\"").is_err());
    }
}
