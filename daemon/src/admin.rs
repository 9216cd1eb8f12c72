//! The admin HTTP listener: `/metrics` (Prometheus text), `/live` (the process runs)
//! and `/ready` (the component can do its job now; the reason when it cannot).

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Readiness as the component sees it: `Ok(detail)` when ready (the detail, which
/// may be empty, is shown in `/ready`, e.g. "serving cached plan v7"), else why not.
pub type Readiness = Result<String, String>;

/// Buckets (seconds) of every `*_duration_seconds` histogram: 100 µs to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the global Prometheus recorder once per process and returns its handle.
pub fn metrics_handle() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                // Request latencies are histograms (aggregatable across replicas),
                // not per-process summaries.
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .map_err(|e| format!("cannot configure the metrics recorder: {e}"))?
                .install_recorder()
                .map_err(|e| format!("cannot install the metrics recorder: {e}"))
        })
        .clone()
}

#[derive(Clone)]
struct AdminState {
    metrics: PrometheusHandle,
    ready: watch::Receiver<Readiness>,
}

/// Serves the admin endpoints on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    ready: watch::Receiver<Readiness>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let metrics = metrics_handle()?;
    let state = Arc::new(AdminState { metrics, ready });
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready_page))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|e| format!("admin listener failed: {e}"))
}

async fn metrics_page(State(state): State<Arc<AdminState>>) -> String {
    state.metrics.render()
}

async fn ready_page(State(state): State<Arc<AdminState>>) -> (StatusCode, String) {
    match &*state.ready.borrow() {
        Ok(detail) if detail.is_empty() => (StatusCode::OK, "ready\n".to_string()),
        Ok(detail) => (StatusCode::OK, format!("ready: {detail}\n")),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}
