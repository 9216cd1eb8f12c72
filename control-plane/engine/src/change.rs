//! Staged, reversible changes (issue [8]): the change record and its state machine,
//! pure. The leader's change driver loads each active record, calls [`advance`]
//! with what it observed (the time, which plan the agents ACKed, the analysis of
//! the step), performs the [`Effect`] it is given (write the step's intent,
//! restore the intents from before the change) and stores the new record with a
//! compare-and-set fenced by its leadership. Operator commands ([`pause`],
//! [`resume`], [`rollback`], [`revert`]) are pure functions of the record too.
//!
//! States: `Pending → Progressing(step i: Apply → AwaitAcks → Bake → Analyse) ⇄
//! Paused → Completed`; any active state `→ RollingBack → RolledBack`;
//! `Completed → Reverted` within the revert window. Every transition is appended to
//! the record's history with its time and why.
//!
//! Canary waves: a change started while the policy names canary agents carries its
//! wave ([`CanaryWave`]); each step's apply then also holds the rest of the fleet on
//! the plan before the step, and the step goes `Apply → AwaitCanary → CanaryBake →
//! CanaryAnalyse →` (release the fleet) `→ AwaitAcks → Bake → Analyse`. A NACK from
//! a canary agent or a failed canary analysis stops the step before the fleet sees
//! it (rolled back or paused by policy); an urgent plan that released the fleet
//! early moves the step on to the fleet's ACKs.
//!
//! Decision: the phase *and its deadline* are stored (`Bake { until_ms }`, not "bake
//! started"), so a new leader resumes a step exactly where the old one was — a bake
//! is neither restarted nor skipped — and applying a step is idempotent (it writes
//! the step's target weight, not a delta), so a leader that died between writing
//! the intent and storing the record makes its successor write the same value
//! again. Missing data is never a pass: an analysis without a verdict, or agents
//! that did not ACK in time, is *inconclusive*, which pauses.

use serde::{Deserialize, Serialize};

/// What a change does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Drain,
    Undrain,
    SetCapacity,
    WeightOverride,
    TopologyApply,
    PlanRestore,
    AutoFailover,
    AutoFailback,
}

/// One rung of a ladder: the share of its normal weight the target keeps, held for
/// `bake_ms` once every agent has the plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// 0–100: 100 is untouched, 0 fully drained.
    pub weight_percent: u8,
    pub bake_ms: u64,
    /// The Anycast side of the rung (issue [9]), for a PoP with Anycast prefixes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anycast: Option<meridian_core::records::AnycastStep>,
}

/// The canary wave of a change: fixed when the change starts, so every leader
/// walks the same wave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryWave {
    pub agents: Vec<String>,
    pub bake_ms: u64,
}

/// Where a step is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// The step's intent is to be written.
    Apply,
    /// Written with the fleet held; waiting until every canary agent ACKs a plan
    /// that carries the step.
    AwaitCanary { since_ms: u64 },
    /// The canary wave has it (plan `plan_version`); holding until `until_ms`.
    CanaryBake { until_ms: u64, plan_version: u64 },
    /// Canary bake over: the canary analysis decides whether the fleet gets it.
    CanaryAnalyse { plan_version: u64 },
    /// Written; waiting until every connected agent ACKs a plan at least this new.
    AwaitAcks { since_ms: u64 },
    /// Every agent has it (plan `plan_version`); holding until `until_ms`.
    Bake {
        until_ms: u64,
        /// The plan every agent ACKed for this rung: its receiving PoPs are the
        /// ones the analysis watches.
        #[serde(default)]
        plan_version: u64,
    },
    /// Bake over: the analysis decides.
    Analyse {
        #[serde(default)]
        plan_version: u64,
    },
}

/// A change's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ChangeState {
    Pending,
    Progressing {
        step: usize,
        #[serde(flatten)]
        phase: Phase,
    },
    Paused {
        step: usize,
        reason: String,
    },
    Completed {
        at_ms: u64,
    },
    RollingBack {
        reason: String,
    },
    RolledBack {
        at_ms: u64,
    },
    Reverted {
        at_ms: u64,
    },
}

