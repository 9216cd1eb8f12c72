//! Staged changes in the store (issue [8]): starting a drain ladder, the effects the
//! change driver carries out (a rung's drain intent, the intents from before), the
//! operator commands (pause, resume, rollback) and the records themselves.
//!
//! A change record lives at `changes/records/<id>`; `changes/holds/<pop>` names the
//! one active change holding a PoP, created with the record in one fenced
//! transaction (so two changes never hold the same PoP) and deleted in the
//! transaction that stores the record's end. Every record update compares the
//! record's mod revision: two operators pausing and resuming at once, or an
//! operator and the driver, never both land on the same version.

use meridian_engine::change::{self, ChangeError, ChangeKind, ChangeRecord, Step};
use meridian_store::{Compare, CompareOp, Fence, TxnOp};

use super::*;

/// How long a capacity change bakes once every agent has its plan.
pub const CAPACITY_BAKE_MS: u64 = 10_000;

/// An operator's capacity override of a PoP (a staged change of one step).
#[derive(Clone, Debug, PartialEq)]
pub struct SetCapacityCommand {
    pub pop: String,
    pub capacity: f64,
    pub reason: String,
    /// A temporary override ends after this long; 0: until reverted or replaced.
    pub duration_ms: u64,
}

/// An operator's command on a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeCommand {
    Pause,
    Resume,
    Rollback,
    /// A completed change within its revert window: the intents from before it
    /// come back.
    Revert,
    /// A second person approves a change waiting for approval.
    Approve,
}

impl ChangeCommand {
    fn name(self) -> &'static str {
        match self {
            ChangeCommand::Pause => "pause",
            ChangeCommand::Resume => "resume",
            ChangeCommand::Rollback => "rollback",
            ChangeCommand::Revert => "revert",
            ChangeCommand::Approve => "approve",
        }
    }
}

/// A stored change and the mod revision its next update compares.
#[derive(Clone, Debug)]
pub struct StoredChange {
    pub record: ChangeRecord,
    pub mod_revision: i64,
}

fn change_error(e: ChangeError) -> OpError {
    match e {
        ChangeError::InvalidSteps(problem) => OpError::Invalid {
            field: "steps",
            problem,
        },
        other => OpError::FailedPrecondition(other.to_string()),
    }
}

impl Operations {
    /// Starts a drain ladder on `cmd.pop`: the guardrails are decided now for the
    /// last rung (a full drain), as for an immediate drain, and the change is stored
    /// `Pending`, holding the PoP; the leader's change driver walks it.
    pub async fn start_drain_change(
        &self,
        caller: &Caller,
        fence: &Fence,
        cmd: DrainCommand,
        percents: &[u8],
        bake_ms: u64,
    ) -> Result<ChangeRecord, OpError> {
        let target = cmd.pop.clone();
        let result = self
            .start_drain_change_unaudited(caller, fence, cmd, percents, bake_ms)
            .await;
        self.audit_refusal(caller, "drain", Some(target), &result);
        result
    }

