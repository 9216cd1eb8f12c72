//! Bounds on the gRPC server, one tower layer in front of every service (with the
//! authorization layer): unary calls hold one permit of a fixed pool while they run
//! and are shed at once (RESOURCE_EXHAUSTED) when none is free, and each runs under a
//! deadline (DEADLINE_EXCEEDED); every call is timed into
//! `meridian_control_plane_rpc_duration_seconds{rpc, code}`.
//!
//! Long-lived streams (plan watches, probe streams) never hold a permit for their
//! life: they are bounded by count caps where they are registered (`plan_api`,
//! `probe_api`), sized above the fan-out goal. Decision: shed rather than queue — a
//! queued operator call that runs after its client gave up is worse than a clear
//! "retry", and probers and agents back off by themselves.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// Streaming RPCs: not limited by the unary pool or deadline.
const STREAMING: &[&str] = &[
    "/meridian.v1.ProbeService/WatchAssignments",
    "/meridian.v1.ProbeService/ReportResults",
    "/meridian.v1.PlanService/WatchPlan",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The `[limits]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Unary calls served at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_concurrent_unary: usize,
    /// The longest a unary call may run.
    #[serde(with = "humantime_serde")]
    pub unary_timeout: Duration,
    /// The largest message accepted (bytes); larger ones are refused.
    pub max_message_bytes: usize,
    /// Plan watches (edge agents) open at once on this replica.
    pub max_agent_streams: usize,
    /// Probe streams (assignments and results) open at once on this replica.
    pub max_probe_streams: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_concurrent_unary: 512,
            unary_timeout: Duration::from_secs(30),
            max_message_bytes: 4 * 1024 * 1024,
            max_agent_streams: 60_000,
            max_probe_streams: 20_000,
        }
    }
}

impl LimitSettings {
    /// Checks the values; the error names the key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_concurrent_unary == 0 {
            return Err(("limits.max_concurrent_unary", "must be at least 1".into()));
        }
        if self.unary_timeout < Duration::from_millis(100) {
            return Err(("limits.unary_timeout", "must be at least 100ms".into()));
        }
        if self.max_message_bytes < 64 * 1024 {
            return Err(("limits.max_message_bytes", "must be at least 64 KiB".into()));
        }
        if self.max_agent_streams == 0 || self.max_probe_streams == 0 {
            return Err(("limits.max_agent_streams", "stream caps must be at least 1".into()));
        }
        Ok(())
    }
}

/// A count of open streams with a cap; a [`StreamSlot`] holds one until dropped.
#[derive(Debug)]
pub struct StreamCap {
    what: &'static str,
    cap: usize,
    open: std::sync::atomic::AtomicUsize,
}

/// One open stream, released on drop.
#[derive(Debug)]
pub struct StreamSlot(Arc<StreamCap>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl StreamCap {
    pub fn new(what: &'static str, cap: usize) -> Arc<Self> {
        Arc::new(StreamCap {
            what,
            cap,
            open: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// A slot, or RESOURCE_EXHAUSTED naming the cap.
    pub fn acquire(self: &Arc<Self>) -> Result<StreamSlot, tonic::Status> {
        use std::sync::atomic::Ordering;
        let mut open = self.open.load(Ordering::Acquire);
        loop {
            if open >= self.cap {
                metrics::counter!("meridian_control_plane_rpc_shed_total", "reason" => self.what).increment(1);
                return Err(tonic::Status::resource_exhausted(format!(
                    "this replica already serves {} {} (limits.max_{}); connect to another replica or retry later",
                    self.cap, self.what, self.what
                )));
            }
            match self
                .open
                .compare_exchange_weak(open, open + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(StreamSlot(self.clone())),
                Err(now) => open = now,
            }
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The layer.
#[derive(Clone, Debug)]
pub struct LimitsLayer {
    unary: Arc<Semaphore>,
    max_unary: usize,
    timeout: Duration,
}

impl LimitsLayer {
    pub fn new(settings: &LimitSettings) -> Self {
        Self {
            unary: Arc::new(Semaphore::new(settings.max_concurrent_unary)),
            max_unary: settings.max_concurrent_unary,
            timeout: settings.unary_timeout,
        }
    }
}

impl<S> tower::Layer<S> for LimitsLayer {
    type Service = Limits<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Limits {
            inner,
            layer: self.clone(),
        }
    }
}

/// [`LimitsLayer`]'s service.
#[derive(Clone, Debug)]
pub struct Limits<S> {
    inner: S,
    layer: LimitsLayer,
}

/// The `rpc` label: a known path, or `other` (a label value never comes from input).
fn rpc_label(path: &str) -> &'static str {
    crate::authz::RPC_ACCESS
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(p, _)| *p)
        .unwrap_or("other")
}

/// tonic refuses a message over `max_decoding_message_size` as OUT_OF_RANGE; what
/// the caller ran into is a resource limit, so it is said as RESOURCE_EXHAUSTED
/// (with tonic's message, which names the size and the limit).
fn oversize_as_resource_exhausted(resp: &mut http::Response<tonic::body::Body>) {
    let headers = resp.headers_mut();
    let out_of_range = headers.get("grpc-status").is_some_and(|v| v.as_bytes() == b"11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.contains("message%20length%20too%20large") || m.contains("message length too large"));
    if out_of_range && too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        metrics::counter!("meridian_control_plane_rpc_shed_total", "reason" => "message_size").increment(1);
    }
}

fn code_label(resp: &http::Response<tonic::body::Body>) -> String {
    resp.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(|c| format!("{:?}", tonic::Code::from_i32(c)))
        .unwrap_or_else(|| "Ok".into())
}

impl<S, B> tower::Service<http::Request<B>> for Limits<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let rpc = rpc_label(req.uri().path());
        let started = Instant::now();
        if STREAMING.contains(&req.uri().path()) {
            let fut = self.inner.call(req);
            return Box::pin(async move {
                let mut resp = fut.await?;
                oversize_as_resource_exhausted(&mut resp);
                metrics::histogram!("meridian_control_plane_rpc_duration_seconds", "rpc" => rpc, "code" => code_label(&resp))
                    .record(started.elapsed().as_secs_f64());
                Ok(resp)
            });
        }
        let permit = match self.layer.unary.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                metrics::counter!("meridian_control_plane_rpc_shed_total", "reason" => "unary_concurrency")
                    .increment(1);
                let status = tonic::Status::resource_exhausted(format!(
                    "this replica is serving its limit of {} calls at once (limits.max_concurrent_unary); retry with backoff",
                    self.layer.max_unary
                ));
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        let timeout = self.layer.timeout;
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r?,
                Err(_) => {
                    metrics::counter!("meridian_control_plane_rpc_timeouts_total", "rpc" => rpc).increment(1);
                    tonic::Status::deadline_exceeded(format!(
                        "{rpc} did not finish within {timeout:?} (limits.unary_timeout)"
                    ))
                    .into_http()
                }
            };
            drop(permit);
            oversize_as_resource_exhausted(&mut resp);
            metrics::histogram!("meridian_control_plane_rpc_duration_seconds", "rpc" => rpc, "code" => code_label(&resp))
                .record(started.elapsed().as_secs_f64());
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_cap_admits_up_to_its_cap_and_frees_on_drop() {
        let cap = StreamCap::new("agent_streams", 2);
        let a = cap.acquire().unwrap();
        let _b = cap.acquire().unwrap();
        let err = cap.acquire().unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("limits.max_agent_streams"), "{}", err.message());
        drop(a);
        assert_eq!(cap.open(), 1);
        assert!(cap.acquire().is_ok());
    }

    #[test]
    fn every_streaming_rpc_has_an_access_rule() {
        for path in STREAMING {
            assert!(crate::authz::access(path).is_some(), "{path}");
        }
    }

    #[test]
    fn settings_are_checked() {
        assert!(LimitSettings::default().check().is_ok());
        let zero = LimitSettings {
            max_concurrent_unary: 0,
            ..LimitSettings::default()
        };
        assert_eq!(zero.check().unwrap_err().0, "limits.max_concurrent_unary");
    }
}

#[cfg(test)]
mod layer_tests {
    use std::future::Future;
    use std::pin::Pin;

    use tower::{Layer, Service};

    use super::*;

    /// An inner service whose calls finish when `gate` opens.
    #[derive(Clone)]
    struct Gated {
        gate: Arc<tokio::sync::Notify>,
    }

    impl Service<http::Request<()>> for Gated {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let gate = self.gate.clone();
            Box::pin(async move {
                gate.notified().await;
                Ok(http::Response::new(tonic::body::Body::empty()))
            })
        }
    }

    fn request(path: &str) -> http::Request<()> {
        http::Request::builder().uri(path).body(()).unwrap()
    }

    fn status(resp: &http::Response<tonic::body::Body>) -> Option<&str> {
        resp.headers().get("grpc-status").and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn unary_calls_over_the_pool_are_shed_and_streams_are_not_counted() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let settings = LimitSettings {
            max_concurrent_unary: 1,
            ..LimitSettings::default()
        };
        let mut svc = LimitsLayer::new(&settings).layer(Gated { gate: gate.clone() });
        let first = tokio::spawn(svc.call(request("/meridian.v1.QueryService/GetStatus")));
        // Let the first call take the only permit.
        tokio::task::yield_now().await;
        let shed = svc.call(request("/meridian.v1.QueryService/GetHealth")).await.unwrap();
        assert_eq!(status(&shed), Some("8"), "RESOURCE_EXHAUSTED");
        // A stream is not limited by the unary pool.
        let stream = tokio::spawn(svc.call(request("/meridian.v1.PlanService/WatchPlan")));
        tokio::task::yield_now().await;
        gate.notify_waiters();
        let done = first.await.unwrap().unwrap();
        assert_eq!(status(&done), None, "the first call finished normally");
        assert_eq!(status(&stream.await.unwrap().unwrap()), None);
        // The permit came back.
        let again = tokio::spawn(svc.call(request("/meridian.v1.QueryService/GetStatus")));
        tokio::task::yield_now().await;
        gate.notify_waiters();
        assert_eq!(status(&again.await.unwrap().unwrap()), None);
    }

    #[tokio::test]
    async fn a_unary_call_past_its_deadline_is_ended_with_deadline_exceeded() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let settings = LimitSettings {
            unary_timeout: Duration::from_millis(100),
            ..LimitSettings::default()
        };
        let mut svc = LimitsLayer::new(&settings).layer(Gated { gate });
        let resp = svc.call(request("/meridian.v1.QueryService/GetStatus")).await.unwrap();
        assert_eq!(status(&resp), Some("4"), "DEADLINE_EXCEEDED");
    }
}