impl ChangeState {
    /// Not finished: the change still holds its target.
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            ChangeState::Pending
                | ChangeState::Progressing { .. }
                | ChangeState::Paused { .. }
                | ChangeState::RollingBack { .. }
        )
    }

    /// The short name (`pending`, `progressing`, …).
    pub fn name(&self) -> &'static str {
        match self {
            ChangeState::Pending => "pending",
            ChangeState::Progressing { .. } => "progressing",
            ChangeState::Paused { .. } => "paused",
            ChangeState::Completed { .. } => "completed",
            ChangeState::RollingBack { .. } => "rolling_back",
            ChangeState::RolledBack { .. } => "rolled_back",
            ChangeState::Reverted { .. } => "reverted",
        }
    }
}

/// One transition, kept in the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub at_ms: u64,
    pub from: String,
    pub to: String,
    pub why: String,
}

/// A change, as stored under `<root>/changes/records/<id>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub id: String,
    pub kind: ChangeKind,
    /// The PoP (or `topology`) the change holds.
    pub target: String,
    /// Only these client regions, when the change is per region; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// The authenticated identity, or the rule for automatic changes.
    pub started_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub reason: String,
    pub steps: Vec<Step>,
    pub state: ChangeState,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub history: Vec<Transition>,
    /// The target's drain intent from before the change (restored on rollback or
    /// revert); `None`: it was not drained.
    #[serde(default)]
    pub before: Option<meridian_core::records::DrainIntent>,
    /// For a capacity change: the override its step writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<meridian_core::records::CapacityOverride>,
    /// For a capacity change: the override from before it (restored on rollback or
    /// revert); `None`: the topology's capacity applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_capacity: Option<meridian_core::records::CapacityOverride>,
    /// For a topology apply: the store revision of the topology it replaced (a plan
    /// computed from a later one carries the step)…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_revision: Option<i64>,
    /// …and the document in force before it, as stored (JSON), put back on rollback
    /// or revert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_topology: Option<String>,
    /// The canary wave each step goes to first; `None`: straight to the fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryWave>,
    /// The checks of the last analysis (canary or fleet), as they were judged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis: Vec<CheckResult>,
    /// A second person's approval, when policy requires one for this kind of
    /// change: it stays `Pending` until approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
}

/// Approval of a change by a second person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The policy entry that requires it (e.g. `drain`, `forced_drain`).
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver_role: Option<String>,
    #[serde(default)]
    pub at_ms: u64,
}

impl ChangeRecord {
    /// Waiting for an approval that has not come.
    pub fn awaits_approval(&self) -> bool {
        self.state == ChangeState::Pending && self.approval.as_ref().is_some_and(|a| a.approved_by.is_none())
    }
}

/// One analysis check as kept in the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
}

/// The analysis as kept in the record.
fn results(analysis: &[(String, Check)]) -> Vec<CheckResult> {
    analysis
        .iter()
        .map(|(name, c)| {
            let (verdict, why) = match c {
                Check::Pass => ("pass", String::new()),
                Check::Fail(w) => ("fail", w.clone()),
                Check::Inconclusive(w) => ("inconclusive", w.clone()),
            };
            CheckResult {
                name: name.clone(),
                verdict: verdict.into(),
                why,
            }
        })
        .collect()
}

/// `advance` with the analysis it judged kept in the new record.
fn keeping_analysis(mut advance: Advance, obs: &Observed) -> Advance {
    if let Some(r) = advance.record.as_mut() {
        r.analysis = results(&obs.analysis);
    }
    advance
}

impl ChangeKind {
    /// Automatic changes (failover, failback) follow health: steering carries them
    /// out and records them; the change driver and operator commands leave them be.
    pub fn is_automatic(self) -> bool {
        matches!(self, ChangeKind::AutoFailover | ChangeKind::AutoFailback)
    }
}

impl ChangeRecord {
    /// A new change, `Pending`, with no history and nothing to restore yet.
    pub fn new(
        id: String,
        kind: ChangeKind,
        target: &str,
        started_by: &str,
        reason: &str,
        steps: Vec<Step>,
        now_ms: u64,
    ) -> Self {
        ChangeRecord {
            id,
            kind,
            target: target.to_string(),
            regions: Vec::new(),
            started_by: started_by.to_string(),
            role: None,
            reason: reason.to_string(),
            steps,
            state: ChangeState::Pending,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            history: Vec::new(),
            before: None,
            canary: None,
            analysis: Vec::new(),
            capacity: None,
            before_capacity: None,
            topology_revision: None,
            before_topology: None,
            approval: None,
        }
    }

