//! The etcd backend: [`EtcdStore`] maps the [`Store`] trait onto etcd's KV, Txn,
//! Watch and Lease APIs through `etcd-client`, and makes a cluster with a dead member
//! look healthy to callers.
//!
//! etcd-client keeps every configured endpoint in one load-balanced gRPC channel and
//! never drops a dead one: while a member is down, a share of requests fails with
//! `Unavailable … tcp connect error`. Two mechanisms hide that:
//!
//! * **Bounded retries** with exponential backoff and jitter ([`RetryPolicy`]), counted
//!   in `meridian_store_etcd_retries_total{op}`. Reads, puts, deletes and lease calls
//!   are retried on any transient failure. A transaction is retried only when the
//!   failure proves the request never reached a server (connect error, no leader,
//!   proposal dropped): an ambiguous failure (timeout, leader change, broken
//!   connection) may have committed it, and running a compare-and-swap twice is not
//!   idempotent, so the caller gets [`StoreError::Unavailable`] and re-reads. The
//!   price of retrying puts: one whose reply was lost can land twice (two revisions,
//!   same key and value), which watchers see as two events.
//! * **A health-check task** probes every configured endpoint once a second with its
//!   own short-lived connection (`Maintenance/Status`) and removes dead or leaderless
//!   members from the shared client (`remove_endpoint`), adding them back when they
//!   answer again (`add_endpoint`). The last endpoint is never removed. The task ends
//!   when the store is dropped.
//!
//! Watches resume transparently: when a watch stream breaks (its member died), it is
//! re-created from the revision after the last one delivered, on whatever member the
//! channel picks, so callers see neither a gap nor a duplicate. (If compaction passed
//! that revision while the watch was down, the caller gets [`StoreError::Compacted`]
//! and re-lists, as for any compacted start revision.) A watch without a start
//! revision starts after a linearizable read of the current revision, not at the
//! serving member's revision: that one lags on a slow follower, and the watch would
//! replay writes acknowledged before it was asked for.
//!
//! Rejected alternative: one client per endpoint with our own fail-over (pick a
//! member, stick to it until it fails). It duplicates the balancing etcd-client already
//! does, needs its own connection management, and still needs the same retry
//! classification; pruning the shared client's endpoint set keeps one channel and one
//! code path.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client as ec;
use futures::future::join_all;
use rand::Rng;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::{
    BackendKind, Compare, CompareOp, KeyValue, Lease, LeaseId, RangeResponse, Revision, Store, StoreError, StoreHealth,
    Txn, TxnOp, TxnOpResponse, TxnResponse, WatchBatch, WatchEvent, WatchStream,
};

/// Counter of retried etcd requests, labelled by `op`.
pub const RETRIES_METRIC: &str = "meridian_store_etcd_retries_total";

/// How often the background task probes each endpoint.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Consecutive probes a member may answer without knowing a leader (an election in
/// progress) before it is taken out of the client.
const LEADERLESS_PROBES_TOLERATED: u32 = 3;

/// TLS material for `https://` endpoints, as it appears in config files.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTls {
    /// PEM CA bundle that signed the etcd server certificates (system roots when unset).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for etcd's `--client-cert-auth`; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Server name to verify instead of the endpoint's host.
    pub domain: Option<String>,
}

/// Bounded retries with exponential backoff and jitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (at least 1).
    pub max_attempts: u32,
    /// Pause before the first retry; doubles on each further retry.
    pub initial_backoff: Duration,
    /// Upper bound of a pause.
    pub max_backoff: Duration,
    /// Attempts to re-create a broken watch before the stream fails. Larger than
    /// `max_attempts` because a watch outlives elections.
    pub watch_resume_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            watch_resume_attempts: 10,
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `retry` (1 for the first retry): the exponential
    /// step capped at `max_backoff`, of which a random half is jitter ("equal jitter"),
    /// so clients that failed together do not retry together.
    pub fn backoff(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(20);
        let step = self
            .initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff);
        let half = step / 2;
        let half_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rand::rng().random_range(0..=half_nanos))
    }
}

/// How to reach an etcd cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs (`http://host:port`, `https://host:port`, or `host:port`, which
    /// gets `https://` when `tls` is set and `http://` otherwise).
    pub endpoints: Vec<String>,
    pub tls: Option<EtcdTls>,
    /// Bound on establishing a connection, and on [`EtcdStore::connect`] as a whole.
    pub connect_timeout: Duration,
    /// Bound on each attempt of each request.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

impl EtcdConfig {
    /// A config for `endpoints` with default timeouts (connect 5 s, request 5 s) and
    /// retry policy.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            tls: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
        }
    }

    /// Parses a comma-separated endpoint list (`"http://a:2379,http://b:2379"`, as in
    /// `--etcd-endpoints` / `MERIDIAN_ETCD_ENDPOINTS`), with default settings.
    pub fn from_endpoints_str(list: &str) -> Result<Self, StoreError> {
        Ok(Self::new(parse_endpoints(list)?))
    }

    /// Checks the config; returns it unchanged when valid.
    pub fn validate(self) -> Result<Self, StoreError> {
        if self.endpoints.is_empty() {
            return Err(StoreError::InvalidRequest("no etcd endpoints configured".into()));
        }
        for endpoint in &self.endpoints {
            check_endpoint(endpoint)?;
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(StoreError::InvalidRequest(
                "etcd connect_timeout and request_timeout must be positive".into(),
            ));
        }
        if self.retry.max_attempts == 0 {
            return Err(StoreError::InvalidRequest(
                "etcd retry.max_attempts must be at least 1".into(),
            ));
        }
        Ok(self)
    }
}

/// Splits and checks a comma-separated endpoint list.
fn parse_endpoints(list: &str) -> Result<Vec<String>, StoreError> {
    if list.trim().is_empty() {
        return Err(StoreError::InvalidRequest("etcd endpoint list is empty".into()));
    }
    let mut endpoints = Vec::new();
    for (index, entry) in list.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(StoreError::InvalidRequest(format!(
                "etcd endpoint list {list:?}: entry {} is empty",
                index + 1
            )));
        }
        check_endpoint(entry)?;
        endpoints.push(entry.to_owned());
    }
    Ok(endpoints)
}

