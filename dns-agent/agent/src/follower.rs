//! Following the control plane: `WatchPlan` on one replica at a time, through the
//! shared endpoint rotation (`meridian_daemon::failover`: the configured order,
//! failover on error, backoff with jitter after a whole round failed). Each plan is
//! checked (versions only go forward; malformed or invalid plans are NACKed with the
//! reason and the previous plan stays), handed to the agent's [`PlanSink`], cached on
//! disk, and ACKed.
//!
//! Versions are compared only within one store epoch (the control plane's store
//! identity, carried by every plan). A plan from another epoch means the store was
//! wiped and re-created: it is validated and, if valid, applied whatever its version
//! ("following its numbering"), reported as [`AgentEvent::EpochChanged`] and counted.
//! Within one epoch, the version in service arriving with a different content hash
//! is refused loudly (NACK, error log, counter): the control plane published other
//! content under a number this agent already serves. An empty epoch on either side
//! (an old control plane, an old cache) keeps the version-only rule.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meridian_core::Backoff;
use meridian_daemon::failover::{follow, EndpointRotation, Session, SessionEnd};
use meridian_dns_core::plan::{PlanRejection, PlanSnapshot};
use meridian_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::convert::{anycast_report_to_pb, snapshot_from_pb};
use crate::report::{AgentReport, Reports};
use crate::{cache, unix_ms};

/// What an agent does with plans; the follower does the rest (subscription, version
/// checks, ACK/NACK, cache). Implemented by the DNS agent (validate, swap the answer
/// table) and, later, by the Anycast agent.
pub trait PlanSink: Send + Sync + 'static {
    /// The plan in service: version (0: none), epoch and content hash (empty when
    /// unknown).
    fn applied(&self) -> Applied;
    /// The version in service (0: none).
    fn applied_version(&self) -> u64 {
        self.applied().version
    }
    /// Validates `snapshot` and puts it in service, or says why not (the NACK). Called
    /// only with a version above the one in service, or with a plan of another store
    /// epoch. Must not block: queries may be waiting on what it swaps.
    fn install(&self, snapshot: &PlanSnapshot) -> Result<(), Rejection>;
    /// Connection and plan-source changes, for readiness and gauges.
    fn observe(&self, event: AgentEvent<'_>);
}

/// The identity of the plan in service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub version: u64,
    pub epoch: String,
    pub content_hash: String,
}

/// Why a sink refused a plan: `reason` goes back in the NACK, `kind` is a fixed
/// metrics label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejection {
    pub kind: &'static str,
    pub reason: String,
}

impl From<PlanRejection> for Rejection {
    fn from(r: PlanRejection) -> Self {
        Rejection {
            kind: r.kind(),
            reason: r.to_string(),
        }
    }
}

/// What the follower tells the sink about its situation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent<'a> {
    /// A plan stream to `replica` is open.
    Connected { replica: &'a str },
    /// The stream to `replica` ended or could not be opened.
    Unreachable { replica: &'a str, reason: &'a str },
    /// `version` (new, or the one in service again) was confirmed by `replica`.
    Confirmed { version: u64, replica: &'a str },
    /// The cached plan `version` was put in service at start-up.
    LoadedFromCache { version: u64 },
    /// The cache could not be used; shown while nothing is served.
    CacheUnusable { reason: String },
    /// A plan from another store epoch was applied: the control plane's store was
    /// re-created, and versions follow its numbering from now on.
    EpochChanged {
        from: &'a str,
        to: &'a str,
        previous_version: u64,
        version: u64,
    },
}

/// Which agent this is, as the control plane lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentKind {
    Dns,
    Anycast,
}

/// How to reach the control plane, and where to cache plans.
#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoints: Vec<String>,
    pub agent_id: String,
    pub kind: AgentKind,
    pub connect_timeout: Duration,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    pub state_dir: Option<PathBuf>,
    pub metrics: MetricNames,
    /// Who this agent is to the control plane, and TLS for `https://` endpoints.
    pub credentials: Credentials,
}

/// An agent's credentials: a bearer token and/or (inside `tls`) a client
/// certificate whose subject says CN=<agent id>, O=agent.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub token: Option<String>,
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

