//! The offset ledger: which consumed records still lack a durable outcome, and so how far
//! each partition's committed offset may move. Pure; the consumer stores what it returns.
//!
//! Invariant: the offset handed out for storing is always the lowest offset of the
//! partition whose record has no final outcome yet (or one past the highest record seen
//! when every record is done). A later record that finishes first never moves the offset
//! past an earlier one that has not.
//!
//! Each assignment of a partition gets a fresh epoch. Outcomes of records consumed under
//! an earlier epoch (before a rebalance took the partition away) are ignored: the new
//! owner consumes those records again from the last commit.
//!
//! A partition's records arrive in offset order and mostly finish in it, so they wait in
//! a deque in offset order, each marked done when its outcome is durable; done records
//! leave from the front. Tracking and completing a record costs no allocation, and
//! partitions are found by a hash of their topic's address and their number.

use super::topic::Topic;
use std::collections::{HashMap, VecDeque};

/// A topic and partition.
pub type TopicPartition = (Topic, i32);

/// Identifies one tracked record for [`OffsetLedger::complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub topic: Topic,
    pub partition: i32,
    pub offset: i64,
    pub epoch: u64,
}

#[derive(Debug)]
struct PartitionLedger {
    epoch: u64,
    /// Tracked offsets in ascending order, each with whether it is done; the front is
    /// never done (done records at the front leave at once).
    window: VecDeque<(i64, bool)>,
    highest_seen: Option<i64>,
    /// The offset last handed out for storing.
    stored: Option<i64>,
}

impl PartitionLedger {
    fn new(epoch: u64) -> Self {
        PartitionLedger {
            epoch,
            window: VecDeque::new(),
            highest_seen: None,
            stored: None,
        }
    }

    fn commit_point(&self) -> Option<i64> {
        match self.window.front() {
            Some(&(offset, _)) => Some(offset),
            None => self.highest_seen.map(|h| h + 1),
        }
    }

    /// Where `offset` is in the window. A partition's offsets are nearly always
    /// consecutive, so it is first looked for as far from the front as it is from the
    /// front's offset; a binary search otherwise (the search was 1.3% of a drain's samples).
    fn position(&self, offset: i64) -> Option<usize> {
        let &(front, _) = self.window.front()?;
        let guess = usize::try_from(offset.checked_sub(front)?).ok()?;
        if self.window.get(guess).is_some_and(|&(o, _)| o == offset) {
            return Some(guess);
        }
        self.window.binary_search_by_key(&offset, |&(o, _)| o).ok()
    }

    /// Marks `offset` pending; tracking a pending offset again changes nothing.
    fn track(&mut self, offset: i64) {
        if self.window.back().is_none_or(|&(last, _)| last < offset) {
            self.window.push_back((offset, false));
            return;
        }
        // Out of order (not seen from librdkafka, which hands a partition out in order).
        match self.window.binary_search_by_key(&offset, |&(o, _)| o) {
            Ok(at) => self.window[at].1 = false,
            Err(at) => self.window.insert(at, (offset, false)),
        }
    }

    /// Marks `offset` done; false when it was not pending.
    fn complete(&mut self, offset: i64) -> bool {
        let Some(at) = self.position(offset) else {
            return false;
        };
        if std::mem::replace(&mut self.window[at].1, true) {
            return false;
        }
        while self.window.front().is_some_and(|&(_, done)| done) {
            self.window.pop_front();
        }
        true
    }
}

/// Tracks records from consume to final outcome, per partition.
#[derive(Debug, Default)]
pub struct OffsetLedger {
    partitions: HashMap<TopicPartition, PartitionLedger>,
    next_epoch: u64,
}

