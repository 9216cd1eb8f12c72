//! The gRPC adapter: the only module that sees `meridian.v1` wire types. It turns
//! assignments into validated domain values (rejecting a bad target alone, never
//! the whole set), turns results into wire batches, and opens authenticated
//! channels to control-plane replicas.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::rr::{Name, RecordType};
use meridian_proto::probe::failure_class_to_wire;
use meridian_proto::v1 as pb;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::report::ProbeRecord;
use crate::scheduler::{self, ScheduleParams};
use crate::target::{self, Assignments, Check, DnsCheck, HttpCheck, TargetKey, TargetSpec, TcpCheck};

/// A ProbeService client that sends the bearer token on every call.
pub type ProbeClient = pb::probe_service_client::ProbeServiceClient<InterceptedService<Channel, AuthInterceptor>>;

/// Adds `authorization: Bearer <token>` to every request when a token is set.
#[derive(Debug, Clone)]
pub struct AuthInterceptor {
    value: Option<MetadataValue<Ascii>>,
}

impl AuthInterceptor {
    /// `None` when the token cannot be a header value (validation rejects such
    /// tokens earlier, so this only guards against misuse).
    pub fn new(token: Option<&str>) -> Option<Self> {
        let value = match token {
            Some(t) => Some(MetadataValue::try_from(format!("Bearer {t}")).ok()?),
            None => None,
        };
        Some(Self { value })
    }
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.value {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// How the prober reaches a replica: its credentials (a bearer token, and the
/// client certificate inside `tls`) and TLS for `https://` endpoints.
#[derive(Debug, Clone)]
pub struct Link {
    pub auth: AuthInterceptor,
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

/// Connects to one replica. HTTP/2 keepalives detect a replica that vanished
/// without closing the connection.
pub async fn connect(endpoint: &str, connect_timeout: Duration, link: &Link) -> Result<ProbeClient, String> {
    let ep = meridian_tls::endpoint(endpoint, link.tls.as_ref())
        .map_err(|e| format!("endpoint {endpoint}: {e}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    let channel = match tokio::time::timeout(connect_timeout + Duration::from_millis(500), ep.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Err(format!(
                "cannot connect to {endpoint}: {}",
                crate::probe::error_chain(&e)
            ))
        }
        Err(_) => {
            return Err(format!(
                "cannot connect to {endpoint}: timed out after {connect_timeout:?}"
            ))
        }
    };
    Ok(pb::probe_service_client::ProbeServiceClient::with_interceptor(
        channel,
        link.auth.clone(),
    ))
}

/// A target the prober refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("target {pop}/{endpoint}: `{field}`: {message}")]
pub struct TargetError {
    pub pop: String,
    pub endpoint: String,
    pub field: &'static str,
    pub message: String,
}

/// Converts an assignment set. Invalid targets (and duplicates of a key already
/// seen) are returned as errors beside the valid ones; they never reject the set.
pub fn assignments_from_pb(msg: pb::ProbeAssignments) -> (Assignments, Vec<TargetError>) {
    let mut targets: Vec<TargetSpec> = Vec::with_capacity(msg.targets.len());
    let mut errors = Vec::new();
    let phase = msg.phase.filter(|p| p.is_finite() && (0.0..=1.0).contains(p));
    for t in msg.targets {
        match target_from_pb(t).map(|mut spec| {
            // The region's phase plus the target's own offset: regions stay apart
            // on each target, and one prober's targets spread over the interval.
            let offset = scheduler::target_offset(&spec.key.pop, &spec.key.endpoint);
            spec.schedule = spec.schedule.with_phase(phase.map(|p| p + offset));
            spec
        }) {
            Ok(spec) if targets.iter().any(|s| s.key == spec.key) => errors.push(TargetError {
                pop: spec.key.pop.clone(),
                endpoint: spec.key.endpoint.clone(),
                field: "endpoint",
                message: "duplicate (pop, endpoint); the first one is used".into(),
            }),
            Ok(spec) => targets.push(spec),
            Err(e) => errors.push(e),
        }
    }
    let max_concurrency = (msg.max_concurrency > 0).then(|| (msg.max_concurrency as usize).min(65_536));
    let batch_interval = msg
        .batch_interval
        .and_then(|d| duration(Some(d)).ok().flatten())
        .filter(|d| !d.is_zero())
        .map(|d| d.clamp(Duration::from_millis(1), Duration::from_secs(60)));
    (
        Assignments {
            version: msg.version,
            targets,
            max_concurrency,
            batch_interval,
            phase,
        },
        errors,
    )
}

fn target_from_pb(t: pb::ProbeTarget) -> Result<TargetSpec, TargetError> {
    let pop = t.pop.clone();
    let endpoint = t.endpoint.clone();
    let err = |field: &'static str, message: String| TargetError {
        pop: pop.clone(),
        endpoint: endpoint.clone(),
        field,
        message,
    };
    meridian_core::ids::validate_id("pop", &t.pop).map_err(|e| err("pop", e.to_string()))?;
    if t.endpoint.is_empty() || t.endpoint.len() > 253 || t.endpoint.chars().any(char::is_control) {
        return Err(err("endpoint", "must be 1..=253 printable characters".into()));
    }
    let dur = |field: &'static str, d: Option<prost_types::Duration>| duration(d).map_err(|m| err(field, m));
    let interval = dur("interval", t.interval)?.unwrap_or(scheduler::DEFAULT_INTERVAL);
    let confirm = dur("confirm_interval", t.confirm_interval)?.unwrap_or(scheduler::DEFAULT_CONFIRM_INTERVAL);
    let timeout =
        |field: &'static str, d: Option<prost_types::Duration>, default: Duration| -> Result<Duration, TargetError> {
            match dur(field, d)? {
                None => Ok(default),
                Some(v) if v > target::MAX_TIMEOUT => {
                    Err(err(field, format!("{v:?} is longer than {:?}", target::MAX_TIMEOUT)))
                }
                Some(v) => Ok(v.max(Duration::from_millis(10))),
            }
        };
    let connect_timeout = timeout("connect_timeout", t.connect_timeout, target::DEFAULT_CONNECT_TIMEOUT)?;
    let response_timeout = timeout("response_timeout", t.response_timeout, target::DEFAULT_RESPONSE_TIMEOUT)?;
    if !(t.jitter.is_finite() && t.jitter >= 0.0) {
        return Err(err("jitter", format!("{} is not a fraction in 0.0..=0.5", t.jitter)));
    }
    let jitter = if t.jitter == 0.0 {
        scheduler::DEFAULT_JITTER
    } else {
        t.jitter
    };
    let rise = if t.rise == 0 { scheduler::DEFAULT_RISE } else { t.rise };
    let fall = if t.fall == 0 { scheduler::DEFAULT_FALL } else { t.fall };
    let schedule = ScheduleParams::new(interval, confirm, rise, fall, jitter);
    let check = match t.check {
        None => return Err(err("check", "no check (http, tcp or dns) given".into())),
        Some(pb::probe_target::Check::Http(h)) => Check::Http(http_from_pb(h).map_err(|(f, m)| err(f, m))?),
        Some(pb::probe_target::Check::Tcp(c)) => Check::Tcp(tcp_from_pb(c).map_err(|(f, m)| err(f, m))?),
        Some(pb::probe_target::Check::Dns(d)) => Check::Dns(dns_from_pb(d).map_err(|(f, m)| err(f, m))?),
    };
    Ok(TargetSpec {
        key: TargetKey {
            pop: t.pop,
            endpoint: t.endpoint,
        },
        schedule,
        connect_timeout,
        response_timeout,
        check,
    })
}

