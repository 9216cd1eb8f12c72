//! Staged changes over real gRPC on one replica (issue [8]): a drain ladder walks
//! its rungs (the plan keeps 50 % of the PoP's weight, then drains it) and
//! completes; a change is paused, resumed and rolled back mid-bake, after which the
//! PoP is back in service; refusals name what to do instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use meridian_proto::v1 as pb;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const TOPOLOGY: &str = r#"
[policy]
rise = 1
min_regions = 2
[[pops]]
id = "fra1"
capacity = 1000
ipv4 = ["192.0.2.1"]
endpoints = [{ name = "tcp", kind = "tcp", address = "192.0.2.1:80" }]

[[pops]]
id = "ams1"
capacity = 1000
ipv4 = ["192.0.2.2"]
endpoints = [{ name = "tcp", kind = "tcp", address = "192.0.2.2:80" }]

[[regions]]
id = "eu-west"
demand = 100
client_prefixes = ["10.1.0.0/16"]
latency_hints = { fra1 = "10ms", ams1 = "15ms" }
"#;

/// Probers in two regions report both PoPs healthy every 200 ms until `stop`.
fn feed_health(channel: Channel, stop: CancellationToken) {
    feed_health_with(channel, stop, Default::default());
}

/// PoPs the probers see refusing connections (the rest healthy).
type DownPops = std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>;

