//! The request path: raw query bytes and the client's address in, response bytes
//! out (or nothing, for packets not worth answering). UDP, TCP and the fuzz harness
//! all call [`Responder::respond`]; nothing here touches a socket.
//!
//! The served plan sits in an `ArcSwapOption`: a query takes a wait-free snapshot, a
//! plan swap replaces the pointer, and neither ever waits for the other.

use std::cell::Cell;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use metrics::Counter;

use crate::metrics::{self as m, PathCounters, QueryCounters};
use crate::plan::Plan;
use crate::select::{Family, PlanTable, Rng64, SplitMix64};
use crate::wire::{
    self, ClientSubnet, Owner, ParseError, Query, Rcode, ResponseHeader, ResponseWriter, Section, MAX_NAME_LEN,
};
use crate::zones::{Lookup, NameData, Zone, Zones};

/// How the query arrived: it decides the size limit of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A validated plan ready for queries, with its metric handles.
#[derive(Debug)]
pub struct Served {
    pub plan: Plan,
    pub table: PlanTable,
    counters: QueryCounters,
    /// `[region][pop]`.
    answers: Vec<Vec<Counter>>,
}

impl Served {
    pub fn new(plan: Plan) -> Self {
        let names: Vec<String> = plan.regions.iter().map(|r| r.name.clone()).collect();
        let answers = plan
            .regions
            .iter()
            .map(|r| {
                r.pops
                    .iter()
                    .map(|p| metrics::counter!(m::ANSWERS, "region" => r.name.clone(), "pop" => p.pop.clone()))
                    .collect()
            })
            .collect();
        Served {
            table: PlanTable::new(&plan),
            counters: QueryCounters::new(&names),
            answers,
            plan,
        }
    }

    pub fn version(&self) -> u64 {
        self.plan.version
    }
}

/// Answers queries for the configured zones from the current plan.
#[derive(Debug)]
pub struct Responder {
    zones: Zones,
    plan: ArcSwapOption<Served>,
    max_udp_payload: u16,
    base: QueryCounters,
    path: PathCounters,
}

/// What one answer was, for the metrics.
struct Outcome {
    rcode: Rcode,
    region: Option<usize>,
}

impl Responder {
    pub fn new(zones: Zones, max_udp_payload: u16) -> Self {
        Responder {
            zones,
            plan: ArcSwapOption::empty(),
            max_udp_payload: max_udp_payload.max(512),
            base: QueryCounters::new(&[]),
            path: PathCounters::new(),
        }
    }

    /// Serves `served` from the next query on.
    pub fn swap(&self, served: Arc<Served>) {
        self.plan.store(Some(served));
    }

    /// The plan being served.
    pub fn current(&self) -> Option<Arc<Served>> {
        self.plan.load_full()
    }

    pub fn zones(&self) -> &Zones {
        &self.zones
    }

    /// Answers one packet. Returns `false` when nothing should be sent (no usable
    /// header, or the packet is itself a response); `out` then holds nothing useful.
    pub fn respond(&self, packet: &[u8], src: IpAddr, transport: Transport, out: &mut Vec<u8>) -> bool {
        let q = match wire::parse_query(packet) {
            Ok(q) => q,
            Err(ParseError::Drop(_)) => {
                self.path.dropped.increment(1);
                return false;
            }
            Err(ParseError::Reject {
                id,
                opcode,
                recursion_desired,
                rcode,
                ..
            }) => {
                let header = ResponseHeader {
                    id,
                    opcode,
                    authoritative: false,
                    recursion_desired,
                    checking_disabled: false,
                    rcode,
                };
                ResponseWriter::new(out, header, None).finish();
                match rcode {
                    Rcode::NotImp => self.path.notimp.increment(1),
                    _ => self.path.formerr.increment(1),
                }
                if let Some(c) = self.base.get(None, m::QTYPE_UNPARSED, rcode) {
                    c.increment(1);
                }
                return true;
            }
        };
        let guard = self.plan.load();
        let served = guard.as_deref();
        let outcome = self.answer(&q, src, transport, served, out);
        let counters = served.map_or(&self.base, |s| &s.counters);
        if let Some(c) = counters.get(outcome.region, m::qtype_bucket(q.qtype), outcome.rcode) {
            c.increment(1);
        }
        true
    }

