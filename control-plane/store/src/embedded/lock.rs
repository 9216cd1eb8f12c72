//! The embedded store's claim on its data directory: a `LOCK` file, so two processes
//! (or two stores in one process) never write the same log.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::disk::persistence;
use crate::StoreError;

/// How long `open` waits for a store of this same process that is being dropped to
/// release the directory lock (the ticker can hold it for one tick).
pub(super) const SAME_PROCESS_LOCK_WAIT: Duration = Duration::from_secs(2);
pub(super) const LOCK_FILE: &str = "LOCK";

/// An exclusive claim on a data directory: a `LOCK` file created with `create_new`
/// holding the owner's pid. A lock whose pid is no longer running is stale and taken
/// over. (Two processes taking over the same stale lock at the same instant could
/// both succeed; that needs a crash plus a simultaneous double start.)
pub(super) struct DirLock {
    path: PathBuf,
}

impl DirLock {
    pub(super) fn acquire(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(LOCK_FILE);
        let own_pid = std::process::id();
        let give_up_at = Instant::now() + SAME_PROCESS_LOCK_WAIT;
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(own_pid.to_string().as_bytes())
                        .and_then(|()| file.sync_all())
                        .map_err(|e| persistence(&path, e))?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(persistence(&path, e)),
            }
            let holder = fs::read_to_string(&path)
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok());
            match holder {
                Some(pid) if pid == own_pid => {
                    // Another store of this process: maybe one being dropped right now.
                    if Instant::now() >= give_up_at {
                        return Err(locked(dir, "another store in this process has it open"));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Some(pid) if process_alive(pid) => {
                    return Err(locked(
                        dir,
                        &format!("process {pid} has it open (see {})", path.display()),
                    ));
                }
                _ => {
                    tracing::warn!(path = %path.display(), holder = ?holder, "taking over a stale embedded store lock");
                    match fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(persistence(&path, e)),
                    }
                }
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the embedded store lock");
        }
    }
}

fn locked(dir: &Path, why: &str) -> StoreError {
    persistence(
        dir,
        io::Error::new(io::ErrorKind::WouldBlock, format!("data directory is locked: {why}")),
    )
}

#[cfg(target_os = "linux")]
fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Without a portable liveness check, assume the holder runs: the operator removes a
/// stale LOCK file by hand.
#[cfg(not(target_os = "linux"))]
fn process_alive(_pid: u32) -> bool {
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
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
        assert!(start.elapsed() >= SAME_PROCESS_LOCK_WAIT);
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        drop(store);
        // A lock left by a dead process is stale and taken over.
        fs::write(dir.path().join(LOCK_FILE), "999999999").unwrap();
        EmbeddedStore::open(dir.path()).unwrap();
    }
}
