//! Canary waves (issue [8]): the fleet hold (`plan/current/fleet-hold`) a change's
//! step writes with its intent, and the driver's effects on it — release after the
//! wave passed, keep the fleet held through a rollback until the plan from the
//! restored intents exists, and clean up a hold nobody owns any more.
//!
//! One hold at a time: a step of another change that wants a wave while one is in
//! progress waits (its apply is retried each tick), so two waves never mix.

use meridian_core::records::{FleetHold, PlanPointer};
use meridian_engine::change::{CanaryWave, ChangeKind, ChangeRecord};
use meridian_store::{Compare, Fence, TxnOp};

use super::*;

/// After a rollback, the fleet is held at most this long for the plan computed from
/// the restored intents (when they change nothing worth publishing, none comes).
pub const ROLLBACK_HOLD_GRACE_MS: u64 = 10_000;

/// The hold in the store and its mod revision.
#[derive(Clone, Debug)]
pub struct StoredHold {
    pub hold: FleetHold,
    pub mod_revision: i64,
}

impl Operations {
    /// The canary wave for a change starting now: the policy's canary agents that
    /// are connected (fixed in the record, so every leader walks the same wave).
    /// `None` with no canary configured; with canary agents configured but none
    /// connected, `None` and a note saying so (recorded with the change).
    pub(crate) async fn canary_wave(&self) -> Result<(Option<CanaryWave>, Option<String>), OpError> {
        let policy = self.topology.borrow().doc.policy.clone();
        if policy.canary_agents.is_empty() {
            return Ok((None, None));
        }
        let connected: std::collections::BTreeSet<String> =
            crate::plan_api::list_agents(self.store.as_ref(), &self.keys)
                .await?
                .into_iter()
                .map(|(_, a)| a.agent_id)
                .collect();
        let agents: Vec<String> = policy
            .canary_agents
            .iter()
            .filter(|a| connected.contains(*a))
            .cloned()
            .collect();
        if agents.is_empty() {
            return Ok((
                None,
                Some(format!(
                    "no canary agent connected (policy.canary_agents: {}): every step goes to the fleet at once",
                    policy.canary_agents.join(", ")
                )),
            ));
        }
        let bake_ms = u64::try_from(policy.canary_bake.as_millis()).unwrap_or(u64::MAX);
        Ok((Some(CanaryWave { agents, bake_ms }), None))
    }

    /// The hold in force, if any.
    pub async fn read_hold(&self) -> Result<Option<StoredHold>, OpError> {
        let key = self.keys.plan_fleet_hold();
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let hold = serde_json::from_slice(&kv.value).map_err(|e| OpError::Corrupt {
            key,
            reason: e.to_string(),
        })?;
        Ok(Some(StoredHold {
            hold,
            mod_revision: kv.mod_revision,
        }))
    }

    /// The plan version in force (0: none).
    pub(crate) async fn plan_version_now(&self) -> Result<u64, OpError> {
        let key = self.keys.plan_current();
        Ok(match self.store.get(&key).await? {
            None => 0,
            Some(kv) => {
                serde_json::from_slice::<PlanPointer>(&kv.value)
                    .map_err(|e| OpError::Corrupt {
                        key,
                        reason: e.to_string(),
                    })?
                    .version
            }
        })
    }

    /// The transaction parts that hold the fleet for `record`'s step: the hold is
    /// put (keeping the fleet's version when this change already holds it, so a
    /// resumed step does not hold the fleet on its own canary plan) and the write
    /// compares the hold's revision. Another change's wave in progress: this step
    /// waits (`Conflict`).
    pub(crate) async fn hold_for(&self, record: &ChangeRecord) -> Result<Option<(Compare, TxnOp)>, OpError> {
        let Some(wave) = &record.canary else {
            return Ok(None);
        };
        let key = self.keys.plan_fleet_hold();
        let existing = self.read_hold().await?;
        let (fleet_version, compare) = match &existing {
            Some(s) if s.hold.change == record.id => {
                (s.hold.fleet_version, Compare::modified_at(key.clone(), s.mod_revision))
            }
            Some(s) => {
                return Err(OpError::Conflict(format!(
                    "the canary wave of change {} is in progress; change {} waits for it",
                    s.hold.change, record.id
                )))
            }
            None => (
                self.plan_version_now().await?,
                Compare::Version {
                    key: key.clone(),
                    op: meridian_store::CompareOp::Equal,
                    version: 0,
                },
            ),
        };
        let hold = FleetHold {
            change: record.id.clone(),
            fleet_version,
            canary: wave.agents.clone(),
            since_unix_ms: self.clock.now_ms(),
            release_after: None,
        };
        Ok(Some((compare, TxnOp::put(key.clone(), encode(&key, &hold)?))))
    }

