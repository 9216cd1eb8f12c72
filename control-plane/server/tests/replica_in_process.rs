//! A replica run in-process on an in-memory embedded store (listeners on port 0).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use meridian_control_plane::config::ControlPlaneConfig;
use meridian_store::embedded::EmbeddedStore;
use meridian_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_compacts_history_but_keeps_the_retained_window() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    for i in 0..400 {
        store.put(&format!("/other/k{i}"), b"v".to_vec(), None).await.unwrap();
    }
    let mut cfg = ControlPlaneConfig {
        replica_id: Some("cp-1".into()),
        ..Default::default()
    };
    cfg.store.compaction_interval = Duration::from_secs(1);
    cfg.store.compaction_retain_revisions = 100;
    // Nothing here calls an RPC: roles off, so no bootstrap token is written.
    cfg.auth.mode = meridian_control_plane::authz::AuthMode::Off;
    let validated = cfg.validate("test").unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let replica = tokio::spawn(meridian_control_plane::run_with_store(
        validated,
        store.clone(),
        grpc,
        admin,
        shutdown.clone(),
    ));

    // History before (current - 100) goes; a watch from revision 2 then reports
    // compaction, while one from inside the retained window still works.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match store.watch_prefix("/other/", Some(2)).await {
            Err(StoreError::Compacted { compact_revision, .. }) => {
                let current = store.range("/").await.unwrap().revision;
                assert!(
                    compact_revision <= current - 100,
                    "compacted to {compact_revision}, current {current}"
                );
                assert!(store.watch_prefix("/other/", Some(current - 50)).await.is_ok());
                break;
            }
            Ok(_) | Err(_) => {
                assert!(tokio::time::Instant::now() < deadline, "the leader never compacted");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    shutdown.cancel();
    replica.await.unwrap().unwrap();
}

/// Starts a replica on an in-memory store with the given prober credentials; returns
/// its gRPC endpoint and the shutdown token.
async fn start_replica(config: &str) -> (String, CancellationToken, tokio::task::JoinHandle<()>) {
    // Roles off: these tests are about ingest and replicas (tests/authz.rs and
    // tests/mtls.rs cover roles); prober tokens still bind probers to regions.
    let cfg: ControlPlaneConfig = toml::from_str(&format!("[auth]\nmode = \"off\"\n{config}")).unwrap();
    let validated = cfg.validate("test").unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", grpc.local_addr().unwrap());
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    let task = tokio::spawn(async move {
        meridian_control_plane::run_with_store(validated, store, grpc, admin, s)
            .await
            .unwrap();
    });
    (endpoint, shutdown, task)
}

