//! Validated identifiers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} id must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} id `{id}` is longer than 63 characters")]
    TooLong { kind: &'static str, id: String },
    #[error("{kind} id `{id}` has invalid character {ch:?}: use lowercase letters, digits, '-' and '_', starting with a letter or digit")]
    InvalidChar { kind: &'static str, id: String, ch: char },
}

/// Checks an identifier: 1–63 of `[a-z0-9_-]`, starting with a letter or digit. The
/// same rule as a DNS label, so ids are safe inside store keys and DNS names.
pub fn validate_id(kind: &'static str, id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if id.len() > 63 {
        return Err(IdError::TooLong {
            kind,
            id: id.to_string(),
        });
    }
    for (i, ch) in id.chars().enumerate() {
        let ok = ch.is_ascii_lowercase() || ch.is_ascii_digit() || (i > 0 && (ch == '-' || ch == '_'));
        if !ok {
            return Err(IdError::InvalidChar {
                kind,
                id: id.to_string(),
                ch,
            });
        }
    }
    Ok(())
}

/// The identity of one control-plane replica.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReplicaId(String);

impl ReplicaId {
    pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        validate_id("replica", &id)?;
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ReplicaId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<ReplicaId> for String {
    fn from(id: ReplicaId) -> Self {
        id.0
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stable fraction in `[0, 1)` from `bytes` (FNV-1a, the top 53 bits): the same on
/// every build and machine, unlike the std hasher. Used where separate processes
/// must agree on a spread, such as probe phases.
pub fn stable_fraction(bytes: impl IntoIterator<Item = u8>) -> f64 {
    let h = bytes.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_dns_label_rule() {
        let cases: &[(&str, bool)] = &[
            ("cp-1", true),
            ("a", true),
            ("fra1", true),
            ("x_y", true),
            ("", false),
            ("-a", false),
            ("A", false),
            ("a/b", false),
            ("a b", false),
            (&"a".repeat(63), true),
            (&"a".repeat(64), false),
        ];
        for (id, ok) in cases {
            assert_eq!(ReplicaId::new(*id).is_ok(), *ok, "id {id:?}");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let err = ReplicaId::new("cp/1").unwrap_err();
        assert!(err.to_string().contains("invalid character '/'"), "{err}");
    }

    #[test]
    fn deserialising_validates() {
        let bad: Result<ReplicaId, _> = serde_json::from_str("\"Bad\"");
        assert!(bad.is_err());
        let good: ReplicaId = serde_json::from_str("\"cp-2\"").unwrap();
        assert_eq!(good.as_str(), "cp-2");
    }
}
