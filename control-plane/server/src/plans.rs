//! Versioned plans in the store: the leader publishes, every replica follows.
//!
//! A publish is one fenced transaction that also compares the plan pointer's mod
//! revision with the one the version was read at, so versions only go up by one,
//! are never skipped or repeated, and a deposed leader cannot publish. History keeps
//! every version (`plan/history/<version>`) until compaction of old versions, which
//! is a later concern (plans are small).
//!
//! Every published plan carries the store's epoch (`cluster/epoch`, created once with
//! the store by its first leader, fenced and only if absent) and the content hash
//! of what it steers, so an agent can follow a wiped and restored store's numbering
//! and can refuse different content under a version it already serves. The publish
//! transaction also compares the epoch key's revision: a plan never lands carrying
//! an epoch the store no longer has.

use std::sync::Arc;

use meridian_core::keys::Keys;
use meridian_core::plan_hash::content_hash;
use meridian_core::records::{FleetHold, PlanPointer, StoreEpoch, StoredPlan};
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

/// The store's epoch and the epoch key's mod revision, if the store has one yet.
pub async fn read_epoch(store: &dyn Store, keys: &Keys) -> Result<Option<(StoreEpoch, Revision)>, PlanError> {
    let key = keys.epoch();
    match store.get(&key).await? {
        None => Ok(None),
        Some(kv) => Ok(Some((decode(&key, &kv.value)?, kv.mod_revision))),
    }
}

/// The store's epoch, created under `fence` (only if absent) when the store has none
/// yet: the first leader of a new (or wiped) store creates it, every later leader and
/// replica reads the same one. Returns the epoch and its key's mod revision.
pub async fn ensure_epoch(
    store: &dyn Store,
    keys: &Keys,
    fence: &Fence,
    created_by: &str,
    now_unix_ms: u64,
) -> Result<(StoreEpoch, Revision), PlanError> {
    if let Some(found) = read_epoch(store, keys).await? {
        return Ok(found);
    }
    let epoch = StoreEpoch {
        epoch: new_epoch_id(now_unix_ms),
        created_at_unix_ms: now_unix_ms,
        created_by: created_by.to_string(),
    };
    let key = keys.epoch();
    let txn = Txn::new()
        .when([Compare::absent(key.clone())])
        .and_then([TxnOp::put(key.clone(), encode(&key, &epoch)?)]);
    let resp = fenced_txn(store, fence, txn).await?;
    if resp.succeeded {
        tracing::info!(epoch = %epoch.epoch, "created the store's epoch: plan versions start again under it");
        return Ok((epoch, resp.revision));
    }
    // Someone created it between our read and our write (only possible for the same
    // fence, e.g. a publish racing the leader's start-up): theirs stands.
    read_epoch(store, keys).await?.ok_or_else(|| PlanError::Corrupt {
        key,
        reason: "the epoch key vanished while it was being created".into(),
    })
}