    /// The canary wave of `record`'s step passed: the fleet gets the newest plan.
    pub async fn release_fleet(&self, fence: &Fence, record: &ChangeRecord) -> Result<(), OpError> {
        let Some(stored) = self.read_hold().await? else {
            return Ok(());
        };
        if stored.hold.change != record.id {
            return Ok(());
        }
        let key = self.keys.plan_fleet_hold();
        let txn = Txn::new()
            .when([Compare::modified_at(key.clone(), stored.mod_revision)])
            .and_then([TxnOp::delete(key)]);
        if fenced_txn(self.store.as_ref(), fence, txn).await?.succeeded {
            metrics::counter!("meridian_control_plane_fleet_holds_released_total", "by" => "canary_passed")
                .increment(1);
            self.log.record(Event {
                at_unix_ms: self.clock.now_ms(),
                actor: Actor::Steering,
                role: None,
                kind: EventKind::Rollout {
                    change: record.id.clone(),
                    what: format!(
                        "passed; the fleet is released from v{} to the newest plan",
                        stored.hold.fleet_version
                    ),
                },
            });
            return Ok(());
        }
        Err(OpError::Conflict(
            "the fleet hold moved while it was released; retried".into(),
        ))
    }

    /// The transaction parts of a rollback for the hold: a hold of `record` stays,
    /// marked to end once a plan newer than the one in force exists (computed from
    /// the restored intents), so the fleet never sees the rolled-back step.
    pub(crate) async fn hold_through_rollback(
        &self,
        record: &ChangeRecord,
    ) -> Result<Option<(Compare, TxnOp)>, OpError> {
        let Some(stored) = self.read_hold().await? else {
            return Ok(None);
        };
        if stored.hold.change != record.id {
            return Ok(None);
        }
        let key = self.keys.plan_fleet_hold();
        let hold = FleetHold {
            release_after: Some(self.plan_version_now().await?),
            since_unix_ms: self.clock.now_ms(),
            ..stored.hold
        };
        Ok(Some((
            Compare::modified_at(key.clone(), stored.mod_revision),
            TxnOp::put(key.clone(), encode(&key, &hold)?),
        )))
    }

    /// Deletes a hold that no active change owns any more, or a rollback's hold
    /// whose plan has come (or whose grace passed). `active`: the ids of the active
    /// changes. Returns whether one was deleted.
    pub async fn clean_up_hold(&self, fence: &Fence, active: &[&str]) -> Result<bool, OpError> {
        let Some(stored) = self.read_hold().await? else {
            return Ok(false);
        };
        let h = &stored.hold;
        let why = match h.release_after {
            Some(v) if self.plan_version_now().await? > v => {
                format!("rolled back; the fleet skips to the plan computed after v{v}")
            }
            Some(_) if self.clock.now_ms() >= h.since_unix_ms.saturating_add(ROLLBACK_HOLD_GRACE_MS) => {
                "rolled back; no new plan came from the restored intents, the fleet is released".to_string()
            }
            Some(_) => return Ok(false),
            None if !active.contains(&h.change.as_str()) => {
                "its change is no longer active; the fleet is released".into()
            }
            None => return Ok(false),
        };
        let key = self.keys.plan_fleet_hold();
        let txn = Txn::new()
            .when([Compare::modified_at(key.clone(), stored.mod_revision)])
            .and_then([TxnOp::delete(key)]);
        if !fenced_txn(self.store.as_ref(), fence, txn).await?.succeeded {
            return Ok(false);
        }
        metrics::counter!("meridian_control_plane_fleet_holds_released_total", "by" => "cleanup").increment(1);
        self.log.record(Event {
            at_unix_ms: self.clock.now_ms(),
            actor: Actor::Steering,
            role: None,
            kind: EventKind::Rollout {
                change: h.change.clone(),
                what: why,
            },
        });
        Ok(true)
    }
}

/// How long a staged topology apply bakes on the fleet once every agent has it.
pub const TOPOLOGY_BAKE_MS: u64 = 10_000;