/// [`feed_health`], with the PoPs in `down` failing every probe.
fn feed_health_with(channel: Channel, stop: CancellationToken, down: DownPops) {
    tokio::spawn(async move {
        let mut seq = 0u64;
        while !stop.is_cancelled() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            let at = meridian_proto::prost_types::Timestamp {
                seconds: now.as_secs() as i64,
                nanos: now.subsec_nanos() as i32,
            };
            for region in ["r1", "r2"] {
                seq += 1;
                let result = |pop: &str| {
                    let ok = !down.lock().unwrap().contains(pop);
                    pb::ProbeResult {
                        prober_id: format!("p-{region}"),
                        region: region.into(),
                        pop: pop.into(),
                        endpoint: "tcp".into(),
                        observed_at: Some(at),
                        success: ok,
                        latency: Some(meridian_proto::prost_types::Duration {
                            seconds: 0,
                            nanos: 2_000_000,
                        }),
                        failure_class: if ok {
                            pb::FailureClass::None
                        } else {
                            pb::FailureClass::Refused
                        } as i32,
                        detail: if ok { String::new() } else { "connection refused".into() },
                    }
                };
                let batch = pb::ProbeResultBatch {
                    sequence: seq,
                    prober_id: format!("p-{region}"),
                    region: region.into(),
                    suspects: Vec::new(),
                    results: vec![result("fra1"), result("ams1")],
                };
                let mut probes = pb::probe_service_client::ProbeServiceClient::new(channel.clone());
                if let Ok(resp) = probes.report_results(tokio_stream::iter(vec![batch])).await {
                    let _ = resp.into_inner().message().await;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

async fn wait<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Applies `toml` (retrying until the replica leads and takes it).
async fn apply_topology(channel: &Channel, toml: &str) {
    let op = pb::operator_service_client::OperatorServiceClient::new(channel.clone());
    wait("the topology to apply", || {
        let mut op = op.clone();
        async move {
            op.apply_topology(pb::ApplyTopologyRequest {
                topology_toml: toml.to_string(),
                dry_run: false,
                reason: "test".into(),
                override_freeze: false,
            })
            .await
            .ok()
            .filter(|r| r.get_ref().applied)
        }
    })
    .await;
}

/// Waits until both PoPs of the test topology are UP.
async fn wait_pops_up(channel: &Channel) {
    wait("both PoPs UP", || {
        let channel = channel.clone();
        async move {
            let mut q = pb::query_service_client::QueryServiceClient::new(channel);
            let h = q.get_health(pb::GetHealthRequest {}).await.ok()?.into_inner();
            (h.pops.len() == 2 && h.pops.iter().all(|p| p.state == pb::PopState::Up as i32)).then_some(())
        }
    })
    .await;
}

async fn change(channel: &Channel, id: &str) -> pb::ChangeRecord {
    let mut q = pb::query_service_client::QueryServiceClient::new(channel.clone());
    let list = q
        .list_changes(pb::ListChangesRequest {
            limit: 100,
            active_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    list.changes
        .into_iter()
        .find(|c| c.id == id)
        .expect("the change is listed")
}

async fn plan(channel: &Channel, version: u64) -> Option<pb::SteeringPlan> {
    let mut q = pb::query_service_client::QueryServiceClient::new(channel.clone());
    q.get_plan(pb::GetPlanRequest {
        version,
        ..Default::default()
    })
    .await
    .ok()
    .and_then(|r| r.into_inner().plan)
}

fn weight(plan: &pb::SteeringPlan, pop: &str) -> f64 {
    plan.regions
        .iter()
        .flat_map(|r| r.pops.iter())
        .filter(|w| w.pop == pop)
        .map(|w| w.weight)
        .sum()
}

fn pop_state(plan: &pb::SteeringPlan, pop: &str) -> i32 {
    plan.pops
        .iter()
        .find(|p| p.pop == pop)
        .map(|p| p.state)
        .unwrap_or_default()
}

fn ladder(steps: &[u32], bake_ms: u64) -> pb::DrainRequest {
    pb::DrainRequest {
        pop: "fra1".into(),
        reason: "maintenance".into(),
        steps: steps.to_vec(),
        bake_ms,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_ladder_walks_its_rungs_and_can_be_paused_resumed_and_rolled_back() {
    let replica = common::start(toml::from_str("[auth]\nmode = \"off\"\n").unwrap()).await;
    let channel = replica.channel();
    let mut op = pb::operator_service_client::OperatorServiceClient::new(channel.clone());
    apply_topology(&channel, TOPOLOGY).await;
    let stop = CancellationToken::new();
    feed_health(channel.clone(), stop.clone());
    wait_pops_up(&channel).await;
    let first = wait("a plan with fra1 taking eu-west", || {
        let channel = channel.clone();
        async move { plan(&channel, 0).await.filter(|p| weight(p, "fra1") > 0.99) }
    })
    .await;

    // A ladder 100 → 50 → 0 with short bakes: it walks both rungs and completes.
    let started = op
        .drain(ladder(&[50, 0], 300))
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap();
    assert_eq!(started.total_steps, 2);
    let id = started.id.clone();
    // While it is active, the PoP is held: an immediate drain names the change.
    let held = op
        .drain(pb::DrainRequest {
            pop: "fra1".into(),
            reason: "again".into(),
            ..Default::default()
        })
        .await;
    if let Err(s) = held {
        assert!(
            s.message().contains(&id) || s.message().contains("already drained"),
            "{s:?}"
        );
    }
    let done = wait("the ladder to complete", || {
        let channel = channel.clone();
        let id = id.clone();
        async move { Some(change(&channel, &id).await).filter(|c| c.state == pb::ChangeState::Completed as i32) }
    })
    .await;
    assert_eq!(done.step, 2);
    // Some published plan kept fra1 at half its weight; the last drains it.
    let last = plan(&channel, 0).await.unwrap();
    assert_eq!(pop_state(&last, "fra1"), pb::PopState::Drained as i32);
    assert_eq!(weight(&last, "fra1"), 0.0);
    let mut saw_half = false;
    for v in first.version..=last.version {
        if let Some(p) = plan(&channel, v).await {
            if p.reasons.iter().any(|r| r.contains("drain ladder: fra1 at 50%")) {
                assert!((weight(&p, "fra1") - 0.5).abs() < 0.05, "v{v}: {}", weight(&p, "fra1"));
                saw_half = true;
            }
        }
    }
    assert!(saw_half, "no plan kept fra1 at 50 %");
    // A completed change is not rolled back (it would be reverted).
    let err = op
        .rollback_change(pb::ChangeIdRequest {
            change_id: id.clone(),
            reason: "late".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    // Back in service, then a ladder with a long bake: pause, resume, roll back.
    op.undrain(pb::UndrainRequest {
        pop: "fra1".into(),
        reason: "done".into(),
        override_freeze: false,
    })
    .await
    .unwrap();
    let id = op
        .drain(ladder(&[50, 0], 60_000))
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap()
        .id;
    wait("the first rung to bake", || {
        let channel = channel.clone();
        let id = id.clone();
        async move { Some(change(&channel, &id).await).filter(|c| c.summary.contains("(bake)")) }
    })
    .await;
    // Two operators pause at once: exactly one lands; the other is told the change
    // moved (ABORTED) or is already paused (FAILED_PRECONDITION) — never both.
    let (mut op2, req) = (op.clone(), |why: &str| pb::ChangeIdRequest {
        change_id: id.clone(),
        reason: why.into(),
    });
    let (a, b) = tokio::join!(
        op.pause_change(req("customer event")),
        op2.pause_change(req("customer event too"))
    );
    let (ok, err) = match (a, b) {
        (Ok(ok), Err(err)) | (Err(err), Ok(ok)) => (ok, err),
        (a, b) => panic!("exactly one concurrent pause lands: {a:?} {b:?}"),
    };
    assert!(
        matches!(err.code(), tonic::Code::Aborted | tonic::Code::FailedPrecondition),
        "{err:?}"
    );
    let paused = ok.into_inner().change.unwrap();
    assert_eq!(paused.state, pb::ChangeState::Paused as i32);
    assert_eq!(paused.step, 1);
    let again = op
        .pause_change(pb::ChangeIdRequest {
            change_id: id.clone(),
            reason: "twice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    let resumed = op
        .resume_change(pb::ChangeIdRequest {
            change_id: id.clone(),
            reason: "event over".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap();
    assert_eq!(resumed.state, pb::ChangeState::Progressing as i32);
    op.rollback_change(pb::ChangeIdRequest {
        change_id: id.clone(),
        reason: "abandon".into(),
    })
    .await
    .unwrap();
    wait("the rollback", || {
        let channel = channel.clone();
        let id = id.clone();
        async move { Some(change(&channel, &id).await).filter(|c| c.state == pb::ChangeState::RolledBack as i32) }
    })
    .await;
    // Steering computes from the intents before the change: fra1 serves again.
    wait("fra1 back at full weight", || {
        let channel = channel.clone();
        async move { plan(&channel, 0).await.filter(|p| weight(p, "fra1") > 0.99) }
    })
    .await;
    let unknown = op
        .pause_change(pb::ChangeIdRequest {
            change_id: "no-such-change".into(),
            reason: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // The change's transitions are in the event log.
    let mut q = pb::query_service_client::QueryServiceClient::new(channel.clone());
    let events = wait("change events", || {
        let mut q = q.clone();
        async move {
            let e = q
                .list_events(pb::ListEventsRequest {
                    limit: 500,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .events;
            e.iter()
                .any(|e| e.kind == "change" && e.message.contains("rolled_back"))
                .then_some(e)
        }
    })
    .await;
    assert!(events
        .iter()
        .any(|e| e.kind == "change" && e.message.contains("paused")));
    let _ = &mut q;

    stop.cancel();
    replica.stop().await;
}

/// Opens a plan watch as agent `id` of `kind`: the sender for its ACKs, NACKs and
/// reports (the hello already sent) and the stream of plans.
async fn watch_plans(
    channel: Channel,
    id: &str,
    kind: pb::AgentKind,
) -> (
    tokio::sync::mpsc::Sender<pb::AgentMessage>,
    tonic::Streaming<pb::PlanUpdate>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tx.send(pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::AgentHello {
            agent_id: id.to_string(),
            kind: kind as i32,
            applied_version: 0,
        })),
    })
    .await
    .unwrap();
    let updates = pb::plan_service_client::PlanServiceClient::new(channel)
        .watch_plan(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, updates)
}

/// Every plan an agent received: (when, version, fra1's weight).
type Received = std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, u64, f64)>>>;

/// A plan agent over real gRPC: says hello as `id`, records every plan it gets and
/// ACKs it — or, while `nack_partial` is set, NACKs a plan that keeps fra1 at part
/// of its weight (a rung of a ladder).
fn fake_agent(channel: Channel, id: &str, nack_partial: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Received {
    fake_agent_with(channel, id, None, move |plan| {
        let w = weight(plan, "fra1");
        w > 0.01 && w < 0.99 && nack_partial.load(std::sync::atomic::Ordering::SeqCst)
    })
}

/// [`fake_agent`] with any rule for what it NACKs; `plans`, when given, keeps every
/// plan it received.
fn fake_agent_with(
    channel: Channel,
    id: &str,
    plans: Option<std::sync::Arc<std::sync::Mutex<Vec<pb::SteeringPlan>>>>,
    nack: impl Fn(&pb::SteeringPlan) -> bool + Send + 'static,
) -> Received {
    let received: Received = Default::default();
    let log = received.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        let (tx, mut updates) = watch_plans(channel, &id, pb::AgentKind::Dns).await;
        while let Ok(Some(update)) = updates.message().await {
            let plan = update.plan.unwrap();
            let w = weight(&plan, "fra1");
            log.lock().unwrap().push((std::time::Instant::now(), plan.version, w));
            if let Some(plans) = &plans {
                plans.lock().unwrap().push(plan.clone());
            }
            let msg = if nack(&plan) {
                pb::agent_message::Msg::Nack(pb::PlanNack {
                    version: plan.version,
                    reason: "test agent refuses this plan".into(),
                })
            } else {
                pb::agent_message::Msg::Ack(pb::PlanAck { version: plan.version })
            };
            if tx.send(pb::AgentMessage { msg: Some(msg) }).await.is_err() {
                break;
            }
        }
    });
    received
}

async fn agents(channel: &Channel) -> Vec<pb::AgentInfo> {
    let mut q = pb::query_service_client::QueryServiceClient::new(channel.clone());
    q.list_agents(pb::ListAgentsRequest {})
        .await
        .map(|r| r.into_inner().agents)
        .unwrap_or_default()
}

/// The first time an agent got a plan keeping fra1 at part of its weight.
fn first_partial(r: &Received) -> Option<std::time::Instant> {
    r.lock()
        .unwrap()
        .iter()
        .find(|(_, _, w)| *w > 0.01 && *w < 0.99)
        .map(|(at, _, _)| *at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_wave_gets_each_rung_first_and_its_nack_stops_the_change_before_the_fleet() {
    let replica = common::start(toml::from_str("[auth]\nmode = \"off\"\n").unwrap()).await;
    let channel = replica.channel();
    let mut op = pb::operator_service_client::OperatorServiceClient::new(channel.clone());
    let topology = TOPOLOGY.replace(
        "[policy]\n",
        "[policy]\ncanary_agents = [\"dns-canary\"]\ncanary_bake = \"800ms\"\n",
    );
    apply_topology(&channel, &topology).await;
    let stop = CancellationToken::new();
    feed_health(channel.clone(), stop.clone());
    let first = wait("a plan with fra1 taking eu-west", || {
        let channel = channel.clone();
        async move { plan(&channel, 0).await.filter(|p| weight(p, "fra1") > 0.99) }
    })
    .await;
    let nack = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let canary = fake_agent(channel.clone(), "dns-canary", nack.clone());
    let fleet = fake_agent(channel.clone(), "dns-fleet", Default::default());
    wait("both agents on the first plan, in their waves", || {
        let channel = channel.clone();
        async move {
            let a = agents(&channel).await;
            let wave = |id: &str| {
                a.iter()
                    .find(|x| x.agent_id == id)
                    .map(|x| (x.wave.clone(), x.applied_version))
            };
            (wave("dns-canary").is_some_and(|(w, v)| w == "canary" && v >= first.version)
                && wave("dns-fleet").is_some_and(|(w, v)| w == "fleet" && v >= first.version))
            .then_some(())
        }
    })
    .await;

    // A ladder 100 → 50 → 0: each rung goes to the canary wave, bakes there, and
    // only then to the fleet.
    let id = op
        .drain(ladder(&[50, 0], 300))
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap()
        .id;
    let held = wait("the fleet held while the canary tries the first rung", || {
        let channel = channel.clone();
        async move {
            agents(&channel)
                .await
                .into_iter()
                .find(|a| a.agent_id == "dns-fleet" && a.held_on_version != 0)
        }
    })
    .await;
    assert_eq!(held.wave, "fleet");
    assert!(held.held_on_version >= first.version, "{held:?}");
    let done = wait("the ladder to complete", || {
        let channel = channel.clone();
        let id = id.clone();
        async move { Some(change(&channel, &id).await).filter(|c| c.state == pb::ChangeState::Completed as i32) }
    })
    .await;
    assert_eq!(done.step, 2);
    let (canary_at, fleet_at) = (first_partial(&canary).unwrap(), first_partial(&fleet).unwrap());
    // The fleet got the 50 % rung only after the canary had it and baked it (the
    // bake is a lower bound the driver enforces, not a timing guess).
    assert!(
        fleet_at >= canary_at + Duration::from_millis(800),
        "the fleet got the rung {:?} after the canary",
        fleet_at.saturating_duration_since(canary_at)
    );
    let last = plan(&channel, 0).await.unwrap();
    assert_eq!(pop_state(&last, "fra1"), pb::PopState::Drained as i32);
    wait("the fleet on the drained plan, no longer held", || {
        let channel = channel.clone();
        async move {
            agents(&channel)
                .await
                .into_iter()
                .find(|a| a.agent_id == "dns-fleet" && a.applied_version >= last.version && a.held_on_version == 0)
        }
    })
    .await;

    // Back in service; now the canary NACKs ladder rungs: the change stops before
    // the fleet ever sees one.
    op.undrain(pb::UndrainRequest {
        pop: "fra1".into(),
        reason: "done".into(),
        override_freeze: false,
    })
    .await
    .unwrap();
    let back = wait("fra1 back at full weight on both agents", || {
        let channel = channel.clone();
        async move {
            let p = plan(&channel, 0).await.filter(|p| weight(p, "fra1") > 0.99)?;
            let a = agents(&channel).await;
            a.iter()
                .filter(|x| x.applied_version >= p.version)
                .count()
                .eq(&2)
                .then_some(p)
        }
    })
    .await;
    nack.store(true, std::sync::atomic::Ordering::SeqCst);
    let fleet_before = fleet.lock().unwrap().len();
    let id = op
        .drain(ladder(&[50, 0], 300))
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap()
        .id;
    let rolled = wait("the NACKed change to roll back", || {
        let channel = channel.clone();
        let id = id.clone();
        async move { Some(change(&channel, &id).await).filter(|c| c.state == pb::ChangeState::RolledBack as i32) }
    })
    .await;
    assert!(rolled.summary.contains("rolled") || rolled.state == pb::ChangeState::RolledBack as i32);
    // Steering computes from the intents before the change; the fleet moves on to
    // that plan (released from the hold) and never saw the rung.
    wait("the fleet released onto a plan after the rollback", || {
        let channel = channel.clone();
        async move {
            let p = plan(&channel, 0)
                .await
                .filter(|p| p.version > back.version && weight(p, "fra1") > 0.99)?;
            agents(&channel)
                .await
                .into_iter()
                .find(|a| a.agent_id == "dns-fleet" && a.applied_version >= p.version && a.held_on_version == 0)
        }
    })
    .await;
    let fleet_since: Vec<(u64, f64)> = fleet.lock().unwrap()[fleet_before..]
        .iter()
        .map(|(_, v, w)| (*v, *w))
        .collect();
    assert!(
        fleet_since.iter().all(|(_, w)| *w > 0.99),
        "the fleet saw a rung: {fleet_since:?}"
    );
    assert!(first_partial(&canary).is_some());
    // The record and the events say why.
    let mut q = pb::query_service_client::QueryServiceClient::new(channel.clone());
    let events = q
        .list_events(pb::ListEventsRequest {
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(
        events
            .iter()
            .any(|e| e.kind == "change" && e.message.contains(&id) && e.message.contains("NACKed")),
        "{:#?}",
        events.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    assert!(events.iter().any(|e| e.kind == "rollout"));

    stop.cancel();
    replica.stop().await;
}

/// fra1 serves both regions; ams1 is eu-west's second choice.
const TWO_REGIONS: &str = r#"
[[regions]]
id = "us-east"
demand = 100
client_prefixes = ["10.2.0.0/16"]
latency_hints = { fra1 = "12ms", ams1 = "90ms" }
"#;

fn region_weight(plan: &pb::SteeringPlan, region: &str, pop: &str) -> f64 {
    plan.regions
        .iter()
        .filter(|r| r.region == region)
        .flat_map(|r| r.pops.iter())
        .filter(|w| w.pop == pop)
        .map(|w| w.weight)
        .sum()
}

fn pop_capacity(plan: &pb::SteeringPlan, pop: &str) -> f64 {
    plan.pops
        .iter()
        .find(|p| p.pop == pop)
        .map(|p| p.capacity)
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_drains_and_capacity_changes_and_a_revert_over_grpc() {
    let replica = common::start(toml::from_str("[auth]\nmode = \"off\"\n").unwrap()).await;
    let channel = replica.channel();
    let mut op = pb::operator_service_client::OperatorServiceClient::new(channel.clone());
    let topology = format!("{TOPOLOGY}{TWO_REGIONS}");
    apply_topology(&channel, &topology).await;
    let stop = CancellationToken::new();
    feed_health(channel.clone(), stop.clone());
    wait_pops_up(&channel).await;
    wait("fra1 serving both regions", || {
        let channel = channel.clone();
        async move {
            plan(&channel, 0)
                .await
                .filter(|p| region_weight(p, "eu-west", "fra1") > 0.99 && region_weight(p, "us-east", "fra1") > 0.99)
        }
    })
    .await;

    // Drained for eu-west only: eu-west moves to ams1, us-east keeps fra1, and fra1
    // stays UP (in service).
    let drained = op
        .drain(pb::DrainRequest {
            pop: "fra1".into(),
            reason: "eu-west transit maintenance".into(),
            regions: vec!["eu-west".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap();
    assert!(drained.summary.contains("for eu-west"), "{}", drained.summary);
    let p = wait("eu-west off fra1", || {
        let channel = channel.clone();
        async move {
            plan(&channel, 0)
                .await
                .filter(|p| region_weight(p, "eu-west", "fra1") == 0.0)
        }
    })
    .await;
    assert!(region_weight(&p, "eu-west", "ams1") > 0.99);
    assert!(region_weight(&p, "us-east", "fra1") > 0.99);
    assert_eq!(pop_state(&p, "fra1"), pb::PopState::Up as i32);
    // ams1 cannot be drained for eu-west too: nothing would be left to serve it.
    let refused = op
        .drain(pb::DrainRequest {
            pop: "ams1".into(),
            reason: "both".into(),
            regions: vec!["eu-west".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("last-pop-in-region"),
        "{}",
        refused.message()
    );
    let unknown = op
        .drain(pb::DrainRequest {
            pop: "ams1".into(),
            reason: "typo".into(),
            regions: vec!["mars".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument, "{unknown:?}");
    assert!(unknown.message().contains("`mars`"), "{}", unknown.message());
    op.undrain(pb::UndrainRequest {
        pop: "fra1".into(),
        reason: "done".into(),
        override_freeze: false,
    })
    .await
    .unwrap();

    // A capacity change: one staged step, then completed; the plan carries it.
    for (bad, code) in [
        (-1.0, tonic::Code::InvalidArgument),
        (f64::NAN, tonic::Code::InvalidArgument),
    ] {
        let err = op
            .set_capacity(pb::SetCapacityRequest {
                pop: "fra1".into(),
                capacity: bad,
                reason: "bad".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
    }
    let err = op
        .set_capacity(pb::SetCapacityRequest {
            pop: "nope1".into(),
            capacity: 5.0,
            reason: "typo".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let started = op
        .set_capacity(pb::SetCapacityRequest {
            pop: "fra1".into(),
            capacity: 150.0,
            reason: "half the racks are out".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap();
    assert_eq!(started.kind, "set_capacity");
    let id = started.id.clone();
    let done = wait("the capacity change to complete", || {
        let channel = channel.clone();
        let id = id.clone();
        async move { Some(change(&channel, &id).await).filter(|c| c.state == pb::ChangeState::Completed as i32) }
    })
    .await;
    assert!(
        done.analysis
            .iter()
            .any(|c| c.name == "utilisation" && c.verdict == "pass"),
        "{:?}",
        done.analysis
    );
    let p = plan(&channel, 0).await.unwrap();
    assert_eq!(pop_capacity(&p, "fra1"), 150.0);
    // Reverted after completion: the topology's capacity is back.
    let mut q = pb::query_service_client::QueryServiceClient::new(channel.clone());
    let reverted = op
        .revert_change(pb::ChangeIdRequest {
            change_id: id.clone(),
            reason: "racks back".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap();
    assert_eq!(reverted.state, pb::ChangeState::Reverted as i32);
    wait("fra1's capacity back to 1000", || {
        let channel = channel.clone();
        async move { plan(&channel, 0).await.filter(|p| pop_capacity(p, "fra1") == 1000.0) }
    })
    .await;
    let again = op
        .revert_change(pb::ChangeIdRequest {
            change_id: id.clone(),
            reason: "twice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    let shown = q
        .get_change(pb::GetChangeRequest { change_id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap();
    assert!(
        shown
            .history
            .iter()
            .any(|t| t.to == "reverted" && t.why == "racks back"),
        "{:?}",
        shown.history
    );
    let missing = q
        .get_change(pb::GetChangeRequest {
            change_id: "no-such".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    stop.cancel();
    replica.stop().await;
}

/// Rollback restores the intents, not an old plan: a PoP that died during the
/// change stays out after it, and automatic failover keeps working (no pin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_that_died_during_a_change_stays_out_after_its_rollback() {
    let replica = common::start(toml::from_str("[auth]\nmode = \"off\"\n").unwrap()).await;
    let channel = replica.channel();
    let mut op = pb::operator_service_client::OperatorServiceClient::new(channel.clone());
    apply_topology(&channel, TOPOLOGY).await;
    let stop = CancellationToken::new();
    let down: DownPops = Default::default();
    feed_health_with(channel.clone(), stop.clone(), down.clone());
    let health = |pop: &'static str, want: pb::PopState| {
        let channel = channel.clone();
        async move {
            wait(&format!("{pop} {want:?}"), || {
                let channel = channel.clone();
                async move {
                    let mut q = pb::query_service_client::QueryServiceClient::new(channel);
                    let h = q.get_health(pb::GetHealthRequest {}).await.ok()?.into_inner();
                    h.pops
                        .iter()
                        .any(|p| p.pop == pop && p.state == want as i32)
                        .then_some(())
                }
            })
            .await
        }
    };
    health("fra1", pb::PopState::Up).await;
    health("ams1", pb::PopState::Up).await;
    wait("a plan with fra1 taking eu-west", || {
        let channel = channel.clone();
        async move { plan(&channel, 0).await.filter(|p| weight(p, "fra1") > 0.99) }
    })
    .await;
    let id = op
        .drain(ladder(&[50, 0], 60_000))
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap()
        .id;
    wait("the first rung to bake", || {
        let channel = channel.clone();
        let id = id.clone();
        async move { Some(change(&channel, &id).await).filter(|c| c.phase == "bake") }
    })
    .await;
    // fra1 (the PoP being drained) dies mid-bake; the operator rolls back.
    down.lock().unwrap().insert("fra1".into());
    health("fra1", pb::PopState::Down).await;
    op.rollback_change(pb::ChangeIdRequest {
        change_id: id.clone(),
        reason: "abandon the maintenance".into(),
    })
    .await
    .unwrap();
    wait("the rollback", || {
        let channel = channel.clone();
        let id = id.clone();
        async move { Some(change(&channel, &id).await).filter(|c| c.state == pb::ChangeState::RolledBack as i32) }
    })
    .await;
    // Its drain intent is gone, yet it stays out: steering computes from the
    // intents before the change with today's health (not from the plan before it).
    let after = plan(&channel, 0).await.unwrap();
    assert_eq!(pop_state(&after, "fra1"), pb::PopState::Down as i32);
    assert_eq!(weight(&after, "fra1"), 0.0, "a dead PoP stays out after a rollback");
    assert!(weight(&after, "ams1") > 0.99);
    // The intent really is gone and nothing is pinned: when fra1 heals, automatic
    // failback brings it back (a drain left in place would keep it out).
    down.lock().unwrap().clear();
    let back = wait("fra1 back in a plan", || {
        let channel = channel.clone();
        async move { plan(&channel, 0).await.filter(|p| weight(p, "fra1") > 0.0) }
    })
    .await;
    assert!(
        !back.reasons.iter().any(|r| r.contains("drain ladder")),
        "the rolled-back rung is still applied: {:?}",
        back.reasons
    );
    // fra1 dying was an automatic failover, recorded as its own change while the
    // operator's ladder held the PoP (never blocked by it); its return is an
    // automatic failback with the slow-start stages as steps.
    let listed = |kind: &'static str| {
        let channel = channel.clone();
        async move {
            wait(kind, || {
                let channel = channel.clone();
                async move {
                    let mut q = pb::query_service_client::QueryServiceClient::new(channel);
                    q.list_changes(pb::ListChangesRequest {
                        limit: 100,
                        active_only: false,
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .changes
                    .into_iter()
                    .find(|c| c.kind == kind && c.target == "fra1")
                }
            })
            .await
        }
    };
    let failover = listed("auto_failover").await;
    assert_eq!(failover.state, pb::ChangeState::Completed as i32);
    assert_eq!(failover.started_by, "rule:failover");
    let failback = listed("auto_failback").await;
    assert_eq!(
        failback.steps.iter().map(|s| s.weight_percent).collect::<Vec<_>>(),
        vec![10, 50, 100]
    );
    // Automatic changes follow health: an operator cannot pause or roll them back.
    let refused = op
        .rollback_change(pb::ChangeIdRequest {
            change_id: failback.id.clone(),
            reason: "no".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("automatic"), "{}", refused.message());

    stop.cancel();
    replica.stop().await;
}

/// All IPv4 addresses a plan answers with.
fn addresses(plan: &pb::SteeringPlan) -> Vec<String> {
    plan.regions
        .iter()
        .flat_map(|r| r.pops.iter())
        .flat_map(|w| w.ipv4.iter().cloned())
        .collect()
}

/// With a canary wave configured, a topology apply is a staged change: the canary
/// agent gets the plan from the new topology first; when it NACKs it, the change
/// rolls back — the topology from before is written back — and the fleet never
/// gets a plan with the new address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topology_apply_goes_to_the_canary_wave_first_and_its_nack_restores_the_old_topology() {
    let replica = common::start(toml::from_str("[auth]\nmode = \"off\"\n").unwrap()).await;
    let channel = replica.channel();
    let op = pb::operator_service_client::OperatorServiceClient::new(channel.clone());
    let topology = TOPOLOGY.replace(
        "[policy]\n",
        "[policy]\ncanary_agents = [\"dns-canary\"]\ncanary_bake = \"500ms\"\n",
    );
    let apply = |toml: String| {
        let mut op = op.clone();
        async move {
            op.apply_topology(pb::ApplyTopologyRequest {
                topology_toml: toml,
                dry_run: false,
                reason: "renumber ams1".into(),
                override_freeze: false,
            })
            .await
        }
    };
    wait("the topology to apply", || {
        let topology = topology.clone();
        async move { apply(topology).await.ok().filter(|r| r.get_ref().applied) }
    })
    .await;
    let stop = CancellationToken::new();
    feed_health(channel.clone(), stop.clone());
    let first = wait("a first plan", || {
        let channel = channel.clone();
        async move { plan(&channel, 0).await.filter(|p| weight(p, "fra1") > 0.99) }
    })
    .await;
    // The canary refuses any plan answering with the new address 192.0.2.99.
    let fleet_plans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let _canary = fake_agent_with(channel.clone(), "dns-canary", None, |p| {
        addresses(p).iter().any(|a| a == "192.0.2.99")
    });
    let _fleet = fake_agent_with(channel.clone(), "dns-fleet", Some(fleet_plans.clone()), |_| false);
    wait("both agents on the first plan", || {
        let channel = channel.clone();
        async move {
            let a = agents(&channel).await;
            (a.len() == 2 && a.iter().all(|x| x.applied_version >= first.version)).then_some(())
        }
    })
    .await;
    // ams1 moves to 192.0.2.99 and takes eu-west (fra1 made slow): the plan changes.
    let renumbered = topology
        .replace("192.0.2.2", "192.0.2.99")
        .replace("fra1 = \"10ms\", ams1 = \"15ms\"", "fra1 = \"40ms\", ams1 = \"15ms\"");
    let resp = apply(renumbered).await.unwrap().into_inner();
    assert!(resp.applied, "{resp:?}");
    let staged = resp
        .diff
        .iter()
        .find(|d| d.starts_with("staged as change "))
        .unwrap_or_else(|| panic!("not staged: {:?}", resp.diff))
        .clone();
    let id = staged
        .trim_start_matches("staged as change ")
        .split(':')
        .next()
        .unwrap()
        .to_string();
    let rolled = wait("the NACKed topology change to roll back", || {
        let channel = channel.clone();
        let id = id.clone();
        async move { Some(change(&channel, &id).await).filter(|c| c.state == pb::ChangeState::RolledBack as i32) }
    })
    .await;
    assert_eq!(rolled.kind, "topology_apply");
    assert!(
        rolled.history.iter().any(|t| t.why.contains("NACKed")),
        "{:?}",
        rolled.history
    );
    // The old topology is back: a plan without the new address, and the fleet,
    // released onto it, never received one with it.
    let restored = wait("a plan from the old topology", || {
        let channel = channel.clone();
        async move {
            plan(&channel, 0)
                .await
                .filter(|p| p.version > first.version && !addresses(p).contains(&"192.0.2.99".to_string()))
        }
    })
    .await;
    wait("the fleet on the restored plan, released", || {
        let channel = channel.clone();
        async move {
            agents(&channel)
                .await
                .into_iter()
                .find(|a| a.agent_id == "dns-fleet" && a.applied_version >= restored.version && a.held_on_version == 0)
        }
    })
    .await;
    let seen: Vec<Vec<String>> = fleet_plans.lock().unwrap().iter().map(addresses).collect();
    assert!(
        seen.iter().all(|a| !a.contains(&"192.0.2.99".to_string())),
        "the fleet saw the new address: {seen:?}"
    );
    stop.cancel();
    replica.stop().await;
}

/// An Anycast agent over real gRPC for fra1's prefix: it ACKs every plan, records
/// fra1's announcement in it, and reports that prefix — as done (`in_sync`) or as
/// still announced plainly.
fn fake_anycast_agent(
    channel: Channel,
    in_sync: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::sync::Arc<std::sync::Mutex<Vec<(i32, u32)>>> {
    let seen: std::sync::Arc<std::sync::Mutex<Vec<(i32, u32)>>> = Default::default();
    let log = seen.clone();
    tokio::spawn(async move {
        let (tx, mut updates) = watch_plans(channel, "bgp-fra1", pb::AgentKind::Anycast).await;
        while let Ok(Some(update)) = updates.message().await {
            let plan = update.plan.unwrap();
            let Some(mine) = plan.anycast.iter().find(|a| a.pop == "fra1").cloned() else {
                continue;
            };
            {
                let mut log = log.lock().unwrap();
                if log.last() != Some(&(mine.action, mine.prepend_count)) {
                    log.push((mine.action, mine.prepend_count));
                }
            }
            let done = in_sync.load(std::sync::atomic::Ordering::SeqCst);
            let report = pb::AnycastPrefixState {
                prefix: mine.prefix.clone(),
                desired: mine.action,
                desired_prepend: mine.prepend_count,
                actual: if done {
                    mine.action
                } else {
                    pb::AnycastAction::Announce as i32
                },
                actual_prepend: if done { mine.prepend_count } else { 0 },
                detail: if done {
                    String::new()
                } else {
                    "speaker: not converged".into()
                },
                plan_version: plan.version,
            };
            for msg in [
                pb::agent_message::Msg::Ack(pb::PlanAck { version: plan.version }),
                pb::agent_message::Msg::Anycast(pb::AnycastReport { prefixes: vec![report] }),
            ] {
                if tx.send(pb::AgentMessage { msg: Some(msg) }).await.is_err() {
                    return;
                }
            }
        }
    });
    seen
}

/// A drain ladder of a PoP with an Anycast prefix escalates its announcement rung by
/// rung — prepend ×1, ×3, GRACEFUL_SHUTDOWN, withdraw — each analysed against what
/// the Anycast agent reports; an agent whose speaker has not done it pauses the
/// change (inconclusive), naming the prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anycast_pops_ladder_escalates_its_announcement_and_waits_for_the_agents_report() {
    let replica = common::start(toml::from_str("[auth]\nmode = \"off\"\n").unwrap()).await;
    let channel = replica.channel();
    let mut op = pb::operator_service_client::OperatorServiceClient::new(channel.clone());
    let topology = TOPOLOGY
        .replace(
            "ipv4 = [\"192.0.2.1\"]\n",
            "ipv4 = [\"192.0.2.1\"]\nanycast_prefixes = [\"198.51.100.0/24\"]\n",
        )
        .replace(
            "ipv4 = [\"192.0.2.2\"]\n",
            "ipv4 = [\"192.0.2.2\"]\nanycast_prefixes = [\"198.51.100.0/24\"]\n",
        );
    apply_topology(&channel, &topology).await;
    let stop = CancellationToken::new();
    feed_health(channel.clone(), stop.clone());
    wait_pops_up(&channel).await;
    let in_sync = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let seen = fake_anycast_agent(channel.clone(), in_sync.clone());
    wait("the Anycast agent's report", || {
        let channel = channel.clone();
        async move {
            agents(&channel)
                .await
                .into_iter()
                .find(|a| a.agent_id == "bgp-fra1" && !a.anycast.is_empty())
        }
    })
    .await;

    let started = op
        .drain(ladder(&[75, 50, 25, 0], 300))
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap();
    assert!(
        started
            .summary
            .contains("75% (prepend ×1) → 50% (prepend ×3) → 25% (GRACEFUL_SHUTDOWN) → 0% (withdraw)"),
        "{}",
        started.summary
    );
    let done = wait("the ladder to complete", || {
        let channel = channel.clone();
        let id = started.id.clone();
        async move { Some(change(&channel, &id).await).filter(|c| c.state == pb::ChangeState::Completed as i32) }
    })
    .await;
    assert!(
        done.analysis.iter().any(|c| c.name == "anycast" && c.verdict == "pass"),
        "{:?}",
        done.analysis
    );
    use pb::AnycastAction as A;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (A::Announce as i32, 0),
            (A::Prepend as i32, 1),
            (A::Prepend as i32, 3),
            (A::GracefulShutdown as i32, 0),
            (A::Withdraw as i32, 0),
        ],
        "fra1's announcement, rung by rung"
    );

    // Back; the next ladder's first rung is not done by the speaker: paused.
    op.undrain(pb::UndrainRequest {
        pop: "fra1".into(),
        reason: "done".into(),
        override_freeze: false,
    })
    .await
    .unwrap();
    wait("fra1 announced plainly again", || {
        let seen = seen.clone();
        async move { (seen.lock().unwrap().last() == Some(&(A::Announce as i32, 0))).then_some(()) }
    })
    .await;
    in_sync.store(false, std::sync::atomic::Ordering::SeqCst);
    let id = op
        .drain(ladder(&[50, 0], 300))
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap()
        .id;
    let paused = wait("the change to pause on the unconverged speaker", || {
        let channel = channel.clone();
        let id = id.clone();
        async move { Some(change(&channel, &id).await).filter(|c| c.state == pb::ChangeState::Paused as i32) }
    })
    .await;
    assert!(
        paused.state_reason.contains("anycast") && paused.state_reason.contains("198.51.100.0/24"),
        "{}",
        paused.state_reason
    );
    let listed = agents(&channel).await;
    let bgp = listed.iter().find(|a| a.agent_id == "bgp-fra1").unwrap();
    assert_eq!(bgp.anycast[0].detail, "speaker: not converged");

    stop.cancel();
    replica.stop().await;
}

/// `req` as sent by `who` (roles off: the identity header is the caller).
fn as_who<T>(who: &str, req: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(req);
    r.metadata_mut().insert("x-meridian-identity", who.parse().unwrap());
    r
}

/// With `policy.approval_required = ["drain"]`, a drain — immediate ones too —
/// is a change that stays pending until a second person approves it; the one who
/// started it cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_needs_approval_waits_for_a_second_person() {
    let replica = common::start(toml::from_str("[auth]\nmode = \"off\"\n").unwrap()).await;
    let channel = replica.channel();
    let mut op = pb::operator_service_client::OperatorServiceClient::new(channel.clone());
    let topology = TOPOLOGY.replace("[policy]\n", "[policy]\napproval_required = [\"drain\"]\n");
    apply_topology(&channel, &topology).await;
    let stop = CancellationToken::new();
    feed_health(channel.clone(), stop.clone());
    wait_pops_up(&channel).await;
    wait("fra1 taking eu-west", || {
        let channel = channel.clone();
        async move { plan(&channel, 0).await.filter(|p| weight(p, "fra1") > 0.99) }
    })
    .await;
    // An immediate drain (no steps) by otto: a pending one-step change.
    let started = op
        .drain(as_who(
            "otto@ops",
            pb::DrainRequest {
                pop: "fra1".into(),
                reason: "maintenance".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap();
    assert_eq!(started.state, pb::ChangeState::Pending as i32);
    assert_eq!(started.awaiting_approval, "drain");
    assert!(started.summary.contains("awaiting approval"), "{}", started.summary);
    // The driver leaves it alone meanwhile (a few of its 200 ms ticks).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still = change(&channel, &started.id).await;
    assert_eq!(still.state, pb::ChangeState::Pending as i32);
    assert!(
        weight(&plan(&channel, 0).await.unwrap(), "fra1") > 0.99,
        "nothing drained yet"
    );
    // otto cannot approve his own change; ada can.
    let own = op
        .approve_change(as_who(
            "otto@ops",
            pb::ChangeIdRequest {
                change_id: started.id.clone(),
                reason: "me".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(own.code(), tonic::Code::FailedPrecondition, "{own:?}");
    assert!(own.message().contains("second person"), "{}", own.message());
    let approved = op
        .approve_change(as_who(
            "ada@ops",
            pb::ChangeIdRequest {
                change_id: started.id.clone(),
                reason: "checked the ticket".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap();
    assert_eq!(approved.approved_by, "operator:ada@ops");
    let done = wait("the approved drain to complete", || {
        let channel = channel.clone();
        let id = started.id.clone();
        async move { Some(change(&channel, &id).await).filter(|c| c.state == pb::ChangeState::Completed as i32) }
    })
    .await;
    assert!(
        done.history.iter().any(|t| t.why == "approved by operator:ada@ops"),
        "{:?}",
        done.history
    );
    let p = plan(&channel, 0).await.unwrap();
    assert_eq!(pop_state(&p, "fra1"), pb::PopState::Drained as i32);
    stop.cancel();
    replica.stop().await;
}
