//! Mutual TLS end to end over real gRPC: every role boundary with client
//! certificates (CN = identity, O = role or kind, OU = a prober's region), the
//! certificates a replica must refuse (none, another CA, expired, no role), a prober
//! reporting for another region, an agent registering under another id, a follower
//! forwarding an operator's drain to the leader with its own replica certificate,
//! and the refusal to serve plaintext beyond loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meridian_control_plane::config::ControlPlaneConfig;
use meridian_proto::v1 as pb;
use meridian_store::embedded::EmbeddedStore;
use meridian_store::Store;
use meridian_tls::pki::{Ca, Subject};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Pki {
        Pki::named("test CA")
    }

    fn named(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let (ca, files) = Ca::generate(name).unwrap();
        files.write(dir.path(), "ca").unwrap();
        Pki { dir, ca }
    }

    fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues `<stem>.pem`/`.key` for a client with this role (and region).
    fn client(&self, stem: &str, name: &str, role: Option<&str>, region: Option<&str>) -> (PathBuf, PathBuf) {
        self.issue(
            stem,
            Subject {
                name: name.into(),
                role: role.map(str::to_string),
                region: region.map(str::to_string),
                client: true,
                validity_days: Some((-1, 30)),
                ..Subject::default()
            },
        )
    }

    fn replica(&self, name: &str) -> (PathBuf, PathBuf) {
        self.issue(
            name,
            Subject {
                name: name.into(),
                role: Some("replica".into()),
                ips: vec!["127.0.0.1".parse().unwrap()],
                dns_names: vec!["localhost".into()],
                server: true,
                client: true,
                validity_days: Some((-1, 30)),
                ..Subject::default()
            },
        )
    }

    fn issue(&self, stem: &str, subject: Subject) -> (PathBuf, PathBuf) {
        self.ca.issue(&subject).unwrap().write(self.dir.path(), stem).unwrap()
    }
}

fn replica_config(pki: &Pki, id: &str) -> ControlPlaneConfig {
    let (cert, key) = pki.replica(id);
    let text = format!(
        r#"
replica_id = "{id}"
[tls]
cert = "{}"
key = "{}"
client_ca = "{}"
"#,
        cert.display(),
        key.display(),
        pki.ca_pem().display()
    );
    toml::from_str(&text).unwrap()
}

struct Replica {
    endpoint: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(cfg: ControlPlaneConfig, store: Arc<dyn Store>) -> Replica {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let mut cfg = cfg;
    cfg.grpc_addr = addr;
    let validated = cfg.validate("test").unwrap();
    assert!(
        validated.advertise_addr.starts_with("https://"),
        "{}",
        validated.advertise_addr
    );
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    let task = tokio::spawn(async move {
        meridian_control_plane::run_with_store(validated, store, grpc, admin, s)
            .await
            .unwrap();
    });
    Replica {
        endpoint: format!("https://{addr}"),
        shutdown,
        task,
    }
}

fn channel(endpoint: &str, ca: &Path, identity: Option<&(PathBuf, PathBuf)>) -> Channel {
    let tls = meridian_tls::ClientTls {
        ca: Some(ca.to_path_buf()),
        cert: identity.map(|(c, _)| c.clone()),
        key: identity.map(|(_, k)| k.clone()),
        server_name: None,
    }
    .load()
    .unwrap();
    meridian_tls::endpoint(endpoint, tls.as_ref())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .connect_lazy()
}

async fn get_status(ch: &Channel) -> Result<pb::GetStatusResponse, tonic::Status> {
    pb::query_service_client::QueryServiceClient::new(ch.clone())
        .get_status(pb::GetStatusRequest {})
        .await
        .map(|r| r.into_inner())
}

/// Waits until the replica answers `ch` with something other than UNAVAILABLE.
async fn answered(ch: &Channel) -> Result<pb::GetStatusResponse, tonic::Status> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match get_status(ch).await {
            Err(s) if s.code() == tonic::Code::Unavailable && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => return other,
        }
    }
}

