//! Test fixtures: an in-process fake control plane and real loopback probe targets
//! (HTTP, HTTPS with a self-signed certificate, TCP, DNS, a target that never
//! answers), all on ports picked at run time.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::Stream;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use meridian_prober::config::ProberConfig;
use meridian_prober::{Prober, Validated};
use meridian_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// Generous: the machines are two shared cores.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `check` until it returns `Some`, failing the test after `DEADLINE`.
pub async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// The fake control plane.
// ---------------------------------------------------------------------------

/// A result as a replica received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub result: pb::ProbeResult,
    pub sequence: u64,
    pub arrived: SystemTime,
}

impl Received {
    /// Identifies a result across replicas: target and original timestamp.
    pub fn id(&self) -> (String, String, i64, i32) {
        let t = self.result.observed_at.unwrap_or_default();
        (
            self.result.pop.clone(),
            self.result.endpoint.clone(),
            t.seconds,
            t.nanos,
        )
    }
    pub fn observed_at(&self) -> SystemTime {
        let t = self.result.observed_at.unwrap_or_default();
        SystemTime::UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos as u32)
    }
    pub fn class(&self) -> pb::FailureClass {
        pb::FailureClass::try_from(self.result.failure_class).unwrap_or(pb::FailureClass::Unspecified)
    }
}

/// What one replica has seen; it survives the replica's restarts.
#[derive(Debug)]
pub struct ReplicaState {
    latest: Mutex<Option<pb::ProbeAssignments>>,
    updates: broadcast::Sender<pb::AssignmentUpdate>,
    pub received: Mutex<Vec<Received>>,
    pub batches: Mutex<Vec<pb::ProbeResultBatch>>,
    pub authorization: Mutex<Vec<Option<String>>>,
    /// While false, batches are read but neither recorded nor acknowledged, like a
    /// replica that dies before it processed them.
    pub acking: std::sync::atomic::AtomicBool,
}

impl ReplicaState {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            latest: Mutex::new(None),
            updates: broadcast::channel(64).0,
            received: Mutex::new(Vec::new()),
            batches: Mutex::new(Vec::new()),
            authorization: Mutex::new(Vec::new()),
            acking: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Publishes an assignment set to connected probers and to those that connect later.
    pub fn assign(&self, a: pb::ProbeAssignments) {
        *self.latest.lock().unwrap() = Some(a.clone());
        let _ = self.updates.send(pb::AssignmentUpdate {
            update: Some(pb::assignment_update::Update::Assignments(a)),
        });
    }

    /// Asks connected probers to probe these (pop, endpoint) targets now, as the
    /// control plane does when another region saw them fail.
    pub fn probe_now(&self, targets: &[(&str, &str)]) {
        let targets = targets
            .iter()
            .map(|(pop, endpoint)| pb::ProbeNowTarget {
                pop: pop.to_string(),
                endpoint: endpoint.to_string(),
                region: "elsewhere".into(),
                failure_class: pb::FailureClass::Refused as i32,
            })
            .collect();
        let _ = self.updates.send(pb::AssignmentUpdate {
            update: Some(pb::assignment_update::Update::ProbeNow(pb::ProbeNow { targets })),
        });
    }

    pub fn results(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn results_for(&self, endpoint: &str) -> Vec<Received> {
        self.results()
            .into_iter()
            .filter(|r| r.result.endpoint == endpoint)
            .collect()
    }

    /// The latest result per endpoint.
    pub fn latest(&self) -> BTreeMap<String, Received> {
        let mut out = BTreeMap::new();
        for r in self.results() {
            out.insert(r.result.endpoint.clone(), r);
        }
        out
    }
}

struct FakeService {
    state: Arc<ReplicaState>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn auth_of<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[tonic::async_trait]
impl pb::probe_service_server::ProbeService for FakeService {
    type WatchAssignmentsStream = BoxStream<pb::AssignmentUpdate>;
    type ReportResultsStream = BoxStream<pb::ProbeResultAck>;

