//! Durability for the embedded store: an append-only write-ahead log (`wal.jsonl`, one
//! checksummed JSON record per committed change, `fsync`ed before the call returns)
//! and a snapshot (`snapshot.json`) taken when the log passes a bound and on every
//! compaction. Opening loads the snapshot and replays the log after it; a torn last
//! record (a crash in the middle of a write, never acknowledged) is cut off with a
//! warning, anything else unreadable is [`StoreError::Corrupt`] (see `wal`).
//!
//! A failed append (a full disk, a failing `fsync`) is an error for that write only.
//! It may have left part of a record after the last good one, so the log is cut back
//! to the end of the last good record, at once and, if that fails too, before the
//! next append: replay never meets a partial record in the middle of the log, and
//! once the disk has room again writes go through.
//!
//! The log file's two operations sit behind [`WalFile`], so that tests can make them
//! fail the way a full disk does without needing one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::snapshot::{self, SNAPSHOT_FILE};
use super::state::{Change, State};
use super::wal::{encode_record, replay_wal, WalLine, WAL_FILE};
use crate::StoreError;

/// The write-ahead log is folded into a snapshot once it is this large.
pub(super) const SNAPSHOT_THRESHOLD_BYTES: u64 = 8 * 1024 * 1024;

/// What the disk layer does to the log file. Both operations are durable when they
/// return `Ok`.
pub(super) trait WalFile: Send {
    /// Writes `bytes` at the end of the file and syncs them. On error, any prefix of
    /// `bytes` may have reached the file.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Cuts the file to `len` bytes and syncs it.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// The real log: a file opened for appending.
impl WalFile for File {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)?;
        self.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)?;
        self.sync_all()
    }
}

pub(super) struct Disk {
    pub(super) dir: PathBuf,
    wal_path: PathBuf,
    wal: Box<dyn WalFile>,
    /// The end of the last record known durable: where the next record goes.
    wal_bytes: u64,
    /// A failed append or truncation may have left bytes after `wal_bytes`; they are
    /// cut off before anything else is appended.
    dirty_tail: bool,
    next_seq: u64,
    snapshot_threshold: u64,
}