    /// The rung the change is on (for an active ladder), as a weight share.
    pub fn current_weight(&self) -> Option<u8> {
        match &self.state {
            ChangeState::Progressing { step, .. } | ChangeState::Paused { step, .. } => {
                self.steps.get(*step).map(|s| s.weight_percent)
            }
            _ => None,
        }
    }
}

/// What the driver must do before storing the new record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Write the step's intent: the target keeps `weight_percent` of its weight.
    SetWeight { step: usize, weight_percent: u8 },
    /// Put back the intents from before the change (steering then computes from
    /// them with today's health: a PoP that died meanwhile stays out).
    RestoreBefore,
    /// The canary wave passed: the rest of the fleet gets the step's plan.
    ReleaseFleet,
}

/// One analysis check's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    Pass,
    Fail(String),
    /// Not enough data to say: never a pass.
    Inconclusive(String),
}

/// Whether a failed analysis rolls back or pauses (per change kind, by policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFail {
    RollBack,
    Pause,
}

/// The driver's policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangePolicy {
    pub on_fail: OnFail,
    /// How long agents may take to ACK a step's plan before the step is paused.
    pub ack_deadline_ms: u64,
    /// How long after completion a change may still be reverted.
    pub revert_window_ms: u64,
}

impl Default for ChangePolicy {
    fn default() -> Self {
        Self {
            on_fail: OnFail::RollBack,
            ack_deadline_ms: 30_000,
            revert_window_ms: 24 * 3600 * 1000,
        }
    }
}

/// What the driver observed this tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub now_ms: u64,
    /// Every connected agent has ACKed a plan that includes the current step
    /// (`None`: not known yet, e.g. the plan is not published).
    pub acked: Option<bool>,
    /// The version of that plan, when `acked`.
    pub acked_version: u64,
    /// The agents that have not ACKed, to name them when the deadline passes.
    pub missing_acks: Vec<String>,
    /// The step's analysis, by check name (asked for only in `Analyse` and
    /// `CanaryAnalyse`).
    pub analysis: Vec<(String, Check)>,
    /// Canary agents that NACKed a plan carrying the step (`agent: reason`).
    pub canary_nacks: Vec<String>,
    /// Whether the fleet is still held for this change (`Some(false)`: an urgent
    /// plan released it early; `None`: not known).
    pub fleet_held: Option<bool>,
}

/// The outcome of [`advance`]: the record to store (when it changed) and the effect
/// to carry out first.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Advance {
    pub record: Option<ChangeRecord>,
    pub effect: Option<Effect>,
}

/// Why an operator command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("change {id} is {state}: {what}")]
    WrongState {
        id: String,
        state: &'static str,
        what: String,
    },
    #[error("change {id} completed {ago_s} s ago, past its revert window of {window_s} s: start a new change instead")]
    RevertWindowPassed { id: String, ago_s: u64, window_s: u64 },
    #[error("invalid ladder: {0}")]
    InvalidSteps(String),
    #[error("change {id} was started by {who}: a second person must approve it")]
    SelfApproval { id: String, who: String },
}

/// A drain ladder from `--steps` (percentages, each lower than the one before,
/// ending at 0) and one bake for every rung; the default is 100 → 50 → 0, which
/// the caller passes as `[50, 0]` (100 is where the PoP already is).
pub fn ladder(percents: &[u8], bake_ms: u64) -> Result<Vec<Step>, ChangeError> {
    if percents.is_empty() {
        return Err(ChangeError::InvalidSteps("at least one step is needed".into()));
    }
    let mut prev = 101u16;
    for p in percents {
        if *p > 100 {
            return Err(ChangeError::InvalidSteps(format!("{p} is not a percentage")));
        }
        if u16::from(*p) >= prev {
            return Err(ChangeError::InvalidSteps(format!(
                "steps must go down: {p} after {prev}"
            )));
        }
        prev = u16::from(*p);
    }
    Ok(percents
        .iter()
        .filter(|p| **p < 100)
        .map(|p| Step {
            weight_percent: *p,
            bake_ms,
            anycast: None,
        })
        .collect())
}