/// Applies `topology`, retrying until the replica has elected itself (a generous
/// deadline, never a fixed sleep).
async fn apply_once_elected(
    ops: &mut meridian_proto::v1::operator_service_client::OperatorServiceClient<tonic::transport::Channel>,
    topology: &str,
) {
    use meridian_proto::v1 as pb;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let req = pb::ApplyTopologyRequest {
            topology_toml: topology.into(),
            dry_run: false,
            reason: "test".into(),
            override_freeze: false,
        };
        match ops.apply_topology(req).await {
            Ok(r) if r.get_ref().applied => return,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "apply never succeeded: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_probe_results_are_rejected_one_by_one_and_the_rest_of_the_batch_lands() {
    use meridian_proto::v1 as pb;
    let token = "eu-prober-token-0123456789";
    let (endpoint, shutdown, task) = start_replica(&format!(
        "[[probers]]\nid = \"p-eu\"\nregion = \"eu\"\ntoken = \"{token}\"\n"
    ))
    .await;
    let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
        .unwrap()
        .connect_lazy();

    // Apply a one-PoP topology (the replica elects itself; wait for that).
    let mut ops = pb::operator_service_client::OperatorServiceClient::new(channel.clone());
    let topology = "[[pops]]\nid = \"fra1\"\ncapacity = 10\nipv4 = [\"127.0.0.1\"]\n[[pops.endpoints]]\nname = \"tcp\"\nkind = \"tcp\"\naddress = \"127.0.0.1:9\"\n";
    apply_once_elected(&mut ops, topology).await;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let ts = |offset_s: i64| meridian_proto::prost_types::Timestamp {
        seconds: now.as_secs() as i64 + offset_s,
        nanos: 0,
    };
    let result = |pop: &str, region: &str, at: meridian_proto::prost_types::Timestamp| pb::ProbeResult {
        prober_id: "p-eu".into(),
        region: region.into(),
        pop: pop.into(),
        endpoint: "tcp".into(),
        observed_at: Some(at),
        success: true,
        latency: Some(meridian_proto::prost_types::Duration {
            seconds: 0,
            nanos: 1_000_000,
        }),
        failure_class: pb::FailureClass::None as i32,
        detail: String::new(),
    };
    let batch = pb::ProbeResultBatch {
        sequence: 7,
        prober_id: "p-eu".into(),
        region: "eu".into(),
        suspects: Vec::new(),
        results: vec![
            result("fra1", "eu", ts(0)),
            result("nowhere", "eu", ts(0)),
            result("fra1", "us", ts(0)),
            result("fra1", "eu", ts(3600)),
            result("fra1", "eu", ts(-3600)),
            pb::ProbeResult {
                observed_at: None,
                ..result("fra1", "eu", ts(0))
            },
        ],
    };
    let mut probes = pb::probe_service_client::ProbeServiceClient::new(channel.clone());
    let mut req = tonic::Request::new(tokio_stream::iter(vec![batch.clone()]));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut acks = probes.report_results(req).await.unwrap().into_inner();
    let ack = acks.message().await.unwrap().unwrap();
    assert_eq!(ack.sequence, 7);
    assert_eq!((ack.accepted, ack.rejected), (1, 5), "{ack:?}");
    let errors = ack.errors.join("\n");
    for want in [
        "nowhere",
        "authenticated for region `eu`",
        "future",
        "old",
        "observed_at",
    ] {
        assert!(errors.contains(want), "no error mentioning {want:?} in:\n{errors}");
    }

    // Without a token, or with an unknown one, nothing is accepted at all.
    let err = probes
        .report_results(tokio_stream::iter(vec![batch.clone()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(tokio_stream::iter(vec![batch]));
    req.metadata_mut()
        .insert("authorization", "Bearer not-a-known-token-at-all".parse().unwrap());
    assert_eq!(
        probes.report_results(req).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );

    // A failure with the prober's detail is accepted; a failure without a class or
    // with an unknown one is rejected naming the field, never read as a default.
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let failed = |class: i32| pb::ProbeResult {
        observed_at: Some(meridian_proto::prost_types::Timestamp {
            seconds: later.as_secs() as i64,
            nanos: later.subsec_nanos() as i32,
        }),
        success: false,
        failure_class: class,
        detail: "tls handshake: certificate expired on 2024-01-01".into(),
        ..result("fra1", "eu", ts(0))
    };
    let batch = pb::ProbeResultBatch {
        sequence: 8,
        prober_id: "p-eu".into(),
        region: "eu".into(),
        suspects: Vec::new(),
        results: vec![
            failed(meridian_proto::probe::failure_class_to_wire(
                meridian_core::probe::FailureClass::Tls,
            )),
            failed(pb::FailureClass::Unspecified as i32),
            failed(999),
        ],
    };
    let mut req = tonic::Request::new(tokio_stream::iter(vec![batch]));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut acks = probes.report_results(req).await.unwrap().into_inner();
    let ack = acks.message().await.unwrap().unwrap();
    assert_eq!((ack.sequence, ack.accepted, ack.rejected), (8, 1, 2), "{ack:?}");
    assert_eq!(
        ack.errors,
        [
            "result for pop `fra1` endpoint `tcp`: failure_class: a failed probe needs a failure class, got FAILURE_CLASS_UNSPECIFIED",
            "result for pop `fra1` endpoint `tcp`: failure_class: unknown value 999",
        ]
    );

    // The accepted results show up as evidence for fra1, the failure with the
    // detail the prober sent.
    let mut query = pb::query_service_client::QueryServiceClient::new(channel);
    let explain = query
        .explain_pop(pb::ExplainPopRequest { pop: "fra1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(explain.regions.len(), 1, "{explain:?}");
    assert_eq!(explain.regions[0].region, "eu");
    let prober = &explain.regions[0].probers[0];
    assert_eq!(prober.prober, "p-eu");
    let recent: Vec<(bool, i32, &str)> = prober.endpoints[0]
        .recent
        .iter()
        .map(|r| (r.success, r.failure_class, r.detail.as_str()))
        .collect();
    assert_eq!(
        recent,
        [
            (
                false,
                pb::FailureClass::Tls as i32,
                "tls handshake: certificate expired on 2024-01-01"
            ),
            (true, pb::FailureClass::None as i32, ""),
        ],
        "newest first"
    );
    assert_eq!(
        explain.state,
        pb::PopState::Unknown as i32,
        "one region is never enough for a verdict"
    );
    let missing = query
        .explain_pop(pb::ExplainPopRequest { pop: "nowhere".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    shutdown.cancel();
    task.await.unwrap();
}

/// On-demand confirmation end to end in one replica: the first failure of an
/// endpoint reported by the eu prober reaches the us prober's assignment stream as a
/// request to probe that endpoint now; the assignment set carries each region's
/// phase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_seen_in_one_region_asks_every_region_to_probe_now() {
    use meridian_proto::v1 as pb;
    let (endpoint, shutdown, task) = start_replica(
        "[[probers]]\nid = \"p-eu\"\nregion = \"eu\"\ntoken = \"eu-prober-token-0123456789\"\n\
         [[probers]]\nid = \"p-us\"\nregion = \"us\"\ntoken = \"us-prober-token-0123456789\"\n",
    )
    .await;
    let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
        .unwrap()
        .connect_lazy();
    let mut ops = pb::operator_service_client::OperatorServiceClient::new(channel.clone());
    let topology = "[[pops]]\nid = \"fra1\"\ncapacity = 10\nipv4 = [\"127.0.0.1\"]\n[[pops.endpoints]]\nname = \"tcp\"\nkind = \"tcp\"\naddress = \"127.0.0.1:9\"\n\
                    [[pops.endpoints]]\nname = \"web\"\nkind = \"tcp\"\naddress = \"127.0.0.1:10\"\n\
                    [[regions]]\nid = \"eu\"\ndemand = 1\n[[regions]]\nid = \"us\"\ndemand = 1\n";
    apply_once_elected(&mut ops, topology).await;
    fn authed<T>(token: &str, body: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(body);
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        req
    }
    // The us prober watches its assignments: the set first, with us's phase.
    let mut probes = pb::probe_service_client::ProbeServiceClient::new(channel.clone());
    let mut us = probes
        .watch_assignments(authed(
            "us-prober-token-0123456789",
            pb::WatchAssignmentsRequest {
                prober_id: "p-us".into(),
                region: "us".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let set = loop {
        match us.message().await.unwrap().unwrap().update {
            Some(pb::assignment_update::Update::Assignments(a)) if !a.targets.is_empty() => break a,
            _ => continue,
        }
    };
    assert_eq!(set.phase, Some(0.5), "us is the second of two client regions");
    // eu reports a success, then a failure of fra1/tcp.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    // As probers send them: no prober or region per result, the batch's stand.
    let result = |ms: u64, success: bool| pb::ProbeResult {
        prober_id: String::new(),
        region: String::new(),
        pop: "fra1".into(),
        endpoint: "tcp".into(),
        observed_at: Some(meridian_proto::prost_types::Timestamp {
            seconds: (now.as_millis() as u64 + ms) as i64 / 1000,
            nanos: (((now.as_millis() as u64 + ms) % 1000) * 1_000_000) as i32,
        }),
        success,
        latency: Some(meridian_proto::prost_types::Duration {
            seconds: 0,
            nanos: 1_000_000,
        }),
        failure_class: if success {
            pb::FailureClass::None
        } else {
            pb::FailureClass::Refused
        } as i32,
        detail: String::new(),
    };
    let batch = pb::ProbeResultBatch {
        sequence: 1,
        prober_id: "p-eu".into(),
        region: "eu".into(),
        suspects: Vec::new(),
        results: vec![result(0, true), result(1, false)],
    };
    let mut acks = probes
        .report_results(authed("eu-prober-token-0123456789", tokio_stream::iter(vec![batch])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acks.message().await.unwrap().unwrap().accepted, 2);
    let ask = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(pb::assignment_update::Update::ProbeNow(p)) = us.message().await.unwrap().unwrap().update {
                break p;
            }
        }
    })
    .await
    .expect("a probe-now request on the us stream");
    assert_eq!(ask.targets.len(), 1, "{ask:?}");
    let t = &ask.targets[0];
    assert_eq!(
        (t.pop.as_str(), t.endpoint.as_str(), t.region.as_str()),
        ("fra1", "tcp", "eu")
    );
    assert_eq!(t.failure_class, pb::FailureClass::Refused as i32);
    // A late probe (no result yet) asks too: a batch carrying only a suspect.
    let late = pb::ProbeResultBatch {
        sequence: 0,
        prober_id: "p-eu".into(),
        region: "eu".into(),
        suspects: vec![pb::ProbeSuspect {
            pop: "fra1".into(),
            endpoint: "web".into(),
            outstanding: None,
        }],
        results: vec![],
    };
    let mut acks = probes
        .report_results(authed("eu-prober-token-0123456789", tokio_stream::iter(vec![late])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acks.message().await.unwrap().unwrap().accepted, 0);
    let ask = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(pb::assignment_update::Update::ProbeNow(p)) = us.message().await.unwrap().unwrap().update {
                break p;
            }
        }
    })
    .await
    .expect("a probe-now request for the late probe");
    assert_eq!(ask.targets[0].endpoint, "web");
    assert_eq!(ask.targets[0].failure_class, pb::FailureClass::Timeout as i32);
    shutdown.cancel();
    task.await.unwrap();
}