/// Rejects endpoints that cannot be a client URL.
fn check_endpoint(endpoint: &str) -> Result<(), StoreError> {
    let bad = |why: &str| Err(StoreError::InvalidRequest(format!("etcd endpoint {endpoint:?}: {why}")));
    if endpoint.is_empty() {
        return bad("is empty");
    }
    if endpoint.chars().any(char::is_whitespace) {
        return bad("contains whitespace");
    }
    let authority = match endpoint.split_once("://") {
        Some(("http" | "https", rest)) => rest,
        Some((scheme, _)) => return bad(&format!("unsupported scheme {scheme:?} (expected http or https)")),
        None => endpoint,
    };
    let authority = authority.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return bad("expected host:port");
    }
    Ok(())
}

/// Gives an endpoint an explicit scheme, so the string we add to and remove from the
/// client's endpoint set is the same URI etcd-client keys its channels by.
fn normalize_endpoint(endpoint: &str, tls: bool) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_owned()
    } else if tls {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

/// What one member said about itself (`Maintenance/Status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointStatus {
    pub endpoint: String,
    /// The answering member's id.
    pub member_id: u64,
    /// The leader this member knows of; 0 while there is none.
    pub leader_id: u64,
    /// The store revision this member has applied.
    pub revision: Revision,
    pub raft_term: u64,
}

impl EndpointStatus {
    pub fn is_leader(&self) -> bool {
        self.member_id != 0 && self.member_id == self.leader_id
    }

    pub fn has_leader(&self) -> bool {
        self.leader_id != 0
    }
}

/// Asks the single member at `endpoint` for its status over a connection of its own,
/// bounded by `timeout`. Used by the health checks and by tooling that needs to know
/// which member leads.
pub async fn probe_endpoint(
    endpoint: &str,
    tls: Option<&EtcdTls>,
    timeout: Duration,
) -> Result<EndpointStatus, StoreError> {
    let endpoint = normalize_endpoint(endpoint, tls.is_some());
    let mut options = ec::ConnectOptions::new().with_connect_timeout(timeout);
    if let Some(tls) = tls {
        options = options.with_tls(tls_options(tls)?);
    }
    probe(&endpoint, &options, timeout)
        .await
        .map_err(|failure| failure.into_store_error(&endpoint, None))
}

/// One status round trip to one member.
async fn probe(endpoint: &str, options: &ec::ConnectOptions, timeout: Duration) -> Result<EndpointStatus, Failure> {
    let attempt = async {
        let mut client = ec::Client::connect([endpoint], Some(options.clone())).await?;
        client.status().await
    };
    let status = match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(Failure::Etcd(e)),
        Err(_) => return Err(Failure::Timeout(timeout)),
    };
    let header = status
        .header()
        .ok_or(Failure::Protocol(EtcdProtocolError::MissingHeader("status")))?;
    Ok(EndpointStatus {
        endpoint: endpoint.to_owned(),
        member_id: header.member_id(),
        leader_id: status.leader(),
        revision: header.revision(),
        raft_term: status.raft_term(),
    })
}

/// Builds tonic TLS options from the config, reading the PEM files.
fn tls_options(tls: &EtcdTls) -> Result<ec::TlsOptions, StoreError> {
    fn read(what: &str, path: &Path) -> Result<Vec<u8>, StoreError> {
        std::fs::read(path).map_err(|e| StoreError::InvalidRequest(format!("etcd tls {what} {}: {e}", path.display())))
    }
    let mut options = ec::TlsOptions::new();
    match &tls.ca_file {
        Some(path) => options = options.ca_certificate(ec::Certificate::from_pem(read("ca_file", path)?)),
        None => options = options.with_enabled_roots(),
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            options = options.identity(ec::Identity::from_pem(read("cert_file", cert)?, read("key_file", key)?));
        }
        (None, None) => {}
        _ => {
            return Err(StoreError::InvalidRequest(
                "etcd tls: cert_file and key_file must be given together".into(),
            ))
        }
    }
    if let Some(domain) = &tls.domain {
        options = options.domain_name(domain.clone());
    }
    Ok(options)
}

/// Errors of our own about what etcd sent.
#[derive(Debug, thiserror::Error)]
enum EtcdProtocolError {
    #[error("etcd sent a {0} response without a header")]
    MissingHeader(&'static str),
    #[error("etcd returned a key that is not UTF-8: {0:?}")]
    NonUtf8Key(String),
    #[error("etcd lease grant failed: {0}")]
    LeaseGrant(String),
    #[error("etcd watch was canceled by the server: {0}")]
    WatchCanceled(String),
    #[error("etcd watch stream did not confirm creation")]
    WatchNotCreated,
}

/// A request timed out on our side.
#[derive(Debug, thiserror::Error)]
#[error("etcd request timed out after {0:?}")]
struct TimedOut(Duration);

/// No endpoint answered while connecting.
#[derive(Debug, thiserror::Error)]
#[error("no etcd endpoint answered a status request within {timeout:?}: {detail}")]
struct NoEndpointAnswered {
    timeout: Duration,
    detail: String,
}

/// Why one attempt failed.
#[derive(Debug)]
enum Failure {
    Etcd(ec::Error),
    Timeout(Duration),
    Protocol(EtcdProtocolError),
}

/// Whether an attempt may have had an effect on the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// The request provably did not take effect (never reached a server, or was
    /// refused before being proposed): safe to retry anything.
    NotSent,
    /// It may or may not have taken effect: retry only idempotent requests.
    Ambiguous,
    /// Retrying will not help.
    Fatal,
}

/// Which failures a request may be retried on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RetryMode {
    /// Reads and writes whose repetition is harmless (or harmless enough: a repeated
    /// put rewrites the same value).
    Idempotent,
    /// Compare-and-swap transactions.
    NotSentOnly,
}

fn message_of(e: &ec::Error) -> String {
    match e {
        ec::Error::GRpcStatus(status) => status.message().to_owned(),
        other => other.to_string(),
    }
}

