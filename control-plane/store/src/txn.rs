//! The one request validator both backends run before a transaction (or a single
//! put, delete or read) touches the store, so they accept and refuse exactly the same
//! requests.
//!
//! The rules are etcd's own request checks, made explicit so the embedded store
//! enforces them too and etcd's refusals arrive as [`StoreError::InvalidRequest`]
//! without a round trip:
//!
//! * no empty key, in a compare or an operation;
//! * within one branch, a key is put at most once and never both put and deleted;
//! * no empty `DeletePrefix`. This one is ours: etcd accepts an empty prefix and
//!   deletes the whole keyspace (its clients turn `""` + prefix into the range
//!   `["\0", "\0")`), Meridian's keys and anyone else's. No caller needs that, and one
//!   that computes an empty prefix by mistake must not wipe the store, so both
//!   backends refuse it. (Reading or watching an empty prefix stays allowed.)

use std::collections::BTreeSet;

use crate::{StoreError, Txn, TxnOp};

/// Checks a transaction against the rules above.
pub fn validate(txn: &Txn) -> Result<(), StoreError> {
    for compare in &txn.compares {
        check_key(compare.key())?;
    }
    for ops in [&txn.success, &txn.failure] {
        let mut puts = BTreeSet::new();
        let mut deletes: Vec<(&str, bool)> = Vec::new();
        for op in ops {
            match op {
                TxnOp::Put { key, .. } => {
                    check_key(key)?;
                    if !puts.insert(key.as_str()) {
                        return Err(StoreError::InvalidRequest(format!(
                            "key {key} is put twice in one transaction"
                        )));
                    }
                }
                TxnOp::Delete { key } => {
                    check_key(key)?;
                    deletes.push((key.as_str(), false));
                }
                TxnOp::DeletePrefix { prefix } => {
                    check_delete_prefix(prefix)?;
                    deletes.push((prefix.as_str(), true));
                }
                TxnOp::Get { key } => check_key(key)?,
            }
        }
        for key in &puts {
            let clash = deletes.iter().any(|&(target, is_prefix)| {
                if is_prefix {
                    key.starts_with(target)
                } else {
                    *key == target
                }
            });
            if clash {
                return Err(StoreError::InvalidRequest(format!(
                    "key {key} is both put and deleted in one transaction"
                )));
            }
        }
    }
    Ok(())
}

/// A key must not be empty (etcd: "key is not provided").
pub fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        Err(StoreError::InvalidRequest("key must not be empty".to_owned()))
    } else {
        Ok(())
    }
}

/// A prefix to delete must not be empty: that would delete the whole keyspace.
pub fn check_delete_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.is_empty() {
        Err(StoreError::InvalidRequest(
            "delete_prefix needs a non-empty prefix (an empty one would delete the whole keyspace)".to_owned(),
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Compare;

    #[test]
    fn rules_table() {
        let prefix = |p: &str| TxnOp::DeletePrefix { prefix: p.into() };
        let cases: Vec<(&str, Txn, bool)> = vec![
            ("plain put", Txn::new().and_then([TxnOp::put("a", "1")]), true),
            ("empty put key", Txn::new().and_then([TxnOp::put("", "v")]), false),
            ("empty compare key", Txn::new().when([Compare::absent("")]), false),
            (
                "empty delete in failure",
                Txn::new().or_else([TxnOp::delete("")]),
                false,
            ),
            ("empty get key", Txn::new().and_then([TxnOp::get("")]), false),
            ("empty delete prefix", Txn::new().and_then([prefix("")]), false),
            (
                "empty delete prefix in failure",
                Txn::new().or_else([prefix("")]),
                false,
            ),
            ("delete prefix", Txn::new().and_then([prefix("a/")]), true),
            (
                "put twice",
                Txn::new().and_then([TxnOp::put("a", "1"), TxnOp::put("a", "2")]),
                false,
            ),
            (
                "same key put in each branch",
                Txn::new()
                    .and_then([TxnOp::put("a", "1")])
                    .or_else([TxnOp::put("a", "2")]),
                true,
            ),
            (
                "put and delete",
                Txn::new().and_then([TxnOp::put("a", "1"), TxnOp::delete("a")]),
                false,
            ),
            (
                "put under a deleted prefix",
                Txn::new().and_then([TxnOp::put("a/b", "1"), prefix("a/")]),
                false,
            ),
            (
                "put beside a deleted prefix",
                Txn::new().and_then([TxnOp::put("b", "1"), prefix("a/")]),
                true,
            ),
            (
                "delete twice",
                Txn::new().and_then([TxnOp::delete("a"), TxnOp::delete("a")]),
                true,
            ),
        ];
        for (name, txn, ok) in cases {
            let result = validate(&txn);
            assert_eq!(result.is_ok(), ok, "{name}: {result:?}");
            if let Err(e) = result {
                assert!(matches!(e, StoreError::InvalidRequest(_)), "{name}: {e:?}");
            }
        }
    }
}