impl Disk {
    /// Loads the snapshot, replays the log after it, cuts a torn tail off the log and
    /// opens it for appending.
    pub(super) fn recover(dir: &Path, snapshot_threshold: u64, now: Instant) -> Result<(State, Disk), StoreError> {
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let (mut state, last_seq) = match fs::read(&snapshot_path) {
            Ok(bytes) => snapshot::load(&snapshot_path, &bytes, now)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => (State::new(), 0),
            Err(e) => return Err(persistence(&snapshot_path, e)),
        };
        let wal_path = dir.join(WAL_FILE);
        let data = match fs::read(&wal_path) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(persistence(&wal_path, e)),
        };
        let (good_len, max_seq) = replay_wal(&wal_path, &data, last_seq, &mut state, now)?;
        let mut wal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&wal_path)
            .map_err(|e| persistence(&wal_path, e))?;
        if good_len < data.len() as u64 {
            WalFile::truncate(&mut wal, good_len).map_err(|e| persistence(&wal_path, e))?;
        }
        metrics::gauge!("meridian_store_embedded_wal_bytes").set(good_len as f64);
        let disk = Disk {
            dir: dir.to_path_buf(),
            wal_path,
            wal: Box::new(wal),
            wal_bytes: good_len,
            dirty_tail: false,
            next_seq: max_seq + 1,
            snapshot_threshold,
        };
        Ok((state, disk))
    }

    /// Appends the changes to the log and syncs it; folds the log into a snapshot
    /// when it has grown past the bound or history was compacted. On error nothing
    /// was logged: the changes must not be applied.
    pub(super) fn append(&mut self, state: &State, changes: &[Change]) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        let mut seq = self.next_seq;
        for change in changes {
            let line = WalLine {
                seq,
                change: change.into(),
            };
            encode_record(&mut buf, &line).map_err(|e| persistence(&self.wal_path, e.into()))?;
            seq += 1;
        }
        if self.dirty_tail {
            self.cut_tail()?;
        }
        if let Err(e) = self.wal.append(&buf) {
            self.dirty_tail = true;
            // Cut the partial record off now rather than at the next append, so a
            // crash in between does not replay a write that was reported failed. If
            // this fails too, the next append tries again first.
            if let Err(cut) = self.cut_tail() {
                tracing::warn!(error = %error_chain(&cut), write_error = %e, "embedded store could not cut a failed write off its log yet");
            }
            return Err(persistence(&self.wal_path, e));
        }
        self.next_seq = seq;
        self.wal_bytes += buf.len() as u64;
        metrics::gauge!("meridian_store_embedded_wal_bytes").set(self.wal_bytes as f64);
        let compacted = changes.iter().any(|change| matches!(change, Change::Compact { .. }));
        if compacted || self.wal_bytes > self.snapshot_threshold {
            // The changes are durable in the log already; a failed snapshot only
            // means the log keeps growing until the next attempt.
            if let Err(e) = self.fold(state) {
                tracing::warn!(error = %error_chain(&e), dir = %self.dir.display(), "embedded store could not fold its log into a snapshot; keeping the log");
            }
        }
        Ok(())
    }

    /// Cuts the log back to the end of its last good record.
    fn cut_tail(&mut self) -> Result<(), StoreError> {
        self.wal
            .truncate(self.wal_bytes)
            .map_err(|e| persistence(&self.wal_path, e))?;
        self.dirty_tail = false;
        Ok(())
    }

    /// Writes a snapshot of `state` and empties the log it now contains.
    fn fold(&mut self, state: &State) -> Result<(), StoreError> {
        snapshot::write(&self.dir, state, self.next_seq - 1)?;
        // From here on the snapshot holds every record of the log: the log's good
        // part is empty, whether or not emptying the file works now.
        self.wal_bytes = 0;
        self.dirty_tail = true;
        metrics::gauge!("meridian_store_embedded_wal_bytes").set(0.0);
        self.cut_tail()
    }

    /// Puts a log file that fails on demand in place of the real one (tests).
    #[cfg(test)]
    pub(super) fn inject_faults(&mut self) -> std::sync::Arc<std::sync::Mutex<faults::Faults>> {
        let faults = std::sync::Arc::default();
        #[allow(clippy::expect_used)]
        let file = OpenOptions::new()
            .append(true)
            .open(&self.wal_path)
            .expect("the log file exists while the store is open");
        self.wal = Box::new(faults::FaultyWal {
            file,
            faults: std::sync::Arc::clone(&faults),
        });
        faults
    }
}

#[cfg(unix)]
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
pub(super) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

pub(super) fn persistence(path: &Path, source: io::Error) -> StoreError {
    StoreError::Persistence {
        path: path.display().to_string(),
        source,
    }
}

/// An error and its sources, one line (for logs and health).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A log file that fails on demand, the way a full disk or a failing device does: the
/// injected failure of the tests, behind the same [`WalFile`] seam as the real file.
#[cfg(test)]
pub(super) mod faults {
    use std::fs::File;
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::WalFile;

    #[derive(Debug, Default)]
    pub(in super::super) struct Faults {
        /// How the next appends fail; `None`: they work.
        pub(in super::super) append: Option<AppendFault>,
        /// Whether truncations fail.
        pub(in super::super) truncate_fails: bool,
    }

    #[derive(Clone, Copy, Debug)]
    pub(in super::super) enum AppendFault {
        /// The disk fills up after this many bytes of the append reached the file.
        NoSpaceAfter(usize),
        /// The bytes reach the file, the sync fails.
        SyncFails,
    }

    pub(super) struct FaultyWal {
        pub(super) file: File,
        pub(super) faults: Arc<Mutex<Faults>>,
    }

    impl FaultyWal {
        fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
            self.faults.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }

