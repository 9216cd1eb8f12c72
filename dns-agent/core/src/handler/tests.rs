//! The request path end to end without sockets: queries built and answers decoded
//! with hickory-proto (an independent codec), plus the fuzz harness.

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as HQuery, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet as HSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use proptest::prelude::*;

use super::*;
use crate::plan::tests::sample;
use crate::zone_config::{self, ZoneConfig};

const CONFIG: &str = r#"
agent_id = "dns-1"

[[zones]]
origin = "example.net."
ns = ["ns1"]
soa_rname = "hostmaster.example.net."
soa_minimum = 30
ttl = 600

[[zones.steered]]
name = "www"
answers = 2

[[zones.steered]]
name = "one.example.net."

[[zones.records]]
name = "ns1"
type = "A"
value = "127.0.0.53"

[[zones.records]]
name = "txt.deep"
type = "TXT"
value = "hello"

[[zones.records]]
name = "multi"
type = "TXT"
value = "first"

[[zones.records]]
name = "multi"
type = "A"
value = "192.0.2.50"

[[zones.records]]
name = "multi"
type = "TXT"
value = "second"

[[zones.records]]
name = "multi"
type = "AAAA"
value = "2001:db8::50"
"#;

/// The agent's config file, of which the core reads the zones.
#[derive(serde::Deserialize)]
struct ConfigFile {
    #[serde(rename = "agent_id")]
    _agent_id: String,
    zones: Vec<ZoneConfig>,
}

fn responder(with_plan: bool) -> Responder {
    let big = format!(
        "{CONFIG}\n[[zones.records]]\nname = \"big\"\ntype = \"TXT\"\nvalue = \"{}\"\n",
        "x".repeat(700)
    );
    let file: ConfigFile = toml::from_str(&big).unwrap();
    let r = Responder::new(zone_config::compile(&file.zones).unwrap(), 1232);
    if with_plan {
        r.swap(Arc::new(Served::new(crate::plan::validate(&sample(1)).unwrap())));
    }
    r
}

fn query(name: &str, rtype: RecordType, ecs: Option<(&str, u8)>) -> Message {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    m.add_query(HQuery::query(Name::from_str(name).unwrap(), rtype));
    if let Some((addr, prefix)) = ecs {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        edns.options_mut()
            .insert(EdnsOption::Subnet(HSubnet::new(addr.parse().unwrap(), prefix, 0)));
        m.set_edns(edns);
    }
    m
}

fn ask_raw(r: &Responder, bytes: &[u8], src: &str, t: Transport) -> Option<(Vec<u8>, Message)> {
    let mut out = Vec::new();
    if !r.respond(bytes, src.parse().unwrap(), t, &mut out) {
        return None;
    }
    let m = Message::from_vec(&out).unwrap_or_else(|e| panic!("our answer does not parse: {e}: {out:?}"));
    assert_eq!(m.metadata.id, u16::from_be_bytes([bytes[0], bytes[1]]));
    assert_eq!(m.metadata.message_type, MessageType::Response);
    Some((out, m))
}

fn ask(r: &Responder, q: &Message, src: &str) -> Message {
    ask_raw(r, &q.to_vec().unwrap(), src, Transport::Udp).unwrap().1
}

