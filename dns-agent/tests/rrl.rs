//! Response rate limiting through the real UDP socket: with a tiny limit, a burst
//! from 127.0.0.1 yields some answers, some truncated (TC=1) slips and some
//! silence, each counted; TCP is never limited; and with the default settings RRL is
//! off.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{metric, query, Agent, Response};
use meridian_dns_core::wire::TYPE_A;

/// Sends `n` queries at once from one socket and collects every answer that comes
/// back until the agent has been silent for a second.
fn burst(agent: &Agent, n: u16) -> Vec<Response> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for id in 0..n {
        s.send_to(&query(id, "ns1.example.net.", TYPE_A), agent.udp).unwrap();
    }
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(len) = s.recv(&mut buf) {
        got.push(Response::parse(&buf[..len]));
    }
    got
}

#[test]
fn over_the_limit_udp_answers_are_dropped_or_slip_truncated_and_counted() {
    let agent = Agent::start("[rrl]\nresponses_per_second = 5\nslip = 2\n");
    let (dropped, slipped) = (
        "meridian_dns_rrl_total{action=\"drop\"}",
        "meridian_dns_rrl_total{action=\"slip\"}",
    );
    let (dropped_before, slipped_before) = (metric(dropped), metric(slipped));

    let sent = 60u16;
    let got = burst(&agent, sent);
    let full: Vec<_> = got.iter().filter(|r| !r.truncated).collect();
    let truncated: Vec<_> = got.iter().filter(|r| r.truncated).collect();
    assert!(!full.is_empty(), "no answer got through: {got:?}");
    assert!(full.iter().all(|r| r.answers == 1 && r.rcode == 0), "{full:?}");
    // A 5/s bucket (burst 5) gives a handful, not the whole burst.
    assert!(full.len() <= 20, "{} full answers to a burst of {sent}", full.len());
    assert!(!truncated.is_empty(), "no truncated slip: {got:?}");
    assert!(
        truncated
            .iter()
            .all(|r| r.answers == 0 && r.questions == 1 && r.rcode == 0),
        "a slip is the question with TC=1 and no records: {truncated:?}"
    );
    let silent = usize::from(sent) - got.len();
    assert!(silent > 0, "nothing was dropped");
    // Slip 2: every other response over the limit slips.
    assert!(
        truncated.len().abs_diff(silent) <= 1,
        "{} slipped, {silent} dropped",
        truncated.len()
    );
    assert_eq!(metric(slipped) - slipped_before, truncated.len() as f64);
    assert_eq!(metric(dropped) - dropped_before, silent as f64);

    // TCP, where slipped clients retry, is never limited.
    for id in 0..10 {
        let a = agent.tcp_query(1000 + id, "ns1.example.net.", TYPE_A);
        assert_eq!((a.truncated, a.answers), (false, 1));
    }
}

#[test]
fn rrl_is_off_by_default() {
    let agent = Agent::start("");
    let got = burst(&agent, 60);
    assert_eq!(got.len(), 60);
    assert!(got.iter().all(|r| !r.truncated && r.answers == 1));
}
