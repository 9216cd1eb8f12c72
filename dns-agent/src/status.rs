//! What the agent is serving and whether it can reach the control plane, turned into
//! `/ready`, gauges and log lines. Only the plan follower and the admin listener
//! touch it; queries never do.
//!
//! Readiness decision: an agent serving a plan is **ready (200)** even when no
//! control plane is reachable, with the body saying "serving cached plan vN;
//! control plane unreachable". It answers correctly from the last good plan, and
//! taking every agent out of rotation when the control plane is down would turn a
//! control-plane outage into a DNS outage, which is what static stability exists to
//! prevent. The staleness is visible in `meridian_dns_serving_cached_plan`,
//! `meridian_dns_control_plane_connected` and `meridian_dns_plan_age_seconds`, which
//! is where alerts belong. An agent with no plan at all is **not ready (503)**: it
//! can only SERVFAIL steered names.

use std::path::PathBuf;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::metrics as m;

/// `Ok(detail)` when ready, `Err(why)` when not.
pub use meridian_daemon::admin::Readiness;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Cache,
    ControlPlane { replica: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Connection {
    NotYet,
    Connected { replica: String },
    Unreachable { error: String },
}

#[derive(Debug)]
struct Inner {
    plan: Option<(u64, Source)>,
    connection: Connection,
    cache_note: String,
}

/// Shared status; cheap to update, read by `/ready`.
#[derive(Debug)]
pub struct StatusBoard {
    inner: Mutex<Inner>,
    ready: watch::Sender<Readiness>,
}

impl StatusBoard {
    pub fn new(state_dir: Option<&PathBuf>) -> Self {
        let cache_note = match state_dir {
            Some(dir) => format!("no cached plan in {}", dir.display()),
            None => "the plan cache is off, so no cached plan".to_string(),
        };
        let inner = Inner {
            plan: None,
            connection: Connection::NotYet,
            cache_note,
        };
        let (ready, _) = watch::channel(readiness(&inner));
        StatusBoard {
            inner: Mutex::new(inner),
            ready,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Readiness> {
        self.ready.subscribe()
    }

    pub fn readiness(&self) -> Readiness {
        self.ready.borrow().clone()
    }

    /// A plan loaded from the cache at start-up.
    pub fn loaded_from_cache(&self, version: u64) {
        self.update(|i| i.plan = Some((version, Source::Cache)));
    }

    /// The cache could not be used (corrupt, rejected); shown while nothing is served.
    pub fn cache_unusable(&self, why: String) {
        self.update(|i| i.cache_note = why);
    }

    /// A plan (new or the same version again) confirmed by a replica.
    pub fn applied(&self, version: u64, replica: &str) {
        self.update(|i| {
            i.plan = Some((
                version,
                Source::ControlPlane {
                    replica: replica.to_string(),
                },
            ))
        });
    }

    pub fn connected(&self, replica: &str) {
        self.update(|i| {
            i.connection = Connection::Connected {
                replica: replica.to_string(),
            }
        });
    }

    pub fn unreachable(&self, error: String) {
        self.update(|i| i.connection = Connection::Unreachable { error });
    }

    fn update(&self, f: impl FnOnce(&mut Inner)) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let before = readiness(&inner);
        f(&mut inner);
        let after = readiness(&inner);
        let connected = matches!(inner.connection, Connection::Connected { .. });
        let cached = inner.plan.is_some() && (!connected || matches!(inner.plan, Some((_, Source::Cache))));
        metrics::gauge!(m::CONTROL_PLANE_CONNECTED).set(if connected { 1.0 } else { 0.0 });
        metrics::gauge!(m::SERVING_CACHED).set(if cached { 1.0 } else { 0.0 });
        drop(inner);
        if before != after {
            match &after {
                Ok(detail) if detail.contains("unreachable") => tracing::warn!(status = %detail, "readiness changed"),
                Ok(detail) => tracing::info!(status = %detail, "readiness changed"),
                Err(why) => tracing::warn!(status = %why, "not ready"),
            }
            let _previous = self.ready.send_replace(after);
        }
    }
}

fn readiness(i: &Inner) -> Readiness {
    let connection = match &i.connection {
        Connection::NotYet => "control plane not reached yet".to_string(),
        Connection::Connected { replica } => format!("connected to control plane {replica}"),
        Connection::Unreachable { error } => format!("control plane unreachable: {error}"),
    };
    match &i.plan {
        None => Err(format!("no steering plan to serve ({}; {connection})", i.cache_note)),
        Some((v, Source::ControlPlane { replica })) => match &i.connection {
            Connection::Connected { .. } => Ok(format!("serving plan v{v} from control plane {replica}")),
            _ => Ok(format!("serving cached plan v{v}; {connection}")),
        },
        Some((v, Source::Cache)) => Ok(format!("serving cached plan v{v}; {connection}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_plan_and_connection() {
        let b = StatusBoard::new(Some(&PathBuf::from("/var/lib/x")));
        let r = b.readiness().unwrap_err();
        assert!(r.contains("no cached plan in /var/lib/x"), "{r}");
        b.unreachable("connection refused".into());
        assert!(b.readiness().unwrap_err().contains("connection refused"));
        b.loaded_from_cache(7);
        assert_eq!(
            b.readiness().unwrap(),
            "serving cached plan v7; control plane unreachable: connection refused"
        );
        b.connected("http://cp");
        b.applied(8, "http://cp");
        assert_eq!(b.readiness().unwrap(), "serving plan v8 from control plane http://cp");
        b.unreachable("stream failed".into());
        assert!(b
            .readiness()
            .unwrap()
            .starts_with("serving cached plan v8; control plane unreachable"));
    }
}
