//! The operations layer: one function per mutation (drain, undrain, apply topology,
//! restore plan, resume steering; later changes and freezes), each taking a typed
//! command with the caller's identity and returning a typed outcome or a typed
//! [`OpError`] (refused by guardrail X, not found, invalid field, leadership lost,
//! conflict, store). It checks, writes through a fenced transaction, records the
//! event and bumps the metrics. The gRPC handlers only convert messages and map
//! errors to statuses; forwarding to the leader happens before, in `grpc`.
//!
//! Decisions come from the pure cores (guardrails from `meridian_engine::driver`,
//! validation from `meridian_core`); this module is the I/O around them. Time comes
//! from a [`Clock`] so the tests drive it.

use std::collections::BTreeMap;
use std::sync::Arc;

use meridian_core::keys::Keys;
use meridian_core::records::{DrainIntent, PlanPin, StoredPlan};
use meridian_core::{Actor, Identity};
use meridian_engine::{Event, EventKind, Intents, OperatorAction};
use meridian_health::HealthSnapshot;
use meridian_steering::{DrainError, GuardrailRule, Scenario, SteeringError};
use meridian_store::election::fenced_txn;
use meridian_store::{Compare, CompareOp, Fence, Store, StoreError, Txn, TxnOp};
use tokio::sync::watch;

use crate::events::EventLog;
use crate::plans::{self, PlanError};
use crate::topology::{self, AppliedTopology, ApplyError};

/// Wall-clock milliseconds since the Unix epoch; faked in tests.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::convert::now_ms()
    }
}

/// Where the operations read health from (the replica's health view).
pub trait HealthSource: Send + Sync {
    fn snapshot(&self) -> HealthSnapshot;
}

impl HealthSource for crate::health::HealthView {
    fn snapshot(&self) -> HealthSnapshot {
        crate::health::HealthView::snapshot(self)
    }
}

/// Who asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub identity: Identity,
    /// The role the caller's credential carries (`None` with roles off).
    pub role: Option<String>,
}

impl Caller {
    fn actor(&self) -> Actor {
        Actor::Operator(self.identity.clone())
    }
}

/// Take a PoP out of steering.
#[derive(Clone, Debug, PartialEq)]
pub struct DrainCommand {
    pub pop: String,
    pub reason: String,
    /// Override the guardrails (each overridden rule is recorded).
    pub force: bool,
    /// Only for these client regions (the PoP keeps serving the others); empty: all.
    pub regions: Vec<String>,
}

/// Put a drained PoP back.
#[derive(Clone, Debug, PartialEq)]
pub struct UndrainCommand {
    pub pop: String,
    pub reason: String,
}

/// Validate and (unless a dry run) store a new topology.
#[derive(Clone, Debug, PartialEq)]
pub struct ApplyTopologyCommand {
    pub toml: String,
    pub reason: String,
    pub dry_run: bool,
}

/// Republish an old plan version and pin steering to it.
#[derive(Clone, Debug, PartialEq)]
pub struct RestorePlanCommand {
    pub version: u64,
    pub reason: String,
}

/// Lift the plan pin.
#[derive(Clone, Debug, PartialEq)]
pub struct ResumeSteeringCommand {
    pub reason: String,
}

/// What a drain or undrain did: a one-step change (staged changes come with [8]).
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeOutcome {
    /// `drain` or `undrain`.
    pub kind: &'static str,
    pub pop: String,
    /// The store revision of the write.
    pub revision: i64,
    pub reason: String,
    pub actor: Actor,
    pub at_unix_ms: u64,
    pub summary: String,
    /// The guardrails a forced drain overrode.
    pub forced_past: Vec<GuardrailRule>,
}

/// What an apply did. Validation errors are an answer, not a failure.
#[derive(Clone, Debug, PartialEq)]
pub struct TopologyOutcome {
    pub applied: bool,
    pub diff: Vec<String>,
    /// Every validation error with its path; empty when valid.
    pub errors: Vec<String>,
    pub revision: i64,
}

