//! The DNS agent end to end: a real `meridian-dns-agent` process fed by a real
//! control plane (embedded store), queried with real `dig` and with hickory-proto
//! messages over UDP. Per-region answers from ECS and from the source address,
//! weighted shares, a drain visible in the next answers, static stability across a
//! control-plane loss and an agent restart, and the zone's protocol behaviour
//! (SOA/NS/NXDOMAIN/NODATA/REFUSED, TC then TCP). A second test feeds the agent from
//! an in-process fake PlanService to check that an invalid plan is NACKed with its
//! reason while the old answers continue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use meridian_proto::v1 as pb;
use meridian_tests::dns::{dig, dig_batch, DnsAgent};
use meridian_tests::meridian::{ctl_json, meridianctl, ControlPlane};
use meridian_tests::util::wait_for;
use serde_json::Value;
use tokio::net::UdpSocket;

const DEADLINE: Duration = Duration::from_secs(60);

/// Three PoPs on loopback addresses, two client regions. With no probers every PoP
/// is UNKNOWN, which steering treats as usable. eu prefers fra1 then ams1 and has
/// more demand than fra1 takes at 80 %, so it spills onto ams1; lo prefers iad1.
const TOPOLOGY: &str = r#"
[policy]
target_utilisation = 0.8
dns_ttl_seconds = 15

[[pops]]
id = "fra1"
capacity = 100
ipv4 = ["127.0.0.21"]
[[pops.endpoints]]
name = "tcp"
kind = "tcp"
address = "127.0.0.21:9"

[[pops]]
id = "ams1"
capacity = 100
ipv4 = ["127.0.0.22"]
[[pops.endpoints]]
name = "tcp"
kind = "tcp"
address = "127.0.0.22:9"

[[pops]]
id = "iad1"
capacity = 100
ipv4 = ["127.0.0.23"]
[[pops.endpoints]]
name = "tcp"
kind = "tcp"
address = "127.0.0.23:9"

[[regions]]
id = "eu"
demand = 100
client_prefixes = ["10.1.0.0/16"]
latency_hints = { fra1 = "10ms", ams1 = "15ms", iad1 = "90ms" }

[[regions]]
id = "lo"
demand = 30
client_prefixes = ["127.0.0.0/8"]
latency_hints = { iad1 = "10ms", fra1 = "90ms", ams1 = "95ms" }
"#;

const ZONES: &str = r#"
[[zones]]
origin = "example.net."
ns = ["ns1"]
soa_rname = "hostmaster.example.net."
soa_serial = 2024060101
soa_minimum = 30
ttl = 300

[[zones.steered]]
name = "www"
answers = 1

[[zones.steered]]
name = "pool.example.net."
answers = 3

[[zones.records]]
name = "ns1"
type = "A"
value = "127.0.0.53"

[[zones.records]]
name = "big"
type = "TXT"
value = "BIG"
"#;

fn zones() -> String {
    // A TXT record too large for a 512-byte UDP answer.
    ZONES.replace("value = \"BIG\"", &format!("value = \"{}\"", "t".repeat(900)))
}

fn pop_ip(pop: &str) -> &'static str {
    match pop {
        "fra1" => "127.0.0.21",
        "ams1" => "127.0.0.22",
        "iad1" => "127.0.0.23",
        other => panic!("unknown pop {other}"),
    }
}

/// The plan's weights for `region`, keyed by the PoP's address.
fn weights(plan: &Value, region: &str) -> HashMap<String, f64> {
    plan["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == region)
        .map(|r| {
            r["pops"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| {
                    (
                        pop_ip(w["pop"].as_str().unwrap()).to_string(),
                        w["weight"].as_f64().unwrap(),
                    )
                })
                .filter(|(_, w)| *w > 0.0)
                .collect()
        })
        .unwrap_or_default()
}

/// A tiny DNS client on hickory-proto messages over one UDP socket.
struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    next_id: u16,
}

impl Client {
    async fn new(server: SocketAddr) -> Self {
        Client {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
            next_id: 1,
        }
    }

