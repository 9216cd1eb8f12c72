//! [`HealthState`]: ingest results, evaluate verdicts, answer queries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use meridian_core::ids::validate_id;

use crate::evidence::EvidenceInfo;
use crate::hysteresis::{Applied, Reachability, Recent, Thresholds, Track};
use crate::policy::{HealthPolicy, PolicyError};
use crate::probe::{FailureClass, ProbeOutcome, ProbeReport, ReportRef};
use crate::rejection::Rejection;
use crate::report::{
    EndpointEvidence, Explanation, HealthEvent, HealthSnapshot, HealthStats, IngestEffect, PopHealthRow, PopVerdict,
    ProberEvidence, RecentResult, RegionCell, RegionEvidence, RejectReason, SuspectRegion, VerdictInfo,
};
use crate::time::UnixMillis;
use crate::topology::HealthTopology;

/// How long after asking every region to confirm an endpoint's failure the next
/// first failure of it asks again: one request per endpoint per incident, not one per
/// region and failure.
pub const CONFIRMATION_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// The health view of one control-plane replica: soft state, rebuilt from probe
/// results after a restart (every PoP starts UNKNOWN).
#[derive(Debug)]
pub struct HealthState {
    policy: HealthPolicy,
    /// By PoP name (the topology's `BTreeMap` order), so output is sorted for free.
    pops: Vec<PopSlot>,
    pop_index: HashMap<String, usize>,
    /// In order of first appearance; `region_order` sorts them by name.
    regions: Vec<RegionSlot>,
    region_order: Vec<usize>,
    region_index: HashMap<String, RegionEntry>,
    /// A vantage is one prober in one region. A prober that moves to another region
    /// is a new vantage; the old one goes stale.
    vantages: Vec<Vantage>,
    counters: Counters,
    /// `evidence::threshold(policy.fall)`, computed when the policy is set.
    down_at: f64,
}

impl HealthState {
    /// Starts with every PoP UNKNOWN and no results.
    pub fn new(topology: HealthTopology, policy: HealthPolicy) -> Result<Self, PolicyError> {
        let policy = policy.validate()?;
        let down_at = crate::evidence::threshold(policy.fall);
        let mut state = Self {
            policy,
            pops: Vec::new(),
            pop_index: HashMap::new(),
            regions: Vec::new(),
            region_order: Vec::new(),
            region_index: HashMap::new(),
            vantages: Vec::new(),
            counters: Counters::default(),
            down_at,
        };
        state.set_topology(topology);
        Ok(state)
    }

    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    /// Replaces the policy. Hysteresis states are kept (new thresholds apply from the
    /// next result); histories are trimmed to the new length.
    pub fn set_policy(&mut self, policy: HealthPolicy) -> Result<(), PolicyError> {
        self.policy = policy.validate()?;
        self.down_at = crate::evidence::threshold(self.policy.fall);
        let history = self.policy.history;
        for pop in &mut self.pops {
            // Quorum and min_regions appear in the wording.
            pop.rule_inputs = None;
            for tracks in pop.views.iter_mut().flatten() {
                tracks.iter_mut().for_each(|t| t.truncate_history(history));
            }
        }
        Ok(())
    }

    /// Replaces the topology. State for PoPs and endpoints that remain is kept;
    /// removed ones are dropped with their results; new ones start UNKNOWN.
    pub fn set_topology(&mut self, topology: HealthTopology) {
        let mut old: HashMap<String, PopSlot> = self.pops.drain(..).map(|p| (p.name.clone(), p)).collect();
        self.pops = topology
            .pops
            .into_iter()
            .map(|(name, endpoints)| match old.remove(&name) {
                Some(slot) => slot.with_endpoints(endpoints),
                None => PopSlot::new(name, endpoints),
            })
            .collect();
        self.pop_index = self.pops.iter().enumerate().map(|(i, p)| (p.name.clone(), i)).collect();
    }