/// The Anycast side of a drain ladder for a PoP with Anycast prefixes (issue [9]):
/// the last rung withdraws (with the full drain), the rungs before it escalate
/// towards it — prepend ×1, prepend ×3, GRACEFUL_SHUTDOWN — the strongest closest
/// to the withdraw (a two-rung ladder: GRACEFUL_SHUTDOWN, withdraw; four rungs: the
/// whole sequence; more: prepend ×1 repeated first).
pub fn with_anycast_rungs(steps: Vec<Step>) -> Vec<Step> {
    use meridian_core::records::{AnycastAction, AnycastStep};
    let escalation = [
        AnycastStep {
            action: AnycastAction::Prepend,
            prepend: 1,
        },
        AnycastStep {
            action: AnycastAction::Prepend,
            prepend: 3,
        },
        AnycastStep {
            action: AnycastAction::GracefulShutdown,
            prepend: 0,
        },
    ];
    let n = steps.len();
    steps
        .into_iter()
        .enumerate()
        .map(|(i, step)| {
            let rung = if i + 1 == n {
                AnycastStep {
                    action: AnycastAction::Withdraw,
                    prepend: 0,
                }
            } else {
                // Counted back from the rung before the withdraw.
                let back = n - 1 - i; // 1 for the rung just before the withdraw
                escalation[escalation.len().saturating_sub(back)]
            };
            Step {
                anycast: Some(rung),
                ..step
            }
        })
        .collect()
}

fn moved(record: &ChangeRecord, to: ChangeState, now_ms: u64, why: impl Into<String>) -> ChangeRecord {
    let mut next = record.clone();
    next.history.push(Transition {
        at_ms: now_ms,
        from: describe(&record.state),
        to: describe(&to),
        why: why.into(),
    });
    next.state = to;
    next.updated_at_ms = now_ms;
    next
}

/// A state in words, for the history.
pub fn describe(state: &ChangeState) -> String {
    match state {
        ChangeState::Progressing { step, phase } => {
            let phase = match phase {
                Phase::Apply => "apply",
                Phase::AwaitCanary { .. } => "await canary ACKs",
                Phase::CanaryBake { .. } => "canary bake",
                Phase::CanaryAnalyse { .. } => "canary analysis",
                Phase::AwaitAcks { .. } => "await ACKs",
                Phase::Bake { .. } => "bake",
                Phase::Analyse { .. } => "analyse",
            };
            format!("progressing step {} ({phase})", step + 1)
        }
        ChangeState::Paused { step, .. } => format!("paused at step {}", step + 1),
        ChangeState::Pending => "pending".to_string(),
        other => other.name().to_string(),
    }
}