    async fn ask(&mut self, name: &str, rtype: RecordType, ecs: Option<(&str, u8)>) -> Message {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_str(name).unwrap(), rtype));
        if let Some((addr, prefix)) = ecs {
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            edns.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(addr.parse().unwrap(), prefix, 0)));
            m.set_edns(edns);
        }
        let bytes = m.to_vec().unwrap();
        let mut buf = vec![0u8; 65535];
        for _ in 0..5 {
            self.sock.send_to(&bytes, self.server).await.unwrap();
            while let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_secs(1), self.sock.recv_from(&mut buf)).await
            {
                let answer = Message::from_vec(&buf[..n]).expect("the agent's answer parses");
                if answer.metadata.id == id {
                    return answer;
                }
            }
        }
        panic!("no answer from {} for {name} {rtype:?}", self.server);
    }

    /// The addresses of the first record over `n` queries, counted.
    async fn first_record_counts(&mut self, name: &str, ecs: Option<(&str, u8)>, n: usize) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for _ in 0..n {
            let m = self.ask(name, RecordType::A, ecs).await;
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            let first = m
                .answers
                .iter()
                .find_map(|r| match &r.data {
                    RData::A(a) => Some(a.0.to_string()),
                    _ => None,
                })
                .expect("an A record");
            *counts.entry(first).or_default() += 1;
        }
        counts
    }
}