    fn answer(
        &self,
        q: &Query<'_>,
        src: IpAddr,
        transport: Transport,
        served: Option<&Served>,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let limit = match (transport, q.edns) {
            (Transport::Tcp, _) => usize::from(u16::MAX),
            (Transport::Udp, Some(e)) => usize::from(e.udp_size.clamp(512, self.max_udp_payload)),
            (Transport::Udp, None) => 512,
        };
        let ecs = q.edns.and_then(|e| e.ecs);
        if let Some(e) = ecs {
            match e.addr {
                IpAddr::V4(_) => self.path.ecs_v4.increment(1),
                IpAddr::V6(_) => self.path.ecs_v6.increment(1),
            }
        }
        let mut reply = Reply {
            q,
            limit,
            our_udp_size: self.max_udp_payload,
            ecs_scope: 0,
            truncated: &self.path.truncated,
        };
        if q.edns.is_some_and(|e| e.version > 0) {
            return reply.error(out, Rcode::BadVers);
        }
        if q.qclass != wire::CLASS_IN {
            // CHAOS, HESIOD, ANY: we are authoritative for IN data only.
            return reply.error(out, Rcode::Refused);
        }
        match q.qtype {
            wire::TYPE_OPT => return reply.error(out, Rcode::FormErr),
            wire::TYPE_AXFR | wire::TYPE_IXFR => return reply.error(out, Rcode::Refused),
            128..=254 => return reply.error(out, Rcode::NotImp),
            _ => {}
        }
        let mut buf = [0u8; MAX_NAME_LEN];
        let folded = wire::fold_name(q.qname, &mut buf);
        match self.zones.lookup(folded) {
            Lookup::OutOfZone => reply.error(out, Rcode::Refused),
            Lookup::NxDomain { zone, apex_offset } => reply.negative(out, zone, apex_offset, Rcode::NxDomain),
            Lookup::Found {
                zone,
                apex_offset,
                is_apex,
                data,
            } => {
                let found = Found {
                    zone,
                    apex_offset,
                    is_apex,
                    data,
                };
                Self::found(&mut reply, out, &found, src, served)
            }
        }
    }