/// One driver tick for an active change.
pub fn advance(record: &ChangeRecord, obs: &Observed, policy: &ChangePolicy) -> Advance {
    let now = obs.now_ms;
    match &record.state {
        ChangeState::Pending if record.awaits_approval() => Advance::default(),
        ChangeState::Pending => {
            if record.steps.is_empty() {
                return Advance {
                    record: Some(moved(
                        record,
                        ChangeState::Completed { at_ms: now },
                        now,
                        "nothing to do",
                    )),
                    effect: None,
                };
            }
            Advance {
                record: Some(moved(
                    record,
                    ChangeState::Progressing {
                        step: 0,
                        phase: Phase::Apply,
                    },
                    now,
                    "started",
                )),
                effect: None,
            }
        }
        ChangeState::Progressing { step, phase } => {
            let step = *step;
            let Some(rung) = record.steps.get(step) else {
                return Advance {
                    record: Some(moved(
                        record,
                        ChangeState::Paused {
                            step,
                            reason: format!("step {} does not exist in this change", step + 1),
                        },
                        now,
                        "corrupt step index",
                    )),
                    effect: None,
                };
            };
            if matches!(
                phase,
                Phase::AwaitCanary { .. } | Phase::CanaryBake { .. } | Phase::CanaryAnalyse { .. }
            ) {
                if let Some(stop) = canary_stop(record, step, obs, policy) {
                    return stop;
                }
            }
            match phase {
                Phase::Apply => Advance {
                    record: Some(moved(
                        record,
                        ChangeState::Progressing {
                            step,
                            phase: match &record.canary {
                                Some(_) => Phase::AwaitCanary { since_ms: now },
                                None => Phase::AwaitAcks { since_ms: now },
                            },
                        },
                        now,
                        {
                            let what = match (&record.kind, &record.capacity) {
                                (ChangeKind::SetCapacity, Some(c)) => format!("capacity {} written", c.capacity),
                                (ChangeKind::TopologyApply, _) => "topology applied".to_string(),
                                _ => format!("weight {} % written", rung.weight_percent),
                            };
                            match &record.canary {
                                Some(wave) => format!(
                                    "{what}; the fleet is held while the canary wave ({}) tries it",
                                    wave.agents.join(", ")
                                ),
                                None => what,
                            }
                        },
                    )),
                    effect: Some(Effect::SetWeight {
                        step,
                        weight_percent: rung.weight_percent,
                    }),
                },
                Phase::AwaitCanary { since_ms } => match obs.acked {
                    Some(true) => Advance {
                        record: Some(moved(
                            record,
                            ChangeState::Progressing {
                                step,
                                phase: Phase::CanaryBake {
                                    until_ms: now.saturating_add(record.canary.as_ref().map_or(0, |w| w.bake_ms)),
                                    plan_version: obs.acked_version,
                                },
                            },
                            now,
                            "every canary agent ACKed the step's plan",
                        )),
                        effect: None,
                    },
                    _ if now.saturating_sub(*since_ms) >= policy.ack_deadline_ms => {
                        ack_deadline_passed(record, step, obs, policy, "canary agent")
                    }
                    _ => Advance::default(),
                },
                Phase::CanaryBake { until_ms, plan_version } if now >= *until_ms => Advance {
                    record: Some(moved(
                        record,
                        ChangeState::Progressing {
                            step,
                            phase: Phase::CanaryAnalyse {
                                plan_version: *plan_version,
                            },
                        },
                        now,
                        "canary bake over",
                    )),
                    effect: None,
                },
                Phase::CanaryBake { .. } => Advance::default(),
                Phase::CanaryAnalyse { .. } => keeping_analysis(
                    match judge(&obs.analysis) {
                        Judgement::Pass => Advance {
                            record: Some(moved(
                                record,
                                ChangeState::Progressing {
                                    step,
                                    phase: Phase::AwaitAcks { since_ms: now },
                                },
                                now,
                                "canary analysis passed: the fleet gets the step",
                            )),
                            effect: Some(Effect::ReleaseFleet),
                        },
                        Judgement::Fail(reason) => failed(record, step, now, format!("canary {reason}"), policy),
                        Judgement::Unsure(reason) => paused(record, step, now, format!("canary {reason}")),
                    },
                    obs,
                ),
                Phase::AwaitAcks { since_ms } => match obs.acked {
                    Some(true) => Advance {
                        record: Some(moved(
                            record,
                            ChangeState::Progressing {
                                step,
                                phase: Phase::Bake {
                                    until_ms: now.saturating_add(rung.bake_ms),
                                    plan_version: obs.acked_version,
                                },
                            },
                            now,
                            "every agent ACKed the step's plan",
                        )),
                        effect: None,
                    },
                    _ if now.saturating_sub(*since_ms) >= policy.ack_deadline_ms => {
                        ack_deadline_passed(record, step, obs, policy, "agent")
                    }
                    _ => Advance::default(),
                },
                Phase::Bake { until_ms, plan_version } if now >= *until_ms => Advance {
                    record: Some(moved(
                        record,
                        ChangeState::Progressing {
                            step,
                            phase: Phase::Analyse {
                                plan_version: *plan_version,
                            },
                        },
                        now,
                        "bake over",
                    )),
                    effect: None,
                },
                Phase::Bake { .. } => Advance::default(),
                Phase::Analyse { .. } => keeping_analysis(analyse(record, step, obs, policy), obs),
            }
        }
        ChangeState::RollingBack { .. } => Advance {
            record: Some(moved(
                record,
                ChangeState::RolledBack { at_ms: now },
                now,
                "intents from before the change restored",
            )),
            effect: Some(Effect::RestoreBefore),
        },
        ChangeState::Paused { .. }
        | ChangeState::Completed { .. }
        | ChangeState::RolledBack { .. }
        | ChangeState::Reverted { .. } => Advance::default(),
    }
}

/// What a set of checks says, all together.
enum Judgement {
    Pass,
    Fail(String),
    Unsure(String),
}

