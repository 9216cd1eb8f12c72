//! The control plane as real processes: one replica on the embedded store, and three
//! replicas sharing a real etcd with leader election, failover and fencing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use meridian_proto::v1 as pb;
use meridian_store::election::fenced_txn;
use meridian_store::etcd::{EtcdConfig, EtcdStore};
use meridian_store::{Fence, Store, StoreError, Txn, TxnOp};
use meridian_tests::etcd::EtcdCluster;
use meridian_tests::meridian::{http_get, meridianctl, status_json, ControlPlane};
use meridian_tests::util::wait_for;
use serde_json::Value;

const GENEROUS: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_replica_serves_status_admin_reflection_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap().to_string();
    let mut cp = ControlPlane::start("solo", dir.path(), &["--data-dir", &data_arg, "--lease-ttl", "2s"]);
    let status = cp.wait_ready().await;
    assert_eq!(status["store"]["backend"], "embedded");
    assert_eq!(status["store"]["healthy"], true);
    assert_eq!(status["leader"], "solo", "a lone replica elects itself: {status}");
    assert_eq!(status["answering_replica_leads"], true);
    assert_eq!(status["plan_version"], 0);
    let replicas = status["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 1);
    assert_eq!(replicas[0]["id"], "solo");

    // The human table says the same.
    let out = meridianctl(&["-e", &cp.endpoint(), "status"]).await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("solo") && text.contains("embedded") && text.contains("healthy"),
        "{text}"
    );

    // Admin endpoints.
    let (code, body) = http_get(cp.admin_addr, "/ready").await.unwrap();
    assert_eq!((code, body.trim()), (200, "ready"));
    assert_eq!(http_get(cp.admin_addr, "/live").await.unwrap().0, 200);
    let (code, _) = http_get(cp.admin_addr, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    // Readiness and the leader's first tick are separate tasks: wait, never race.
    wait_for("the leader gauge", GENEROUS, || async {
        let (_, m) = http_get(cp.admin_addr, "/metrics").await?;
        m.contains("meridian_control_plane_is_leader 1").then_some(())
    })
    .await;
    wait_for("a leader heartbeat to be counted", GENEROUS, || async {
        let (_, m) = http_get(cp.admin_addr, "/metrics").await?;
        m.contains("meridian_control_plane_leader_heartbeats_total")
            .then_some(())
    })
    .await;

    // gRPC: reflection lists our services, health says SERVING, and an unfinished
    // handler says UNIMPLEMENTED naming the issue area rather than inventing data.
    let pki = meridian_tests::pki::pki();
    let tls = pki.client_tls(&pki.admin());
    let channel = meridian_tls::endpoint(&cp.endpoint(), Some(&tls))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let services = list_services(channel.clone()).await;
    for want in [
        "meridian.v1.ProbeService",
        "meridian.v1.PlanService",
        "meridian.v1.OperatorService",
        "meridian.v1.QueryService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.iter().any(|s| s == want),
            "reflection lacks {want}: {services:?}"
        );
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // GetSlo is the one RPC still answering UNIMPLEMENTED (SLOs are issue [12]).
    let mut query = pb::query_service_client::QueryServiceClient::new(channel);
    let err = query.get_slo(pb::GetSloRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(err.message().contains("issue"), "{}", err.message());

    // The store persists across a restart: the revision only moves forward.
    let before = status["store"]["revision"].as_i64().unwrap();
    assert!(before > 1);
    let exit = cp
        .terminate(Duration::from_secs(30))
        .expect("graceful shutdown within the grace period");
    assert!(exit.success(), "exit status {exit:?}; log:\n{}", cp.log());
    cp.restart();
    let after = cp.wait_ready().await;
    assert!(
        after["store"]["revision"].as_i64().unwrap() > before,
        "before {before}, after {after}"
    );
}

async fn list_services(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut client = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    match resp.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => list.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_fails_with_file_key_or_endpoint_named() {
    let dir = tempfile::tempdir().unwrap();
    let bin = meridian_tests::meridian::bin("meridian-control-plane");
    let run = |args: Vec<String>| {
        let bin = bin.clone();
        async move {
            tokio::task::spawn_blocking(move || std::process::Command::new(bin).args(args).output().unwrap())
                .await
                .unwrap()
        }
    };

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[store]\netcd_endpoint = [\"http://127.0.0.1:1\"]\n").unwrap();
    let out = run(vec![
        "--config".into(),
        unknown.display().to_string(),
        "--check-config".into(),
    ])
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("unknown.toml") && err.contains("etcd_endpoint"), "{err}");

    let wrong = dir.path().join("wrong.toml");
    std::fs::write(&wrong, "[election]\nlease_ttl = true\n").unwrap();
    let out = run(vec![
        "--config".into(),
        wrong.display().to_string(),
        "--check-config".into(),
    ])
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("wrong.toml") && err.contains("lease_ttl"), "{err}");

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "replica_id = \"cp-a\"\n[election]\nlease_ttl = \"4s\"\n").unwrap();
    let out = run(vec![
        "--config".into(),
        good.display().to_string(),
        "--check-config".into(),
    ])
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("lease_ttl = \"4s\""));

    // The example configs shipped in deploy/ stay valid.
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config");
    // Their TLS files are deployment paths; the test's certificates stand in.
    let pki = meridian_tests::pki::pki();
    let me = pki.replica("cp-1");
    for name in ["control-plane.toml", "control-plane-embedded.toml"] {
        let path = examples.join(name);
        let out = run(vec![
            "--config".into(),
            path.display().to_string(),
            "--tls-cert".into(),
            me.cert.display().to_string(),
            "--tls-key".into(),
            me.key.display().to_string(),
            "--tls-client-ca".into(),
            pki.ca_pem().display().to_string(),
            "--check-config".into(),
        ])
        .await;
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }

    // An etcd endpoint nobody listens on: a clear error naming it, and exit non-zero.
    let dead = format!("http://{}", meridian_tests::util::free_addr());
    let out = run(vec![
        "--etcd-endpoints".into(),
        dead.clone(),
        "--grpc-addr".into(),
        meridian_tests::util::free_addr().to_string(),
        "--admin-addr".into(),
        meridian_tests::util::free_addr().to_string(),
    ])
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&dead), "error should name the endpoint {dead}: {err}");
}