type FieldError = (&'static str, String);

fn http_from_pb(h: pb::HttpCheck) -> Result<HttpCheck, FieldError> {
    let url = reqwest::Url::parse(&h.url).map_err(|e| ("http.url", format!("{:?} is not a URL: {e}", h.url)))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err((
            "http.url",
            format!("{:?}: expected http://host/... or https://host/...", h.url),
        ));
    }
    let method = if h.method.is_empty() { "GET" } else { h.method.as_str() };
    let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| ("http.method", format!("{:?} is not an HTTP method", h.method)))?;
    let host_header = if h.host_header.is_empty() {
        None
    } else {
        reqwest::header::HeaderValue::from_str(&h.host_header).map_err(|_| {
            (
                "http.host_header",
                format!("{:?} is not a valid Host header", h.host_header),
            )
        })?;
        Some(h.host_header)
    };
    let mut expected_status = Vec::with_capacity(h.expected_status.len());
    for s in h.expected_status {
        if !(100..=599).contains(&s) {
            return Err(("http.expected_status", format!("{s} is not an HTTP status")));
        }
        expected_status.push(s as u16);
    }
    Ok(HttpCheck {
        method,
        url,
        host_header,
        expected_status,
        body_contains: (!h.body_contains.is_empty()).then_some(h.body_contains),
        insecure_skip_verify: h.insecure_skip_verify,
    })
}

fn tcp_from_pb(c: pb::TcpCheck) -> Result<TcpCheck, FieldError> {
    let ok = match c.address.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    };
    if !ok {
        return Err(("tcp.address", format!("{:?}: expected host:port", c.address)));
    }
    Ok(TcpCheck { address: c.address })
}

fn dns_from_pb(d: pb::DnsCheck) -> Result<DnsCheck, FieldError> {
    let server = match SocketAddr::from_str(&d.server) {
        Ok(s) => s,
        Err(_) => match std::net::IpAddr::from_str(&d.server) {
            Ok(ip) => SocketAddr::new(ip, 53),
            Err(_) => return Err(("dns.server", format!("{:?}: expected ip:port", d.server))),
        },
    };
    if d.name.is_empty() {
        return Err(("dns.name", "empty".into()));
    }
    let mut name = Name::from_str(&d.name).map_err(|e| ("dns.name", format!("{:?}: {e}", d.name)))?;
    name.set_fqdn(true);
    let record_type = if d.record_type.is_empty() {
        RecordType::A
    } else {
        RecordType::from_str(&d.record_type.to_ascii_uppercase())
            .map_err(|e| ("dns.record_type", format!("{:?}: {e}", d.record_type)))?
    };
    let expected_rcode = target::parse_rcode(&d.expected_rcode).ok_or_else(|| {
        (
            "dns.expected_rcode",
            format!("{:?}: expected a name like NOERROR or a number", d.expected_rcode),
        )
    })?;
    Ok(DnsCheck {
        server,
        name,
        record_type,
        expected_rcode,
        expected_answer: (!d.expected_answer.is_empty()).then_some(d.expected_answer),
    })
}

