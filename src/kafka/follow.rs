//! The retry consumer follows the source consumer. When a source partition comes to this
//! replica, the retry partitions it writes to ([`RetryPartitions`]) come too, and the
//! source partition stays paused until they have been read to their end: the customers
//! with a record waiting in them are held before their new records arrive. When a source
//! partition goes, its retry partitions go with it, once what is done of them is
//! committed. Without this the retry topic had a consumer group of its own, and a
//! customer's retry and its next record could be in two replicas that knew nothing of
//! each other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use tracing::{info, warn};

use crate::kafka::consumer::SourceConsumer;
use crate::kafka::retry_partitions::{RetryPartitions, SharedRetryPartitions};
use crate::shutdown::{Shutdown, StopReason};

/// How long a newly assigned source partition waits for its retry partitions to be read
/// to their end. A retry reader with a full schedule cannot read on; past this the source
/// partition goes on, and a customer's new record there may overtake a retry not yet read.
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);

/// How long each question to the broker in a rebalance (partition counts, offsets) may
/// take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

type SourcePartition = (String, i32);

/// A source partition waiting for its retry partitions.
struct CatchingUp {
    unread: Vec<i32>,
    until: Instant,
}

/// The retry consumer's side of the source consumer's rebalances.
pub struct Follower {
    retries: Arc<SourceConsumer>,
    retry_topic: String,
    source_topics: Vec<String>,
    partitions: SharedRetryPartitions,
    /// The retry partitions read for each source partition this replica owns.
    taken: Mutex<HashMap<SourcePartition, Vec<i32>>>,
    catching_up: Mutex<HashMap<SourcePartition, CatchingUp>>,
    /// How many source partitions are catching up, read on every poll without the lock.
    catching_up_count: AtomicUsize,
    shutdown: Shutdown,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Follower {
    pub fn new(
        retries: Arc<SourceConsumer>,
        retry_topic: &str,
        source_topics: &[String],
        partitions: SharedRetryPartitions,
        shutdown: Shutdown,
    ) -> Follower {
        Follower {
            retries,
            retry_topic: retry_topic.to_string(),
            source_topics: source_topics.to_vec(),
            partitions,
            taken: Mutex::default(),
            catching_up: Mutex::default(),
            catching_up_count: AtomicUsize::new(0),
            shutdown,
        }
    }

    /// Source partitions newly assigned: reads the partition counts again, takes the
    /// retry partitions that go with them, and returns the source partitions to pause
    /// until those are read to their end.
    pub(super) fn assigned<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        assigned: &TopicPartitionList,
    ) -> TopicPartitionList {
        let mut pause = TopicPartitionList::new();
        let Some(partitions) = self.refresh(consumer) else {
            return pause;
        };
        let mut taken = lock(&self.taken);
        let mut catching_up = lock(&self.catching_up);
        let mut retry_partitions = Vec::new();
        for element in assigned.elements() {
            let source = (element.topic().to_string(), element.partition());
            let read = partitions.read_with(&source.0, source.1);
            if read.is_empty() {
                continue;
            }
            retry_partitions.extend_from_slice(&read);
            // Only retry partitions with records to read keep the source partition
            // waiting: usually there are none, and it goes on at once.
            let unread = self
                .retries
                .unread(&self.retry_topic, &read, METADATA_TIMEOUT);
            if !unread.is_empty() {
                let _ = pause.add_partition(&source.0, source.1);
                let until = Instant::now() + CATCH_UP_LIMIT;
                catching_up.insert(source.clone(), CatchingUp { unread, until });
            }
            taken.insert(source, read);
        }
        self.catching_up_count
            .store(catching_up.len(), Ordering::SeqCst);
        drop((taken, catching_up));
        if !retry_partitions.is_empty() {
            self.retries.take(&self.retry_topic, &retry_partitions);
        }
        pause
    }

    /// Source partitions revoked: their retry partitions go too, after a commit.
    pub(super) fn revoked(&self, revoked: &TopicPartitionList) {
        let mut taken = lock(&self.taken);
        let mut catching_up = lock(&self.catching_up);
        let mut retry_partitions = Vec::new();
        for element in revoked.elements() {
            let source = (element.topic().to_string(), element.partition());
            catching_up.remove(&source);
            retry_partitions.extend(taken.remove(&source).unwrap_or_default());
        }
        self.catching_up_count
            .store(catching_up.len(), Ordering::SeqCst);
        drop((taken, catching_up));
        if !retry_partitions.is_empty() {
            self.retries.give_up(&self.retry_topic, &retry_partitions);
        }
    }

