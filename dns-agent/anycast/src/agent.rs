//! The daemon: the [`PlanSink`] that accepts plans (validating their anycast part),
//! the reconcile loop (on every plan and on a timer), readiness and the report the
//! follower forwards to the control plane.
//!
//! Readiness: **not ready** until a plan has been applied to the speaker (so nothing
//! routes to a PoP whose speaker the agent has not yet set), and while the speaker
//! cannot be read or changed. Losing the control plane does not make the agent
//! unready: it keeps reconciling the last applied plan (routes stay as they are) and
//! says so in `/ready`'s text and in `meridian_anycast_control_plane_connected`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_dns_core::plan::PlanSnapshot;
use meridian_edge_agent::report::AgentReport;
use meridian_edge_agent::{AgentEvent, AgentKind, Applied, MetricNames, PlanSink, Rejection};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, BackendError};
use crate::bird::BirdBackend;
use crate::config::{Speaker, Validated};
use crate::core::{self, AnycastPlan};
use crate::core::{Announced, Route};
use crate::gobgp::GobgpBackend;
use crate::metrics as m;
use crate::reconcile::Reconciler;

/// `Ok(detail)` when ready, `Err(why)` when not.
pub use meridian_daemon::admin::Readiness;

/// Where accepted plans go: validated, then handed to the reconcile loop.
pub struct AnycastPlans {
    plans: watch::Sender<Option<Arc<AnycastPlan>>>,
    applied: Mutex<Applied>,
    status: Arc<Status>,
}

impl AnycastPlans {
    pub fn new(status: Arc<Status>) -> (Self, watch::Receiver<Option<Arc<AnycastPlan>>>) {
        let (plans, rx) = watch::channel(None);
        let sink = AnycastPlans {
            plans,
            applied: Mutex::new(Applied::default()),
            status,
        };
        (sink, rx)
    }
}

impl PlanSink for AnycastPlans {
    fn applied(&self) -> Applied {
        self.applied.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn install(&self, snapshot: &PlanSnapshot) -> Result<(), Rejection> {
        let plan = core::validate(snapshot).map_err(|e| Rejection {
            kind: "bad_anycast",
            reason: e.to_string(),
        })?;
        *self.applied.lock().unwrap_or_else(|e| e.into_inner()) = Applied {
            version: snapshot.version,
            epoch: snapshot.epoch.clone(),
            content_hash: snapshot.content_hash.clone(),
        };
        self.status.update(|s| s.last_plan = Some(Instant::now()));
        self.plans.send_replace(Some(Arc::new(plan)));
        Ok(())
    }

    fn observe(&self, event: AgentEvent<'_>) {
        match event {
            AgentEvent::Connected { replica } => self.status.update(|s| s.control_plane = Ok(replica.to_string())),
            AgentEvent::Unreachable { replica, reason } => self
                .status
                .update(|s| s.control_plane = Err(format!("{replica}: {reason}"))),
            AgentEvent::Confirmed { .. } => self.status.update(|s| s.last_plan = Some(Instant::now())),
            AgentEvent::LoadedFromCache { version } => self.status.update(|s| s.cached = Some(version)),
            AgentEvent::CacheUnusable { reason } => {
                tracing::warn!(%reason, "no cached plan to start from")
            }
            AgentEvent::EpochChanged { .. } => {}
        }
    }
}

/// What `/ready` and the gauges are made of.
#[derive(Debug)]
pub struct StatusInner {
    /// The plan version on the speaker (after a successful reconcile).
    pub on_speaker: Option<u64>,
    /// The last speaker error, while it lasts.
    pub speaker_error: Option<String>,
    /// The replica streaming plans, or why none is.
    pub control_plane: Result<String, String>,
    /// When a control plane last sent or confirmed a plan.
    pub last_plan: Option<Instant>,
    /// The version loaded from the cache at start-up.
    pub cached: Option<u64>,
}

/// Shared status behind `/ready`.
#[derive(Debug)]
pub struct Status {
    inner: Mutex<StatusInner>,
    ready: watch::Sender<Readiness>,
}

impl Default for Status {
    fn default() -> Self {
        let inner = StatusInner {
            on_speaker: None,
            speaker_error: None,
            control_plane: Err("not connected yet".into()),
            last_plan: None,
            cached: None,
        };
        let (ready, _) = watch::channel(readiness(&inner));
        Status {
            inner: Mutex::new(inner),
            ready,
        }
    }
}

impl Status {
    pub fn subscribe(&self) -> watch::Receiver<Readiness> {
        self.ready.subscribe()
    }

