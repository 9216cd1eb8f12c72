//! The record encoding shared by the write-ahead log and the snapshot: key-values and
//! watch events as JSON, values as text when they are UTF-8 (most are JSON documents)
//! so the files stay readable with `jq`.

use serde::{Deserialize, Serialize};

use crate::{KeyValue, LeaseId, Revision, WatchEvent};

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum PEvent {
    Put(PKeyValue),
    Delete { key: String, mod_revision: Revision },
}

#[derive(Serialize, Deserialize)]
pub(super) struct PKeyValue {
    key: String,
    value: PBytes,
    create_revision: Revision,
    mod_revision: Revision,
    version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease: Option<LeaseId>,
}

/// Values are mostly UTF-8 (JSON documents): stored as a string then, which keeps the
/// files readable and small, else as an array of bytes.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum PBytes {
    Text(String),
    Raw(Vec<u8>),
}

impl From<&KeyValue> for PKeyValue {
    fn from(kv: &KeyValue) -> Self {
        let value = match std::str::from_utf8(&kv.value) {
            Ok(text) => PBytes::Text(text.to_owned()),
            Err(_) => PBytes::Raw(kv.value.clone()),
        };
        Self {
            key: kv.key.clone(),
            value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

impl From<PKeyValue> for KeyValue {
    fn from(kv: PKeyValue) -> Self {
        let value = match kv.value {
            PBytes::Text(text) => text.into_bytes(),
            PBytes::Raw(bytes) => bytes,
        };
        Self {
            key: kv.key,
            value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

impl From<&WatchEvent> for PEvent {
    fn from(event: &WatchEvent) -> Self {
        match event {
            WatchEvent::Put(kv) => PEvent::Put(kv.into()),
            WatchEvent::Delete { key, mod_revision } => PEvent::Delete {
                key: key.clone(),
                mod_revision: *mod_revision,
            },
        }
    }
}

impl From<PEvent> for WatchEvent {
    fn from(event: PEvent) -> Self {
        match event {
            PEvent::Put(kv) => WatchEvent::Put(kv.into()),
            PEvent::Delete { key, mod_revision } => WatchEvent::Delete { key, mod_revision },
        }
    }
}
