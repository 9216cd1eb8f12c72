//! Probe targets as the prober understands them: validated domain values, built
//! from the wire types by the gRPC adapter ([`crate::grpc`]) and never sent back.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::rr::{Name, RecordType};

use crate::scheduler::ScheduleParams;

/// The connect timeout used when an assignment does not give one.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The response timeout used when an assignment does not give one.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest timeout a target may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Identifies a target within one assignment set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey {
    pub pop: String,
    pub endpoint: String,
}

impl std::fmt::Display for TargetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.pop, self.endpoint)
    }
}

/// One target: what to probe, how often and with which timeouts.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    pub key: TargetKey,
    pub schedule: ScheduleParams,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub check: Check,
}

/// The kind of probe.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Http(HttpCheck),
    Tcp(TcpCheck),
    Dns(DnsCheck),
}

impl Check {
    /// A short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Http(c) if c.url.scheme() == "https" => "https",
            Check::Http(_) => "http",
            Check::Tcp(_) => "tcp",
            Check::Dns(_) => "dns",
        }
    }
}

/// An HTTP or HTTPS request and what its answer must look like.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpCheck {
    pub method: reqwest::Method,
    pub url: reqwest::Url,
    /// Sent as the `Host` header. When the URL's host is an IP address, the request
    /// is made to that address but TLS uses this name for SNI and verification.
    pub host_header: Option<String>,
    /// Accepted status codes; empty means 200–399.
    pub expected_status: Vec<u16>,
    pub body_contains: Option<String>,
    pub insecure_skip_verify: bool,
}

impl HttpCheck {
    pub fn status_ok(&self, status: u16) -> bool {
        if self.expected_status.is_empty() {
            (200..400).contains(&status)
        } else {
            self.expected_status.contains(&status)
        }
    }

    /// The expected status set, for failure details.
    pub fn expected_status_text(&self) -> String {
        if self.expected_status.is_empty() {
            "200-399".to_string()
        } else {
            self.expected_status
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
    }
}

/// A TCP connect to `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpCheck {
    pub address: String,
}

/// One DNS query over UDP to one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsCheck {
    pub server: SocketAddr,
    pub name: Name,
    pub record_type: RecordType,
    /// The expected response code (default NOERROR = 0).
    pub expected_rcode: u16,
    /// An answer record whose data must equal this text (case-insensitive, a
    /// trailing dot ignored), e.g. `192.0.2.10` for an A query.
    pub expected_answer: Option<String>,
}

/// The whole desired probe set, as last received from the control plane.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignments {
    pub version: u64,
    pub targets: Vec<TargetSpec>,
    /// Overrides the configured concurrency limit when set.
    pub max_concurrency: Option<usize>,
    /// Overrides the configured batch interval when set.
    pub batch_interval: Option<Duration>,
    /// Where in each interval steady probes start (a fraction), when given.
    pub phase: Option<f64>,
}

/// The DNS response codes by name, for `expected_rcode`.
pub fn parse_rcode(text: &str) -> Option<u16> {
    let t = text.trim();
    if t.is_empty() {
        return Some(0);
    }
    if let Ok(n) = t.parse::<u16>() {
        return (n <= 4095).then_some(n);
    }
    let code = match t.to_ascii_uppercase().as_str() {
        "NOERROR" => 0,
        "FORMERR" => 1,
        "SERVFAIL" => 2,
        "NXDOMAIN" => 3,
        "NOTIMP" => 4,
        "REFUSED" => 5,
        "YXDOMAIN" => 6,
        "YXRRSET" => 7,
        "NXRRSET" => 8,
        "NOTAUTH" => 9,
        "NOTZONE" => 10,
        _ => return None,
    };
    Some(code)
}

/// The conventional name of a response code, for failure details.
pub fn rcode_name(code: u16) -> String {
    let name = match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        other => return format!("RCODE{other}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcodes_parse_by_name_or_number() {
        assert_eq!(parse_rcode(""), Some(0));
        assert_eq!(parse_rcode("nxdomain"), Some(3));
        assert_eq!(parse_rcode(" SERVFAIL "), Some(2));
        assert_eq!(parse_rcode("5"), Some(5));
        assert_eq!(parse_rcode("4096"), None);
        assert_eq!(parse_rcode("NOPE"), None);
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(23), "RCODE23");
    }

    #[test]
    fn the_default_status_set_is_200_to_399() {
        let mut c = HttpCheck {
            method: reqwest::Method::GET,
            url: reqwest::Url::parse("http://127.0.0.1/").unwrap_or_else(|e| panic!("{e}")),
            host_header: None,
            expected_status: vec![],
            body_contains: None,
            insecure_skip_verify: false,
        };
        assert!(c.status_ok(200) && c.status_ok(399) && !c.status_ok(400) && !c.status_ok(199));
        c.expected_status = vec![204];
        assert!(c.status_ok(204) && !c.status_ok(200));
        assert_eq!(c.expected_status_text(), "204");
    }
}
