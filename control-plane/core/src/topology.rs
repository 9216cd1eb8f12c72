//! The topology: PoPs (capacity, addresses, anycast prefixes, probe endpoints), client
//! regions (demand, client prefixes, latency hints) and the policy, as one declarative
//! TOML document that operators apply (`meridianctl apply -f topology.toml`).
//!
//! Parsing is two steps: serde reads the file's shape (unknown keys rejected), then
//! [`TopologyDoc::validate`] checks every rule and reports **every** error with its
//! path (`pops[3].capacity: must be > 0`), so one apply shows all that is wrong.
//! Endpoints are flat records with a `kind` rather than a serde-tagged enum, because
//! serde cannot combine tagged enums with `deny_unknown_fields`, and per-kind
//! "field required" messages read better anyway.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ids::validate_id;

/// The whole topology document, as written in `topology.toml`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyDoc {
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub pops: Vec<Pop>,
    #[serde(default)]
    pub regions: Vec<ClientRegion>,
}

/// One PoP (edge site).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pop {
    pub id: String,
    /// Where it is: a free-form location or the region it sits in.
    #[serde(default)]
    pub location: String,
    /// Capacity in abstract load units (requests/s, Gbit/s...), the same unit as
    /// client regions' demand.
    pub capacity: f64,
    #[serde(default)]
    pub ipv4: Vec<Ipv4Addr>,
    #[serde(default)]
    pub ipv6: Vec<Ipv6Addr>,
    #[serde(default)]
    pub anycast_prefixes: Vec<IpNet>,
    #[serde(default)]
    pub endpoints: Vec<ProbeEndpoint>,
}

/// What a prober checks at a PoP.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeEndpoint {
    /// Unique within the PoP, e.g. `http` or `edge-tcp`.
    pub name: String,
    pub kind: ProbeKind,
    /// http/https: the URL to fetch.
    pub url: Option<String>,
    /// http/https: the method (default GET).
    pub method: Option<String>,
    /// http/https: a Host header to send instead of the URL's host.
    pub host: Option<String>,
    /// http/https: accepted statuses (default 200–399).
    #[serde(default)]
    pub expected_status: Vec<u16>,
    /// http/https: a substring the body must contain.
    pub body_contains: Option<String>,
    /// https: skip certificate verification (off by default; audited).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// tcp: the address to connect to.
    pub address: Option<SocketAddr>,
    /// dns: the server to query (ip:port).
    pub server: Option<SocketAddr>,
    /// dns: the name to query.
    pub query_name: Option<String>,
    /// dns: the record type (default A).
    pub record_type: Option<String>,
    /// dns: the expected response code (default NOERROR).
    pub expected_rcode: Option<String>,
    /// dns: a substring one answer record must contain.
    pub expected_answer: Option<String>,
    /// Overrides the policy's probe interval for this endpoint.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub response_timeout: Option<Duration>,
}

/// The kinds of probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Http,
    Https,
    Tcp,
    Dns,
}

/// A client region: where demand comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRegion {
    pub id: String,
    /// Demand in the same unit as PoP capacity.
    #[serde(default)]
    pub demand: f64,
    /// Client prefixes mapped to this region (DNS: ECS or source address).
    #[serde(default)]
    pub client_prefixes: Vec<IpNet>,
    /// Fixed latency hints per PoP, used when probers have no measurement.
    #[serde(default, with = "hint_map")]
    pub latency_hints: BTreeMap<String, Duration>,
}

