//! Following the control plane: `WatchPlan` on one replica at a time, tried in the
//! configured order, failing over on error and backing off (with jitter) after a
//! whole round failed, as the prober follows its assignments. Each plan is checked
//! (versions only go forward; malformed or empty plans are NACKed with the reason
//! and the previous plan stays), swapped in, cached on disk, and ACKed.
//!
//! This module is the gRPC adapter: the only one that sees `meridian.v1` types.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meridian_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use crate::handler::{Responder, Served};
use crate::metrics as m;
use crate::plan::{self, PlanDocument, PopDocument, RegionDocument};
use crate::state;
use crate::status::StatusBoard;

/// How to reach the control plane.
#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoints: Vec<String>,
    pub agent_id: String,
    pub connect_timeout: Duration,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    pub state_dir: Option<PathBuf>,
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

/// Follows the control plane until shutdown.
pub async fn run(
    settings: Arc<Settings>,
    responder: Arc<Responder>,
    status: Arc<StatusBoard>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let n = settings.endpoints.len().max(1);
    let mut backoff = Backoff::new(settings.reconnect_initial, settings.reconnect_max);
    let mut index = 0usize;
    let mut failed_in_a_row = 0usize;
    while !shutdown.is_cancelled() {
        let Some(endpoint) = settings.endpoints.get(index % n) else {
            return Err("no control-plane endpoint configured".into());
        };
        let (received, reason) = tokio::select! {
            r = watch_once(endpoint, &settings, &responder, &status) => r,
            _ = shutdown.cancelled() => break,
        };
        metrics::counter!(m::RECONNECTS, "replica" => endpoint.clone()).increment(1);
        status.unreachable(format!("{endpoint}: {reason}"));
        if received {
            backoff.reset();
            failed_in_a_row = 0;
        }
        failed_in_a_row += 1;
        index += 1;
        let next = settings.endpoints.get(index % n).cloned().unwrap_or_default();
        tracing::warn!(replica = %endpoint, error = %reason, next = %next, "plan stream unavailable; failing over");
        if failed_in_a_row >= n {
            // Every replica failed in this round: wait before the next one.
            let delay = backoff.next_delay(rand::random());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }
    Ok(())
}

/// One plan stream. Returns whether any plan arrived, and why it ended.
async fn watch_once(endpoint: &str, s: &Settings, responder: &Responder, status: &StatusBoard) -> (bool, String) {
    let channel = match Endpoint::from_shared(endpoint.to_string()) {
        Err(e) => return (false, format!("invalid endpoint: {e}")),
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
        kind: pb::AgentKind::Dns as i32,
        applied_version: responder.current().map_or(0, |p| p.version()),
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
    let outgoing = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut stream = match tokio::time::timeout(s.connect_timeout, client.watch_plan(outgoing)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => return (false, format!("WatchPlan refused: {status}")),
        Err(_) => return (false, format!("WatchPlan not answered within {:?}", s.connect_timeout)),
    };
    status.connected(endpoint);
    tracing::info!(replica = %endpoint, "plan stream open");
    let mut received = false;
    loop {
        match stream.message().await {
            Ok(Some(update)) => {
                let Some(plan) = update.plan else {
                    continue;
                };
                received = true;
                let verdict = apply(doc_from_pb(plan), endpoint, s, responder, status).await;
                let msg = match verdict {
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

/// Checks, swaps in, caches and answers for one plan.
pub async fn apply(
    doc: PlanDocument,
    replica: &str,
    s: &Settings,
    responder: &Responder,
    status: &StatusBoard,
) -> Verdict {
    let version = doc.version;
    let applied = responder.current().map_or(0, |p| p.version());
    if version != 0 && version == applied {
        metrics::counter!(m::PLANS_RECEIVED, "outcome" => "repeated").increment(1);
        status.applied(version, replica);
        return Verdict::Ack { version, new: false };
    }
    if version < applied || version == 0 {
        metrics::counter!(m::PLANS_RECEIVED, "outcome" => "stale").increment(1);
        let reason = if version == 0 {
            "plan has version 0; versions start at 1".to_string()
        } else {
            format!("plan v{version} is older than the applied v{applied}; versions only go forward")
        };
        tracing::warn!(replica = %replica, version, applied, "ignoring an older plan");
        return Verdict::Nack { version, reason };
    }
    let plan = match plan::validate(&doc) {
        Ok(p) => p,
        Err(rejection) => {
            metrics::counter!(m::PLANS_RECEIVED, "outcome" => "rejected").increment(1);
            metrics::counter!(m::PLAN_NACKS, "reason" => rejection.kind()).increment(1);
            tracing::warn!(replica = %replica, version, applied, reason = %rejection, "plan rejected; keeping the previous one");
            return Verdict::Nack {
                version,
                reason: rejection.to_string(),
            };
        }
    };
    let regions = plan.regions.len();
    responder.swap(Arc::new(Served::new(plan)));
    metrics::counter!(m::PLANS_RECEIVED, "outcome" => "applied").increment(1);
    metrics::gauge!(m::PLAN_VERSION).set(version as f64);
    status.applied(version, replica);
    tracing::info!(replica = %replica, version, previous = applied, regions, "plan applied");
    if let Some(dir) = s.state_dir.clone() {
        let now = unix_ms(SystemTime::now());
        let saved = tokio::task::spawn_blocking(move || state::save(&dir, &doc, now)).await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                metrics::counter!(m::CACHE_WRITE_FAILURES).increment(1);
                tracing::error!(version, error = ?e, "cannot cache the plan; a restart without a control plane would serve an older one");
            }
            Err(e) => {
                metrics::counter!(m::CACHE_WRITE_FAILURES).increment(1);
                tracing::error!(version, error = %e, "the plan cache writer failed");
            }
        }
    }
    Verdict::Ack { version, new: true }
}

/// The wire plan as the agent's plain document (by hand: wire types stop here).
pub fn doc_from_pb(p: pb::SteeringPlan) -> PlanDocument {
    PlanDocument {
        version: p.version,
        created_at_unix_ms: p.created_at.map(|t| {
            t.seconds
                .saturating_mul(1000)
                .saturating_add(i64::from(t.nanos / 1_000_000))
        }),
        dns_ttl_seconds: p.dns_ttl_seconds,
        default_region: p.default_region,
        regions: p
            .regions
            .into_iter()
            .map(|r| RegionDocument {
                region: r.region,
                client_prefixes: r.client_prefixes,
                pops: r
                    .pops
                    .into_iter()
                    .map(|w| PopDocument {
                        pop: w.pop,
                        weight: w.weight,
                        ipv4: w.ipv4,
                        ipv6: w.ipv6,
                    })
                    .collect(),
            })
            .collect(),
    }
}

pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Exponential reconnect backoff with "equal jitter" (each delay drawn from the upper
/// half of the current step), the same rule as the prober's.
#[derive(Debug, Clone)]
struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            step: initial,
        }
    }

    /// `unit` is uniform in `[0, 1)`.
    fn next_delay(&mut self, unit: f64) -> Duration {
        let unit = if unit.is_finite() { unit.clamp(0.0, 1.0) } else { 0.0 };
        let half = self.step / 2;
        let delay = half + half.mul_f64(unit);
        self.step = (self.step * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.step = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::sample;
    use crate::zones::Zones;

    fn settings(dir: Option<PathBuf>) -> Settings {
        Settings {
            endpoints: vec!["http://127.0.0.1:1".into()],
            agent_id: "dns-1".into(),
            connect_timeout: Duration::from_secs(1),
            reconnect_initial: Duration::from_millis(10),
            reconnect_max: Duration::from_millis(100),
            state_dir: dir,
        }
    }

    #[tokio::test]
    async fn versions_only_go_forward_and_bad_plans_keep_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(Some(dir.path().to_path_buf()));
        let r = Responder::new(Zones::default(), 1232);
        let b = StatusBoard::new(s.state_dir.as_ref());
        assert_eq!(
            apply(sample(2), "cp", &s, &r, &b).await,
            Verdict::Ack { version: 2, new: true }
        );
        assert_eq!(state::load(dir.path()).unwrap().unwrap().version, 2, "cached");
        assert_eq!(
            apply(sample(2), "cp", &s, &r, &b).await,
            Verdict::Ack { version: 2, new: false }
        );
        match apply(sample(1), "cp", &s, &r, &b).await {
            Verdict::Nack { version: 1, reason } => assert!(reason.contains("older than the applied v2"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let mut bad = sample(3);
        bad.regions[0].pops[0].weight = f64::NAN;
        match apply(bad, "cp", &s, &r, &b).await {
            Verdict::Nack { version: 3, reason } => assert!(reason.contains("weight NaN"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.current().unwrap().version(), 2, "the previous plan stays");
        assert_eq!(state::load(dir.path()).unwrap().unwrap().version, 2);
        assert_eq!(
            apply(sample(5), "cp", &s, &r, &b).await,
            Verdict::Ack { version: 5, new: true }
        );
    }

    #[test]
    fn backoff_grows_to_the_cap_within_jitter_bounds() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        for (i, step) in [100u64, 200, 400, 800, 1000, 1000].iter().enumerate() {
            let d = b.next_delay(i as f64 / 6.0);
            assert!(d >= ms(step / 2) && d <= ms(*step), "step {step}: {d:?}");
        }
        b.reset();
        assert_eq!(b.next_delay(0.0), ms(50));
    }

    #[test]
    fn wire_plans_convert_by_hand() {
        let p = pb::SteeringPlan {
            version: 4,
            created_at: Some(meridian_proto::prost_types::Timestamp {
                seconds: 10,
                nanos: 5_000_000,
            }),
            regions: vec![pb::RegionSteering {
                region: "eu".into(),
                pops: vec![pb::PopWeight {
                    pop: "fra1".into(),
                    weight: 1.0,
                    ipv4: vec!["192.0.2.1".into()],
                    ipv6: vec![],
                }],
                client_prefixes: vec!["10.0.0.0/8".into()],
            }],
            dns_ttl_seconds: 30,
            default_region: "eu".into(),
            ..Default::default()
        };
        let doc = doc_from_pb(p);
        assert_eq!(doc.created_at_unix_ms, Some(10_005));
        assert!(plan::validate(&doc).is_ok());
    }
}