/// The N of "serving cached plan vN" in a /ready body.
fn cached_version(body: &str) -> u64 {
    let rest = body
        .split("serving cached plan v")
        .nth(1)
        .unwrap_or_else(|| panic!("{body}"));
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn assert_shares(counts: &HashMap<String, usize>, weights: &HashMap<String, f64>, n: usize) {
    let total: f64 = weights.values().sum();
    for (ip, count) in counts {
        assert!(
            weights.contains_key(ip),
            "{ip} answered but not in the plan {weights:?}"
        );
        let share = *count as f64 / n as f64;
        let want = weights[ip] / total;
        // 2,000 draws: the standard deviation of a share is at most 1.1 points.
        assert!(
            (share - want).abs() < 0.05,
            "{ip}: share {share:.3}, weight {want:.3} ({counts:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_follow_the_control_plane_and_survive_its_loss() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cp-data");
    let data_arg = data.display().to_string();
    let mut cp = ControlPlane::start("cp-1", dir.path(), &["--data-dir", &data_arg, "--lease-ttl", "2s"]);
    cp.wait_ready().await;
    let ep = cp.endpoint();
    let topo = dir.path().join("topology.toml");
    std::fs::write(&topo, TOPOLOGY).unwrap();
    let applied = ctl_json(&ep, &["apply", "-f", topo.to_str().unwrap()]).await;
    assert_eq!(applied["applied"], true, "{applied}");
    let plan = wait_for("the first plan", DEADLINE, || async {
        let out = meridianctl(&["-e", &ep, "plan", "-o", "json"]).await;
        serde_json::from_slice::<Value>(&out.stdout).ok()
    })
    .await;
    let v1 = plan["version"].as_u64().unwrap();
    let eu = weights(&plan, "eu");
    assert!(eu.len() >= 2, "eu should spill over two PoPs: {plan}");
    assert_eq!(
        weights(&plan, "lo").keys().collect::<Vec<_>>(),
        vec!["127.0.0.23"],
        "{plan}"
    );

    let mut agent = DnsAgent::start("dns-e2e", dir.path(), std::slice::from_ref(&ep), &zones());
    agent.wait_ready(200, "from control plane").await;
    let server = agent.dns_addr;

    // Per-region answers with real dig: ECS in eu, source address (127.0.0.1) in lo.
    let a = dig(server, &["www.example.net", "A", "+subnet=10.1.2.0/24"]).await;
    assert_eq!(a.status, "NOERROR", "{}", a.raw);
    assert!(a.has_flag("aa"), "{}", a.raw);
    assert!(eu.contains_key(&a.addresses()[0]), "{}", a.raw);
    assert_eq!(a.answers[0].1, 15, "the plan's TTL: {}", a.raw);
    assert_eq!(a.client_subnet.as_deref(), Some("10.1.2.0/24/16"), "{}", a.raw);
    let a = dig(server, &["www.example.net", "A"]).await;
    assert_eq!(a.addresses(), vec!["127.0.0.23"], "{}", a.raw);
    // An unmapped ECS subnet gets the default region (the first, eu).
    let a = dig(server, &["www.example.net", "A", "+subnet=198.51.100.0/24"]).await;
    assert!(eu.contains_key(&a.addresses()[0]), "{}", a.raw);
    // 200 queries through dig's batch mode, every answer from the right region.
    let batch: Vec<String> = (0..100)
        .flat_map(|i| {
            [
                format!("www.example.net A +subnet=10.1.{i}.0/24"),
                format!("www.example.net A +subnet=127.0.{i}.0/24"),
            ]
        })
        .collect();
    let lines = dig_batch(server, &batch, dir.path()).await;
    assert_eq!(lines.len(), 200, "{lines:?}");
    for (i, line) in lines.iter().enumerate() {
        if i % 2 == 0 {
            assert!(eu.contains_key(line), "eu answer {line}");
        } else {
            assert_eq!(line, "127.0.0.23");
        }
    }

    // Weighted shares over 2,000 queries (hickory-proto client), first record.
    let mut client = Client::new(server).await;
    let n = 2000;
    let counts = client
        .first_record_counts("www.example.net.", Some(("10.1.9.0", 24)), n)
        .await;
    assert_shares(&counts, &eu, n);
    // `pool` allows 3 records: they are distinct PoPs, and the shares hold for the set.
    for _ in 0..50 {
        let m = client
            .ask("pool.example.net.", RecordType::A, Some(("10.1.9.0", 24)))
            .await;
        let mut ips: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
        let len = ips.len();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), len, "distinct: {ips:?}");
        assert!(ips.iter().all(|ip| eu.contains_key(ip)));
    }

    // The zone's protocol behaviour, with dig flags.
    let a = dig(server, &["example.net", "SOA"]).await;
    assert!(
        a.has_flag("aa") && a.answers.len() == 1 && a.answers[0].2 == "SOA",
        "{}",
        a.raw
    );
    assert!(a.answers[0].3.contains("2024060101"), "{}", a.raw);
    let a = dig(server, &["example.net", "NS"]).await;
    assert_eq!(a.answers[0].3, "ns1.example.net.", "{}", a.raw);
    assert_eq!(a.additional.iter().filter(|r| r.2 == "A").count(), 1, "glue: {}", a.raw);
    let a = dig(server, &["nope.example.net", "A"]).await;
    assert_eq!(a.status, "NXDOMAIN", "{}", a.raw);
    assert!(
        a.has_flag("aa") && a.authority.iter().any(|r| r.2 == "SOA"),
        "{}",
        a.raw
    );
    let a = dig(server, &["www.example.net", "AAAA"]).await;
    assert_eq!(a.status, "NOERROR", "NODATA: no PoP has IPv6: {}", a.raw);
    assert!(
        a.answers.is_empty() && a.authority.iter().any(|r| r.2 == "SOA" && r.1 == 30),
        "{}",
        a.raw
    );
    let a = dig(server, &["www.example.org", "A"]).await;
    assert_eq!(a.status, "REFUSED", "{}", a.raw);
    assert!(!a.has_flag("aa"), "{}", a.raw);
    let a = dig(server, &["version.bind", "TXT", "CH"]).await;
    assert_eq!(a.status, "REFUSED", "{}", a.raw);
    let a = dig(server, &["big.example.net", "TXT", "+noedns", "+ignore"]).await;
    assert!(a.has_flag("tc") && a.answers.is_empty(), "{}", a.raw);
    let a = dig(server, &["big.example.net", "TXT", "+noedns"]).await;
    assert!(a.raw.contains("retrying in TCP mode"), "{}", a.raw);
    assert_eq!(a.answers.len(), 1, "{}", a.raw);
    let a = dig(server, &["www.example.net", "A", "+tcp", "+subnet=10.1.2.0/24"]).await;
    assert!(eu.contains_key(&a.addresses()[0]), "{}", a.raw);

    // Drain ams1: the next plan moves eu off it, and the answers follow. (A drain may
    // take more than one plan version; wait for the one without ams1.)
    let out = meridianctl(&["-e", &ep, "drain", "ams1", "--now", "--reason", "dns e2e"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan = wait_for("a plan that moves eu off ams1", DEADLINE, || async {
        let p = ctl_json(&ep, &["plan"]).await;
        (p["version"].as_u64().unwrap_or(0) > v1 && !weights(&p, "eu").contains_key("127.0.0.22")).then_some(p)
    })
    .await;
    let v2 = plan["version"].as_u64().unwrap();
    let eu2 = weights(&plan, "eu");
    wait_for("the agent to apply the drained plan", DEADLINE, || async {
        let v = agent.metric("meridian_dns_plan_version").await.unwrap_or(0.0);
        (v >= v2 as f64).then_some(())
    })
    .await;
    wait_for("answers without the drained PoP", DEADLINE, || async {
        let mut c = Client::new(server).await;
        let counts = c
            .first_record_counts("www.example.net.", Some(("10.1.9.0", 24)), 100)
            .await;
        (!counts.contains_key("127.0.0.22")).then_some(())
    })
    .await;
    agent.wait_ready(200, "from control plane").await;
    assert!(agent.metric("meridian_dns_ecs_queries_total").await.unwrap_or(0.0) >= 2000.0);
    assert!(
        agent
            .metric("meridian_dns_answers_total{region=\"eu\",pop=\"fra1\"}")
            .await
            .unwrap_or(0.0)
            > 0.0
    );

    // Static stability: the control plane dies; the agent keeps answering and says so.
    cp.kill();
    let body = agent.wait_ready(200, "control plane unreachable").await;
    let cached = cached_version(&body);
    assert!(cached >= v2, "{body}");
    let a = dig(server, &["www.example.net", "A", "+subnet=10.1.2.0/24"]).await;
    assert!(eu2.contains_key(&a.addresses()[0]), "{}", a.raw);
    // ...and a restart with no control plane serves the cached plan at once.
    agent.restart();
    let body = agent.wait_ready(200, "serving cached plan v").await;
    assert_eq!(cached_version(&body), cached, "{body}");
    assert!(!body.contains("from control plane"), "{body}");
    let a = dig(server, &["www.example.net", "A", "+subnet=10.1.2.0/24"]).await;
    assert_eq!(a.status, "NOERROR", "{}", a.raw);
    assert!(eu2.contains_key(&a.addresses()[0]), "{}", a.raw);
    let a = dig(server, &["www.example.net", "A"]).await;
    assert_eq!(a.addresses(), vec!["127.0.0.23"], "{}", a.raw);
    agent.wait_ready(200, "control plane unreachable").await;
    assert_eq!(agent.metric("meridian_dns_serving_cached_plan").await, Some(1.0));
    assert_eq!(agent.metric("meridian_dns_control_plane_connected").await, Some(0.0));
    assert!(agent.log().contains("serving the cached plan"), "{}", agent.log());
}

/// A scripted PlanService: sends the plans the test pushes, one at a time, and
/// records what the agent answers.
struct FakePlans {
    outbox: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<pb::SteeringPlan>>>,
    inbox: Arc<Mutex<Vec<pb::AgentMessage>>>,
}

type PlanStream = Pin<Box<dyn futures::Stream<Item = Result<pb::PlanUpdate, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl pb::plan_service_server::PlanService for FakePlans {
    type WatchPlanStream = PlanStream;

    async fn watch_plan(
        &self,
        req: tonic::Request<tonic::Streaming<pb::AgentMessage>>,
    ) -> Result<tonic::Response<PlanStream>, tonic::Status> {
        let mut inbound = req.into_inner();
        let Some(mut outbox) = self.outbox.lock().unwrap().take() else {
            return Err(tonic::Status::unavailable("the fake serves one stream"));
        };
        let inbox = self.inbox.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    plan = outbox.recv() => {
                        let Some(plan) = plan else { return };
                        if tx.send(Ok(pb::PlanUpdate { plan: Some(plan) })).await.is_err() {
                            return;
                        }
                    }
                    msg = inbound.message() => match msg {
                        Ok(Some(m)) => inbox.lock().unwrap().push(m),
                        _ => return,
                    }
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

fn fake_plan(version: u64, lo_weight: f64, lo_ip: &str) -> pb::SteeringPlan {
    let region = |name: &str, prefix: &str, pop: &str, weight: f64, ip: &str| pb::RegionSteering {
        region: name.into(),
        client_prefixes: vec![prefix.into()],
        pops: vec![pb::PopWeight {
            pop: pop.into(),
            weight,
            ipv4: if ip.is_empty() { vec![] } else { vec![ip.into()] },
            ipv6: vec![],
        }],
    };
    pb::SteeringPlan {
        version,
        regions: vec![
            region("eu", "10.1.0.0/16", "fra1", 1.0, "127.0.0.31"),
            region("lo", "127.0.0.0/8", "iad1", lo_weight, lo_ip),
        ],
        dns_ttl_seconds: 20,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_plan_is_nacked_with_its_reason_and_old_answers_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, rx) = tokio::sync::mpsc::unbounded_channel();
    let inbox: Arc<Mutex<Vec<pb::AgentMessage>>> = Arc::default();
    let fake = FakePlans {
        outbox: Mutex::new(Some(rx)),
        inbox: inbox.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::plan_service_server::PlanServiceServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let agent = DnsAgent::start("dns-nack", dir.path(), &[endpoint], ZONES);
    // No plan yet: not ready, SERVFAIL for steered names, the zone still answers.
    agent.wait_ready(503, "no steering plan").await;
    let a = dig(agent.dns_addr, &["www.example.net", "A"]).await;
    assert_eq!(a.status, "SERVFAIL", "{}", a.raw);
    let a = dig(agent.dns_addr, &["example.net", "SOA"]).await;
    assert_eq!(a.status, "NOERROR", "{}", a.raw);

    let replies = |version: u64| {
        let inbox = inbox.clone();
        async move {
            inbox.lock().unwrap().iter().find_map(|m| match &m.msg {
                Some(pb::agent_message::Msg::Ack(a)) if a.version == version => Some(Ok(())),
                Some(pb::agent_message::Msg::Nack(n)) if n.version == version => Some(Err(n.reason.clone())),
                _ => None,
            })
        }
    };
    outbox.send(fake_plan(1, 1.0, "127.0.0.32")).unwrap();
    assert_eq!(wait_for("the ACK of v1", DEADLINE, || replies(1)).await, Ok(()));
    let hello = inbox.lock().unwrap().first().cloned().unwrap();
    match hello.msg {
        Some(pb::agent_message::Msg::Hello(h)) => {
            assert_eq!(h.agent_id, "dns-nack");
            assert_eq!(h.kind, pb::AgentKind::Dns as i32);
        }
        other => panic!("first message {other:?}"),
    }
    agent.wait_ready(200, "serving plan v1").await;
    assert_eq!(
        dig(agent.dns_addr, &["www.example.net", "A"]).await.addresses(),
        vec!["127.0.0.32"]
    );

    // v2: a NaN weight. NACKed with the reason; v1's answers continue.
    outbox.send(fake_plan(2, f64::NAN, "127.0.0.33")).unwrap();
    let reason = wait_for("the NACK of v2", DEADLINE, || replies(2)).await.unwrap_err();
    assert!(reason.contains("`lo` PoP `iad1` has weight NaN"), "{reason}");
    // v3: no addresses anywhere in lo, and v3b serving nothing at all.
    let mut empty = fake_plan(3, 1.0, "");
    empty.regions[0].pops[0].ipv4.clear();
    outbox.send(empty).unwrap();
    let reason = wait_for("the NACK of v3", DEADLINE, || replies(3)).await.unwrap_err();
    assert!(reason.contains("serves nothing"), "{reason}");
    for _ in 0..20 {
        let a = dig(agent.dns_addr, &["www.example.net", "A"]).await;
        assert_eq!(a.addresses(), vec!["127.0.0.32"], "{}", a.raw);
    }
    let body = agent.wait_ready(200, "serving plan v1").await;
    assert!(body.contains("v1"), "{body}");
    assert_eq!(
        agent
            .metric("meridian_dns_plan_nacks_total{reason=\"invalid_weight\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        agent
            .metric("meridian_dns_plan_nacks_total{reason=\"serves_nothing\"}")
            .await,
        Some(1.0)
    );
    // An older version is never applied; the next good one is.
    outbox.send(fake_plan(1, 1.0, "127.0.0.34")).unwrap();
    outbox.send(fake_plan(4, 1.0, "127.0.0.35")).unwrap();
    assert_eq!(wait_for("the ACK of v4", DEADLINE, || replies(4)).await, Ok(()));
    let a = dig(agent.dns_addr, &["www.example.net", "A"]).await;
    assert_eq!(a.addresses(), vec!["127.0.0.35"], "{}", a.raw);
    let cached = std::fs::read_to_string(agent.state_dir.join("plan.json")).unwrap();
    assert!(cached.contains("127.0.0.35") && !cached.contains("NaN"), "{cached}");
}
