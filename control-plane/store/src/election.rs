//! Leader election with fencing, written once against the [`Store`] trait.
//!
//! A candidate holds a lease and campaigns by creating the leader key under that
//! lease in a transaction that requires the key to be absent. Whoever creates it is
//! the leader; the key's **create revision is the fence**. Every leader-only write
//! goes through [`fenced_txn`], which adds `create_revision(leader_key) == fence` to
//! the transaction, so a deposed leader (its lease expired, someone else created the
//! key since) cannot land a write even if it still believes it leads.
//!
//! Followers watch the leader key and campaign again when it is deleted (lease expiry,
//! resignation). A leader that cannot renew its lease steps down locally once the
//! lease's time to live has passed since its last successful renewal, without waiting
//! for the store to confirm; the fence covers the window in between.
//!
//! Rejected alternative: etcd's own election API (campaign/observe/resign). It would
//! work for the etcd backend only, and its fence (the leader key revision) is the same
//! thing we build here; one implementation serves both backends and one test suite.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use meridian_core::Backoff;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{Compare, Fence, LeaseId, Revision, Store, StoreError, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchEvent};

/// What a candidate needs to know.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    /// The leader key, e.g. `/meridian/election/leader`.
    pub leader_key: String,
    /// This candidate's id (stored in [`ElectionConfig::leader_value`]'s place when
    /// no value is given).
    pub candidate_id: String,
    /// The value written to the leader key when this candidate wins.
    pub leader_value: Vec<u8>,
    /// Lease time to live: how long a dead leader keeps the key.
    pub lease_ttl: Duration,
    /// Extra keys written under the same lease after every grant (e.g. the replica
    /// registry entry), so they vanish when this candidate dies.
    pub leased_keys: Vec<(String, Vec<u8>)>,
}

/// This candidate's view of the election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not yet known (starting, or the store is unreachable).
    Unknown,
    /// Someone else leads (or nobody does right now).
    Follower,
    /// This candidate leads under `fence`.
    Leader,
}

/// Published on every change of role or leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leadership {
    pub role: Role,
    /// The current leader key's value, when known.
    pub leader_value: Option<Vec<u8>>,
    /// The current leader key's create revision (0 when unknown or absent).
    pub leader_revision: Revision,
    /// Our fence, only while we lead.
    pub fence: Option<Fence>,
}

impl Leadership {
    fn unknown() -> Self {
        Self {
            role: Role::Unknown,
            leader_value: None,
            leader_revision: 0,
            fence: None,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }
}

/// Adds the leader fence to `txn` and runs it.
///
/// Returns [`StoreError::FenceLost`] when the fence no longer holds (we are not the
/// leader any more); otherwise the transaction's own outcome, with `succeeded` telling
/// whether the caller's compares held.
pub async fn fenced_txn(store: &dyn Store, fence: &Fence, txn: Txn) -> Result<TxnResponse, StoreError> {
    let user_failure_ops = txn.failure.len();
    let mut fenced = txn;
    fenced.compares.insert(0, fence.compare());
    // Read the leader key in the failure branch so we can tell "fence lost" from "a
    // caller compare failed" without a second round trip.
    fenced.failure.insert(0, TxnOp::get(fence.key.clone()));
    let mut resp = store.txn(fenced).await?;
    if resp.succeeded {
        return Ok(resp);
    }
    let leader_now = match resp.responses.first() {
        Some(TxnOpResponse::Get(kv)) => kv.as_ref().map(|kv| kv.create_revision).unwrap_or(0),
        _ => 0,
    };
    if leader_now != fence.revision {
        metrics::counter!("meridian_store_fenced_writes_rejected_total").increment(1);
        return Err(StoreError::FenceLost {
            key: fence.key.clone(),
            fence: fence.revision,
        });
    }
    resp.responses.remove(0);
    debug_assert_eq!(resp.responses.len(), user_failure_ops);
    Ok(resp)
}

/// Runs a candidate until `cancel` fires; publishes its view on the returned channel.
/// On cancellation a leader resigns (deletes the leader key, fenced) and revokes its
/// lease so a successor takes over at once instead of after the TTL.
pub fn spawn_candidate(
    store: Arc<dyn Store>,
    config: ElectionConfig,
    cancel: CancellationToken,
) -> (watch::Receiver<Leadership>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Leadership::unknown());
    let handle = tokio::spawn(async move {
        let mut candidate = Candidate {
            store,
            config,
            tx,
            lease: None,
        };
        candidate.run(cancel).await;
    });
    (rx, handle)
}

