//! The admin listener: `/metrics`, `/live` and `/ready`, like every Meridian daemon,
//! except that a ready agent's `/ready` body says *what* it serves ("serving cached
//! plan v7; control plane unreachable: ..."). The shared `meridian_daemon::admin`
//! answers a bare "ready" for `Ok`, which would hide exactly what an SRE needs to
//! see during a control-plane outage; this module can go once the shared one takes
//! a detail with readiness.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::status::Readiness;

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
    let metrics = meridian_daemon::admin::metrics_handle()?;
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
        Ok(detail) => (StatusCode::OK, format!("ready: {detail}\n")),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}
