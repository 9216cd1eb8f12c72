//! The DNS wire format, as far as an authoritative server for a handful of names needs
//! it: parsing one query (header, exactly one question, the EDNS OPT record with its
//! Client Subnet option) and writing a response into a caller-owned buffer.
//!
//! Pure: no I/O, no clock, and no allocation on the query path beyond the output
//! buffer the caller reuses. Every length is checked against the packet before it is
//! read, so no input can make this module panic (the proptest harness in
//! `handler.rs` feeds it arbitrary bytes).
//!
//! Decision: a small hand-written codec rather than `hickory_proto::op::Message`. A
//! query has one shape, and parsing it into hickory's general message (names,
//! record vectors, an option map) and encoding a general message back cost more
//! than the syscalls on the hot path; a hand-written parser also lets us answer
//! exactly as RFC 7871 asks (FORMERR for an ECS option whose address has bits set
//! past its source prefix, or whose length does not match it), which hickory's
//! decoder accepts. The tests check every response we produce with hickory-proto's
//! decoder and the end-to-end tests with `dig`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_IXFR: u16 = 251;
pub const TYPE_AXFR: u16 = 252;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;
/// The EDNS option code of Client Subnet (RFC 7871).
pub const OPTION_ECS: u16 = 8;
/// Longest name on the wire (RFC 1035 section 2.3.4).
pub const MAX_NAME_LEN: usize = 255;

/// Response codes we send (BADVERS is an extended code carried partly in the OPT record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rcode {
    NoError,
    FormErr,
    ServFail,
    NxDomain,
    NotImp,
    Refused,
    BadVers,
}

impl Rcode {
    /// The 12-bit extended response code.
    pub fn code(self) -> u16 {
        match self {
            Rcode::NoError => 0,
            Rcode::FormErr => 1,
            Rcode::ServFail => 2,
            Rcode::NxDomain => 3,
            Rcode::NotImp => 4,
            Rcode::Refused => 5,
            Rcode::BadVers => 16,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rcode::NoError => "NOERROR",
            Rcode::FormErr => "FORMERR",
            Rcode::ServFail => "SERVFAIL",
            Rcode::NxDomain => "NXDOMAIN",
            Rcode::NotImp => "NOTIMP",
            Rcode::Refused => "REFUSED",
            Rcode::BadVers => "BADVERS",
        }
    }

    /// Every code, in the order metrics index them.
    pub const ALL: [Rcode; 7] = [
        Rcode::NoError,
        Rcode::FormErr,
        Rcode::ServFail,
        Rcode::NxDomain,
        Rcode::NotImp,
        Rcode::Refused,
        Rcode::BadVers,
    ];

    pub fn index(self) -> usize {
        match self {
            Rcode::NoError => 0,
            Rcode::FormErr => 1,
            Rcode::ServFail => 2,
            Rcode::NxDomain => 3,
            Rcode::NotImp => 4,
            Rcode::Refused => 5,
            Rcode::BadVers => 6,
        }
    }
}

/// An EDNS Client Subnet option as the client sent it (already validated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSubnet {
    /// The address, zero past `source_prefix` bits.
    pub addr: IpAddr,
    pub source_prefix: u8,
}

/// The EDNS (RFC 6891) part of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    pub udp_size: u16,
    pub version: u8,
    pub dnssec_ok: bool,
    pub ecs: Option<ClientSubnet>,
}

/// A parsed query. Borrowed slices point into the packet.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub id: u16,
    pub opcode: u8,
    pub recursion_desired: bool,
    pub checking_disabled: bool,
    /// The question as it arrived (name, type, class): copied into the response so
    /// the client sees its own spelling (0x20 case randomisation survives).
    pub question: &'a [u8],
    /// The question name in wire form, as sent (not case-folded).
    pub qname: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
}

/// Why a packet could not be parsed as a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not worth an answer: too short for a header, or a response (answering
    /// responses would make us a reflector).
    Drop(&'static str),
    /// The header parsed but the rest is wrong: answer `rcode` with the header alone.
    Reject {
        id: u16,
        opcode: u8,
        recursion_desired: bool,
        rcode: Rcode,
        reason: &'static str,
    },
}

