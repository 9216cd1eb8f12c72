//! Versioned plans in the store: the leader publishes, every replica follows.
//!
//! A publish is one fenced transaction that also compares the plan pointer's mod
//! revision with the one the version was read at, so versions only go up by one,
//! are never skipped or repeated, and a deposed leader cannot publish. History keeps
//! every version (`plan/history/<version>`) until compaction of old versions, which
//! is a later concern (plans are small).

use std::sync::Arc;

use meridian_core::keys::Keys;
use meridian_core::records::{PlanPointer, StoredPlan};
use meridian_store::election::fenced_txn;
use meridian_store::follow::{FollowEvent, Follower};
use meridian_store::{Compare, CompareOp, Fence, Revision, Store, StoreError, Txn, TxnOp, WatchEvent};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Why a plan operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("plan record at {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("another publish landed first (plan pointer now at revision {0}); recompute and retry")]
    Conflict(Revision),
    #[error("plan version {0} does not exist")]
    NoSuchVersion(u64),
    /// Steering must not publish while an operator's pin is in force; checked in the
    /// publishing transaction itself, not only in memory.
    #[error("steering is pinned to plan version {0} (restore-plan); nothing published")]
    Pinned(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The current pointer: (version, pointer mod revision); (0, 0) when none.
pub async fn current_pointer(store: &dyn Store, keys: &Keys) -> Result<(u64, Revision), PlanError> {
    let key = keys.plan_current();
    match store.get(&key).await? {
        None => Ok((0, 0)),
        Some(kv) => {
            let p: PlanPointer = decode(&key, &kv.value)?;
            Ok((p.version, kv.mod_revision))
        }
    }
}

/// Loads one version.
pub async fn load(store: &dyn Store, keys: &Keys, version: u64) -> Result<StoredPlan, PlanError> {
    let key = keys.plan_version(version);
    match store.get(&key).await? {
        None => Err(PlanError::NoSuchVersion(version)),
        Some(kv) => decode(&key, &kv.value),
    }
}

/// Loads the current plan, if any.
pub async fn load_current(store: &dyn Store, keys: &Keys) -> Result<Option<StoredPlan>, PlanError> {
    let (version, _) = current_pointer(store, keys).await?;
    if version == 0 {
        return Ok(None);
    }
    load(store, keys, version).await.map(Some)
}

/// Publishes `plan` as the next version under `fence`. `plan.version` is ignored and
/// set here. Returns the stored plan. Used by a restore, which pins first.
pub async fn publish(store: &dyn Store, keys: &Keys, fence: &Fence, plan: StoredPlan) -> Result<StoredPlan, PlanError> {
    publish_with(store, keys, fence, plan, false).await
}

/// [`publish`] for the steering loop: the same transaction also requires that no
/// plan pin exists, so a pin that landed after steering last looked (or one a new
/// leader has not loaded yet) stops the publication (rule `plan-pin`).
pub async fn publish_unpinned(
    store: &dyn Store,
    keys: &Keys,
    fence: &Fence,
    plan: StoredPlan,
) -> Result<StoredPlan, PlanError> {
    publish_with(store, keys, fence, plan, true).await
}

async fn publish_with(
    store: &dyn Store,
    keys: &Keys,
    fence: &Fence,
    mut plan: StoredPlan,
    require_unpinned: bool,
) -> Result<StoredPlan, PlanError> {
    let (current, pointer_rev) = current_pointer(store, keys).await?;
    plan.version = current + 1;
    let pointer = encode(&keys.plan_current(), &PlanPointer { version: plan.version })?;
    let body = encode(&keys.plan_version(plan.version), &plan)?;
    let mut compares = vec![Compare::modified_at(keys.plan_current(), pointer_rev)];
    if require_unpinned {
        compares.push(Compare::Version {
            key: keys.plan_pin(),
            op: CompareOp::Equal,
            version: 0,
        });
    }
    let txn = Txn::new()
        .when(compares)
        .and_then([
            TxnOp::put(keys.plan_version(plan.version), body),
            TxnOp::put(keys.plan_current(), pointer),
        ])
        .or_else([TxnOp::get(keys.plan_current()), TxnOp::get(keys.plan_pin())]);
    let resp = fenced_txn(store, fence, txn).await?;
    if !resp.succeeded {
        if require_unpinned {
            if let Some(meridian_store::TxnOpResponse::Get(Some(kv))) = resp.responses.get(1) {
                let pinned = serde_json::from_slice::<meridian_core::records::PlanPin>(&kv.value)
                    .map(|p| p.version)
                    .unwrap_or(0);
                return Err(PlanError::Pinned(pinned));
            }
        }
        let now = match resp.responses.first() {
            Some(meridian_store::TxnOpResponse::Get(Some(kv))) => kv.mod_revision,
            _ => 0,
        };
        return Err(PlanError::Conflict(now));
    }
    metrics::gauge!("meridian_control_plane_plan_version").set(plan.version as f64);
    metrics::counter!("meridian_control_plane_plans_published_total").increment(1);
    Ok(plan)
}

/// The newest `limit` versions (newest first).
pub async fn history(store: &dyn Store, keys: &Keys, limit: usize) -> Result<Vec<StoredPlan>, PlanError> {
    let listed = store.range(&keys.plan_history_prefix()).await?;
    let mut out = Vec::new();
    for kv in listed.kvs.iter().rev().take(limit) {
        out.push(decode(&kv.key, &kv.value)?);
    }
    Ok(out)
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, PlanError> {
    serde_json::from_slice(bytes).map_err(|e| PlanError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(key: &str, value: &T) -> Result<Vec<u8>, PlanError> {
    serde_json::to_vec(value).map_err(|e| PlanError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// Follows the plan pointer and publishes the current plan (every replica runs this;
/// agents are served from it). Versions only go forward, so a pointer seen again
/// after the store follower re-lists changes nothing.
pub async fn follow(
    store: Arc<dyn Store>,
    keys: Keys,
    tx: watch::Sender<Option<Arc<StoredPlan>>>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let key = keys.plan_current();
    let mut follower = Follower::new(store.clone(), key.clone());
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            event = follower.next() => event,
        };
        let pointers: Vec<Vec<u8>> = match event {
            FollowEvent::Snapshot { kvs, .. } => {
                kvs.into_iter().filter(|kv| kv.key == key).map(|kv| kv.value).collect()
            }
            FollowEvent::Update { events, .. } => events
                .into_iter()
                .filter_map(|event| match event {
                    WatchEvent::Put(kv) if kv.key == key => Some(kv.value),
                    _ => None,
                })
                .collect(),
        };
        for pointer in pointers {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                () = adopt(store.as_ref(), &keys, &tx, &pointer) => {}
            }
        }
    }
}

async fn adopt(store: &dyn Store, keys: &Keys, tx: &watch::Sender<Option<Arc<StoredPlan>>>, pointer: &[u8]) {
    let Ok(p) = serde_json::from_slice::<PlanPointer>(pointer) else {
        tracing::error!("unreadable plan pointer; keeping the current plan");
        return;
    };
    if tx.borrow().as_ref().is_some_and(|cur| cur.version >= p.version) {
        return;
    }
    match load(store, keys, p.version).await {
        Ok(plan) => {
            metrics::gauge!("meridian_control_plane_plan_version").set(plan.version as f64);
            tx.send_replace(Some(Arc::new(plan)));
        }
        Err(err) => tracing::error!(error = %err, version = p.version, "cannot load the current plan"),
    }
}
