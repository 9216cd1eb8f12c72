//! The layout of Meridian's keys in the store. Every key lives under one root prefix
//! (default `/meridian`), so several deployments (or test cases) can share an etcd.

use crate::ids::ReplicaId;

/// How many consecutive events share one [`Keys::event_block`] prefix.
pub const EVENT_BLOCK: u64 = 100;

/// The key layout under one root prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    root: String,
}

impl Keys {
    /// `root` without a trailing slash, e.g. `/meridian`.
    pub fn new(root: &str) -> Self {
        Self {
            root: root.trim_end_matches('/').to_string(),
        }
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// The leader key: held by the elected replica under its lease. Its create
    /// revision is the fence of every leader-only write.
    pub fn leader(&self) -> String {
        format!("{}/election/leader", self.root)
    }

    /// Written by the leader, fenced, on every lease renewal: proof of a live leader
    /// that can still write.
    pub fn leader_heartbeat(&self) -> String {
        format!("{}/election/heartbeat", self.root)
    }

    /// Prefix of the replica registry (one leased key per live replica).
    pub fn replicas_prefix(&self) -> String {
        format!("{}/replicas/", self.root)
    }

    pub fn replica(&self, id: &ReplicaId) -> String {
        format!("{}{}", self.replicas_prefix(), id)
    }

    /// The applied topology document (JSON of `TopologyDoc`).
    pub fn topology(&self) -> String {
        format!("{}/topology/current", self.root)
    }

    /// The current steering plan's version (written by the steering engine).
    pub fn plan_current(&self) -> String {
        format!("{}/plan/current", self.root)
    }

    /// The fleet hold of a canary wave (issue [8]), when one is in force: agents
    /// outside the wave are served the plan it names. Under the plan pointer's key
    /// on purpose: one follower of `plan_current()` as a prefix sees both, in
    /// revision order.
    pub fn plan_fleet_hold(&self) -> String {
        format!("{}/plan/current/fleet-hold", self.root)
    }

    /// Prefix of every published plan, by version.
    pub fn plan_history_prefix(&self) -> String {
        format!("{}/plan/history/", self.root)
    }

    /// One published plan. Zero-padded so keys sort by version.
    pub fn plan_version(&self, version: u64) -> String {
        format!("{}{:020}", self.plan_history_prefix(), version)
    }

    /// The plan pin (restore), when one is in force.
    pub fn plan_pin(&self) -> String {
        format!("{}/intents/plan-pin", self.root)
    }

    /// The global change freeze (a release window), when one is set.
    pub fn freeze(&self) -> String {
        format!("{}/intents/freeze", self.root)
    }

    /// Prefix of the scoped freezes (per PoP and per client region).
    pub fn freezes_prefix(&self) -> String {
        format!("{}/intents/freezes/", self.root)
    }

    /// Where the freeze of `scope` is stored: the global one at [`Keys::freeze`],
    /// a PoP's at `intents/freezes/pop/<id>`, a region's at
    /// `intents/freezes/region/<id>`.
    pub fn freeze_of(&self, scope: &crate::records::FreezeScope) -> String {
        use crate::records::FreezeScope;
        match scope {
            FreezeScope::Global => self.freeze(),
            FreezeScope::Pop(id) => format!("{}pop/{id}", self.freezes_prefix()),
            FreezeScope::Region(id) => format!("{}region/{id}", self.freezes_prefix()),
        }
    }

    /// Prefix of change records (issue [8]).
    pub fn changes_prefix(&self) -> String {
        format!("{}/changes/records/", self.root)
    }

    /// One change record.
    pub fn change(&self, id: &str) -> String {
        format!("{}{id}", self.changes_prefix())
    }

    /// Which change holds a target (a PoP): one active change per target.
    pub fn change_hold(&self, target: &str) -> String {
        format!("{}/changes/holds/{target}", self.root)
    }

    /// Prefix of operator capacity overrides (issue [8]).
    pub fn capacity_prefix(&self) -> String {
        format!("{}/intents/capacity/", self.root)
    }

    pub fn capacity(&self, pop: &str) -> String {
        format!("{}{pop}", self.capacity_prefix())
    }

    /// Prefix of operator drains.
    pub fn drains_prefix(&self) -> String {
        format!("{}/intents/drains/", self.root)
    }

    pub fn drain(&self, pop: &str) -> String {
        format!("{}{pop}", self.drains_prefix())
    }

    /// The drain set's version: every drain and undrain rewrites it in the same
    /// transaction, and a drain compares its mod revision, so guardrails are decided
    /// on exactly the drain set the write lands on.
    pub fn drain_set(&self) -> String {
        format!("{}/intents/drain-set", self.root)
    }

    /// The store's identity (JSON of `StoreEpoch`): created once, with the store, by
    /// the first leader (fenced, only if absent), and carried by every plan, so an
    /// agent can tell a wiped and restored store's numbering from its own.
    pub fn epoch(&self) -> String {
        format!("{}/cluster/epoch", self.root)
    }

    /// Prefix of the durable event log: one key per event, by sequence number.
    pub fn events_prefix(&self) -> String {
        format!("{}/events/log/", self.root)
    }

    /// One event. Zero-padded to 20 digits so keys sort by sequence number.
    pub fn event(&self, seq: u64) -> String {
        format!("{}{:020}", self.events_prefix(), seq)
    }

    /// The prefix shared by the [`EVENT_BLOCK`] events `block * EVENT_BLOCK ..
    /// (block + 1) * EVENT_BLOCK` (the first 18 of the 20 digits), so a reader
    /// fetches the log a block at a time with a prefix read instead of all at once.
    pub fn event_block(&self, block: u64) -> String {
        format!("{}{:018}", self.events_prefix(), block)
    }

    /// The next sequence number to allocate; every append compares its mod revision
    /// and rewrites it in the same transaction.
    pub fn events_next(&self) -> String {
        format!("{}/events/next", self.root)
    }

    /// The lowest sequence number that may still be stored (raised by pruning).
    pub fn events_floor(&self) -> String {
        format!("{}/events/floor", self.root)
    }

    /// Prefix of the per-replica agent tables.
    pub fn agents_prefix(&self) -> String {
        format!("{}/agents/", self.root)
    }

    pub fn agents(&self, replica: &ReplicaId) -> String {
        format!("{}{replica}", self.agents_prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_under_the_root_and_do_not_alias() {
        let k = Keys::new("/meridian/");
        let id = ReplicaId::new("cp-1").unwrap();
        assert_eq!(k.leader(), "/meridian/election/leader");
        assert_eq!(k.replica(&id), "/meridian/replicas/cp-1");
        assert!(k.replica(&id).starts_with(&k.replicas_prefix()));
        assert_eq!(k.epoch(), "/meridian/cluster/epoch");
        assert!(
            !k.leader_heartbeat().starts_with(&k.leader()),
            "a prefix watch on the leader key must not see the heartbeat"
        );
    }

    #[test]
    fn scoped_freezes_have_their_own_keys_beside_the_global_one() {
        use crate::records::FreezeScope;
        let k = Keys::new("/m");
        assert_eq!(k.freeze_of(&FreezeScope::Global), "/m/intents/freeze");
        let pop = k.freeze_of(&FreezeScope::Pop("fra1".into()));
        let region = k.freeze_of(&FreezeScope::Region("fra1".into()));
        assert_eq!(pop, "/m/intents/freezes/pop/fra1");
        assert_eq!(region, "/m/intents/freezes/region/fra1");
        assert!(pop.starts_with(&k.freezes_prefix()) && region.starts_with(&k.freezes_prefix()));
        assert!(!k.freeze().starts_with(&k.freezes_prefix()));
    }

    #[test]
    fn event_keys_sort_by_sequence_and_blocks_hold_a_hundred() {
        let k = Keys::new("/m");
        assert_eq!(k.event(7), "/m/events/log/00000000000000000007");
        assert!(k.event(99) < k.event(100) && k.event(100) < k.event(1000));
        assert!(k.event(199).starts_with(&k.event_block(1)));
        assert!(k.event(100).starts_with(&k.event_block(1)));
        assert!(!k.event(200).starts_with(&k.event_block(1)));
        assert!(!k.events_next().starts_with(&k.events_prefix()));
        assert!(!k.events_floor().starts_with(&k.events_prefix()));
    }
}