    impl WalFile for FaultyWal {
        fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
            let fault = self.faults().append;
            match fault {
                None => self.file.append(bytes),
                Some(AppendFault::NoSpaceAfter(n)) => {
                    self.file.append(&bytes[..n.min(bytes.len())])?;
                    Err(io::Error::from(io::ErrorKind::StorageFull))
                }
                Some(AppendFault::SyncFails) => {
                    self.file.append(bytes)?;
                    Err(io::Error::other("injected fsync failure"))
                }
            }
        }

        fn truncate(&mut self, len: u64) -> io::Result<()> {
            if self.faults().truncate_fails {
                return Err(io::Error::other("injected truncate failure"));
            }
            self.file.truncate(len)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    use super::super::{collect, EmbeddedStore, BROADCAST_CAPACITY};
    use super::faults::AppendFault;
    use super::*;
    use crate::{Store, Txn, TxnOp, WatchEvent};

    #[tokio::test]
    async fn reopen_keeps_state_history_and_leases() {
        let dir = tempfile::tempdir().unwrap();
        let (lease, rev) = {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store.put("a", b"1".to_vec(), None).await.unwrap();
            store.put("b", vec![0xff, 0x00], None).await.unwrap();
            let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();
            store.put("l", b"x".to_vec(), Some(lease.id)).await.unwrap();
            store.delete("a").await.unwrap();
            (lease, store.put("a", b"2".to_vec(), None).await.unwrap())
        };
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.range("").await.unwrap().revision, rev);
        let a = store.get("a").await.unwrap().unwrap();
        assert_eq!((a.value.as_slice(), a.create_revision, a.version), (&b"2"[..], rev, 1));
        assert_eq!(store.get("b").await.unwrap().unwrap().value, vec![0xff, 0x00]);
        assert_eq!(store.lease_keep_alive(lease.id).await.unwrap(), Duration::from_secs(60));
        let mut watch = store.watch_prefix("", Some(2)).await.unwrap();
        let events = collect(&mut watch, 5).await;
        assert_eq!(
            events.iter().map(WatchEvent::revision).collect::<Vec<_>>(),
            vec![2, 3, 4, 5, 6]
        );
        store.lease_revoke(lease.id).await.unwrap();
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert!(store.get("l").await.unwrap().is_none());
        assert!(matches!(
            store.lease_keep_alive(lease.id).await,
            Err(StoreError::LeaseNotFound(_))
        ));
    }