    pub fn readiness(&self) -> Readiness {
        self.ready.borrow().clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut StatusInner)) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut inner);
        let connected = inner.control_plane.is_ok();
        metrics::gauge!(m::CONTROL_PLANE_CONNECTED).set(if connected { 1.0 } else { 0.0 });
        // The previous readiness is not needed.
        let _previous = self.ready.send_replace(readiness(&inner));
    }

    fn seconds_since_plan(&self, started: Instant) -> f64 {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.last_plan.unwrap_or(started).elapsed().as_secs_f64()
    }
}

fn readiness(s: &StatusInner) -> Readiness {
    let Some(version) = s.on_speaker else {
        return Err(match &s.speaker_error {
            Some(e) => format!("no plan applied to the speaker yet: {e}"),
            None => "no plan applied to the speaker yet".into(),
        });
    };
    if let Some(e) = &s.speaker_error {
        return Err(format!("plan v{version} was applied, but the speaker fails now: {e}"));
    }
    Ok(match &s.control_plane {
        Ok(replica) => format!("plan v{version} applied to the speaker; following {replica}"),
        Err(why) => format!(
            "plan v{version} applied to the speaker; control plane unreachable ({why}), keeping the routes as they are"
        ),
    })
}

/// The configured speaker.
#[derive(Debug)]
pub enum AnySpeaker {
    Gobgp(GobgpBackend),
    Bird(BirdBackend),
}

impl AnySpeaker {
    pub fn new(speaker: Speaker) -> Result<Self, BackendError> {
        Ok(match speaker {
            Speaker::Gobgp(g) => AnySpeaker::Gobgp(GobgpBackend::new(g)?),
            Speaker::Bird(b) => AnySpeaker::Bird(BirdBackend::new(b)),
        })
    }
}

#[async_trait::async_trait]
impl Backend for AnySpeaker {
    async fn list(&self) -> Result<Announced, BackendError> {
        match self {
            AnySpeaker::Gobgp(b) => b.list().await,
            AnySpeaker::Bird(b) => b.list().await,
        }
    }
    async fn announce(&self, prefix: ipnet::IpNet, route: Route) -> Result<(), BackendError> {
        match self {
            AnySpeaker::Gobgp(b) => b.announce(prefix, route).await,
            AnySpeaker::Bird(b) => b.announce(prefix, route).await,
        }
    }
    async fn withdraw(&self, prefix: ipnet::IpNet) -> Result<(), BackendError> {
        match self {
            AnySpeaker::Gobgp(b) => b.withdraw(prefix).await,
            AnySpeaker::Bird(b) => b.withdraw(prefix).await,
        }
    }
}

/// The reconcile loop's settings.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    pub reconcile_interval: Duration,
    pub report_interval: Duration,
    pub withdraw_on_shutdown: bool,
}

