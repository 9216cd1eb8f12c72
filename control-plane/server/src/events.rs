//! The replica's event log: typed [`Event`]s (verdicts, suspect regions, plans,
//! guardrails, slow start, operator actions with their actor) with an id each, for
//! `meridianctl events`. Its own component, apart from the health view, so issue [7]
//! can make it durable behind the same `record` / `list` calls.
//!
//! Today it is a bounded ring in memory per replica (the newest [`EVENT_RING`]
//! events); each replica records the health events it sees and the control actions
//! it carries out.

use std::collections::VecDeque;
use std::sync::Mutex;

use meridian_engine::Event;

/// How many events a replica keeps.
pub const EVENT_RING: usize = 2000;

/// One entry: its id on this replica and the event.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedEvent {
    pub id: u64,
    pub event: Event,
}

/// The event log of one replica.
#[derive(Debug)]
pub struct EventLog {
    inner: Mutex<Ring>,
    capacity: usize,
}

#[derive(Debug)]
struct Ring {
    next_id: u64,
    ring: VecDeque<LoggedEvent>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::with_capacity(EVENT_RING)
    }
}

impl EventLog {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Ring {
                next_id: 1,
                ring: VecDeque::new(),
            }),
            capacity: capacity.max(1),
        }
    }

    /// Records one event (and logs it).
    pub fn record(&self, event: Event) {
        self.record_all([event]);
    }

    /// Records events in order.
    pub fn record_all(&self, events: impl IntoIterator<Item = Event>) {
        // A panic while holding the lock cannot leave the ring inconsistent (each
        // push is self-contained), so a poisoned lock is recovered.
        let mut log = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            tracing::info!(
                kind = event.kind_name(),
                actor = %event.actor,
                pop = event.pop(),
                region = event.region(),
                message = %event.message(),
                "event"
            );
            let id = log.next_id;
            log.next_id += 1;
            log.ring.push_back(LoggedEvent { id, event });
            if log.ring.len() > self.capacity {
                log.ring.pop_front();
            }
        }
    }

    /// The newest `limit` events, oldest first, optionally only those about `pop`.
    pub fn list(&self, limit: usize, pop: Option<&str>) -> Vec<LoggedEvent> {
        let log = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<LoggedEvent> = log
            .ring
            .iter()
            .rev()
            .filter(|e| pop.is_none_or(|p| e.event.pop() == Some(p)))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_core::Actor;
    use meridian_engine::{EventKind, OperatorAction};

    fn drained(pop: &str, at: u64) -> Event {
        Event {
            at_unix_ms: at,
            actor: Actor::Steering,
            kind: EventKind::Operator(OperatorAction::Undrained {
                pop: pop.into(),
                reason: "r".into(),
            }),
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_with_increasing_ids_and_filters_by_pop() {
        let log = EventLog::with_capacity(3);
        for (i, pop) in ["a", "b", "a", "c", "a"].iter().enumerate() {
            log.record(drained(pop, i as u64));
        }
        let all = log.list(10, None);
        assert_eq!(
            all.iter().map(|e| e.id).collect::<Vec<_>>(),
            [3, 4, 5],
            "oldest dropped first"
        );
        let a = log.list(10, Some("a"));
        assert_eq!(a.iter().map(|e| e.event.at_unix_ms).collect::<Vec<_>>(), [2, 4]);
        assert_eq!(log.list(1, None)[0].id, 5, "limit keeps the newest");
        assert!(log.list(10, Some("zzz")).is_empty());
    }
}