/// The follower's metric names, built on the agent's prefix (`meridian_dns`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricNames {
    /// Plan stream ends, by `replica`.
    pub reconnects: String,
    /// Plans received, by `outcome`: `applied`, `repeated` (same version, ACKed
    /// again), `stale` (older, NACKed), `rejected` (invalid, NACKed),
    /// `content_differs` (the version in service with other content, NACKed).
    pub plans_received: String,
    /// Plans of another store epoch applied (the control plane's store was re-created).
    pub plan_epoch_changes: String,
    /// Plans NACKed because they were invalid, by `reason` (a fixed label per rule).
    pub plan_nacks: String,
    /// Failures writing the plan cache to `state_dir`.
    pub cache_write_failures: String,
}

impl MetricNames {
    pub fn new(prefix: &str) -> Self {
        MetricNames {
            reconnects: format!("{prefix}_control_plane_reconnects_total"),
            plans_received: format!("{prefix}_plans_received_total"),
            plan_epoch_changes: format!("{prefix}_plan_epoch_changes_total"),
            plan_nacks: format!("{prefix}_plan_nacks_total"),
            cache_write_failures: format!("{prefix}_plan_cache_write_failures_total"),
        }
    }
}

/// What the agent says about one received plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Applied now (or the version already served, confirmed again).
    Ack {
        version: u64,
        new: bool,
    },
    Nack {
        version: u64,
        reason: String,
    },
}

/// Static stability: puts the cached plan in service at once, before any control
/// plane answers. Problems are logged and reported to the sink, never fatal.
pub fn load_cached<S: PlanSink>(settings: &Settings, sink: &S) {
    let Some(dir) = &settings.state_dir else {
        tracing::warn!("no state_dir: plans are not cached, so a restart without a control plane serves no plan");
        return;
    };
    match cache::load(dir) {
        Ok(None) => tracing::info!(state_dir = %dir.display(), "no cached plan yet"),
        Ok(Some(snapshot)) => match sink.install(&snapshot) {
            Ok(()) => {
                let version = snapshot.version;
                sink.observe(AgentEvent::LoadedFromCache { version });
                tracing::info!(version, state_dir = %dir.display(), "serving the cached plan until a control plane answers");
            }
            Err(e) => {
                tracing::error!(error = %e, state_dir = %dir.display(), "the cached plan is invalid; ignoring it");
                sink.observe(AgentEvent::CacheUnusable {
                    reason: format!("cached plan rejected: {e}"),
                });
            }
        },
        Err(e) => {
            tracing::error!(error = ?e, "cannot read the plan cache; starting without a plan");
            sink.observe(AgentEvent::CacheUnusable { reason: e.to_string() });
        }
    }
}

/// Follows the control plane until shutdown.
pub async fn run<S: PlanSink>(
    settings: Arc<Settings>,
    sink: Arc<S>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    run_with_reports(settings, sink, None, shutdown).await
}

/// [`run`], also forwarding the agent's reports on the plan stream: the latest one
/// right after each hello, then every one published (see [`crate::report`]).
pub async fn run_with_reports<S: PlanSink>(
    settings: Arc<Settings>,
    sink: Arc<S>,
    reports: Option<Reports>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let backoff = Backoff::new(settings.reconnect_initial, settings.reconnect_max);
    let mut rotation = EndpointRotation::new(settings.endpoints.clone(), backoff).map_err(|e| e.to_string())?;
    let mut session = PlanSession {
        settings,
        sink,
        reports,
    };
    follow("plan stream", &mut rotation, &shutdown, &mut session).await;
    Ok(())
}

struct PlanSession<S> {
    settings: Arc<Settings>,
    sink: Arc<S>,
    reports: Option<Reports>,
}

impl<S: PlanSink> Session for PlanSession<S> {
    async fn run(&mut self, endpoint: &str) -> SessionEnd {
        let (healthy, reason) = watch_once(endpoint, &self.settings, &*self.sink, self.reports.as_mut()).await;
        metrics::counter!(self.settings.metrics.reconnects.clone(), "replica" => endpoint.to_string()).increment(1);
        self.sink.observe(AgentEvent::Unreachable {
            replica: endpoint,
            reason: &reason,
        });
        SessionEnd { healthy, reason }
    }
}

