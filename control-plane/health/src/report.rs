//! What the core hands out: verdicts, events, the PoP × region matrix, the evidence
//! behind a verdict, and counters. Plain data, ordered deterministically (PoPs,
//! regions, probers and endpoints by name).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::hysteresis::Reachability;
use crate::probe::ProbeOutcome;
use crate::time::UnixMillis;

/// The health of one PoP as seen from all regions together.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PopVerdict {
    /// Too few fresh regions to say. Never a reason to withdraw (fail static).
    #[default]
    Unknown,
    Up,
    /// Some regions see it DOWN, not enough for a quorum: steer clients of those
    /// regions away, keep it for the others.
    Degraded {
        down_regions: BTreeSet<String>,
    },
    Down,
}

impl fmt::Display for PopVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PopVerdict::Unknown => f.write_str("UNKNOWN"),
            PopVerdict::Up => f.write_str("UP"),
            PopVerdict::Degraded { down_regions } => {
                let regions: Vec<&str> = down_regions.iter().map(String::as_str).collect();
                write!(f, "DEGRADED({})", regions.join(","))
            }
            PopVerdict::Down => f.write_str("DOWN"),
        }
    }
}

/// A copy of the verdicts and latency estimates as of one moment: what steering
/// computes on, outside the lock that ingest takes. Latencies are dense rows (one
/// slot per PoP of `pops`), so reading a whole region costs no hashing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HealthSnapshot {
    /// By PoP; PoPs of the topology not evaluated yet are absent (UNKNOWN).
    pub verdicts: BTreeMap<String, PopVerdict>,
    /// The PoP names, sorted: the columns of every latency row.
    pub pops: Vec<String>,
    /// By prober region: the EWMA of successful probes' latency to each PoP of
    /// `pops` (same index), `None` where there is none.
    pub latency: BTreeMap<String, Vec<Option<Duration>>>,
}

impl HealthSnapshot {
    /// The verdict of `pop`; UNKNOWN when there is none (missing data is never DOWN).
    pub fn verdict(&self, pop: &str) -> PopVerdict {
        self.verdicts.get(pop).cloned().unwrap_or_default()
    }

    /// The column of `pop` in the latency rows.
    pub fn column(&self, pop: &str) -> Option<usize> {
        self.pops.binary_search_by(|p| p.as_str().cmp(pop)).ok()
    }

    /// The latency estimate from `region` to `pop`, if any.
    pub fn latency_estimate(&self, pop: &str, region: &str) -> Option<Duration> {
        let column = self.column(pop)?;
        self.latency.get(region)?.get(column).copied().flatten()
    }

    /// Sets one estimate, adding the PoP column and the region row as needed (for
    /// building snapshots by hand, e.g. in tests; `HealthState::snapshot` fills rows
    /// directly).
    pub fn set_latency(&mut self, region: &str, pop: &str, latency: Duration) {
        let column = match self.pops.binary_search_by(|p| p.as_str().cmp(pop)) {
            Ok(c) => c,
            Err(c) => {
                self.pops.insert(c, pop.to_string());
                for row in self.latency.values_mut() {
                    row.insert(c, None);
                }
                c
            }
        };
        let width = self.pops.len();
        let row = self
            .latency
            .entry(region.to_string())
            .or_insert_with(|| vec![None; width]);
        row[column] = Some(latency);
    }
}

/// A PoP's current verdict, the rule that decided it, and since when it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictInfo {
    pub verdict: PopVerdict,
    /// Which rule decided, in words, e.g. `quorum: 2 of 3 fresh regions see DOWN (> 50%)`.
    pub rule: String,
    /// When the verdict last changed; `None` while it is still the initial UNKNOWN.
    pub since: Option<UnixMillis>,
}

impl Default for VerdictInfo {
    fn default() -> Self {
        Self {
            verdict: PopVerdict::Unknown,
            rule: "unknown: not evaluated yet".to_string(),
            since: None,
        }
    }
}

/// Something that changed during [`crate::HealthState::evaluate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HealthEvent {
    Verdict {
        at: UnixMillis,
        pop: String,
        old: PopVerdict,
        new: PopVerdict,
        rule: String,
        /// One line per region: what it said and why.
        evidence: Vec<String>,
    },
    /// The region's probers see so many PoPs DOWN, alone, that the region itself is
    /// more likely broken; its votes no longer count.
    RegionSuspect {
        at: UnixMillis,
        region: String,
        down_share: f64,
    },
    RegionRecovered {
        at: UnixMillis,
        region: String,
    },
}