    /// Takes one probe result. Cheap: four hash lookups and a few counters, no
    /// evaluation. When the result changed a hysteresis state the effect says so,
    /// and the caller should [`evaluate`](Self::evaluate) soon.
    pub fn ingest(&mut self, report: ProbeReport, now: UnixMillis) -> Result<IngestEffect, Rejection> {
        self.ingest_ref(report.as_ref(), now)
    }

    /// As [`ingest`](Self::ingest), from borrowed parts: the ingest path of a
    /// server takes them straight from the decoded batch, with no string copied per
    /// result.
    pub fn ingest_ref(&mut self, report: ReportRef<'_>, now: UnixMillis) -> Result<IngestEffect, Rejection> {
        match self.try_ingest(report, now) {
            Ok(effect) => {
                self.counters.ingested += 1;
                self.counters.transitions += u64::from(effect.transitioned);
                Ok(effect)
            }
            Err(rejection) => {
                self.counters.rejected[rejection.reason() as usize] += 1;
                Err(rejection)
            }
        }
    }

    /// A prober's probe of `pop`/`endpoint` is late beyond its usual latency (no
    /// result yet): whether every region should be asked to probe it now. Shares the
    /// once-per-[`CONFIRMATION_WINDOW`] gate with first failures. Unknown PoPs and
    /// endpoints are rejected like results.
    pub fn suspect(&mut self, pop: &str, endpoint: &str, now: UnixMillis) -> Result<bool, Rejection> {
        let Some(&p) = self.pop_index.get(pop) else {
            return Err(Rejection::UnknownPop { pop: pop.to_string() });
        };
        let slot = &mut self.pops[p];
        let Some(&e) = slot.endpoint_index.get(endpoint) else {
            return Err(Rejection::UnknownEndpoint {
                pop: pop.to_string(),
                endpoint: endpoint.to_string(),
            });
        };
        Ok(confirmation_due(
            &mut slot.confirm_requested[e],
            now,
            &mut self.counters.confirmations,
        ))
    }

    /// Recomputes every region's judgement and every PoP's verdict at `now`, and
    /// returns what changed: region events first (by region), then verdict changes
    /// (by PoP).
    pub fn evaluate(&mut self, now: UnixMillis) -> Vec<HealthEvent> {
        let mut events = Vec::new();
        let states: Vec<Vec<RegionTally>> = self.pops.iter().map(|pop| self.tally(pop, now)).collect();
        self.judge_regions(&states, now, &mut events);
        for (pop_idx, tallies) in states.iter().enumerate() {
            let decision = self.decide(tallies);
            let slot = &self.pops[pop_idx];
            if decision.verdict == slot.verdict.verdict {
                // Same verdict: refresh the rule's wording only if its inputs moved
                // (formatting 200 rules on every evaluation would double its cost).
                if slot.rule_inputs.as_ref() != Some(&decision.inputs) {
                    let rule = self.rule(&decision);
                    let slot = &mut self.pops[pop_idx];
                    slot.verdict.rule = rule;
                    slot.rule_inputs = Some(decision.inputs);
                }
                continue;
            }
            let rule = self.rule(&decision);
            let evidence = self.evidence(slot, tallies, now);
            let Decision { verdict, inputs } = decision;
            let slot = &mut self.pops[pop_idx];
            slot.rule_inputs = Some(inputs);
            let old = std::mem::replace(
                &mut slot.verdict,
                VerdictInfo {
                    verdict: verdict.clone(),
                    rule: rule.clone(),
                    since: Some(now),
                },
            );
            events.push(HealthEvent::Verdict {
                at: now,
                pop: slot.name.clone(),
                old: old.verdict,
                new: verdict,
                rule,
                evidence,
            });
        }
        events
    }

    /// The verdict of `pop` as of the last [`evaluate`](Self::evaluate).
    pub fn verdict(&self, pop: &str) -> Option<&VerdictInfo> {
        self.pop_index.get(pop).map(|&i| &self.pops[i].verdict)
    }

    /// All verdicts by PoP name.
    pub fn verdicts(&self) -> impl Iterator<Item = (&str, &VerdictInfo)> {
        self.pops.iter().map(|p| (p.name.as_str(), &p.verdict))
    }

