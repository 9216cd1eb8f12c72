//! The embedded store's snapshot: the whole state (keys, revision, compaction
//! revision, history, leases) in one JSON file, written to a temporary file,
//! `fsync`ed, renamed over the old one, and the directory `fsync`ed, so a crash
//! leaves either the old snapshot or the new one.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::disk::{persistence, sync_dir};
use super::records::{PEvent, PKeyValue};
use super::state::{LeaseEntry, State};
use crate::{LeaseId, Revision, StoreError, WatchEvent};

const SNAPSHOT_FORMAT: u32 = 1;
pub(super) const SNAPSHOT_FILE: &str = "snapshot.json";
const SNAPSHOT_TMP_FILE: &str = "snapshot.json.tmp";

#[derive(Serialize, Deserialize)]
struct PLease {
    id: LeaseId,
    ttl: Duration,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    /// The last log sequence number folded into this snapshot.
    last_seq: u64,
    revision: Revision,
    compact_revision: Revision,
    kvs: Vec<PKeyValue>,
    history: Vec<PEvent>,
    leases: Vec<PLease>,
}

/// Writes `state` as the snapshot of `dir`, atomically; `last_seq` is the last log
/// sequence number it contains.
pub(super) fn write(dir: &Path, state: &State, last_seq: u64) -> Result<(), StoreError> {
    let mut leases: Vec<PLease> = state
        .leases
        .iter()
        .map(|(id, entry)| PLease {
            id: *id,
            ttl: entry.ttl,
        })
        .collect();
    leases.sort_by_key(|lease| lease.id);
    let snapshot = Snapshot {
        format: SNAPSHOT_FORMAT,
        last_seq,
        revision: state.revision,
        compact_revision: state.compact_revision,
        kvs: state.kvs.values().map(PKeyValue::from).collect(),
        history: state.history.iter().map(PEvent::from).collect(),
        leases,
    };
    let tmp = dir.join(SNAPSHOT_TMP_FILE);
    let target = dir.join(SNAPSHOT_FILE);
    let bytes = serde_json::to_vec(&snapshot).map_err(|e| persistence(&tmp, e.into()))?;
    let write = || -> io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &target)?;
        sync_dir(dir)
    };
    write().map_err(|e| persistence(&target, e))
}

/// Reads a snapshot file's contents into a fresh state (leases restart at now + TTL);
/// returns it with the last log sequence number it contains.
pub(super) fn load(path: &Path, bytes: &[u8], now: Instant) -> Result<(State, u64), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.display().to_string(),
        reason,
    };
    let snapshot: Snapshot = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if snapshot.format != SNAPSHOT_FORMAT {
        return Err(corrupt(format!(
            "snapshot format {} (this version reads {SNAPSHOT_FORMAT})",
            snapshot.format
        )));
    }
    let mut state = State::new();
    state.revision = snapshot.revision;
    state.compact_revision = snapshot.compact_revision;
    for lease in snapshot.leases {
        state.leases.insert(
            lease.id,
            LeaseEntry {
                ttl: lease.ttl,
                deadline: now + lease.ttl,
                keys: BTreeSet::new(),
            },
        );
    }
    for kv in snapshot.kvs {
        let event = WatchEvent::Put(kv.into());
        if let WatchEvent::Put(kv) = &event {
            if let Some(id) = kv.lease.filter(|id| !state.leases.contains_key(id)) {
                return Err(corrupt(format!("key {} is attached to unknown lease {id:x}", kv.key)));
            }
        }
        state.apply_event(&event);
    }
    let mut last = Revision::MIN;
    for event in snapshot.history {
        let event = WatchEvent::from(event);
        if event.revision() < last || event.revision() > state.revision {
            return Err(corrupt(format!(
                "history event at revision {} out of order",
                event.revision()
            )));
        }
        last = event.revision();
        state.history.push_back(event);
    }
    Ok((state, snapshot.last_seq))
}