/// Policy: health, probing, steering, slow start and guardrails.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Consecutive successes that bring an endpoint UP.
    pub rise: u32,
    /// Consecutive timeouts or resets that take a clean endpoint DOWN (per prober).
    /// The verdict weighs evidence: one refused connection or HTTP error from a
    /// clean endpoint is enough; an endpoint that has been losing probes needs more
    /// failures in proportion (see `meridian_health::evidence`).
    pub fall: u32,
    /// Normal probe interval.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Re-probe interval while a state change is being confirmed.
    #[serde(with = "humantime_serde")]
    pub confirm_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// Jitter added to each interval, as a fraction of it.
    pub jitter: f64,
    /// A prober's view is fresh while its latest result is younger than this.
    #[serde(with = "humantime_serde")]
    pub freshness: Duration,
    /// A PoP is DOWN only when more than this share of fresh regions say DOWN.
    pub quorum: f64,
    /// Fewer fresh regions than this: the PoP is UNKNOWN (fail static).
    pub min_regions: u32,
    /// A region seeing at least this share of PoPs DOWN (alone) is suspect.
    pub suspect_share: f64,
    /// A region is judged only when it has fresh views of at least this many PoPs.
    pub suspect_min_pops: u32,
    /// Probes in flight at once per prober.
    pub max_concurrency: u32,
    /// DNS answer TTL (used by the DNS agent).
    pub dns_ttl_seconds: u32,
    /// Steering fills each PoP to this share of its capacity before spilling into headroom.
    pub target_utilisation: f64,
    /// Automatic failover may remove at most this share of total capacity at once;
    /// past it, steering fails open (keeps serving) and raises an event.
    pub max_failover_capacity_share: f64,
    /// A new plan is published only when a state changes or a weight moves more than this.
    pub weight_change_threshold: f64,
    /// Whether steering uses the probers' latency measurements (falling back to hints)
    /// or only the topology's hints — for simulations where every PoP is on loopback
    /// and measurements carry no geography.
    pub latency_source: LatencySource,
    /// Latency assumed for (region, PoP) pairs with neither a measurement nor a hint.
    #[serde(with = "humantime_serde")]
    pub default_latency: Duration,
    /// The client region for clients no prefix matches (default: the first region).
    pub default_region: Option<String>,
    /// Failback stages: a PoP coming back gets at most this share of its final weight
    /// per stage (empty: no slow start).
    pub slow_start_stages: Vec<f64>,
    /// How long each slow-start stage bakes before the next.
    #[serde(with = "humantime_serde")]
    pub slow_start_bake: Duration,
    /// The canary wave (issue [8]): agents, by id, that receive a change's plan
    /// first; the rest of the fleet is held on the plan before it until the canary
    /// wave ACKed, baked `canary_bake` and passed its analysis. Empty: no waves.
    /// Urgent plans (a PoP newly DOWN) and rollbacks skip the waves.
    pub canary_agents: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub canary_bake: Duration,
    /// Changes that need a second person's approval before they start (issue [8]):
    /// `drain` (any drain, ladders included), `forced_drain` (a drain past a
    /// guardrail), `set_capacity`. Empty: none.
    pub approval_required: Vec<String>,
}

/// The changes `policy.approval_required` can name.
pub const APPROVABLE: &[&str] = &["drain", "forced_drain", "set_capacity"];

impl Policy {
    /// The policy entry that makes a change of this kind need approval, if any
    /// (`forced` drains match `forced_drain` as well as `drain`).
    pub fn approval_rule(&self, kind: &str, forced: bool) -> Option<String> {
        let wanted = |k: &str| self.approval_required.iter().any(|r| r == k);
        if kind == "drain" && forced && wanted("forced_drain") {
            return Some("forced_drain".into());
        }
        wanted(kind).then(|| kind.to_string())
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            rise: 2,
            fall: 3,
            probe_interval: Duration::from_secs(1),
            confirm_interval: Duration::from_millis(100),
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(800),
            jitter: 0.1,
            freshness: Duration::from_secs(5),
            quorum: 0.5,
            min_regions: 2,
            suspect_share: 0.5,
            suspect_min_pops: 3,
            max_concurrency: 256,
            dns_ttl_seconds: 20,
            target_utilisation: 0.8,
            max_failover_capacity_share: 0.5,
            weight_change_threshold: 0.05,
            latency_source: LatencySource::Measured,
            default_latency: Duration::from_millis(300),
            default_region: None,
            slow_start_stages: vec![0.1, 0.5, 1.0],
            slow_start_bake: Duration::from_secs(10),
            canary_agents: Vec::new(),
            canary_bake: Duration::from_secs(10),
            approval_required: Vec::new(),
        }
    }
}

/// Where steering's latencies come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatencySource {
    /// Probers' measurements per (region, PoP), else the topology's hints.
    #[default]
    Measured,
    /// Only the topology's hints.
    Hints,
}

/// One thing wrong with a topology, at a path like `pops[3].capacity`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every error found in a topology (never empty).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid topology ({} error{}):\n  {}", .0.len(), if .0.len() == 1 { "" } else { "s" }, .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  "))]
pub struct TopologyErrors(pub Vec<FieldError>);