/// Waits until every replica in `cps` answers and they agree on one leader, which is
/// the only one that believes it leads. Returns (leader id, leader fence revision).
async fn wait_single_leader(cps: &[&ControlPlane], excluding: Option<&str>) -> (String, i64) {
    wait_for("all replicas to agree on exactly one leader", GENEROUS, || async {
        let mut leaders = Vec::new();
        let mut believers = Vec::new();
        let mut revision = 0;
        for cp in cps {
            let s = cp.status().await?;
            if s["ready"] != Value::Bool(true) {
                return None;
            }
            leaders.push(s["leader"].as_str()?.to_string());
            revision = s["leader_revision"].as_i64()?;
            if s["answering_replica_leads"] == Value::Bool(true) {
                believers.push(cp.id.clone());
            }
        }
        let leader = leaders.first()?.clone();
        let agreed = leaders.iter().all(|l| *l == leader) && believers == vec![leader.clone()];
        (agreed && Some(leader.as_str()) != excluding).then_some((leader, revision))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_etcd_elect_one_leader_fail_over_and_fence_the_old_one() {
    let etcd = EtcdCluster::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let endpoints = etcd.endpoints_csv();
    let args = ["--etcd-endpoints", endpoints.as_str(), "--lease-ttl", "2s"];
    let mut cps: Vec<ControlPlane> = ["cp-a", "cp-b", "cp-c"]
        .iter()
        .map(|id| ControlPlane::start(id, dir.path(), &args))
        .collect();

    let all: Vec<&ControlPlane> = cps.iter().collect();
    let (first, _) = wait_single_leader(&all, None).await;
    let status = cps[0].status().await.unwrap();
    assert_eq!(status["store"]["backend"], "etcd");
    assert_eq!(status["replicas"].as_array().unwrap().len(), 3, "{status}");

    // Kill the leader outright: another takes over once its lease expires.
    let idx = cps.iter().position(|c| c.id == first).unwrap();
    cps[idx].kill();
    let survivors: Vec<&ControlPlane> = cps.iter().filter(|c| c.id != first).collect();
    let (second, second_fence) = wait_single_leader(&survivors, Some(&first)).await;
    assert_ne!(first, second);
    let s = survivors[0].status().await.unwrap();
    assert_eq!(
        s["replicas"].as_array().unwrap().len(),
        2,
        "the dead replica's lease-bound entry is gone: {s}"
    );

    // Freeze the new leader (SIGSTOP) long enough for its lease to expire, so a third
    // replica is elected while the frozen one still believes it leads.
    let idx2 = cps.iter().position(|c| c.id == second).unwrap();
    cps[idx2].signal("STOP");
    let others: Vec<&ControlPlane> = cps.iter().filter(|c| c.id != first && c.id != second).collect();
    let (third, third_fence) = wait_single_leader(&others, Some(&second)).await;
    assert_ne!(third_fence, second_fence);

    // A write under the deposed leader's fence is rejected by the store, naming the
    // rule; the same write under the current fence lands.
    let store = EtcdStore::connect(EtcdConfig::new(etcd.endpoints())).await.unwrap();
    let leader_key = "/meridian/election/leader".to_string();
    let stale = Fence {
        key: leader_key.clone(),
        revision: second_fence,
    };
    let txn = Txn::new().and_then([TxnOp::put("/meridian/test/fenced", b"from the deposed leader".to_vec())]);
    match fenced_txn(&store, &stale, txn.clone()).await {
        Err(err @ StoreError::FenceLost { .. }) => assert!(err.to_string().contains("leader-fence"), "{err}"),
        other => panic!("a deposed leader's write must be rejected, got {other:?}"),
    }
    assert!(
        store.get("/meridian/test/fenced").await.unwrap().is_none(),
        "the stale write must not land"
    );
    let current = Fence {
        key: leader_key,
        revision: third_fence,
    };
    assert!(fenced_txn(&store, &current, txn).await.unwrap().succeeded);

    // Thaw the old leader: it must notice it was deposed and follow, never lead twice.
    cps[idx2].signal("CONT");
    let survivors: Vec<&ControlPlane> = cps.iter().filter(|c| c.id != first).collect();
    let (after, _) = wait_single_leader(&survivors, None).await;
    assert_eq!(after, third, "the thawed replica must not take leadership back");
    // The fenced heartbeat is written by the current leader under its own fence.
    let beat: Value = wait_for(
        "the heartbeat to be written by the current leader",
        GENEROUS,
        || async {
            let kv = store.get("/meridian/election/heartbeat").await.ok()??;
            let v: Value = serde_json::from_slice(&kv.value).ok()?;
            (v["leader"] == third.as_str()).then_some(v)
        },
    )
    .await;
    assert_eq!(beat["fence"].as_i64(), Some(third_fence), "{beat}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_makes_a_replica_unready_and_it_recovers() {
    let mut etcd = EtcdCluster::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let endpoints = etcd.endpoints_csv();
    let cp = ControlPlane::start(
        "cp-x",
        dir.path(),
        &["--etcd-endpoints", endpoints.as_str(), "--lease-ttl", "2s"],
    );
    cp.wait_ready().await;

    etcd.kill(0).await;
    wait_for("/ready to turn false while etcd is down", GENEROUS, || async {
        let (code, body) = http_get(cp.admin_addr, "/ready").await?;
        (code == 503 && body.contains("store")).then_some(())
    })
    .await;
    let out = meridianctl(&["-e", &cp.endpoint(), "--timeout", "10s", "status", "-o", "json"]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "status exits 2 when the store is unhealthy: {out:?}"
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["store"]["healthy"], false, "{s}");
    assert!(!cp.log().contains("panicked"), "{}", cp.log());

    etcd.restart(0).await;
    cp.wait_ready().await;
    let s = status_json(&cp.endpoint()).await.unwrap();
    assert_eq!(s["leader"], "cp-x", "{s}");
}