/// Any failure fails; otherwise anything inconclusive (or no checks at all) is
/// unsure; only all passes pass.
fn judge(analysis: &[(String, Check)]) -> Judgement {
    if analysis.is_empty() {
        return Judgement::Unsure("inconclusive: no analysis results".into());
    }
    let named = |want: fn(&Check) -> Option<&String>| -> Vec<String> {
        analysis
            .iter()
            .filter_map(|(name, c)| want(c).map(|why| format!("{name}: {why}")))
            .collect()
    };
    let failed = named(|c| match c {
        Check::Fail(why) => Some(why),
        _ => None,
    });
    if !failed.is_empty() {
        return Judgement::Fail(format!("analysis failed: {}", failed.join("; ")));
    }
    let unsure = named(|c| match c {
        Check::Inconclusive(why) => Some(why),
        _ => None,
    });
    if !unsure.is_empty() {
        return Judgement::Unsure(format!("inconclusive: {}", unsure.join("; ")));
    }
    Judgement::Pass
}

/// A failed step: rolled back or paused, by policy.
fn failed(record: &ChangeRecord, step: usize, now: u64, reason: String, policy: &ChangePolicy) -> Advance {
    let to = match policy.on_fail {
        OnFail::RollBack => ChangeState::RollingBack { reason: reason.clone() },
        OnFail::Pause => ChangeState::Paused {
            step,
            reason: reason.clone(),
        },
    };
    Advance {
        record: Some(moved(record, to, now, reason)),
        effect: None,
    }
}

/// An inconclusive step: paused.
fn paused(record: &ChangeRecord, step: usize, now: u64, reason: String) -> Advance {
    Advance {
        record: Some(moved(
            record,
            ChangeState::Paused {
                step,
                reason: reason.clone(),
            },
            now,
            reason,
        )),
        effect: None,
    }
}

fn ack_deadline_passed(
    record: &ChangeRecord,
    step: usize,
    obs: &Observed,
    policy: &ChangePolicy,
    who: &str,
) -> Advance {
    let missing = if obs.missing_acks.is_empty() {
        "the step's plan is not published yet".to_string()
    } else {
        format!("not ACKed by {who} {}", obs.missing_acks.join(", "))
    };
    let mut advance = paused(
        record,
        step,
        obs.now_ms,
        format!("inconclusive: {missing} within {} s", policy.ack_deadline_ms / 1000),
    );
    if let Some(r) = advance.record.as_mut() {
        if let Some(t) = r.history.last_mut() {
            t.why = "ACK deadline passed".into();
        }
    }
    advance
}

/// In a canary phase: a canary NACK fails the step before the fleet sees it, and a
/// fleet released early (an urgent plan) moves the step on to the fleet's ACKs.
fn canary_stop(record: &ChangeRecord, step: usize, obs: &Observed, policy: &ChangePolicy) -> Option<Advance> {
    let now = obs.now_ms;
    if !obs.canary_nacks.is_empty() {
        let reason = format!(
            "canary wave NACKed the step's plan: {}; the fleet never got it",
            obs.canary_nacks.join("; ")
        );
        return Some(failed(record, step, now, reason, policy));
    }
    if obs.fleet_held == Some(false) {
        return Some(Advance {
            record: Some(moved(
                record,
                ChangeState::Progressing {
                    step,
                    phase: Phase::AwaitAcks { since_ms: now },
                },
                now,
                "an urgent plan released the fleet before the canary wave finished",
            )),
            effect: None,
        });
    }
    None
}

fn analyse(record: &ChangeRecord, step: usize, obs: &Observed, policy: &ChangePolicy) -> Advance {
    let now = obs.now_ms;
    match judge(&obs.analysis) {
        Judgement::Pass => {}
        Judgement::Fail(reason) => return failed(record, step, now, reason, policy),
        Judgement::Unsure(reason) => {
            let mut advance = paused(record, step, now, reason);
            if obs.analysis.is_empty() {
                if let Some(t) = advance.record.as_mut().and_then(|r| r.history.last_mut()) {
                    t.why = "analysis".into();
                }
            }
            return advance;
        }
    }
    let to = if step + 1 >= record.steps.len() {
        ChangeState::Completed { at_ms: now }
    } else {
        ChangeState::Progressing {
            step: step + 1,
            phase: Phase::Apply,
        }
    };
    Advance {
        record: Some(moved(record, to, now, "analysis passed")),
        effect: None,
    }
}