fn addrs(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn ecs_scope(m: &Message) -> Option<(u8, u8)> {
    match m.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some((s.source_prefix(), s.scope_prefix())),
        _ => None,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn steered_answers_follow_ecs_then_source_then_default() {
    let r = responder(true);
    // ECS in eu (10.1/16): fra1 0.75 / ams1 0.25, so at most one record (see select).
    let m = ask(
        &r,
        &query("www.example.net.", RecordType::A, Some(("10.1.2.0", 24))),
        "127.0.0.1",
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    let a = addrs(&m);
    assert_eq!(a.len(), 1);
    assert!(a[0] == ip("192.0.2.1") || a[0] == ip("192.0.2.2"), "{a:?}");
    assert_eq!(m.answers[0].ttl, 30);
    assert_eq!(ecs_scope(&m), Some((24, 16)), "scope = the /16 that decided");
    // Source address in us.
    let m = ask(&r, &query("www.example.net.", RecordType::A, None), "10.2.3.4");
    assert_eq!(addrs(&m), vec![ip("192.0.2.3")]);
    assert!(m.edns.is_none());
    // Unmapped source: the default region (us).
    let m = ask(&r, &query("www.example.net.", RecordType::A, None), "203.0.113.9");
    assert_eq!(addrs(&m), vec![ip("192.0.2.3")]);
    // ECS wins over the source; an unmapped ECS gets the default with a small scope.
    let m = ask(
        &r,
        &query("www.example.net.", RecordType::A, Some(("10.2.0.0", 16))),
        "10.1.1.1",
    );
    assert_eq!(addrs(&m), vec![ip("192.0.2.3")]);
    let m = ask(
        &r,
        &query("www.example.net.", RecordType::A, Some(("198.51.100.0", 24))),
        "10.1.1.1",
    );
    assert_eq!(addrs(&m), vec![ip("192.0.2.3")]);
    let (source, scope) = ecs_scope(&m).unwrap();
    assert!(source == 24 && scope <= 8, "scope {scope}");
    // ECS /0 (client opted out): the source decides, and the scope is 0.
    let m = ask(
        &r,
        &query("www.example.net.", RecordType::A, Some(("0.0.0.0", 0))),
        "10.2.3.4",
    );
    assert_eq!(addrs(&m), vec![ip("192.0.2.3")]);
    assert_eq!(ecs_scope(&m), Some((0, 0)));
    // IPv6 ECS in eu's 2001:db8:1::/48; eu has one IPv6 PoP.
    let m = ask(
        &r,
        &query("www.example.net.", RecordType::AAAA, Some(("2001:db8:1:5::", 64))),
        "127.0.0.1",
    );
    assert_eq!(addrs(&m), vec![ip("2001:db8::1")]);
    assert_eq!(ecs_scope(&m), Some((64, 48)));
}

#[test]
fn a_family_without_addresses_is_nodata() {
    let r = responder(true);
    let m = ask(&r, &query("www.example.net.", RecordType::AAAA, None), "10.2.3.4");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities.len(), 1);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(m.authorities[0].ttl, 30, "negative TTL = min(SOA TTL, MINIMUM)");
}

#[test]
fn zone_data_soa_ns_nxdomain_nodata_refused() {
    let r = responder(true);
    let m = ask(&r, &query("example.net.", RecordType::SOA, None), "127.0.0.1");
    assert_eq!(m.answers.len(), 1);
    match &m.answers[0].data {
        RData::SOA(soa) => {
            assert_eq!(soa.mname, Name::from_str("ns1.example.net.").unwrap());
            assert_eq!(soa.minimum, 30);
        }
        other => panic!("{other:?}"),
    }
    let m = ask(&r, &query("EXAMPLE.net.", RecordType::NS, None), "127.0.0.1");
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.additionals.len(), 1, "glue for ns1");
    assert_eq!(m.additionals[0].data, RData::A(Ipv4Addr::new(127, 0, 0, 53).into()));

    let m = ask(&r, &query("nope.example.net.", RecordType::A, None), "127.0.0.1");
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authoritative);
    assert_eq!(m.authorities[0].name, Name::from_str("example.net.").unwrap());

    // NODATA at a steered name, at a static name, and at an empty non-terminal.
    for (name, t) in [
        ("www.example.net.", RecordType::TXT),
        ("txt.deep.example.net.", RecordType::A),
        ("deep.example.net.", RecordType::A),
    ] {
        let m = ask(&r, &query(name, t, None), "127.0.0.1");
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(m.answers.is_empty() && m.authorities.len() == 1, "{name}");
    }
    let m = ask(&r, &query("txt.deep.example.net.", RecordType::TXT, None), "127.0.0.1");
    assert_eq!(m.answers.len(), 1);

    let m = ask(&r, &query("www.example.org.", RecordType::A, None), "127.0.0.1");
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!m.metadata.authoritative);

    let mut chaos = query("version.bind.", RecordType::TXT, None);
    chaos.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(
        ask(&r, &chaos, "127.0.0.1").metadata.response_code,
        ResponseCode::Refused
    );
    let axfr = query("example.net.", RecordType::AXFR, None);
    assert_eq!(
        ask(&r, &axfr, "127.0.0.1").metadata.response_code,
        ResponseCode::Refused
    );
}

#[test]
fn no_plan_means_servfail_for_steered_names_only() {
    let r = responder(false);
    let m = ask(&r, &query("www.example.net.", RecordType::A, None), "10.1.1.1");
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    let m = ask(&r, &query("example.net.", RecordType::SOA, None), "10.1.1.1");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
}

