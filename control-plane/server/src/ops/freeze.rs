//! Change freezes (issue [8]): a release window during which changes other than
//! remedies are refused. Drains (and drain ladders), automatic failover and
//! rollbacks are exempt — they are the remedy — and still capacity-checked.
//!
//! A freeze is global (`intents/freeze`), per PoP (`intents/freezes/pop/<id>`) or
//! per client region (`intents/freezes/region/<id>`), each with its own reason,
//! author and end:
//! - the global freeze refuses every non-exempt operation;
//! - a PoP freeze refuses non-exempt operations on that PoP (undrain, set-capacity);
//! - operations that touch every PoP and region (topology apply, plan restore) are
//!   refused by any freeze in force.
//!
//! A refused operation runs anyway when an admin overrides the freeze, which is
//! recorded naming the freeze(s) overridden.

use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use meridian_core::records::{FreezeRecord, FreezeScope};

use super::*;

/// The longest freeze one call may set.
pub const MAX_FREEZE_MS: u64 = 14 * 24 * 3600 * 1000;

/// What a freeze-checked operation touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreezeTarget<'a> {
    /// One PoP (undrain, set-capacity): refused by the global freeze and that
    /// PoP's.
    Pop(&'a str),
    /// Every PoP and region (topology apply, plan restore): refused by any freeze.
    Edge,
}

impl FreezeTarget<'_> {
    /// Whether a freeze of `scope` refuses an operation on this target.
    pub fn frozen_by(&self, scope: &FreezeScope) -> bool {
        match (self, scope) {
            (_, FreezeScope::Global) | (FreezeTarget::Edge, _) => true,
            (FreezeTarget::Pop(pop), FreezeScope::Pop(frozen)) => pop == frozen,
            (FreezeTarget::Pop(_), FreezeScope::Region(_)) => false,
        }
    }
}

/// The scopes a request names: the global freeze when it names no PoP and no
/// region, else one scope per distinct PoP and region.
pub fn requested_scopes(pops: &[String], regions: &[String]) -> Vec<FreezeScope> {
    if pops.is_empty() && regions.is_empty() {
        return vec![FreezeScope::Global];
    }
    let scopes: BTreeSet<FreezeScope> = pops
        .iter()
        .map(|p| FreezeScope::Pop(p.trim().to_string()))
        .chain(regions.iter().map(|r| FreezeScope::Region(r.trim().to_string())))
        .collect();
    scopes.into_iter().collect()
}

/// RFC 3339 (seconds) for messages.
fn rfc3339(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}

/// How to lift one freeze with meridianctl.
fn unfreeze_hint(scope: &FreezeScope) -> String {
    match scope {
        FreezeScope::Global => "meridianctl unfreeze".into(),
        FreezeScope::Pop(id) => format!("meridianctl unfreeze --pop {id}"),
        FreezeScope::Region(id) => format!("meridianctl unfreeze --region {id}"),
    }
}

/// A scope with its reason prefixed, for the event log (whose freeze events carry
/// no scope of their own): the global freeze's reason as is.
fn scoped_reason(scope: &FreezeScope, reason: &str) -> String {
    match scope {
        FreezeScope::Global => reason.to_string(),
        _ => format!("{scope}: {reason}"),
    }
}

impl Operations {
    /// The global freeze in force now, if any.
    pub async fn active_freeze(&self) -> Result<Option<FreezeRecord>, OpError> {
        Ok(self.active_freezes().await?.into_iter().find(|f| f.scope.is_global()))
    }

    /// Every freeze in force now: the global one first, then PoPs, then regions
    /// (each sorted by id). Ended freezes are left out.
    pub async fn active_freezes(&self) -> Result<Vec<FreezeRecord>, OpError> {
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        if let Some(kv) = self.store.get(&self.keys.freeze()).await? {
            let mut record = decode_freeze(&kv.key, &kv.value)?;
            record.scope = FreezeScope::Global;
            out.push(record);
        }
        let prefix = self.keys.freezes_prefix();
        for kv in self.store.range(&prefix).await?.kvs {
            let rest = kv.key.strip_prefix(&prefix).unwrap_or_default();
            let scope = match rest.split_once('/') {
                Some(("pop", id)) if !id.is_empty() => FreezeScope::Pop(id.to_string()),
                Some(("region", id)) if !id.is_empty() => FreezeScope::Region(id.to_string()),
                _ => {
                    tracing::warn!(key = %kv.key, "unknown freeze key ignored");
                    continue;
                }
            };
            let mut record = decode_freeze(&kv.key, &kv.value)?;
            record.scope = scope;
            out.push(record);
        }
        out.retain(|f| f.until_unix_ms > now);
        out.sort_by(|a, b| a.scope.cmp(&b.scope));
        Ok(out)
    }

