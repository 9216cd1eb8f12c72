//! The embedded store's claim on its data directory: an advisory `flock` on a `LOCK`
//! file, so two processes (or two stores in one process) never write the same log.
//!
//! Decision: `flock` (std's `File::try_lock`) rather than a PID written into the
//! file. The kernel drops the lock when its holder dies, however it dies, so a crash
//! leaves nothing stale; a PID file cannot tell a crashed holder from a live one when
//! the restart gets the same PID (always PID 1 in a container) and refused to open
//! forever. The holder's PID is still written into the file, for people only.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use super::disk::persistence;
use crate::StoreError;

/// How long `open` waits for a store of this same process that is being dropped to
/// release the directory lock (the ticker can hold it for one tick).
pub(super) const SAME_PROCESS_LOCK_WAIT: Duration = Duration::from_secs(2);
pub(super) const LOCK_FILE: &str = "LOCK";

/// An exclusive claim on a data directory, held for as long as this value lives (the
/// lock goes with the file descriptor).
pub(super) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(super) fn acquire(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(LOCK_FILE);
        let give_up_at = Instant::now() + SAME_PROCESS_LOCK_WAIT;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| persistence(&path, e))?;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    // Maybe a store of this process being dropped right now; another
                    // process holding it does not let go within the wait either.
                    if Instant::now() >= give_up_at {
                        let holder = std::fs::read_to_string(&path).unwrap_or_default();
                        let holder = holder.trim();
                        let who = if holder.is_empty() {
                            "another store holds its lock".to_string()
                        } else {
                            format!(
                                "another store holds its lock (process {holder}, see {})",
                                path.display()
                            )
                        };
                        return Err(locked(dir, &who));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(TryLockError::Error(e)) => return Err(persistence(&path, e)),
            }
        }
        // For people reading the directory: who holds it. Not used for decisions.
        let note = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(std::process::id().to_string().as_bytes()))
            .and_then(|()| file.sync_all());
        if let Err(e) = note {
            tracing::warn!(path = %path.display(), error = %e, "could not note the holder's pid in the lock file");
        }
        Ok(Self { _file: file })
    }
}

fn locked(dir: &Path, why: &str) -> StoreError {
    persistence(
        dir,
        io::Error::new(io::ErrorKind::WouldBlock, format!("data directory is locked: {why}")),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::process::{Command, Stdio};

    use super::super::disk::SNAPSHOT_THRESHOLD_BYTES;
    use super::super::{EmbeddedStore, BROADCAST_CAPACITY};
    use super::*;

    #[tokio::test]
    async fn lock_prevents_double_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with(dir.path(), SNAPSHOT_THRESHOLD_BYTES, BROADCAST_CAPACITY).unwrap();
        let start = Instant::now();
        let err = EmbeddedStore::open(dir.path()).err().expect("second open must fail");
        assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
        assert!(format!("{err:?}").contains("data directory is locked"), "{err:?}");
        assert!(start.elapsed() >= SAME_PROCESS_LOCK_WAIT);
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        drop(store);
    }

    /// A crashed store restarted with the same PID (PID 1 in a container) opens: a
    /// LOCK file naming this very process, but held by nobody, is no obstacle.
    #[tokio::test]
    async fn a_restart_with_the_same_pid_opens() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), std::process::id().to_string()).unwrap();
        let start = Instant::now();
        let store = EmbeddedStore::open(dir.path()).expect("a lock nobody holds is not stale, just free");
        assert!(
            start.elapsed() < SAME_PROCESS_LOCK_WAIT,
            "no waiting for a holder that does not exist"
        );
        drop(store);
    }

    /// Another process holding the lock keeps the store closed, and its death (the
    /// kernel drops the lock) lets the store open, with no file to clean up.
    #[tokio::test]
    async fn another_process_holding_the_lock_keeps_it_closed_until_it_dies() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(LOCK_FILE);
        std::fs::write(&lock, "").unwrap();
        // `--close`: the lock stays with flock itself, not with the `sleep` it runs,
        // so killing flock is the holder dying.
        let mut holder = Command::new("flock")
            .args(["--exclusive", "--close"])
            .arg(&lock)
            .args(["sleep", "30"])
            .stdin(Stdio::null())
            .spawn()
            .expect("flock(1) from util-linux is needed: apt-get install -y util-linux");
        // Wait until the holder really holds it.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let probe = OpenOptions::new().write(true).open(&lock).unwrap();
            match probe.try_lock() {
                Err(TryLockError::WouldBlock) => break,
                Ok(()) => drop(probe),
                Err(TryLockError::Error(e)) => panic!("{e}"),
            }
            assert!(Instant::now() < deadline, "flock never took the lock");
            std::thread::sleep(Duration::from_millis(20));
        }
        let err = EmbeddedStore::open(dir.path()).err().expect("held by another process");
        assert!(format!("{err:?}").contains("data directory is locked"), "{err:?}");
        holder.kill().unwrap();
        holder.wait().unwrap();
        EmbeddedStore::open(dir.path()).expect("the dead holder's lock is gone with it");
    }
}