/// One plan stream. Returns whether any plan arrived, and why it ended.
async fn watch_once<S: PlanSink>(
    endpoint: &str,
    s: &Settings,
    sink: &S,
    mut reports: Option<&mut Reports>,
) -> (bool, String) {
    let channel = match meridian_tls::endpoint(endpoint, s.credentials.tls.as_ref()) {
        Err(e) => return (false, e.to_string()),
        Ok(ep) => {
            let ep = ep
                .connect_timeout(s.connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            match tokio::time::timeout(s.connect_timeout, ep.connect()).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return (false, format!("cannot connect: {e}")),
                Err(_) => return (false, format!("no connection within {:?}", s.connect_timeout)),
            }
        }
    };
    let mut client = pb::plan_service_client::PlanServiceClient::new(channel);
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(16);
    let hello = pb::AgentHello {
        agent_id: s.agent_id.clone(),
        kind: match s.kind {
            AgentKind::Dns => pb::AgentKind::Dns,
            AgentKind::Anycast => pb::AgentKind::Anycast,
        } as i32,
        applied_version: sink.applied_version(),
    };
    if tx
        .send(pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Hello(hello)),
        })
        .await
        .is_err()
    {
        return (false, "the outgoing stream closed before the hello".into());
    }
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(token) = &s.credentials.token {
        match format!("Bearer {token}").parse() {
            Ok(v) => {
                request.metadata_mut().insert("authorization", v);
            }
            Err(_) => return (false, "the agent token cannot be sent as gRPC metadata".into()),
        }
    }
    let mut stream = match tokio::time::timeout(s.connect_timeout, client.watch_plan(request)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => return (false, format!("WatchPlan refused: {status}")),
        Err(_) => return (false, format!("WatchPlan not answered within {:?}", s.connect_timeout)),
    };
    sink.observe(AgentEvent::Connected { replica: endpoint });
    tracing::info!(replica = %endpoint, "plan stream open");
    // The latest report goes out on every new stream, then each new one.
    if let Some(r) = reports.as_deref_mut() {
        let latest = r.borrow_and_update().clone();
        if let Some(report) = latest {
            if tx.send(report_message(&report)).await.is_err() {
                return (false, "the outgoing stream closed".into());
            }
        }
    }
    let mut received = false;
    loop {
        let next = match reports.as_deref_mut() {
            None => stream.message().await,
            Some(r) => {
                tokio::select! {
                    m = stream.message() => m,
                    changed = r.changed() => {
                        if changed.is_err() {
                            // The agent dropped its sender: nothing more to report.
                            reports = None;
                            continue;
                        }
                        let latest = r.borrow_and_update().clone();
                        if let Some(report) = latest {
                            if tx.send(report_message(&report)).await.is_err() {
                                return (received, "the outgoing stream closed".into());
                            }
                        }
                        continue;
                    }
                }
            }
        };
        match next {
            Ok(Some(update)) => {
                let Some(plan) = update.plan else {
                    continue;
                };
                received = true;
                let msg = match receive(plan, endpoint, s, sink).await {
                    Verdict::Ack { version, .. } => pb::agent_message::Msg::Ack(pb::PlanAck { version }),
                    Verdict::Nack { version, reason } => pb::agent_message::Msg::Nack(pb::PlanNack { version, reason }),
                };
                if tx.send(pb::AgentMessage { msg: Some(msg) }).await.is_err() {
                    return (received, "the outgoing stream closed".into());
                }
            }
            Ok(None) => return (received, "the replica ended the stream".into()),
            Err(status) => return (received, format!("stream failed: {status}")),
        }
    }
}

fn report_message(report: &AgentReport) -> pb::AgentMessage {
    let msg = match report {
        AgentReport::Anycast(prefixes) => pb::agent_message::Msg::Anycast(anycast_report_to_pb(prefixes)),
    };
    pb::AgentMessage { msg: Some(msg) }
}

/// Converts a wire plan (parsing its text once) and applies it.
pub async fn receive<S: PlanSink>(plan: pb::SteeringPlan, replica: &str, s: &Settings, sink: &S) -> Verdict {
    let incoming = Applied {
        version: plan.version,
        epoch: plan.epoch.clone(),
        content_hash: plan.content_hash.clone(),
    };
    match snapshot_from_pb(plan) {
        Ok(snapshot) => apply(snapshot, replica, s, sink).await,
        Err(rejection) => match version_check(&incoming, replica, s, sink) {
            Check::Answer(verdict) => verdict,
            Check::Install => reject(incoming.version, replica, s, sink, rejection.into()),
        },
    }
}

