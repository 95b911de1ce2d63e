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

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// A topic and partition.
pub type TopicPartition = (Arc<str>, i32);

/// Identifies one tracked record for [`OffsetLedger::complete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub epoch: u64,
}

#[derive(Debug)]
struct PartitionLedger {
    epoch: u64,
    pending: BTreeSet<i64>,
    highest_seen: Option<i64>,
    /// The offset last handed out for storing.
    stored: Option<i64>,
}

impl PartitionLedger {
    fn new(epoch: u64) -> Self {
        PartitionLedger {
            epoch,
            pending: BTreeSet::new(),
            highest_seen: None,
            stored: None,
        }
    }

    fn commit_point(&self) -> Option<i64> {
        self.pending
            .first()
            .copied()
            .or(self.highest_seen.map(|h| h + 1))
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
            (Arc::from(topic), partition),
            PartitionLedger::new(self.next_epoch),
        );
    }

    /// A partition was revoked: forget it, returning the offset that may be committed.
    pub fn revoke(&mut self, topic: &str, partition: i32) -> Option<i64> {
        let key: TopicPartition = (Arc::from(topic), partition);
        self.partitions.remove(&key).and_then(|p| p.commit_point())
    }

    /// A record was consumed; it is pending until [`complete`](Self::complete).
    pub fn track(&mut self, topic: &Arc<str>, partition: i32, offset: i64) -> Ticket {
        // Assignment callbacks run before fetching starts, so creating the partition here
        // is only a safety net.
        let fresh_epoch = self.next_epoch + 1;
        let entry = self
            .partitions
            .entry((topic.clone(), partition))
            .or_insert_with(|| PartitionLedger::new(fresh_epoch));
        if entry.epoch == fresh_epoch {
            self.next_epoch = fresh_epoch;
        }
        entry.pending.insert(offset);
        // Consumption starts at the committed offset, so that much is stored already.
        entry.stored.get_or_insert(offset);
        entry.highest_seen = Some(entry.highest_seen.map_or(offset, |h| h.max(offset)));
        Ticket {
            topic: topic.clone(),
            partition,
            offset,
            epoch: entry.epoch,
        }
    }

    /// A record's outcome is durable. Returns the offset to store for its partition when
    /// the commit point moved, `None` when it did not (or the ticket is stale).
    pub fn complete(&mut self, ticket: &Ticket) -> Option<i64> {
        let key: TopicPartition = (ticket.topic.clone(), ticket.partition);
        let entry = self.partitions.get_mut(&key)?;
        if entry.epoch != ticket.epoch || !entry.pending.remove(&ticket.offset) {
            return None;
        }
        let point = entry.commit_point()?;
        if entry.stored.is_some_and(|stored| stored >= point) {
            return None;
        }
        entry.stored = Some(point);
        Some(point)
    }

    /// Every partition's committable offset, for a final synchronous commit.
    pub fn commit_points(&self) -> Vec<(TopicPartition, i64)> {
        self.partitions
            .iter()
            .filter_map(|(tp, p)| p.commit_point().map(|point| (tp.clone(), point)))
            .collect()
    }

    /// Records consumed and not yet done, across partitions.
    pub fn pending(&self) -> usize {
        self.partitions.values().map(|p| p.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic() -> Arc<str> {
        Arc::from("loyalty.point-add")
    }

    #[test]
    fn a_later_success_never_commits_past_an_earlier_pending_record() {
        let mut ledger = OffsetLedger::new();
        let t = topic();
        let tickets: Vec<Ticket> = (10..15).map(|o| ledger.track(&t, 0, o)).collect();
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
    fn partitions_are_independent() {
        let mut ledger = OffsetLedger::new();
        let t = topic();
        let a = ledger.track(&t, 0, 5);
        let b = ledger.track(&t, 1, 7);
        assert_eq!(ledger.complete(&b), Some(8));
        assert_eq!(ledger.complete(&a), Some(6));
    }

    #[test]
    fn outcomes_from_before_a_rebalance_are_ignored() {
        let mut ledger = OffsetLedger::new();
        let t = topic();
        ledger.assign(&t, 0);
        let old = ledger.track(&t, 0, 3);
        assert_eq!(ledger.revoke(&t, 0), Some(3));
        ledger.assign(&t, 0);
        let new = ledger.track(&t, 0, 3);
        assert_eq!(ledger.complete(&old), None, "stale epoch");
        assert_eq!(ledger.complete(&new), Some(4));
    }

    #[test]
    fn gaps_in_offsets_do_not_block_the_commit() {
        // Compacted topics and transaction markers leave gaps.
        let mut ledger = OffsetLedger::new();
        let t = topic();
        let a = ledger.track(&t, 0, 1);
        let b = ledger.track(&t, 0, 4);
        assert_eq!(ledger.complete(&a), Some(4));
        assert_eq!(ledger.complete(&b), Some(5));
    }

    #[test]
    fn completing_twice_changes_nothing() {
        let mut ledger = OffsetLedger::new();
        let t = topic();
        let a = ledger.track(&t, 0, 1);
        assert_eq!(ledger.complete(&a), Some(2));
        assert_eq!(ledger.complete(&a), None);
    }

    #[test]
    fn commit_points_cover_every_partition_with_records() {
        let mut ledger = OffsetLedger::new();
        let t = topic();
        let a = ledger.track(&t, 0, 1);
        ledger.track(&t, 0, 2);
        ledger.complete(&a);
        ledger.track(&t, 2, 9);
        let mut points = ledger.commit_points();
        points.sort();
        assert_eq!(points, vec![((t.clone(), 0), 2), ((t, 2), 9)]);
    }
}