impl TopologyDoc {
    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, TopologyErrors> {
        let doc: TopologyDoc = toml::from_str(text).map_err(|e| {
            TopologyErrors(vec![FieldError {
                path: "(file)".into(),
                message: e.to_string().trim_end().to_string(),
            }])
        })?;
        doc.validate()
    }

    /// Checks every rule; returns the document unchanged or every error found.
    pub fn validate(self) -> Result<Self, TopologyErrors> {
        let mut errs = Errors::default();
        self.policy.check(&mut errs);
        let mut pop_ids = BTreeSet::new();
        for (i, pop) in self.pops.iter().enumerate() {
            let at = format!("pops[{i}]");
            if let Err(e) = validate_id("pop", &pop.id) {
                errs.add(format!("{at}.id"), e.to_string());
            } else if !pop_ids.insert(pop.id.as_str()) {
                errs.add(format!("{at}.id"), format!("duplicate PoP id `{}`", pop.id));
            }
            if !(pop.capacity.is_finite() && pop.capacity > 0.0) {
                errs.add(format!("{at}.capacity"), format!("must be > 0, got {}", pop.capacity));
            }
            if pop.ipv4.is_empty() && pop.ipv6.is_empty() {
                errs.add(
                    format!("{at}.ipv4"),
                    "a PoP needs at least one service address (ipv4 or ipv6)",
                );
            }
            if pop.endpoints.is_empty() {
                errs.add(
                    format!("{at}.endpoints"),
                    "a PoP needs at least one probe endpoint, or its health is always unknown",
                );
            }
            let mut names = BTreeSet::new();
            for (j, ep) in pop.endpoints.iter().enumerate() {
                let at = format!("{at}.endpoints[{j}]");
                if let Err(e) = validate_id("endpoint", &ep.name) {
                    errs.add(format!("{at}.name"), e.to_string());
                } else if !names.insert(ep.name.as_str()) {
                    errs.add(
                        format!("{at}.name"),
                        format!("duplicate endpoint name `{}` in PoP `{}`", ep.name, pop.id),
                    );
                }
                ep.check(&at, &mut errs);
            }
        }
        let mut region_ids = BTreeSet::new();
        let mut prefixes: BTreeMap<IpNet, String> = BTreeMap::new();
        for (i, region) in self.regions.iter().enumerate() {
            let at = format!("regions[{i}]");
            if let Err(e) = validate_id("region", &region.id) {
                errs.add(format!("{at}.id"), e.to_string());
            } else if !region_ids.insert(region.id.as_str()) {
                errs.add(format!("{at}.id"), format!("duplicate region id `{}`", region.id));
            }
            if !(region.demand.is_finite() && region.demand >= 0.0) {
                errs.add(format!("{at}.demand"), format!("must be >= 0, got {}", region.demand));
            }
            for (j, prefix) in region.client_prefixes.iter().enumerate() {
                if let Some(other) = prefixes.insert(prefix.trunc(), region.id.clone()) {
                    errs.add(
                        format!("{at}.client_prefixes[{j}]"),
                        format!("{prefix} is already mapped to region `{other}`"),
                    );
                }
            }
            for pop in region.latency_hints.keys() {
                if !self.pops.iter().any(|p| &p.id == pop) {
                    errs.add(format!("{at}.latency_hints.{pop}"), format!("unknown PoP `{pop}`"));
                }
            }
        }
        if let Some(d) = &self.policy.default_region {
            if !self.regions.iter().any(|r| &r.id == d) {
                errs.add("policy.default_region", format!("unknown region `{d}`"));
            }
        }
        errs.finish(self)
    }

    /// Looks up a PoP.
    pub fn pop(&self, id: &str) -> Option<&Pop> {
        self.pops.iter().find(|p| p.id == id)
    }

    /// A human-readable diff from `old` to `self`, one line per change, for
    /// `apply --dry-run`. Empty when nothing changed.
    pub fn diff_from(&self, old: &TopologyDoc) -> Vec<String> {
        let mut out = Vec::new();
        if self.policy != old.policy {
            out.push(format!("~ policy: {}", describe_changes(&old.policy, &self.policy)));
        }
        diff_named(&mut out, "pop", &old.pops, &self.pops, |p| &p.id);
        diff_named(&mut out, "region", &old.regions, &self.regions, |r| &r.id);
        out
    }
}

impl Policy {
    /// The slow-start (failback) policy.
    pub fn slow_start(&self) -> crate::slow_start::SlowStartPolicy {
        crate::slow_start::SlowStartPolicy {
            stages: self.slow_start_stages.clone(),
            bake: self.slow_start_bake,
        }
    }