/// Checks the version, hands the plan to the sink, caches it and says what to answer.
pub async fn apply<S: PlanSink>(snapshot: PlanSnapshot, replica: &str, s: &Settings, sink: &S) -> Verdict {
    let version = snapshot.version;
    let incoming = Applied {
        version,
        epoch: snapshot.epoch.clone(),
        content_hash: snapshot.content_hash.clone(),
    };
    if let Check::Answer(verdict) = version_check(&incoming, replica, s, sink) {
        return verdict;
    }
    let before = sink.applied();
    if let Err(rejection) = sink.install(&snapshot) {
        return reject(version, replica, s, sink, rejection);
    }
    metrics::counter!(s.metrics.plans_received.clone(), "outcome" => "applied").increment(1);
    if epoch_changed(&before, &incoming) {
        metrics::counter!(s.metrics.plan_epoch_changes.clone()).increment(1);
        tracing::warn!(
            replica = %replica,
            version,
            previous = before.version,
            from = %before.epoch,
            to = %incoming.epoch,
            "control plane store changed epoch {} → {}; following its numbering (v{} after v{})",
            before.epoch,
            incoming.epoch,
            version,
            before.version,
        );
        sink.observe(AgentEvent::EpochChanged {
            from: &before.epoch,
            to: &incoming.epoch,
            previous_version: before.version,
            version,
        });
    }
    sink.observe(AgentEvent::Confirmed { version, replica });
    tracing::info!(replica = %replica, version, previous = before.version, epoch = %incoming.epoch, regions = snapshot.regions.len(), "plan applied");
    if let Some(dir) = s.state_dir.clone() {
        let now = unix_ms(SystemTime::now());
        let saved = tokio::task::spawn_blocking(move || cache::save(&dir, &snapshot, now)).await;
        let failure = match saved {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:?}")),
            Err(e) => Some(format!("the plan cache writer failed: {e}")),
        };
        if let Some(error) = failure {
            metrics::counter!(s.metrics.cache_write_failures.clone()).increment(1);
            tracing::error!(version, error = %error, "cannot cache the plan; a restart without a control plane would serve an older one");
        }
    }
    Verdict::Ack { version, new: true }
}

/// What [`version_check`] decided.
enum Check {
    /// Answer this without installing anything.
    Answer(Verdict),
    /// Validate and install the plan.
    Install,
}

/// Whether `incoming` comes from another store epoch than `applied` (both known).
fn epoch_changed(applied: &Applied, incoming: &Applied) -> bool {
    !applied.epoch.is_empty() && !incoming.epoch.is_empty() && applied.epoch != incoming.epoch
}

/// Versions only go forward within one epoch: the version in service is confirmed
/// again (or refused when its content differs), an older one (or 0) is NACKed; a
/// newer one, or one of another epoch, is to be installed.
fn version_check<S: PlanSink>(incoming: &Applied, replica: &str, s: &Settings, sink: &S) -> Check {
    let version = incoming.version;
    let current = sink.applied();
    let applied = current.version;
    if version != 0 && epoch_changed(&current, incoming) {
        return Check::Install;
    }
    if version != 0 && version == applied {
        let same_epoch = !current.epoch.is_empty() && current.epoch == incoming.epoch;
        let both_hashed = !current.content_hash.is_empty() && !incoming.content_hash.is_empty();
        if same_epoch && both_hashed && current.content_hash != incoming.content_hash {
            metrics::counter!(s.metrics.plans_received.clone(), "outcome" => "content_differs").increment(1);
            metrics::counter!(s.metrics.plan_nacks.clone(), "reason" => "content_differs").increment(1);
            let reason = format!(
                "plan v{version} content differs from the applied v{applied} (hash {} ≠ {}): refusing",
                incoming.content_hash, current.content_hash
            );
            tracing::error!(replica = %replica, version, epoch = %current.epoch, reason = %reason, "the control plane published other content under a version in service; keeping ours");
            return Check::Answer(Verdict::Nack { version, reason });
        }
        metrics::counter!(s.metrics.plans_received.clone(), "outcome" => "repeated").increment(1);
        sink.observe(AgentEvent::Confirmed { version, replica });
        return Check::Answer(Verdict::Ack { version, new: false });
    }
    if version < applied || version == 0 {
        metrics::counter!(s.metrics.plans_received.clone(), "outcome" => "stale").increment(1);
        let reason = if version == 0 {
            "plan has version 0; versions start at 1".to_string()
        } else {
            format!("plan v{version} is older than the applied v{applied}; versions only go forward")
        };
        tracing::warn!(replica = %replica, version, applied, "ignoring an older plan");
        return Check::Answer(Verdict::Nack { version, reason });
    }
    Check::Install
}

