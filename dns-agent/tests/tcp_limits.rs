//! TCP clients cannot hold connection slots for good: a client that never reads its
//! answers, or never finishes a query, is disconnected after its timeout (and
//! counted), a client address cannot open more than its share of connections, and
//! well-behaved clients are served meanwhile. Real sockets against an agent in this
//! process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{closed_by_peer, framed, metric, query, tcp_ask, wait_for, Agent};
use meridian_dns_core::wire::{TYPE_A, TYPE_TXT};

/// How long the tests wait for something the agent should do within a second.
const GENEROUS: Duration = Duration::from_secs(20);

#[test]
fn a_client_that_never_reads_is_disconnected_and_others_are_still_served() {
    // The idle timeout is long, so only the write timeout can end the connection.
    let agent = Agent::start("tcp_idle_timeout = \"60s\"\ntcp_write_timeout = \"500ms\"\n");
    let series = "meridian_dns_tcp_timeouts_total{phase=\"write\"}";
    let before = metric(series);

    // A tiny receive window, and ~60 KB answers: the agent's writes block at once.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&agent.tcp.into()).unwrap();
    let mut greedy: TcpStream = socket.into();
    let mut writer = greedy.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        // Queries keep coming (until the agent stops reading them); answers are
        // never read.
        writer.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        for id in 0..200u16 {
            if writer
                .write_all(&framed(&query(id, "big.example.net.", TYPE_TXT)))
                .is_err()
            {
                break;
            }
        }
    });

    // Meanwhile, other clients get their answers over TCP and UDP.
    let a = agent.tcp_query(7, "ns1.example.net.", TYPE_A);
    assert_eq!((a.id, a.rcode, a.answers), (7, 0, 1));
    let a = agent.udp_query(8, "ns1.example.net.", TYPE_A);
    assert_eq!((a.id, a.rcode, a.answers), (8, 0, 1));

    wait_for("the write timeout to be counted", GENEROUS, || {
        (metric(series) >= before + 1.0).then_some(())
    });
    assert!(
        closed_by_peer(&mut greedy, Duration::from_secs(10)),
        "the agent did not close the connection of a client that does not read"
    );
    sender.join().unwrap();
    // And the agent still serves new connections.
    let a = agent.tcp_query(9, "ns1.example.net.", TYPE_A);
    assert_eq!((a.id, a.answers), (9, 1));
}

#[test]
fn a_query_that_never_arrives_in_full_ends_the_connection_and_slow_clients_in_time_stay() {
    let agent = Agent::start("tcp_idle_timeout = \"500ms\"\n");
    let read = "meridian_dns_tcp_timeouts_total{phase=\"read\"}";
    let idle = "meridian_dns_tcp_timeouts_total{phase=\"idle\"}";
    let (read_before, idle_before) = (metric(read), metric(idle));

    // A length prefix of 64 and 3 bytes of the message, then nothing.
    let mut partial = TcpStream::connect(agent.tcp).unwrap();
    partial.write_all(&[0, 64, 1, 2, 3]).unwrap();
    // A connection that sends nothing at all.
    let mut silent = TcpStream::connect(agent.tcp).unwrap();
    // A client sending a query every 300 ms: each arrives within the timeout, so
    // the connection lives on although it is open far longer than 500 ms.
    let mut steady = TcpStream::connect(agent.tcp).unwrap();
    steady.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for id in 0..5 {
        let a = tcp_ask(&mut steady, id, "ns1.example.net.", TYPE_A).unwrap();
        assert_eq!((a.id, a.answers), (id, 1));
        std::thread::sleep(Duration::from_millis(300));
    }

    assert!(
        closed_by_peer(&mut partial, GENEROUS),
        "a half-sent query holds its connection"
    );
    assert!(closed_by_peer(&mut silent, GENEROUS), "an idle connection stays open");
    wait_for("the read and idle timeouts to be counted", GENEROUS, || {
        (metric(read) >= read_before + 1.0 && metric(idle) >= idle_before + 1.0).then_some(())
    });
}

#[test]
fn one_address_cannot_open_more_than_its_connections() {
    let agent = Agent::start("max_tcp_connections_per_client = 2\ntcp_idle_timeout = \"60s\"\n");
    let series = "meridian_dns_tcp_conn_refused_total{reason=\"per_client\"}";
    let before = metric(series);
    let open = |id: u16| {
        let mut s = TcpStream::connect(agent.tcp).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // A round trip proves the agent accepted and counted it.
        let a = tcp_ask(&mut s, id, "ns1.example.net.", TYPE_A).unwrap();
        assert_eq!(a.answers, 1);
        s
    };
    let mut first = open(1);
    let mut second = open(2);

    // The third from 127.0.0.1 is closed at once.
    let mut third = TcpStream::connect(agent.tcp).unwrap();
    assert!(
        closed_by_peer(&mut third, GENEROUS),
        "a third connection from one address was kept open"
    );
    wait_for("the refusal to be counted", GENEROUS, || {
        (metric(series) >= before + 1.0).then_some(())
    });
    // The two within the limit are untouched.
    assert_eq!(tcp_ask(&mut first, 3, "ns1.example.net.", TYPE_A).unwrap().answers, 1);
    assert_eq!(tcp_ask(&mut second, 4, "ns1.example.net.", TYPE_A).unwrap().answers, 1);

    // Closing one frees its place (once the agent has seen it close).
    drop(first);
    let answered = wait_for("a connection in the freed place", GENEROUS, || {
        let mut s = TcpStream::connect(agent.tcp).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        tcp_ask(&mut s, 5, "ns1.example.net.", TYPE_A).ok()
    });
    assert_eq!((answered.id, answered.answers), (5, 1));
}