    fn check(&self, errs: &mut Errors) {
        if self.rise == 0 || self.rise > 20 {
            errs.add("policy.rise", format!("must be between 1 and 20, got {}", self.rise));
        }
        if self.fall == 0 || self.fall > 20 {
            errs.add("policy.fall", format!("must be between 1 and 20, got {}", self.fall));
        }
        let min = Duration::from_millis(250);
        if self.probe_interval < min {
            errs.add(
                "policy.probe_interval",
                format!("must be at least 250ms, got {:?}", self.probe_interval),
            );
        }
        if self.confirm_interval < Duration::from_millis(50) || self.confirm_interval > self.probe_interval {
            errs.add("policy.confirm_interval", "must be between 50ms and probe_interval");
        }
        if self.connect_timeout.is_zero() || self.response_timeout.is_zero() {
            errs.add("policy.connect_timeout", "timeouts must be > 0");
        }
        if !(0.0..=0.5).contains(&self.jitter) {
            errs.add(
                "policy.jitter",
                format!("must be between 0.0 and 0.5, got {}", self.jitter),
            );
        }
        if self.freshness < self.probe_interval * 2 {
            errs.add(
                "policy.freshness",
                "must be at least twice probe_interval, or healthy PoPs flap to UNKNOWN",
            );
        }
        if !(0.0..1.0).contains(&self.quorum) {
            errs.add("policy.quorum", format!("must be in [0.0, 1.0), got {}", self.quorum));
        }
        if self.min_regions == 0 {
            errs.add("policy.min_regions", "must be at least 1");
        }
        if !(self.suspect_share > 0.0 && self.suspect_share <= 1.0) {
            errs.add(
                "policy.suspect_share",
                format!("must be in (0.0, 1.0], got {}", self.suspect_share),
            );
        }
        if self.max_concurrency == 0 {
            errs.add("policy.max_concurrency", "must be at least 1");
        }
        if !(self.target_utilisation > 0.0 && self.target_utilisation <= 1.0) {
            errs.add(
                "policy.target_utilisation",
                format!("must be in (0.0, 1.0], got {}", self.target_utilisation),
            );
        }
        if !(0.0..=1.0).contains(&self.max_failover_capacity_share) {
            errs.add(
                "policy.max_failover_capacity_share",
                format!("must be in [0.0, 1.0], got {}", self.max_failover_capacity_share),
            );
        }
        if !(0.0..1.0).contains(&self.weight_change_threshold) {
            errs.add(
                "policy.weight_change_threshold",
                format!("must be in [0.0, 1.0), got {}", self.weight_change_threshold),
            );
        }
        let mut last = 0.0;
        for (i, f) in self.slow_start_stages.iter().enumerate() {
            if !(*f > last && *f <= 1.0) {
                errs.add(
                    format!("policy.slow_start_stages[{i}]"),
                    format!("stages must increase within (0.0, 1.0], got {f}"),
                );
            }
            last = *f;
        }
        if self.slow_start_bake < Duration::from_millis(100) {
            errs.add("policy.slow_start_bake", "must be at least 100ms");
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, agent) in self.canary_agents.iter().enumerate() {
            if let Err(e) = crate::ids::validate_id("agent", agent) {
                errs.add(format!("policy.canary_agents[{i}]"), e.to_string());
            } else if !seen.insert(agent.as_str()) {
                errs.add(
                    format!("policy.canary_agents[{i}]"),
                    format!("`{agent}` is listed twice"),
                );
            }
        }
        for (i, kind) in self.approval_required.iter().enumerate() {
            if !APPROVABLE.contains(&kind.as_str()) {
                errs.add(
                    format!("policy.approval_required[{i}]"),
                    format!("`{kind}` is not one of {}", APPROVABLE.join(", ")),
                );
            }
        }
        if self.canary_bake < Duration::from_millis(100) || self.canary_bake > Duration::from_secs(24 * 3600) {
            errs.add("policy.canary_bake", "must be between 100ms and 24h");
        }
        if self.dns_ttl_seconds == 0 || self.dns_ttl_seconds > 86_400 {
            errs.add("policy.dns_ttl_seconds", "must be between 1 and 86400");
        }
    }
}