    /// The PoP × region matrix: verdicts as of the last evaluation, region cells
    /// computed at `now`.
    pub fn matrix(&self, now: UnixMillis) -> Vec<PopHealthRow> {
        self.pops
            .iter()
            .map(|pop| {
                let tallies = self.tally(pop, now);
                let regions = self
                    .region_order
                    .iter()
                    .map(|&r| {
                        let seen = pop.per_region.get(r);
                        RegionCell {
                            region: self.regions[r].name.clone(),
                            state: tallies[r].state(),
                            latency: seen.and_then(PopRegion::latency),
                            freshest_age: seen.and_then(|s| s.freshest).map(|t| t.age_at(now)),
                            suspect: self.regions[r].suspect.is_some(),
                        }
                    })
                    .collect();
                PopHealthRow {
                    pop: pop.name.clone(),
                    verdict: pop.verdict.clone(),
                    regions,
                }
            })
            .collect()
    }

    /// The evidence behind `pop`'s verdict: per region, per prober, per endpoint the
    /// hysteresis state, consecutive counts and recent results (newest first).
    pub fn explain(&self, pop: &str, now: UnixMillis) -> Option<Explanation> {
        let slot = &self.pops[*self.pop_index.get(pop)?];
        let tallies = self.tally(slot, now);
        let freshness = self.policy.freshness;
        let mut regions = Vec::new();
        for &r in &self.region_order {
            let mut probers: Vec<(&str, &[Track])> = slot
                .views
                .iter()
                .enumerate()
                .filter_map(|(v, tracks)| Some((v, tracks.as_deref()?)))
                .filter(|(v, _)| self.vantages[*v].region == r)
                .map(|(v, tracks)| (self.vantages[v].prober.as_str(), tracks))
                .collect();
            if probers.is_empty() {
                continue;
            }
            probers.sort_by_key(|(name, _)| *name);
            let probers = probers
                .into_iter()
                .map(|(prober, tracks)| ProberEvidence {
                    prober: prober.to_string(),
                    view: prober_view(tracks, now, freshness).unwrap_or_default(),
                    endpoints: slot
                        .endpoints
                        .iter()
                        .zip(tracks)
                        .map(|(endpoint, t)| EndpointEvidence {
                            endpoint: endpoint.clone(),
                            state: t.state,
                            fresh: t.is_fresh(now, freshness),
                            consecutive_successes: t.successes,
                            consecutive_failures: t.failures,
                            evidence: EvidenceInfo::of(&t.evidence, self.policy.fall),
                            recent: t
                                .recent
                                .iter()
                                .rev()
                                .map(|x| RecentResult {
                                    observed_at: x.observed_at,
                                    age: x.observed_at.age_at(now),
                                    outcome: ProbeOutcome {
                                        success: x.success,
                                        latency: x.latency,
                                        class: x.class,
                                        detail: if x.success {
                                            String::new()
                                        } else {
                                            t.failure_detail_at(x.observed_at).unwrap_or_default().to_string()
                                        },
                                    },
                                    applied: x.applied,
                                })
                                .collect(),
                        })
                        .collect(),
                })
                .collect();
            let state = tallies[r].state();
            let suspect = self.regions[r].suspect.is_some();
            regions.push(RegionEvidence {
                region: self.regions[r].name.clone(),
                state,
                suspect,
                counted: !suspect && state != Reachability::Unknown,
                latency: slot.per_region.get(r).and_then(PopRegion::latency),
                probers,
            });
        }
        Some(Explanation {
            pop: slot.name.clone(),
            verdict: slot.verdict.clone(),
            regions,
        })
    }

    /// Regions whose votes are currently discounted, by name.
    pub fn suspect_regions(&self) -> Vec<SuspectRegion> {
        self.region_order
            .iter()
            .filter_map(|&r| {
                let slot = &self.regions[r];
                slot.suspect.map(|s| SuspectRegion {
                    region: slot.name.clone(),
                    since: s.since,
                    down_share: s.down_share,
                })
            })
            .collect()
    }