impl Failure {
    fn class(&self) -> Class {
        match self {
            Failure::Timeout(_) => Class::Ambiguous,
            Failure::Protocol(_) => Class::Fatal,
            Failure::Etcd(ec::Error::TransportError(_)) => Class::NotSent,
            Failure::Etcd(ec::Error::GRpcStatus(status)) => classify_status(i32::from(status.code()), status.message()),
            Failure::Etcd(_) => Class::Fatal,
        }
    }

    fn message(&self) -> String {
        match self {
            Failure::Etcd(e) => message_of(e),
            Failure::Timeout(d) => TimedOut(*d).to_string(),
            Failure::Protocol(p) => p.to_string(),
        }
    }

    fn is_lease_not_found(&self) -> bool {
        matches!(self, Failure::Etcd(_)) && self.message().contains("lease not found")
    }

    /// Maps the failure to the store's error, naming `endpoints` when unreachable.
    fn into_store_error(self, endpoints: &str, lease: Option<LeaseId>) -> StoreError {
        let message = self.message();
        if let (Failure::Etcd(_), Some(lease)) = (&self, lease) {
            if message.contains("lease not found") {
                return StoreError::LeaseNotFound(lease);
            }
        }
        if message.contains("required revision is a future revision") {
            return StoreError::InvalidRequest(format!("revision is beyond the current revision ({message})"));
        }
        match self.class() {
            Class::NotSent | Class::Ambiguous => {
                let source: Box<dyn std::error::Error + Send + Sync> = match self {
                    Failure::Etcd(e) => Box::new(e),
                    Failure::Timeout(d) => Box::new(TimedOut(d)),
                    Failure::Protocol(p) => Box::new(p),
                };
                StoreError::Unavailable {
                    endpoints: endpoints.to_owned(),
                    source,
                }
            }
            Class::Fatal => match self {
                Failure::Etcd(ec::Error::GRpcStatus(status)) if i32::from(status.code()) == GRPC_INVALID_ARGUMENT => {
                    StoreError::InvalidRequest(status.message().to_owned())
                }
                Failure::Etcd(ec::Error::InvalidArgs(args)) => StoreError::InvalidRequest(args),
                Failure::Etcd(e) => StoreError::Backend(Box::new(e)),
                Failure::Timeout(d) => StoreError::Backend(Box::new(TimedOut(d))),
                Failure::Protocol(p) => StoreError::Backend(Box::new(p)),
            },
        }
    }
}

/// gRPC's InvalidArgument code (tonic is not a direct dependency of this crate).
const GRPC_INVALID_ARGUMENT: i32 = 3;

/// Classifies a gRPC status from etcd or from the transport.
fn classify_status(code: i32, message: &str) -> Class {
    let message = message.to_ascii_lowercase();
    // Refused before reaching raft: nothing was proposed.
    let not_sent = [
        "connect error",
        "connection refused",
        "error trying to connect",
        "dns error",
        "etcdserver: no leader",
        "etcdserver: too many requests",
        "raft proposal dropped",
        "etcdserver: not capable",
    ];
    if not_sent.iter().any(|m| message.contains(m)) {
        return Class::NotSent;
    }
    // 1 Cancelled (tonic's own timeout), 4 DeadlineExceeded, 14 Unavailable (leader
    // changed, request timed out, connection lost).
    if matches!(code, 1 | 4 | 14) {
        return Class::Ambiguous;
    }
    // 2 Unknown, 13 Internal: a connection that broke mid-request.
    let transport = [
        "transport error",
        "connection",
        "broken pipe",
        "h2 protocol error",
        "stream closed",
        "reset",
    ];
    if matches!(code, 2 | 13) && transport.iter().any(|m| message.contains(m)) {
        return Class::Ambiguous;
    }
    Class::Fatal
}

fn header_revision(header: Option<&ec::ResponseHeader>, what: &'static str) -> Result<Revision, StoreError> {
    header
        .map(ec::ResponseHeader::revision)
        .ok_or_else(|| StoreError::Backend(Box::new(EtcdProtocolError::MissingHeader(what))))
}

fn convert_kv(kv: &ec::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: key_string(kv)?,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: (kv.lease() != 0).then_some(kv.lease()),
    })
}

fn key_string(kv: &ec::KeyValue) -> Result<String, StoreError> {
    kv.key_str().map(str::to_owned).map_err(|_| {
        StoreError::Backend(Box::new(EtcdProtocolError::NonUtf8Key(
            String::from_utf8_lossy(kv.key()).into_owned(),
        )))
    })
}

fn compare_op(op: CompareOp) -> ec::CompareOp {
    match op {
        CompareOp::Equal => ec::CompareOp::Equal,
        CompareOp::NotEqual => ec::CompareOp::NotEqual,
        CompareOp::Less => ec::CompareOp::Less,
        CompareOp::Greater => ec::CompareOp::Greater,
    }
}

fn convert_compare(compare: &Compare) -> ec::Compare {
    match compare {
        Compare::CreateRevision { key, op, revision } => {
            ec::Compare::create_revision(key.as_str(), compare_op(*op), *revision)
        }
        Compare::ModRevision { key, op, revision } => {
            ec::Compare::mod_revision(key.as_str(), compare_op(*op), *revision)
        }
        Compare::Version { key, op, version } => ec::Compare::version(key.as_str(), compare_op(*op), *version),
        Compare::Value { key, op, value } => ec::Compare::value(key.as_str(), compare_op(*op), value.clone()),
    }
}

fn convert_op(op: &TxnOp) -> ec::TxnOp {
    match op {
        TxnOp::Put { key, value, lease } => {
            let options = lease.map(|lease| ec::PutOptions::new().with_lease(lease));
            ec::TxnOp::put(key.as_str(), value.clone(), options)
        }
        TxnOp::Delete { key } => ec::TxnOp::delete(key.as_str(), None),
        TxnOp::DeletePrefix { prefix } => {
            ec::TxnOp::delete(prefix.as_str(), Some(ec::DeleteOptions::new().with_prefix()))
        }
        TxnOp::Get { key } => ec::TxnOp::get(key.as_str(), None),
    }
}