    async fn watch_assignments(
        &self,
        req: Request<pb::WatchAssignmentsRequest>,
    ) -> Result<Response<Self::WatchAssignmentsStream>, Status> {
        self.state.authorization.lock().unwrap().push(auth_of(&req));
        let mut updates = self.state.updates.subscribe();
        let first = self.state.latest.lock().unwrap().clone();
        let stream = async_stream(move |tx| async move {
            if let Some(a) = first {
                let first = pb::AssignmentUpdate {
                    update: Some(pb::assignment_update::Update::Assignments(a)),
                };
                if tx.send(Ok(first)).await.is_err() {
                    return;
                }
            }
            while let Ok(a) = updates.recv().await {
                if tx.send(Ok(a)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn report_results(
        &self,
        req: Request<Streaming<pb::ProbeResultBatch>>,
    ) -> Result<Response<Self::ReportResultsStream>, Status> {
        self.state.authorization.lock().unwrap().push(auth_of(&req));
        let mut incoming = req.into_inner();
        let state = self.state.clone();
        let stream = async_stream(move |tx| async move {
            while let Ok(Some(batch)) = incoming.message().await {
                if !state.acking.load(Ordering::SeqCst) {
                    continue;
                }
                let arrived = SystemTime::now();
                let n = batch.results.len() as u32;
                {
                    let mut received = state.received.lock().unwrap();
                    for r in &batch.results {
                        received.push(Received {
                            result: r.clone(),
                            sequence: batch.sequence,
                            arrived,
                        });
                    }
                }
                let sequence = batch.sequence;
                state.batches.lock().unwrap().push(batch);
                let ack = pb::ProbeResultAck {
                    sequence,
                    accepted: n,
                    rejected: 0,
                    errors: vec![],
                };
                if tx.send(Ok(ack)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// A stream fed by a task.
fn async_stream<T, F, Fut>(body: F) -> BoxStream<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(body(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// A fake replica serving on its own runtime and thread, so that stopping it
/// closes every connection at once, like a killed process.
pub struct FakeReplica {
    pub addr: SocketAddr,
    pub state: Arc<ReplicaState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeReplica {
    /// Starts on `port` (0 for any), retrying while a just-closed port is busy.
    pub fn start(state: Arc<ReplicaState>, port: u16) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let svc_state = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let start = std::time::Instant::now();
                let listener = loop {
                    match TcpListener::bind(("127.0.0.1", port)).await {
                        Ok(l) => break l,
                        Err(e) if start.elapsed() < DEADLINE => {
                            let _ = e;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("cannot bind 127.0.0.1:{port}: {e}"),
                    }
                };
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let server = tonic::transport::Server::builder()
                    .add_service(pb::probe_service_server::ProbeServiceServer::new(FakeService {
                        state: svc_state,
                    }))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
                tokio::select! {
                    _ = server => {}
                    _ = stop_rx => {}
                }
            });
            rt.shutdown_background();
        });
        let addr = addr_rx.recv_timeout(DEADLINE).expect("the fake replica did not start");
        Self {
            addr,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the replica: its runtime is dropped, closing every connection.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FakeReplica {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// The prober under test.
// ---------------------------------------------------------------------------

pub fn prober_config(endpoints: Vec<String>) -> ProberConfig {
    ProberConfig {
        prober_id: "p1".into(),
        region: "eu-west".into(),
        control_plane: endpoints,
        batch_interval: Duration::from_millis(50),
        reconnect_initial: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(400),
        connect_timeout: Duration::from_secs(2),
        shutdown_grace: Duration::from_secs(10),
        ..Default::default()
    }
}

pub struct RunningProber {
    pub prober: Prober,
    pub shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl RunningProber {
    pub fn start(config: ProberConfig) -> Self {
        let validated: Validated = config.validate("test").unwrap();
        let prober = Prober::new(validated).unwrap();
        let shutdown = CancellationToken::new();
        let p = prober.clone();
        let token = shutdown.clone();
        let task = tokio::spawn(async move { p.run(token).await });
        Self {
            prober,
            shutdown,
            task: Some(task),
        }
    }

    /// Shuts down and waits (bounded) for the flush to end.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("the prober did not stop in time")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for RunningProber {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

// ---------------------------------------------------------------------------
// Assignment builders.
// ---------------------------------------------------------------------------

pub fn dur(d: Duration) -> Option<prost_types::Duration> {
    Some(prost_types::Duration::try_from(d).unwrap())
}

pub fn target(pop: &str, endpoint: &str, check: pb::probe_target::Check) -> pb::ProbeTarget {
    pb::ProbeTarget {
        pop: pop.into(),
        endpoint: endpoint.into(),
        interval: dur(Duration::from_millis(250)),
        confirm_interval: dur(Duration::from_millis(100)),
        connect_timeout: dur(Duration::from_millis(500)),
        response_timeout: dur(Duration::from_millis(500)),
        rise: 2,
        fall: 2,
        jitter: 0.05,
        check: Some(check),
    }
}

pub fn http(url: String) -> pb::probe_target::Check {
    pb::probe_target::Check::Http(pb::HttpCheck {
        url,
        ..Default::default()
    })
}

pub fn tcp(addr: SocketAddr) -> pb::probe_target::Check {
    pb::probe_target::Check::Tcp(pb::TcpCheck {
        address: addr.to_string(),
    })
}

pub fn assignments(version: u64, targets: Vec<pb::ProbeTarget>) -> pb::ProbeAssignments {
    pb::ProbeAssignments {
        version,
        targets,
        max_concurrency: 0,
        batch_interval: None,
        phase: None,
    }
}

// ---------------------------------------------------------------------------
// Probe targets.
// ---------------------------------------------------------------------------

/// A minimal HTTP/1.1 server answering every request with `status` and `body`.
pub struct HttpTarget {
    pub addr: SocketAddr,
    pub status: Arc<AtomicU16>,
    task: JoinHandle<()>,
}

impl HttpTarget {
    pub async fn start(body: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(200));
        let s = status.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let code = s.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    if read_head(&mut conn).await {
                        let resp = format!(
                            "HTTP/1.1 {code} Status\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = conn.write_all(resp.as_bytes()).await;
                        let _ = conn.shutdown().await;
                    }
                });
            }
        });
        Self { addr, status, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }

    /// Closes the listener: new connections are refused.
    pub async fn close(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn read_head<S: tokio::io::AsyncRead + Unpin>(conn: &mut S) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    return true;
                }
                if buf.len() > 64 * 1024 {
                    return false;
                }
            }
        }
    }
}

/// A server that answers a request with bytes that are not HTTP.
pub async fn garbage_target() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if read_head(&mut conn).await {
                    let _ = conn.write_all(b"\x00\x01garbage \xff\xfe not http\r\n\r\n").await;
                    let _ = conn.shutdown().await;
                }
            });
        }
    });
    (addr, task)
}

/// A server that accepts connections and never says anything.
pub async fn silent_target() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((conn, _)) = listener.accept().await else { return };
            held.push(conn);
        }
    });
    (addr, task)
}

/// A plain TCP listener that accepts and closes.
pub async fn tcp_target_on(port: u16) -> (SocketAddr, JoinHandle<()>) {
    let start = std::time::Instant::now();
    let listener = loop {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => break l,
            Err(e) => {
                assert!(start.elapsed() < DEADLINE, "cannot bind 127.0.0.1:{port}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else { return };
            drop(conn);
        }
    });
    (addr, task)
}

/// An HTTPS server with a self-signed certificate for `localhost`.
pub async fn tls_target() -> (SocketAddr, JoinHandle<()>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(conn).await else {
                    return;
                };
                if read_head(&mut tls).await {
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                        .await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    (addr, task)
}

/// A DNS responder answering every query with `rcode` and, for NOERROR, one A
/// record 192.0.2.1.
pub async fn dns_target(rcode: ResponseCode) -> (SocketAddr, JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut resp = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
            resp.metadata.response_code = rcode;
            resp.metadata.recursion_desired = query.metadata.recursion_desired;
            for q in &query.queries {
                resp.add_query(q.clone());
                if rcode == ResponseCode::NoError {
                    resp.add_answer(Record::from_rdata(q.name().clone(), 60, RData::A(A::new(192, 0, 2, 1))));
                }
            }
            if let Ok(bytes) = resp.to_vec() {
                let _ = socket.send_to(&bytes, peer).await;
            }
        }
    });
    (addr, task)
}

pub fn dns(server: SocketAddr, expected_rcode: &str, expected_answer: &str) -> pb::probe_target::Check {
    pb::probe_target::Check::Dns(pb::DnsCheck {
        server: server.to_string(),
        name: "www.example.com".into(),
        record_type: "A".into(),
        expected_rcode: expected_rcode.into(),
        expected_answer: expected_answer.into(),
    })
}
