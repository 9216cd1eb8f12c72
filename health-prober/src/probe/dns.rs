//! DNS probes: one query over UDP to one explicit server (the PoP's resolver or
//! authoritative server), judged on the raw response code and, optionally, on an
//! answer record.
//!
//! Decision: hickory-proto 0.26 builds and parses the messages, and the probe does
//! its own I/O on a connected tokio `UdpSocket`. hickory-resolver was rejected for
//! this: it picks among its configured name servers, retries, caches, and turns
//! NXDOMAIN/SERVFAIL/REFUSED into errors, while a health probe must send exactly
//! one query to exactly one server and see the rcode that server sent. hickory-proto
//! 0.26 itself has no I/O (that moved out of it), so this adds no second stack. A
//! datagram that does not parse, or answers another query id, is ignored until the
//! deadline (a spoofed or garbled packet must not end the probe); if only garbage
//! arrived, the failure says so (class `other`) instead of a bare timeout.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};

use super::classify::{chain, classify_error};
use super::{FailureClass, ProbeOutcome};
use crate::target::{rcode_name, DnsCheck};

pub(super) async fn probe(check: &DnsCheck, timeout: Duration, start: Instant) -> ProbeOutcome {
    let deadline = tokio::time::Instant::from_std(start) + timeout;
    let local: SocketAddr = match check.server.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = match tokio::net::UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(e) => {
            return ProbeOutcome::failed(
                start.elapsed(),
                FailureClass::Other,
                format!("cannot open a UDP socket: {e}"),
            )
        }
    };
    if let Err(e) = socket.connect(check.server).await {
        return ProbeOutcome::failed(
            start.elapsed(),
            classify_error(&e),
            format!("cannot reach {}: {}", check.server, chain(&e)),
        );
    }
    let id: u16 = rand::random();
    let mut query = Message::new(id, MessageType::Query, OpCode::Query);
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(check.name.clone(), check.record_type));
    let bytes = match query.to_vec() {
        Ok(b) => b,
        Err(e) => {
            return ProbeOutcome::failed(
                start.elapsed(),
                FailureClass::Other,
                format!("cannot encode the query: {e}"),
            )
        }
    };
    if let Err(e) = socket.send(&bytes).await {
        return ProbeOutcome::failed(
            start.elapsed(),
            classify_error(&e),
            format!("send to {}: {}", check.server, chain(&e)),
        );
    }
    let mut buf = vec![0u8; 65_535];
    let mut garbage: Option<String> = None;
    loop {
        let received = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_) => {
                let detail = match garbage {
                    Some(why) => {
                        return ProbeOutcome::failed(
                            start.elapsed(),
                            FailureClass::Other,
                            format!("no valid answer from {} within {timeout:?}; {why}", check.server),
                        )
                    }
                    None => format!("no answer from {} within {timeout:?}", check.server),
                };
                return ProbeOutcome::failed(start.elapsed(), FailureClass::Timeout, detail);
            }
            // On a connected UDP socket an ICMP port unreachable shows up here as
            // ConnectionRefused.
            Ok(Err(e)) => {
                return ProbeOutcome::failed(
                    start.elapsed(),
                    classify_error(&e),
                    format!("receive from {}: {}", check.server, chain(&e)),
                )
            }
            Ok(Ok(n)) => n,
        };
        let response = match Message::from_vec(&buf[..received]) {
            Ok(m) => m,
            Err(e) => {
                garbage = Some(format!("malformed response ({received} bytes): {e}"));
                continue;
            }
        };
        if response.metadata.id != id || response.metadata.message_type != MessageType::Response {
            garbage = Some(format!("response with a foreign id {}", response.metadata.id));
            continue;
        }
        let latency = start.elapsed();
        return judge(check, &response, latency);
    }
}

/// Judges a response to our query.
fn judge(check: &DnsCheck, response: &Message, latency: Duration) -> ProbeOutcome {
    let rcode = u16::from(response.metadata.response_code);
    if rcode != check.expected_rcode {
        return ProbeOutcome::failed(
            latency,
            FailureClass::DnsRcode,
            format!(
                "rcode {}, expected {}",
                rcode_name(rcode),
                rcode_name(check.expected_rcode)
            ),
        );
    }
    let Some(expected) = check.expected_answer.as_deref().filter(|e| !e.is_empty()) else {
        return ProbeOutcome::ok(latency);
    };
    let want = normalize(expected);
    let found: Vec<String> = response
        .answers
        .iter()
        .map(|r| normalize(&r.data.to_string()))
        .collect();
    if found.contains(&want) {
        return ProbeOutcome::ok(latency);
    }
    let truncated = if response.metadata.truncation {
        " (response truncated)"
    } else {
        ""
    };
    ProbeOutcome::failed(
        latency,
        FailureClass::DnsAnswer,
        format!("no answer {expected:?} among [{}]{truncated}", found.join(", ")),
    )
}

fn normalize(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;

    fn check(expected_rcode: u16, answer: Option<&str>) -> DnsCheck {
        DnsCheck {
            server: SocketAddr::from(([127, 0, 0, 1], 53)),
            name: Name::from_str("www.example.com.").unwrap_or_else(|e| panic!("{e}")),
            record_type: RecordType::A,
            expected_rcode,
            expected_answer: answer.map(str::to_string),
        }
    }

    fn response(rcode: ResponseCode, answers: &[[u8; 4]]) -> Message {
        let mut m = Message::error_msg(7, OpCode::Query, rcode);
        let name = Name::from_str("www.example.com.").unwrap_or_else(|e| panic!("{e}"));
        for a in answers {
            m.add_answer(Record::from_rdata(
                name.clone(),
                60,
                RData::A(A::from(std::net::Ipv4Addr::from(*a))),
            ));
        }
        m
    }

    #[test]
    fn rcode_and_answer_are_judged() {
        let ms = Duration::from_millis(3);
        assert!(judge(&check(0, None), &response(ResponseCode::NoError, &[]), ms).success);
        let o = judge(&check(0, None), &response(ResponseCode::NXDomain, &[]), ms);
        assert_eq!(
            (o.class, o.detail.as_str()),
            (FailureClass::DnsRcode, "rcode NXDOMAIN, expected NOERROR")
        );
        assert!(judge(&check(3, None), &response(ResponseCode::NXDomain, &[]), ms).success);
        assert!(
            judge(
                &check(0, Some("192.0.2.1")),
                &response(ResponseCode::NoError, &[[192, 0, 2, 10], [192, 0, 2, 1]]),
                ms
            )
            .success
        );
        let o = judge(
            &check(0, Some("192.0.2.1")),
            &response(ResponseCode::NoError, &[[192, 0, 2, 10]]),
            ms,
        );
        assert_eq!(
            o.class,
            FailureClass::DnsAnswer,
            "equality, not a substring: {}",
            o.detail
        );
    }
}