impl OffsetLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// A partition was assigned: start it afresh under a new epoch.
    pub fn assign(&mut self, topic: &str, partition: i32) {
        self.next_epoch += 1;
        self.partitions.insert(
            (Topic::named(topic), partition),
            PartitionLedger::new(self.next_epoch),
        );
    }

    /// A partition was revoked: forget it, returning the offset that may be committed.
    pub fn revoke(&mut self, topic: &str, partition: i32) -> Option<i64> {
        let key: TopicPartition = (Topic::named(topic), partition);
        self.partitions.remove(&key).and_then(|p| p.commit_point())
    }

    /// A record was consumed; it is pending until [`complete`](Self::complete).
    pub fn track(&mut self, topic: Topic, partition: i32, offset: i64) -> Ticket {
        // Assignment callbacks run before fetching starts, so creating the partition here
        // is only a safety net.
        let fresh_epoch = self.next_epoch + 1;
        let entry = self
            .partitions
            .entry((topic, partition))
            .or_insert_with(|| PartitionLedger::new(fresh_epoch));
        if entry.epoch == fresh_epoch {
            self.next_epoch = fresh_epoch;
        }
        entry.track(offset);
        // Consumption starts at the committed offset, so that much is stored already.
        entry.stored.get_or_insert(offset);
        entry.highest_seen = Some(entry.highest_seen.map_or(offset, |h| h.max(offset)));
        Ticket {
            topic,
            partition,
            offset,
            epoch: entry.epoch,
        }
    }

    /// A record's outcome is durable. Returns the offset to store for its partition when
    /// the commit point moved, `None` when it did not (or the ticket is stale).
    pub fn complete(&mut self, ticket: &Ticket) -> Option<i64> {
        let key: TopicPartition = (ticket.topic, ticket.partition);
        let entry = self.partitions.get_mut(&key)?;
        if entry.epoch != ticket.epoch || !entry.complete(ticket.offset) {
            return None;
        }
        let point = entry.commit_point()?;
        if entry.stored.is_some_and(|stored| stored >= point) {
            return None;
        }
        entry.stored = Some(point);
        Some(point)
    }

    /// True while the ticket's partition is still held under the assignment it was
    /// consumed in: false once a rebalance moved it (its outcome here would be ignored).
    pub fn is_current(&self, ticket: &Ticket) -> bool {
        self.partitions
            .get(&(ticket.topic, ticket.partition))
            .is_some_and(|entry| entry.epoch == ticket.epoch)
    }

    /// Every partition's committable offset, for a final synchronous commit.
    pub fn commit_points(&self) -> Vec<(TopicPartition, i64)> {
        self.partitions
            .iter()
            .filter_map(|(tp, p)| p.commit_point().map(|point| (*tp, point)))
            .collect()
    }

    /// Records consumed and not yet done, across partitions (counted: read only for logs).
    pub fn pending(&self) -> usize {
        self.partitions
            .values()
            .map(|p| p.window.iter().filter(|(_, done)| !done).count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic() -> Topic {
        Topic::named("loyalty.point-add")
    }

    #[test]
    fn a_later_success_never_commits_past_an_earlier_pending_record() {
        let mut ledger = OffsetLedger::new();
        let t = topic();
        let tickets: Vec<Ticket> = (10..15).map(|o| ledger.track(t, 0, o)).collect();
        assert_eq!(
            ledger.complete(&tickets[3]),
            None,
            "13 done, 10 still pending"
        );
        assert_eq!(ledger.complete(&tickets[1]), None);
        assert_eq!(
            ledger.complete(&tickets[0]),
            Some(12),
            "10 and 11 done: commit up to 12"
        );
        assert_eq!(ledger.complete(&tickets[2]), Some(14), "12 and 13 done");
        assert_eq!(ledger.complete(&tickets[4]), Some(15));
        assert_eq!(ledger.pending(), 0);
    }

    #[test]
    fn any_order_of_outcomes_commits_the_lowest_pending_offset() {
        // Offsets with gaps (compaction, transaction markers), finished in a scrambled
        // order: the commit point always follows the lowest offset not yet done.
        let offsets: Vec<i64> = (0..200).filter(|o| o % 7 != 3).map(|o| o + 1_000).collect();
        let mut ledger = OffsetLedger::new();
        let t = topic();
        let tickets: Vec<Ticket> = offsets.iter().map(|&o| ledger.track(t, 0, o)).collect();
        let mut done = vec![false; offsets.len()];
        let mut stored = offsets[0];
        for step in 0..offsets.len() {
            let i = (step * 67) % offsets.len();
            done[i] = true;
            let expected = done
                .iter()
                .position(|d| !d)
                .map_or(offsets[offsets.len() - 1] + 1, |first| offsets[first]);
            let moved = ledger.complete(&tickets[i]);
            assert_eq!(
                moved,
                (expected > stored).then_some(expected),
                "step {step}"
            );
            stored = stored.max(expected);
            assert_eq!(ledger.complete(&tickets[i]), None, "twice changes nothing");
        }
        assert_eq!(ledger.pending(), 0);
    }

    #[test]
    fn partitions_are_independent() {
        let mut ledger = OffsetLedger::new();
        let t = topic();
        let a = ledger.track(t, 0, 5);
        let b = ledger.track(t, 1, 7);
        assert_eq!(ledger.complete(&b), Some(8));
        assert_eq!(ledger.complete(&a), Some(6));
    }

    #[test]
    fn outcomes_from_before_a_rebalance_are_ignored() {
        let mut ledger = OffsetLedger::new();
        let t = topic();
        ledger.assign(&t, 0);
        let old = ledger.track(t, 0, 3);
        assert_eq!(ledger.revoke(&t, 0), Some(3));
        ledger.assign(&t, 0);
        let new = ledger.track(t, 0, 3);
        assert_eq!(ledger.complete(&old), None, "stale epoch");
        assert!(!ledger.is_current(&old));
        assert_eq!(ledger.complete(&new), Some(4));
    }

    #[test]
    fn gaps_in_offsets_do_not_block_the_commit() {
        // Compacted topics and transaction markers leave gaps.
        let mut ledger = OffsetLedger::new();
        let t = topic();
        let a = ledger.track(t, 0, 1);
        let b = ledger.track(t, 0, 4);
        assert_eq!(ledger.complete(&a), Some(4));
        assert_eq!(ledger.complete(&b), Some(5));
    }

    #[test]
    fn offsets_tracked_out_of_order_still_commit_in_order() {
        let mut ledger = OffsetLedger::new();
        let t = topic();
        let a = ledger.track(t, 0, 3);
        let c = ledger.track(t, 0, 6);
        let b = ledger.track(t, 0, 5);
        assert_eq!(ledger.pending(), 3);
        assert_eq!(ledger.complete(&c), None, "3 and 5 still pending");
        assert_eq!(ledger.complete(&a), Some(5));
        assert_eq!(ledger.complete(&b), Some(7));
        assert_eq!(ledger.pending(), 0);
    }

    #[test]
    fn a_done_offset_tracked_again_is_pending_again() {
        let mut ledger = OffsetLedger::new();
        let t = topic();
        let a = ledger.track(t, 0, 1);
        let b = ledger.track(t, 0, 2);
        assert_eq!(ledger.complete(&b), None);
        let again = ledger.track(t, 0, 2);
        ledger.track(t, 0, 1);
        assert_eq!(
            ledger.pending(),
            2,
            "tracking a pending offset twice counts it once"
        );
        assert_eq!(ledger.complete(&a), Some(2));
        assert_eq!(ledger.complete(&again), Some(3));
    }

    #[test]
    fn an_offset_never_tracked_completes_nothing() {
        let mut ledger = OffsetLedger::new();
        let t = topic();
        let a = ledger.track(t, 0, 10);
        let unknown = Ticket { offset: 11, ..a };
        assert_eq!(ledger.complete(&unknown), None);
        assert_eq!(ledger.pending(), 1);
        assert_eq!(ledger.complete(&a), Some(11));
    }

    #[test]
    fn completing_twice_changes_nothing() {
        let mut ledger = OffsetLedger::new();
        let t = topic();
        let a = ledger.track(t, 0, 1);
        assert_eq!(ledger.complete(&a), Some(2));
        assert_eq!(ledger.complete(&a), None);
    }

    #[test]
    fn commit_points_cover_every_partition_with_records() {
        let mut ledger = OffsetLedger::new();
        let t = topic();
        let a = ledger.track(t, 0, 1);
        ledger.track(t, 0, 2);
        ledger.complete(&a);
        ledger.track(t, 2, 9);
        let mut points = ledger.commit_points();
        points.sort();
        assert_eq!(points, vec![((t, 0), 2), ((t, 2), 9)]);
    }
}