    /// Freezes changes in each of `scopes` (see [`requested_scopes`]) for
    /// `duration_ms`, replacing a freeze of the same scope. Every PoP and region
    /// named must be in the applied topology; all are written in one transaction
    /// or none is. Returns the freezes written.
    pub async fn freeze(
        &self,
        caller: &Caller,
        fence: &Fence,
        reason: &str,
        duration_ms: u64,
        scopes: &[FreezeScope],
    ) -> Result<Vec<FreezeRecord>, OpError> {
        let result = self.freeze_unaudited(caller, fence, reason, duration_ms, scopes).await;
        self.audit_refusal(caller, "freeze", scope_list(scopes), &result);
        result
    }

    async fn freeze_unaudited(
        &self,
        caller: &Caller,
        fence: &Fence,
        reason: &str,
        duration_ms: u64,
        scopes: &[FreezeScope],
    ) -> Result<Vec<FreezeRecord>, OpError> {
        non_empty_reason(reason, "a freeze")?;
        if !(60_000..=MAX_FREEZE_MS).contains(&duration_ms) {
            return Err(OpError::Invalid {
                field: "duration",
                problem: format!("a freeze lasts between 1m and 14d, got {} s", duration_ms / 1000),
            });
        }
        let scopes = if scopes.is_empty() {
            vec![FreezeScope::Global]
        } else {
            scopes.to_vec()
        };
        self.check_known(&scopes)?;
        let now = self.clock.now_ms();
        let mut records = Vec::with_capacity(scopes.len());
        let mut ops = Vec::with_capacity(scopes.len());
        for scope in scopes {
            let record = FreezeRecord {
                reason: reason.to_string(),
                requested_by: caller.identity.to_string(),
                at_unix_ms: now,
                until_unix_ms: now + duration_ms,
                scope,
            };
            let key = self.keys.freeze_of(&record.scope);
            ops.push(TxnOp::put(key.clone(), encode(&key, &record)?));
            records.push(record);
        }
        fenced_txn(self.store.as_ref(), fence, Txn::new().and_then(ops)).await?;
        for record in &records {
            tracing::warn!(
                by = %caller.identity,
                scope = %record.scope,
                until = record.until_unix_ms,
                reason,
                "changes frozen"
            );
            self.log.record(Event {
                at_unix_ms: now,
                actor: caller.actor(),
                role: caller.role.clone(),
                kind: EventKind::Operator(OperatorAction::Frozen {
                    until_unix_ms: record.until_unix_ms,
                    reason: scoped_reason(&record.scope, reason),
                }),
            });
        }
        Ok(records)
    }

    /// Every PoP and region named must be in the applied topology.
    fn check_known(&self, scopes: &[FreezeScope]) -> Result<(), OpError> {
        let applied = self.topology.borrow().clone();
        for scope in scopes {
            match scope {
                FreezeScope::Global => {}
                FreezeScope::Pop(id) if id.is_empty() => {
                    return Err(OpError::Invalid {
                        field: "pops",
                        problem: "an empty PoP id".into(),
                    })
                }
                FreezeScope::Region(id) if id.is_empty() => {
                    return Err(OpError::Invalid {
                        field: "regions",
                        problem: "an empty region id".into(),
                    })
                }
                FreezeScope::Pop(id) if applied.doc.pop(id).is_none() => {
                    return Err(OpError::NotFound(format!(
                        "pops: unknown PoP `{id}` (not in the applied topology)"
                    )))
                }
                FreezeScope::Region(id) if !applied.doc.regions.iter().any(|r| &r.id == id) => {
                    return Err(OpError::NotFound(format!(
                        "regions: unknown client region `{id}` (not in the applied topology)"
                    )))
                }
                FreezeScope::Pop(_) | FreezeScope::Region(_) => {}
            }
        }
        Ok(())
    }

