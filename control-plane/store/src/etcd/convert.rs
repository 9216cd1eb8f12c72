//! Conversions between the store's types and etcd-client's: key-values, compares,
//! transaction operations, watch events, lease TTLs.

use std::time::Duration;

use etcd_client as ec;

use super::EtcdProtocolError;
use crate::{Compare, CompareOp, KeyValue, LeaseId, Revision, StoreError, Txn, TxnOp, WatchEvent};

pub(super) fn header_revision(header: Option<&ec::ResponseHeader>, what: &'static str) -> Result<Revision, StoreError> {
    header
        .map(ec::ResponseHeader::revision)
        .ok_or_else(|| StoreError::Backend(Box::new(EtcdProtocolError::MissingHeader(what))))
}

pub(super) fn convert_kv(kv: &ec::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: key_string(kv)?,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: (kv.lease() != 0).then_some(kv.lease()),
    })
}

pub(super) fn key_string(kv: &ec::KeyValue) -> Result<String, StoreError> {
    kv.key_str().map(str::to_owned).map_err(|_| {
        StoreError::Backend(Box::new(EtcdProtocolError::NonUtf8Key(
            String::from_utf8_lossy(kv.key()).into_owned(),
        )))
    })
}

pub(super) fn compare_op(op: CompareOp) -> ec::CompareOp {
    match op {
        CompareOp::Equal => ec::CompareOp::Equal,
        CompareOp::NotEqual => ec::CompareOp::NotEqual,
        CompareOp::Less => ec::CompareOp::Less,
        CompareOp::Greater => ec::CompareOp::Greater,
    }
}

pub(super) fn convert_compare(compare: &Compare) -> ec::Compare {
    match compare {
        Compare::CreateRevision { key, op, revision } => {
            ec::Compare::create_revision(key.as_str(), compare_op(*op), *revision)
        }
        Compare::ModRevision { key, op, revision } => {
            ec::Compare::mod_revision(key.as_str(), compare_op(*op), *revision)
        }
        Compare::Version { key, op, version } => ec::Compare::version(key.as_str(), compare_op(*op), *version),
        Compare::Value { key, op, value } => ec::Compare::value(key.as_str(), compare_op(*op), value.clone()),
    }
}

pub(super) fn convert_op(op: &TxnOp) -> ec::TxnOp {
    match op {
        TxnOp::Put { key, value, lease } => {
            let options = lease.map(|lease| ec::PutOptions::new().with_lease(lease));
            ec::TxnOp::put(key.as_str(), value.clone(), options)
        }
        TxnOp::Delete { key } => ec::TxnOp::delete(key.as_str(), None),
        TxnOp::DeletePrefix { prefix } => {
            ec::TxnOp::delete(prefix.as_str(), Some(ec::DeleteOptions::new().with_prefix()))
        }
        TxnOp::Get { key } => ec::TxnOp::get(key.as_str(), None),
    }
}

pub(super) fn convert_txn(txn: &Txn) -> ec::Txn {
    ec::Txn::new()
        .when(txn.compares.iter().map(convert_compare).collect::<Vec<_>>())
        .and_then(txn.success.iter().map(convert_op).collect::<Vec<_>>())
        .or_else(txn.failure.iter().map(convert_op).collect::<Vec<_>>())
}

/// The lease a failed transaction most likely referred to, for [`StoreError::LeaseNotFound`].
pub(super) fn txn_lease(txn: &Txn) -> Option<LeaseId> {
    txn.success.iter().chain(&txn.failure).find_map(|op| match op {
        TxnOp::Put { lease: Some(lease), .. } => Some(*lease),
        _ => None,
    })
}

/// Seconds for a lease grant: rounded up, at least 1.
pub(super) fn lease_seconds(ttl: Duration) -> i64 {
    let secs = ttl.as_secs().saturating_add(u64::from(ttl.subsec_nanos() > 0));
    i64::try_from(secs).unwrap_or(i64::MAX).max(1)
}

/// Converts one etcd event; `None` for an event without a key-value (never sent).
pub(super) fn convert_event(event: &ec::Event) -> Result<Option<WatchEvent>, StoreError> {
    let Some(kv) = event.kv() else { return Ok(None) };
    Ok(Some(match event.event_type() {
        ec::EventType::Put => WatchEvent::Put(convert_kv(kv)?),
        ec::EventType::Delete => WatchEvent::Delete {
            key: key_string(kv)?,
            mod_revision: kv.mod_revision(),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ttl_rounds_up() {
        assert_eq!(lease_seconds(Duration::ZERO), 1);
        assert_eq!(lease_seconds(Duration::from_millis(200)), 1);
        assert_eq!(lease_seconds(Duration::from_secs(2)), 2);
        assert_eq!(lease_seconds(Duration::from_millis(2001)), 3);
    }
}
