//! The bounded per-replica buffer of probe results: a pure data structure (no tokio,
//! no clock of its own) so its guarantees are unit-tested with plain values.
//!
//! Results wait in `pending` until they are sent as a batch with a sequence number;
//! a sent batch stays `in_flight` until the replica acknowledges that sequence. When
//! a stream breaks, the unacknowledged batches go back to the front of `pending`, in
//! their original order, so they are resent first (with their original timestamps)
//! on the next stream. The bound counts both: when a new result would exceed it, the
//! oldest result held is dropped and counted; nothing is ever lost silently.

use std::collections::VecDeque;
use std::time::Instant;

/// A bounded buffer of results for one replica.
#[derive(Debug)]
pub struct ReplicaBuffer<T> {
    limit: usize,
    pending: VecDeque<T>,
    in_flight: VecDeque<SentBatch<T>>,
    held: usize,
    next_sequence: u64,
    dropped: u64,
}

/// A batch that was sent and awaits its acknowledgement.
#[derive(Debug)]
struct SentBatch<T> {
    sequence: u64,
    items: VecDeque<T>,
    sent_at: Instant,
}

impl<T: Clone> ReplicaBuffer<T> {
    /// A buffer that holds at most `limit` results (at least one).
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            pending: VecDeque::new(),
            in_flight: VecDeque::new(),
            held: 0,
            next_sequence: 1,
            dropped: 0,
        }
    }

    /// Adds a result. Returns how many results were dropped to make room (0 or 1).
    pub fn push(&mut self, item: T) -> usize {
        self.pending.push_back(item);
        self.held += 1;
        let mut dropped = 0;
        while self.held > self.limit {
            if self.drop_oldest() {
                dropped += 1;
            } else {
                break;
            }
        }
        dropped
    }

    /// Moves up to `max` pending results into a new in-flight batch and returns its
    /// sequence and a copy of its results to send. `None` when nothing is pending.
    pub fn take_batch(&mut self, max: usize, now: Instant) -> Option<(u64, Vec<T>)> {
        if self.pending.is_empty() {
            return None;
        }
        let n = max.max(1).min(self.pending.len());
        let items: VecDeque<T> = self.pending.drain(..n).collect();
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let copy = items.iter().cloned().collect();
        self.in_flight.push_back(SentBatch {
            sequence,
            items,
            sent_at: now,
        });
        Some((sequence, copy))
    }

    /// Removes the in-flight batch with this sequence (and only it). Returns how
    /// many results it held, or `None` when no such batch is in flight (already
    /// acknowledged, dropped by overflow, or never sent).
    pub fn ack(&mut self, sequence: u64) -> Option<usize> {
        let pos = self.in_flight.iter().position(|b| b.sequence == sequence)?;
        let batch = self.in_flight.remove(pos)?;
        self.held -= batch.items.len();
        Some(batch.items.len())
    }

    /// After a stream broke: every unacknowledged batch goes back to the front of
    /// the pending queue, oldest first, to be resent before newer results.
    pub fn requeue_unacked(&mut self) {
        while let Some(batch) = self.in_flight.pop_back() {
            for item in batch.items.into_iter().rev() {
                self.pending.push_front(item);
            }
        }
    }

    /// Results held (pending plus in flight).
    pub fn len(&self) -> usize {
        self.held
    }
    pub fn is_empty(&self) -> bool {
        self.held == 0
    }
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
    pub fn in_flight_batches(&self) -> usize {
        self.in_flight.len()
    }
    /// Results dropped by overflow since the buffer was created.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
    pub fn limit(&self) -> usize {
        self.limit
    }
    /// When the oldest unacknowledged batch was sent.
    pub fn oldest_unacked_sent_at(&self) -> Option<Instant> {
        self.in_flight.front().map(|b| b.sent_at)
    }

    fn drop_oldest(&mut self) -> bool {
        // The oldest result is at the front of the oldest in-flight batch, if any.
        if let Some(batch) = self.in_flight.front_mut() {
            if batch.items.pop_front().is_some() {
                if batch.items.is_empty() {
                    self.in_flight.pop_front();
                }
                self.held -= 1;
                self.dropped += 1;
                return true;
            }
            // An empty batch (cannot happen: batches are never created empty) is
            // discarded so the loop makes progress.
            self.in_flight.pop_front();
        }
        if self.pending.pop_front().is_some() {
            self.held -= 1;
            self.dropped += 1;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all<T: Clone>(b: &mut ReplicaBuffer<T>) -> Vec<T> {
        let mut out = Vec::new();
        while let Some((_, items)) = b.take_batch(usize::MAX, Instant::now()) {
            out.extend(items);
        }
        out
    }

    #[test]
    fn the_bound_drops_the_oldest_and_counts() {
        let mut b = ReplicaBuffer::new(3);
        let dropped: usize = (1..=5).map(|i| b.push(i)).sum();
        assert_eq!(dropped, 2);
        assert_eq!(b.dropped(), 2);
        assert_eq!(b.len(), 3);
        assert_eq!(all(&mut b), vec![3, 4, 5]);
    }

    #[test]
    fn the_bound_counts_in_flight_results_and_drops_them_first() {
        let now = Instant::now();
        let mut b = ReplicaBuffer::new(4);
        for i in 1..=3 {
            b.push(i);
        }
        let (seq, items) = b.take_batch(2, now).unwrap();
        assert_eq!((seq, items), (1, vec![1, 2]));
        b.push(4);
        assert_eq!(b.dropped(), 0);
        b.push(5); // over the bound: the oldest (1, in flight) goes
        assert_eq!(b.dropped(), 1);
        b.push(6); // then 2, which empties batch 1
        assert_eq!(b.dropped(), 2);
        assert_eq!(b.in_flight_batches(), 0);
        assert_eq!(b.ack(1), None, "an ack for a batch dropped by overflow is ignored");
        assert_eq!(all(&mut b), vec![3, 4, 5, 6]);
    }

    #[test]
    fn an_ack_removes_only_the_acknowledged_batch() {
        let now = Instant::now();
        let mut b = ReplicaBuffer::new(100);
        for i in 1..=6 {
            b.push(i);
        }
        let s1 = b.take_batch(2, now).unwrap().0;
        let s2 = b.take_batch(2, now).unwrap().0;
        let s3 = b.take_batch(2, now).unwrap().0;
        assert!(s1 < s2 && s2 < s3);
        assert_eq!(b.ack(s2), Some(2));
        assert_eq!(b.ack(s2), None, "a repeated ack changes nothing");
        assert_eq!(b.ack(999), None);
        assert_eq!(b.len(), 4);
        b.requeue_unacked();
        assert_eq!(all(&mut b), vec![1, 2, 5, 6]);
    }

    #[test]
    fn requeue_puts_unacked_batches_first_in_order_with_new_sequences() {
        let now = Instant::now();
        let mut b = ReplicaBuffer::new(100);
        for i in 1..=5 {
            b.push(i);
        }
        let (s1, _) = b.take_batch(2, now).unwrap();
        let (s2, _) = b.take_batch(2, now).unwrap();
        b.push(6);
        b.requeue_unacked();
        assert_eq!(b.in_flight_batches(), 0);
        assert_eq!(b.pending_len(), 6);
        let (s3, items) = b.take_batch(10, now).unwrap();
        assert!(s3 > s2 && s2 > s1, "sequences keep increasing across streams");
        assert_eq!(items, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(b.ack(s3), Some(6));
        assert!(b.is_empty());
        assert_eq!(b.dropped(), 0);
    }

    #[test]
    fn oldest_unacked_time_tracks_the_front_batch() {
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_secs(1);
        let mut b = ReplicaBuffer::new(10);
        assert_eq!(b.oldest_unacked_sent_at(), None);
        b.push(1);
        b.push(2);
        let (s1, _) = b.take_batch(1, t0).unwrap();
        b.take_batch(1, t1).unwrap();
        assert_eq!(b.oldest_unacked_sent_at(), Some(t0));
        b.ack(s1);
        assert_eq!(b.oldest_unacked_sent_at(), Some(t1));
        assert_eq!(ReplicaBuffer::<u8>::new(0).limit(), 1);
    }
}