impl ProbeEndpoint {
    fn check(&self, at: &str, errs: &mut Errors) {
        let need = |errs: &mut Errors, field: &str, present: bool| {
            if !present {
                errs.add(
                    format!("{at}.{field}"),
                    format!("required for kind {:?}", self.kind).to_lowercase(),
                );
            }
        };
        match self.kind {
            ProbeKind::Http | ProbeKind::Https => {
                need(errs, "url", self.url.is_some());
                if let Some(url) = &self.url {
                    let scheme = if self.kind == ProbeKind::Http {
                        "http://"
                    } else {
                        "https://"
                    };
                    if !url.starts_with(scheme) || url.len() <= scheme.len() {
                        errs.add(format!("{at}.url"), format!("`{url}` must start with {scheme}"));
                    }
                }
                for (k, code) in self.expected_status.iter().enumerate() {
                    if !(100..=599).contains(code) {
                        errs.add(
                            format!("{at}.expected_status[{k}]"),
                            format!("{code} is not an HTTP status"),
                        );
                    }
                }
                if let Some(m) = &self.method {
                    if !matches!(m.as_str(), "GET" | "HEAD" | "POST" | "OPTIONS") {
                        errs.add(
                            format!("{at}.method"),
                            format!("`{m}` is not one of GET, HEAD, POST, OPTIONS"),
                        );
                    }
                }
            }
            ProbeKind::Tcp => need(errs, "address", self.address.is_some()),
            ProbeKind::Dns => {
                need(errs, "server", self.server.is_some());
                need(errs, "query_name", self.query_name.is_some());
                if let Some(t) = &self.record_type {
                    if !matches!(t.as_str(), "A" | "AAAA" | "CNAME" | "TXT" | "NS" | "SOA" | "MX" | "SRV") {
                        errs.add(
                            format!("{at}.record_type"),
                            format!("`{t}` is not a supported record type"),
                        );
                    }
                }
                if let Some(r) = &self.expected_rcode {
                    if !matches!(
                        r.as_str(),
                        "NOERROR" | "NXDOMAIN" | "SERVFAIL" | "REFUSED" | "FORMERR" | "NOTIMP"
                    ) {
                        errs.add(format!("{at}.expected_rcode"), format!("`{r}` is not a DNS rcode name"));
                    }
                }
            }
        }
        for (field, d) in [
            ("interval", self.interval),
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
        ] {
            if let Some(d) = d {
                if d.is_zero() || (field == "interval" && d < Duration::from_millis(250)) {
                    errs.add(format!("{at}.{field}"), format!("{d:?} is too small"));
                }
            }
        }
    }
}

/// All service addresses of a PoP.
impl Pop {
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ipv4
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(self.ipv6.iter().map(|a| IpAddr::V6(*a)))
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn finish<T>(self, value: T) -> Result<T, TopologyErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(TopologyErrors(self.0))
        }
    }
}

fn diff_named<T: PartialEq + Serialize>(
    out: &mut Vec<String>,
    what: &str,
    old: &[T],
    new: &[T],
    id: impl Fn(&T) -> &String,
) {
    for n in new {
        match old.iter().find(|o| id(o) == id(n)) {
            None => out.push(format!("+ {what} {}", id(n))),
            Some(o) if o != n => out.push(format!("~ {what} {}: {}", id(n), describe_changes(o, n))),
            Some(_) => {}
        }
    }
    for o in old {
        if !new.iter().any(|n| id(n) == id(o)) {
            out.push(format!("- {what} {}", id(o)));
        }
    }
}

/// Names the top-level fields that differ between two values of the same type.
fn describe_changes<T: Serialize>(old: &T, new: &T) -> String {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return "changed".into();
    };
    let changed: Vec<String> = b
        .iter()
        .filter(|(k, v)| a.get(*k) != Some(v))
        .map(|(k, v)| match a.get(k) {
            Some(old) if !old.is_array() && !old.is_object() && !v.is_array() && !v.is_object() => {
                format!("{k} {old} → {v}")
            }
            _ => format!("{k} changed"),
        })
        .collect();
    if changed.is_empty() {
        "changed".into()
    } else {
        changed.join(", ")
    }
}