/// 128 bits for a new epoch: two hashers keyed from the OS's randomness (std's
/// `RandomState`), over the time and the process id. An identity, not a secret: it
/// only has to differ from every earlier store's, and it does without a new
/// dependency.
fn new_epoch_id(now_unix_ms: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let half = |salt: u8| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(salt);
        h.write_u64(now_unix_ms);
        h.write_u32(std::process::id());
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
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
/// set here. Returns the stored plan. Used by a restore, which pins first: an admin's
/// restore goes to every agent, so it also ends a canary wave's hold on the fleet.
pub async fn publish(store: &dyn Store, keys: &Keys, fence: &Fence, plan: StoredPlan) -> Result<StoredPlan, PlanError> {
    publish_with(store, keys, fence, plan, false, true).await
}

/// [`publish`] for the steering loop: the same transaction also requires that no
/// plan pin exists, so a pin that landed after steering last looked (or one a new
/// leader has not loaded yet) stops the publication (rule `plan-pin`). An `urgent`
/// plan (a PoP newly DOWN) also ends a canary wave's hold on the fleet in the same
/// transaction, so every agent gets it at once.
pub async fn publish_unpinned(
    store: &dyn Store,
    keys: &Keys,
    fence: &Fence,
    plan: StoredPlan,
    urgent: bool,
) -> Result<StoredPlan, PlanError> {
    publish_with(store, keys, fence, plan, true, urgent).await
}

async fn publish_with(
    store: &dyn Store,
    keys: &Keys,
    fence: &Fence,
    mut plan: StoredPlan,
    require_unpinned: bool,
    release_hold: bool,
) -> Result<StoredPlan, PlanError> {
    let (epoch, epoch_rev) = ensure_epoch(store, keys, fence, &plan.published_by, plan.created_at_unix_ms).await?;
    let (current, pointer_rev) = current_pointer(store, keys).await?;
    plan.version = current + 1;
    plan.epoch = epoch.epoch;
    plan.content_hash = content_hash(&plan);
    let pointer = encode(&keys.plan_current(), &PlanPointer { version: plan.version })?;
    let body = encode(&keys.plan_version(plan.version), &plan)?;
    let mut compares = vec![
        Compare::modified_at(keys.plan_current(), pointer_rev),
        Compare::modified_at(keys.epoch(), epoch_rev),
    ];
    if require_unpinned {
        compares.push(Compare::Version {
            key: keys.plan_pin(),
            op: CompareOp::Equal,
            version: 0,
        });
    }
    let mut ops = vec![
        TxnOp::put(keys.plan_version(plan.version), body),
        TxnOp::put(keys.plan_current(), pointer),
    ];
    if release_hold {
        ops.push(TxnOp::delete(keys.plan_fleet_hold()));
    }
    let txn = Txn::new()
        .when(compares)
        .and_then(ops)
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

/// Deletes all but the newest `keep` plan versions, under `fence` (a deposed leader
/// deletes nothing). Returns how many were deleted. The plan in force is the newest,
/// so it is always kept.
pub async fn prune_history(store: &dyn Store, keys: &Keys, fence: &Fence, keep: u64) -> Result<usize, PlanError> {
    let listed = store.range(&keys.plan_history_prefix()).await?;
    let keep = usize::try_from(keep.max(1)).unwrap_or(usize::MAX);
    let excess = listed.kvs.len().saturating_sub(keep);
    if excess == 0 {
        return Ok(0);
    }
    // Keys sort by zero-padded version, so the first `excess` are the oldest. Delete
    // in bounded transactions (etcd allows 128 operations per transaction).
    let mut deleted = 0;
    for chunk in listed.kvs[..excess].chunks(100) {
        let txn = Txn::new().and_then(chunk.iter().map(|kv| TxnOp::delete(kv.key.clone())));
        fenced_txn(store, fence, txn).await?;
        deleted += chunk.len();
    }
    metrics::counter!("meridian_control_plane_plan_versions_pruned_total").increment(deleted as u64);
    Ok(deleted)
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

/// A canary wave's hold on the fleet as a replica serves it: the hold and the plan
/// the fleet is held on (loaded once, when the hold appears).
#[derive(Clone, Debug)]
pub struct HeldFleet {
    pub hold: FleetHold,
    /// `None` when the fleet is held on no plan at all (version 0).
    pub plan: Option<Arc<StoredPlan>>,
}

/// Follows the plan pointer and publishes the current plan (every replica runs this;
/// agents are served from it), and the fleet hold of a canary wave beside it. Both
/// keys sit under one prefix, so their changes arrive in revision order: a hold
/// written with a step's intent is in force before the step's plan is adopted.
/// Versions only go forward, so a pointer seen again after the store follower
/// re-lists changes nothing.
pub async fn follow(
    store: Arc<dyn Store>,
    keys: Keys,
    tx: watch::Sender<Option<Arc<StoredPlan>>>,
    hold_tx: watch::Sender<Option<Arc<HeldFleet>>>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let key = keys.plan_current();
    let hold_key = keys.plan_fleet_hold();
    let mut follower = Follower::new(store.clone(), key.clone());
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            event = follower.next() => event,
        };
        // (is the hold key, its value or None for a delete), in the order to apply.
        let changes: Vec<(bool, Option<Vec<u8>>)> = match event {
            FollowEvent::Snapshot { kvs, .. } => {
                let hold = kvs.iter().find(|kv| kv.key == hold_key).map(|kv| kv.value.clone());
                let mut out = vec![(true, hold)];
                out.extend(
                    kvs.into_iter()
                        .filter(|kv| kv.key == key)
                        .map(|kv| (false, Some(kv.value))),
                );
                out
            }
            FollowEvent::Update { events, .. } => events
                .into_iter()
                .filter_map(|event| match event {
                    WatchEvent::Put(kv) if kv.key == key => Some((false, Some(kv.value))),
                    WatchEvent::Put(kv) if kv.key == hold_key => Some((true, Some(kv.value))),
                    WatchEvent::Delete { key: k, .. } if k == hold_key => Some((true, None)),
                    _ => None,
                })
                .collect(),
        };
        for (is_hold, value) in changes {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                () = async {
                    match (is_hold, value) {
                        (true, value) => adopt_hold(store.as_ref(), &keys, &hold_tx, value.as_deref()).await,
                        (false, Some(pointer)) => adopt(store.as_ref(), &keys, &tx, &pointer).await,
                        (false, None) => {}
                    }
                } => {}
            }
        }
    }
}