    #[tokio::test]
    async fn snapshots_fold_the_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open_with(dir.path(), 512, BROADCAST_CAPACITY).unwrap();
            for i in 0..40 {
                store
                    .put(&format!("k/{}", i % 7), format!("value {i}").into_bytes(), None)
                    .await
                    .unwrap();
            }
            store.compact(30).await.unwrap();
            store.put("k/after", b"x".to_vec(), None).await.unwrap();
            assert!(dir.path().join(SNAPSHOT_FILE).exists());
            assert!(fs::metadata(dir.path().join(WAL_FILE)).unwrap().len() < 512);
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let listed = store.range("k/").await.unwrap();
        assert_eq!((listed.kvs.len(), listed.revision), (8, 42));
        assert!(matches!(
            store.watch_prefix("k/", Some(29)).await,
            Err(StoreError::Compacted {
                compact_revision: 30,
                ..
            })
        ));
        let mut watch = store.watch_prefix("k/", Some(30)).await.unwrap();
        assert_eq!(collect(&mut watch, 13).await.len(), 13);
    }

    /// Opens a store in `dir`, writes `k/0` .. `k/{n-1}` (values `value-<i>`, one
    /// record each at revisions 2 ..= n + 1) and closes it; returns each record's
    /// byte offset and bytes, newline included.
    async fn store_with_records(dir: &Path, n: usize) -> Vec<(u64, Vec<u8>)> {
        {
            let store = EmbeddedStore::open(dir).unwrap();
            for i in 0..n {
                store
                    .put(&format!("k/{i}"), format!("value-{i}").into_bytes(), None)
                    .await
                    .unwrap();
            }
        }
        records(&fs::read(dir.join(WAL_FILE)).unwrap())
    }

    fn records(wal: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let mut offset = 0;
        wal.split_inclusive(|byte| *byte == b'\n')
            .map(|line| {
                let record = (offset, line.to_vec());
                offset += line.len() as u64;
                record
            })
            .collect()
    }

    fn expect_corrupt_at(dir: &Path, offset: u64, what: &str) {
        match EmbeddedStore::open(dir) {
            Err(StoreError::Corrupt { path, reason }) => {
                assert!(path.ends_with(WAL_FILE), "{path}");
                let at = format!("record at byte offset {offset}: ");
                assert!(reason.starts_with(&at) && reason.contains(what), "{path}: {reason}");
            }
            Err(other) => panic!("expected Corrupt at {offset}, got {other:?}"),
            Ok(_) => panic!("expected Corrupt at {offset}, the store opened"),
        }
    }

    async fn keys(store: &EmbeddedStore) -> Vec<String> {
        store
            .range("")
            .await
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| kv.key)
            .collect()
    }

    #[tokio::test]
    async fn records_carry_a_checksum_of_their_payload() {
        let dir = tempfile::tempdir().unwrap();
        let records = store_with_records(dir.path(), 2).await;
        for (_, line) in records {
            // Valid JSON, for `jq`.
            let record: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert!(record["rec"]["seq"].is_u64(), "{record}");
            // The checksum covers the payload's bytes exactly as written.
            let frame = br#","rec":"#;
            let start = line.windows(frame.len()).position(|w| w == frame).unwrap() + frame.len();
            let payload = &line[start..line.len() - 2];
            let crc = record["crc"].as_str().unwrap();
            assert_eq!(crc, format!("{:08x}", crc32fast::hash(payload)), "{record}");
        }
    }

    /// A byte changed after the fact anywhere, the last record included, fails the
    /// open and names the record; the log is left as it was for a person to look at.
    #[tokio::test]
    async fn a_damaged_record_fails_open_naming_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let records = store_with_records(dir.path(), 3).await;
        let wal = dir.path().join(WAL_FILE);
        let good = fs::read(&wal).unwrap();
        let value_at = |record: usize, text: &str| -> usize {
            let (offset, line) = &records[record];
            *offset as usize + line.windows(text.len()).position(|w| w == text.as_bytes()).unwrap()
        };
        // (record, byte to change, new byte, what the error says)
        let cases = [
            // Still well-formed JSON: only the checksum can tell.
            (1, value_at(1, "value-1") + 2, b'X', "checksum mismatch"),
            (2, value_at(2, "value-2") + 2, b'X', "checksum mismatch"),
            (0, value_at(0, "value-0") + 6, b'7', "checksum mismatch"),
            // No longer JSON: malformed, and not the torn tail since records follow.
            (1, value_at(1, "\"value-1\""), b'{', "malformed record"),
            (0, records[0].0 as usize + 3, b'x', "malformed record"),
        ];
        for (record, at, byte, what) in cases {
            let mut damaged = good.clone();
            damaged[at] = byte;
            fs::write(&wal, &damaged).unwrap();
            expect_corrupt_at(dir.path(), records[record].0, what);
            assert_eq!(fs::read(&wal).unwrap(), damaged, "a failed open changes nothing");
        }
        fs::write(&wal, &good).unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(keys(&store).await, ["k/0", "k/1", "k/2"]);
    }

    /// A crash in the middle of an append leaves part of the last record: it was
    /// never acknowledged, so it is cut off and every earlier record is kept.
    #[tokio::test]
    async fn a_torn_last_record_is_cut_off_and_earlier_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let records = store_with_records(dir.path(), 4).await;
        let wal = dir.path().join(WAL_FILE);
        let good = fs::read(&wal).unwrap();
        let (last_at, last) = records.last().unwrap().clone();
        let kept = &good[..last_at as usize];
        let mut garbled_last = good.clone();
        // What a lost page inside the last record looks like: zeros, newline intact.
        garbled_last[last_at as usize + 10..last_at as usize + 30].fill(0);
        let cases: Vec<Vec<u8>> = vec![
            good[..last_at as usize + 1].to_vec(),
            good[..last_at as usize + last.len() / 2].to_vec(),
            // Complete but for its newline: still not acknowledged.
            good[..good.len() - 1].to_vec(),
            garbled_last,
        ];
        for torn in cases {
            fs::write(&wal, &torn).unwrap();
            let store = EmbeddedStore::open(dir.path()).unwrap();
            assert_eq!(keys(&store).await, ["k/0", "k/1", "k/2"]);
            assert_eq!(store.range("").await.unwrap().revision, 4);
            assert_eq!(fs::read(&wal).unwrap(), kept, "the torn tail is cut off");
        }
        // Writing after the cut continues the log cleanly.
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            assert_eq!(store.put("k/9", b"9".to_vec(), None).await.unwrap(), 5);
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(keys(&store).await, ["k/0", "k/1", "k/2", "k/9"]);
        drop(store);
        // Garbage before the last record is corruption, not a torn tail.
        let mut text = fs::read(&wal).unwrap();
        text.splice(0..0, b"garbage\n".iter().copied());
        fs::write(&wal, text).unwrap();
        expect_corrupt_at(dir.path(), 0, "malformed record");
    }

    /// Logs written before records carried a checksum are still read; once a
    /// checksummed record follows, a bare one after it is damage.
    #[tokio::test]
    async fn bare_records_from_before_checksums_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let records = store_with_records(dir.path(), 2).await;
        let wal = dir.path().join(WAL_FILE);
        let bare = |line: &[u8]| -> Vec<u8> {
            let record: serde_json::Value = serde_json::from_slice(line).unwrap();
            let mut bare = serde_json::to_vec(&record["rec"]).unwrap();
            bare.push(b'\n');
            bare
        };
        let old: Vec<u8> = records.iter().flat_map(|(_, line)| bare(line)).collect();
        fs::write(&wal, &old).unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            assert_eq!(keys(&store).await, ["k/0", "k/1"]);
            store.put("k/2", b"2".to_vec(), None).await.unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(keys(&store).await, ["k/0", "k/1", "k/2"]);
        drop(store);
        let upgraded = fs::read(&wal).unwrap();
        assert!(upgraded.starts_with(&old), "old records are left as they are");
        let mut mixed = upgraded.clone();
        mixed.extend_from_slice(&bare(&records[1].1));
        mixed.extend_from_slice(&upgraded[old.len()..]);
        fs::write(&wal, &mixed).unwrap();
        expect_corrupt_at(dir.path(), upgraded.len() as u64, "without a checksum");
    }

    /// One failed log write (a full disk, a failing fsync) fails that write only:
    /// nothing of it is applied or published, reads go on, health says why, and once
    /// the disk takes writes again they go through onto a clean log.
    #[tokio::test]
    async fn a_failed_write_is_undone_and_later_writes_go_through() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join(WAL_FILE);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let rev = store.put("a", b"1".to_vec(), None).await.unwrap();
        let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();
        let mut watch = store.watch_prefix("", Some(rev + 1)).await.unwrap();
        let faults = store.inject_wal_faults();
        let durable = fs::read(&wal).unwrap();
        for fault in [
            AppendFault::NoSpaceAfter(0),
            AppendFault::NoSpaceAfter(25),
            AppendFault::SyncFails,
        ] {
            faults.lock().unwrap().append = Some(fault);
            let err = store.put("b", b"2".to_vec(), None).await.unwrap_err();
            assert!(
                matches!(&err, StoreError::Persistence { path, .. } if path.ends_with(WAL_FILE)),
                "{fault:?}: {err:?}"
            );
            let failed_writes = [
                store.delete("a").await.err(),
                store.put("a", b"x".to_vec(), Some(lease.id)).await.err(),
                store.txn(Txn::new().and_then([TxnOp::put("c", "3")])).await.err(),
                store.lease_grant(Duration::from_secs(5)).await.err(),
                store.lease_revoke(lease.id).await.err(),
                store.compact(rev).await.err(),
            ];
            assert!(
                failed_writes.iter().all(Option::is_some),
                "{fault:?}: {failed_writes:?}"
            );
            // Nothing moved: reads answer from the last durable state.
            assert_eq!(store.range("").await.unwrap().revision, rev);
            assert_eq!(keys(&store).await, ["a"]);
            assert_eq!(store.get("a").await.unwrap().unwrap().value, b"1");
            assert!(store.get("b").await.unwrap().is_none());
            assert_eq!(store.lease_keep_alive(lease.id).await.unwrap(), Duration::from_secs(60));
            let health = store.health().await;
            assert!(!health.healthy, "{health:?}");
            assert!(health.detail.contains("writes failing: "), "{health:?}");
            assert_eq!(health.revision, Some(rev));
            assert_eq!(
                fs::read(&wal).unwrap(),
                durable,
                "{fault:?}: the failed write was cut off"
            );
        }
        // A failed write that cannot be cut off at once is cut before the next one.
        {
            let mut faults = faults.lock().unwrap();
            faults.append = Some(AppendFault::NoSpaceAfter(40));
            faults.truncate_fails = true;
        }
        store.put("b", b"2".to_vec(), None).await.unwrap_err();
        assert!(
            fs::read(&wal).unwrap().len() > durable.len(),
            "a partial record is left"
        );
        faults.lock().unwrap().append = None;
        store.put("b", b"2".to_vec(), None).await.unwrap_err();
        assert_eq!(store.range("").await.unwrap().revision, rev);
        faults.lock().unwrap().truncate_fails = false;
        // The disk has room again.
        assert_eq!(store.put("b", b"2".to_vec(), None).await.unwrap(), rev + 1);
        assert!(store.health().await.healthy);
        let batch = watch.next().await.unwrap().unwrap();
        assert_eq!(
            batch.events.iter().map(|e| (e.key(), e.revision())).collect::<Vec<_>>(),
            [("b", rev + 1)],
            "watchers saw none of the failed writes"
        );
        let log = fs::read(&wal).unwrap();
        assert!(
            log.starts_with(&durable),
            "the log continues after its last good record"
        );
        assert_eq!(records(&log).len(), records(&durable).len() + 1);
        drop((watch, store));
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(keys(&store).await, ["a", "b"]);
        assert_eq!(store.range("").await.unwrap().revision, rev + 1);
        assert_eq!(fs::read(&wal).unwrap(), log, "nothing torn to cut on reopen");
    }

    /// Leases that expire while the log cannot be written stay, as they are on disk:
    /// reads see the last durable state, and the expiry lands once writes do.
    #[tokio::test]
    async fn expiry_that_cannot_be_logged_waits_for_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let lease = store.lease_grant(Duration::from_millis(500)).await.unwrap();
        let rev = store.put("l", b"x".to_vec(), Some(lease.id)).await.unwrap();
        let faults = store.inject_wal_faults();
        faults.lock().unwrap().append = Some(AppendFault::NoSpaceAfter(0));
        std::thread::sleep(Duration::from_millis(600));
        assert!(store.get("l").await.unwrap().is_some(), "the expiry is not durable yet");
        assert_eq!(store.range("").await.unwrap().revision, rev);
        assert!(store.put("m", b"y".to_vec(), None).await.is_err());
        assert!(matches!(
            store.lease_keep_alive(lease.id).await,
            Err(StoreError::LeaseNotFound(_))
        ));
        faults.lock().unwrap().append = None;
        assert!(store.get("l").await.unwrap().is_none());
        assert_eq!(store.put("m", b"y".to_vec(), None).await.unwrap(), rev + 2);
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(keys(&store).await, ["m"]);
    }
}
