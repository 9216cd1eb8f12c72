//! The built `meridianctl` binary against an in-process fake `QueryService`: a
//! closed stdout ends it quietly with status 0, endpoints are tried in order, and
//! the exit-status rule holds.

// Test support: a failed setup step should panic with its error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::{Command, Output, Stdio};

use meridian_proto::v1 as pb;
use meridian_proto::v1::query_service_server::{QueryService, QueryServiceServer};
use tonic::{Request, Response, Status};

/// Regions in the fake plan: its table is about 1.5 MB and its JSON more, far past
/// any pipe buffer (64 KiB by default on Linux), so the CLI is certainly still
/// writing when the reader goes away.
const REGIONS: usize = 20_000;

fn ctl() -> &'static str {
    env!("CARGO_BIN_EXE_meridianctl")
}

/// Answers `GetStatus` (no leader known), `GetPlan` (a huge plan), `ListAgents`
/// (two agents, one behind) and `GetChange` (see [`fake_change`]); everything else
/// is UNIMPLEMENTED.
#[derive(Default)]
struct Fake {
    /// `GetChange` calls for `chg-walk` so far.
    walks: std::sync::atomic::AtomicU32,
}

/// The change `GetChange` answers for `id`: `chg-done` completed, `chg-rb` rolled
/// back, `chg-walk` progressing on its first poll and completed from the second,
/// anything else NOT_FOUND.
fn fake_change(id: &str, walk: u32) -> Option<pb::ChangeRecord> {
    let state = match (id, walk) {
        ("chg-done", _) | ("chg-walk", 1..) => pb::ChangeState::Completed,
        ("chg-rb", _) => pb::ChangeState::RolledBack,
        ("chg-walk", 0) => pb::ChangeState::Progressing,
        _ => return None,
    };
    Some(pb::ChangeRecord {
        id: id.into(),
        kind: "drain".into(),
        target: "fra1".into(),
        state: state as i32,
        step: if state == pb::ChangeState::Progressing { 1 } else { 2 },
        total_steps: 2,
        phase: if state == pb::ChangeState::Progressing {
            "await_acks".into()
        } else {
            String::new()
        },
        steps: vec![
            pb::ChangeStep {
                weight_percent: 50,
                bake_ms: 1000,
            },
            pb::ChangeStep {
                weight_percent: 0,
                bake_ms: 1000,
            },
        ],
        history: vec![pb::ChangeTransition {
            from: "progressing step 1 (analyse)".into(),
            to: "rolling_back".into(),
            why: "analysis failed: fra1 DOWN".into(),
            ..Default::default()
        }],
        ..Default::default()
    })
}