    /// The latency estimate from `region` to `pop` (EWMA of successful probes), if any.
    pub fn latency_estimate(&self, pop: &str, region: &str) -> Option<Duration> {
        let pop = &self.pops[*self.pop_index.get(pop)?];
        pop.per_region.get(self.region_index.get(region)?.idx)?.latency()
    }

    /// What steering reads, copied out so the caller can release the lock before it
    /// computes: every PoP's verdict and every (region, PoP) latency estimate.
    /// O(PoPs × prober regions); no evaluation happens here.
    pub fn snapshot(&self) -> HealthSnapshot {
        // `self.pops` is sorted by name, which is the snapshot's column order.
        let mut snapshot = HealthSnapshot {
            verdicts: BTreeMap::new(),
            pops: self.pops.iter().map(|p| p.name.clone()).collect(),
            latency: BTreeMap::new(),
        };
        for pop in &self.pops {
            snapshot.verdicts.insert(pop.name.clone(), pop.verdict.verdict.clone());
        }
        for (name, entry) in &self.region_index {
            let row: Vec<Option<Duration>> = self
                .pops
                .iter()
                .map(|pop| pop.per_region.get(entry.idx).and_then(PopRegion::latency))
                .collect();
            if row.iter().any(Option::is_some) {
                snapshot.latency.insert(name.clone(), row);
            }
        }
        snapshot
    }

    pub fn stats(&self) -> HealthStats {
        HealthStats {
            ingested: self.counters.ingested,
            out_of_order: self.counters.out_of_order,
            transitions: self.counters.transitions,
            confirmations: self.counters.confirmations,
            rejected: RejectReason::ALL
                .iter()
                .map(|&r| (r, self.counters.rejected[r as usize]))
                .collect(),
        }
    }
}

/// The once-per-[`CONFIRMATION_WINDOW`] gate of one endpoint's confirmation
/// requests: whether to ask now (then `last` and `count` move).
fn confirmation_due(last: &mut Option<UnixMillis>, now: UnixMillis, count: &mut u64) -> bool {
    let due = last.is_none_or(|t| t.age_at(now) >= CONFIRMATION_WINDOW);
    if due {
        *last = Some(now);
        *count += 1;
    }
    due
}

// ---------------------------------------------------------------------------------
// Internals.

#[derive(Debug)]
struct PopSlot {
    name: String,
    /// Sorted; a track's index in a view is its endpoint's index here.
    endpoints: Vec<String>,
    endpoint_index: HashMap<String, usize>,
    /// By vantage index: that prober's tracks, one per endpoint, once it reported.
    views: Vec<Option<Box<[Track]>>>,
    /// By region index.
    per_region: Vec<PopRegion>,
    verdict: VerdictInfo,
    /// What `verdict.rule` was worded from; `None` forces a rewording.
    rule_inputs: Option<RuleInputs>,
    /// By endpoint index: when every region was last asked to confirm a failure.
    confirm_requested: Vec<Option<UnixMillis>>,
}

impl PopSlot {
    fn new(name: String, endpoints: BTreeSet<String>) -> Self {
        let endpoints: Vec<String> = endpoints.into_iter().collect();
        let endpoint_index = endpoints.iter().enumerate().map(|(i, e)| (e.clone(), i)).collect();
        Self {
            name,
            confirm_requested: vec![None; endpoints.len()],
            endpoints,
            endpoint_index,
            views: Vec::new(),
            per_region: Vec::new(),
            verdict: VerdictInfo::default(),
            rule_inputs: None,
        }
    }

    /// The same PoP with a new endpoint set: tracks of kept endpoints move over.
    fn with_endpoints(self, endpoints: BTreeSet<String>) -> Self {
        let mut next = Self::new(self.name, endpoints);
        let old_index = self.endpoint_index;
        next.views = self
            .views
            .into_iter()
            .map(|view| {
                let mut old_tracks = view?.into_vec();
                let tracks: Box<[Track]> = next
                    .endpoints
                    .iter()
                    .map(|e| {
                        old_index
                            .get(e)
                            .map(|&i| std::mem::take(&mut old_tracks[i]))
                            .unwrap_or_default()
                    })
                    .collect();
                // A view of only new endpoints holds no results: drop it.
                tracks.iter().any(|t| t.last_applied.is_some()).then_some(tracks)
            })
            .collect();
        next.per_region = self.per_region;
        next.verdict = self.verdict;
        next
    }
}