/// An operator pauses an active change (it stays at its step's weight).
pub fn pause(record: &ChangeRecord, now_ms: u64, reason: &str) -> Result<ChangeRecord, ChangeError> {
    match &record.state {
        ChangeState::Progressing { step, .. } => Ok(moved(
            record,
            ChangeState::Paused {
                step: *step,
                reason: format!("paused by operator: {reason}"),
            },
            now_ms,
            reason,
        )),
        ChangeState::Pending => Ok(moved(
            record,
            ChangeState::Paused {
                step: 0,
                reason: format!("paused by operator: {reason}"),
            },
            now_ms,
            reason,
        )),
        other => Err(ChangeError::WrongState {
            id: record.id.clone(),
            state: other.name(),
            what: "only a pending or progressing change can be paused".into(),
        }),
    }
}

/// A second person approves a change waiting for approval; the one who started it
/// cannot.
pub fn approve(
    record: &ChangeRecord,
    approver: &str,
    role: Option<&str>,
    now_ms: u64,
) -> Result<ChangeRecord, ChangeError> {
    if !record.awaits_approval() {
        return Err(ChangeError::WrongState {
            id: record.id.clone(),
            state: record.state.name(),
            what: "only a pending change that waits for approval can be approved".into(),
        });
    }
    if approver == record.started_by {
        return Err(ChangeError::SelfApproval {
            id: record.id.clone(),
            who: record.started_by.clone(),
        });
    }
    let mut next = record.clone();
    if let Some(a) = next.approval.as_mut() {
        a.approved_by = Some(approver.to_string());
        a.approver_role = role.map(str::to_string);
        a.at_ms = now_ms;
    }
    next.history.push(Transition {
        at_ms: now_ms,
        from: "pending (awaiting approval)".into(),
        to: "pending (approved)".into(),
        why: format!("approved by {approver}"),
    });
    next.updated_at_ms = now_ms;
    Ok(next)
}

/// An operator resumes a paused change: its step is applied again (idempotent) and
/// ACKs, bake and analysis run again, since what was inconclusive must be seen anew.
pub fn resume(record: &ChangeRecord, now_ms: u64, reason: &str) -> Result<ChangeRecord, ChangeError> {
    match &record.state {
        ChangeState::Paused { step, .. } => Ok(moved(
            record,
            ChangeState::Progressing {
                step: *step,
                phase: Phase::Apply,
            },
            now_ms,
            reason,
        )),
        other => Err(ChangeError::WrongState {
            id: record.id.clone(),
            state: other.name(),
            what: "only a paused change can be resumed".into(),
        }),
    }
}

/// An operator rolls back an active change, from any step (also one stuck waiting
/// for an agent that never ACKs).
pub fn rollback(record: &ChangeRecord, now_ms: u64, reason: &str) -> Result<ChangeRecord, ChangeError> {
    if record.state.is_active() && !matches!(record.state, ChangeState::RollingBack { .. }) {
        return Ok(moved(
            record,
            ChangeState::RollingBack {
                reason: format!("rolled back by operator: {reason}"),
            },
            now_ms,
            reason,
        ));
    }
    Err(ChangeError::WrongState {
        id: record.id.clone(),
        state: record.state.name(),
        what: "only an active change can be rolled back (a completed one is reverted)".into(),
    })
}

/// An operator reverts a completed change within the window: the intents from
/// before it come back ([`Effect::RestoreBefore`]).
pub fn revert(
    record: &ChangeRecord,
    now_ms: u64,
    reason: &str,
    policy: &ChangePolicy,
) -> Result<(ChangeRecord, Effect), ChangeError> {
    match &record.state {
        ChangeState::Completed { at_ms } => {
            let ago = now_ms.saturating_sub(*at_ms);
            if ago > policy.revert_window_ms {
                return Err(ChangeError::RevertWindowPassed {
                    id: record.id.clone(),
                    ago_s: ago / 1000,
                    window_s: policy.revert_window_ms / 1000,
                });
            }
            Ok((
                moved(record, ChangeState::Reverted { at_ms: now_ms }, now_ms, reason),
                Effect::RestoreBefore,
            ))
        }
        other => Err(ChangeError::WrongState {
            id: record.id.clone(),
            state: other.name(),
            what: "only a completed change can be reverted (an active one is rolled back)".into(),
        }),
    }
}

