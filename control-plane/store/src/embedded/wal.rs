//! The embedded store's write-ahead log format: one JSON line per committed change,
//! numbered by a sequence that orders lines across snapshots, and its replay on open.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::records::PEvent;
use super::state::{Change, State};
use crate::{LeaseId, Revision, StoreError, WatchEvent};

pub(super) const WAL_FILE: &str = "wal.jsonl";

/// One line of the write-ahead log. `seq` orders lines across snapshots: a snapshot
/// records the last sequence number it contains, and replay skips lines up to it (so
/// a crash between writing a snapshot and truncating the log is harmless).
#[derive(Serialize, Deserialize)]
pub(super) struct WalLine {
    pub(super) seq: u64,
    pub(super) change: WalChange,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum WalChange {
    Commit {
        revision: Revision,
        events: Vec<PEvent>,
    },
    LeaseGrant {
        id: LeaseId,
        ttl: Duration,
    },
    LeaseRevoke {
        id: LeaseId,
        revision: Revision,
        events: Vec<PEvent>,
        expired: bool,
    },
    Compact {
        revision: Revision,
    },
}

impl From<&Change> for WalChange {
    fn from(change: &Change) -> Self {
        let events = |events: &[WatchEvent]| events.iter().map(PEvent::from).collect();
        match change {
            Change::Commit { revision, events: evs } => WalChange::Commit {
                revision: *revision,
                events: events(evs),
            },
            Change::LeaseGrant { id, ttl } => WalChange::LeaseGrant { id: *id, ttl: *ttl },
            Change::LeaseRevoke {
                id,
                revision,
                events: evs,
                expired,
            } => WalChange::LeaseRevoke {
                id: *id,
                revision: *revision,
                events: events(evs),
                expired: *expired,
            },
            Change::Compact { revision } => WalChange::Compact { revision: *revision },
        }
    }
}

impl From<WalChange> for Change {
    fn from(change: WalChange) -> Self {
        let events = |events: Vec<PEvent>| events.into_iter().map(WatchEvent::from).collect();
        match change {
            WalChange::Commit { revision, events: evs } => Change::Commit {
                revision,
                events: events(evs),
            },
            WalChange::LeaseGrant { id, ttl } => Change::LeaseGrant { id, ttl },
            WalChange::LeaseRevoke {
                id,
                revision,
                events: evs,
                expired,
            } => Change::LeaseRevoke {
                id,
                revision,
                events: events(evs),
                expired,
            },
            WalChange::Compact { revision } => Change::Compact { revision },
        }
    }
}

/// Replays the log lines after `last_seq`. Returns the length of the valid prefix of
/// the file and the highest sequence number seen.
pub(super) fn replay_wal(
    path: &Path,
    data: &[u8],
    last_seq: u64,
    state: &mut State,
    now: Instant,
) -> Result<(u64, u64), StoreError> {
    let corrupt = |line: usize, reason: String| StoreError::Corrupt {
        path: path.display().to_string(),
        reason: format!("line {line}: {reason}"),
    };
    let mut lines: Vec<&[u8]> = data.split(|byte| *byte == b'\n').collect();
    // Whatever follows the last newline was never acknowledged: a torn write.
    let tail = lines.pop().unwrap_or_default();
    let mut good_len = 0u64;
    let mut max_seq = last_seq;
    let count = lines.len();
    for (index, line) in lines.into_iter().enumerate() {
        let number = index + 1;
        let parsed: WalLine = match serde_json::from_slice(line) {
            Ok(parsed) => parsed,
            // A garbled last line is a torn write too (the file size can reach the
            // disk before its contents).
            Err(e) if index + 1 == count && tail.is_empty() => {
                tracing::warn!(path = %path.display(), line = number, error = %e, "ignoring torn last line of the embedded store log");
                return Ok((good_len, max_seq));
            }
            Err(e) => return Err(corrupt(number, e.to_string())),
        };
        if parsed.seq > last_seq {
            if parsed.seq <= max_seq {
                return Err(corrupt(
                    number,
                    format!("sequence number {} after {max_seq}", parsed.seq),
                ));
            }
            max_seq = parsed.seq;
            state
                .replay(parsed.change.into(), now)
                .map_err(|reason| corrupt(number, reason))?;
        }
        good_len += line.len() as u64 + 1;
    }
    if !tail.is_empty() {
        tracing::warn!(path = %path.display(), bytes = tail.len(), "ignoring torn last line of the embedded store log");
    }
    Ok((good_len, max_seq))
}
