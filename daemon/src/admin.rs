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

/// Serves the admin endpoints on `listener` until `shutdown` fires, open and in
/// plaintext (loopback listeners).
pub async fn serve(
    listener: TcpListener,
    ready: watch::Receiver<Readiness>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    serve_with(listener, ready, shutdown, AdminAccess::default()).await
}

/// Decides whether a request to the admin port may be served, from its
/// `authorization` header and the client certificate (DER) it presented over TLS:
/// `Err((status, why))` refuses it.
pub type AdminCheck = dyn Fn(Option<&str>, Option<&[u8]>) -> Result<(), (u16, String)> + Send + Sync;

/// How the admin port is reached: TLS or not, open or checked.
#[derive(Clone, Default)]
pub struct AdminAccess {
    /// Serve over TLS with this configuration (`None`: plaintext).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Check every request (`None`: open).
    pub check: Option<Arc<AdminCheck>>,
}

impl std::fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAccess")
            .field("tls", &self.tls.is_some())
            .field("check", &self.check.is_some())
            .finish()
    }
}

/// Serves the admin endpoints with `access` until `shutdown` fires.
pub async fn serve_with(
    listener: TcpListener,
    ready: watch::Receiver<Readiness>,
    shutdown: CancellationToken,
    access: AdminAccess,
) -> Result<(), String> {
    let metrics = metrics_handle()?;
    let state = Arc::new(AdminState { metrics, ready });
    let mut app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready_page))
        .with_state(state);
    if let Some(check) = access.check.clone() {
        app = app.layer(axum::middleware::from_fn(move |req, next| {
            let check = check.clone();
            checked(check, req, next)
        }));
    }
    let stop = async move { shutdown.cancelled().await };
    match access.tls {
        None => axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
            .with_graceful_shutdown(stop)
            .await
            .map_err(|e| format!("admin listener failed: {e}")),
        Some(config) => {
            let tls = TlsListener {
                inner: listener,
                acceptor: tokio_rustls::TlsAcceptor::from(config),
            };
            axum::serve(tls, app.into_make_service_with_connect_info::<Peer>())
                .with_graceful_shutdown(stop)
                .await
                .map_err(|e| format!("admin listener failed: {e}"))
        }
    }
}

/// The client certificate a connection presented (TLS only).
#[derive(Clone, Debug, Default)]
struct Peer(Option<Arc<Vec<u8>>>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(_: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        Peer(None)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        let (_, session) = stream.io().get_ref();
        Peer(
            session
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| Arc::new(c.as_ref().to_vec())),
        )
    }
}

async fn checked(
    check: Arc<AdminCheck>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<Peer>>()
        .and_then(|c| c.0 .0.clone());
    let authorization = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match check(authorization.as_deref(), peer.as_deref().map(Vec::as_slice)) {
        Ok(()) => next.run(req).await,
        Err((code, why)) => {
            metrics::counter!("meridian_admin_requests_refused_total").increment(1);
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN);
            (status, format!("{why}\n")).into_response()
        }
    }
}

/// A TCP listener whose connections are TLS; a failed or slow handshake is counted
/// and dropped without holding up the next connection for more than 5 s.
struct TlsListener {
    inner: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.inner.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "admin listener: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            match tokio::time::timeout(std::time::Duration::from_secs(5), self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => {
                    metrics::counter!("meridian_admin_tls_handshake_failures_total").increment(1);
                    tracing::debug!(error = %e, peer = %addr, "admin listener: TLS handshake failed");
                }
                Err(_) => {
                    metrics::counter!("meridian_admin_tls_handshake_failures_total").increment(1);
                    tracing::debug!(peer = %addr, "admin listener: TLS handshake timed out");
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
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