    fn found(reply: &mut Reply<'_>, out: &mut Vec<u8>, f: &Found<'_>, src: IpAddr, served: Option<&Served>) -> Outcome {
        let (zone, apex_offset, is_apex, data) = (f.zone, f.apex_offset, f.is_apex, f.data);
        let qtype = reply.q.qtype;
        let any = qtype == wire::TYPE_ANY;
        if let Some(steered) = &data.steered {
            if matches!(qtype, wire::TYPE_A | wire::TYPE_AAAA) || any {
                let Some(served) = served else {
                    // No plan at all: say so rather than invent an answer.
                    return reply.error(out, Rcode::ServFail);
                };
                let ecs = reply.q.edns.and_then(|e| e.ecs);
                let (addr, bits, by_ecs) = match ecs {
                    Some(e) if e.source_prefix > 0 => (e.addr, e.source_prefix, true),
                    _ => (src, 128, false),
                };
                let m = served.table.region_for(addr, bits);
                if by_ecs {
                    reply.ecs_scope = m.scope;
                }
                let mut rng = ThreadRng;
                let answers = steered.answers;
                let mut picks = match qtype {
                    wire::TYPE_AAAA => served.table.pick(m.region, Family::V6, answers, &mut rng),
                    _ => served.table.pick(m.region, Family::V4, answers, &mut rng),
                };
                if any && picks.is_empty() {
                    picks = served.table.pick(m.region, Family::V6, answers, &mut rng);
                }
                if picks.is_empty() && !any {
                    let mut o = reply.negative(out, zone, apex_offset, Rcode::NoError);
                    o.region = Some(m.region);
                    return o;
                }
                if picks.is_empty() {
                    // ANY with no address to hand out: one of the name's static
                    // RRsets, as for an unsteered name.
                    let mut o = Self::minimal_any(reply, out, f);
                    o.region = Some(m.region);
                    return o;
                }
                let ttl = steered.ttl.unwrap_or(served.plan.ttl);
                let counters = served.answers.get(m.region);
                let mut w = reply.begin(out, Rcode::NoError, true);
                for p in picks.as_slice() {
                    match p.addr {
                        IpAddr::V4(a) => w.record(Section::Answer, Owner::Pointer(12), wire::TYPE_A, ttl, |o| {
                            o.extend_from_slice(&a.octets())
                        }),
                        IpAddr::V6(a) => w.record(Section::Answer, Owner::Pointer(12), wire::TYPE_AAAA, ttl, |o| {
                            o.extend_from_slice(&a.octets())
                        }),
                    }
                    if let Some(c) = counters.and_then(|c| c.get(p.pop)) {
                        c.increment(1);
                    }
                }
                let mut o = reply.finish(w, Rcode::NoError);
                o.region = Some(m.region);
                return o;
            }
        }
        if any {
            return Self::minimal_any(reply, out, f);
        }
        let apex = Owner::Pointer(12 + apex_offset as u16);
        let mut w = reply.begin(out, Rcode::NoError, true);
        let mut answered = false;
        if is_apex && qtype == wire::TYPE_SOA {
            w.record(Section::Answer, apex, wire::TYPE_SOA, zone.soa_ttl, |o| {
                o.extend_from_slice(&zone.soa_rdata)
            });
            answered = true;
        }
        if is_apex && qtype == wire::TYPE_NS {
            for ns in &zone.ns {
                w.record(Section::Answer, apex, wire::TYPE_NS, zone.ns_ttl, |o| {
                    o.extend_from_slice(ns)
                });
            }
            for ns in &zone.ns {
                for g in zone.glue(ns) {
                    w.record(Section::Additional, Owner::Name(ns), g.rtype, g.ttl, |o| {
                        o.extend_from_slice(&g.rdata)
                    });
                }
            }
            answered = true;
        }
        for r in data.records.iter().filter(|r| r.rtype == qtype) {
            w.record(Section::Answer, Owner::Pointer(12), r.rtype, r.ttl, |o| {
                o.extend_from_slice(&r.rdata)
            });
            answered = true;
        }
        if !answered {
            // The name exists but has no data of this type: NODATA.
            w.record(Section::Authority, apex, wire::TYPE_SOA, zone.negative_ttl, |o| {
                o.extend_from_slice(&zone.soa_rdata)
            });
        }
        reply.finish(w, Rcode::NoError)
    }

    /// RFC 8482: a QTYPE=ANY query gets one RRset, never everything the name holds
    /// (the full set is what makes ANY an amplifier). At the apex the SOA (one
    /// record, and the NS set would bring its glue); elsewhere the name's first
    /// static RRset; a name with no data is NODATA, as for any other type. Steered
    /// names answer ANY with their A (else AAAA) RRset before getting here.
    fn minimal_any(reply: &mut Reply<'_>, out: &mut Vec<u8>, f: &Found<'_>) -> Outcome {
        let (zone, data) = (f.zone, f.data);
        let apex = Owner::Pointer(12 + f.apex_offset as u16);
        let mut w = reply.begin(out, Rcode::NoError, true);
        if f.is_apex {
            w.record(Section::Answer, apex, wire::TYPE_SOA, zone.soa_ttl, |o| {
                o.extend_from_slice(&zone.soa_rdata)
            });
        } else if let Some(rtype) = data.records.first().map(|r| r.rtype) {
            for r in data.records.iter().filter(|r| r.rtype == rtype) {
                w.record(Section::Answer, Owner::Pointer(12), r.rtype, r.ttl, |o| {
                    o.extend_from_slice(&r.rdata)
                });
            }
        } else {
            w.record(Section::Authority, apex, wire::TYPE_SOA, zone.negative_ttl, |o| {
                o.extend_from_slice(&zone.soa_rdata)
            });
        }
        reply.finish(w, Rcode::NoError)
    }
}