/// `latency_hints = { fra1 = "20ms" }` with humantime values.
mod hint_map {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(map: &BTreeMap<String, Duration>, s: S) -> Result<S::Ok, S::Error> {
        let text: BTreeMap<&String, String> = map
            .iter()
            .map(|(k, v)| (k, humantime_serde::re::humantime::format_duration(*v).to_string()))
            .collect();
        text.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Duration>, D::Error> {
        let text = BTreeMap::<String, String>::deserialize(d)?;
        text.into_iter()
            .map(|(k, v)| {
                humantime_serde::re::humantime::parse_duration(&v)
                    .map(|d| (k.clone(), d))
                    .map_err(|e| serde::de::Error::custom(format!("latency hint for `{k}`: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[policy]
rise = 2
fall = 2

[[pops]]
id = "fra1"
location = "eu-central"
capacity = 1000
ipv4 = ["127.0.0.11"]
anycast_prefixes = ["192.0.2.0/24"]
[[pops.endpoints]]
name = "http"
kind = "http"
url = "http://127.0.0.11:8080/health"
expected_status = [200]
[[pops.endpoints]]
name = "tcp"
kind = "tcp"
address = "127.0.0.11:443"

[[pops]]
id = "iad1"
capacity = 500
ipv6 = ["::1"]
[[pops.endpoints]]
name = "dns"
kind = "dns"
server = "127.0.0.12:53"
query_name = "example.net"

[[regions]]
id = "eu-west"
demand = 300
client_prefixes = ["10.1.0.0/16"]
latency_hints = { fra1 = "20ms" }
"#;

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../../deploy/config/topology.example.toml");
        let doc = TopologyDoc::from_toml(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(doc.pops.len(), 3);
    }

    #[test]
    fn a_good_topology_parses() {
        let doc = TopologyDoc::from_toml(GOOD).unwrap();
        assert_eq!(doc.pops.len(), 2);
        assert_eq!(doc.regions[0].latency_hints["fra1"], Duration::from_millis(20));
        assert_eq!(doc.pop("iad1").unwrap().addresses().count(), 1);
    }

    #[test]
    fn every_error_is_listed_with_its_path() {
        let bad = GOOD
            .replace("capacity = 500", "capacity = 0")
            .replace("address = \"127.0.0.11:443\"", "")
            .replace("fra1 = \"20ms\"", "nope = \"20ms\"")
            .replace("fall = 2", "fall = 0");
        let err = TopologyDoc::from_toml(&bad).unwrap_err();
        let text = err.to_string();
        for want in [
            "pops[1].capacity: must be > 0",
            "pops[0].endpoints[1].address: required for kind tcp",
            "regions[0].latency_hints.nope: unknown PoP `nope`",
            "policy.fall: must be between 1 and 20",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert_eq!(err.0.len(), 4, "{text}");
    }

    #[test]
    fn duplicates_and_bad_ids_are_rejected() {
        let bad = GOOD.replace("id = \"iad1\"", "id = \"fra1\"");
        assert!(TopologyDoc::from_toml(&bad)
            .unwrap_err()
            .to_string()
            .contains("pops[1].id: duplicate PoP id `fra1`"));
        let bad = GOOD.replace("id = \"eu-west\"", "id = \"EU West\"");
        assert!(TopologyDoc::from_toml(&bad)
            .unwrap_err()
            .to_string()
            .contains("regions[0].id"));
    }

    #[test]
    fn unknown_keys_and_types_fail_with_the_line() {
        let bad = GOOD.replace("capacity = 1000", "capacity = 1000\ncapacty = 3");
        let text = TopologyDoc::from_toml(&bad).unwrap_err().to_string();
        assert!(text.contains("capacty") && text.contains("line"), "{text}");
        let bad = GOOD.replace("ipv4 = [\"127.0.0.11\"]", "ipv4 = [\"::1\"]");
        assert!(TopologyDoc::from_toml(&bad).is_err());
    }

    #[test]
    fn diff_names_what_changed() {
        let old = TopologyDoc::from_toml(GOOD).unwrap();
        let mut new = old.clone();
        assert!(new.diff_from(&old).is_empty());
        new.pops[0].capacity = 2000.0;
        new.pops.remove(1);
        new.policy.fall = 3;
        let diff = new.diff_from(&old);
        assert!(
            diff.contains(&"~ pop fra1: capacity 1000.0 → 2000.0".to_string()),
            "{diff:?}"
        );
        assert!(diff.contains(&"- pop iad1".to_string()), "{diff:?}");
        assert!(diff.iter().any(|l| l.starts_with("~ policy: fall 2 → 3")), "{diff:?}");
    }
}