/// Why an operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A guardrail refused it; the rule is named.
    #[error("drain of {pop} refused by guardrail `{rule}`: {detail}. Re-run with --force and a reason to override.")]
    Refused {
        pop: String,
        rule: GuardrailRule,
        detail: String,
    },
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller's role does not allow this (beyond the RPC's own rule).
    #[error("{0}")]
    PermissionDenied(String),
    /// Another write landed first; the caller should look again and retry.
    #[error("{0}")]
    Conflict(String),
    #[error("the stored record at {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    /// Includes `FenceLost`: leadership moved while the operation ran.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PlanError> for OpError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::NoSuchVersion(v) => OpError::NotFound(format!("plan version {v} does not exist")),
            PlanError::Conflict(_) => OpError::Conflict(e.to_string()),
            PlanError::Pinned(_) => OpError::FailedPrecondition(e.to_string()),
            PlanError::Corrupt { key, reason } => OpError::Corrupt { key, reason },
            PlanError::Store(s) => OpError::Store(s),
        }
    }
}

/// How often a drain is decided again when the drain set moved under it.
const DRAIN_ATTEMPTS: usize = 5;

/// The drains as stored, and the version of the set they were read at.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct DrainSet {
    /// Mod revision of [`Keys::drain_set`]; 0 when no drain ever happened.
    pub version: i64,
    pub drains: BTreeMap<String, DrainIntent>,
}

/// What the operations need from the replica.
#[derive(Clone)]
pub struct Operations {
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    /// This replica's id (recorded as `published_by`).
    pub replica: String,
    pub topology: watch::Receiver<AppliedTopology>,
    pub intents: watch::Receiver<Intents>,
    pub health: Arc<dyn HealthSource>,
    pub log: Arc<EventLog>,
    pub clock: Arc<dyn Clock>,
}

fn non_empty_reason(reason: &str, what: &str) -> Result<(), OpError> {
    if reason.trim().is_empty() {
        return Err(OpError::Invalid {
            field: "reason",
            problem: format!("{what} needs a reason (it is recorded with the change)"),
        });
    }
    Ok(())
}

impl Operations {
    /// Drains a PoP (see [`Self::drain_unaudited`]); a refusal is recorded in the
    /// event log with who asked and why.
    pub async fn drain(&self, caller: &Caller, fence: &Fence, cmd: DrainCommand) -> Result<ChangeOutcome, OpError> {
        let target = cmd.pop.clone();
        let result = self.drain_unaudited(caller, fence, cmd).await;
        self.audit_refusal(caller, "drain", Some(target), &result);
        result
    }

    /// Undrains a PoP; a refusal is recorded.
    pub async fn undrain(&self, caller: &Caller, fence: &Fence, cmd: UndrainCommand) -> Result<ChangeOutcome, OpError> {
        let target = cmd.pop.clone();
        let result = self.undrain_unaudited(caller, fence, cmd).await;
        self.audit_refusal(caller, "undrain", Some(target), &result);
        result
    }

    /// Validates and (unless a dry run) stores a topology; a refusal is recorded
    /// (an invalid document is an answer, not a refusal).
    pub async fn apply_topology(
        &self,
        caller: &Caller,
        fence: Option<&Fence>,
        cmd: ApplyTopologyCommand,
    ) -> Result<TopologyOutcome, OpError> {
        let result = self.apply_topology_unaudited(caller, fence, cmd).await;
        self.audit_refusal(caller, "apply-topology", None, &result);
        result
    }

    /// Restores a plan version and pins steering; a refusal is recorded.
    pub async fn restore_plan(
        &self,
        caller: &Caller,
        fence: &Fence,
        cmd: RestorePlanCommand,
    ) -> Result<StoredPlan, OpError> {
        let target = format!("plan v{}", cmd.version);
        let result = self.restore_plan_unaudited(caller, fence, cmd).await;
        self.audit_refusal(caller, "restore-plan", Some(target), &result);
        result
    }

    /// Lifts the plan pin; a refusal is recorded.
    pub async fn resume_steering(
        &self,
        caller: &Caller,
        fence: &Fence,
        cmd: ResumeSteeringCommand,
    ) -> Result<bool, OpError> {
        let result = self.resume_steering_unaudited(caller, fence, cmd).await;
        self.audit_refusal(caller, "resume-steering", None, &result);
        result
    }

