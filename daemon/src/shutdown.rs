//! One bounded shutdown tree: SIGTERM or SIGINT cancels a token every task watches;
//! the tasks then get a grace period to finish, and whatever is still running after
//! it is logged by name and abandoned.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on the first SIGTERM or SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; draining");
        child.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                // Installing handlers only fails when the runtime has no signal
                // driver; fall back to Ctrl-C.
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Named tasks that make up a daemon.
#[derive(Default)]
pub struct Tasks {
    set: JoinSet<(&'static str, Result<(), String>)>,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns a named task. A task returning `Err` is logged with its name.
    pub fn spawn<F>(&mut self, name: &'static str, fut: F)
    where
        F: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        self.set.spawn(async move { (name, fut.await) });
    }

    /// Waits until `shutdown` fires (or a task ends early, which cancels the rest),
    /// then gives every task up to `grace` to finish. Returns the first task error.
    pub async fn run_until(mut self, shutdown: CancellationToken, grace: Duration) -> Result<(), String> {
        let mut first_error = None;
        tokio::select! {
            _ = shutdown.cancelled() => {}
            Some(done) = self.set.join_next() => {
                let (name, result) = flatten(done);
                match result {
                    Ok(()) => tracing::warn!(task = name, "task ended early; shutting down"),
                    Err(e) => {
                        tracing::error!(task = name, error = %e, "task failed; shutting down");
                        first_error = Some(format!("{name}: {e}"));
                    }
                }
                shutdown.cancel();
            }
        }
        let drain = async {
            while let Some(done) = self.set.join_next().await {
                let (name, result) = flatten(done);
                if let Err(e) = result {
                    tracing::warn!(task = name, error = %e, "task failed during shutdown");
                    first_error.get_or_insert(format!("{name}: {e}"));
                }
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(remaining = self.set.len(), grace = ?grace, "shutdown grace period expired; abandoning tasks");
            self.set.abort_all();
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn flatten(
    done: Result<(&'static str, Result<(), String>), tokio::task::JoinError>,
) -> (&'static str, Result<(), String>) {
    match done {
        Ok(v) => v,
        Err(e) => ("<unknown>", Err(format!("task panicked or was aborted: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stuck_task_does_not_block_shutdown_past_the_grace() {
        let token = CancellationToken::new();
        let mut tasks = Tasks::new();
        tasks.spawn("stuck", async {
            std::future::pending::<()>().await;
            Ok(())
        });
        let t = token.clone();
        tasks.spawn("polite", async move {
            t.cancelled().await;
            Ok(())
        });
        token.cancel();
        let start = std::time::Instant::now();
        tasks.run_until(token, Duration::from_millis(200)).await.ok();
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_failing_task_cancels_the_rest_and_reports() {
        let token = CancellationToken::new();
        let mut tasks = Tasks::new();
        tasks.spawn("bad", async { Err("boom".to_string()) });
        let t = token.clone();
        tasks.spawn("waits", async move {
            t.cancelled().await;
            Ok(())
        });
        let err = tasks
            .run_until(token.clone(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.contains("bad: boom"), "{err}");
        assert!(token.is_cancelled());
    }
}
