//! A DNS agent running in this test process on port-0 listeners (no control plane,
//! no plan cache: the static zone data answers), raw DNS messages built and read by
//! hand, and the process's metrics.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use meridian_dns_agent::config::AgentConfig;
use meridian_dns_agent::Listeners;
use meridian_dns_core::wire::{self, name_from_text};
use tokio_util::sync::CancellationToken;

/// A zone with a small A record (`ns1`) and a large TXT record (`big`, about 60 KB:
/// a few answers fill any socket buffer).
pub fn zone() -> String {
    format!(
        r#"
[[zones]]
origin = "example.net."
ns = ["ns1"]

[[zones.records]]
name = "ns1"
type = "A"
value = "127.0.0.53"

[[zones.records]]
name = "big"
type = "TXT"
value = "{}"
"#,
        "x".repeat(60_000)
    )
}

/// An agent serving [`zone`] on its own runtime thread; stopped on drop. Tests are
/// plain threads with blocking sockets, so nothing they do can stall the agent.
pub struct Agent {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Agent {
    /// Starts an agent with `settings` (top-level keys, then any tables such as
    /// `[rrl]`) added to a minimal configuration.
    pub fn start(settings: &str) -> Agent {
        let text = format!(
            "agent_id = \"dns-test\"\ncontrol_plane = [\"http://127.0.0.1:9\"]\nplan_cache = false\nudp_threads = 2\n{settings}\n{}",
            zone()
        );
        let cfg: AgentConfig = toml::from_str(&text).unwrap();
        let validated = cfg.validate("test config").unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (tcp, admin) = rt.block_on(async {
            (
                tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
                tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            )
        });
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || {
            rt.block_on(meridian_dns_agent::run(validated, Listeners { udp, tcp, admin }, stop))
        });
        Agent {
            udp: udp_addr,
            tcp: tcp_addr,
            shutdown,
            thread: Some(thread),
        }
    }

    /// One query over a new TCP connection, answered within 10 s.
    pub fn tcp_query(&self, id: u16, name: &str, qtype: u16) -> Response {
        let mut s = TcpStream::connect(self.tcp).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp_ask(&mut s, id, name, qtype).unwrap()
    }

    /// One query over UDP, answered within 5 s.
    pub fn udp_query(&self, id: u16, name: &str, qtype: u16) -> Response {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(&query(id, name, qtype), self.udp).unwrap();
        let mut buf = [0u8; 65_535];
        let n = s.recv(&mut buf).unwrap();
        Response::parse(&buf[..n])
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let result = t.join();
            if !std::thread::panicking() {
                result.unwrap().unwrap();
            }
        }
    }
}

/// Sends one framed query on `s` and reads its framed answer.
pub fn tcp_ask(s: &mut TcpStream, id: u16, name: &str, qtype: u16) -> std::io::Result<Response> {
    s.write_all(&framed(&query(id, name, qtype)))?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut body)?;
    Ok(Response::parse(&body))
}

/// A query without EDNS.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    p.extend_from_slice(&name_from_text(name).unwrap());
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
    p
}

/// `message` with its TCP length prefix.
pub fn framed(message: &[u8]) -> Vec<u8> {
    let mut f = (message.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(message);
    f
}

/// The header fields of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub id: u16,
    pub truncated: bool,
    pub rcode: u8,
    pub questions: u16,
    pub answers: u16,
}

impl Response {
    pub fn parse(p: &[u8]) -> Response {
        assert!(p.len() >= 12, "an answer shorter than a header: {p:?}");
        let be16 = |at: usize| u16::from_be_bytes([p[at], p[at + 1]]);
        let flags = be16(2);
        assert!(flags & 0x8000 != 0, "not a response");
        Response {
            id: be16(0),
            truncated: flags & 0x0200 != 0,
            rcode: (flags & 0xF) as u8,
            questions: be16(4),
            answers: be16(6),
        }
    }
}

/// The sum of this process's samples of `series` (a metric name, optionally with
/// its labels: `name{label="value"}`); 0 when there is none yet.
pub fn metric(series: &str) -> f64 {
    let page = meridian_daemon::admin::metrics_handle().unwrap().render();
    page.lines()
        .filter(|l| l.starts_with(series) && l[series.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `check` every 20 ms until it gives a value, for at most `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the peer closed `s`: reads (and discards) whatever is still buffered
/// until end-of-file or a reset; `false` when it is still open after `limit`.
pub fn closed_by_peer(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                return true
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(e) => panic!("unexpected read error: {e}"),
        }
    }
}