    async fn start_drain_change_unaudited(
        &self,
        caller: &Caller,
        fence: &Fence,
        cmd: DrainCommand,
        percents: &[u8],
        bake_ms: u64,
    ) -> Result<ChangeRecord, OpError> {
        if cmd.reason.trim().is_empty() {
            return Err(OpError::Invalid {
                field: "reason",
                problem: "a drain needs a reason".into(),
            });
        }
        let mut steps: Vec<Step> = change::ladder(percents, bake_ms).map_err(change_error)?;
        // A PoP with Anycast prefixes drains through BGP too (issue [9]): the rungs
        // escalate prepend → GRACEFUL_SHUTDOWN → withdraw. Per-region drains are
        // DNS only (a route is not per client region).
        let has_prefixes = self
            .topology
            .borrow()
            .doc
            .pop(&cmd.pop)
            .is_some_and(|p| !p.anycast_prefixes.is_empty());
        if has_prefixes && cmd.regions.is_empty() {
            steps = change::with_anycast_rungs(steps);
        }
        if steps.last().map(|s| s.weight_percent) != Some(0) {
            return Err(OpError::Invalid {
                field: "steps",
                problem: "a drain ladder ends at 0".into(),
            });
        }
        let set = self.read_drain_set().await?;
        // The same decision as an immediate drain, for where the ladder ends.
        self.decide_drain(&cmd, &set).await?;
        let (canary, canary_note) = self.canary_wave().await?;
        let now = self.clock.now_ms();
        let id = format!("drain-{}-{now}", cmd.pop);
        let approval = self
            .topology
            .borrow()
            .doc
            .policy
            .approval_rule("drain", cmd.force)
            .map(|rule| change::Approval {
                rule,
                approved_by: None,
                approver_role: None,
                at_ms: 0,
            });
        let record = ChangeRecord {
            regions: cmd.regions.clone(),
            role: caller.role.clone(),
            canary,
            approval,
            ..ChangeRecord::new(
                id.clone(),
                ChangeKind::Drain,
                &cmd.pop,
                &caller.actor().to_string(),
                &cmd.reason,
                steps,
                now,
            )
        };
        self.store_new_change(fence, &record).await?;
        tracing::warn!(change = %id, pop = %cmd.pop, by = %caller.identity, "drain ladder started");
        metrics::counter!("meridian_control_plane_changes_started_total", "kind" => "drain").increment(1);
        self.log.record(Event {
            at_unix_ms: now,
            actor: caller.actor(),
            role: caller.role.clone(),
            kind: EventKind::Change {
                id: id.clone(),
                pop: cmd.pop.clone(),
                from: "new".into(),
                to: "pending".into(),
                why: match (&record.canary, canary_note) {
                    (Some(wave), _) => format!("{} (canary wave: {})", cmd.reason, wave.agents.join(", ")),
                    (None, Some(note)) => format!("{} ({note})", cmd.reason),
                    (None, None) => cmd.reason.clone(),
                },
            },
        });
        Ok(record)
    }