/// Parses one query. Never panics.
pub fn parse_query(p: &[u8]) -> Result<Query<'_>, ParseError> {
    if p.len() < 12 {
        return Err(ParseError::Drop("shorter than a DNS header"));
    }
    let id = be16(p, 0);
    let flags = be16(p, 2);
    if flags & 0x8000 != 0 {
        return Err(ParseError::Drop("a response, not a query"));
    }
    let opcode = ((flags >> 11) & 0xF) as u8;
    let recursion_desired = flags & 0x0100 != 0;
    let reject = |rcode, reason| ParseError::Reject {
        id,
        opcode,
        recursion_desired,
        rcode,
        reason,
    };
    if opcode != 0 {
        return Err(reject(Rcode::NotImp, "only standard queries (opcode QUERY) are served"));
    }
    let (qd, an, ns, ar) = (be16(p, 4), be16(p, 6), be16(p, 8), be16(p, 10));
    if qd != 1 {
        return Err(reject(Rcode::FormErr, "a query must carry exactly one question"));
    }
    let qname_end = name_end(p, 12, false).ok_or_else(|| reject(Rcode::FormErr, "malformed question name"))?;
    if qname_end + 4 > p.len() {
        return Err(reject(Rcode::FormErr, "question cut short"));
    }
    let qtype = be16(p, qname_end);
    let qclass = be16(p, qname_end + 2);
    let mut pos = qname_end + 4;
    for _ in 0..(an as usize + ns as usize) {
        let rr = read_rr(p, pos).ok_or_else(|| reject(Rcode::FormErr, "malformed record"))?;
        pos = rr.end;
    }
    let mut edns = None;
    for _ in 0..ar {
        let rr = read_rr(p, pos).ok_or_else(|| reject(Rcode::FormErr, "malformed additional record"))?;
        if rr.rtype == TYPE_OPT {
            if edns.is_some() {
                return Err(reject(Rcode::FormErr, "more than one OPT record"));
            }
            if rr.name_len != 1 {
                return Err(reject(Rcode::FormErr, "OPT record owner is not the root"));
            }
            edns =
                Some(parse_opt(rr.class, rr.ttl, &p[rr.rdata_start..rr.end]).map_err(|r| reject(Rcode::FormErr, r))?);
        }
        pos = rr.end;
    }
    if pos != p.len() {
        return Err(reject(Rcode::FormErr, "trailing bytes after the last record"));
    }
    Ok(Query {
        id,
        opcode,
        recursion_desired,
        checking_disabled: flags & 0x0010 != 0,
        question: &p[12..qname_end + 4],
        qname: &p[12..qname_end],
        qtype,
        qclass,
        edns,
    })
}

/// Case-folds a wire-form name into `buf`, returning the folded slice.
pub fn fold_name<'b>(name: &[u8], buf: &'b mut [u8; MAX_NAME_LEN]) -> &'b [u8] {
    let n = name.len().min(MAX_NAME_LEN);
    for (dst, src) in buf.iter_mut().zip(&name[..n]) {
        *dst = src.to_ascii_lowercase();
    }
    &buf[..n]
}

/// Whether `suffix` (wire form) is `name` itself or one of its ancestors, i.e. a suffix
/// starting at a label boundary. Returns the offset of the suffix inside `name`.
pub fn suffix_offset(name: &[u8], suffix: &[u8]) -> Option<usize> {
    if suffix.len() > name.len() {
        return None;
    }
    let target = name.len() - suffix.len();
    let mut pos = 0usize;
    while pos <= target {
        if pos == target {
            return (name[pos..] == *suffix).then_some(pos);
        }
        let len = *name.get(pos)? as usize;
        if len == 0 {
            return None;
        }
        pos += 1 + len;
    }
    None
}

