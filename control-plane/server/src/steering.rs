//! The steering loop on the leader: a thin shell around the pure
//! [`meridian_engine::SteeringDriver`]. It feeds the driver a health snapshot (taken
//! under the health lock, which is released before anything is computed), the
//! topology, the intents and the plan in force, and carries out the driver's
//! `Ready`: publish the plan with a fenced transaction, record the events, bump the
//! metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use meridian_core::keys::Keys;
use meridian_engine::driver::published_events;
use meridian_engine::{Intents, SteeringDriver, SteeringView};
use meridian_store::follow::Follower;
use meridian_store::{KeyValue, Store};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::convert::now_ms;
use crate::events::EventLog;
use crate::health::HealthView;
use crate::plans::{self, PlanError};
use crate::replica::ReplicaContext;

/// Follows drains and the plan pin in the store (every replica), through the
/// store's one follower (list, watch, relist after compaction, one retry policy).
pub async fn follow_intents(
    store: Arc<dyn Store>,
    keys: Keys,
    tx: watch::Sender<Intents>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let root = format!("{}/intents/", keys.root());
    let mut follower = Follower::new(store, root);
    let mut view: BTreeMap<String, KeyValue> = BTreeMap::new();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            event = follower.next() => event,
        };
        // A snapshot replaces the view; an update patches it.
        event.apply_to(&mut view);
        let (intents, errors) = Intents::decode(&keys, view.iter().map(|(k, kv)| (k.as_str(), kv.value.as_slice())));
        for e in errors {
            tracing::error!(key = %e.key, reason = %e.reason, "unreadable intent ignored");
        }
        tx.send_replace(intents);
    }
}

/// On the leader: tick the driver on every change (verdicts, topology, intents,
/// leadership) and once a second (latency drift, slow-start bake times); publish
/// what it asks for.
pub(crate) async fn run(
    ctx: ReplicaContext,
    health: Arc<HealthView>,
    log: Arc<EventLog>,
    mut intents: watch::Receiver<Intents>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let mut generation = health.generation();
    let mut topology = ctx.topology.clone();
    let mut leadership = ctx.leadership.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut driver = SteeringDriver::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
            _ = generation.changed() => {}
            _ = topology.changed() => {}
            _ = intents.changed() => {}
            _ = leadership.changed() => {}
        }
        let Some(fence) = leadership.borrow().fence.clone() else {
            continue;
        };
        let applied = topology.borrow().clone();
        let current_intents = intents.borrow().clone();
        let current = ctx.plan.borrow().clone();
        // The snapshot is the only thing taken under the health lock.
        let started = std::time::Instant::now();
        let snapshot = health.snapshot();
        let ready = driver.tick(
            now_ms(),
            SteeringView {
                topology: &applied.doc,
                topology_revision: applied.revision,
                health: &snapshot,
                intents: &current_intents,
                current: current.as_deref(),
                replica: ctx.me.id.as_str(),
            },
        );
        // Snapshot plus compute: what one tick costs the leader.
        metrics::histogram!("meridian_control_plane_steering_tick_seconds").record(started.elapsed().as_secs_f64());
        // Failback steps are change records too (automatic, recorded as they happen).
        let policy = applied.doc.policy.clone();
        for event in &ready.events {
            if let meridian_engine::EventKind::SlowStart(step) = &event.kind {
                let bake_ms = u64::try_from(policy.slow_start_bake.as_millis()).unwrap_or(u64::MAX);
                if let Err(e) = ctx
                    .ops
                    .record_auto_failback(&fence, step, &policy.slow_start_stages, bake_ms)
                    .await
                {
                    tracing::warn!(error = %e, "cannot record the failback change");
                }
            }
        }
        log.record_all(ready.events);
        if let Some(error) = ready.error {
            tracing::error!(error = %error, "steering could not compute a plan; the last good plan stays in force");
        }
        let Some(candidate) = ready.publish else { continue };
        let urgent = meridian_engine::is_urgent(current.as_deref(), &candidate);
        let held = ctx.fleet_hold.borrow().as_ref().map(|h| h.hold.change.clone());
        match plans::publish_unpinned(ctx.store.as_ref(), &ctx.keys, &fence, candidate, urgent).await {
            Ok(published) => {
                // Each PoP newly DOWN is an automatic failover: a change record.
                if urgent {
                    for pop in newly_down(current.as_deref(), &published) {
                        let why = published
                            .reasons
                            .iter()
                            .find(|r| r.contains(&pop))
                            .cloned()
                            .unwrap_or_else(|| format!("{pop} DOWN"));
                        if let Err(e) = ctx
                            .ops
                            .record_auto_failover(&fence, &pop, published.version, &why)
                            .await
                        {
                            tracing::warn!(error = %e, pop = %pop, "cannot record the failover change");
                        }
                    }
                }
                if let (true, Some(change)) = (urgent, held) {
                    tracing::warn!(version = published.version, change = %change, "urgent plan released the fleet from a canary wave");
                    metrics::counter!("meridian_control_plane_fleet_holds_released_total", "by" => "urgent")
                        .increment(1);
                    log.record(meridian_engine::events::Event {
                        at_unix_ms: now_ms(),
                        actor: meridian_core::Actor::Steering,
                        role: None,
                        kind: meridian_engine::events::EventKind::Rollout {
                            change,
                            what: format!(
                                "urgent plan v{} (a PoP newly DOWN) sent to every agent, skipping the canary wave",
                                published.version
                            ),
                        },
                    });
                }
                for g in &published.guardrails {
                    tracing::warn!(guardrail = %g, version = published.version, "guardrail fired");
                    metrics::counter!("meridian_control_plane_guardrail_firings_total").increment(1);
                }
                log.record_all(published_events(&published, now_ms()));
                // Do not recompute against a stale "current" before the follower saw it.
                let mut plan_rx = ctx.plan.clone();
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    plan_rx.wait_for(|p| p.as_ref().is_some_and(|p| p.version >= published.version)),
                )
                .await;
            }
            Err(PlanError::Conflict(_)) => tracing::debug!("plan publish raced; recomputing"),
            Err(e @ PlanError::Pinned(_)) => {
                tracing::info!(error = %e, "steering paused by a pin the intents follower had not seen yet")
            }
            Err(e) => tracing::warn!(error = %e, "plan publish failed"),
        }
    }
}

/// The PoPs DOWN in `new` that were not DOWN in `old`.
fn newly_down(
    old: Option<&meridian_core::records::StoredPlan>,
    new: &meridian_core::records::StoredPlan,
) -> Vec<String> {
    use meridian_core::records::PopState;
    new.pops
        .iter()
        .filter(|p| {
            p.state == PopState::Down
                && old.is_some_and(|o| o.pops.iter().any(|q| q.pop == p.pop && q.state != PopState::Down))
        })
        .map(|p| p.pop.clone())
        .collect()
}