#[test]
fn oversized_udp_answers_are_truncated_and_tcp_carries_them() {
    let r = responder(true);
    let q = query("big.example.net.", RecordType::TXT, None).to_vec().unwrap();
    let (raw, m) = ask_raw(&r, &q, "127.0.0.1", Transport::Udp).unwrap();
    assert!(m.metadata.truncation && m.answers.is_empty());
    assert!(raw.len() <= 512);
    let (_, m) = ask_raw(&r, &q, "127.0.0.1", Transport::Tcp).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 1);
    // With EDNS and a 1232-byte buffer it fits over UDP.
    let mut q = query("big.example.net.", RecordType::TXT, None);
    q.set_edns(Edns::new());
    q.edns.as_mut().unwrap().set_max_payload(1232);
    let m = ask(&r, &q, "127.0.0.1");
    assert!(!m.metadata.truncation && m.answers.len() == 1);
}

#[test]
fn bad_input_gets_formerr_notimp_badvers_or_nothing() {
    let r = responder(true);
    assert!(
        ask_raw(&r, &[1, 2, 3], "127.0.0.1", Transport::Udp).is_none(),
        "no header: dropped"
    );
    let good = query("www.example.net.", RecordType::A, Some(("10.1.2.0", 24)))
        .to_vec()
        .unwrap();
    // Two questions.
    let mut two = good.clone();
    two[5] = 2;
    let (_, m) = ask_raw(&r, &two, "127.0.0.1", Transport::Udp).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // ECS address with bits past the /24: the last byte of the packet is the third
    // address byte; make the prefix /20 instead so 2 (0000_0010) has a bit past it.
    let mut ecs = good.clone();
    let at = ecs.len() - 5;
    assert_eq!(ecs[at], 24, "source prefix byte");
    ecs[at] = 20;
    let (_, m) = ask_raw(&r, &ecs, "127.0.0.1", Transport::Udp).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // A response is never answered.
    let mut resp = good.clone();
    resp[2] |= 0x80;
    assert!(ask_raw(&r, &resp, "127.0.0.1", Transport::Udp).is_none());
    // EDNS version 1: BADVERS (extended rcode 16 = OPT high bits 1, header 0).
    let mut q = query("www.example.net.", RecordType::A, None);
    let mut e = Edns::new();
    e.set_version(1);
    q.set_edns(e);
    let (raw, m) = ask_raw(&r, &q.to_vec().unwrap(), "127.0.0.1", Transport::Udp).unwrap();
    assert_eq!(raw[3] & 0xF, 0);
    assert_eq!(m.edns.as_ref().unwrap().rcode_high(), 1);
    // Query type OPT in the question.
    let q = query("www.example.net.", RecordType::OPT, None);
    assert_eq!(ask(&r, &q, "127.0.0.1").metadata.response_code, ResponseCode::FormErr);
}

#[test]
fn the_question_is_echoed_with_its_case() {
    let r = responder(true);
    let mut q = query("www.example.net.", RecordType::A, None).to_vec().unwrap();
    let at = q.windows(3).position(|w| w == b"www").unwrap();
    q[at..at + 3].copy_from_slice(b"WwW");
    let (raw, m) = ask_raw(&r, &q, "10.2.0.1", Transport::Udp).unwrap();
    assert_eq!(addrs(&m), vec![ip("192.0.2.3")]);
    assert!(raw.windows(3).any(|w| w == b"WwW"));
}

/// The record types in the answer section.
fn answer_types(m: &Message) -> Vec<RecordType> {
    let mut t: Vec<RecordType> = m.answers.iter().map(|r| r.record_type()).collect();
    t.dedup();
    t
}

#[test]
fn any_is_answered_with_one_rrset_only() {
    // RFC 8482: one RRset, never the whole name; over TCP too.
    let r = responder(true);
    for t in [Transport::Udp, Transport::Tcp] {
        let ask_any = |name: &str, src: &str| {
            let q = query(name, RecordType::ANY, None).to_vec().unwrap();
            ask_raw(&r, &q, src, t).unwrap().1
        };
        // The apex holds SOA and NS (with glue): only the SOA.
        let m = ask_any("example.net.", "127.0.0.1");
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer_types(&m), vec![RecordType::SOA], "{t:?}");
        assert_eq!(m.answers.len(), 1);
        assert!(
            m.additionals.is_empty() && m.authorities.is_empty(),
            "no NS glue: {m:?}"
        );
        // Two TXT, an A and an AAAA: the first RRset (both TXT records), nothing else.
        let m = ask_any("multi.example.net.", "127.0.0.1");
        assert_eq!(answer_types(&m), vec![RecordType::TXT], "{t:?}");
        assert_eq!(m.answers.len(), 2);
        // A steered name: its A RRset from the plan.
        let m = ask_any("www.example.net.", "10.2.3.4");
        assert_eq!(addrs(&m), vec![ip("192.0.2.3")]);
        assert_eq!(answer_types(&m), vec![RecordType::A]);
        // An empty non-terminal: NODATA.
        let m = ask_any("deep.example.net.", "127.0.0.1");
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        // A name that does not exist: NXDOMAIN.
        let m = ask_any("nope.example.net.", "127.0.0.1");
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }
    // Every other type still gets all of its RRset.
    let m = ask(&r, &query("multi.example.net.", RecordType::TXT, None), "127.0.0.1");
    assert_eq!(m.answers.len(), 2);
    let m = ask(&r, &query("multi.example.net.", RecordType::AAAA, None), "127.0.0.1");
    assert_eq!(answer_types(&m), vec![RecordType::AAAA]);
}

