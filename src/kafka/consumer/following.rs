//! The retry consumer's side of following the source consumer
//! ([`Follower`](crate::kafka::follow::Follower)): a consumer assigned by hand, which takes
//! and gives up partitions as the source consumer's come and go, and tells it when their
//! retries have been read.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::{SourceConsumer, describe};
use crate::config::KafkaConfig;
use crate::kafka::follow::Follower;
use crate::kafka::settings;
use crate::metrics::Metrics;

impl SourceConsumer {
    /// Creates a consumer of `topic` that commits as `group` but reads only the partitions
    /// it is given ([`take`](Self::take)), and reports reaching the end of each
    /// (`KafkaError::PartitionEOF`): the retry consumer, which follows the source one.
    pub fn assigned_by_hand(
        kafka: &KafkaConfig,
        group: &str,
        topic: &str,
        metrics: Metrics,
    ) -> Result<SourceConsumer, KafkaError> {
        let mut config = settings::consumer(kafka, group);
        config.set("enable.partition.eof", "true");
        let topics = [topic.to_string()];
        SourceConsumer::create(config, group, &topics, metrics, Arc::default())
    }

    /// Has `follower` take and give up retry partitions as this consumer's partitions come
    /// and go. Set before the first poll.
    pub fn lead(&self, follower: Follower) {
        let _ = self.state.follower.set(follower);
    }

    /// Starts reading `partitions` of `topic` from their committed offsets (a consumer
    /// [assigned by hand](Self::assigned_by_hand)).
    pub fn take(&self, topic: &str, partitions: &[i32]) {
        let mut list = TopicPartitionList::new();
        {
            let mut ledger = self.state.ledger();
            for partition in partitions {
                ledger.assign(topic, *partition);
                list.add_partition(topic, *partition);
            }
        }
        if self.state.pause().any() {
            // Paused for the gate or a full schedule: these wait with the rest.
            let _ = self.consumer.incremental_assign(&list);
            let _ = self.consumer.pause(&list);
        } else if let Err(error) = self.consumer.incremental_assign(&list) {
            warn!(%error, group = %self.state.group, "cannot take partitions");
            return;
        }
        info!(group = %self.state.group, partitions = %describe(&list), "partitions taken");
    }

    /// Those of `partitions` of `topic` with records after the group's committed offset
    /// (from the start, without one), as the broker says now. A partition the broker does
    /// not answer for counts as unread.
    pub fn unread(&self, topic: &str, partitions: &[i32], timeout: Duration) -> Vec<i32> {
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            list.add_partition(topic, *partition);
        }
        let committed = self.consumer.committed_offsets(list, timeout).ok();
        partitions
            .iter()
            .copied()
            .filter(|partition| {
                let Ok((low, high)) = self.consumer.fetch_watermarks(topic, *partition, timeout)
                else {
                    return true;
                };
                let from = committed
                    .as_ref()
                    .and_then(|c| c.find_partition(topic, *partition))
                    .and_then(|e| e.offset().to_raw())
                    .filter(|offset| *offset >= 0)
                    .unwrap_or(low);
                from < high
            })
            .collect()
    }

    /// Stops reading `partitions` of `topic`, committing what is done of them first, so
    /// that the next owner starts there.
    pub fn give_up(&self, topic: &str, partitions: &[i32]) {
        self.state.revocations.fetch_add(1, Ordering::SeqCst);
        let mut list = TopicPartitionList::new();
        let mut done = TopicPartitionList::new();
        {
            let mut ledger = self.state.ledger();
            for partition in partitions {
                list.add_partition(topic, *partition);
                if let Some(point) = ledger.revoke(topic, *partition) {
                    let _ = done.add_partition_offset(topic, *partition, Offset::Offset(point));
                }
                self.state.metrics.forget_consumer_lag(topic, *partition);
            }
        }
        if done.count() > 0 {
            if let Err(error) = self.consumer.commit(&done, CommitMode::Sync) {
                warn!(%error, "commit before giving up partitions failed; the next owner repeats some retries");
            }
        }
        if let Err(error) = self.consumer.incremental_unassign(&list) {
            warn!(%error, group = %self.state.group, "cannot give up partitions");
        }
        info!(group = %self.state.group, partitions = %describe(&list), "partitions given up");
    }

    /// The follower has read retry partition `retry` to its end: the source partitions
    /// that waited only for it go on.
    pub fn caught_up(&self, retry: i32) {
        if let Some(follower) = self.state.follower.get() {
            self.go_on(follower.caught_up(retry));
        }
    }

    /// Resumes source partitions that waited for their retry partitions, unless the whole
    /// consumer is paused (they resume with the rest then).
    pub(super) fn go_on(&self, partitions: Vec<(String, i32)>) {
        if partitions.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (topic, partition) in &partitions {
            list.add_partition(topic, *partition);
        }
        info!(group = %self.state.group, partitions = %describe(&list), "retries read; partitions go on");
        if self.state.pause().any() {
            return;
        }
        if let Err(error) = self.consumer.resume(&list) {
            warn!(%error, "cannot resume partitions");
        }
    }
}