fn convert_txn(txn: &Txn) -> ec::Txn {
    ec::Txn::new()
        .when(txn.compares.iter().map(convert_compare).collect::<Vec<_>>())
        .and_then(txn.success.iter().map(convert_op).collect::<Vec<_>>())
        .or_else(txn.failure.iter().map(convert_op).collect::<Vec<_>>())
}

fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidRequest("empty key".into()));
    }
    Ok(())
}

fn check_txn(txn: &Txn) -> Result<(), StoreError> {
    for compare in &txn.compares {
        check_key(compare.key())?;
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } | TxnOp::Get { key } => check_key(key)?,
            TxnOp::DeletePrefix { prefix } => check_key(prefix)?,
        }
    }
    Ok(())
}

/// The lease a failed transaction most likely referred to, for [`StoreError::LeaseNotFound`].
fn txn_lease(txn: &Txn) -> Option<LeaseId> {
    txn.success.iter().chain(&txn.failure).find_map(|op| match op {
        TxnOp::Put { lease: Some(lease), .. } => Some(*lease),
        _ => None,
    })
}

/// Seconds for a lease grant: rounded up, at least 1.
fn lease_seconds(ttl: Duration) -> i64 {
    let secs = ttl.as_secs().saturating_add(u64::from(ttl.subsec_nanos() > 0));
    i64::try_from(secs).unwrap_or(i64::MAX).max(1)
}

/// A store on an etcd cluster. See the module docs for how failures are handled.
pub struct EtcdStore {
    client: ec::Client,
    /// Normalized endpoints, as configured.
    endpoints: Vec<String>,
    /// `endpoints` joined with commas, for errors.
    endpoints_label: String,
    /// Options of the short-lived probe connections (health checks).
    probe_options: ec::ConnectOptions,
    request_timeout: Duration,
    retry: RetryPolicy,
    /// Cancelled on drop: ends the health-check task and every watch.
    shutdown: CancellationToken,
    _shutdown_on_drop: DropGuard,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the cluster and checks that at least one member answers within
    /// `connect_timeout` (etcd-client itself connects lazily and would not notice an
    /// unreachable cluster until the first request). Members that do not answer are
    /// left out of the client until the health check sees them back.
    pub async fn connect(config: EtcdConfig) -> Result<Self, StoreError> {
        let config = config.validate()?;
        let use_tls = config.tls.is_some();
        let endpoints: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| normalize_endpoint(e, use_tls))
            .collect();
        let endpoints_label = endpoints.join(",");

        let mut options = ec::ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            // A member cut off from the cluster refuses requests (and closes watches)
            // instead of serving stale data; we retry elsewhere.
            .with_require_leader(true);
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls_options(tls)?);
        }
        let client = ec::Client::connect(&endpoints, Some(options.clone()))
            .await
            .map_err(|e| match e {
                ec::Error::InvalidArgs(_) | ec::Error::InvalidUri(_) => {
                    StoreError::InvalidRequest(format!("etcd endpoints {endpoints_label}: {e}"))
                }
                other => StoreError::Backend(Box::new(other)),
            })?;

        // Probes must see a leaderless member answer (status reports leader 0) rather
        // than be refused, to tell "electing" from "down".
        let probe_options = options.clone().with_require_leader(false);
        let answered = wait_for_any_member(&endpoints, &probe_options, config.connect_timeout, &config.retry)
            .await
            .map_err(|source| StoreError::Unavailable {
                endpoints: endpoints_label.clone(),
                source: Box::new(source),
            })?;

        let shutdown = CancellationToken::new();
        let mut checker = HealthChecker {
            client: client.clone(),
            options: probe_options.clone(),
            probe_timeout: config
                .request_timeout
                .clamp(Duration::from_millis(500), Duration::from_secs(2)),
            endpoints: endpoints
                .iter()
                .map(|endpoint| EndpointState {
                    endpoint: endpoint.clone(),
                    in_client: true,
                    good: true,
                    leaderless: 0,
                })
                .collect(),
        };
        // Take the members that did not answer out right away.
        checker.apply(&answered).await;
        tokio::spawn(checker.run(shutdown.clone()));

        tracing::info!(endpoints = %endpoints_label, "connected to etcd");
        Ok(EtcdStore {
            client,
            endpoints,
            endpoints_label,
            probe_options,
            request_timeout: config.request_timeout,
            retry: config.retry,
            _shutdown_on_drop: shutdown.clone().drop_guard(),
            shutdown,
        })
    }

    /// The configured endpoints, normalized (with scheme).
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Runs one request with the retry policy: each attempt bounded by the request
    /// timeout, retried as `mode` allows. On failure, also says whether an earlier
    /// attempt may have taken effect.
    async fn call<T, F, Fut>(&self, op: &'static str, mode: RetryMode, mut attempt: F) -> Result<T, Failed>
    where
        F: FnMut(ec::Client) -> Fut,
        Fut: Future<Output = Result<T, ec::Error>>,
    {
        let mut maybe_applied = false;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let failure = match tokio::time::timeout(self.request_timeout, attempt(self.client.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => Failure::Etcd(e),
                Err(_) => Failure::Timeout(self.request_timeout),
            };
            let class = failure.class();
            let retry = match class {
                Class::NotSent => true,
                Class::Ambiguous => mode == RetryMode::Idempotent,
                Class::Fatal => false,
            };
            if !retry || attempts >= self.retry.max_attempts {
                return Err(Failed { failure, maybe_applied });
            }
            maybe_applied |= class == Class::Ambiguous;
            metrics::counter!(RETRIES_METRIC, "op" => op).increment(1);
            let pause = self.retry.backoff(attempts);
            tracing::debug!(op, attempt = attempts, ?pause, error = %failure.message(), "retrying etcd request");
            tokio::time::sleep(pause).await;
        }
    }

    fn error(&self, failed: Failed, lease: Option<LeaseId>) -> StoreError {
        failed.failure.into_store_error(&self.endpoints_label, lease)
    }
}

/// A request that failed after its retries.
#[derive(Debug)]
struct Failed {
    failure: Failure,
    /// An earlier attempt failed ambiguously and may have been applied.
    maybe_applied: bool,
}