    /// Every stored change, newest first.
    pub async fn list_changes(&self) -> Result<Vec<StoredChange>, OpError> {
        let listed = self.store.range(&self.keys.changes_prefix()).await?;
        let mut out = Vec::with_capacity(listed.kvs.len());
        for kv in listed.kvs {
            let record: ChangeRecord = serde_json::from_slice(&kv.value).map_err(|e| OpError::Corrupt {
                key: kv.key.clone(),
                reason: e.to_string(),
            })?;
            out.push(StoredChange {
                record,
                mod_revision: kv.mod_revision,
            });
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.record.created_at_ms));
        Ok(out)
    }

    /// One stored change.
    pub async fn get_change(&self, id: &str) -> Result<StoredChange, OpError> {
        let key = self.keys.change(id);
        let kv = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| OpError::NotFound(format!("no change `{id}` (see `meridianctl changes`)")))?;
        let record = serde_json::from_slice(&kv.value).map_err(|e| OpError::Corrupt {
            key,
            reason: e.to_string(),
        })?;
        Ok(StoredChange {
            record,
            mod_revision: kv.mod_revision,
        })
    }

    /// Stores `next` over the version read at `mod_revision` (fenced); a change that
    /// ended releases its hold in the same transaction. `Ok(false)`: the record
    /// moved meanwhile (look again).
    pub async fn store_change(&self, fence: &Fence, next: &ChangeRecord, mod_revision: i64) -> Result<bool, OpError> {
        let key = self.keys.change(&next.id);
        let mut ops = vec![TxnOp::put(key.clone(), encode(&key, next)?)];
        if !next.state.is_active() {
            ops.push(TxnOp::delete(self.keys.change_hold(&next.target)));
        }
        let txn = Txn::new().when([Compare::modified_at(key, mod_revision)]).and_then(ops);
        Ok(fenced_txn(self.store.as_ref(), fence, txn).await?.succeeded)
    }

    /// An operator pauses, resumes or rolls back a change; recorded as an event
    /// (and, when refused, as a refusal).
    pub async fn command_change(
        &self,
        caller: &Caller,
        fence: &Fence,
        id: &str,
        command: ChangeCommand,
        reason: &str,
    ) -> Result<ChangeRecord, OpError> {
        let result = self.command_change_unaudited(caller, fence, id, command, reason).await;
        self.audit_refusal(caller, command.name(), Some(id.to_string()), &result);
        result
    }

    async fn command_change_unaudited(
        &self,
        caller: &Caller,
        fence: &Fence,
        id: &str,
        command: ChangeCommand,
        reason: &str,
    ) -> Result<ChangeRecord, OpError> {
        let reason = if reason.trim().is_empty() {
            format!("{} by {}", command.name(), caller.identity)
        } else {
            reason.to_string()
        };
        let stored = self.get_change(id).await?;
        if stored.record.kind.is_automatic() {
            return Err(OpError::FailedPrecondition(format!(
                "change {id} is automatic: it follows the PoP's health; drain the PoP (`meridianctl drain {}`) to override it",
                stored.record.target
            )));
        }
        let now = self.clock.now_ms();
        let next = match command {
            ChangeCommand::Pause => change::pause(&stored.record, now, &reason),
            ChangeCommand::Resume => change::resume(&stored.record, now, &reason),
            ChangeCommand::Rollback => change::rollback(&stored.record, now, &reason),
            ChangeCommand::Revert => {
                change::revert(&stored.record, now, &reason, &change::ChangePolicy::default()).map(|(next, _)| next)
            }
            ChangeCommand::Approve => {
                change::approve(&stored.record, &caller.actor().to_string(), caller.role.as_deref(), now)
            }
        }
        .map_err(change_error)?;
        if command == ChangeCommand::Revert {
            // A completed change holds nothing; a newer change on the same PoP
            // owns it now, and reverting under it would undo that one too.
            if let Some(holder) = self.holder_of(&stored.record.target).await? {
                return Err(OpError::Conflict(format!(
                    "PoP `{}` is held by change {holder}: roll that one back or wait for it before reverting {id}",
                    stored.record.target
                )));
            }
            // The intents from before come back first; the record says so after.
            self.restore_before(fence, &stored.record).await?;
        }
        if !self.store_change(fence, &next, stored.mod_revision).await? {
            return Err(OpError::Conflict(format!(
                "change {id} moved while you asked (another operator, or its next step); look again with `meridianctl change show {id}`"
            )));
        }
        self.record_transition(Some(caller), &stored.record, &next);
        Ok(next)
    }

    /// Records the last transition of `next` as a `change` event.
    pub(crate) fn record_transition(&self, caller: Option<&Caller>, before: &ChangeRecord, next: &ChangeRecord) {
        let Some(t) = next.history.last() else { return };
        if before.history.len() == next.history.len() {
            return;
        }
        self.log.record(Event {
            at_unix_ms: t.at_ms,
            actor: caller.map(Caller::actor).unwrap_or(Actor::Steering),
            role: caller.and_then(|c| c.role.clone()),
            kind: EventKind::Change {
                id: next.id.clone(),
                pop: next.target.clone(),
                from: t.from.clone(),
                to: t.to.clone(),
                why: t.why.clone(),
            },
        });
    }

    /// The effect of a rung: the target keeps `weight_percent` of its weight (0: a
    /// full drain). Idempotent; retried when the drain set moves under it.
    pub async fn write_rung(
        &self,
        fence: &Fence,
        record: &ChangeRecord,
        step: usize,
        weight_percent: u8,
    ) -> Result<(), OpError> {
        if record.kind == ChangeKind::SetCapacity {
            return self
                .write_capacity(fence, record, record.capacity.as_ref(), false)
                .await;
        }
        if record.kind == ChangeKind::TopologyApply {
            // Written with the record; applying the step again only re-asserts the
            // canary wave's hold (a resumed step).
            return self.reassert_hold(fence, record).await;
        }
        for _ in 0..5 {
            let set = self.read_drain_set().await?;
            let intent = DrainIntent {
                pop: record.target.clone(),
                reason: format!("{} (change {})", record.reason, record.id),
                requested_by: record.started_by.clone(),
                at_unix_ms: self.clock.now_ms(),
                forced_past: None,
                weight_percent: (weight_percent > 0).then_some(weight_percent),
                regions: record.regions.clone(),
                anycast: record.steps.get(step).and_then(|s| s.anycast),
            };
            let mut after: Vec<&str> = set.drains.keys().map(String::as_str).collect();
            if !after.contains(&record.target.as_str()) {
                after.push(&record.target);
            }
            after.sort_unstable();
            let key = self.keys.drain(&record.target);
            let mut compares = vec![Compare::modified_at(self.keys.drain_set(), set.version)];
            let mut ops = vec![
                TxnOp::put(key.clone(), encode(&key, &intent)?),
                TxnOp::put(self.keys.drain_set(), encode(&self.keys.drain_set(), &after)?),
            ];
            // With a canary wave, the fleet is held on the plan before the rung in
            // the same transaction, so no agent outside the wave ever gets it early.
            let hold = self.hold_for(record).await?;
            if let Some((compare, put)) = hold.clone() {
                compares.push(compare);
                ops.push(put);
            }
            let txn = Txn::new().when(compares).and_then(ops);
            if fenced_txn(self.store.as_ref(), fence, txn).await?.succeeded {
                if hold.is_some() {
                    self.log.record(Event {
                        at_unix_ms: self.clock.now_ms(),
                        actor: Actor::Steering,
                        role: None,
                        kind: EventKind::Rollout {
                            change: record.id.clone(),
                            what: format!(
                                "weight {weight_percent} % goes to {} first; the rest of the fleet is held",
                                record.canary.as_ref().map(|w| w.agents.join(", ")).unwrap_or_default()
                            ),
                        },
                    });
                }
                return Ok(());
            }
            metrics::counter!("meridian_control_plane_drain_retries_total").increment(1);
        }
        Err(OpError::Conflict(
            "the drain set kept changing while a rung was written; the driver retries".into(),
        ))
    }

    /// The effect of a rollback or revert: the target's drain intent from before the
    /// change comes back (or none, when it was not drained).
    pub async fn restore_before(&self, fence: &Fence, record: &ChangeRecord) -> Result<(), OpError> {
        if record.kind == ChangeKind::SetCapacity {
            return self
                .write_capacity(fence, record, record.before_capacity.as_ref(), true)
                .await;
        }
        if record.kind == ChangeKind::TopologyApply {
            return self.restore_topology(fence, record).await;
        }
        for _ in 0..5 {
            let set = self.read_drain_set().await?;
            let key = self.keys.drain(&record.target);
            let mut after: Vec<&str> = set
                .drains
                .keys()
                .map(String::as_str)
                .filter(|p| *p != record.target)
                .collect();
            let mut ops = Vec::new();
            match &record.before {
                Some(intent) => {
                    after.push(&record.target);
                    ops.push(TxnOp::put(key.clone(), encode(&key, intent)?));
                }
                None => ops.push(TxnOp::delete(key)),
            }
            after.sort_unstable();
            ops.push(TxnOp::put(
                self.keys.drain_set(),
                encode(&self.keys.drain_set(), &after)?,
            ));
            let mut compares = vec![Compare::modified_at(self.keys.drain_set(), set.version)];
            // A canary wave's hold stays until the plan from the restored intents
            // exists: the fleet never sees the step being rolled back.
            if let Some((compare, put)) = self.hold_through_rollback(record).await? {
                compares.push(compare);
                ops.push(put);
            }
            let txn = Txn::new().when(compares).and_then(ops);
            if fenced_txn(self.store.as_ref(), fence, txn).await?.succeeded {
                return Ok(());
            }
        }
        Err(OpError::Conflict(
            "the drain set kept changing while a rollback was written; the driver retries".into(),
        ))
    }

    /// Starts a capacity change on `cmd.pop`: one step that writes the override,
    /// waits for the agents' ACKs (and a canary wave, when one is configured),
    /// bakes and analyses (utilisation above target fails it). Refused during a
    /// freeze unless overridden (checked by the caller), and while another change
    /// holds the PoP.
    pub async fn start_capacity_change(
        &self,
        caller: &Caller,
        fence: &Fence,
        cmd: SetCapacityCommand,
    ) -> Result<ChangeRecord, OpError> {
        let target = cmd.pop.clone();
        let result = self.start_capacity_change_unaudited(caller, fence, cmd).await;
        self.audit_refusal(caller, "set-capacity", Some(target), &result);
        result
    }

    async fn start_capacity_change_unaudited(
        &self,
        caller: &Caller,
        fence: &Fence,
        cmd: SetCapacityCommand,
    ) -> Result<ChangeRecord, OpError> {
        if cmd.reason.trim().is_empty() {
            return Err(OpError::Invalid {
                field: "reason",
                problem: "a capacity change needs a reason".into(),
            });
        }
        if !cmd.capacity.is_finite() || cmd.capacity <= 0.0 {
            return Err(OpError::Invalid {
                field: "capacity",
                problem: format!(
                    "must be a positive number, got {} (drain the PoP to take it out)",
                    cmd.capacity
                ),
            });
        }
        if self.topology.borrow().doc.pop(&cmd.pop).is_none() {
            return Err(OpError::NotFound(format!(
                "pop: unknown PoP `{}` (not in the applied topology)",
                cmd.pop
            )));
        }
        let now = self.clock.now_ms();
        let before_capacity = self.intents.borrow().capacity.get(&cmd.pop).cloned();
        let (canary, canary_note) = self.canary_wave().await?;
        let id = format!("capacity-{}-{now}", cmd.pop);
        let approval = self
            .topology
            .borrow()
            .doc
            .policy
            .approval_rule("set_capacity", false)
            .map(|rule| change::Approval {
                rule,
                approved_by: None,
                approver_role: None,
                at_ms: 0,
            });
        let record = ChangeRecord {
            role: caller.role.clone(),
            canary,
            approval,
            capacity: Some(meridian_core::records::CapacityOverride {
                pop: cmd.pop.clone(),
                capacity: cmd.capacity,
                reason: format!("{} (change {id})", cmd.reason),
                requested_by: caller.actor().to_string(),
                at_unix_ms: now,
                until_unix_ms: (cmd.duration_ms > 0).then(|| now.saturating_add(cmd.duration_ms)),
            }),
            before_capacity,
            ..ChangeRecord::new(
                id.clone(),
                ChangeKind::SetCapacity,
                &cmd.pop,
                &caller.actor().to_string(),
                &cmd.reason,
                vec![Step {
                    weight_percent: 100,
                    bake_ms: CAPACITY_BAKE_MS,
                    anycast: None,
                }],
                now,
            )
        };
        self.store_new_change(fence, &record).await?;
        tracing::warn!(change = %id, pop = %cmd.pop, capacity = cmd.capacity, by = %caller.identity, "capacity change started");
        metrics::counter!("meridian_control_plane_changes_started_total", "kind" => "set_capacity").increment(1);
        let why = match (&record.canary, canary_note) {
            (Some(wave), _) => format!("{} (canary wave: {})", cmd.reason, wave.agents.join(", ")),
            (None, Some(note)) => format!("{} ({note})", cmd.reason),
            (None, None) => cmd.reason.clone(),
        };
        self.log.record(Event {
            at_unix_ms: now,
            actor: caller.actor(),
            role: caller.role.clone(),
            kind: EventKind::Change {
                id: id.clone(),
                pop: cmd.pop.clone(),
                from: "new".into(),
                to: "pending".into(),
                why: format!(
                    "capacity {} → {}: {why}",
                    self.capacity_now(&cmd.pop, now),
                    cmd.capacity
                ),
            },
        });
        Ok(record)
    }

    /// The capacity steering plans with for `pop` at `now_ms` (the override in
    /// force, else the topology's).
    fn capacity_now(&self, pop: &str, now_ms: u64) -> f64 {
        let doc = self.topology.borrow().doc.clone();
        let intents = self.intents.borrow().capacity.clone();
        meridian_engine::intents::with_capacity(&doc, &intents, now_ms)
            .pop(pop)
            .map_or(0.0, |p| p.capacity)
    }

    /// Writes (or, with `None`, deletes) the capacity override of `record`'s PoP —
    /// with the canary wave's fleet hold for the change's step, or (`rolling_back`)
    /// keeping the hold through a rollback or revert.
    async fn write_capacity(
        &self,
        fence: &Fence,
        record: &ChangeRecord,
        value: Option<&meridian_core::records::CapacityOverride>,
        rolling_back: bool,
    ) -> Result<(), OpError> {
        let key = self.keys.capacity(&record.target);
        let write = match value {
            Some(v) => TxnOp::put(key.clone(), encode(&key, v)?),
            None => TxnOp::delete(key),
        };
        let hold = if rolling_back {
            self.hold_through_rollback(record).await?
        } else {
            self.hold_for(record).await?
        };
        self.write_with_hold(fence, vec![write], hold, "a capacity change was written")
            .await
    }

    /// Re-asserts the canary wave's fleet hold of `record` (none without a wave).
    async fn reassert_hold(&self, fence: &Fence, record: &ChangeRecord) -> Result<(), OpError> {
        let hold = self.hold_for(record).await?;
        if hold.is_none() {
            return Ok(());
        }
        self.write_with_hold(fence, Vec::new(), hold, "it was written").await
    }

    /// Writes `ops` with the fleet hold's compare and put (when there is one) in one
    /// fenced transaction; the hold having moved is a conflict the driver retries.
    async fn write_with_hold(
        &self,
        fence: &Fence,
        mut ops: Vec<TxnOp>,
        hold: Option<(Compare, TxnOp)>,
        while_what: &str,
    ) -> Result<(), OpError> {
        let mut compares = Vec::new();
        if let Some((compare, put)) = hold {
            compares.push(compare);
            ops.push(put);
        }
        let txn = Txn::new().when(compares).and_then(ops);
        if fenced_txn(self.store.as_ref(), fence, txn).await?.succeeded {
            return Ok(());
        }
        Err(OpError::Conflict(format!(
            "the fleet hold moved while {while_what}; the driver retries"
        )))
    }

    /// The rollback or revert of a topology apply: the document in force before it
    /// is written back (steering then computes from it with today's health), with
    /// the canary wave's hold kept until the plan from it exists.
    async fn restore_topology(&self, fence: &Fence, record: &ChangeRecord) -> Result<(), OpError> {
        let Some(before) = &record.before_topology else {
            return Err(OpError::FailedPrecondition(format!(
                "change {} kept no topology from before it; apply the one you want with `meridianctl apply`",
                record.id
            )));
        };
        let write = TxnOp::put(self.keys.topology(), before.clone().into_bytes());
        let hold = self.hold_through_rollback(record).await?;
        self.write_with_hold(fence, vec![write], hold, "the topology was restored")
            .await
    }

    /// Stores a new change record and its hold on the target in one transaction;
    /// refused while another change holds the target.
    async fn store_new_change(&self, fence: &Fence, record: &ChangeRecord) -> Result<(), OpError> {
        let key = self.keys.change(&record.id);
        let hold = self.keys.change_hold(&record.target);
        let txn = Txn::new()
            .when([Compare::Version {
                key: hold.clone(),
                op: CompareOp::Equal,
                version: 0,
            }])
            .and_then([
                TxnOp::put(key.clone(), encode(&key, record)?),
                TxnOp::put(hold.clone(), record.id.clone().into_bytes()),
            ])
            .or_else([TxnOp::get(hold)]);
        let resp = fenced_txn(self.store.as_ref(), fence, txn).await?;
        if !resp.succeeded {
            let holder = match resp.responses.first() {
                Some(meridian_store::TxnOpResponse::Get(Some(kv))) => String::from_utf8_lossy(&kv.value).to_string(),
                _ => "another change".into(),
            };
            return Err(OpError::Conflict(format!(
                "PoP `{}` is held by change {holder}: pause, roll back or wait for it first",
                record.target
            )));
        }
        Ok(())
    }

    /// Records an automatic failover (a PoP newly DOWN left the plan `version`): a
    /// completed one-step change that holds nothing.
    pub async fn record_auto_failover(&self, fence: &Fence, pop: &str, version: u64, why: &str) -> Result<(), OpError> {
        let record = change::auto_failover(pop, version, why, self.clock.now_ms());
        let key = self.keys.change(&record.id);
        let txn = Txn::new().and_then([TxnOp::put(key.clone(), encode(&key, &record)?)]);
        fenced_txn(self.store.as_ref(), fence, txn).await?;
        metrics::counter!("meridian_control_plane_changes_started_total", "kind" => "auto_failover").increment(1);
        self.record_transition(
            None,
            &ChangeRecord {
                history: Vec::new(),
                ..record.clone()
            },
            &record,
        );
        Ok(())
    }

    /// Records a slow-start step of a PoP's automatic failback on its change record
    /// (created when the recovery starts; the active one of the PoP is moved).
    pub async fn record_auto_failback(
        &self,
        fence: &Fence,
        event: &meridian_core::slow_start::SlowStartEvent,
        stages: &[f64],
        bake_ms: u64,
    ) -> Result<(), OpError> {
        use meridian_core::slow_start::SlowStartEvent as E;
        let pop = match event {
            E::Started { pop, .. } | E::Advanced { pop, .. } | E::Completed { pop } | E::Aborted { pop, .. } => pop,
        };
        let existing = self.list_changes().await?.into_iter().find(|c| {
            c.record.kind == ChangeKind::AutoFailback && c.record.target == *pop && c.record.state.is_active()
        });
        let Some(next) = change::auto_failback(
            existing.as_ref().map(|c| &c.record),
            event,
            stages,
            bake_ms,
            self.clock.now_ms(),
        ) else {
            return Ok(());
        };
        let key = self.keys.change(&next.id);
        let compare = match &existing {
            Some(c) => Compare::modified_at(key.clone(), c.mod_revision),
            None => Compare::Version {
                key: key.clone(),
                op: CompareOp::Equal,
                version: 0,
            },
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(key.clone(), encode(&key, &next)?)]);
        if fenced_txn(self.store.as_ref(), fence, txn).await?.succeeded {
            if existing.is_none() {
                metrics::counter!("meridian_control_plane_changes_started_total", "kind" => "auto_failback")
                    .increment(1);
            }
            let before = existing.map(|c| c.record).unwrap_or_else(|| ChangeRecord {
                history: Vec::new(),
                ..next.clone()
            });
            self.record_transition(None, &before, &next);
        }
        Ok(())
    }

    /// Deletes ended change records (pruning; fenced).
    pub async fn delete_changes(&self, fence: &Fence, ids: &[String]) -> Result<(), OpError> {
        for chunk in ids.chunks(64) {
            let txn = Txn::new().and_then(chunk.iter().map(|id| TxnOp::delete(self.keys.change(id))));
            fenced_txn(self.store.as_ref(), fence, txn).await?;
        }
        Ok(())
    }

    /// The change holding a PoP, if any (an undrain is refused while one does).
    pub async fn holder_of(&self, pop: &str) -> Result<Option<String>, OpError> {
        Ok(self
            .store
            .get(&self.keys.change_hold(pop))
            .await?
            .map(|kv| String::from_utf8_lossy(&kv.value).to_string()))
    }
}
