//! The pure core of the embedded store: the key space, the store-wide revision, the
//! history since the compaction revision and the leases, with etcd's semantics. Time
//! comes in as an argument and every mutation returns the [`Change`]s it made, which
//! the wrapper logs and fans out; nothing here does I/O.
//!
//! Mutations can be taken back: between [`State::begin`] and [`State::commit`] every
//! mutation records what it overwrote, and [`State::rollback`] undoes them in reverse.
//! The wrapper applies a request, logs its changes and rolls the request back if the
//! log write fails, so memory never runs ahead of the disk. Rejected: cloning the
//! state before each write (it holds the whole history, so every write would cost
//! the size of the store) and computing changes without applying them (a transaction
//! reads its own writes, and expiry comes before the request it runs with).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::{
    Compare, CompareOp, KeyValue, Lease, LeaseId, RangeResponse, Revision, StoreError, Txn, TxnOp, TxnOpResponse,
    TxnResponse, WatchEvent,
};

/// A change the core made, as it is logged and fanned out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// A transaction's writes, all at `revision`.
    Commit {
        revision: Revision,
        events: Vec<WatchEvent>,
    },
    LeaseGrant {
        id: LeaseId,
        ttl: Duration,
    },
    /// A lease revoked (or expired), its keys deleted at `revision` (unchanged when it
    /// had no keys, then `events` is empty).
    LeaseRevoke {
        id: LeaseId,
        revision: Revision,
        events: Vec<WatchEvent>,
        expired: bool,
    },
    Compact {
        revision: Revision,
    },
}