async fn adopt_hold(store: &dyn Store, keys: &Keys, tx: &watch::Sender<Option<Arc<HeldFleet>>>, value: Option<&[u8]>) {
    let Some(value) = value else {
        if tx.borrow().is_some() {
            tracing::info!("fleet hold released: every agent is served the newest plan");
        }
        tx.send_replace(None);
        return;
    };
    let hold: FleetHold = match serde_json::from_slice(value) {
        Ok(h) => h,
        Err(e) => {
            // Unreadable: serving the fleet the newest plan is what no hold means;
            // holding it on a plan we cannot name is not possible.
            tracing::error!(error = %e, "unreadable fleet hold ignored");
            return;
        }
    };
    let same_plan = tx
        .borrow()
        .as_ref()
        .and_then(|h| h.plan.clone())
        .filter(|p| p.version == hold.fleet_version);
    let plan = match (same_plan, hold.fleet_version) {
        (Some(p), _) => Some(p),
        (None, 0) => None,
        (None, v) => match load(store, keys, v).await {
            Ok(p) => Some(Arc::new(p)),
            Err(e) => {
                tracing::error!(error = %e, version = v, "cannot load the plan the fleet is held on; held agents get no newer plan until the hold ends");
                None
            }
        },
    };
    tracing::info!(change = %hold.change, fleet_version = hold.fleet_version, canary = ?hold.canary, "fleet held while a canary wave tries a change");
    tx.send_replace(Some(Arc::new(HeldFleet { hold, plan })));
}

async fn adopt(store: &dyn Store, keys: &Keys, tx: &watch::Sender<Option<Arc<StoredPlan>>>, pointer: &[u8]) {
    let Ok(p) = serde_json::from_slice::<PlanPointer>(pointer) else {
        tracing::error!("unreadable plan pointer; keeping the current plan");
        return;
    };
    match load(store, keys, p.version).await {
        // Versions only go forward within one epoch; a store wiped and re-created
        // under a running replica numbers again from 1 under a new epoch.
        Ok(plan)
            if tx
                .borrow()
                .as_ref()
                .is_some_and(|cur| cur.epoch == plan.epoch && cur.version >= plan.version) => {}
        Ok(plan) => {
            metrics::gauge!("meridian_control_plane_plan_version").set(plan.version as f64);
            tx.send_replace(Some(Arc::new(plan)));
        }
        Err(err) => tracing::error!(error = %err, version = p.version, "cannot load the current plan"),
    }
}