fn reject<S: PlanSink>(version: u64, replica: &str, s: &Settings, sink: &S, rejection: Rejection) -> Verdict {
    let applied = sink.applied_version();
    metrics::counter!(s.metrics.plans_received.clone(), "outcome" => "rejected").increment(1);
    metrics::counter!(s.metrics.plan_nacks.clone(), "reason" => rejection.kind).increment(1);
    tracing::warn!(replica = %replica, version, applied, reason = %rejection, "plan rejected; keeping the previous one");
    Verdict::Nack {
        version,
        reason: rejection.reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::sample;
    use meridian_dns_core::plan::validate;
    use std::sync::Mutex;

    /// A sink that validates like the DNS agent and records what it was told.
    #[derive(Default)]
    struct Recorder {
        applied: Mutex<Applied>,
        events: Mutex<Vec<String>>,
    }

    impl PlanSink for Recorder {
        fn applied(&self) -> Applied {
            self.applied.lock().unwrap().clone()
        }
        fn install(&self, snapshot: &PlanSnapshot) -> Result<(), Rejection> {
            let plan = validate(snapshot)?;
            *self.applied.lock().unwrap() = Applied {
                version: plan.version,
                epoch: plan.epoch,
                content_hash: plan.content_hash,
            };
            Ok(())
        }
        fn observe(&self, event: AgentEvent<'_>) {
            self.events.lock().unwrap().push(format!("{event:?}"));
        }
    }

    fn settings(dir: Option<PathBuf>) -> Settings {
        Settings {
            endpoints: vec!["http://127.0.0.1:1".into()],
            agent_id: "dns-1".into(),
            kind: AgentKind::Dns,
            connect_timeout: Duration::from_secs(1),
            reconnect_initial: Duration::from_millis(10),
            reconnect_max: Duration::from_millis(100),
            state_dir: dir,
            metrics: MetricNames::new("meridian_test"),
            credentials: Credentials::default(),
        }
    }

    #[tokio::test]
    async fn versions_only_go_forward_and_bad_plans_keep_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(Some(dir.path().to_path_buf()));
        let r = Recorder::default();
        assert_eq!(
            apply(sample(2), "cp", &s, &r).await,
            Verdict::Ack { version: 2, new: true }
        );
        assert_eq!(cache::load(dir.path()).unwrap().unwrap().version, 2, "cached");
        assert_eq!(
            apply(sample(2), "cp", &s, &r).await,
            Verdict::Ack { version: 2, new: false }
        );
        match apply(sample(1), "cp", &s, &r).await {
            Verdict::Nack { version: 1, reason } => assert!(reason.contains("older than the applied v2"), "{reason}"),
            other => panic!("{other:?}"),
        }
        match apply(sample(0), "cp", &s, &r).await {
            Verdict::Nack { version: 0, reason } => assert!(reason.contains("versions start at 1"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let mut bad = sample(3);
        bad.regions[0].pops[0].weight = f64::NAN;
        match apply(bad, "cp", &s, &r).await {
            Verdict::Nack { version: 3, reason } => assert!(reason.contains("weight NaN"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.applied_version(), 2, "the previous plan stays");
        assert_eq!(cache::load(dir.path()).unwrap().unwrap().version, 2);
        assert_eq!(
            apply(sample(5), "cp", &s, &r).await,
            Verdict::Ack { version: 5, new: true }
        );
        let events = r.events.lock().unwrap().clone();
        assert_eq!(
            events,
            [
                "Confirmed { version: 2, replica: \"cp\" }",
                "Confirmed { version: 2, replica: \"cp\" }",
                "Confirmed { version: 5, replica: \"cp\" }",
            ]
        );
    }

    #[tokio::test]
    async fn unparsable_wire_text_is_nacked_with_its_reason() {
        let s = settings(None);
        let r = Recorder::default();
        let mut plan = crate::convert::tests::wire_plan(4);
        plan.regions[0].pops[0].ipv4 = vec!["192.0.2.300".into()];
        match receive(plan.clone(), "cp", &s, &r).await {
            Verdict::Nack { version: 4, reason } => assert!(reason.contains("IPv4 address `192.0.2.300`"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.applied_version(), 0);
        // An older version is stale first, whatever its content.
        assert_eq!(
            receive(crate::convert::tests::wire_plan(6), "cp", &s, &r).await,
            Verdict::Ack { version: 6, new: true }
        );
        match receive(plan, "cp", &s, &r).await {
            Verdict::Nack { version: 4, reason } => assert!(reason.contains("older than the applied v6"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    fn in_epoch(version: u64, epoch: &str, hash: &str) -> PlanSnapshot {
        let mut p = sample(version);
        p.epoch = epoch.into();
        p.content_hash = hash.into();
        p
    }

    /// Counters by name and sorted labels: enough of a metrics recorder to check what
    /// the follower counts.
    #[derive(Default, Clone)]
    struct Counters(Arc<Mutex<std::collections::HashMap<String, Arc<std::sync::atomic::AtomicU64>>>>);

    impl Counters {
        fn id(key: &metrics::Key) -> String {
            let mut labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            labels.sort();
            format!("{}{{{}}}", key.name(), labels.join(","))
        }
        fn get(&self, id: &str) -> u64 {
            self.0
                .lock()
                .unwrap()
                .get(id)
                .map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed))
        }
    }

    struct CounterCell(Arc<std::sync::atomic::AtomicU64>);

    impl metrics::CounterFn for CounterCell {
        fn increment(&self, value: u64) {
            self.0.fetch_add(value, std::sync::atomic::Ordering::Relaxed);
        }
        fn absolute(&self, value: u64) {
            self.0.store(value, std::sync::atomic::Ordering::Relaxed);
        }
    }

    impl metrics::Recorder for Counters {
        fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
        fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
        fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
        fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
            let cell = self.0.lock().unwrap().entry(Self::id(key)).or_default().clone();
            metrics::Counter::from_arc(Arc::new(CounterCell(cell)))
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    #[tokio::test]
    async fn a_new_epoch_is_followed_even_with_a_lower_version_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(Some(dir.path().to_path_buf()));
        let r = Recorder::default();
        let counters = Counters::default();
        let _guard = metrics::set_default_local_recorder(&counters);
        assert_eq!(
            apply(in_epoch(99, "old", "h99"), "cp", &s, &r).await,
            Verdict::Ack { version: 99, new: true }
        );
        // The store was wiped: v5 of a new epoch replaces v99.
        assert_eq!(
            apply(in_epoch(5, "new", "h5"), "cp", &s, &r).await,
            Verdict::Ack { version: 5, new: true }
        );
        assert_eq!(
            r.applied(),
            Applied {
                version: 5,
                epoch: "new".into(),
                content_hash: "h5".into()
            }
        );
        let cached = cache::load(dir.path()).unwrap().unwrap();
        assert_eq!(
            (cached.version, cached.epoch.as_str()),
            (5, "new"),
            "the new epoch is cached"
        );
        // From then on the new numbering applies: older versions of the new epoch
        // are stale, and newer ones go through.
        match apply(in_epoch(4, "new", "h4"), "cp", &s, &r).await {
            Verdict::Nack { version: 4, reason } => assert!(reason.contains("older than the applied v5"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            apply(in_epoch(6, "new", "h6"), "cp", &s, &r).await,
            Verdict::Ack { version: 6, new: true }
        );
        let events = r.events.lock().unwrap().clone();
        assert_eq!(
            events,
            [
                "Confirmed { version: 99, replica: \"cp\" }",
                "EpochChanged { from: \"old\", to: \"new\", previous_version: 99, version: 5 }",
                "Confirmed { version: 5, replica: \"cp\" }",
                "Confirmed { version: 6, replica: \"cp\" }",
            ]
        );
        assert_eq!(counters.get("meridian_test_plan_epoch_changes_total{}"), 1);
    }

    #[tokio::test]
    async fn an_invalid_plan_of_a_new_epoch_is_nacked_and_the_old_one_stays() {
        let s = settings(None);
        let r = Recorder::default();
        apply(in_epoch(99, "old", "h99"), "cp", &s, &r).await;
        let mut bad = in_epoch(5, "new", "h5");
        bad.regions.clear();
        match apply(bad, "cp", &s, &r).await {
            Verdict::Nack { version: 5, reason } => assert!(reason.contains("serves nothing"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!((r.applied().version, r.applied().epoch), (99, "old".to_string()));
        assert!(!r.events.lock().unwrap().iter().any(|e| e.contains("EpochChanged")));
    }

    #[tokio::test]
    async fn the_same_version_with_other_content_is_refused_loudly() {
        let s = settings(None);
        let r = Recorder::default();
        let counters = Counters::default();
        let _guard = metrics::set_default_local_recorder(&counters);
        apply(in_epoch(7, "e", "aaaa"), "cp", &s, &r).await;
        let mut other = in_epoch(7, "e", "bbbb");
        other.regions[0].pops[0].weight = 0.5;
        match apply(other, "cp", &s, &r).await {
            Verdict::Nack { version: 7, reason } => assert_eq!(
                reason,
                "plan v7 content differs from the applied v7 (hash bbbb ≠ aaaa): refusing"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.applied().content_hash, "aaaa", "ours stays in service");
        assert_eq!(
            counters.get("meridian_test_plans_received_total{outcome=content_differs}"),
            1
        );
        assert_eq!(
            counters.get("meridian_test_plan_nacks_total{reason=content_differs}"),
            1
        );
        // The same content again is a repeat, as before.
        assert_eq!(
            apply(in_epoch(7, "e", "aaaa"), "cp", &s, &r).await,
            Verdict::Ack { version: 7, new: false }
        );
        // So is the wire path: the unparsed plan is checked before its text.
        let mut wire = crate::convert::tests::wire_plan(7);
        wire.epoch = "e".into();
        wire.content_hash = "cccc".into();
        wire.regions[0].pops[0].ipv4 = vec!["not an address".into()];
        match receive(wire, "cp", &s, &r).await {
            Verdict::Nack { version: 7, reason } => assert!(reason.contains("hash cccc ≠ aaaa"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_empty_epoch_on_either_side_keeps_the_version_rule() {
        let s = settings(None);
        // An old cache (no epoch) in service; a new control plane's lower version is stale.
        let r = Recorder::default();
        apply(in_epoch(99, "", ""), "cp", &s, &r).await;
        match apply(in_epoch(5, "new", "h5"), "cp", &s, &r).await {
            Verdict::Nack { version: 5, reason } => assert!(reason.contains("older than the applied v99"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // An old control plane (no epoch, no hash): same version is a repeat whatever
        // its content, lower is stale.
        let r = Recorder::default();
        apply(in_epoch(9, "e", "aaaa"), "cp", &s, &r).await;
        assert_eq!(
            apply(in_epoch(9, "", ""), "cp", &s, &r).await,
            Verdict::Ack { version: 9, new: false }
        );
        match apply(in_epoch(3, "", ""), "cp", &s, &r).await {
            Verdict::Nack { version: 3, reason } => assert!(reason.contains("older than the applied v9"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // Version 0 stays invalid in a new epoch too.
        match apply(in_epoch(0, "other", "h0"), "cp", &s, &r).await {
            Verdict::Nack { version: 0, reason } => assert!(reason.contains("versions start at 1"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(!r.events.lock().unwrap().iter().any(|e| e.contains("EpochChanged")));
    }

    #[test]
    fn the_cache_is_loaded_at_start_up_or_reported_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(Some(dir.path().to_path_buf()));
        let r = Recorder::default();
        load_cached(&s, &r);
        assert_eq!(r.applied_version(), 0, "no cache yet");
        cache::save(dir.path(), &sample(7), 1).unwrap();
        load_cached(&s, &r);
        assert_eq!(r.applied_version(), 7);
        assert_eq!(
            r.events.lock().unwrap().last().unwrap(),
            "LoadedFromCache { version: 7 }"
        );

        let r = Recorder::default();
        let mut bad = sample(8);
        bad.regions.clear();
        cache::save(dir.path(), &bad, 1).unwrap();
        load_cached(&s, &r);
        assert_eq!(r.applied_version(), 0);
        let last = r.events.lock().unwrap().last().unwrap().clone();
        assert!(last.contains("cached plan rejected: plan v8 serves nothing"), "{last}");
    }
}