/// What [`crate::HealthState::ingest`] did with an accepted result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestEffect {
    /// A hysteresis state changed: evaluate now for fast failover rather than at
    /// the next tick (once per batch of results, not once per result).
    pub transitioned: bool,
    /// The first failure of this endpoint seen by this prober after a success:
    /// every region should probe the endpoint now (on-demand confirmation). At most
    /// once per endpoint per [`crate::CONFIRMATION_WINDOW`], whoever reported it.
    pub confirm: bool,
}

/// A region currently discounted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SuspectRegion {
    pub region: String,
    pub since: UnixMillis,
    /// Its share of DOWN PoPs when it became suspect.
    pub down_share: f64,
}

/// One row of the PoP × region matrix (`meridianctl health`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PopHealthRow {
    pub pop: String,
    /// As of the last `evaluate`.
    pub verdict: VerdictInfo,
    /// Every region that ever reported, by name; states computed at the `now`
    /// passed to `matrix`.
    pub regions: Vec<RegionCell>,
}

/// What one region says about one PoP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionCell {
    pub region: String,
    pub state: Reachability,
    /// EWMA of successful probe latencies from this region to this PoP.
    #[serde(with = "humantime_serde")]
    pub latency: Option<Duration>,
    /// Age of the newest result from this region for this PoP.
    #[serde(with = "humantime_serde")]
    pub freshest_age: Option<Duration>,
    pub suspect: bool,
}

/// The evidence behind one PoP's verdict (`meridianctl explain POP`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub pop: String,
    pub verdict: VerdictInfo,
    pub regions: Vec<RegionEvidence>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionEvidence {
    pub region: String,
    pub state: Reachability,
    pub suspect: bool,
    /// Whether this region's state took part in the verdict (fresh, known, not suspect).
    pub counted: bool,
    #[serde(with = "humantime_serde")]
    pub latency: Option<Duration>,
    pub probers: Vec<ProberEvidence>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProberEvidence {
    pub prober: String,
    /// DOWN if any fresh endpoint is DOWN, UP if all are fresh and UP.
    pub view: Reachability,
    pub endpoints: Vec<EndpointEvidence>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointEvidence {
    pub endpoint: String,
    pub state: Reachability,
    pub fresh: bool,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    /// The sequential test behind a DOWN: evidence so far, threshold, loss estimates.
    pub evidence: crate::evidence::EvidenceInfo,
    /// Newest first.
    pub recent: Vec<RecentResult>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecentResult {
    pub observed_at: UnixMillis,
    #[serde(with = "humantime_serde")]
    pub age: Duration,
    /// What the prober reported: success, latency, failure class and detail.
    pub outcome: ProbeOutcome,
    /// False when it arrived after a newer result and did not drive the hysteresis.
    pub applied: bool,
}

/// Why a result was rejected, as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    UnknownPop,
    UnknownEndpoint,
    FromTheFuture,
    TooOld,
    Invalid,
}

impl RejectReason {
    pub const ALL: [RejectReason; 5] = [
        RejectReason::UnknownPop,
        RejectReason::UnknownEndpoint,
        RejectReason::FromTheFuture,
        RejectReason::TooOld,
        RejectReason::Invalid,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::UnknownPop => "unknown_pop",
            RejectReason::UnknownEndpoint => "unknown_endpoint",
            RejectReason::FromTheFuture => "from_the_future",
            RejectReason::TooOld => "too_old",
            RejectReason::Invalid => "invalid",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters for the caller to export as metrics. Monotonic over the life of a
/// [`crate::HealthState`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStats {
    /// Accepted results, in order or not.
    pub ingested: u64,
    /// Accepted results not newer than the last applied one for their key.
    pub out_of_order: u64,
    /// Hysteresis state changes.
    pub transitions: u64,
    /// Requests to every region to confirm a failure now.
    pub confirmations: u64,
    /// Rejected results by reason; every reason is present, zero or not.
    pub rejected: BTreeMap<RejectReason, u64>,
}