/// `None` for an absent duration; an error for a negative or malformed one.
fn duration(d: Option<prost_types::Duration>) -> Result<Option<Duration>, String> {
    match d {
        None => Ok(None),
        Some(d) => Duration::try_from(d)
            .map(Some)
            .map_err(|e| format!("invalid duration: {e}")),
    }
}

/// The wire form of one result. The prober id and region go once per batch
/// (`ProbeResultBatch`), not with every result.
pub fn result_to_pb(r: &ProbeRecord) -> pb::ProbeResult {
    pb::ProbeResult {
        prober_id: String::new(),
        region: String::new(),
        pop: r.key.pop.clone(),
        endpoint: r.key.endpoint.clone(),
        observed_at: Some(prost_types::Timestamp::from(r.observed_at)),
        success: r.outcome.success,
        latency: prost_types::Duration::try_from(r.outcome.latency).ok(),
        failure_class: failure_class_to_wire(r.outcome.class),
        detail: r.outcome.detail.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::FailureClass;

    fn http_target(pop: &str, endpoint: &str, url: &str) -> pb::ProbeTarget {
        pb::ProbeTarget {
            pop: pop.into(),
            endpoint: endpoint.into(),
            check: Some(pb::probe_target::Check::Http(pb::HttpCheck {
                url: url.into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn a_bad_target_is_rejected_alone() {
        let mut dns = pb::ProbeTarget {
            pop: "fra1".into(),
            endpoint: "dns".into(),
            check: Some(pb::probe_target::Check::Dns(pb::DnsCheck {
                server: "192.0.2.1".into(),
                name: "example.com".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        dns.interval = Some(prost_types::Duration {
            seconds: 0,
            nanos: 100_000_000,
        });
        let msg = pb::ProbeAssignments {
            phase: Some(0.5),
            version: 7,
            targets: vec![
                http_target("fra1", "web", "https://192.0.2.1/health"),
                http_target("fra1", "web", "https://192.0.2.2/health"),
                http_target("fra1", "bad-url", "ftp://x/"),
                http_target("Not A Pop", "web", "http://x/"),
                pb::ProbeTarget {
                    pop: "ams1".into(),
                    endpoint: "none".into(),
                    ..Default::default()
                },
                pb::ProbeTarget {
                    pop: "ams1".into(),
                    endpoint: "tcp".into(),
                    check: Some(pb::probe_target::Check::Tcp(pb::TcpCheck {
                        address: "192.0.2.1".into(),
                    })),
                    ..Default::default()
                },
                pb::ProbeTarget {
                    pop: "ams1".into(),
                    endpoint: "neg".into(),
                    connect_timeout: Some(prost_types::Duration { seconds: -1, nanos: 0 }),
                    ..http_target("ams1", "neg", "http://x/")
                },
                dns,
            ],
            max_concurrency: 0,
            batch_interval: None,
        };
        let (a, errors) = assignments_from_pb(msg);
        assert_eq!(a.version, 7);
        let keys: Vec<String> = a.targets.iter().map(|t| t.key.to_string()).collect();
        assert_eq!(keys, vec!["fra1/web", "fra1/dns"]);
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            vec!["endpoint", "http.url", "pop", "check", "tcp.address", "connect_timeout"]
        );
        let dns = &a.targets[1];
        assert_eq!(
            dns.schedule.interval(),
            scheduler::MIN_INTERVAL,
            "a too-short interval is clamped"
        );
        match &dns.check {
            Check::Dns(d) => {
                assert_eq!(d.server, SocketAddr::from(([192, 0, 2, 1], 53)));
                assert_eq!(d.name.to_string(), "example.com.");
                assert_eq!((d.record_type, d.expected_rcode), (RecordType::A, 0));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(a.max_concurrency, None);
    }

    #[test]
    fn results_keep_their_timestamp_and_class() {
        let at = std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let r = ProbeRecord {
            prober_id: "p1".into(),
            region: "eu".into(),
            key: TargetKey {
                pop: "fra1".into(),
                endpoint: "web".into(),
            },
            observed_at: at,
            outcome: crate::probe::ProbeOutcome::failed(Duration::from_millis(5), FailureClass::Tls, "bad cert"),
        };
        let p = result_to_pb(&r);
        assert_eq!(
            p.observed_at,
            Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_000_000
            })
        );
        assert_eq!(p.failure_class, pb::FailureClass::Tls as i32);
        assert_eq!(p.detail, "bad cert");
        assert!(!p.success);
        assert_eq!(
            p.latency,
            Some(prost_types::Duration {
                seconds: 0,
                nanos: 5_000_000
            })
        );
    }
}