impl Change {
    /// The revision and events watchers must see, if any.
    pub(super) fn events(&self) -> Option<(Revision, &[WatchEvent])> {
        match self {
            Change::Commit { revision, events } | Change::LeaseRevoke { revision, events, .. }
                if !events.is_empty() =>
            {
                Some((*revision, events))
            }
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LeaseEntry {
    pub(super) ttl: Duration,
    pub(super) deadline: Instant,
    pub(super) keys: BTreeSet<String>,
}

/// The store's whole state, with etcd's semantics and no I/O.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct State {
    pub(super) kvs: BTreeMap<String, KeyValue>,
    pub(super) revision: Revision,
    /// Watches may start at this revision or later.
    pub(super) compact_revision: Revision,
    /// Every event with revision >= `compact_revision`, in revision order.
    pub(super) history: VecDeque<WatchEvent>,
    pub(super) leases: HashMap<LeaseId, LeaseEntry>,
    /// While recording (after `begin`): what each mutation overwrote, oldest first.
    journal: Option<Vec<Undo>>,
}

impl State {
    pub(super) fn new() -> Self {
        Self {
            kvs: BTreeMap::new(),
            revision: 1,
            compact_revision: 0,
            history: VecDeque::new(),
            leases: HashMap::new(),
            journal: None,
        }
    }

    /// Starts recording mutations so they can be rolled back. A recording still open
    /// here belongs to an operation that panicked half-way: it is rolled back first.
    pub(super) fn begin(&mut self) {
        self.rollback();
        self.journal = Some(Vec::new());
    }

    /// Keeps every mutation since `begin` and stops recording.
    pub(super) fn commit(&mut self) {
        self.journal = None;
    }

    /// Undoes every mutation since `begin` and stops recording.
    pub(super) fn rollback(&mut self) {
        for undo in self.journal.take().unwrap_or_default().into_iter().rev() {
            match undo {
                Undo::Kv { key, old: Some(kv) } => {
                    self.kvs.insert(key, kv);
                }
                Undo::Kv { key, old: None } => {
                    self.kvs.remove(&key);
                }
                Undo::LeaseKeyAdded { id, key } => {
                    if let Some(entry) = self.leases.get_mut(&id) {
                        entry.keys.remove(&key);
                    }
                }
                Undo::LeaseKeyRemoved { id, key } => {
                    if let Some(entry) = self.leases.get_mut(&id) {
                        entry.keys.insert(key);
                    }
                }
                Undo::LeaseAdded(id) => {
                    self.leases.remove(&id);
                }
                Undo::LeaseRemoved(id, entry) => {
                    self.leases.insert(id, entry);
                }
                Undo::LeaseDeadline(id, deadline) => {
                    if let Some(entry) = self.leases.get_mut(&id) {
                        entry.deadline = deadline;
                    }
                }
                Undo::Revision(revision) => self.revision = revision,
                Undo::HistoryAppended(n) => self.history.truncate(self.history.len().saturating_sub(n)),
                Undo::Compacted {
                    compact_revision,
                    drained,
                } => {
                    for event in drained.into_iter().rev() {
                        self.history.push_front(event);
                    }
                    self.compact_revision = compact_revision;
                }
            }
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<KeyValue> {
        self.kvs.get(key).cloned()
    }

    pub(super) fn range(&self, prefix: &str) -> RangeResponse {
        RangeResponse {
            kvs: self.prefixed(prefix).map(|(_, kv)| kv.clone()).collect(),
            revision: self.revision,
        }
    }

    fn prefixed<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a KeyValue)> + 'a {
        self.kvs
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(move |(key, _)| key.starts_with(prefix))
    }

    /// Runs a transaction. Writes land at `revision + 1`; the revision moves only if
    /// something was actually written.
    pub(super) fn txn(&mut self, txn: &Txn, now: Instant) -> Result<(TxnResponse, Vec<Change>), StoreError> {
        crate::txn::validate(txn)?;
        let succeeded = txn.compares.iter().all(|compare| self.holds(compare));
        let ops = if succeeded { &txn.success } else { &txn.failure };
        // Check leases before writing anything, so a failing transaction changes nothing.
        for op in ops {
            if let TxnOp::Put { lease: Some(id), .. } = op {
                if !self.lease_alive(*id, now) {
                    return Err(StoreError::LeaseNotFound(*id));
                }
            }
        }
        let revision = self.revision + 1;
        let mut events = Vec::new();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                TxnOp::Put { key, value, lease } => {
                    let (create_revision, version) = match self.kvs.get(key) {
                        Some(old) => (old.create_revision, old.version + 1),
                        None => (revision, 1),
                    };
                    let event = WatchEvent::Put(KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision,
                        mod_revision: revision,
                        version,
                        lease: *lease,
                    });
                    self.apply_event(&event);
                    events.push(event);
                    responses.push(TxnOpResponse::Put);
                }
                TxnOp::Delete { key } => {
                    let deleted = self.delete_keys(vec![key.clone()], revision, &mut events);
                    responses.push(TxnOpResponse::Delete { deleted });
                }
                TxnOp::DeletePrefix { prefix } => {
                    let keys = self.prefixed(prefix).map(|(key, _)| key.clone()).collect();
                    let deleted = self.delete_keys(keys, revision, &mut events);
                    responses.push(TxnOpResponse::Delete { deleted });
                }
                TxnOp::Get { key } => responses.push(TxnOpResponse::Get(self.get(key))),
            }
        }
        let mut changes = Vec::new();
        if !events.is_empty() {
            self.advance(revision, &events);
            changes.push(Change::Commit { revision, events });
        }
        Ok((
            TxnResponse {
                succeeded,
                revision: self.revision,
                responses,
            },
            changes,
        ))
    }

    fn delete_keys(&mut self, keys: Vec<String>, revision: Revision, events: &mut Vec<WatchEvent>) -> u64 {
        let mut deleted = 0;
        for key in keys {
            if self.kvs.contains_key(&key) {
                let event = WatchEvent::Delete {
                    key,
                    mod_revision: revision,
                };
                self.apply_event(&event);
                events.push(event);
                deleted += 1;
            }
        }
        deleted
    }

    /// Moves the revision to `revision` and appends its events to the history.
    fn advance(&mut self, revision: Revision, events: &[WatchEvent]) {
        self.record(Undo::Revision(self.revision));
        self.record(Undo::HistoryAppended(events.len()));
        self.revision = revision;
        self.history.extend(events.iter().cloned());
    }

    /// Applies one event to the key space and the lease attachments (not to the
    /// revision or history): shared by live writes and log replay.
    pub(super) fn apply_event(&mut self, event: &WatchEvent) {
        let key = event.key();
        let (old, new_lease) = match event {
            WatchEvent::Put(kv) => {
                if let Some(id) = kv.lease {
                    let added = self
                        .leases
                        .get_mut(&id)
                        .is_some_and(|entry| entry.keys.insert(key.to_owned()));
                    if added {
                        self.record(Undo::LeaseKeyAdded {
                            id,
                            key: key.to_owned(),
                        });
                    }
                }
                (self.kvs.insert(key.to_owned(), kv.clone()), kv.lease)
            }
            WatchEvent::Delete { .. } => (self.kvs.remove(key), None),
        };
        if let Some(id) = old
            .as_ref()
            .and_then(|old| old.lease)
            .filter(|id| Some(*id) != new_lease)
        {
            let removed = self.leases.get_mut(&id).is_some_and(|entry| entry.keys.remove(key));
            if removed {
                self.record(Undo::LeaseKeyRemoved {
                    id,
                    key: key.to_owned(),
                });
            }
        }
        self.record(Undo::Kv {
            key: key.to_owned(),
            old,
        });
    }

    /// Notes what a mutation overwrote, when recording.
    fn record(&mut self, undo: Undo) {
        if let Some(journal) = &mut self.journal {
            journal.push(undo);
        }
    }

    /// Whether a compare holds. A missing key has create = mod = version = 0, and a
    /// value compare on it always fails (etcd cannot tell a missing value from an
    /// empty one, so it refuses to compare).
    fn holds(&self, compare: &Compare) -> bool {
        let kv = self.kvs.get(compare.key());
        match compare {
            Compare::CreateRevision { op, revision, .. } => cmp(*op, &kv.map_or(0, |kv| kv.create_revision), revision),
            Compare::ModRevision { op, revision, .. } => cmp(*op, &kv.map_or(0, |kv| kv.mod_revision), revision),
            Compare::Version { op, version, .. } => cmp(*op, &kv.map_or(0, |kv| kv.version), version),
            Compare::Value { op, value, .. } => kv.is_some_and(|kv| cmp(*op, &kv.value, value)),
        }
    }

    fn lease_alive(&self, id: LeaseId, now: Instant) -> bool {
        self.leases.get(&id).is_some_and(|entry| entry.deadline > now)
    }

    pub(super) fn lease_grant(
        &mut self,
        id: LeaseId,
        ttl: Duration,
        now: Instant,
    ) -> Result<(Lease, Vec<Change>), StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::InvalidRequest(
                "lease TTL must be greater than zero".to_owned(),
            ));
        }
        if id == 0 || self.leases.contains_key(&id) {
            return Err(StoreError::InvalidRequest(format!(
                "lease id {id:x} is zero or already in use"
            )));
        }
        self.leases.insert(
            id,
            LeaseEntry {
                ttl,
                deadline: now + ttl,
                keys: BTreeSet::new(),
            },
        );
        self.record(Undo::LeaseAdded(id));
        Ok((Lease { id, ttl }, vec![Change::LeaseGrant { id, ttl }]))
    }

    pub(super) fn lease_keep_alive(&mut self, id: LeaseId, now: Instant) -> Result<Duration, StoreError> {
        match self.leases.get_mut(&id) {
            Some(entry) if entry.deadline > now => {
                let (old, ttl) = (entry.deadline, entry.ttl);
                entry.deadline = now + ttl;
                self.record(Undo::LeaseDeadline(id, old));
                Ok(ttl)
            }
            _ => Err(StoreError::LeaseNotFound(id)),
        }
    }

    /// Removes a lease and deletes its keys, all in one revision.
    pub(super) fn lease_revoke(&mut self, id: LeaseId, expired: bool) -> Result<Change, StoreError> {
        let entry = self.leases.remove(&id).ok_or(StoreError::LeaseNotFound(id))?;
        let keys = entry.keys.iter().cloned().collect();
        self.record(Undo::LeaseRemoved(id, entry));
        let revision = self.revision + 1;
        let mut events = Vec::new();
        self.delete_keys(keys, revision, &mut events);
        if !events.is_empty() {
            self.advance(revision, &events);
        }
        Ok(Change::LeaseRevoke {
            id,
            revision: self.revision,
            events,
            expired,
        })
    }

    /// Revokes every lease whose deadline has passed, oldest deadline first, each in
    /// its own revision (as etcd's lessor does).
    pub(super) fn expire_leases(&mut self, now: Instant) -> Vec<Change> {
        let mut expired: Vec<(Instant, LeaseId)> = self
            .leases
            .iter()
            .filter(|(_, entry)| entry.deadline <= now)
            .map(|(id, entry)| (entry.deadline, *id))
            .collect();
        expired.sort_unstable();
        expired
            .into_iter()
            .filter_map(|(_, id)| self.lease_revoke(id, true).ok())
            .collect()
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.leases.values().map(|entry| entry.deadline).min()
    }

    pub(super) fn compact(&mut self, revision: Revision) -> Result<Change, StoreError> {
        if revision <= 0 {
            return Err(StoreError::InvalidRequest(format!(
                "compaction revision {revision} must be positive"
            )));
        }
        if revision > self.revision {
            return Err(StoreError::InvalidRequest(format!(
                "compaction revision {revision} is in the future (current revision {})",
                self.revision
            )));
        }
        if revision <= self.compact_revision {
            return Err(StoreError::Compacted {
                requested: revision,
                compact_revision: self.compact_revision,
            });
        }
        self.compact_to(revision);
        Ok(Change::Compact { revision })
    }

    fn compact_to(&mut self, revision: Revision) {
        let compact_revision = std::mem::replace(&mut self.compact_revision, revision);
        let keep_from = self.history.partition_point(|event| event.revision() < revision);
        let drained = self.history.drain(..keep_from);
        if let Some(journal) = &mut self.journal {
            journal.push(Undo::Compacted {
                compact_revision,
                drained: drained.collect(),
            });
        }
    }

    /// The retained events from `start` on under `prefix`.
    pub(super) fn history_from(&self, start: Revision, prefix: &str) -> Vec<WatchEvent> {
        let from = self.history.partition_point(|event| event.revision() < start);
        self.history
            .range(from..)
            .filter(|event| event.key().starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Re-applies a logged change on recovery. Leases come back with a full TTL.
    pub(super) fn replay(&mut self, change: Change, now: Instant) -> Result<(), String> {
        match change {
            Change::Commit { revision, events } => self.replay_events(revision, events),
            Change::LeaseGrant { id, ttl } => {
                self.leases.insert(
                    id,
                    LeaseEntry {
                        ttl,
                        deadline: now + ttl,
                        keys: BTreeSet::new(),
                    },
                );
                Ok(())
            }
            Change::LeaseRevoke {
                id, revision, events, ..
            } => {
                self.leases.remove(&id);
                if events.is_empty() {
                    Ok(())
                } else {
                    self.replay_events(revision, events)
                }
            }
            Change::Compact { revision } => {
                if revision > self.revision {
                    return Err(format!("compaction to {revision} beyond revision {}", self.revision));
                }
                self.compact_to(revision);
                Ok(())
            }
        }
    }

    fn replay_events(&mut self, revision: Revision, events: Vec<WatchEvent>) -> Result<(), String> {
        if revision != self.revision + 1 {
            return Err(format!(
                "revision {revision} does not follow revision {}",
                self.revision
            ));
        }
        if let Some(event) = events.iter().find(|event| event.revision() != revision) {
            return Err(format!(
                "event for key {} at revision {} inside revision {revision}",
                event.key(),
                event.revision()
            ));
        }
        for event in &events {
            self.apply_event(event);
        }
        // Recovery records nothing (nobody rolls it back): no need to go through
        // `advance` and clone the events.
        debug_assert!(self.journal.is_none(), "replay while recording");
        self.revision = revision;
        self.history.extend(events);
        Ok(())
    }
}

/// What one mutation overwrote: applying it puts the state back as it was before.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Undo {
    /// A key was written or deleted; `old` is what it held (`None`: absent).
    Kv {
        key: String,
        old: Option<KeyValue>,
    },
    LeaseKeyAdded {
        id: LeaseId,
        key: String,
    },
    LeaseKeyRemoved {
        id: LeaseId,
        key: String,
    },
    LeaseAdded(LeaseId),
    LeaseRemoved(LeaseId, LeaseEntry),
    LeaseDeadline(LeaseId, Instant),
    Revision(Revision),
    /// This many events were appended to the history.
    HistoryAppended(usize),
    /// Compaction moved the compaction revision from `compact_revision` and dropped
    /// `drained` from the front of the history.
    Compacted {
        compact_revision: Revision,
        drained: Vec<WatchEvent>,
    },
}