    /// Records a refused operation: who, what, at what, and the reason as the caller
    /// was told. Store failures are not refusals (nothing was decided) and are not
    /// recorded here.
    fn audit_refusal<T>(&self, caller: &Caller, operation: &str, target: Option<String>, result: &Result<T, OpError>) {
        let Err(err) = result else { return };
        if matches!(err, OpError::Store(_) | OpError::Corrupt { .. }) {
            return;
        }
        metrics::counter!("meridian_control_plane_operations_refused_total", "operation" => operation.to_string())
            .increment(1);
        self.log.record(Event {
            at_unix_ms: self.clock.now_ms(),
            actor: caller.actor(),
            role: caller.role.clone(),
            kind: EventKind::Refused {
                rpc: operation.to_string(),
                target,
                reason: err.to_string(),
            },
        });
    }
    /// Drains a PoP: refused (naming the rule) when a guardrail fires, unless forced.
    ///
    /// The guardrails are decided on the drain set read from the store, and the
    /// write compares that set's version ([`Keys::drain_set`]) in the same fenced
    /// transaction: two concurrent drains that each pass alone cannot both land, and
    /// a new leader still loading intents cannot drain past a rule. When the set
    /// moved under us, the drain is decided again on the new set.
    async fn drain_unaudited(
        &self,
        caller: &Caller,
        fence: &Fence,
        cmd: DrainCommand,
    ) -> Result<ChangeOutcome, OpError> {
        non_empty_reason(&cmd.reason, "a drain")?;
        for _ in 0..DRAIN_ATTEMPTS {
            let set = self.read_drain_set().await?;
            if let Some(outcome) = self.try_drain(caller, fence, &cmd, &set).await? {
                return Ok(outcome);
            }
            metrics::counter!("meridian_control_plane_drain_retries_total").increment(1);
        }
        Err(OpError::Conflict(format!(
            "the drain set changed {DRAIN_ATTEMPTS} times while draining {}; look again and retry",
            cmd.pop
        )))
    }

    /// The drains as stored now, with the drain set's version. The version is read
    /// first: a change landing between the two reads then fails the compare.
    pub(crate) async fn read_drain_set(&self) -> Result<DrainSet, OpError> {
        let marker = self.store.get(&self.keys.drain_set()).await?;
        let listed = self.store.range(&self.keys.drains_prefix()).await?;
        let mut drains = BTreeMap::new();
        for kv in listed.kvs {
            let intent: DrainIntent = serde_json::from_slice(&kv.value).map_err(|e| OpError::Corrupt {
                key: kv.key.clone(),
                reason: e.to_string(),
            })?;
            drains.insert(intent.pop.clone(), intent);
        }
        Ok(DrainSet {
            version: marker.map_or(0, |kv| kv.mod_revision),
            drains,
        })
    }

    /// Whether `cmd` may drain its PoP given the drain set `set` — the PoP is known,
    /// not held by a change, not drained, and the guardrails allow it (or `force`
    /// overrides them) — and which guardrails were overridden. Immediate drains and
    /// drain ladders (for the rung that ends at 0) decide alike.
    pub(crate) async fn decide_drain(&self, cmd: &DrainCommand, set: &DrainSet) -> Result<Vec<GuardrailRule>, OpError> {
        let applied = self.topology.borrow().clone();
        if applied.doc.pop(&cmd.pop).is_none() {
            return Err(OpError::NotFound(format!(
                "pop: unknown PoP `{}` (not in the applied topology)",
                cmd.pop
            )));
        }
        if let Some(holder) = self.holder_of(&cmd.pop).await? {
            return Err(OpError::Conflict(format!(
                "PoP `{}` is held by change {holder}: pause, roll back or wait for it first",
                cmd.pop
            )));
        }
        if set.drains.contains_key(&cmd.pop) {
            return Err(OpError::AlreadyExists(format!("PoP `{}` is already drained", cmd.pop)));
        }
        let health = self.health.snapshot();
        // Guardrails see the capacity steering plans with (overrides in force).
        let capacity = self.intents.borrow().capacity.clone();
        let doc = meridian_engine::intents::with_capacity(&applied.doc, &capacity, self.clock.now_ms());
        let decided = if cmd.regions.is_empty() {
            meridian_engine::driver::check_drain(&doc, &health, &set.drains, &cmd.pop, cmd.force)
        } else {
            meridian_engine::driver::check_region_drain(&doc, &health, &set.drains, &cmd.pop, &cmd.regions, cmd.force)
        };
        match decided {
            Ok(firings) => Ok(firings.iter().map(|f| f.rule).collect()),
            Err(DrainError::Refused(f)) => Err(OpError::Refused {
                pop: cmd.pop.clone(),
                rule: f.rule,
                detail: f.detail,
            }),
            Err(DrainError::Input(e)) => Err(OpError::Invalid {
                field: if cmd.regions.is_empty() { "pop" } else { "regions" },
                problem: e.to_string(),
            }),
        }
    }