struct Candidate {
    store: Arc<dyn Store>,
    config: ElectionConfig,
    tx: watch::Sender<Leadership>,
    lease: Option<LeaseId>,
}

/// Why a term (as leader or follower) ended.
enum TermEnd {
    Cancelled,
    /// Go round again: campaign (after a short pause when `backoff`).
    Recampaign {
        backoff: bool,
    },
}

impl Candidate {
    async fn run(&mut self, cancel: CancellationToken) {
        let mut failures: u32 = 0;
        let mut backoff = campaign_backoff(self.config.lease_ttl);
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let end = match self.campaign_once().await {
                Ok(Some(fence)) => {
                    failures = 0;
                    backoff.reset();
                    self.lead(fence, &cancel).await
                }
                Ok(None) => {
                    failures = 0;
                    backoff.reset();
                    self.follow(&cancel).await
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %err, attempt = failures, "election: campaign failed");
                    self.publish(Leadership::unknown());
                    if matches!(err, StoreError::LeaseNotFound(_)) {
                        self.lease = None;
                    }
                    TermEnd::Recampaign { backoff: true }
                }
            };
            match end {
                TermEnd::Cancelled => break,
                TermEnd::Recampaign { backoff: false } => {}
                TermEnd::Recampaign { backoff: true } => {
                    let pause = backoff.next_delay(rand::random::<f64>());
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
        self.resign().await;
    }

    /// One campaign: makes sure we hold a lease (re-putting our leased keys on a new
    /// one) and tries to create the leader key. `Some(fence)` when we won.
    async fn campaign_once(&mut self) -> Result<Option<Fence>, StoreError> {
        let lease = match self.lease {
            Some(lease) => lease,
            None => {
                let lease = self.store.lease_grant(self.config.lease_ttl).await?.id;
                self.lease = Some(lease);
                lease
            }
        };
        // Re-putting the leased keys each campaign keeps them present and attached to
        // the current lease even after a lease was lost and granted anew.
        for (key, value) in &self.config.leased_keys {
            self.store.put(key, value.clone(), Some(lease)).await?;
        }
        let key = self.config.leader_key.clone();
        let txn = Txn::new()
            .when([Compare::absent(key.clone())])
            .and_then([TxnOp::put_with_lease(
                key.clone(),
                self.config.leader_value.clone(),
                lease,
            )])
            .or_else([TxnOp::get(key.clone())]);
        let resp = self.store.txn(txn).await?;
        if resp.succeeded {
            let fence = Fence {
                key,
                revision: resp.revision,
            };
            tracing::info!(candidate = %self.config.candidate_id, fence = fence.revision, "election: became leader");
            metrics::counter!("meridian_election_terms_won_total").increment(1);
            self.publish(Leadership {
                role: Role::Leader,
                leader_value: Some(self.config.leader_value.clone()),
                leader_revision: fence.revision,
                fence: Some(fence.clone()),
            });
            return Ok(Some(fence));
        }
        let current = match resp.responses.first() {
            Some(TxnOpResponse::Get(kv)) => kv.clone(),
            _ => None,
        };
        match current {
            // Our own lease holds the key (a campaign retried after its first attempt
            // landed but the answer was lost): we lead under that key's fence.
            Some(kv) if kv.lease == Some(lease) => {
                let fence = Fence {
                    key,
                    revision: kv.create_revision,
                };
                self.publish(Leadership {
                    role: Role::Leader,
                    leader_value: Some(kv.value),
                    leader_revision: fence.revision,
                    fence: Some(fence.clone()),
                });
                Ok(Some(fence))
            }
            Some(kv) => {
                self.publish(Leadership {
                    role: Role::Follower,
                    leader_value: Some(kv.value),
                    leader_revision: kv.create_revision,
                    fence: None,
                });
                Ok(None)
            }
            // The key vanished between compare and read: campaign again at once.
            None => {
                self.publish(Leadership {
                    role: Role::Follower,
                    leader_value: None,
                    leader_revision: 0,
                    fence: None,
                });
                Ok(None)
            }
        }
    }

    /// Leads until the lease is lost, the leader key changes, or cancellation.
    async fn lead(&mut self, fence: Fence, cancel: &CancellationToken) -> TermEnd {
        let Some(lease) = self.lease else {
            return TermEnd::Recampaign { backoff: true };
        };
        let mut watch = match self.store.watch_prefix(&fence.key, Some(fence.revision + 1)).await {
            Ok(w) => w,
            Err(err) => {
                tracing::warn!(error = %err, "election: cannot watch the leader key; stepping down");
                self.step_down("cannot watch the leader key");
                return TermEnd::Recampaign { backoff: true };
            }
        };
        let ttl = self.config.lease_ttl;
        let mut renew = tokio::time::interval(renew_period(ttl));
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_renewal = Instant::now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return TermEnd::Cancelled,
                _ = renew.tick() => {
                    match self.store.lease_keep_alive(lease).await {
                        Ok(_) => last_renewal = Instant::now(),
                        Err(StoreError::LeaseNotFound(_)) => {
                            self.lease = None;
                            self.step_down("lease expired");
                            return TermEnd::Recampaign { backoff: false };
                        }
                        Err(err) => {
                            // Step down locally once the lease may have expired in
                            // the store: past that point another replica may lead.
                            if last_renewal.elapsed() >= ttl {
                                tracing::warn!(error = %err, "election: lease not renewed within its TTL; stepping down");
                                self.step_down("lease not renewed within its TTL");
                                return TermEnd::Recampaign { backoff: true };
                            }
                            tracing::warn!(error = %err, "election: lease renewal failed; retrying");
                        }
                    }
                }
                event = watch.next() => {
                    match event {
                        Some(Ok(batch)) => {
                            let lost = batch.events.iter().any(|e| e.key() == fence.key && match e {
                                WatchEvent::Delete { .. } => true,
                                WatchEvent::Put(kv) => kv.create_revision != fence.revision,
                            });
                            if lost {
                                self.step_down("leader key deleted or replaced");
                                return TermEnd::Recampaign { backoff: false };
                            }
                        }
                        Some(Err(err)) => {
                            tracing::warn!(error = %err, "election: leader key watch failed; re-checking");
                            // Re-check by campaigning: it confirms the key is still ours.
                            return TermEnd::Recampaign { backoff: true };
                        }
                        None => return TermEnd::Recampaign { backoff: true },
                    }
                }
            }
        }
    }

    /// Follows until the leader key is deleted, then returns to campaign.
    async fn follow(&mut self, cancel: &CancellationToken) -> TermEnd {
        let Some(lease) = self.lease else {
            return TermEnd::Recampaign { backoff: true };
        };
        let key = self.config.leader_key.clone();
        // Re-read, then watch from just after the read, so a deletion in between is seen.
        let current = match self.store.range(&key).await {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!(error = %err, "election: cannot read the leader key");
                self.publish(Leadership::unknown());
                return TermEnd::Recampaign { backoff: true };
            }
        };
        if !current.kvs.iter().any(|kv| kv.key == key) {
            return TermEnd::Recampaign { backoff: false };
        }
        let mut watch = match self.store.watch_prefix(&key, Some(current.revision + 1)).await {
            Ok(w) => w,
            Err(err) => {
                tracing::warn!(error = %err, "election: cannot watch the leader key");
                return TermEnd::Recampaign { backoff: true };
            }
        };
        let mut renew = tokio::time::interval(renew_period(self.config.lease_ttl));
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return TermEnd::Cancelled,
                _ = renew.tick() => {
                    // Followers keep their lease too: it holds their registry entry.
                    match self.store.lease_keep_alive(lease).await {
                        Ok(_) => {}
                        Err(StoreError::LeaseNotFound(_)) => {
                            self.lease = None;
                            return TermEnd::Recampaign { backoff: false };
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "election: follower lease renewal failed");
                            self.publish(Leadership::unknown());
                        }
                    }
                }
                event = watch.next() => {
                    match event {
                        Some(Ok(batch)) => {
                            for e in batch.events.iter().filter(|e| e.key() == key) {
                                match e {
                                    WatchEvent::Delete { .. } => return TermEnd::Recampaign { backoff: false },
                                    WatchEvent::Put(kv) => self.publish(Leadership {
                                        role: Role::Follower,
                                        leader_value: Some(kv.value.clone()),
                                        leader_revision: kv.create_revision,
                                        fence: None,
                                    }),
                                }
                            }
                        }
                        Some(Err(err)) => {
                            tracing::warn!(error = %err, "election: leader key watch failed");
                            return TermEnd::Recampaign { backoff: true };
                        }
                        None => return TermEnd::Recampaign { backoff: true },
                    }
                }
            }
        }
    }

    fn step_down(&mut self, why: &str) {
        tracing::warn!(candidate = %self.config.candidate_id, reason = why, "election: stepped down");
        metrics::counter!("meridian_election_step_downs_total").increment(1);
        self.publish(Leadership {
            role: Role::Follower,
            leader_value: None,
            leader_revision: 0,
            fence: None,
        });
    }

    /// Best effort on shutdown: release the leader key (fenced) and the lease, so a
    /// successor does not wait for the TTL.
    async fn resign(&mut self) {
        let fence = self.tx.borrow().fence.clone();
        if let Some(fence) = fence {
            let txn = Txn::new()
                .when([fence.compare()])
                .and_then([TxnOp::delete(fence.key.clone())]);
            match tokio::time::timeout(Duration::from_secs(2), self.store.txn(txn)).await {
                Ok(Ok(_)) => tracing::info!(candidate = %self.config.candidate_id, "election: resigned leadership"),
                Ok(Err(err)) => tracing::warn!(error = %err, "election: resign failed"),
                Err(_) => tracing::warn!("election: resign timed out"),
            }
        }
        if let Some(lease) = self.lease.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.store.lease_revoke(lease)).await;
        }
        self.publish(Leadership::unknown());
    }

    fn publish(&self, view: Leadership) {
        self.tx.send_if_modified(|cur| {
            if *cur == view {
                false
            } else {
                *cur = view;
                true
            }
        });
    }
}