fn cmp<T: Ord + ?Sized>(op: CompareOp, stored: &T, given: &T) -> bool {
    match op {
        CompareOp::Equal => stored == given,
        CompareOp::NotEqual => stored != given,
        CompareOp::Less => stored < given,
        CompareOp::Greater => stored > given,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn put(state: &mut State, key: &str, value: &str, now: Instant) -> TxnResponse {
        state
            .txn(&Txn::new().and_then([TxnOp::put(key, value)]), now)
            .unwrap()
            .0
    }

    #[test]
    fn revisions_and_versions_follow_etcd() {
        let now = Instant::now();
        let mut state = State::new();
        assert_eq!(state.revision, 1, "an empty store is at revision 1");
        assert_eq!(put(&mut state, "a", "1", now).revision, 2);
        assert_eq!(put(&mut state, "a", "2", now).revision, 3);
        let kv = state.get("a").unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
        // Deleting nothing does not move the revision.
        let (resp, changes) = state.txn(&Txn::new().and_then([TxnOp::delete("zz")]), now).unwrap();
        assert_eq!((resp.revision, changes.len()), (3, 0));
        assert_eq!(resp.responses, vec![TxnOpResponse::Delete { deleted: 0 }]);
        let (resp, _) = state.txn(&Txn::new().and_then([TxnOp::delete("a")]), now).unwrap();
        assert_eq!(
            (resp.revision, resp.responses[0].clone()),
            (4, TxnOpResponse::Delete { deleted: 1 })
        );
        // Recreated: the version starts again and the create revision is new.
        put(&mut state, "a", "3", now);
        let kv = state.get("a").unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    }

    #[test]
    fn compares_table() {
        let now = Instant::now();
        let mut state = State::new();
        put(&mut state, "k", "v", now); // create 2
        put(&mut state, "k", "w", now); // mod 3, version 2
        let cases: Vec<(Compare, bool)> = vec![
            (Compare::absent("k"), false),
            (Compare::absent("missing"), true),
            (Compare::created_at("k", 2), true),
            (Compare::created_at("k", 3), false),
            (Compare::modified_at("k", 3), true),
            (
                Compare::ModRevision {
                    key: "k".into(),
                    op: CompareOp::Less,
                    revision: 3,
                },
                false,
            ),
            (
                Compare::ModRevision {
                    key: "k".into(),
                    op: CompareOp::Greater,
                    revision: 2,
                },
                true,
            ),
            (
                Compare::Version {
                    key: "k".into(),
                    op: CompareOp::Equal,
                    version: 2,
                },
                true,
            ),
            (
                Compare::Version {
                    key: "missing".into(),
                    op: CompareOp::Equal,
                    version: 0,
                },
                true,
            ),
            (
                Compare::Version {
                    key: "k".into(),
                    op: CompareOp::NotEqual,
                    version: 2,
                },
                false,
            ),
            (Compare::value_is("k", "w"), true),
            (Compare::value_is("k", "v"), false),
            (
                Compare::Value {
                    key: "k".into(),
                    op: CompareOp::Greater,
                    value: b"a".to_vec(),
                },
                true,
            ),
            // A value compare on a missing key fails whatever the operator.
            (Compare::value_is("missing", ""), false),
            (
                Compare::Value {
                    key: "missing".into(),
                    op: CompareOp::NotEqual,
                    value: b"x".to_vec(),
                },
                false,
            ),
        ];
        for (compare, expected) in cases {
            let txn = Txn::new()
                .when([compare.clone()])
                .and_then([TxnOp::get("k")])
                .or_else([TxnOp::get("k")]);
            let (resp, changes) = state.txn(&txn, now).unwrap();
            assert_eq!(resp.succeeded, expected, "{compare:?}");
            assert!(changes.is_empty(), "a read-only transaction writes nothing");
            assert_eq!(resp.revision, 3);
        }
    }

    #[test]
    fn invalid_requests() {
        let now = Instant::now();
        let mut state = State::new();
        let bad: Vec<Txn> = vec![
            Txn::new().and_then([TxnOp::put("", "v")]),
            Txn::new().and_then([TxnOp::put("a", "1"), TxnOp::put("a", "2")]),
            Txn::new().and_then([TxnOp::put("a/b", "1"), TxnOp::DeletePrefix { prefix: "a/".into() }]),
            Txn::new().when([Compare::absent("")]),
            Txn::new().or_else([TxnOp::delete("")]),
        ];
        for txn in bad {
            assert!(
                matches!(state.txn(&txn, now), Err(StoreError::InvalidRequest(_))),
                "{txn:?}"
            );
        }
        assert!(matches!(
            state.lease_grant(7, Duration::ZERO, now),
            Err(StoreError::InvalidRequest(_))
        ));
        assert!(matches!(state.compact(5), Err(StoreError::InvalidRequest(_))));
        assert_eq!(state.revision, 1);
    }

    #[test]
    fn one_revision_per_transaction() {
        let now = Instant::now();
        let mut state = State::new();
        let txn = Txn::new().and_then([TxnOp::put("p/a", "1"), TxnOp::put("p/b", "2"), TxnOp::get("p/a")]);
        let (resp, changes) = state.txn(&txn, now).unwrap();
        assert_eq!(resp.revision, 2);
        // Reads inside a transaction see its own earlier writes, as in etcd.
        assert!(matches!(&resp.responses[2], TxnOpResponse::Get(Some(kv)) if kv.mod_revision == 2));
        assert_eq!(changes.len(), 1);
        let (resp, _) = state
            .txn(&Txn::new().and_then([TxnOp::DeletePrefix { prefix: "p/".into() }]), now)
            .unwrap();
        assert_eq!(
            (resp.revision, resp.responses[0].clone()),
            (3, TxnOpResponse::Delete { deleted: 2 })
        );
        assert_eq!(state.history_from(3, "p/").len(), 2);
    }

    #[test]
    fn leases_with_fake_time() {
        let t0 = Instant::now();
        let mut state = State::new();
        let (lease, _) = state.lease_grant(7, Duration::from_secs(2), t0).unwrap();
        state
            .txn(
                &Txn::new().and_then([
                    TxnOp::put_with_lease("a", "1", lease.id),
                    TxnOp::put_with_lease("b", "1", 7),
                ]),
                t0,
            )
            .unwrap();
        put(&mut state, "c", "1", t0);
        // Detach "b" by putting it without a lease.
        put(&mut state, "b", "2", t0);
        assert_eq!(state.revision, 4);
        assert!(state.expire_leases(t0 + Duration::from_millis(1999)).is_empty());
        assert_eq!(
            state.lease_keep_alive(7, t0 + Duration::from_millis(1500)).unwrap(),
            Duration::from_secs(2)
        );
        assert!(
            state.expire_leases(t0 + Duration::from_millis(3000)).is_empty(),
            "keep-alive moved the deadline"
        );
        let changes = state.expire_leases(t0 + Duration::from_millis(3500));
        assert_eq!(
            changes,
            vec![Change::LeaseRevoke {
                id: 7,
                revision: 5,
                events: vec![WatchEvent::Delete {
                    key: "a".into(),
                    mod_revision: 5
                }],
                expired: true
            }]
        );
        assert!(state.get("a").is_none() && state.get("b").is_some() && state.get("c").is_some());
        let later = t0 + Duration::from_secs(4);
        assert!(matches!(
            state.lease_keep_alive(7, later),
            Err(StoreError::LeaseNotFound(7))
        ));
        let put_expired = Txn::new().and_then([TxnOp::put_with_lease("d", "1", 7)]);
        assert!(matches!(
            state.txn(&put_expired, later),
            Err(StoreError::LeaseNotFound(7))
        ));
        // An expired lease not yet reaped is refused too.
        state.lease_grant(8, Duration::from_secs(1), t0).unwrap();
        let put_late = Txn::new().and_then([TxnOp::put_with_lease("d", "1", 8)]);
        assert!(matches!(state.txn(&put_late, later), Err(StoreError::LeaseNotFound(8))));
        // Revoking a lease without keys does not move the revision.
        assert!(matches!(
            state.lease_revoke(8, false),
            Ok(Change::LeaseRevoke { revision: 5, .. })
        ));
        assert!(matches!(
            state.lease_revoke(8, false),
            Err(StoreError::LeaseNotFound(8))
        ));
    }

    #[test]
    fn compaction_bounds_history() {
        let now = Instant::now();
        let mut state = State::new();
        for i in 0..5 {
            put(&mut state, "k", &i.to_string(), now); // revisions 2..=6
        }
        state.compact(4).unwrap();
        assert_eq!(state.history_from(0, "").first().map(WatchEvent::revision), Some(4));
        assert!(matches!(
            state.compact(3),
            Err(StoreError::Compacted {
                requested: 3,
                compact_revision: 4
            })
        ));
        assert!(matches!(state.compact(7), Err(StoreError::InvalidRequest(_))));
        state.compact(6).unwrap();
        assert_eq!(state.history_from(0, "").len(), 1);
    }

    /// Every kind of mutation, alone and combined, rolls back to exactly the state
    /// before `begin` (also when the next `begin` finds it unfinished); `commit`
    /// keeps it.
    #[test]
    fn rollback_undoes_every_mutation() {
        let t0 = Instant::now();
        let mut base = State::new();
        base.lease_grant(7, Duration::from_secs(2), t0).unwrap();
        base.lease_grant(8, Duration::from_secs(60), t0).unwrap();
        base.txn(
            &Txn::new().and_then([
                TxnOp::put_with_lease("a", "1", 7),
                TxnOp::put_with_lease("b", "1", 7),
                TxnOp::put("p/x", "1"),
                TxnOp::put("p/y", "1"),
            ]),
            t0,
        )
        .unwrap();
        put(&mut base, "c", "1", t0);
        base.compact(2).unwrap();
        let txn = |ops: Vec<TxnOp>| Txn::new().and_then(ops);
        type Op = Box<dyn Fn(&mut State)>;
        let ops: Vec<(&str, Op)> = vec![
            (
                "put new",
                Box::new(move |s| drop(s.txn(&txn(vec![TxnOp::put("n", "1")]), t0))),
            ),
            (
                "overwrite",
                Box::new(move |s| drop(s.txn(&txn(vec![TxnOp::put("c", "2")]), t0))),
            ),
            (
                "move to another lease",
                Box::new(move |s| drop(s.txn(&txn(vec![TxnOp::put_with_lease("a", "2", 8)]), t0))),
            ),
            (
                "detach from its lease",
                Box::new(move |s| drop(s.txn(&txn(vec![TxnOp::put("b", "2")]), t0))),
            ),
            (
                "attach to a lease",
                Box::new(move |s| drop(s.txn(&txn(vec![TxnOp::put_with_lease("c", "2", 8)]), t0))),
            ),
            (
                "delete",
                Box::new(move |s| drop(s.txn(&txn(vec![TxnOp::delete("a")]), t0))),
            ),
            (
                "delete prefix and put",
                Box::new(move |s| {
                    drop(s.txn(
                        &txn(vec![TxnOp::DeletePrefix { prefix: "p/".into() }, TxnOp::put("q", "1")]),
                        t0,
                    ))
                }),
            ),
            (
                "grant",
                Box::new(move |s| drop(s.lease_grant(9, Duration::from_secs(1), t0))),
            ),
            (
                "keep alive",
                Box::new(move |s| drop(s.lease_keep_alive(8, t0 + Duration::from_secs(1)))),
            ),
            ("revoke", Box::new(|s| drop(s.lease_revoke(7, false)))),
            (
                "expire",
                Box::new(move |s| drop(s.expire_leases(t0 + Duration::from_secs(3)))),
            ),
            ("compact", Box::new(|s| drop(s.compact(4)))),
            (
                "expire, write, compact the lot",
                Box::new(move |s| {
                    let later = t0 + Duration::from_secs(3);
                    s.expire_leases(later);
                    s.txn(&txn(vec![TxnOp::put_with_lease("n", "1", 8)]), later).unwrap();
                    let revision = s.revision;
                    s.compact(revision).unwrap();
                }),
            ),
        ];
        for (name, op) in &ops {
            let mut state = base.clone();
            state.begin();
            op(&mut state);
            assert_ne!(state, base, "{name}: the operation changes something");
            state.rollback();
            assert_eq!(state, base, "{name}: rolled back");
            state.begin();
            op(&mut state);
            // What the next operation finds after one panicked half-way.
            state.begin();
            state.commit();
            assert_eq!(state, base, "{name}: an unfinished recording is rolled back");
            state.begin();
            op(&mut state);
            state.commit();
            let mut direct = base.clone();
            op(&mut direct);
            assert_eq!(state, direct, "{name}: committed, as if never recorded");
        }
    }
}