/// Probes every endpoint until one answers or `timeout` passes; returns each
/// endpoint's last probe result.
async fn wait_for_any_member(
    endpoints: &[String],
    options: &ec::ConnectOptions,
    timeout: Duration,
    retry: &RetryPolicy,
) -> Result<Vec<Result<EndpointStatus, String>>, NoEndpointAnswered> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut round = 0;
    loop {
        round += 1;
        let remaining = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_millis(1));
        let results: Vec<Result<EndpointStatus, String>> =
            join_all(endpoints.iter().map(|endpoint| probe(endpoint, options, remaining)))
                .await
                .into_iter()
                .map(|r| r.map_err(|failure| failure.message()))
                .collect();
        if results.iter().any(Result::is_ok) {
            return Ok(results);
        }
        let pause = retry.backoff(round);
        if tokio::time::Instant::now() + pause >= deadline {
            let detail = endpoints
                .iter()
                .zip(&results)
                .map(|(endpoint, result)| match result {
                    Ok(_) => format!("{endpoint}: ok"),
                    Err(e) => format!("{endpoint}: {e}"),
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(NoEndpointAnswered { timeout, detail });
        }
        tokio::time::sleep(pause).await;
    }
}

/// The health checker's view of one endpoint.
#[derive(Debug)]
struct EndpointState {
    endpoint: String,
    /// Whether it is in the shared client's endpoint set.
    in_client: bool,
    /// Whether the last probe found it usable.
    good: bool,
    /// Consecutive probes that answered without a leader.
    leaderless: u32,
}

/// Keeps the shared client's endpoint set to the members that answer.
struct HealthChecker {
    client: ec::Client,
    options: ec::ConnectOptions,
    probe_timeout: Duration,
    endpoints: Vec<EndpointState>,
}

