//! Which retry partition a failed record is written to, and which retry partitions a
//! replica reads: those that belong to the source partitions it owns. A customer's
//! retries and its new records then meet in one replica, whose holds keep them in order
//! through rebalances and kills (README, "A customer's order").
//!
//! The source topics are numbered in name order (K of them); a record first consumed from
//! topic `i`, partition `p`, is retried on partition `p·K + i`. A retry topic with fewer
//! partitions than that ([`RetryPartitions::needed`]) wraps, within the topic's own
//! column, so that several source partitions share one retry partition: order across
//! replicas then holds only for the first of them. Retry partitions that no source
//! partition writes to (a larger retry topic) are read by a source partition of their
//! column all the same, so that no record in them is left unread.

use std::sync::{Arc, RwLock};

/// The source topics' and the retry topic's partition counts, as the broker last said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPartitions {
    /// The source topics in name order, with their partition counts.
    sources: Vec<(String, i32)>,
    /// The retry topic's partition count (at least 1).
    retry: i32,
}

impl RetryPartitions {
    pub fn new(mut sources: Vec<(String, i32)>, retry: i32) -> RetryPartitions {
        sources.sort();
        RetryPartitions {
            sources,
            retry: retry.max(1),
        }
    }

    /// How many retry partitions give every source partition one of its own.
    pub fn needed(&self) -> i32 {
        let most = self.sources.iter().map(|(_, n)| *n).max().unwrap_or(0);
        most * self.columns()
    }

    /// The retry topic's partition count.
    pub fn retry_count(&self) -> i32 {
        self.retry
    }

    fn columns(&self) -> i32 {
        self.sources.len().max(1) as i32
    }

    fn column(&self, topic: &str) -> Option<i32> {
        self.sources
            .iter()
            .position(|(name, _)| name == topic)
            .map(|i| i as i32)
    }

    /// The retry partition of a record first consumed from `topic`, `partition`.
    pub fn of(&self, topic: &str, partition: i32) -> i32 {
        let k = self.columns();
        match self.column(topic) {
            // The rows of column i below the retry topic's count: ceil((R - i) / K).
            Some(i) if self.retry > i => {
                let rows = (self.retry - i + k - 1) / k;
                partition.rem_euclid(rows) * k + i
            }
            // A topic that is no longer a source, or a retry topic narrower than the
            // number of source topics.
            _ => partition.rem_euclid(self.retry),
        }
    }

    /// The source partition that reads retry partition `retry`: the one whose records are
    /// written there, or for a partition nobody writes to, one of its column (or the
    /// first source topic's, when its column's topic has no partitions).
    fn reader_of(&self, retry: i32) -> Option<(&str, i32)> {
        let k = self.columns();
        let (i, row) = ((retry % k) as usize, retry / k);
        let in_column = self.sources.get(i).filter(|(_, n)| *n > 0);
        let (topic, count) = in_column.or_else(|| self.sources.iter().find(|(_, n)| *n > 0))?;
        Some((topic.as_str(), row % count))
    }

    /// The retry partitions that the owner of source `topic`, `partition` reads.
    pub fn read_with(&self, topic: &str, partition: i32) -> Vec<i32> {
        (0..self.retry)
            .filter(|r| self.reader_of(*r) == Some((topic, partition)))
            .collect()
    }
}

/// The latest [`RetryPartitions`], shared by the source consumer's rebalance callbacks
/// (which read them from the broker) and the producer (which writes by them).
#[derive(Clone, Default)]
pub struct SharedRetryPartitions(Arc<RwLock<Option<RetryPartitions>>>);

impl SharedRetryPartitions {
    pub fn set(&self, partitions: RetryPartitions) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(partitions);
    }

    pub fn get(&self) -> Option<RetryPartitions> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The retry partition of a record first consumed from `topic`, `partition`; `None`
    /// before the first assignment (no record can fail then), when the producer's own
    /// partitioner chooses.
    pub fn of(&self, topic: &str, partition: i32) -> Option<i32> {
        let partitions = self.0.read().unwrap_or_else(|p| p.into_inner());
        partitions.as_ref().map(|p| p.of(topic, partition))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partitions(sources: &[(&str, i32)], retry: i32) -> RetryPartitions {
        RetryPartitions::new(
            sources.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
            retry,
        )
    }

    /// Every source partition, in order.
    fn all_sources(p: &RetryPartitions) -> Vec<(String, i32)> {
        p.sources
            .iter()
            .flat_map(|(t, n)| (0..*n).map(move |i| (t.clone(), i)))
            .collect()
    }

    #[test]
    fn with_enough_retry_partitions_each_source_partition_has_its_own() {
        let p = partitions(&[("b", 3), ("a", 3)], 6);
        assert_eq!(p.needed(), 6);
        let mut seen: Vec<i32> = all_sources(&p).iter().map(|(t, i)| p.of(t, *i)).collect();
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3, 4, 5]);
        // Name order: "a" is column 0.
        assert_eq!(p.of("a", 2), 4);
        assert_eq!(p.of("b", 0), 1);
        for (topic, partition) in all_sources(&p) {
            assert_eq!(p.read_with(&topic, partition), [p.of(&topic, partition)]);
        }
    }

    #[test]
    fn every_retry_partition_has_exactly_one_reader_and_every_write_lands_on_a_read_one() {
        for (sources, retry) in [
            (&[("a", 3), ("b", 3)][..], 3),
            (&[("a", 4), ("b", 1)][..], 8),
            (&[("a", 4), ("b", 1)][..], 20),
            (&[("a", 1)][..], 1),
            (&[("a", 5)][..], 2),
            (&[("a", 2), ("b", 0)][..], 4),
            (&[("a", 2), ("b", 2), ("c", 2)][..], 2),
        ] {
            let p = partitions(sources, retry);
            let mut readers = vec![0; retry as usize];
            for (topic, partition) in all_sources(&p) {
                for r in p.read_with(&topic, partition) {
                    readers[r as usize] += 1;
                }
            }
            assert!(
                readers.iter().all(|n| *n == 1),
                "{sources:?} {retry}: {readers:?}"
            );
            for (topic, partition) in all_sources(&p) {
                let r = p.of(&topic, partition);
                assert!(
                    (0..retry).contains(&r),
                    "{sources:?} {retry}: {topic}/{partition}"
                );
            }
        }
    }

    #[test]
    fn a_narrow_retry_topic_wraps_within_the_topics_column() {
        let p = partitions(&[("a", 4), ("b", 4)], 5);
        // Column 0 has rows 0..3 (retry 0, 2, 4), column 1 rows 0..2 (retry 1, 3).
        assert_eq!(
            (0..4).map(|i| p.of("a", i)).collect::<Vec<_>>(),
            [0, 2, 4, 0]
        );
        assert_eq!(
            (0..4).map(|i| p.of("b", i)).collect::<Vec<_>>(),
            [1, 3, 1, 3]
        );
        // Read by the first partition writing there.
        assert_eq!(p.read_with("a", 0), [0]);
        assert!(p.read_with("a", 3).is_empty());
    }
}