/// A PoP's verdict and what its rule is worded from.
#[derive(Debug)]
struct Decision {
    verdict: PopVerdict,
    inputs: RuleInputs,
}

/// Together with the verdict and the policy, these determine the rule's wording.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RuleInputs {
    known: usize,
    down: usize,
    /// Region indexes, in name order.
    suspects: Vec<usize>,
}

/// Per (PoP, region): latency estimate and the newest result.
#[derive(Clone, Copy, Debug, Default)]
struct PopRegion {
    latency_ewma_ns: Option<f64>,
    freshest: Option<UnixMillis>,
}

impl PopRegion {
    fn latency(&self) -> Option<Duration> {
        // The estimate is an average of finite, non-negative samples.
        self.latency_ewma_ns.map(|ns| Duration::from_nanos(ns as u64))
    }
}

#[derive(Debug)]
struct RegionSlot {
    name: String,
    suspect: Option<Suspicion>,
}

#[derive(Clone, Copy, Debug)]
struct Suspicion {
    since: UnixMillis,
    down_share: f64,
}

#[derive(Debug)]
struct RegionEntry {
    idx: usize,
    probers: HashMap<String, usize>,
}

#[derive(Debug)]
struct Vantage {
    region: usize,
    prober: String,
}

#[derive(Debug, Default)]
struct Counters {
    ingested: u64,
    out_of_order: u64,
    transitions: u64,
    confirmations: u64,
    rejected: [u64; RejectReason::ALL.len()],
}

/// How a region's fresh probers see one PoP.
#[derive(Clone, Copy, Debug, Default)]
struct RegionTally {
    up: u32,
    down: u32,
    unknown: u32,
}

impl RegionTally {
    /// DOWN or UP when more than half of the probers with a known view agree.
    fn state(&self) -> Reachability {
        let known = self.up + self.down;
        if self.down * 2 > known {
            Reachability::Down
        } else if self.up * 2 > known {
            Reachability::Up
        } else {
            Reachability::Unknown
        }
    }
}

/// A prober's view of a PoP from its endpoint tracks: `None` if no endpoint is
/// fresh; DOWN if any fresh endpoint is DOWN; UP if every endpoint is fresh and UP.
fn prober_view(tracks: &[Track], now: UnixMillis, freshness: Duration) -> Option<Reachability> {
    let mut any_fresh = false;
    let mut all_up = true;
    for track in tracks {
        match track.fresh_state(now, freshness) {
            Some(Reachability::Down) => return Some(Reachability::Down),
            Some(Reachability::Up) => any_fresh = true,
            Some(Reachability::Unknown) => {
                any_fresh = true;
                all_up = false;
            }
            None => all_up = false,
        }
    }
    match (any_fresh, all_up) {
        (false, _) => None,
        (true, true) => Some(Reachability::Up),
        (true, false) => Some(Reachability::Unknown),
    }
}

