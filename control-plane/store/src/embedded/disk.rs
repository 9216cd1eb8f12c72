//! Durability for the embedded store: an append-only write-ahead log (`wal.jsonl`, one
//! JSON line per committed change, `fsync`ed before the call returns) and a snapshot
//! (`snapshot.json`) taken when the log passes a bound and on every compaction.
//! Opening loads the snapshot and replays the log after it; a torn last line (a crash
//! in the middle of a write, never acknowledged) is dropped with a warning, anything
//! unreadable before it is [`StoreError::Corrupt`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::snapshot::{self, SNAPSHOT_FILE};
use super::state::{Change, State};
use super::wal::{replay_wal, WalLine, WAL_FILE};
use crate::StoreError;

/// The write-ahead log is folded into a snapshot once it is this large.
pub(super) const SNAPSHOT_THRESHOLD_BYTES: u64 = 8 * 1024 * 1024;

pub(super) struct Disk {
    pub(super) dir: PathBuf,
    wal_path: PathBuf,
    wal: File,
    wal_bytes: u64,
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
        let wal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&wal_path)
            .map_err(|e| persistence(&wal_path, e))?;
        if good_len < data.len() as u64 {
            wal.set_len(good_len)
                .and_then(|()| wal.sync_all())
                .map_err(|e| persistence(&wal_path, e))?;
        }
        metrics::gauge!("meridian_store_embedded_wal_bytes").set(good_len as f64);
        let disk = Disk {
            dir: dir.to_path_buf(),
            wal_path,
            wal,
            wal_bytes: good_len,
            next_seq: max_seq + 1,
            snapshot_threshold,
        };
        Ok((state, disk))
    }

    /// Appends the changes to the log and syncs it; folds the log into a snapshot
    /// when it has grown past the bound or history was compacted.
    pub(super) fn append(&mut self, state: &State, changes: &[Change]) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        for change in changes {
            let line = WalLine {
                seq: self.next_seq,
                change: change.into(),
            };
            serde_json::to_writer(&mut buf, &line).map_err(|e| persistence(&self.wal_path, e.into()))?;
            buf.push(b'\n');
            self.next_seq += 1;
        }
        self.wal
            .write_all(&buf)
            .and_then(|()| self.wal.sync_data())
            .map_err(|e| persistence(&self.wal_path, e))?;
        self.wal_bytes += buf.len() as u64;
        metrics::gauge!("meridian_store_embedded_wal_bytes").set(self.wal_bytes as f64);
        let compacted = changes.iter().any(|change| matches!(change, Change::Compact { .. }));
        if compacted || self.wal_bytes > self.snapshot_threshold {
            // The changes are durable in the log already; a failed snapshot only
            // means the log keeps growing until the next attempt.
            if let Err(e) = self.fold(state) {
                tracing::warn!(error = %e, dir = %self.dir.display(), "embedded store snapshot failed; keeping the log");
            }
        }
        Ok(())
    }

    /// Writes a snapshot of `state` and empties the log it now contains.
    fn fold(&mut self, state: &State) -> Result<(), StoreError> {
        snapshot::write(&self.dir, state, self.next_seq - 1)?;
        self.wal
            .set_len(0)
            .and_then(|()| self.wal.sync_all())
            .map_err(|e| persistence(&self.wal_path, e))?;
        self.wal_bytes = 0;
        metrics::gauge!("meridian_store_embedded_wal_bytes").set(0.0);
        Ok(())
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use super::super::{collect, EmbeddedStore, BROADCAST_CAPACITY};
    use super::*;
    use crate::{Store, WatchEvent};

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

    #[tokio::test]
    async fn torn_tail_is_ignored_and_middle_corruption_is_not() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store.put("a", b"1".to_vec(), None).await.unwrap();
            store.put("b", b"2".to_vec(), None).await.unwrap();
        }
        let wal = dir.path().join(WAL_FILE);
        let good = fs::read(&wal).unwrap();
        let mut torn = good.clone();
        torn.extend_from_slice(br#"{"seq":3,"change":{"op":"commit","rev"#);
        fs::write(&wal, &torn).unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            assert_eq!(store.range("").await.unwrap().revision, 3);
            assert_eq!(fs::read(&wal).unwrap(), good, "the torn tail is cut off");
            assert_eq!(store.put("c", b"3".to_vec(), None).await.unwrap(), 4);
        }
        assert!(EmbeddedStore::open(dir.path())
            .unwrap()
            .get("c")
            .await
            .unwrap()
            .is_some());
        let mut text = String::from_utf8(fs::read(&wal).unwrap()).unwrap();
        text.insert_str(0, "garbage\n");
        fs::write(&wal, text).unwrap();
        match EmbeddedStore::open(dir.path()) {
            Err(StoreError::Corrupt { path, reason }) => {
                assert!(
                    path.ends_with(WAL_FILE) && reason.starts_with("line 1"),
                    "{path}: {reason}"
                );
            }
            other => panic!("expected Corrupt, got {:?}", other.err()),
        }
    }
}