#[tonic::async_trait]
impl QueryService for Fake {
    async fn get_status(&self, _: Request<pb::GetStatusRequest>) -> Result<Response<pb::GetStatusResponse>, Status> {
        Ok(Response::new(pb::GetStatusResponse {
            replica_id: "fake".into(),
            store: Some(pb::StoreHealth {
                backend: pb::StoreBackend::Embedded as i32,
                healthy: true,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
    async fn get_plan(&self, _: Request<pb::GetPlanRequest>) -> Result<Response<pb::GetPlanResponse>, Status> {
        let regions = (0..REGIONS)
            .map(|i| pb::RegionSteering {
                region: format!("region-{i:05}"),
                pops: vec![
                    pb::PopWeight {
                        pop: "ams1".into(),
                        weight: 0.5,
                        ..Default::default()
                    },
                    pb::PopWeight {
                        pop: "fra1".into(),
                        weight: 0.5,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            })
            .collect();
        Ok(Response::new(pb::GetPlanResponse {
            plan: Some(pb::SteeringPlan {
                version: 3,
                published_by: "fake".into(),
                regions,
                ..Default::default()
            }),
        }))
    }
    async fn get_health(&self, _: Request<pb::GetHealthRequest>) -> Result<Response<pb::GetHealthResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn explain_pop(&self, _: Request<pb::ExplainPopRequest>) -> Result<Response<pb::ExplainPopResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
    async fn list_changes(
        &self,
        _: Request<pb::ListChangesRequest>,
    ) -> Result<Response<pb::ListChangesResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_change(&self, req: Request<pb::GetChangeRequest>) -> Result<Response<pb::ChangeResponse>, Status> {
        let id = req.into_inner().change_id;
        let walk = if id == "chg-walk" {
            self.walks.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        } else {
            0
        };
        match fake_change(&id, walk) {
            Some(change) => Ok(Response::new(pb::ChangeResponse { change: Some(change) })),
            None => Err(Status::not_found(format!("no change {id}"))),
        }
    }
    async fn list_events(&self, _: Request<pb::ListEventsRequest>) -> Result<Response<pb::ListEventsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_slo(&self, _: Request<pb::GetSloRequest>) -> Result<Response<pb::GetSloResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn what_if(&self, _: Request<pb::WhatIfRequest>) -> Result<Response<pb::WhatIfResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_agents(&self, _: Request<pb::ListAgentsRequest>) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let agent = |id: &str, version| pb::AgentInfo {
            agent_id: id.into(),
            applied_version: version,
            ..Default::default()
        };
        Ok(Response::new(pb::ListAgentsResponse {
            agents: vec![agent("dns-1", 3), agent("dns-2", 2)],
        }))
    }
}

/// Serves the fake on a port picked at run time; returns its endpoint URL.
async fn serve_fake() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(QueryServiceServer::new(Fake::default()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

/// Runs the CLI with `args`, reads `keep` bytes of its stdout, then closes the read
/// end while the CLI is still writing, and waits for it.
async fn run_and_close_early(args: Vec<String>, keep: usize) -> (Vec<u8>, Output) {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(ctl())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut head = vec![0; keep];
        stdout.read_exact(&mut head).unwrap();
        drop(stdout);
        (head, child.wait_with_output().unwrap())
    })
    .await
    .unwrap()
}

async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || Command::new(ctl()).args(&args).output().unwrap())
        .await
        .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_quietly_with_status_0() {
    let ep = serve_fake().await;
    for format in ["table", "json"] {
        let (head, out) = run_and_close_early(args(&["-e", &ep, "-o", format, "plan"]), 16).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("plan v3 by fake") || head.starts_with('{'),
            "-o {format}: unexpected start {head:?}"
        );
        assert!(!stderr.contains("panicked"), "-o {format}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "-o {format}: stderr {stderr}");
        assert_eq!(stderr, "", "-o {format}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_plan_arrives_when_the_reader_reads_it_all() {
    let ep = serve_fake().await;
    let out = run(args(&["-e", &ep, "plan", "-o", "json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["version"], 3);
    assert_eq!(plan["regions"].as_array().unwrap().len(), REGIONS);
    assert_eq!(
        plan["regions"][REGIONS - 1]["region"],
        format!("region-{:05}", REGIONS - 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_tried_in_order_and_status_exits_2_without_a_leader() {
    let live = serve_fake().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let list = format!("{dead},{live}");
    let out = run(args(&["-e", &list, "--timeout", "3s", "status", "-o", "json"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["endpoint"], live.as_str());
    assert_eq!(status["answered_by"], "fake");
    assert_eq!(status["leader"], serde_json::Value::Null);

    let out = run(args(&["-e", &live, "status"])).await;
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("leader        NONE"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_error_exits_1_and_names_the_rpc_on_stderr() {
    let ep = serve_fake().await;
    let out = run(args(&["-e", &ep, "explain", "ams1"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("meridianctl: error: ExplainPop on {ep} failed: ")),
        "{stderr}"
    );
    assert!(stderr.trim_end().ends_with("not in the fake"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reachable_replica_exits_1_and_lists_each_endpoint() {
    let out = run(args(&["-e", "not a url", "agents"])).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .starts_with("meridianctl: error: no control-plane replica reachable:\n  not a url: invalid endpoint URL"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_show_watch_exits_with_how_the_change_ended() {
    let ep = serve_fake().await;
    for (id, status) in [("chg-rb", 4), ("chg-done", 0)] {
        let out = run(args(&["-e", &ep, "change", "show", id, "--watch"])).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(status),
            "{id}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.starts_with(&format!("change   {id}: drain fra1\n")), "{stdout}");
        assert!(!stdout.contains('\x1b'), "no ANSI into a pipe: {stdout:?}");
        assert!(
            stdout.contains("agents   1 of 2 on plan v3\n  behind dns-2 on v2\n"),
            "{stdout}"
        );
    }
    let out = run(args(&["-e", &ep, "change", "show", "chg-rb", "--watch"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.ends_with("change chg-rb rolled back: analysis failed: fra1 DOWN\n"),
        "{stdout}"
    );

    // A change still moving is polled until it ends: one block per view in a pipe,
    // and with -o json one line per state, phase or step.
    let out = run(args(&[
        "-e", &ep, "-o", "json", "change", "show", "chg-walk", "--watch",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let states: Vec<&str> = lines.iter().map(|l| l["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["progressing", "completed"]);
    assert_eq!(lines[0]["phase"], "await_acks");

    // Without --watch: once, exit 0 whatever the state; an unknown id is an RPC error.
    let out = run(args(&["-e", &ep, "change", "show", "chg-rb", "-o", "json"])).await;
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["state"].as_str(), v["agents"]["acked"].as_u64()),
        (Some("rolled_back"), Some(1))
    );
    let out = run(args(&["-e", &ep, "change", "show", "nope", "--watch"])).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("GetChange on") && stderr.contains("no change nope"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_ladder_is_refused_before_connecting() {
    // No server at all: the check comes first, and says what to write.
    let out = run(args(&[
        "-e",
        "http://127.0.0.1:1",
        "drain",
        "fra1",
        "--reason",
        "x",
        "--steps",
        "50,75,0",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr,
        "meridianctl: error: --steps must go strictly down: 75 after 50 (e.g. --steps 50,0 or --steps 75,25,0)\n"
    );
}