#[test]
fn an_rrl_slip_keeps_the_question_and_sets_tc_without_records() {
    let r = responder(true);
    let q = query("www.example.net.", RecordType::A, Some(("10.1.2.0", 24)));
    let (mut raw, full) = ask_raw(&r, &q.to_vec().unwrap(), "127.0.0.1", Transport::Udp).unwrap();
    assert!(!full.answers.is_empty() && full.edns.is_some());
    assert!(wire::truncate_response(&mut raw));
    let m = Message::from_vec(&raw).unwrap();
    assert!(m.metadata.truncation);
    assert_eq!(m.metadata.id, 4242);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(m.queries, full.queries);
    assert!(m.answers.is_empty() && m.authorities.is_empty() && m.additionals.is_empty());
    assert!(m.edns.is_none());
    // An answer without a question (FORMERR to two questions) keeps its header only.
    let mut two = q.to_vec().unwrap();
    two[5] = 2;
    let (mut raw, _) = ask_raw(&r, &two, "127.0.0.1", Transport::Udp).unwrap();
    assert!(wire::truncate_response(&mut raw));
    assert_eq!(raw.len(), 12);
    let m = Message::from_vec(&raw).unwrap();
    assert!(m.metadata.truncation && m.queries.is_empty());
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    let mut short = vec![1, 2, 3];
    assert!(!wire::truncate_response(&mut short));
    assert_eq!(short, vec![1, 2, 3]);
}

/// Valid queries the fuzzer mutates.
fn seeds() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for (name, t) in [
        ("www.example.net.", RecordType::A),
        ("www.example.net.", RecordType::AAAA),
        ("example.net.", RecordType::NS),
        ("big.example.net.", RecordType::TXT),
        ("nope.example.net.", RecordType::ANY),
        ("example.org.", RecordType::SOA),
    ] {
        v.push(query(name, t, None).to_vec().unwrap());
        v.push(query(name, t, Some(("10.1.2.0", 24))).to_vec().unwrap());
        v.push(query(name, t, Some(("2001:db8:1::", 56))).to_vec().unwrap());
    }
    v
}

fn check_any(r: &Responder, bytes: &[u8], t: Transport) {
    let mut out = Vec::new();
    if r.respond(bytes, ip("10.1.2.3"), t, &mut out) {
        let m = Message::from_vec(&out).unwrap_or_else(|e| panic!("answer to {bytes:?} does not parse: {e}"));
        assert!(bytes.len() >= 2);
        assert_eq!(m.metadata.id, u16::from_be_bytes([bytes[0], bytes[1]]));
        assert_eq!(m.metadata.message_type, MessageType::Response);
        if t == Transport::Udp {
            assert!(out.len() <= 1232, "UDP answer of {} bytes", out.len());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary bytes: never a panic; any answer parses and carries the query's id.
    #[test]
    fn fuzz_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..700), tcp in any::<bool>()) {
        let r = responder(true);
        check_any(&r, &bytes, if tcp { Transport::Tcp } else { Transport::Udp });
    }

    /// Valid queries with bytes overwritten, cut, or inserted.
    #[test]
    fn fuzz_mutated_queries(
        seed in 0usize..18,
        edits in proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..4), 1..6),
        with_plan in any::<bool>(),
    ) {
        let r = responder(with_plan);
        let mut bytes = seeds()[seed].clone();
        for (at, value, op) in edits {
            let at = usize::from(at) % (bytes.len() + 1);
            match op {
                0 if at < bytes.len() => bytes[at] = value,
                1 => bytes.truncate(at),
                2 => bytes.insert(at, value),
                _ if at < bytes.len() => bytes[at] ^= 1 << (value % 8),
                _ => {}
            }
        }
        check_any(&r, &bytes, Transport::Udp);
        check_any(&r, &bytes, Transport::Tcp);
    }
}
