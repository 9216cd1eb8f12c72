//! Watch fan-out for the embedded store: committed revisions are broadcast to live
//! watchers; a watch first replays the history it asked for, then follows the
//! broadcast. A watcher that falls behind the broadcast buffer (`Lagged`) re-reads
//! what it missed from the history log under the lock and re-subscribes, so it
//! neither loses nor repeats an event; if that history was compacted meanwhile it gets
//! [`StoreError::Compacted`], like an etcd watcher would.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::Inner;
use crate::{Revision, StoreError, WatchBatch, WatchEvent, WatchStream};

/// Upper bound on the events of one watch batch when replaying history.
const MAX_REPLAY_BATCH: usize = 1000;

/// A watch's start: live events from `rx` at `next_revision` or later, after the
/// `backlog` read from history.
struct Subscription {
    rx: broadcast::Receiver<Arc<Committed>>,
    backlog: VecDeque<WatchEvent>,
    next_revision: Revision,
}

/// One revision's events, as broadcast to live watchers.
#[derive(Debug)]
pub(super) struct Committed {
    pub(super) revision: Revision,
    pub(super) events: Vec<WatchEvent>,
}

impl Inner {
    /// Opens a watch on `prefix` from `start` (`None` or 0: from the next revision).
    pub(super) fn watch(self: &Arc<Self>, prefix: &str, start: Option<Revision>) -> Result<WatchStream, StoreError> {
        let Subscription {
            rx,
            backlog,
            next_revision,
        } = self.subscribe(prefix, start)?;
        Ok(watch_stream(WatchCursor {
            inner: Arc::downgrade(self),
            rx,
            prefix: prefix.to_owned(),
            next_revision,
            backlog,
            done: false,
        }))
    }

    /// Subscribes to live events and reads the history a watch from `start` must
    /// replay first, atomically. Returns the receiver, the backlog and the first
    /// revision the receiver must deliver.
    fn subscribe(&self, prefix: &str, start: Option<Revision>) -> Result<Subscription, StoreError> {
        let core = self.lock();
        let state = &core.state;
        let start = match start {
            Some(start) if start > 0 => start,
            // Like etcd, 0 means "from now on".
            _ => state.revision + 1,
        };
        if start < state.compact_revision {
            return Err(StoreError::Compacted {
                requested: start,
                compact_revision: state.compact_revision,
            });
        }
        Ok(Subscription {
            rx: self.events.subscribe(),
            backlog: state.history_from(start, prefix).into(),
            next_revision: start.max(state.revision + 1),
        })
    }
}

struct WatchCursor {
    inner: Weak<Inner>,
    rx: broadcast::Receiver<Arc<Committed>>,
    prefix: String,
    /// Revisions below this have been delivered (or were not this watch's).
    next_revision: Revision,
    backlog: VecDeque<WatchEvent>,
    done: bool,
}

fn watch_stream(cursor: WatchCursor) -> WatchStream {
    Box::pin(futures::stream::unfold(cursor, |mut cursor| async move {
        if cursor.done {
            return None;
        }
        loop {
            if !cursor.backlog.is_empty() {
                let n = cursor.backlog.len().min(MAX_REPLAY_BATCH);
                let events = cursor.backlog.drain(..n).collect();
                return Some((Ok(WatchBatch { events }), cursor));
            }
            match cursor.rx.recv().await {
                Ok(committed) => {
                    if committed.revision < cursor.next_revision {
                        continue;
                    }
                    cursor.next_revision = committed.revision + 1;
                    let events: Vec<WatchEvent> = committed
                        .events
                        .iter()
                        .filter(|event| event.key().starts_with(&cursor.prefix))
                        .cloned()
                        .collect();
                    if !events.is_empty() {
                        return Some((Ok(WatchBatch { events }), cursor));
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // The store is gone: end like any other watch at shutdown.
                    let inner = cursor.inner.upgrade()?;
                    metrics::counter!("meridian_store_embedded_watch_lagged_total").increment(1);
                    match inner.subscribe(&cursor.prefix, Some(cursor.next_revision)) {
                        Ok(Subscription {
                            rx,
                            backlog,
                            next_revision,
                        }) => {
                            cursor.rx = rx;
                            cursor.backlog = backlog;
                            cursor.next_revision = next_revision;
                        }
                        Err(e) => {
                            cursor.done = true;
                            return Some((Err(e), cursor));
                        }
                    }
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    use super::super::{collect, Core, EmbeddedStore, State};
    use crate::{Revision, Store, StoreError, WatchEvent};

    #[tokio::test]
    async fn lagging_watcher_catches_up_from_history() {
        let store = EmbeddedStore::from_core(
            Core {
                state: State::new(),
                disk: None,
                write_failure: None,
            },
            4,
            None,
            None,
        );
        let mut watch = store.watch_prefix("w/", None).await.unwrap();
        for i in 0..50 {
            store.put(&format!("w/{i}"), vec![], None).await.unwrap();
        }
        let events = collect(&mut watch, 50).await;
        let revisions: Vec<Revision> = events.iter().map(WatchEvent::revision).collect();
        assert_eq!(revisions, (2..52).collect::<Vec<_>>());
        // Lagging past a compaction is an error, not a silent gap.
        let mut watch = store.watch_prefix("w/", None).await.unwrap();
        for i in 0..10 {
            store.put(&format!("w/{i}"), vec![], None).await.unwrap();
        }
        store.compact(60).await.unwrap();
        let first = watch.next().await.unwrap();
        assert!(
            matches!(
                first,
                Err(StoreError::Compacted {
                    requested: 52,
                    compact_revision: 60
                })
            ),
            "{first:?}"
        );
        assert!(watch.next().await.is_none());
    }

    #[tokio::test]
    async fn watch_ends_when_store_dropped() {
        let store = EmbeddedStore::in_memory();
        let mut watch = store.watch_prefix("", None).await.unwrap();
        drop(store);
        let next = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .unwrap();
        assert!(next.is_none());
    }
}