impl HealthChecker {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(HEALTH_CHECK_INTERVAL) => {}
            }
            let probes = join_all(
                self.endpoints
                    .iter()
                    .map(|state| probe(&state.endpoint, &self.options, self.probe_timeout)),
            );
            let results = tokio::select! {
                _ = shutdown.cancelled() => return,
                results = probes => results,
            };
            let results: Vec<_> = results
                .into_iter()
                .map(|r| r.map_err(|failure| failure.message()))
                .collect();
            self.apply(&results).await;
        }
    }

    /// Adds endpoints that came back and removes those that went bad, never the last.
    async fn apply(&mut self, results: &[Result<EndpointStatus, String>]) {
        for index in 0..self.endpoints.len() {
            let Some(result) = results.get(index) else { continue };
            let state = &mut self.endpoints[index];
            let good = match result {
                Ok(status) if status.has_leader() => {
                    state.leaderless = 0;
                    true
                }
                Ok(_) => {
                    state.leaderless += 1;
                    state.leaderless < LEADERLESS_PROBES_TOLERATED
                }
                Err(_) => false,
            };
            let was_good = state.good;
            state.good = good;
            if good && !was_good {
                // Re-insert even if it never left (it was the last one): a fresh
                // connection replaces whatever broken one the channel holds.
                match self.client.add_endpoint(&state.endpoint).await {
                    Ok(()) => {
                        tracing::info!(endpoint = %state.endpoint, "etcd endpoint answers again; using it");
                        state.in_client = true;
                    }
                    Err(e) => tracing::warn!(endpoint = %state.endpoint, error = %e, "could not add etcd endpoint"),
                }
            } else if !good && state.in_client {
                let in_client = self.endpoints.iter().filter(|s| s.in_client).count();
                let state = &mut self.endpoints[index];
                let why = match result {
                    Ok(_) => "no leader".to_owned(),
                    Err(e) => e.clone(),
                };
                if in_client <= 1 {
                    if was_good {
                        tracing::warn!(endpoint = %state.endpoint, error = %why, "last etcd endpoint is failing; keeping it");
                    }
                    continue;
                }
                match self.client.remove_endpoint(&state.endpoint).await {
                    Ok(()) => {
                        tracing::warn!(endpoint = %state.endpoint, error = %why, "etcd endpoint failing; not using it");
                        state.in_client = false;
                    }
                    Err(e) => tracing::warn!(endpoint = %state.endpoint, error = %e, "could not remove etcd endpoint"),
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    fn backend(&self) -> BackendKind {
        BackendKind::Etcd
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        check_key(key)?;
        let response = self
            .call("get", RetryMode::Idempotent, |mut client| {
                let key = key.to_owned();
                async move { client.get(key, None).await }
            })
            .await
            .map_err(|failed| self.error(failed, None))?;
        response.kvs().first().map(convert_kv).transpose()
    }

    async fn range(&self, prefix: &str) -> Result<RangeResponse, StoreError> {
        let response = self
            .call("range", RetryMode::Idempotent, |mut client| {
                let prefix = prefix.to_owned();
                async move { client.get(prefix, Some(ec::GetOptions::new().with_prefix())).await }
            })
            .await
            .map_err(|failed| self.error(failed, None))?;
        let kvs = response.kvs().iter().map(convert_kv).collect::<Result<Vec<_>, _>>()?;
        Ok(RangeResponse {
            kvs,
            revision: header_revision(response.header(), "range")?,
        })
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<Revision, StoreError> {
        check_key(key)?;
        let response = self
            .call("put", RetryMode::Idempotent, |mut client| {
                let key = key.to_owned();
                let value = value.clone();
                let options = lease.map(|lease| ec::PutOptions::new().with_lease(lease));
                async move { client.put(key, value, options).await }
            })
            .await
            .map_err(|failed| self.error(failed, lease))?;
        header_revision(response.header(), "put")
    }

    async fn delete(&self, key: &str) -> Result<u64, StoreError> {
        check_key(key)?;
        let response = self
            .call("delete", RetryMode::Idempotent, |mut client| {
                let key = key.to_owned();
                async move { client.delete(key, None).await }
            })
            .await
            .map_err(|failed| self.error(failed, None))?;
        Ok(u64::try_from(response.deleted()).unwrap_or(0))
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        // An empty prefix would wipe the whole keyspace, Meridian's and anyone else's.
        if prefix.is_empty() {
            return Err(StoreError::InvalidRequest(
                "delete_prefix needs a non-empty prefix".into(),
            ));
        }
        let response = self
            .call("delete_prefix", RetryMode::Idempotent, |mut client| {
                let prefix = prefix.to_owned();
                async move {
                    client
                        .delete(prefix, Some(ec::DeleteOptions::new().with_prefix()))
                        .await
                }
            })
            .await
            .map_err(|failed| self.error(failed, None))?;
        Ok(u64::try_from(response.deleted()).unwrap_or(0))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        check_txn(&txn)?;
        let response = self
            .call("txn", RetryMode::NotSentOnly, |mut client| {
                let request = convert_txn(&txn);
                async move { client.txn(request).await }
            })
            .await
            .map_err(|failed| self.error(failed, txn_lease(&txn)))?;
        let mut responses = Vec::new();
        for op in response.op_responses() {
            responses.push(match op {
                ec::TxnOpResponse::Put(_) => TxnOpResponse::Put,
                ec::TxnOpResponse::Delete(delete) => TxnOpResponse::Delete {
                    deleted: u64::try_from(delete.deleted()).unwrap_or(0),
                },
                ec::TxnOpResponse::Get(get) => TxnOpResponse::Get(get.kvs().first().map(convert_kv).transpose()?),
                // We never send nested transactions.
                ec::TxnOpResponse::Txn(_) => {
                    return Err(StoreError::Backend(
                        "etcd answered a nested transaction we did not send".into(),
                    ))
                }
            });
        }
        Ok(TxnResponse {
            succeeded: response.succeeded(),
            revision: header_revision(response.header(), "txn")?,
            responses,
        })
    }

    async fn watch_prefix(&self, prefix: &str, start_revision: Option<Revision>) -> Result<WatchStream, StoreError> {
        if let Some(start) = start_revision {
            if start < 1 {
                return Err(StoreError::InvalidRequest(format!(
                    "watch start revision {start} must be at least 1"
                )));
            }
        }
        let watcher = Watcher {
            client: self.client.clone(),
            prefix: prefix.to_owned(),
            request_timeout: self.request_timeout,
            retry: self.retry.clone(),
            endpoints_label: self.endpoints_label.clone(),
        };
        // "From the next revision on" must mean after every write acknowledged so far.
        // etcd's own default (the revision of the member that serves the watch) would
        // replay recent writes when that member lags behind the leader, so read the
        // current revision linearizably (through the leader) and watch from after it.
        let start = match start_revision {
            Some(start) => start,
            None => {
                let response = self
                    .call("watch", RetryMode::Idempotent, |mut client| {
                        // Any key will do; an empty one is not allowed.
                        let key = if prefix.is_empty() {
                            "\0".to_owned()
                        } else {
                            prefix.to_owned()
                        };
                        async move {
                            client
                                .get(key, Some(ec::GetOptions::new().with_keys_only().with_limit(1)))
                                .await
                        }
                    })
                    .await
                    .map_err(|failed| self.error(failed, None))?;
                header_revision(response.header(), "range")? + 1
            }
        };
        let opened = self
            .call("watch", RetryMode::Idempotent, |client| {
                let watcher = watcher.clone();
                async move { watcher.open(client, start).await }
            })
            .await
            .map_err(|failed| self.error(failed, None))?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(watcher.run(opened, tx, self.shutdown.child_token()));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<Lease, StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::InvalidRequest("lease TTL must be positive".into()));
        }
        let seconds = lease_seconds(ttl);
        let response = self
            .call("lease_grant", RetryMode::Idempotent, |mut client| async move {
                client.lease_grant(seconds, None).await
            })
            .await
            .map_err(|failed| self.error(failed, None))?;
        if !response.error().is_empty() {
            return Err(StoreError::Backend(Box::new(EtcdProtocolError::LeaseGrant(
                response.error().to_owned(),
            ))));
        }
        Ok(Lease {
            id: response.id(),
            ttl: Duration::from_secs(u64::try_from(response.ttl()).unwrap_or(0)),
        })
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let ttl = self
            .call("lease_keep_alive", RetryMode::Idempotent, |mut client| async move {
                // The first round trip refreshes the lease and fails with "lease not
                // found" on a TTL of 0, but etcd-client keeps that response to itself;
                // a second one on the same stream reads the remaining TTL.
                let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                match stream.message().await? {
                    Some(response) if response.ttl() > 0 => Ok(response.ttl()),
                    Some(_) => Err(ec::Error::LeaseKeepAliveError("lease not found".into())),
                    None => Err(ec::Error::LeaseKeepAliveError("keep-alive stream closed".into())),
                }
            })
            .await
            .map_err(|failed| self.error(failed, Some(lease)))?;
        Ok(Duration::from_secs(u64::try_from(ttl).unwrap_or(0)))
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        match self
            .call("lease_revoke", RetryMode::Idempotent, |mut client| async move {
                client.lease_revoke(lease).await
            })
            .await
        {
            Ok(_) => Ok(()),
            // An earlier attempt that timed out did revoke it.
            Err(failed) if failed.maybe_applied && failed.failure.is_lease_not_found() => Ok(()),
            Err(failed) => Err(self.error(failed, Some(lease))),
        }
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        if revision < 1 {
            return Err(StoreError::InvalidRequest(format!(
                "compact revision {revision} must be at least 1"
            )));
        }
        match self
            .call("compact", RetryMode::Idempotent, |mut client| async move {
                client.compact(revision, None).await
            })
            .await
        {
            Ok(_) => Ok(()),
            // History before `revision` is already gone: what was asked for holds.
            Err(failed)
                if failed
                    .failure
                    .message()
                    .contains("required revision has been compacted") =>
            {
                Ok(())
            }
            Err(failed)
                if failed
                    .failure
                    .message()
                    .contains("required revision is a future revision") =>
            {
                Err(StoreError::InvalidRequest(format!(
                    "cannot compact at revision {revision}: beyond the current revision"
                )))
            }
            Err(failed) => Err(self.error(failed, None)),
        }
    }

    async fn health(&self) -> StoreHealth {
        let timeout = self.request_timeout.min(Duration::from_secs(2));
        let results = join_all(
            self.endpoints
                .iter()
                .map(|endpoint| probe(endpoint, &self.probe_options, timeout)),
        )
        .await;
        let mut answered = Vec::new();
        let mut failed = Vec::new();
        let mut revision = None;
        for (endpoint, result) in self.endpoints.iter().zip(results) {
            match result {
                Ok(status) if status.has_leader() => {
                    revision = revision.max(Some(status.revision));
                    let role = if status.is_leader() { "leader" } else { "follower" };
                    answered.push(format!("{endpoint} ({role}, revision {})", status.revision));
                }
                Ok(_) => failed.push(format!("{endpoint}: answers but has no leader")),
                Err(failure) => failed.push(format!("{endpoint}: {}", failure.message())),
            }
        }
        let quorum = self.endpoints.len() / 2 + 1;
        let healthy = answered.len() >= quorum;
        let mut detail = format!(
            "{}/{} etcd endpoints answered (quorum {quorum})",
            answered.len(),
            self.endpoints.len()
        );
        if !answered.is_empty() {
            detail.push_str(&format!("; ok: {}", answered.join(", ")));
        }
        if !failed.is_empty() {
            detail.push_str(&format!("; failed: {}", failed.join("; ")));
        }
        StoreHealth {
            backend: BackendKind::Etcd,
            healthy,
            detail,
            revision,
            endpoints: self.endpoints.clone(),
        }
    }
}

/// Everything a watch task needs to (re-)create its etcd watch.
#[derive(Clone)]
struct Watcher {
    client: ec::Client,
    prefix: String,
    request_timeout: Duration,
    retry: RetryPolicy,
    endpoints_label: String,
}

/// A created etcd watch.
struct Opened {
    stream: ec::WatchStream,
    watch_id: i64,
    /// The first revision this watch will deliver.
    next_revision: Revision,
    /// Set when etcd refused the start revision as compacted (newer etcd versions say
    /// so in the created response; 3.4 sends a separate canceled response).
    compacted: Option<Revision>,
}

impl Watcher {
    /// Creates the etcd watch and waits for etcd to confirm it.
    async fn open(&self, mut client: ec::Client, start: Revision) -> Result<Opened, ec::Error> {
        let options = ec::WatchOptions::new().with_prefix().with_start_revision(start);
        let mut stream = client.watch(self.prefix.as_str(), Some(options)).await?;
        let created = match stream.message().await? {
            Some(created) if created.created() => created,
            Some(other) if other.canceled() => return Err(ec::Error::WatchError(other.cancel_reason().to_owned())),
            Some(_) => return Err(ec::Error::WatchError(EtcdProtocolError::WatchNotCreated.to_string())),
            None => return Err(ec::Error::WatchError("watch stream closed before creation".into())),
        };
        let compacted = (created.compact_revision() > 0).then_some(created.compact_revision());
        if created.canceled() && compacted.is_none() {
            return Err(ec::Error::WatchError(created.cancel_reason().to_owned()));
        }
        Ok(Opened {
            stream,
            watch_id: created.watch_id(),
            next_revision: start,
            compacted,
        })
    }

    /// Forwards batches until the receiver goes away, the store shuts down, or the
    /// watch fails for good; re-creates the etcd watch when its stream breaks.
    async fn run(self, opened: Opened, tx: mpsc::Sender<Result<WatchBatch, StoreError>>, shutdown: CancellationToken) {
        let Opened {
            mut stream,
            mut watch_id,
            mut next_revision,
            mut compacted,
        } = opened;
        loop {
            if let Some(compact_revision) = compacted {
                let _ = tx
                    .send(Err(StoreError::Compacted {
                        requested: next_revision,
                        compact_revision,
                    }))
                    .await;
                return;
            }
            let message = tokio::select! {
                _ = shutdown.cancelled() => {
                    self.cancel(stream, watch_id).await;
                    return;
                }
                _ = tx.closed() => {
                    self.cancel(stream, watch_id).await;
                    return;
                }
                message = stream.message() => message,
            };
            let broken = match message {
                Ok(Some(response)) => {
                    if response.watch_id() != watch_id {
                        continue;
                    }
                    if response.compact_revision() > 0 {
                        let error = StoreError::Compacted {
                            requested: next_revision,
                            compact_revision: response.compact_revision(),
                        };
                        let _ = tx.send(Err(error)).await;
                        return;
                    }
                    if response.canceled() {
                        let reason = response.cancel_reason().to_owned();
                        let _ = tx
                            .send(Err(StoreError::Backend(Box::new(EtcdProtocolError::WatchCanceled(
                                reason,
                            )))))
                            .await;
                        return;
                    }
                    let mut events = Vec::with_capacity(response.events().len());
                    for event in response.events() {
                        match convert_event(event) {
                            // Skip anything already delivered before a resume.
                            Ok(Some(event)) if event.revision() >= next_revision => events.push(event),
                            Ok(_) => {}
                            Err(error) => {
                                let _ = tx.send(Err(error)).await;
                                self.cancel(stream, watch_id).await;
                                return;
                            }
                        }
                    }
                    if let Some(last) = events.last() {
                        next_revision = last.revision() + 1;
                        if tx.send(Ok(WatchBatch { events })).await.is_err() {
                            self.cancel(stream, watch_id).await;
                            return;
                        }
                    }
                    continue;
                }
                Ok(None) => Failure::Etcd(ec::Error::WatchError("watch stream ended".into())),
                Err(e) => Failure::Etcd(e),
            };
            if broken.class() == Class::Fatal && !matches!(broken, Failure::Etcd(ec::Error::WatchError(_))) {
                let _ = tx.send(Err(broken.into_store_error(&self.endpoints_label, None))).await;
                return;
            }
            tracing::info!(prefix = %self.prefix, next_revision, error = %broken.message(), "etcd watch broke; resuming");
            match self.resume(next_revision, &tx, &shutdown).await {
                Some(Ok(opened)) => {
                    stream = opened.stream;
                    watch_id = opened.watch_id;
                    compacted = opened.compacted;
                }
                Some(Err(error)) => {
                    let _ = tx.send(Err(error)).await;
                    return;
                }
                None => return,
            }
        }
    }

    /// Re-creates the watch from `next_revision`, with backoff. `None`: the receiver
    /// or the store went away meanwhile.
    async fn resume(
        &self,
        next_revision: Revision,
        tx: &mpsc::Sender<Result<WatchBatch, StoreError>>,
        shutdown: &CancellationToken,
    ) -> Option<Result<Opened, StoreError>> {
        let mut last = None;
        for attempt in 1..=self.retry.watch_resume_attempts.max(1) {
            metrics::counter!(RETRIES_METRIC, "op" => "watch").increment(1);
            let pause = self.retry.backoff(attempt);
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tx.closed() => return None,
                _ = tokio::time::sleep(pause) => {}
            }
            let opened = tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tx.closed() => return None,
                opened = tokio::time::timeout(self.request_timeout, self.open(self.client.clone(), next_revision)) => opened,
            };
            let failure = match opened {
                Ok(Ok(opened)) => return Some(Ok(opened)),
                Ok(Err(e)) => Failure::Etcd(e),
                Err(_) => Failure::Timeout(self.request_timeout),
            };
            tracing::debug!(prefix = %self.prefix, attempt, error = %failure.message(), "etcd watch resume failed");
            last = Some(failure);
        }
        let failure = last.unwrap_or(Failure::Timeout(self.request_timeout));
        Some(Err(failure.into_store_error(&self.endpoints_label, None)))
    }

    /// Cancels the etcd watch, waiting briefly for etcd to confirm.
    async fn cancel(&self, mut stream: ec::WatchStream, watch_id: i64) {
        let confirm = async {
            stream.cancel(watch_id).await?;
            while let Some(response) = stream.message().await? {
                if response.canceled() && response.watch_id() == watch_id {
                    break;
                }
            }
            Ok::<(), ec::Error>(())
        };
        let _ = tokio::time::timeout(Duration::from_millis(500), confirm).await;
    }
}

