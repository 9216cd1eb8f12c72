//! Change freezes (issue [8]): a release window during which changes other than
//! remedies are refused. Drains (and drain ladders), automatic failover and
//! rollbacks are exempt — they are the remedy — and still capacity-checked;
//! topology applies, undrains and plan restores are refused unless an admin
//! overrides the freeze, which is recorded.

use meridian_core::records::FreezeRecord;

use super::*;

/// The longest freeze one call may set.
pub const MAX_FREEZE_MS: u64 = 14 * 24 * 3600 * 1000;

impl Operations {
    /// The freeze in force at `now`, if any.
    pub async fn active_freeze(&self) -> Result<Option<FreezeRecord>, OpError> {
        let key = self.keys.freeze();
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let record: FreezeRecord = serde_json::from_slice(&kv.value).map_err(|e| OpError::Corrupt {
            key,
            reason: e.to_string(),
        })?;
        Ok((record.until_unix_ms > self.clock.now_ms()).then_some(record))
    }

    /// Freezes changes for `duration_ms`.
    pub async fn freeze(
        &self,
        caller: &Caller,
        fence: &Fence,
        reason: &str,
        duration_ms: u64,
    ) -> Result<FreezeRecord, OpError> {
        let result = self.freeze_unaudited(caller, fence, reason, duration_ms).await;
        self.audit_refusal(caller, "freeze", None, &result);
        result
    }

    async fn freeze_unaudited(
        &self,
        caller: &Caller,
        fence: &Fence,
        reason: &str,
        duration_ms: u64,
    ) -> Result<FreezeRecord, OpError> {
        non_empty_reason(reason, "a freeze")?;
        if !(60_000..=MAX_FREEZE_MS).contains(&duration_ms) {
            return Err(OpError::Invalid {
                field: "duration",
                problem: format!("a freeze lasts between 1m and 14d, got {} s", duration_ms / 1000),
            });
        }
        let now = self.clock.now_ms();
        let record = FreezeRecord {
            reason: reason.to_string(),
            requested_by: caller.identity.to_string(),
            at_unix_ms: now,
            until_unix_ms: now + duration_ms,
        };
        let key = self.keys.freeze();
        let txn = Txn::new().and_then([TxnOp::put(key.clone(), encode(&key, &record)?)]);
        fenced_txn(self.store.as_ref(), fence, txn).await?;
        tracing::warn!(by = %caller.identity, until = record.until_unix_ms, reason, "changes frozen");
        self.log.record(Event {
            at_unix_ms: now,
            actor: caller.actor(),
            role: caller.role.clone(),
            kind: EventKind::Operator(OperatorAction::Frozen {
                until_unix_ms: record.until_unix_ms,
                reason: reason.to_string(),
            }),
        });
        Ok(record)
    }

    /// Lifts the freeze; `Ok(false)` when there was none.
    pub async fn unfreeze(&self, caller: &Caller, fence: &Fence, reason: &str) -> Result<bool, OpError> {
        let was = self.active_freeze().await?.is_some();
        let txn = Txn::new().and_then([TxnOp::delete(self.keys.freeze())]);
        fenced_txn(self.store.as_ref(), fence, txn).await?;
        if was {
            self.log.record(Event {
                at_unix_ms: self.clock.now_ms(),
                actor: caller.actor(),
                role: caller.role.clone(),
                kind: EventKind::Operator(OperatorAction::Unfrozen {
                    reason: reason.to_string(),
                }),
            });
        }
        Ok(was)
    }

    /// Whether `operation` may run now: always outside a freeze; during one only
    /// with `override_freeze` from an admin (or with roles off), which is recorded.
    /// A refusal is recorded too and names the freeze and what to do.
    pub async fn check_freeze(
        &self,
        caller: &Caller,
        operation: &str,
        override_freeze: bool,
        reason: &str,
    ) -> Result<(), OpError> {
        let Some(freeze) = self.active_freeze().await? else {
            return Ok(());
        };
        let result = if !override_freeze {
            Err(OpError::FailedPrecondition(format!(
                "changes are frozen until {} (unix ms) by {}: {}. Drains and rollbacks are exempt; an admin may override with --override-freeze and a reason",
                freeze.until_unix_ms, freeze.requested_by, freeze.reason
            )))
        } else if caller.role.as_deref().is_some_and(|r| r != "admin") {
            Err(OpError::PermissionDenied(format!(
                "overriding a freeze needs the admin role; {} has {}",
                caller.identity,
                caller.role.as_deref().unwrap_or("none")
            )))
        } else {
            Ok(())
        };
        if result.is_ok() {
            tracing::warn!(by = %caller.identity, operation, "freeze overridden");
            self.log.record(Event {
                at_unix_ms: self.clock.now_ms(),
                actor: caller.actor(),
                role: caller.role.clone(),
                kind: EventKind::Operator(OperatorAction::FreezeOverridden {
                    operation: operation.to_string(),
                    reason: reason.to_string(),
                }),
            });
        }
        self.audit_refusal(caller, operation, None, &result);
        result
    }
}
