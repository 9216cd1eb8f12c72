//! The applied topology: every replica follows it from the store; the leader applies
//! new documents with a fenced, compare-and-swap write.

use std::sync::Arc;

use meridian_core::keys::Keys;
use meridian_core::topology::{TopologyDoc, TopologyErrors};
use meridian_store::election::fenced_txn;
use meridian_store::follow::{FollowEvent, Follower};
use meridian_store::{Compare, Fence, Revision, Store, StoreError, Txn, TxnOp, WatchEvent};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The topology in force and the store revision it was written at (0: none yet).
#[derive(Clone, Debug, Default)]
pub struct AppliedTopology {
    pub doc: Arc<TopologyDoc>,
    pub revision: Revision,
}

/// What an apply did (or would do, for a dry run).
#[derive(Debug)]
pub struct ApplyOutcome {
    pub applied: bool,
    pub diff: Vec<String>,
    pub revision: Revision,
}

/// Why an apply failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Invalid(#[from] TopologyErrors),
    #[error(
        "the stored topology changed while this apply ran (now at revision {0}); review the new diff and apply again"
    )]
    Conflict(Revision),
    #[error("the stored topology at {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Validates `toml_text`, diffs it against the stored topology, and (unless
/// `dry_run`) stores it under `fence` if nobody changed it in between.
pub async fn apply(
    store: &dyn Store,
    keys: &Keys,
    fence: Option<&Fence>,
    toml_text: &str,
    dry_run: bool,
) -> Result<ApplyOutcome, ApplyError> {
    apply_with(store, keys, fence, toml_text, dry_run, |_, _| {
        Ok((Vec::new(), Vec::new()))
    })
    .await
}

/// More compares and operations for the transaction that writes a topology, made
/// from the document in force before it and its revision (a staged apply stores
/// its change record and the canary wave's fleet hold with it).
pub type ApplyExtras = (Vec<Compare>, Vec<TxnOp>);

/// [`apply`], with `extra` compares and operations in the same transaction.
pub async fn apply_with(
    store: &dyn Store,
    keys: &Keys,
    fence: Option<&Fence>,
    toml_text: &str,
    dry_run: bool,
    extra: impl FnOnce(&TopologyDoc, Revision) -> Result<ApplyExtras, ApplyError>,
) -> Result<ApplyOutcome, ApplyError> {
    let doc = TopologyDoc::from_toml(toml_text)?;
    let key = keys.topology();
    let current = store.get(&key).await?;
    let (old, old_rev) = match &current {
        Some(kv) => (decode(&key, &kv.value)?, kv.mod_revision),
        None => (TopologyDoc::default(), 0),
    };
    let diff = doc.diff_from(&old);
    if dry_run || diff.is_empty() {
        return Ok(ApplyOutcome {
            applied: false,
            diff,
            revision: old_rev,
        });
    }
    let Some(fence) = fence else {
        return Err(ApplyError::Store(StoreError::InvalidRequest(
            "only the leader applies topology".into(),
        )));
    };
    let value = serde_json::to_vec(&doc).map_err(|e| ApplyError::Corrupt {
        key: key.clone(),
        reason: e.to_string(),
    })?;
    let (mut compares, mut ops) = extra(&old, old_rev)?;
    compares.insert(0, Compare::modified_at(key.clone(), old_rev));
    ops.insert(0, TxnOp::put(key.clone(), value));
    let txn = Txn::new()
        .when(compares)
        .and_then(ops)
        .or_else([TxnOp::get(key.clone())]);
    let resp = fenced_txn(store, fence, txn).await?;
    if !resp.succeeded {
        let now = match resp.responses.first() {
            Some(meridian_store::TxnOpResponse::Get(Some(kv))) => kv.mod_revision,
            _ => 0,
        };
        return Err(ApplyError::Conflict(now));
    }
    Ok(ApplyOutcome {
        applied: true,
        diff,
        revision: resp.revision,
    })
}

fn decode(key: &str, bytes: &[u8]) -> Result<TopologyDoc, ApplyError> {
    serde_json::from_slice(bytes).map_err(|e| ApplyError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// Follows the topology key and publishes every new version. The store follower
/// re-lists after compaction or a broken watch; a corrupt value is logged and
/// skipped (the previous topology stays in force), and a re-listed version that is
/// not newer than the one in force is ignored.
pub async fn follow(
    store: Arc<dyn Store>,
    keys: Keys,
    tx: watch::Sender<AppliedTopology>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let key = keys.topology();
    let mut follower = Follower::new(store, key.clone());
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            event = follower.next() => event,
        };
        match event {
            FollowEvent::Snapshot { kvs, .. } => {
                if let Some(kv) = kvs.iter().find(|kv| kv.key == key) {
                    publish(&tx, &key, &kv.value, kv.mod_revision);
                }
            }
            FollowEvent::Update { events, .. } => {
                for event in events {
                    match event {
                        WatchEvent::Put(kv) if kv.key == key => publish(&tx, &key, &kv.value, kv.mod_revision),
                        WatchEvent::Delete { key: k, mod_revision } if k == key => {
                            tracing::warn!(
                                revision = mod_revision,
                                "topology deleted from the store; keeping the last one in force"
                            );
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

fn publish(tx: &watch::Sender<AppliedTopology>, key: &str, value: &[u8], revision: Revision) {
    if tx.borrow().revision >= revision {
        return;
    }
    match decode(key, value) {
        Ok(doc) => {
            tracing::info!(
                revision,
                pops = doc.pops.len(),
                regions = doc.regions.len(),
                "topology in force"
            );
            metrics::gauge!("meridian_control_plane_topology_revision").set(revision as f64);
            tx.send_replace(AppliedTopology {
                doc: Arc::new(doc),
                revision,
            });
        }
        Err(err) => tracing::error!(error = %err, revision, "ignoring unreadable topology"),
    }
}
