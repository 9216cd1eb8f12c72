//! Plan fan-out benchmark: N agents hold `WatchPlan` streams on ONE real
//! `meridian-control-plane` process; an operator drain makes steering publish a new
//! plan; we measure the time from the start of the drain call until the last agent has
//! received the new version and sent its ACK. Goal: ≤ 1 s for 1,000 agents.
//!
//! The agents run in this process, on the same 2 cores as the control plane, so the
//! figure includes the load generator's own scheduling.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use meridian_proto::v1 as pb;
use meridian_tests::meridian::{meridianctl, ControlPlane};
use meridian_tests::util::wait_for;

/// Measure how long one new plan takes to reach (and be ACKed by) N agents.
#[derive(Debug, Parser)]
struct Args {
    /// Agents (WatchPlan streams).
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Agents per HTTP/2 connection.
    #[arg(long, default_value_t = 50)]
    per_connection: usize,
    /// Publications to measure (alternating drain / undrain).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

const TOPOLOGY: &str = r#"
[[pops]]
id = "pop-a"
capacity = 100
ipv4 = ["127.0.0.31"]
[[pops.endpoints]]
name = "tcp"
kind = "tcp"
address = "127.0.0.31:9"
[[pops]]
id = "pop-b"
capacity = 100
ipv4 = ["127.0.0.32"]
[[pops.endpoints]]
name = "tcp"
kind = "tcp"
address = "127.0.0.32:9"
[[regions]]
id = "r1"
demand = 50
latency_hints = { pop-a = "10ms", pop-b = "20ms" }
"#;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cp = ControlPlane::start("bench-cp", dir.path(), &["--data-dir", data.to_str().unwrap()]);
    cp.wait_ready().await;
    let ep = cp.endpoint();
    let topo = dir.path().join("topology.toml");
    std::fs::write(&topo, TOPOLOGY).unwrap();
    let out = meridianctl(&["-e", &ep, "apply", "-f", topo.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Per version, how many agents have received and ACKed it.
    let acked: Arc<Vec<AtomicUsize>> = Arc::new((0..(args.rounds + 2)).map(|_| AtomicUsize::new(0)).collect());
    let connections = args.agents.div_ceil(args.per_connection);
    let mut started = 0;
    for c in 0..connections {
        let channel = tonic::transport::Endpoint::from_shared(ep.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        for i in 0..args.per_connection.min(args.agents - started) {
            let id = format!("agent-{c}-{i}");
            let acked = acked.clone();
            let mut client = pb::plan_service_client::PlanServiceClient::new(channel.clone());
            tokio::spawn(async move {
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                let hello = pb::AgentHello {
                    agent_id: id,
                    kind: pb::AgentKind::Dns as i32,
                    applied_version: 0,
                };
                tx.send(pb::AgentMessage {
                    msg: Some(pb::agent_message::Msg::Hello(hello)),
                })
                .await
                .unwrap();
                let mut stream = client
                    .watch_plan(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
                    .unwrap()
                    .into_inner();
                while let Ok(Some(update)) = stream.message().await {
                    let version = update.plan.map(|p| p.version).unwrap_or(0);
                    let ack = pb::AgentMessage {
                        msg: Some(pb::agent_message::Msg::Ack(pb::PlanAck { version })),
                    };
                    if tx.send(ack).await.is_err() {
                        break;
                    }
                    if let Some(counter) = acked.get(version as usize) {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        started += args.per_connection.min(args.agents - started);
    }
    let n = args.agents;
    wait_for(
        "every agent to receive the first plan",
        Duration::from_secs(120),
        || {
            let done = acked[1].load(Ordering::Relaxed) >= n;
            async move { done.then_some(()) }
        },
    )
    .await;

    let channel = tonic::transport::Endpoint::from_shared(ep.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut ops = pb::operator_service_client::OperatorServiceClient::new(channel);
    let mut samples = Vec::new();
    for round in 0..args.rounds {
        let version = round + 2;
        // The clock starts before the operator call: the figure covers the drain RPC,
        // steering's recompute, the fenced publish, the fan-out and the ACKs.
        let start = Instant::now();
        if round % 2 == 0 {
            let req = pb::DrainRequest {
                pop: "pop-a".into(),
                reason: "bench".into(),
                force: false,
                regions: Vec::new(),
            };
            ops.drain(req).await.unwrap();
        } else {
            ops.undrain(pb::UndrainRequest {
                pop: "pop-a".into(),
                reason: "bench".into(),
            })
            .await
            .unwrap();
        }
        loop {
            if acked[version].load(Ordering::Relaxed) >= n {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "version {version} never reached every agent"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        samples.push(start.elapsed());
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (min, median, max) = (
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1]),
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({"agents": n, "rounds": args.rounds, "min_ms": min, "median_ms": median, "max_ms": max})
        );
    } else {
        println!(
            "plan fan-out to {n} agents on one replica ({} connections), {} publications:",
            connections, args.rounds
        );
        println!("  drain call started → last agent received and ACKed: min {min:.0} ms, median {median:.0} ms, max {max:.0} ms");
        println!(
            "  (includes steering's recompute and the fenced publish; agents share the 2 cores with the control plane)"
        );
    }
}