    /// Retry partition `retry` has been read to its end: the source partitions that
    /// waited for nothing else.
    pub(super) fn caught_up(&self, retry: i32) -> Vec<SourcePartition> {
        self.release(|waiting| {
            waiting.unread.retain(|r| *r != retry);
            waiting.unread.is_empty()
        })
    }

    /// The source partitions that have waited [`CATCH_UP_LIMIT`]: they go on.
    pub(super) fn overdue(&self) -> Vec<SourcePartition> {
        if self.catching_up_count.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let now = Instant::now();
        let overdue = self.release(|waiting| waiting.until <= now);
        for (topic, partition) in &overdue {
            warn!(
                %topic,
                partition,
                limit_secs = CATCH_UP_LIMIT.as_secs(),
                "retry partitions not read to their end in time; the source partition goes on, and a customer's record in it may overtake a retry not yet read"
            );
        }
        overdue
    }

    fn release(&self, done: impl Fn(&mut CatchingUp) -> bool) -> Vec<SourcePartition> {
        let mut catching_up = lock(&self.catching_up);
        let mut released = Vec::new();
        catching_up.retain(|source, waiting| {
            let keep = !done(waiting);
            if !keep {
                released.push(source.clone());
            }
            keep
        });
        self.catching_up_count
            .store(catching_up.len(), Ordering::SeqCst);
        released
    }

    /// True while `topic`, `partition` waits for its retry partitions.
    pub(super) fn is_catching_up(&self, topic: &str, partition: i32) -> bool {
        self.catching_up_count.load(Ordering::Relaxed) > 0
            && lock(&self.catching_up).contains_key(&(topic.to_string(), partition))
    }

    /// Reads every topic's partition count from the broker and shares them with the
    /// producer. Keeps the last counts if the broker does not answer; without any, the
    /// process stops: it could neither write a retry where it belongs nor read one.
    fn refresh<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>) -> Option<RetryPartitions> {
        let count = |topic: &str| -> Option<i32> {
            let metadata = consumer
                .fetch_metadata(Some(topic), METADATA_TIMEOUT)
                .ok()?;
            let topic = metadata.topics().first()?;
            if topic.error().is_some() {
                return Some(0);
            }
            Some(topic.partitions().len() as i32)
        };
        let retry = count(&self.retry_topic);
        let sources: Option<Vec<(String, i32)>> = self
            .source_topics
            .iter()
            .map(|t| count(t).map(|n| (t.clone(), n)))
            .collect();
        let previous = self.partitions.get();
        let (retry, sources) = match (retry, sources) {
            (Some(retry), Some(sources)) if retry > 0 => (retry, sources),
            (Some(0), _) => {
                self.shutdown.trigger(StopReason::Fatal(format!(
                    "the retry topic {} does not exist or has no partitions",
                    self.retry_topic
                )));
                return None;
            }
            _ => {
                warn!("cannot read the topics' partition counts; keeping the last ones");
                if previous.is_none() {
                    self.shutdown.trigger(StopReason::Fatal(
                        "cannot read the topics' partition counts from the broker".into(),
                    ));
                }
                return previous;
            }
        };
        let partitions = RetryPartitions::new(sources, retry);
        if previous.as_ref() != Some(&partitions) {
            if partitions.retry_count() < partitions.needed() {
                warn!(
                    retry_topic = %self.retry_topic,
                    partitions = partitions.retry_count(),
                    needed = partitions.needed(),
                    "the retry topic has fewer partitions than the source topics' count times their largest partition count; source partitions share retry partitions, and a customer's order across replicas holds only for some"
                );
            } else {
                info!(
                    retry_topic = %self.retry_topic,
                    partitions = partitions.retry_count(),
                    "each source partition has a retry partition of its own"
                );
            }
            self.partitions.set(partitions.clone());
        }
        Some(partitions)
    }
}
