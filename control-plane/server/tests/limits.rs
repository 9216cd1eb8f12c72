//! The gRPC server's bounds over real gRPC: an oversized message is refused with
//! RESOURCE_EXHAUSTED naming the limit and nothing is applied; plan watches beyond
//! `limits.max_agent_streams` are refused while the first keeps streaming, and a
//! closed watch frees its slot; every call is timed in a latency histogram.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use meridian_control_plane::config::ControlPlaneConfig;
use meridian_proto::v1 as pb;

const ADMIN: &str = "admin-token-000000000003";
const AGENT_A: &str = "agent-token-00000000000a";
const AGENT_B: &str = "agent-token-00000000000b";

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

fn hello(id: &str) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::AgentHello {
            agent_id: id.into(),
            kind: pb::AgentKind::Dns as i32,
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_and_surplus_streams_are_refused_and_calls_are_timed() {
    let text = format!(
        r#"
[limits]
max_message_bytes = 65536
max_agent_streams = 1
[[auth.operators]]
id = "ada"
role = "admin"
token = "{ADMIN}"
[[auth.agents]]
id = "dns-a"
token = "{AGENT_A}"
[[auth.agents]]
id = "dns-b"
token = "{AGENT_B}"
"#
    );
    let cfg: ControlPlaneConfig = toml::from_str(&text).unwrap();
    let replica = common::start(cfg).await;
    let admin_addr = replica.admin_addr;
    let channel = replica.channel();
    let mut q = pb::query_service_client::QueryServiceClient::new(channel.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while q.get_status(with_token(pb::GetStatusRequest {}, ADMIN)).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the replica never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A topology of 100 KiB against a 64 KiB limit: RESOURCE_EXHAUSTED naming the
    // sizes, and nothing stored.
    let mut op = pb::operator_service_client::OperatorServiceClient::new(channel.clone());
    let huge = format!("# {}\n[[pops]]\nid = \"fra1\"\ncapacity = 10\n", "x".repeat(100 * 1024));
    let err = op
        .apply_topology(with_token(
            pb::ApplyTopologyRequest {
                topology_toml: huge,
                dry_run: false,
                reason: "too big".into(),
                override_freeze: false,
            },
            ADMIN,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("65536"), "{}", err.message());
    let health = q
        .get_health(with_token(pb::GetHealthRequest {}, ADMIN))
        .await
        .unwrap()
        .into_inner();
    assert!(health.pops.is_empty(), "nothing was applied: {health:?}");

    // One plan watch is the cap: the second agent is refused, naming the setting.
    let mut plans = pb::plan_service_client::PlanServiceClient::new(channel.clone());
    let (tx_a, rx_a) = tokio::sync::mpsc::channel(4);
    tx_a.send(hello("dns-a")).await.unwrap();
    let first = plans
        .watch_plan(with_token(tokio_stream::wrappers::ReceiverStream::new(rx_a), AGENT_A))
        .await
        .expect("the first agent is admitted");
    let refused = plans
        .watch_plan(with_token(tokio_stream::iter(vec![hello("dns-b")]), AGENT_B))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("limits.max_agent_streams"),
        "{}",
        refused.message()
    );
    // Closing the first watch frees its slot.
    drop(tx_a);
    drop(first);
    let mut admitted = false;
    while !admitted {
        let (tx_b, rx_b) = tokio::sync::mpsc::channel(4);
        tx_b.send(hello("dns-b")).await.unwrap();
        match plans
            .watch_plan(with_token(tokio_stream::wrappers::ReceiverStream::new(rx_b), AGENT_B))
            .await
        {
            Ok(_) => admitted = true,
            Err(s) if s.code() == tonic::Code::ResourceExhausted && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(s) => panic!("the freed slot was never reused: {s:?}"),
        }
    }

    // Calls are timed in a histogram, labelled by RPC and code.
    let page = loop {
        let page = http_get(admin_addr, "/metrics").await;
        if page.contains("meridian_control_plane_rpc_duration_seconds_bucket")
            && page.contains("meridian_control_plane_rpc_shed_total")
        {
            break page;
        }
        assert!(tokio::time::Instant::now() < deadline, "no RPC histogram: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        page.contains("rpc=\"/meridian.v1.QueryService/GetStatus\""),
        "the histogram names the RPC"
    );
    assert!(page.contains("reason=\"message_size\""));
    assert!(page.contains("reason=\"agent_streams\""));

    replica.stop().await;
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf).to_string()
}