/// Converts one etcd event; `None` for an event without a key-value (never sent).
fn convert_event(event: &ec::Event) -> Result<Option<WatchEvent>, StoreError> {
    let Some(kv) = event.kv() else { return Ok(None) };
    Ok(Some(match event.event_type() {
        ec::EventType::Put => WatchEvent::Put(convert_kv(kv)?),
        ec::EventType::Delete => WatchEvent::Delete {
            key: key_string(kv)?,
            mod_revision: kv.mod_revision(),
        },
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn parses_endpoint_lists() {
        let config = EtcdConfig::from_endpoints_str(" http://a:1 ,http://b:2,c:3").unwrap();
        assert_eq!(config.endpoints, vec!["http://a:1", "http://b:2", "c:3"]);
        assert_eq!(config.retry, RetryPolicy::default());
    }

    #[test]
    fn rejects_bad_endpoint_lists() {
        for (list, needle) in [
            ("", "empty"),
            ("   ", "empty"),
            ("http://a:1,,http://b:2", "entry 2 is empty"),
            ("http://a:1, ", "entry 2 is empty"),
            ("ftp://a:1", "unsupported scheme"),
            ("http://a:1/path", "host:port"),
            ("http://", "host:port"),
        ] {
            match EtcdConfig::from_endpoints_str(list) {
                Err(StoreError::InvalidRequest(message)) => {
                    assert!(message.contains(needle), "{list:?}: {message:?} lacks {needle:?}")
                }
                other => panic!("{list:?}: expected InvalidRequest, got {other:?}"),
            }
        }
    }

    #[test]
    fn normalizes_endpoints() {
        assert_eq!(normalize_endpoint("a:1", false), "http://a:1");
        assert_eq!(normalize_endpoint("a:1", true), "https://a:1");
        assert_eq!(normalize_endpoint("http://a:1/", true), "http://a:1");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy::default();
        for retry in 1..=10 {
            let step = (policy.initial_backoff * (1 << (retry - 1))).min(policy.max_backoff);
            let pause = policy.backoff(retry);
            assert!(
                pause >= step / 2 && pause <= step,
                "retry {retry}: {pause:?} outside [{:?}, {step:?}]",
                step / 2
            );
        }
        assert!(policy.backoff(u32::MAX) <= policy.max_backoff);
    }

    #[test]
    fn lease_ttl_rounds_up() {
        assert_eq!(lease_seconds(Duration::ZERO), 1);
        assert_eq!(lease_seconds(Duration::from_millis(200)), 1);
        assert_eq!(lease_seconds(Duration::from_secs(2)), 2);
        assert_eq!(lease_seconds(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn classifies_failures() {
        assert_eq!(classify_status(14, "tcp connect error"), Class::NotSent);
        assert_eq!(classify_status(14, "etcdserver: no leader"), Class::NotSent);
        assert_eq!(classify_status(14, "etcdserver: leader changed"), Class::Ambiguous);
        assert_eq!(classify_status(14, "etcdserver: request timed out"), Class::Ambiguous);
        assert_eq!(classify_status(4, "deadline"), Class::Ambiguous);
        assert_eq!(classify_status(2, "transport error"), Class::Ambiguous);
        assert_eq!(
            classify_status(9, "etcdserver: requested lease not found"),
            Class::Fatal
        );
        assert_eq!(classify_status(3, "etcdserver: key is not provided"), Class::Fatal);
    }

    #[test]
    fn tls_config_is_strict() {
        let parsed: Result<EtcdTls, _> = serde_json::from_str(r#"{"ca_file": "/x", "cert": "/y"}"#);
        assert!(parsed.is_err());
        let parsed: EtcdTls = serde_json::from_str(r#"{"ca_file": "/x", "domain": "etcd"}"#).unwrap();
        assert_eq!(parsed.domain.as_deref(), Some("etcd"));
        let only_cert = EtcdTls {
            cert_file: Some("/nonexistent".into()),
            ..EtcdTls::default()
        };
        assert!(matches!(tls_options(&only_cert), Err(StoreError::InvalidRequest(_))));
    }
}