impl HealthState {
    fn try_ingest(&mut self, o: ReportRef<'_>, now: UnixMillis) -> Result<IngestEffect, Rejection> {
        for (what, id) in [
            ("prober", o.prober),
            ("region", o.region),
            ("pop", o.pop),
            ("endpoint", o.endpoint),
        ] {
            if id.is_empty() {
                return Err(Rejection::Invalid(format!("empty {what} id")));
            }
        }
        if !o.outcome.is_consistent() {
            return Err(Rejection::Invalid(format!(
                "success={} with failure class `{}`: a failure needs a class and a success has none",
                o.outcome.success, o.outcome.class
            )));
        }
        let skew = o.observed_at.ahead_of(now);
        if skew > self.policy.max_future_skew {
            return Err(Rejection::FromTheFuture {
                observed_at: o.observed_at,
                skew,
                max: self.policy.max_future_skew,
            });
        }
        let age = o.observed_at.age_at(now);
        if age > self.policy.max_age {
            return Err(Rejection::TooOld {
                observed_at: o.observed_at,
                age,
                max: self.policy.max_age,
            });
        }
        let Some(&p) = self.pop_index.get(o.pop) else {
            return Err(Rejection::UnknownPop { pop: o.pop.to_string() });
        };
        let Some(&e) = self.pops[p].endpoint_index.get(o.endpoint) else {
            return Err(Rejection::UnknownEndpoint {
                pop: o.pop.to_string(),
                endpoint: o.endpoint.to_string(),
            });
        };
        let vantage = self.vantage(o.region, o.prober)?;
        let region = self.vantages[vantage].region;
        let thresholds = Thresholds {
            rise: self.policy.rise,
            down_at: self.down_at,
            gap: self.policy.freshness,
            history: self.policy.history,
        };
        let pop = &mut self.pops[p];
        if pop.views.len() <= vantage {
            pop.views.resize_with(vantage + 1, || None);
        }
        let endpoints = pop.endpoints.len();
        // Whether another vantage point sees this endpoint DOWN: then a short run of
        // failures this success ends was an outage, not loss. Looked at only when it
        // matters (a success ending a run), to keep the hot path to lookups.
        let ends_run = o.outcome.success
            && pop.views[vantage]
                .as_ref()
                .is_some_and(|t| t[e].failures > 0 && t[e].failures <= crate::evidence::MAX_LOSS_RUN);
        let others_down = ends_run
            && pop
                .views
                .iter()
                .enumerate()
                .any(|(v, t)| v != vantage && t.as_ref().is_some_and(|t| t[e].state == Reachability::Down));
        let tracks = pop.views[vantage].get_or_insert_with(|| (0..endpoints).map(|_| Track::default()).collect());
        // `e` came from this PoP's endpoint index, so it is within `tracks`.
        let (success, latency) = (o.outcome.success, o.outcome.latency);
        let recent = Recent::new(o.observed_at, o.outcome);
        if !success {
            tracks[e].note_failure_detail(o.observed_at, &o.outcome.detail);
        }
        // The first failure after a success (or at start) of a view that is not DOWN.
        let first_failure = !success && tracks[e].failures == 0 && tracks[e].state != Reachability::Down;
        match tracks[e].record_during(recent, thresholds, others_down) {
            Applied::OutOfOrder => {
                self.counters.out_of_order += 1;
                Ok(IngestEffect::default())
            }
            Applied::InOrder { transitioned } => {
                let confirm = first_failure
                    && confirmation_due(&mut pop.confirm_requested[e], now, &mut self.counters.confirmations);
                if pop.per_region.len() <= region {
                    pop.per_region.resize_with(region + 1, PopRegion::default);
                }
                let seen = &mut pop.per_region[region];
                seen.freshest = seen.freshest.max(Some(o.observed_at));
                if success {
                    let sample = latency.as_nanos() as f64;
                    let alpha = self.policy.latency_alpha;
                    seen.latency_ewma_ns = Some(match seen.latency_ewma_ns {
                        Some(est) => alpha * sample + (1.0 - alpha) * est,
                        None => sample,
                    });
                }
                Ok(IngestEffect { transitioned, confirm })
            }
        }
    }

