//! The embedded store's write-ahead log format: one JSON line per committed change,
//! numbered by a sequence that orders lines across snapshots, and its replay on open.
//!
//! A record is one line, `{"crc":"<8 hex digits>","rec":<payload>}`, where the
//! payload is a [`WalLine`] as compact JSON and the CRC-32 is taken over exactly the
//! payload's bytes as written. Each line stays valid JSON (`jq .rec wal.jsonl` reads
//! the log), and the frame is fixed, so reading it needs no JSON parser of its own.
//! Lines written before the checksum existed are bare payloads; they are still read,
//! but only before the first checksummed line (a store only ever upgrades, so bare
//! lines after checksummed ones mean damage).
//!
//! Decision: the checksum is verified on every line, and a line that fails it is
//! corruption wherever it is, the last line included. A torn write (a crash in the
//! middle of an append, never acknowledged) leaves either an unterminated tail or a
//! last line that is not even well-formed; it never leaves a well-formed record with
//! a wrong checksum, which only damage after the fact does. Rejected: treating a bad
//! checksum on the last line as a torn write, which would silently drop an
//! acknowledged write that bit rot hit. What remains ambiguous: damage to the last
//! line that leaves it unparseable looks exactly like a torn write, and is cut off
//! with a warning, as it was before records had checksums.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::records::PEvent;
use super::state::{Change, State};
use crate::{LeaseId, Revision, StoreError, WatchEvent};

pub(super) const WAL_FILE: &str = "wal.jsonl";

/// The fixed parts of a checksummed record: `{"crc":"`, eight hex digits, `","rec":`,
/// the payload, `}`.
const FRAME_START: &[u8] = br#"{"crc":""#;
const CRC_DIGITS: usize = 8;
const FRAME_MIDDLE: &[u8] = br#"","rec":"#;
const FRAME_END: &[u8] = b"}";

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

/// Appends `line` to `buf` as one checksummed record, newline included.
pub(super) fn encode_record(buf: &mut Vec<u8>, line: &WalLine) -> serde_json::Result<()> {
    let crc_at = buf.len() + FRAME_START.len();
    buf.extend_from_slice(FRAME_START);
    buf.extend_from_slice(&[b'0'; CRC_DIGITS]);
    buf.extend_from_slice(FRAME_MIDDLE);
    let payload_at = buf.len();
    serde_json::to_writer(&mut *buf, line)?;
    let crc = crc32fast::hash(&buf[payload_at..]);
    buf[crc_at..crc_at + CRC_DIGITS].copy_from_slice(format!("{crc:08x}").as_bytes());
    buf.extend_from_slice(FRAME_END);
    buf.push(b'\n');
    Ok(())
}

/// Replays the log records after `last_seq`. Returns the length of the valid prefix
/// of the file (where the next record goes) and the highest sequence number seen.
///
/// An unterminated last line, or a last line that is not a well-formed record, is a
/// torn write: left out of the valid prefix, with a warning. Anything else that cannot
/// be replayed (a checksum mismatch anywhere, a malformed record before the last, a
/// sequence or revision out of order) is [`StoreError::Corrupt`], naming the file and
/// the byte offset where the record starts.
pub(super) fn replay_wal(
    path: &Path,
    data: &[u8],
    last_seq: u64,
    state: &mut State,
    now: Instant,
) -> Result<(u64, u64), StoreError> {
    let corrupt = |offset: u64, reason: String| StoreError::Corrupt {
        path: path.display().to_string(),
        reason: format!("record at byte offset {offset}: {reason}"),
    };
    let mut lines: Vec<&[u8]> = data.split(|byte| *byte == b'\n').collect();
    // Whatever follows the last newline was never acknowledged: a torn write.
    let tail = lines.pop().unwrap_or_default();
    let count = lines.len();
    let mut offset = 0u64;
    let mut max_seq = last_seq;
    let mut seen_checksummed = false;
    for (index, line) in lines.into_iter().enumerate() {
        let is_last = index + 1 == count && tail.is_empty();
        let parsed = match decode_record(line) {
            Ok(record) => record,
            // A garbled last line is a torn write too (the file size can reach the
            // disk before its contents).
            Err(RecordError::Malformed(reason)) if is_last => {
                tracing::warn!(path = %path.display(), offset, error = %reason, "ignoring torn last record of the embedded store log");
                return Ok((offset, max_seq));
            }
            Err(e) => return Err(corrupt(offset, e.to_string())),
        };
        let record = match parsed {
            Record::Checksummed(record) => {
                seen_checksummed = true;
                record
            }
            Record::Bare(record) if !seen_checksummed => record,
            Record::Bare(_) => {
                return Err(corrupt(
                    offset,
                    "record without a checksum after checksummed records".to_owned(),
                ))
            }
        };
        if record.seq > last_seq {
            if record.seq <= max_seq {
                return Err(corrupt(
                    offset,
                    format!("sequence number {} after {max_seq}", record.seq),
                ));
            }
            max_seq = record.seq;
            state
                .replay(record.change.into(), now)
                .map_err(|reason| corrupt(offset, reason))?;
        }
        offset += line.len() as u64 + 1;
    }
    if !tail.is_empty() {
        tracing::warn!(path = %path.display(), offset, bytes = tail.len(), "ignoring torn last record of the embedded store log");
    }
    Ok((offset, max_seq))
}

/// A log line that decoded.
enum Record {
    /// A framed record whose checksum matched.
    Checksummed(WalLine),
    /// A line from before the checksum existed.
    Bare(WalLine),
}

#[derive(Debug, thiserror::Error)]
enum RecordError {
    /// Not a readable record at all (what a torn write leaves).
    #[error("malformed record: {0}")]
    Malformed(String),
    /// A well-formed record whose bytes changed after it was written.
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    ChecksumMismatch { stored: u32, computed: u32 },
}

fn decode_record(line: &[u8]) -> Result<Record, RecordError> {
    let malformed = |e: serde_json::Error| RecordError::Malformed(e.to_string());
    let Some(framed) = line.strip_prefix(FRAME_START) else {
        return serde_json::from_slice(line).map(Record::Bare).map_err(malformed);
    };
    let (digits, rest) = framed.split_at_checked(CRC_DIGITS).unwrap_or((framed, &[]));
    let payload = rest
        .strip_prefix(FRAME_MIDDLE)
        .and_then(|rest| rest.strip_suffix(FRAME_END))
        .ok_or_else(|| RecordError::Malformed("broken record frame".to_owned()))?;
    let stored = Some(digits)
        .filter(|digits| digits.len() == CRC_DIGITS && digits.iter().all(u8::is_ascii_hexdigit))
        .and_then(|digits| std::str::from_utf8(digits).ok())
        .and_then(|digits| u32::from_str_radix(digits, 16).ok())
        .ok_or_else(|| RecordError::Malformed("checksum is not 8 hex digits".to_owned()))?;
    // Parsed before the checksum is compared, so that a record a torn write left
    // unreadable counts as malformed (a torn tail when last), and a checksum
    // mismatch always means a complete record was damaged.
    let line: WalLine = serde_json::from_slice(payload).map_err(malformed)?;
    let computed = crc32fast::hash(payload);
    if computed != stored {
        return Err(RecordError::ChecksumMismatch { stored, computed });
    }
    Ok(Record::Checksummed(line))
}
