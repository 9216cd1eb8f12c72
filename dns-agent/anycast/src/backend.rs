//! The speaker behind the agent, as a trait: what it announces now, announce one
//! prefix with a given route, withdraw one. The GoBGP implementation is
//! [`crate::gobgp::GobgpBackend`]; tests use [`Recording`].

use ipnet::IpNet;

use crate::core::{Announced, Route};

/// A BGP speaker the agent drives.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Our locally originated routes, by prefix, as the speaker has them now.
    async fn list(&self) -> Result<Announced, BackendError>;
    /// Announces `prefix` with `route`, replacing any route of ours for it.
    async fn announce(&self, prefix: IpNet, route: Route) -> Result<(), BackendError>;
    /// Withdraws our route for `prefix` (nothing to do when there is none).
    async fn withdraw(&self, prefix: IpNet) -> Result<(), BackendError>;
}

/// Why the speaker did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot reach the speaker's API at {api}: {message}")]
    Unreachable { api: String, message: String },
    #[error("the speaker refused {what}: {status}")]
    Refused {
        what: String,
        #[source]
        status: Box<tonic::Status>,
    },
    #[error("the speaker answered something unexpected: {0}")]
    Unexpected(String),
    #[error("{0}")]
    Unsupported(String),
}

impl BackendError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::Unreachable { .. } => "unreachable",
            BackendError::Refused { .. } => "refused",
            BackendError::Unexpected(_) => "unexpected",
            BackendError::Unsupported(_) => "unsupported",
        }
    }
}

/// An in-memory speaker for tests: records the calls and can be told to fail.
#[derive(Debug, Default)]
pub struct Recording {
    pub routes: std::sync::Mutex<Announced>,
    pub calls: std::sync::Mutex<Vec<String>>,
    pub fail: std::sync::atomic::AtomicBool,
}

impl Recording {
    fn check(&self) -> Result<(), BackendError> {
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(BackendError::Unexpected("told to fail".into()));
        }
        Ok(())
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Announced> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).push(call);
    }
}

#[async_trait::async_trait]
impl Backend for Recording {
    async fn list(&self) -> Result<Announced, BackendError> {
        self.check()?;
        Ok(self.routes().clone())
    }
    async fn announce(&self, prefix: IpNet, route: Route) -> Result<(), BackendError> {
        self.check()?;
        self.record(format!(
            "announce {prefix} prepends={} gshut={}",
            route.prepends, route.graceful_shutdown
        ));
        self.routes().insert(prefix, route);
        Ok(())
    }
    async fn withdraw(&self, prefix: IpNet) -> Result<(), BackendError> {
        self.check()?;
        self.record(format!("withdraw {prefix}"));
        self.routes().remove(&prefix);
        Ok(())
    }
}