/// Reconciles on every plan and every `reconcile_interval` until `shutdown`; then
/// withdraws if configured (under the last-announcer rule), else leaves the routes.
pub async fn reconcile_loop<B: Backend>(
    mut reconciler: Reconciler<B>,
    mut plans: watch::Receiver<Option<Arc<AnycastPlan>>>,
    status: Arc<Status>,
    reports: watch::Sender<Option<AgentReport>>,
    settings: LoopSettings,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let started = Instant::now();
    let mut tick = tokio::time::interval(settings.reconcile_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_report: Option<(Instant, AgentReport)> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = plans.changed() => if changed.is_err() { break },
            _ = tick.tick() => {}
        }
        let plan = plans.borrow_and_update().clone();
        let out = reconciler.reconcile(plan.as_deref()).await;
        metrics::gauge!(m::SECONDS_SINCE_PLAN).set(status.seconds_since_plan(started));
        let error = (!out.errors.is_empty()).then(|| out.errors.join("; "));
        let applied = plan.as_ref().filter(|_| out.applied).map(|p| p.version);
        if let Some(v) = applied {
            metrics::gauge!(m::PLAN_VERSION).set(v as f64);
        }
        status.update(|s| {
            if applied.is_some() {
                s.on_speaker = applied;
            }
            s.speaker_error = error;
        });
        if let Some(report) = out.report {
            let report = AgentReport::Anycast(report);
            let due = match &last_report {
                None => true,
                Some((at, last)) => out.changed || *last != report || at.elapsed() >= settings.report_interval,
            };
            if due {
                reports.send_replace(Some(report.clone()));
                last_report = Some((Instant::now(), report));
            }
        }
    }
    let plan = plans.borrow().clone();
    if settings.withdraw_on_shutdown {
        let out = reconciler.withdraw_for_shutdown(plan.as_deref()).await;
        tracing::info!(changed = out.changed, errors = ?out.errors, "withdraw_on_shutdown: withdrew what another PoP announces");
    } else {
        tracing::info!("shutting down; the speaker keeps its routes (withdraw_on_shutdown = false)");
    }
    Ok(())
}