fn drain(pop: &str) -> pb::DrainRequest {
    pb::DrainRequest {
        pop: pop.into(),
        reason: "mtls test".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_carry_identity_and_role_and_bad_ones_are_refused() {
    let pki = Pki::new();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let cp = start(replica_config(&pki, "cp-1"), store).await;
    let ca = pki.ca_pem();

    let viewer = pki.client("vera", "vera", Some("viewer"), None);
    let operator = pki.client("otto", "otto", Some("operator"), None);
    let admin = pki.client("ada", "ada", Some("admin"), None);
    let prober = pki.client("p-eu", "p-eu-1", Some("prober"), Some("eu-west"));
    let agent = pki.client("dns-1", "dns-1", Some("agent"), None);
    let no_role = pki.client("nobody", "nobody", None, None);

    // A viewer reads; the answer names this replica over https.
    let v = channel(&cp.endpoint, &ca, Some(&viewer));
    let status = answered(&v).await.expect("a viewer reads the status");
    assert_eq!(status.replica_id, "cp-1");

    // No certificate (and no token): UNAUTHENTICATED, saying what to present.
    let anonymous = channel(&cp.endpoint, &ca, None);
    let err = get_status(&anonymous).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("client certificate"), "{}", err.message());

    // A certificate without a role: UNAUTHENTICATED, naming the missing field.
    let err = get_status(&channel(&cp.endpoint, &ca, Some(&no_role)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("organization (O)"), "{}", err.message());

    // Roles nest: a viewer may not drain; an operator gets past authorization (the
    // PoP is unknown, so the operation itself answers NOT_FOUND or, while no leader
    // is elected, UNAVAILABLE); topology is for admins.
    let mut op_v = pb::operator_service_client::OperatorServiceClient::new(v.clone());
    let err = op_v.drain(drain("fra1")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("vera (role viewer)"), "{}", err.message());
    let mut op_o = pb::operator_service_client::OperatorServiceClient::new(channel(&cp.endpoint, &ca, Some(&operator)));
    let past = op_o.drain(drain("fra1")).await.unwrap_err();
    assert!(
        !matches!(
            past.code(),
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
        ),
        "{past:?}"
    );
    let topo = || pb::ApplyTopologyRequest {
        topology_toml: "[[pops]]\nid = \"fra1\"\ncapacity = 10\n".into(),
        dry_run: true,
        reason: "check".into(),
        override_freeze: false,
    };
    assert_eq!(
        op_o.apply_topology(topo()).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    let mut op_a = pb::operator_service_client::OperatorServiceClient::new(channel(&cp.endpoint, &ca, Some(&admin)));
    assert!(op_a.apply_topology(topo()).await.is_ok());

    // The fleet: probers and agents may not read the operator API.
    let p = channel(&cp.endpoint, &ca, Some(&prober));
    assert_eq!(get_status(&p).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    let a = channel(&cp.endpoint, &ca, Some(&agent));
    assert_eq!(get_status(&a).await.unwrap_err().code(), tonic::Code::PermissionDenied);

    // A prober may subscribe for its own region only.
    let mut probes = pb::probe_service_client::ProbeServiceClient::new(p.clone());
    let other_region = probes
        .watch_assignments(pb::WatchAssignmentsRequest {
            prober_id: "p-eu-1".into(),
            region: "us-east".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(other_region.code(), tonic::Code::PermissionDenied);
    assert!(other_region.message().contains("eu-west"), "{}", other_region.message());
    assert!(probes
        .watch_assignments(pb::WatchAssignmentsRequest {
            prober_id: "p-eu-1".into(),
            region: "eu-west".into(),
        })
        .await
        .is_ok());

    // An agent registers under its own identity only.
    let hello = |id: &str| pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::AgentHello {
            agent_id: id.into(),
            kind: pb::AgentKind::Dns as i32,
            ..Default::default()
        })),
    };
    let mut plans = pb::plan_service_client::PlanServiceClient::new(a.clone());
    let err = plans
        .watch_plan(tokio_stream::iter(vec![hello("dns-9")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("dns-1"), "{}", err.message());
    assert!(plans.watch_plan(tokio_stream::iter(vec![hello("dns-1")])).await.is_ok());

    // Certificates the TLS handshake itself refuses: another CA's, and an expired one.
    // Nothing is answered on them; the replica keeps serving everyone else.
    let other = Pki::named("another CA");
    let foreign = other.client("mallory", "mallory", Some("admin"), None);
    let mallory = channel(&cp.endpoint, &ca, Some(&foreign));
    assert!(
        get_status(&mallory).await.is_err(),
        "a certificate from another CA must be refused"
    );
    let expired = pki.issue(
        "old",
        Subject {
            name: "old".into(),
            role: Some("admin".into()),
            client: true,
            validity_days: Some((-30, -1)),
            ..Subject::default()
        },
    );
    let old = channel(&cp.endpoint, &ca, Some(&expired));
    assert!(
        get_status(&old).await.is_err(),
        "an expired certificate must be refused"
    );
    // A client that does not trust the replica's CA refuses it, too.
    let wrong_trust = channel(&cp.endpoint, &other.ca_pem(), Some(&viewer));
    assert!(get_status(&wrong_trust).await.is_err());
    assert!(get_status(&v).await.is_ok(), "the replica still serves valid clients");

    // Refusals are audited with the certificate's identity.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut q = pb::query_service_client::QueryServiceClient::new(v.clone());
    loop {
        let events = q
            .list_events(pb::ListEventsRequest {
                limit: 500,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().events)
            .unwrap_or_default();
        let drain_refused = events.iter().any(|e| {
            e.kind == "refused" && e.actor == "operator:vera" && e.role == "viewer" && e.message.contains("Drain")
        });
        // Failed handshakes about a certificate are audited too, with the reason.
        let handshake = |why: &str| {
            events
                .iter()
                .any(|e| e.kind == "refused" && e.message.contains("TLS handshake") && e.message.contains(why))
        };
        if drain_refused && handshake("(expired)") && handshake("(unknown_ca)") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refusal not audited: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    cp.shutdown.cancel();
    cp.task.await.unwrap();
}

/// A follower forwards an operator's drain to the leader over mTLS with its own
/// replica certificate; the leader acts for the operator (identity and role carried
/// by the replica), and a viewer's drain is refused at the follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_an_operators_drain_over_mtls() {
    let pki = Pki::new();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let ca = pki.ca_pem();
    let admin = pki.client("ada", "ada", Some("admin"), None);
    let operator = pki.client("otto", "otto", Some("operator"), None);
    let viewer = pki.client("vera", "vera", Some("viewer"), None);

    let leader = start(replica_config(&pki, "cp-1"), store.clone()).await;
    let to_leader = channel(&leader.endpoint, &ca, Some(&admin));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !answered(&to_leader).await.map(|s| s.is_leader).unwrap_or(false) {
        assert!(tokio::time::Instant::now() < deadline, "cp-1 never led");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut op = pb::operator_service_client::OperatorServiceClient::new(to_leader.clone());
    let topology = r#"
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
"#;
    let applied = op
        .apply_topology(pb::ApplyTopologyRequest {
            topology_toml: topology.into(),
            dry_run: false,
            reason: "test".into(),
            override_freeze: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(applied.applied, "{:?}", applied.errors);

    let follower = start(replica_config(&pki, "cp-2"), store.clone()).await;
    let via_follower = channel(&follower.endpoint, &ca, Some(&operator));
    let status = answered(&via_follower).await.unwrap();
    assert!(!status.is_leader);
    let mut op_f = pb::operator_service_client::OperatorServiceClient::new(via_follower.clone());
    let mut drained = None;
    while drained.is_none() {
        match op_f.drain(drain("fra1")).await {
            Ok(r) => drained = Some(r.into_inner()),
            // UNAVAILABLE while the follower learns who leads; NOT_FOUND until the
            // leader has loaded the topology it just stored.
            Err(s)
                if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::NotFound)
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(s) => panic!("the forwarded drain failed: {s:?}"),
        }
    }
    let change = drained.unwrap().change.unwrap();
    assert_eq!(change.started_by, "operator:otto", "the leader acted for the operator");
    // The stored event names the operator and the role the replica carried for them.
    let mut q = pb::query_service_client::QueryServiceClient::new(to_leader.clone());
    loop {
        let events = q
            .list_events(pb::ListEventsRequest {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        if events
            .iter()
            .any(|e| e.kind == "drain" && e.actor == "operator:otto" && e.role == "operator")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "drain not stored with its role: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut op_v =
        pb::operator_service_client::OperatorServiceClient::new(channel(&follower.endpoint, &ca, Some(&viewer)));
    assert_eq!(
        op_v.undrain(pb::UndrainRequest {
            pop: "fra1".into(),
            reason: "no".into(),
            override_freeze: false,
        })
        .await
        .unwrap_err()
        .code(),
        tonic::Code::PermissionDenied
    );

    follower.shutdown.cancel();
    leader.shutdown.cancel();
    follower.task.await.unwrap();
    leader.task.await.unwrap();
}

#[test]
fn plaintext_beyond_loopback_is_refused_unless_insecure_is_explicit() {
    let cfg: ControlPlaneConfig = toml::from_str("grpc_addr = \"0.0.0.0:7400\"\n").unwrap();
    let err = cfg.clone().validate("cp.toml").unwrap_err().to_string();
    assert!(err.contains("tls") && err.contains("--insecure-plaintext"), "{err}");
    let mut insecure = cfg;
    insecure.insecure_plaintext = true;
    assert!(insecure.validate("cp.toml").is_ok());
    let loopback: ControlPlaneConfig = toml::from_str("grpc_addr = \"127.0.0.1:7400\"\n").unwrap();
    assert!(loopback.validate("cp.toml").is_ok());
    // The admin port beyond loopback needs TLS too.
    let admin: ControlPlaneConfig = toml::from_str("admin_addr = \"0.0.0.0:7401\"\n").unwrap();
    let err = admin.validate("cp.toml").unwrap_err().to_string();
    assert!(
        err.contains("admin_addr") && err.contains("--insecure-plaintext"),
        "{err}"
    );
    // Half a TLS configuration names the missing key.
    let half: ControlPlaneConfig = toml::from_str("[tls]\ncert = \"/x.pem\"\n").unwrap();
    assert!(half.validate("cp.toml").unwrap_err().to_string().contains("tls.key"));
}

/// With `[admin] open_on_loopback = false` the admin port serves TLS with the API's
/// certificate and wants a viewer credential on every request: a viewer's
/// certificate reads /metrics, no certificate is 401, a prober's is 403, and
/// plaintext HTTP gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_admin_port_serves_tls_and_wants_a_viewer_credential() {
    let pki = Pki::new();
    let mut cfg = replica_config(&pki, "cp-1");
    cfg.admin.open_on_loopback = false;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    cfg.admin_addr = admin_addr;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    cfg.grpc_addr = grpc.local_addr().unwrap();
    let validated = cfg.validate("test").unwrap();
    assert!(validated.admin_tls.is_some() && validated.admin_checked);
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    let task = tokio::spawn(async move {
        meridian_control_plane::run_with_store(validated, store, grpc, admin, s)
            .await
            .unwrap();
    });

    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.ca_pem()).unwrap()).unwrap();
    let client = |who: Option<&(PathBuf, PathBuf)>| {
        let mut b = reqwest::Client::builder()
            .add_root_certificate(ca.clone())
            .timeout(Duration::from_secs(10));
        if let Some((cert, key)) = who {
            let mut pem = std::fs::read(cert).unwrap();
            pem.extend(std::fs::read(key).unwrap());
            b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        b.build().unwrap()
    };
    let url = format!("https://127.0.0.1:{}/metrics", admin_addr.port());
    let viewer = pki.client("vera", "vera", Some("viewer"), None);
    let prober = pki.client("p-eu", "p-eu-1", Some("prober"), Some("eu-west"));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let page = loop {
        match client(Some(&viewer)).get(&url).send().await {
            Ok(r) => {
                assert_eq!(r.status(), 200);
                break r.text().await.unwrap();
            }
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "admin port never answered: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(page.contains("meridian_"), "{page}");

    let anonymous = client(None).get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.text().await.unwrap().contains("viewer credential"));
    let fleet = client(Some(&prober)).get(&url).send().await.unwrap();
    assert_eq!(fleet.status(), 403);

    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{}/metrics", admin_addr.port()))
        .send()
        .await;
    assert!(
        plain.map(|r| !r.status().is_success()).unwrap_or(true),
        "plaintext must not read the metrics"
    );

    shutdown.cancel();
    task.await.unwrap();
}