    /// The vantage index of (`region`, `prober`), registering it on first sight. Ids
    /// are validated only then, keeping the hot path to lookups.
    fn vantage(&mut self, region: &str, prober: &str) -> Result<usize, Rejection> {
        if let Some(&v) = self
            .region_index
            .get(region)
            .and_then(|entry| entry.probers.get(prober))
        {
            return Ok(v);
        }
        validate_id("region", region).map_err(|e| Rejection::Invalid(e.to_string()))?;
        validate_id("prober", prober).map_err(|e| Rejection::Invalid(e.to_string()))?;
        let next_region = self.regions.len();
        let entry = self
            .region_index
            .entry(region.to_string())
            .or_insert_with(|| RegionEntry {
                idx: next_region,
                probers: HashMap::new(),
            });
        if entry.idx == next_region {
            self.regions.push(RegionSlot {
                name: region.to_string(),
                suspect: None,
            });
            self.region_order.push(next_region);
            let regions = &self.regions;
            self.region_order
                .sort_by(|&a, &b| regions[a].name.cmp(&regions[b].name));
        }
        let v = self.vantages.len();
        entry.probers.insert(prober.to_string(), v);
        self.vantages.push(Vantage {
            region: entry.idx,
            prober: prober.to_string(),
        });
        Ok(v)
    }

    /// Per region (by index), how its fresh probers see `pop` at `now`.
    fn tally(&self, pop: &PopSlot, now: UnixMillis) -> Vec<RegionTally> {
        let mut tallies = vec![RegionTally::default(); self.regions.len()];
        for (v, tracks) in pop.views.iter().enumerate() {
            let Some(tracks) = tracks else { continue };
            let tally = &mut tallies[self.vantages[v].region];
            match prober_view(tracks, now, self.policy.freshness) {
                Some(Reachability::Up) => tally.up += 1,
                Some(Reachability::Down) => tally.down += 1,
                Some(Reachability::Unknown) => tally.unknown += 1,
                None => {}
            }
        }
        tallies
    }

    /// Judges the probers: a region that alone sees a large share of PoPs DOWN is
    /// suspect; one whose share falls below half the threshold, or whose view the
    /// other regions come to share (a real outage), recovers.
    fn judge_regions(&mut self, states: &[Vec<RegionTally>], now: UnixMillis, events: &mut Vec<HealthEvent>) {
        let min_pops = self.policy.suspect_min_pops;
        let threshold = self.policy.suspect_share;
        // Share of DOWN among the PoPs this region has a known state for, if it
        // knows enough PoPs to be judged.
        let shares: Vec<Option<f64>> = (0..self.regions.len())
            .map(|r| {
                let (mut known, mut down) = (0usize, 0usize);
                for pop in states {
                    match pop[r].state() {
                        Reachability::Down => {
                            known += 1;
                            down += 1;
                        }
                        Reachability::Up => known += 1,
                        Reachability::Unknown => {}
                    }
                }
                (known >= min_pops && known > 0).then(|| down as f64 / known as f64)
            })
            .collect();
        // Judge against the state before this round, so the outcome does not depend
        // on the order regions are looked at.
        let was_suspect: Vec<bool> = self.regions.iter().map(|r| r.suspect.is_some()).collect();
        for &r in &self.region_order {
            let Some(share) = shares[r] else { continue };
            let mut others: Vec<f64> = (0..self.regions.len())
                .filter(|&o| o != r && !was_suspect[o])
                .filter_map(|o| shares[o])
                .collect();
            // With nobody to compare against, a region cannot be told apart from a
            // real outage: leave it as it is.
            let corroborated = lower_median(&mut others).map(|m| m >= threshold);
            let slot = &mut self.regions[r];
            match (was_suspect[r], corroborated) {
                (false, Some(false)) if share >= threshold => {
                    slot.suspect = Some(Suspicion {
                        since: now,
                        down_share: share,
                    });
                    events.push(HealthEvent::RegionSuspect {
                        at: now,
                        region: slot.name.clone(),
                        down_share: share,
                    });
                }
                (true, corroborated) if share < threshold / 2.0 || corroborated == Some(true) => {
                    slot.suspect = None;
                    events.push(HealthEvent::RegionRecovered {
                        at: now,
                        region: slot.name.clone(),
                    });
                }
                _ => {}
            }
        }
    }