/// A topology apply about to be staged: what its change record is made of, decided
/// before the apply's transaction (which adds the document it replaces).
#[derive(Clone, Debug)]
pub(crate) struct StagedApply {
    id: String,
    wave: CanaryWave,
    fleet_version: u64,
    now_ms: u64,
    started_by: String,
    role: Option<String>,
    reason: String,
}

impl StagedApply {
    /// The change record, given the topology in force before the apply (JSON of it
    /// kept for a rollback) and its revision (plans from a later one carry it).
    pub(crate) fn record(&self, old: &meridian_core::topology::TopologyDoc, old_rev: i64) -> ChangeRecord {
        ChangeRecord {
            role: self.role.clone(),
            canary: Some(self.wave.clone()),
            topology_revision: Some(old_rev),
            before_topology: (old_rev != 0).then(|| serde_json::to_string(old).unwrap_or_default()),
            ..ChangeRecord::new(
                self.id.clone(),
                ChangeKind::TopologyApply,
                TOPOLOGY_TARGET,
                &self.started_by,
                &self.reason,
                vec![meridian_engine::change::Step {
                    weight_percent: 100,
                    bake_ms: TOPOLOGY_BAKE_MS,
                    anycast: None,
                }],
                self.now_ms,
            )
        }
    }
}

/// The target a topology change holds.
pub const TOPOLOGY_TARGET: &str = "topology";

impl Operations {
    /// Whether a topology apply now is staged through a canary wave (one is
    /// configured and connected), and what its record is made of. Another wave in
    /// progress: the apply waits (`Conflict`).
    pub(crate) async fn stage_topology_apply(
        &self,
        caller: &Caller,
        reason: &str,
    ) -> Result<Option<StagedApply>, OpError> {
        let (Some(wave), _) = self.canary_wave().await? else {
            return Ok(None);
        };
        if let Some(h) = self.read_hold().await? {
            return Err(OpError::Conflict(format!(
                "the canary wave of change {} is in progress; apply the topology after it (`meridianctl change show {}`)",
                h.hold.change, h.hold.change
            )));
        }
        let now_ms = self.clock.now_ms();
        Ok(Some(StagedApply {
            id: format!("topology-{now_ms}"),
            wave,
            fleet_version: self.plan_version_now().await?,
            now_ms,
            started_by: caller.actor().to_string(),
            role: caller.role.clone(),
            reason: reason.to_string(),
        }))
    }

    /// The compares and writes a staged apply adds to the topology's transaction:
    /// no other topology change active, no fleet hold in force; the record, its
    /// hold on the topology and the fleet hold.
    pub(crate) fn staged_txn(
        &self,
        stage: &StagedApply,
        record: &ChangeRecord,
    ) -> Result<(Vec<Compare>, Vec<TxnOp>), OpError> {
        let absent = |key: String| Compare::Version {
            key,
            op: meridian_store::CompareOp::Equal,
            version: 0,
        };
        let record_key = self.keys.change(&record.id);
        let hold_key = self.keys.plan_fleet_hold();
        let hold = FleetHold {
            change: record.id.clone(),
            fleet_version: stage.fleet_version,
            canary: stage.wave.agents.clone(),
            since_unix_ms: stage.now_ms,
            release_after: None,
        };
        Ok((
            vec![absent(self.keys.change_hold(TOPOLOGY_TARGET)), absent(hold_key.clone())],
            vec![
                TxnOp::put(record_key.clone(), encode(&record_key, record)?),
                TxnOp::put(self.keys.change_hold(TOPOLOGY_TARGET), record.id.clone().into_bytes()),
                TxnOp::put(hold_key.clone(), encode(&hold_key, &hold)?),
            ],
        ))
    }

    /// Records that a staged apply started (its record is stored with the apply).
    pub(crate) fn record_staged_apply(&self, caller: &Caller, record: &ChangeRecord) {
        metrics::counter!("meridian_control_plane_changes_started_total", "kind" => "topology_apply").increment(1);
        self.log.record(Event {
            at_unix_ms: record.created_at_ms,
            actor: caller.actor(),
            role: caller.role.clone(),
            kind: EventKind::Change {
                id: record.id.clone(),
                pop: record.target.clone(),
                from: "new".into(),
                to: "pending".into(),
                why: format!(
                    "{} (canary wave: {})",
                    record.reason,
                    record.canary.as_ref().map(|w| w.agents.join(", ")).unwrap_or_default()
                ),
            },
        });
    }
}