/// The looked-up name.
struct Found<'z> {
    zone: &'z Zone,
    apex_offset: usize,
    is_apex: bool,
    data: &'z NameData,
}

/// How to build one response; the bytes go to the caller's buffer.
struct Reply<'a> {
    q: &'a Query<'a>,
    limit: usize,
    our_udp_size: u16,
    /// The ECS scope to echo (0 unless the answer depended on the client subnet).
    ecs_scope: u8,
    truncated: &'a Counter,
}

impl Reply<'_> {
    fn begin<'o>(&self, out: &'o mut Vec<u8>, rcode: Rcode, authoritative: bool) -> ResponseWriter<'o> {
        let header = ResponseHeader {
            id: self.q.id,
            opcode: self.q.opcode,
            authoritative,
            recursion_desired: self.q.recursion_desired,
            checking_disabled: self.q.checking_disabled,
            rcode,
        };
        ResponseWriter::new(out, header, Some(self.q.question))
    }

    fn ecs_echo(&self) -> Option<(ClientSubnet, u8)> {
        let ecs = self.q.edns.and_then(|e| e.ecs)?;
        Some((ecs, self.ecs_scope.min(ecs.source_prefix)))
    }

    /// Adds the OPT record (when the query had one), truncating first if the answer
    /// would not fit, and fills in the counts.
    fn finish(&self, mut w: ResponseWriter<'_>, rcode: Rcode) -> Outcome {
        let ecs = self.ecs_echo();
        let opt_len = match self.q.edns {
            Some(_) => 11 + ecs.map_or(0, |(e, _)| 8 + usize::from(e.source_prefix).div_ceil(8)),
            None => 0,
        };
        if w.len() + opt_len > self.limit {
            w.truncate_records();
            self.truncated.increment(1);
        }
        if let Some(edns) = self.q.edns {
            w.opt(self.our_udp_size, rcode, edns.dnssec_ok, ecs);
        }
        w.finish();
        Outcome { rcode, region: None }
    }

    /// An answer with no records. REFUSED, SERVFAIL and friends are not authoritative.
    fn error(&self, out: &mut Vec<u8>, rcode: Rcode) -> Outcome {
        let w = self.begin(out, rcode, false);
        self.finish(w, rcode)
    }

    /// NXDOMAIN or NODATA: the zone's SOA in the authority section.
    fn negative(&self, out: &mut Vec<u8>, zone: &Zone, apex_offset: usize, rcode: Rcode) -> Outcome {
        let mut w = self.begin(out, rcode, true);
        w.record(
            Section::Authority,
            Owner::Pointer(12 + apex_offset as u16),
            wire::TYPE_SOA,
            zone.negative_ttl,
            |o| o.extend_from_slice(&zone.soa_rdata),
        );
        self.finish(w, rcode)
    }
}

thread_local! {
    static RNG_STATE: Cell<u64> = Cell::new(rand::random());
}

/// A per-thread SplitMix64: no shared state between query threads.
struct ThreadRng;

impl Rng64 for ThreadRng {
    fn next_u64(&mut self) -> u64 {
        RNG_STATE.with(|state| {
            let mut g = SplitMix64(state.get());
            let v = g.next_u64();
            state.set(g.0);
            v
        })
    }
}

#[cfg(test)]
mod tests;