/// Parses a presentation-format absolute name ("www.example.net.") into lower-case wire
/// form. Labels are letters, digits, `-` and `_` (and `*` for completeness of the
/// error message); empty labels and over-long names are errors.
pub fn name_from_text(text: &str) -> Result<Vec<u8>, String> {
    let t = text.strip_suffix('.').unwrap_or(text);
    let mut out = Vec::with_capacity(t.len() + 2);
    if !t.is_empty() {
        for label in t.split('.') {
            if label.is_empty() {
                return Err(format!("`{text}` has an empty label"));
            }
            if label.len() > 63 {
                return Err(format!("`{text}`: label `{label}` is longer than 63 bytes"));
            }
            if let Some(c) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            {
                return Err(format!(
                    "`{text}`: `{c}` is not allowed in a name (letters, digits, `-`, `_`)"
                ));
            }
            out.push(label.len() as u8);
            out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    out.push(0);
    if out.len() > MAX_NAME_LEN {
        return Err(format!("`{text}` is longer than 255 bytes on the wire"));
    }
    Ok(out)
}

/// Presentation form of a wire-form name (for logs and errors).
pub fn name_to_text(name: &[u8]) -> String {
    let mut out = String::new();
    let mut pos = 0;
    while let Some(&len) = name.get(pos) {
        if len == 0 {
            break;
        }
        let end = (pos + 1 + len as usize).min(name.len());
        out.push_str(&String::from_utf8_lossy(&name[pos + 1..end]));
        out.push('.');
        pos = end;
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// The owner of a record being written: a compression pointer into the message or
/// a full wire-form name.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    Pointer(u16),
    Name(&'a [u8]),
}

/// Which section records go to; sections are written in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    Answer,
    Authority,
    Additional,
}

/// Writes one response into a reused buffer.
#[derive(Debug)]
pub struct ResponseWriter<'o> {
    out: &'o mut Vec<u8>,
    counts: [u16; 3],
    question_end: usize,
}

/// The response header fields we set.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHeader {
    pub id: u16,
    pub opcode: u8,
    pub authoritative: bool,
    pub recursion_desired: bool,
    pub checking_disabled: bool,
    pub rcode: Rcode,
}

impl<'o> ResponseWriter<'o> {
    /// Starts a response: header (counts filled by [`Self::finish`]) and, when given,
    /// the question exactly as it arrived.
    pub fn new(out: &'o mut Vec<u8>, header: ResponseHeader, question: Option<&[u8]>) -> Self {
        out.clear();
        let mut flags: u16 = 0x8000 | (u16::from(header.opcode & 0xF) << 11);
        if header.authoritative {
            flags |= 0x0400;
        }
        if header.recursion_desired {
            flags |= 0x0100;
        }
        if header.checking_disabled {
            flags |= 0x0010;
        }
        flags |= header.rcode.code() & 0xF;
        out.extend_from_slice(&header.id.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&[0, u8::from(question.is_some()), 0, 0, 0, 0, 0, 0]);
        if let Some(q) = question {
            out.extend_from_slice(q);
        }
        let question_end = out.len();
        ResponseWriter {
            out,
            counts: [0; 3],
            question_end,
        }
    }

    /// Appends a record. `rdata` writes the RDATA; its length is filled in after.
    pub fn record(
        &mut self,
        section: Section,
        owner: Owner<'_>,
        rtype: u16,
        ttl: u32,
        rdata: impl FnOnce(&mut Vec<u8>),
    ) {
        match owner {
            Owner::Pointer(offset) => self.out.extend_from_slice(&(0xC000 | (offset & 0x3FFF)).to_be_bytes()),
            Owner::Name(name) => self.out.extend_from_slice(name),
        }
        self.out.extend_from_slice(&rtype.to_be_bytes());
        self.out.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.out.extend_from_slice(&ttl.to_be_bytes());
        let len_at = self.out.len();
        self.out.extend_from_slice(&[0, 0]);
        rdata(self.out);
        let len = (self.out.len() - len_at - 2).min(usize::from(u16::MAX)) as u16;
        self.out[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
        let i = section as usize;
        self.counts[i] = self.counts[i].saturating_add(1);
    }

    /// Appends the OPT record: our UDP payload size, the extended rcode, DO echoed,
    /// and the client's ECS option with our scope when it sent one.
    pub fn opt(&mut self, udp_size: u16, rcode: Rcode, dnssec_ok: bool, ecs: Option<(ClientSubnet, u8)>) {
        self.out.push(0);
        self.out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        self.out.extend_from_slice(&udp_size.to_be_bytes());
        let ext = (rcode.code() >> 4) as u8;
        self.out
            .extend_from_slice(&[ext, 0, if dnssec_ok { 0x80 } else { 0 }, 0]);
        match ecs {
            None => self.out.extend_from_slice(&[0, 0]),
            Some((subnet, scope)) => {
                let addr_len = usize::from(subnet.source_prefix).div_ceil(8);
                let opt_len = 4 + addr_len as u16;
                self.out.extend_from_slice(&(4 + opt_len).to_be_bytes());
                self.out.extend_from_slice(&OPTION_ECS.to_be_bytes());
                self.out.extend_from_slice(&opt_len.to_be_bytes());
                let (family, octets): (u16, [u8; 16]) = match subnet.addr {
                    IpAddr::V4(a) => {
                        let mut o = [0u8; 16];
                        o[..4].copy_from_slice(&a.octets());
                        (1, o)
                    }
                    IpAddr::V6(a) => (2, a.octets()),
                };
                self.out.extend_from_slice(&family.to_be_bytes());
                self.out.push(subnet.source_prefix);
                self.out.push(scope);
                self.out.extend_from_slice(&octets[..addr_len.min(16)]);
            }
        }
        self.counts[Section::Additional as usize] = self.counts[Section::Additional as usize].saturating_add(1);
    }

    /// Length written so far.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Drops every record (keeping header and question) and sets TC, so the caller
    /// can add the OPT record again and send a truncated answer.
    pub fn truncate_records(&mut self) {
        self.out.truncate(self.question_end);
        self.counts = [0; 3];
        if self.out.len() > 2 {
            self.out[2] |= 0x02;
        }
    }

    /// Fills in the record counts.
    pub fn finish(self) {
        for (i, c) in self.counts.iter().enumerate() {
            let at = 6 + 2 * i;
            if self.out.len() >= at + 2 {
                self.out[at..at + 2].copy_from_slice(&c.to_be_bytes());
            }
        }
    }
}

/// Cuts a response we wrote down to what an RRL slip sends: the header (TC set, no
/// records counted) and the question; the records and the OPT record go. A response
/// without a readable question keeps only its header. Returns `false`, changing
/// nothing, when `response` is shorter than a header.
pub fn truncate_response(response: &mut Vec<u8>) -> bool {
    if response.len() < 12 {
        return false;
    }
    let question_end = match be16(response, 4) {
        1 => name_end(response, 12, false)
            .map(|end| end + 4)
            .filter(|&end| end <= response.len()),
        _ => None,
    };
    let keep = question_end.unwrap_or(12);
    response.truncate(keep);
    response[2] |= 0x02;
    let qdcount = u8::from(question_end.is_some());
    response[4..12].copy_from_slice(&[0, qdcount, 0, 0, 0, 0, 0, 0]);
    true
}

/// Writes SOA RDATA: two names then five 32-bit values.
pub fn soa_rdata(mname: &[u8], rname: &[u8], values: [u32; 5]) -> Vec<u8> {
    let mut out = Vec::with_capacity(mname.len() + rname.len() + 20);
    out.extend_from_slice(mname);
    out.extend_from_slice(rname);
    for v in values {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}

/// Writes TXT RDATA: the text cut into character-strings of at most 255 bytes.
pub fn txt_rdata(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 255 + 1);
    if bytes.is_empty() {
        out.push(0);
    }
    for chunk in bytes.chunks(255) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
    out
}

fn be16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

/// End offset of the name starting at `pos`. Compression pointers end a name; they
/// are refused in the question (nothing before it could be pointed at).
fn name_end(p: &[u8], mut pos: usize, allow_pointer: bool) -> Option<usize> {
    let mut wire_len = 0usize;
    loop {
        let len = *p.get(pos)?;
        match len & 0xC0 {
            0x00 => {
                wire_len += 1 + len as usize;
                if wire_len > MAX_NAME_LEN {
                    return None;
                }
                if len == 0 {
                    return Some(pos + 1);
                }
                pos += 1 + len as usize;
            }
            0xC0 if allow_pointer => {
                p.get(pos + 1)?;
                return Some(pos + 2);
            }
            _ => return None,
        }
    }
}

struct RawRecord {
    name_len: usize,
    rtype: u16,
    class: u16,
    ttl: u32,
    rdata_start: usize,
    end: usize,
}

fn read_rr(p: &[u8], pos: usize) -> Option<RawRecord> {
    let name_stop = name_end(p, pos, true)?;
    if name_stop + 10 > p.len() {
        return None;
    }
    let rtype = be16(p, name_stop);
    let class = be16(p, name_stop + 2);
    let ttl = u32::from_be_bytes([p[name_stop + 4], p[name_stop + 5], p[name_stop + 6], p[name_stop + 7]]);
    let rdlen = be16(p, name_stop + 8) as usize;
    let rdata_start = name_stop + 10;
    let end = rdata_start.checked_add(rdlen)?;
    if end > p.len() {
        return None;
    }
    Some(RawRecord {
        name_len: name_stop - pos,
        rtype,
        class,
        ttl,
        rdata_start,
        end,
    })
}

fn parse_opt(class: u16, ttl: u32, rdata: &[u8]) -> Result<Edns, &'static str> {
    let mut edns = Edns {
        udp_size: class,
        version: ((ttl >> 16) & 0xFF) as u8,
        dnssec_ok: ttl & 0x8000 != 0,
        ecs: None,
    };
    let mut pos = 0usize;
    while pos < rdata.len() {
        if pos + 4 > rdata.len() {
            return Err("EDNS option header cut short");
        }
        let code = be16(rdata, pos);
        let len = be16(rdata, pos + 2) as usize;
        let start = pos + 4;
        let end = start + len;
        if end > rdata.len() {
            return Err("EDNS option longer than the OPT record");
        }
        if code == OPTION_ECS {
            if edns.ecs.is_some() {
                return Err("more than one Client Subnet option");
            }
            edns.ecs = Some(parse_ecs(&rdata[start..end])?);
        }
        pos = end;
    }
    Ok(edns)
}

/// Validates an ECS option as RFC 7871 section 6 and 7.1 ask: known family, source
/// prefix within the family, exactly ceil(source/8) address bytes, no bits set past
/// the source prefix, and SCOPE zero in a query.
pub fn parse_ecs(data: &[u8]) -> Result<ClientSubnet, &'static str> {
    if data.len() < 4 {
        return Err("Client Subnet option shorter than 4 bytes");
    }
    let family = be16(data, 0);
    let source = data[2];
    let scope = data[3];
    let addr = &data[4..];
    let max = match family {
        1 => 32,
        2 => 128,
        _ => return Err("Client Subnet family is neither 1 (IPv4) nor 2 (IPv6)"),
    };
    if source > max {
        return Err("Client Subnet source prefix longer than the address");
    }
    if scope != 0 {
        return Err("Client Subnet scope prefix must be 0 in a query");
    }
    if addr.len() != usize::from(source).div_ceil(8) {
        return Err("Client Subnet address length does not match its source prefix");
    }
    if source & 7 != 0 {
        if let Some(last) = addr.last() {
            let mask = 0xFFu8 >> (source % 8);
            if last & mask != 0 {
                return Err("Client Subnet address has bits set past its source prefix");
            }
        }
    }
    let addr = if family == 1 {
        let mut o = [0u8; 4];
        o[..addr.len()].copy_from_slice(addr);
        IpAddr::V4(Ipv4Addr::from(o))
    } else {
        let mut o = [0u8; 16];
        o[..addr.len()].copy_from_slice(addr);
        IpAddr::V6(Ipv6Addr::from(o))
    };
    Ok(ClientSubnet {
        addr,
        source_prefix: source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name`/`qtype`, with an OPT record carrying `ecs` (raw option bytes).
    pub(crate) fn query(id: u16, name: &str, qtype: u16, edns: Option<(u16, Option<Vec<u8>>)>) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
        p.extend_from_slice(&name_from_text(name).unwrap_or_default());
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&CLASS_IN.to_be_bytes());
        if let Some((size, ecs)) = edns {
            p.push(0);
            p.extend_from_slice(&TYPE_OPT.to_be_bytes());
            p.extend_from_slice(&size.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 0]);
            match ecs {
                None => p.extend_from_slice(&[0, 0]),
                Some(opt) => {
                    p.extend_from_slice(&((opt.len() + 4) as u16).to_be_bytes());
                    p.extend_from_slice(&OPTION_ECS.to_be_bytes());
                    p.extend_from_slice(&(opt.len() as u16).to_be_bytes());
                    p.extend_from_slice(&opt);
                }
            }
        }
        p
    }

    #[test]
    fn parses_a_query_with_ecs() {
        let q = query(
            7,
            "WWW.example.net.",
            TYPE_A,
            Some((1232, Some(vec![0, 1, 24, 0, 10, 1, 2]))),
        );
        let parsed = parse_query(&q).unwrap();
        assert_eq!(parsed.id, 7);
        assert_eq!(parsed.qtype, TYPE_A);
        assert_eq!(name_to_text(parsed.qname), "www.example.net.");
        let edns = parsed.edns.unwrap();
        assert_eq!(edns.udp_size, 1232);
        assert_eq!(
            edns.ecs,
            Some(ClientSubnet {
                addr: "10.1.2.0".parse().unwrap(),
                source_prefix: 24
            })
        );
    }

    #[test]
    fn ecs_validation_follows_rfc_7871() {
        let ok = |b: &[u8]| parse_ecs(b).is_ok();
        assert!(ok(&[0, 1, 0, 0]), "source 0, no address bytes");
        assert!(ok(&[0, 2, 56, 0, 0x20, 1, 0xd, 0xb8, 0, 0, 0]));
        assert!(ok(&[0, 1, 20, 0, 10, 1, 0x10]));
        assert!(!ok(&[0, 1, 20, 0, 10, 1, 0x11]), "bits past the prefix");
        assert!(!ok(&[0, 1, 24, 0, 10, 1]), "address too short");
        assert!(!ok(&[0, 1, 24, 0, 10, 1, 2, 0]), "address too long");
        assert!(!ok(&[0, 1, 33, 0, 10, 1, 2, 3, 4]), "prefix past 32");
        assert!(!ok(&[0, 3, 8, 0, 10]), "unknown family");
        assert!(!ok(&[0, 1, 8, 8, 10]), "scope in a query");
        assert!(!ok(&[0, 1, 8]), "short");
    }

    #[test]
    fn malformed_headers_and_questions() {
        assert!(matches!(parse_query(&[0; 11]), Err(ParseError::Drop(_))));
        let mut resp = query(1, "a.", TYPE_A, None);
        resp[2] |= 0x80;
        assert!(matches!(parse_query(&resp), Err(ParseError::Drop(_))));
        let mut two = query(1, "a.", TYPE_A, None);
        two[5] = 2;
        assert!(matches!(
            parse_query(&two),
            Err(ParseError::Reject {
                rcode: Rcode::FormErr,
                ..
            })
        ));
        let mut notify = query(1, "a.", TYPE_A, None);
        notify[2] |= 4 << 3;
        assert!(matches!(
            parse_query(&notify),
            Err(ParseError::Reject {
                rcode: Rcode::NotImp,
                ..
            })
        ));
        let mut trailing = query(1, "a.", TYPE_A, None);
        trailing.push(0);
        assert!(parse_query(&trailing).is_err());
        let cut = query(1, "abc.", TYPE_A, None);
        assert!(parse_query(&cut[..cut.len() - 1]).is_err());
        let mut pointer = query(1, "a.", TYPE_A, None);
        pointer[12] = 0xC0;
        assert!(parse_query(&pointer).is_err());
    }

    #[test]
    fn names_and_suffixes() {
        let www = name_from_text("www.Example.NET.").unwrap();
        let zone = name_from_text("example.net").unwrap();
        assert_eq!(suffix_offset(&www, &zone), Some(4));
        assert_eq!(suffix_offset(&www, &www), Some(0));
        assert_eq!(suffix_offset(&www, &[0]), Some(www.len() - 1));
        let other = name_from_text("ample.net.").unwrap();
        assert_eq!(suffix_offset(&www, &other), None);
        assert!(name_from_text("a..b.").is_err());
        assert!(name_from_text("a b.").is_err());
        assert_eq!(name_from_text(".").unwrap(), vec![0]);
        assert_eq!(name_to_text(&www), "www.example.net.");
    }
}