/// Renew three times per TTL, like etcd's own keepalive, so one lost renewal is not fatal.
fn renew_period(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(50))
}

/// The pause before campaigning again after a failure: the workspace's one
/// [`Backoff`], from 200 ms doubling up to the lease TTL (at least 200 ms), so a
/// candidate retries well within one TTL once the store is back.
fn campaign_backoff(ttl: Duration) -> Backoff {
    let floor = Duration::from_millis(200);
    Backoff::new(floor, ttl.max(floor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renew_period_is_a_third_of_the_ttl_with_a_floor() {
        assert_eq!(renew_period(Duration::from_secs(3)), Duration::from_secs(1));
        assert_eq!(renew_period(Duration::from_millis(60)), Duration::from_millis(50));
    }

    #[test]
    fn backoff_is_bounded_by_the_ttl() {
        let ms = Duration::from_millis;
        let mut backoff = campaign_backoff(Duration::from_secs(2));
        let first = backoff.next_delay(0.0);
        assert_eq!(first, ms(100), "the first pause is half the 200 ms step at least");
        for attempt in 0..20 {
            let d = backoff.next_delay(0.999);
            assert!(d <= Duration::from_secs(2), "attempt {attempt}: {d:?}");
        }
        assert!(backoff.next_delay(0.999) >= ms(1000), "it grew to the TTL");
        backoff.reset();
        assert!(backoff.next_delay(0.999) <= ms(200), "a success starts over");
        // A tiny TTL still leaves a 200 ms cap, not a hot loop.
        let mut tiny = campaign_backoff(ms(50));
        for _ in 0..10 {
            assert!(tiny.next_delay(0.5) <= ms(200));
        }
    }
}
