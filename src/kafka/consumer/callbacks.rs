//! librdkafka's callbacks for a consumer group: its logs and errors through tracing, the
//! lag from its statistics, and rebalances kept in step with the offset ledger (what is
//! done is committed before partitions go; the retry consumer follows).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use super::GroupState;

/// librdkafka callbacks: logs through tracing, rebalances, statistics.
pub struct GroupContext {
    pub(super) state: Arc<GroupState>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                error!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning => warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // The retry consumer asks to hear of each partition's end; that is not a fault.
        if matches!(
            error,
            KafkaError::PartitionEOF(_)
                | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        ) {
            return;
        }
        warn!(target: "librdkafka", %error, "{reason}");
    }

    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                // librdkafka reports -1 for the internal UA partition and for partitions it
                // does not consume.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.state
                        .metrics
                        .set_consumer_lag(topic, *partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        self.state.metrics.rebalance("revoke");
        self.state.revocations.fetch_add(1, Ordering::SeqCst);
        if let Some(follower) = self.state.follower.get() {
            follower.revoked(revoked);
        }
        let mut done = TopicPartitionList::new();
        {
            let mut ledger = self.state.ledger();
            for element in revoked.elements() {
                let (topic, partition) = (element.topic(), element.partition());
                if let Some(point) = ledger.revoke(topic, partition) {
                    let _ = done.add_partition_offset(topic, partition, Offset::Offset(point));
                }
                self.state.metrics.forget_consumer_lag(topic, partition);
            }
        }
        info!(
            group = %self.state.group,
            partitions = %describe(revoked),
            "partitions revoked; committing what is done"
        );
        if done.count() > 0 {
            if let Err(error) = consumer.commit(&done, CommitMode::Sync) {
                warn!(%error, "commit before revocation failed; the next owner repeats some records");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                if self.state.pause().any() {
                    if let Err(error) = consumer.pause(assigned) {
                        warn!(%error, "cannot pause newly assigned partitions");
                    }
                }
                self.state.metrics.rebalance("assign");
                let mut ledger = self.state.ledger();
                for element in assigned.elements() {
                    ledger.assign(element.topic(), element.partition());
                }
                drop(ledger);
                if let Some(follower) = self.state.follower.get() {
                    let catching_up = follower.assigned(consumer, assigned);
                    if catching_up.count() > 0 {
                        if let Err(error) = consumer.pause(&catching_up) {
                            warn!(%error, "cannot pause partitions until their retries are read");
                        }
                    }
                }
                self.state.health.joined.store(true, Ordering::SeqCst);
                info!(
                    group = %self.state.group,
                    partitions = %describe(assigned),
                    "partitions assigned"
                );
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                self.state.metrics.rebalance("error");
                warn!(group = %self.state.group, %error, "rebalance failed");
            }
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        if let Err(error) = result {
            // No offsets to commit is normal between records.
            if !matches!(
                error,
                KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)
            ) {
                warn!(%error, "offset commit failed; it is retried at the next interval");
            }
        }
    }
}

/// A partition list for logs: `topic[0,1,2] other[0]`.
pub(super) fn describe(list: &TopicPartitionList) -> String {
    let mut out = String::new();
    let mut elements = list.elements();
    elements.sort_by(|a, b| (a.topic(), a.partition()).cmp(&(b.topic(), b.partition())));
    let mut previous: Option<&str> = None;
    for element in &elements {
        if previous == Some(element.topic()) {
            out.push(',');
        } else {
            if previous.is_some() {
                out.push_str("] ");
            }
            out.push_str(element.topic());
            out.push('[');
            previous = Some(element.topic());
        }
        out.push_str(&element.partition().to_string());
    }
    if previous.is_some() {
        out.push(']');
    }
    out
}
