//! The last-good-plan cache in `state_dir` (static stability): the last plan that was
//! applied, written atomically (temporary file, fsync, rename, fsync of the directory)
//! so a crash leaves either the old cache or the new one, never a torn file. Read at
//! start-up, so an agent restarted while no control plane answers serves its last
//! plan instead of nothing.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use meridian_dns_core::plan::PlanSnapshot;

/// The cache file's name inside `state_dir`.
pub const CACHE_FILE: &str = "plan.json";
const FORMAT: u32 = 1;

/// Why the cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the plan cache {path} is not a readable plan")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the plan cache {path} has format {found}, this agent reads format {FORMAT}")]
    Format { path: PathBuf, found: u32 },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    format: u32,
    saved_at_unix_ms: i64,
    plan: PlanSnapshot,
}

/// Writes `plan` as the cache in `dir`, creating the directory if needed.
pub fn save(dir: &Path, plan: &PlanSnapshot, now_unix_ms: i64) -> Result<(), CacheError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| CacheError::Io { action, path, source }
    };
    fs::create_dir_all(dir).map_err(io("create the state directory", dir))?;
    let path = dir.join(CACHE_FILE);
    let tmp = dir.join(format!(".{CACHE_FILE}.tmp-{}", std::process::id()));
    let body = serde_json::to_vec_pretty(&CacheFile {
        format: FORMAT,
        saved_at_unix_ms: now_unix_ms,
        plan: plan.clone(),
    })
    .map_err(|source| CacheError::Corrupt {
        path: path.clone(),
        source,
    })?;
    let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(&body).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("fsync", &tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io("rename the new cache onto", &path))?;
    // The rename is durable only once the directory entry is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync the state directory", dir))?;
    Ok(())
}

/// Reads the cache in `dir`; `Ok(None)` when there is none yet.
pub fn load(dir: &Path) -> Result<Option<PlanSnapshot>, CacheError> {
    let path = dir.join(CACHE_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CacheError::Io {
                action: "read",
                path,
                source,
            })
        }
    };
    let file: CacheFile = serde_json::from_slice(&bytes).map_err(|source| CacheError::Corrupt {
        path: path.clone(),
        source,
    })?;
    if file.format != FORMAT {
        return Err(CacheError::Format {
            path,
            found: file.format,
        });
    }
    Ok(Some(file.plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::sample;

    #[test]
    fn save_then_load_round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("nested");
        assert!(load(&state).unwrap().is_none());
        save(&state, &sample(1), 1).unwrap();
        save(&state, &sample(2), 2).unwrap();
        assert_eq!(load(&state).unwrap().unwrap().version, 2);
        let leftovers: Vec<_> = fs::read_dir(&state).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(CACHE_FILE)]);
    }

    #[test]
    fn a_corrupt_cache_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(CACHE_FILE), b"{not json").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("plan.json"), "{err}");
    }
}