    /// One attempt on the drain set `set`: `Ok(None)` when the set changed before the
    /// write (decide again), else the outcome or why not.
    pub(crate) async fn try_drain(
        &self,
        caller: &Caller,
        fence: &Fence,
        cmd: &DrainCommand,
        set: &DrainSet,
    ) -> Result<Option<ChangeOutcome>, OpError> {
        let forced_past = self.decide_drain(cmd, set).await?;
        let forced_text =
            (!forced_past.is_empty()).then(|| forced_past.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "));
        let now = self.clock.now_ms();
        let intent = DrainIntent {
            pop: cmd.pop.clone(),
            reason: cmd.reason.clone(),
            requested_by: caller.identity.to_string(),
            at_unix_ms: now,
            forced_past: forced_text.clone(),
            weight_percent: None,
            regions: cmd.regions.clone(),
            anycast: None,
        };
        let key = self.keys.drain(&cmd.pop);
        let value = encode(&key, &intent)?;
        let mut after: Vec<&str> = set.drains.keys().map(String::as_str).collect();
        after.push(&cmd.pop);
        after.sort_unstable();
        let marker = encode(&self.keys.drain_set(), &after)?;
        let txn = Txn::new()
            .when([
                Compare::modified_at(self.keys.drain_set(), set.version),
                Compare::Version {
                    key: key.clone(),
                    op: CompareOp::Equal,
                    version: 0,
                },
            ])
            .and_then([TxnOp::put(key, value), TxnOp::put(self.keys.drain_set(), marker)]);
        let resp = fenced_txn(self.store.as_ref(), fence, txn).await?;
        if !resp.succeeded {
            return Ok(None);
        }
        tracing::warn!(pop = %cmd.pop, reason = %cmd.reason, by = %caller.identity, forced_past = ?forced_text, "PoP drained by an operator");
        metrics::counter!("meridian_control_plane_drains_total").increment(1);
        self.log.record(Event {
            at_unix_ms: now,
            actor: caller.actor(),
            role: caller.role.clone(),
            kind: EventKind::Operator(OperatorAction::Drained {
                pop: cmd.pop.clone(),
                reason: cmd.reason.clone(),
                forced_past: forced_text.clone(),
                regions: cmd.regions.clone(),
            }),
        });
        let mut summary = if cmd.regions.is_empty() {
            format!("PoP {} drained; steering moves its traffic to the other PoPs", cmd.pop)
        } else {
            format!(
                "PoP {} drained for {}; steering moves those regions' traffic to other PoPs and the PoP keeps serving the rest",
                cmd.pop,
                cmd.regions.join(", ")
            )
        };
        if let Some(rules) = &forced_text {
            summary.push_str(&format!(" (forced past guardrail {rules})"));
        }
        Ok(Some(ChangeOutcome {
            kind: "drain",
            pop: cmd.pop.clone(),
            revision: resp.revision,
            reason: cmd.reason.clone(),
            actor: caller.actor(),
            at_unix_ms: now,
            summary,
            forced_past,
        }))
    }

    /// Undrains a PoP; not found when it is not drained.
    async fn undrain_unaudited(
        &self,
        caller: &Caller,
        fence: &Fence,
        cmd: UndrainCommand,
    ) -> Result<ChangeOutcome, OpError> {
        // Rewrites the drain set's version too, so a drain decided on the set before
        // this undrain decides again (it can only get easier, but the version means
        // "the drain set changed", whichever way).
        if let Some(holder) = self.holder_of(&cmd.pop).await? {
            return Err(OpError::Conflict(format!(
                "PoP `{}` is held by change {holder}: roll it back (`meridianctl change rollback {holder}`) instead",
                cmd.pop
            )));
        }
        let set = self.read_drain_set().await?;
        let remaining: Vec<&str> = set
            .drains
            .keys()
            .map(String::as_str)
            .filter(|p| *p != cmd.pop)
            .collect();
        let marker = encode(&self.keys.drain_set(), &remaining)?;
        let txn = delete_if_present(self.keys.drain(&cmd.pop)).and_then([TxnOp::put(self.keys.drain_set(), marker)]);
        let resp = fenced_txn(self.store.as_ref(), fence, txn).await?;
        if !resp.succeeded {
            return Err(OpError::NotFound(format!("PoP `{}` is not drained", cmd.pop)));
        }
        let now = self.clock.now_ms();
        tracing::info!(pop = %cmd.pop, reason = %cmd.reason, by = %caller.identity, "PoP undrained by an operator");
        self.log.record(Event {
            at_unix_ms: now,
            actor: caller.actor(),
            role: caller.role.clone(),
            kind: EventKind::Operator(OperatorAction::Undrained {
                pop: cmd.pop.clone(),
                reason: cmd.reason.clone(),
            }),
        });
        Ok(ChangeOutcome {
            kind: "undrain",
            summary: format!("PoP {} back in service", cmd.pop),
            pop: cmd.pop,
            revision: resp.revision,
            reason: cmd.reason,
            actor: caller.actor(),
            at_unix_ms: now,
            forced_past: Vec::new(),
        })
    }

    /// Validates a topology and, unless a dry run (then `fence` may be `None`: any
    /// replica answers), stores it with a compare-and-swap on the stored revision.
    async fn apply_topology_unaudited(
        &self,
        caller: &Caller,
        fence: Option<&Fence>,
        cmd: ApplyTopologyCommand,
    ) -> Result<TopologyOutcome, OpError> {
        if !cmd.dry_run && fence.is_none() {
            return Err(OpError::FailedPrecondition("only the leader applies a topology".into()));
        }
        // With a canary wave configured (and connected), an apply is a staged change:
        // its record, its hold on the topology and the fleet hold go into the
        // apply's own transaction, so no agent outside the wave gets a plan from the
        // new topology before the wave tried it.
        let staged = match (cmd.dry_run, fence) {
            (false, Some(_)) => self.stage_topology_apply(caller, &cmd.reason).await?,
            _ => None,
        };
        let staged_record = std::sync::Mutex::new(None);
        let applied = topology::apply_with(
            self.store.as_ref(),
            &self.keys,
            fence,
            &cmd.toml,
            cmd.dry_run,
            |old, old_rev| match &staged {
                None => Ok((Vec::new(), Vec::new())),
                Some(stage) => {
                    let record = stage.record(old, old_rev);
                    let extras = self
                        .staged_txn(stage, &record)
                        .map_err(|e| topology::ApplyError::Corrupt {
                            key: self.keys.change(&record.id),
                            reason: e.to_string(),
                        })?;
                    *staged_record.lock().unwrap_or_else(|e| e.into_inner()) = Some(record);
                    Ok(extras)
                }
            },
        )
        .await;
        let outcome = match applied {
            Ok(o) => o,
            Err(ApplyError::Invalid(errors)) => {
                return Ok(TopologyOutcome {
                    applied: false,
                    diff: Vec::new(),
                    errors: errors.0.iter().map(|e| e.to_string()).collect(),
                    revision: 0,
                })
            }
            Err(e @ ApplyError::Conflict(_)) => return Err(OpError::Conflict(e.to_string())),
            Err(ApplyError::Corrupt { key, reason }) => return Err(OpError::Corrupt { key, reason }),
            Err(ApplyError::Store(s)) => return Err(OpError::Store(s)),
        };
        let mut diff = outcome.diff;
        if let (true, Some(record)) = (
            outcome.applied,
            staged_record.into_inner().unwrap_or_else(|e| e.into_inner()),
        ) {
            self.record_staged_apply(caller, &record);
            diff.push(format!(
                "staged as change {}: the canary wave ({}) gets it first, the fleet after its bake and analysis; follow it with `meridianctl change show {} --watch`",
                record.id,
                record.canary.as_ref().map(|w| w.agents.join(", ")).unwrap_or_default(),
                record.id
            ));
        }
        if outcome.applied {
            tracing::info!(revision = outcome.revision, changes = diff.len(), reason = %cmd.reason, by = %caller.identity, "topology applied");
            metrics::counter!("meridian_control_plane_topology_applies_total").increment(1);
            self.log.record(Event {
                at_unix_ms: self.clock.now_ms(),
                actor: caller.actor(),
                role: caller.role.clone(),
                kind: EventKind::Operator(OperatorAction::TopologyApplied {
                    revision: outcome.revision,
                    reason: cmd.reason,
                    diff: diff.clone(),
                }),
            });
        }
        Ok(TopologyOutcome {
            applied: outcome.applied,
            diff,
            errors: Vec::new(),
            revision: outcome.revision,
        })
    }

    /// Pins steering, then republishes `version` as the newest plan.
    async fn restore_plan_unaudited(
        &self,
        caller: &Caller,
        fence: &Fence,
        cmd: RestorePlanCommand,
    ) -> Result<StoredPlan, OpError> {
        non_empty_reason(&cmd.reason, "a restore")?;
        let mut old = plans::load(self.store.as_ref(), &self.keys, cmd.version).await?;
        let now = self.clock.now_ms();
        // Pin first, so steering does not overwrite the restored plan.
        let pin = PlanPin {
            version: cmd.version,
            reason: cmd.reason.clone(),
            requested_by: caller.identity.to_string(),
            at_unix_ms: now,
        };
        let key = self.keys.plan_pin();
        let value = encode(&key, &pin)?;
        fenced_txn(
            self.store.as_ref(),
            fence,
            Txn::new().and_then([TxnOp::put(key, value)]),
        )
        .await?;
        old.restored_from = Some(cmd.version);
        old.created_at_unix_ms = now;
        old.published_by = self.replica.clone();
        old.reasons = vec![format!(
            "restored from version {} by {}: {}",
            cmd.version, caller.identity, cmd.reason
        )];
        let published = plans::publish(self.store.as_ref(), &self.keys, fence, old).await?;
        tracing::warn!(from = cmd.version, version = published.version, reason = %cmd.reason, by = %caller.identity, "plan restored; steering pinned");
        self.log.record(Event {
            at_unix_ms: now,
            actor: caller.actor(),
            role: caller.role.clone(),
            kind: EventKind::Operator(OperatorAction::PlanRestored {
                from: cmd.version,
                version: published.version,
                reason: cmd.reason,
            }),
        });
        Ok(published)
    }

    /// Lifts the plan pin; returns whether steering was pinned.
    async fn resume_steering_unaudited(
        &self,
        caller: &Caller,
        fence: &Fence,
        cmd: ResumeSteeringCommand,
    ) -> Result<bool, OpError> {
        let txn = delete_if_present(self.keys.plan_pin());
        let resp = fenced_txn(self.store.as_ref(), fence, txn).await?;
        tracing::info!(reason = %cmd.reason, by = %caller.identity, was_pinned = resp.succeeded, "steering resumed");
        if resp.succeeded {
            self.log.record(Event {
                at_unix_ms: self.clock.now_ms(),
                actor: caller.actor(),
                role: caller.role.clone(),
                kind: EventKind::Operator(OperatorAction::SteeringResumed { reason: cmd.reason }),
            });
        }
        Ok(resp.succeeded)
    }

    /// The plan a scenario would produce and the guardrails that would fire; read
    /// only, any replica.
    pub fn what_if(&self, scenario: &Scenario) -> Result<(StoredPlan, Vec<String>), OpError> {
        let applied = self.topology.borrow().clone();
        if applied.revision == 0 {
            return Err(OpError::FailedPrecondition("no topology applied yet".into()));
        }
        let drains = self.intents.borrow().drains.clone();
        let health = self.health.snapshot();
        match meridian_engine::driver::what_if(
            &applied.doc,
            applied.revision,
            &health,
            &drains,
            scenario,
            self.clock.now_ms(),
        ) {
            Ok((plan, fired)) => Ok((plan, fired.iter().map(|f| f.to_string()).collect())),
            Err(SteeringError::UnknownPop { pop }) => Err(OpError::NotFound(format!(
                "unknown PoP `{pop}` (not in the applied topology)"
            ))),
            Err(e) => Err(OpError::Invalid {
                field: "scenario",
                problem: e.to_string(),
            }),
        }
    }
}

/// Deletes `key` only if it exists, so `succeeded` says whether it did.
fn delete_if_present(key: String) -> Txn {
    Txn::new()
        .when([Compare::Version {
            key: key.clone(),
            op: CompareOp::Greater,
            version: 0,
        }])
        .and_then([TxnOp::delete(key)])
}

fn encode<T: serde::Serialize>(key: &str, value: &T) -> Result<Vec<u8>, OpError> {
    serde_json::to_vec(value).map_err(|e| OpError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

pub mod changes;
pub mod freeze;
pub mod rollout;

#[cfg(test)]
mod tests;