/// The record of an automatic failover: `pop` went DOWN and steering published
/// plan `version` without it (a one-step change, done when recorded; guardrails
/// applied in the plan, named in `why`). It holds nothing, so it never blocks an
/// operator, and no operator change blocks it.
pub fn auto_failover(pop: &str, version: u64, why: &str, now_ms: u64) -> ChangeRecord {
    let record = ChangeRecord::new(
        format!("failover-{pop}-{now_ms}"),
        ChangeKind::AutoFailover,
        pop,
        "rule:failover",
        &format!("{pop} DOWN by quorum: traffic moved to the other PoPs in plan v{version}"),
        vec![Step {
            weight_percent: 0,
            bake_ms: 0,
            anycast: None,
        }],
        now_ms,
    );
    moved(&record, ChangeState::Completed { at_ms: now_ms }, now_ms, why)
}

/// The record of an automatic failback after a slow-start `event`: created when
/// the recovery starts (steps are the stages, in percent), moved on each stage
/// (baking for `bake_ms`), completed at full weight, rolled back when the PoP fails
/// again. `existing`: the active failback record of the PoP, if any (a new leader
/// that restarts a recovery continues it). `None`: nothing to record.
pub fn auto_failback(
    existing: Option<&ChangeRecord>,
    event: &meridian_core::slow_start::SlowStartEvent,
    stages: &[f64],
    bake_ms: u64,
    now_ms: u64,
) -> Option<ChangeRecord> {
    use meridian_core::slow_start::SlowStartEvent as E;
    let baking = |step: usize| ChangeState::Progressing {
        step,
        phase: Phase::Bake {
            until_ms: now_ms.saturating_add(bake_ms),
            plan_version: 0,
        },
    };
    match (event, existing) {
        (E::Started { pop, factor }, None) => {
            let record = ChangeRecord::new(
                format!("failback-{pop}-{now_ms}"),
                ChangeKind::AutoFailback,
                pop,
                "rule:slow-start",
                &format!("{pop} UP again: slow start back to full weight"),
                stages
                    .iter()
                    .map(|f| Step {
                        weight_percent: (f * 100.0).round().clamp(0.0, 100.0) as u8,
                        bake_ms,
                        anycast: None,
                    })
                    .collect(),
                now_ms,
            );
            Some(moved(
                &record,
                baking(0),
                now_ms,
                format!("at {:.0} % of its weight", factor * 100.0),
            ))
        }
        (E::Started { factor, .. }, Some(r)) => Some(moved(
            r,
            baking(0),
            now_ms,
            format!("recovery restarted at {:.0} % (a new leader)", factor * 100.0),
        )),
        (E::Advanced { stage, factor, .. }, Some(r)) => Some(moved(
            r,
            baking(*stage),
            now_ms,
            format!("stage {} at {:.0} % of its weight", stage + 1, factor * 100.0),
        )),
        (E::Completed { .. }, Some(r)) => Some(moved(
            r,
            ChangeState::Completed { at_ms: now_ms },
            now_ms,
            "back at full weight",
        )),
        (E::Aborted { stage, .. }, Some(r)) => Some(moved(
            r,
            ChangeState::RolledBack { at_ms: now_ms },
            now_ms,
            format!("failed again at stage {}: out at once", stage + 1),
        )),
        // A stage or an end without a record (e.g. pruned): nothing to move.
        (_, None) => None,
    }
}

/// The ended changes to delete so that at most `keep` ended ones remain (the
/// oldest go first); active changes are never pruned.
pub fn to_prune<'a>(records: impl IntoIterator<Item = &'a ChangeRecord>, keep: usize) -> Vec<String> {
    let mut ended: Vec<&ChangeRecord> = records.into_iter().filter(|r| !r.state.is_active()).collect();
    if ended.len() <= keep {
        return Vec::new();
    }
    ended.sort_by_key(|r| (r.created_at_ms, r.id.clone()));
    let extra = ended.len() - keep;
    ended.into_iter().take(extra).map(|r| r.id.clone()).collect()
}

#[cfg(test)]
mod tests;