    /// The verdict for one PoP from its region tallies.
    fn decide(&self, tallies: &[RegionTally]) -> Decision {
        let mut known = 0usize;
        let mut down_regions = BTreeSet::new();
        let mut suspects = Vec::new();
        for &r in &self.region_order {
            let state = tallies[r].state();
            if state == Reachability::Unknown {
                continue;
            }
            if self.regions[r].suspect.is_some() {
                suspects.push(r);
                continue;
            }
            known += 1;
            if state == Reachability::Down {
                down_regions.insert(self.regions[r].name.clone());
            }
        }
        let down = down_regions.len();
        let verdict = if known < self.policy.min_regions {
            PopVerdict::Unknown
        } else if down as f64 > self.policy.quorum * known as f64 {
            PopVerdict::Down
        } else if down > 0 {
            PopVerdict::Degraded { down_regions }
        } else {
            PopVerdict::Up
        };
        Decision {
            verdict,
            inputs: RuleInputs { known, down, suspects },
        }
    }

    /// The rule that decided, in words.
    fn rule(&self, decision: &Decision) -> String {
        let RuleInputs {
            known,
            down,
            ref suspects,
        } = decision.inputs;
        let quorum = percent(self.policy.quorum);
        match &decision.verdict {
            PopVerdict::Unknown => {
                let min = self.policy.min_regions;
                let mut rule = format!(
                    "unknown: {known} fresh {}, need {min}",
                    plural(known, "region", "regions")
                );
                if !suspects.is_empty() {
                    let names: Vec<&str> = suspects.iter().map(|&r| self.regions[r].name.as_str()).collect();
                    rule.push_str(&format!(" ({} suspect, not counted)", names.join(", ")));
                }
                rule
            }
            PopVerdict::Down => {
                format!("quorum: {down} of {known} fresh regions see DOWN (> {quorum})")
            }
            PopVerdict::Degraded { down_regions } => {
                let names: Vec<&str> = down_regions.iter().map(String::as_str).collect();
                format!(
                    "degraded: DOWN from {} only ({down} of {known} fresh regions, DOWN needs > {quorum})",
                    names.join(", ")
                )
            }
            PopVerdict::Up => format!("up: {known} of {known} fresh regions see UP"),
        }
    }

    /// One line per region that reported on this PoP: its state, whether it
    /// counted, and each prober's view with the failing endpoints' latest class.
    fn evidence(&self, pop: &PopSlot, tallies: &[RegionTally], now: UnixMillis) -> Vec<String> {
        let freshness = self.policy.freshness;
        let mut lines = Vec::new();
        for &r in &self.region_order {
            let mut probers: Vec<String> = pop
                .views
                .iter()
                .enumerate()
                .filter_map(|(v, tracks)| Some((v, tracks.as_deref()?)))
                .filter(|(v, _)| self.vantages[*v].region == r)
                .map(|(v, tracks)| {
                    let view = match prober_view(tracks, now, freshness) {
                        Some(view) => view.to_string(),
                        None => "stale".to_string(),
                    };
                    let failing: Vec<String> = pop
                        .endpoints
                        .iter()
                        .zip(tracks)
                        .filter(|(_, t)| t.fresh_state(now, freshness) == Some(Reachability::Down))
                        .map(|(e, t)| format!("{e}: {}", t.latest().map_or(FailureClass::Other, |x| x.class)))
                        .collect();
                    let prober = &self.vantages[v].prober;
                    if failing.is_empty() {
                        format!("{prober} {view}")
                    } else {
                        format!("{prober} {view} [{}]", failing.join(", "))
                    }
                })
                .collect();
            if probers.is_empty() {
                continue;
            }
            probers.sort();
            let region = &self.regions[r];
            let note = if region.suspect.is_some() {
                ", suspect region, not counted"
            } else {
                ""
            };
            lines.push(format!(
                "{}: {}{note} ({})",
                region.name,
                tallies[r].state(),
                probers.join("; ")
            ));
        }
        lines
    }
}

/// The lower median, so with two others a single dissenter does not corroborate:
/// the safe outcome is a suspect region (its PoPs fall to UNKNOWN, fail static)
/// rather than a withdrawal.
fn lower_median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[(values.len() - 1) / 2])
}

fn percent(share: f64) -> String {
    let p = share * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