/// Runs the agent until `shutdown` fires (or a task fails).
pub async fn run(validated: Validated, admin: TcpListener, shutdown: CancellationToken) -> Result<(), String> {
    meridian_daemon::admin::metrics_handle()?;
    let cache_dir = validated.plan_cache_dir().and_then(|dir| match std::fs::create_dir_all(dir) {
        Ok(()) => Some(dir.to_path_buf()),
        Err(e) => {
            tracing::warn!(state_dir = %dir.display(), error = %e, "cannot create the plan cache directory; running without the cache");
            None
        }
    });
    let cfg = validated.config;
    let backend = Arc::new(AnySpeaker::new(validated.speaker).map_err(|e| e.to_string())?);
    let status = Arc::new(Status::default());
    let (sink, plans) = AnycastPlans::new(status.clone());
    let sink = Arc::new(sink);
    let settings = Arc::new(meridian_edge_agent::Settings {
        endpoints: cfg.control_plane.clone(),
        agent_id: cfg.agent_id.clone(),
        kind: AgentKind::Anycast,
        connect_timeout: cfg.connect_timeout,
        reconnect_initial: cfg.reconnect_initial,
        reconnect_max: cfg.reconnect_max,
        state_dir: cache_dir,
        metrics: MetricNames::new(m::PREFIX),
        credentials: validated.credentials,
    });
    meridian_edge_agent::load_cached(&settings, &*sink);
    let (reports_tx, reports_rx) = watch::channel(None);
    let mut tasks = meridian_daemon::shutdown::Tasks::new();
    tasks.spawn(
        "admin-http",
        meridian_daemon::admin::serve(admin, status.subscribe(), shutdown.clone()),
    );
    tasks.spawn(
        "reconcile",
        reconcile_loop(
            Reconciler::new(cfg.pop.clone(), backend),
            plans,
            status,
            reports_tx,
            LoopSettings {
                reconcile_interval: cfg.reconcile_interval,
                report_interval: cfg.report_interval,
                withdraw_on_shutdown: cfg.withdraw_on_shutdown,
            },
            shutdown.clone(),
        ),
    );
    tasks.spawn(
        "plan-follower",
        meridian_edge_agent::run_with_reports(settings, sink, Some(reports_rx), shutdown.clone()),
    );
    tasks.run_until(shutdown, Duration::from_secs(10)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Recording;
    use meridian_dns_core::plan::{AnycastAction, AnycastSnapshot};

    fn snapshot(version: u64, action: AnycastAction, n: u32) -> PlanSnapshot {
        PlanSnapshot {
            version,
            created_at_unix_ms: None,
            dns_ttl_seconds: 0,
            default_region: String::new(),
            regions: vec![],
            epoch: String::new(),
            content_hash: String::new(),
            anycast: vec![
                AnycastSnapshot {
                    pop: "fra1".into(),
                    prefix: "198.51.100.0/24".parse().unwrap(),
                    action,
                    prepend_count: n,
                },
                AnycastSnapshot {
                    pop: "ams1".into(),
                    prefix: "198.51.100.0/24".parse().unwrap(),
                    action: AnycastAction::Announce,
                    prepend_count: 0,
                },
            ],
        }
    }

    async fn wait(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}");
    }

    #[tokio::test]
    async fn ready_only_once_a_plan_is_on_the_speaker_and_the_control_plane_can_go() {
        let status = Arc::new(Status::default());
        let (sink, plans) = AnycastPlans::new(status.clone());
        let speaker = Arc::new(Recording::default());
        let (reports_tx, mut reports) = watch::channel(None);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(reconcile_loop(
            Reconciler::new("fra1", speaker.clone()),
            plans,
            status.clone(),
            reports_tx,
            LoopSettings {
                reconcile_interval: Duration::from_millis(20),
                report_interval: Duration::from_secs(60),
                withdraw_on_shutdown: false,
            },
            shutdown.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(status.readiness().unwrap_err().contains("no plan applied"));
        assert!(speaker.routes.lock().unwrap().is_empty(), "nothing before a plan");

        // A plan the agent must refuse is a NACK, and nothing changes.
        let mut bad = snapshot(1, AnycastAction::Prepend, 0);
        bad.anycast[0].prepend_count = 0;
        let r = sink.install(&bad).unwrap_err();
        assert_eq!(r.kind, "bad_anycast");
        assert!(r.reason.contains("prepend_count 0"), "{}", r.reason);

        sink.install(&snapshot(2, AnycastAction::Prepend, 3)).unwrap();
        wait("ready", || status.readiness().is_ok()).await;
        assert_eq!(sink.applied_version(), 2);
        assert_eq!(speaker.routes.lock().unwrap().values().next().unwrap().prepends, 3);
        reports.changed().await.unwrap();
        let Some(AgentReport::Anycast(report)) = reports.borrow_and_update().clone() else {
            panic!("no report")
        };
        assert_eq!(
            (report[0].actual, report[0].actual_prepend),
            (AnycastAction::Prepend, 3)
        );

        // The control plane goes away: still ready, routes stay, drift still fixed.
        sink.observe(AgentEvent::Unreachable {
            replica: "cp-1",
            reason: "gone",
        });
        let text = status.readiness().unwrap();
        assert!(
            text.contains("control plane unreachable") && text.contains("keeping the routes"),
            "{text}"
        );
        speaker.routes.lock().unwrap().clear();
        wait("drift corrected", || !speaker.routes.lock().unwrap().is_empty()).await;

        // A speaker failure makes the agent unready, with the reason.
        speaker.fail.store(true, std::sync::atomic::Ordering::Relaxed);
        wait("unready", || status.readiness().is_err()).await;
        assert!(status.readiness().unwrap_err().contains("told to fail"));
        speaker.fail.store(false, std::sync::atomic::Ordering::Relaxed);
        wait("ready again", || status.readiness().is_ok()).await;

        // Shutdown without withdraw_on_shutdown leaves the routes.
        shutdown.cancel();
        task.await.unwrap().unwrap();
        assert_eq!(speaker.routes.lock().unwrap().len(), 1);
    }
}