    /// Lifts the freezes of `scopes` (the global one when empty); the others stay.
    /// Returns those of them that were in force. A PoP or region no longer in the
    /// topology can still be unfrozen.
    pub async fn unfreeze(
        &self,
        caller: &Caller,
        fence: &Fence,
        reason: &str,
        scopes: &[FreezeScope],
    ) -> Result<Vec<FreezeRecord>, OpError> {
        let scopes = if scopes.is_empty() {
            vec![FreezeScope::Global]
        } else {
            scopes.to_vec()
        };
        if scopes.iter().any(|s| !s.is_global() && s.target().is_empty()) {
            return Err(OpError::Invalid {
                field: "pops",
                problem: "an empty PoP or region id".into(),
            });
        }
        let lifted: Vec<FreezeRecord> = self
            .active_freezes()
            .await?
            .into_iter()
            .filter(|f| scopes.contains(&f.scope))
            .collect();
        let ops = scopes.iter().map(|s| TxnOp::delete(self.keys.freeze_of(s)));
        fenced_txn(self.store.as_ref(), fence, Txn::new().and_then(ops)).await?;
        for record in &lifted {
            tracing::warn!(by = %caller.identity, scope = %record.scope, reason, "changes unfrozen");
            self.log.record(Event {
                at_unix_ms: self.clock.now_ms(),
                actor: caller.actor(),
                role: caller.role.clone(),
                kind: EventKind::Operator(OperatorAction::Unfrozen {
                    reason: scoped_reason(&record.scope, reason),
                }),
            });
        }
        Ok(lifted)
    }

    /// Whether `operation` on `target` may run now: always when no freeze in force
    /// covers the target; else only with `override_freeze` from an admin (or with
    /// roles off), which is recorded naming the freezes overridden. A refusal is
    /// recorded too and names the freeze that fired and what to do.
    pub async fn check_freeze(
        &self,
        caller: &Caller,
        operation: &str,
        target: FreezeTarget<'_>,
        override_freeze: bool,
        reason: &str,
    ) -> Result<(), OpError> {
        let fired: Vec<FreezeRecord> = self
            .active_freezes()
            .await?
            .into_iter()
            .filter(|f| target.frozen_by(&f.scope))
            .collect();
        let Some(freeze) = fired.first() else {
            return Ok(());
        };
        let result = if !override_freeze {
            Err(OpError::FailedPrecondition(refusal(
                operation,
                target,
                freeze,
                &fired[1..],
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
            let scopes = fired.iter().map(|f| f.scope.to_string()).collect::<Vec<_>>().join(", ");
            tracing::warn!(by = %caller.identity, operation, freezes = %scopes, "freeze overridden");
            self.log.record(Event {
                at_unix_ms: self.clock.now_ms(),
                actor: caller.actor(),
                role: caller.role.clone(),
                kind: EventKind::Operator(OperatorAction::FreezeOverridden {
                    operation: format!("{} ({scopes} freeze)", operation_on(operation, target)),
                    reason: reason.to_string(),
                }),
            });
        }
        let audited = match target {
            FreezeTarget::Pop(pop) => Some(pop.to_string()),
            FreezeTarget::Edge => None,
        };
        self.audit_refusal(caller, operation, audited, &result);
        result
    }
}

/// `set-capacity of fra1`, `apply-topology`.
fn operation_on(operation: &str, target: FreezeTarget<'_>) -> String {
    match target {
        FreezeTarget::Pop(pop) => format!("{operation} of {pop}"),
        FreezeTarget::Edge => operation.to_string(),
    }
}

/// The refusal: which freeze fired (scope, who, until, why), how many others
/// would too, and the ways out.
fn refusal(operation: &str, target: FreezeTarget<'_>, freeze: &FreezeRecord, others: &[FreezeRecord]) -> String {
    let until = rfc3339(freeze.until_unix_ms);
    let by = &freeze.requested_by;
    let why = &freeze.reason;
    let mut out = match (&freeze.scope, target) {
        (FreezeScope::Global, _) => format!("changes are frozen until {until} (global freeze by {by}): {why}"),
        (scope, FreezeTarget::Pop(_)) => {
            format!(
                "changes to {scope} are frozen until {until} ({} freeze by {by}): {why}",
                scope.kind()
            )
        }
        (scope, FreezeTarget::Edge) => format!(
            "{operation} touches every PoP and region, and {scope} is frozen until {until} ({} freeze by {by}): {why}",
            scope.kind()
        ),
    };
    if !others.is_empty() {
        let names = others
            .iter()
            .map(|f| f.scope.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(" (also frozen: {names})"));
    }
    out.push_str(&format!(
        ". Drains and rollbacks are exempt; an admin may override with --override-freeze and a reason, or lift it with `{}`",
        unfreeze_hint(&freeze.scope)
    ));
    out
}

fn decode_freeze(key: &str, value: &[u8]) -> Result<FreezeRecord, OpError> {
    serde_json::from_slice(value).map_err(|e| OpError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// `pop fra1, region eu-west` for audit records; `None` for the global freeze.
fn scope_list(scopes: &[FreezeScope]) -> Option<String> {
    (!scopes.is_empty() && !scopes.iter().all(FreezeScope::is_global))
        .then(|| scopes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
}
