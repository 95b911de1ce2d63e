//! The source consumer: a consumer group on the source topics whose offsets move only as
//! far as the [`OffsetLedger`] allows. Rebalance callbacks keep the ledger in step with the
//! assignment, commit what is done before partitions go, and mark the service ready.
//!
//! The consumer is polled from a blocking thread ([`SourceConsumer::poll`]), which also
//! serves the callbacks; [`SourceConsumer::feed`] runs such a thread and hands the
//! records to async code one by one, for the low-volume retry topic. A reader with no room
//! for more records pauses the consumer and keeps polling
//! ([`SourceConsumer::wait_for_room`]), so that it stays in its group. The retry
//! consumer is one assigned by hand, following the source one ([`following`]).

mod callbacks;
mod following;

pub use callbacks::GroupContext;
use callbacks::describe;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::admin::{Health, Heartbeat};
use crate::config::KafkaConfig;
use crate::kafka::follow::Follower;
use crate::kafka::offsets::{OffsetLedger, Ticket};
use crate::kafka::record::SourceRecord;
use crate::kafka::settings;
use crate::kafka::topic::Topic;
use crate::metrics::Metrics;

/// State shared between the consumer's callbacks and the pipeline.
pub struct GroupState {
    /// The consumer group, for logs: the source and retry groups share a process.
    group: String,
    ledger: Mutex<OffsetLedger>,
    /// Revocations seen: a record consumed before the latest may have lost its partition.
    revocations: AtomicU64,
    /// Why fetching is paused, if it is: partitions assigned meanwhile are paused too.
    pause: Mutex<Pause>,
    health: Arc<Health>,
    metrics: Metrics,
    /// Counts polls, for liveness.
    polls: Arc<Heartbeat>,
    /// The retry consumer that follows this one's assignment, if one does.
    follower: OnceLock<Follower>,
}

impl GroupState {
    fn pause(&self) -> MutexGuard<'_, Pause> {
        self.pause
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn ledger(&self) -> MutexGuard<'_, OffsetLedger> {
        // A panic while holding the lock cannot leave the ledger half-updated in a way that
        // moves an offset too far: every update is a single insert or remove.
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Why a consumer does not fetch. Fetching resumes once no reason holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseReason {
    /// The delivery gate holds consumers: mParticle fails for everyone or refuses the
    /// credentials.
    Gate,
    /// The reader has no room for another record and polls only to stay in its group.
    Backlog,
}

#[derive(Debug, Default)]
struct Pause {
    gate: bool,
    backlog: bool,
}

impl Pause {
    fn any(&self) -> bool {
        self.gate || self.backlog
    }

    fn set(&mut self, reason: PauseReason, on: bool) {
        match reason {
            PauseReason::Gate => self.gate = on,
            PauseReason::Backlog => self.backlog = on,
        }
    }
}

/// A record polled, or why polling failed.
pub type Polled = Result<(SourceRecord, Ticket), KafkaError>;

/// How long a poll waits when nothing arrives: also how soon a reader notices a stop.
pub const IDLE_POLL: Duration = Duration::from_millis(100);

/// How often a reader with no room for another record polls anyway.
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);

/// The consumer group on the source topics.
pub struct SourceConsumer {
    consumer: BaseConsumer<GroupContext>,
    state: Arc<GroupState>,
    topics: Vec<Topic>,
    /// Records keep librdkafka's messages instead of copies ([`SourceRecord::hold`]).
    hold_messages: bool,
}

impl SourceConsumer {
    /// Creates a consumer in `group` subscribed to `topics`.
    pub fn subscribe(
        kafka: &KafkaConfig,
        group: &str,
        topics: &[String],
        metrics: Metrics,
        health: Arc<Health>,
    ) -> Result<SourceConsumer, KafkaError> {
        let mut config = settings::consumer(kafka, group);
        if let Some(member) = &kafka.group_instance_id {
            config.set("group.instance.id", member);
        }
        let consumer = SourceConsumer::create(config, group, topics, metrics, health)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.consumer.subscribe(&names)?;
        Ok(consumer)
    }

    fn create(
        config: rdkafka::ClientConfig,
        group: &str,
        topics: &[String],
        metrics: Metrics,
        health: Arc<Health>,
    ) -> Result<SourceConsumer, KafkaError> {
        let state = Arc::new(GroupState {
            group: group.to_string(),
            ledger: Mutex::new(OffsetLedger::new()),
            revocations: AtomicU64::new(0),
            pause: Mutex::new(Pause::default()),
            health,
            metrics,
            polls: Arc::default(),
            follower: OnceLock::new(),
        });
        let context = GroupContext {
            state: state.clone(),
        };
        let consumer: BaseConsumer<GroupContext> = config.create_with_context(context)?;
        Ok(SourceConsumer {
            consumer,
            state,
            topics: topics.iter().map(|t| Topic::named(t)).collect(),
            hold_messages: false,
        })
    }

    /// Its records keep librdkafka's messages rather than copies, for a reader whose
    /// records are done within moments: a held message pins the fetch buffer it arrived
    /// in, so a reader that keeps records for long (the retry schedule) copies them.
    pub fn holding_messages(mut self) -> SourceConsumer {
        self.hold_messages = true;
        self
    }

    /// Stops fetching on every assigned partition (and on partitions assigned later) for
    /// `reason`, or lifts that reason; fetching resumes once no reason holds. The consumer
    /// keeps polling meanwhile, so it stays in its group.
    pub fn set_paused(&self, reason: PauseReason, on: bool) {
        let mut pause = self.state.pause();
        let before = pause.any();
        pause.set(reason, on);
        let paused = pause.any();
        if paused == before {
            return;
        }
        let mut assignment = match self.consumer.assignment() {
            Ok(assignment) => assignment,
            Err(error) => {
                warn!(%error, "cannot read the assignment to pause or resume it");
                return;
            }
        };
        if let (false, Some(follower)) = (paused, self.state.follower.get()) {
            // Partitions still waiting for their retries stay paused.
            let mut resume = TopicPartitionList::new();
            for element in assignment.elements() {
                if !follower.is_catching_up(element.topic(), element.partition()) {
                    resume.add_partition(element.topic(), element.partition());
                }
            }
            assignment = resume;
        }
        let result = if paused {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        if let Err(error) = result {
            warn!(%error, paused, "pause or resume failed");
        }
    }

    /// Blocks this (reader) thread until `room` resolves, keeping the consumer in its
    /// group meanwhile. A reader with no room for another record must still poll:
    /// librdkafka counts a consumer that has not polled for `max.poll.interval.ms` (5 min)
    /// as gone and takes its partitions away. Once `room` has taken longer than
    /// [`KEEP_ALIVE`], the partitions are paused ([`PauseReason::Backlog`]) and the
    /// consumer is polled once per interval; a record librdkafka had queued already goes
    /// to `early`, to be taken in first.
    pub fn wait_for_room<F: Future>(
        self: &Arc<Self>,
        runtime: &Handle,
        early: &mut VecDeque<Polled>,
        room: F,
    ) -> F::Output {
        let mut room = std::pin::pin!(room);
        let mut paused = false;
        let ready = loop {
            match runtime.block_on(tokio::time::timeout(KEEP_ALIVE, room.as_mut())) {
                Ok(ready) => break ready,
                Err(_still_waiting) => {
                    if !paused {
                        self.set_paused(PauseReason::Backlog, true);
                        paused = true;
                    }
                    if let Some(polled) = self.poll(Duration::ZERO) {
                        early.push_back(polled);
                    }
                }
            }
        };
        if paused {
            self.set_paused(PauseReason::Backlog, false);
        }
        ready
    }

    /// Waits at most `timeout` for the next record and starts tracking it. Serves the
    /// rebalance, statistics and log callbacks too, so it must be called regularly, also
    /// while paused. `None` when nothing arrived in time.
    pub fn poll(self: &Arc<Self>, timeout: Duration) -> Option<Polled> {
        self.state.polls.beat();
        if let Some(follower) = self.state.follower.get() {
            self.go_on(follower.overdue());
        }
        let message = match self.consumer.poll(timeout)? {
            Ok(message) => message,
            Err(error) => return Some(Err(error)),
        };
        let topic_name = rdkafka::Message::topic(&message);
        let topic = self
            .topics
            .iter()
            .find(|t| t.as_str() == topic_name)
            .copied()
            .unwrap_or_else(|| Topic::named(topic_name));
        let record = if self.hold_messages {
            SourceRecord::hold(message, topic, self.clone())
        } else {
            SourceRecord::copy_from(&message, topic)
        };
        let ticket = self
            .state
            .ledger()
            .track(topic, record.partition, record.offset);
        Some(Ok((record, ticket)))
    }

    /// Counts this consumer's polls: it stops moving when its reader is stuck.
    pub fn polls(&self) -> Arc<Heartbeat> {
        self.state.polls.clone()
    }

    /// Polls on a blocking thread and hands every record to the returned channel, holding
    /// at most `capacity` there. While the channel is full the thread pauses the consumer
    /// and keeps polling every [`KEEP_ALIVE`]. The thread ends once the receiver is dropped.
    pub fn feed(self: &Arc<Self>, capacity: usize) -> mpsc::Receiver<Polled> {
        let (tx, rx) = mpsc::channel(capacity);
        let consumer = self.clone();
        let runtime = Handle::current();
        tokio::task::spawn_blocking(move || {
            let mut early = VecDeque::new();
            loop {
                let polled = match early.pop_front() {
                    Some(polled) => polled,
                    None => match consumer.poll(IDLE_POLL) {
                        Some(polled) => polled,
                        None if tx.is_closed() => return,
                        None => continue,
                    },
                };
                if !consumer.hand_on(&runtime, &tx, polled, &mut early) {
                    return;
                }
            }
        });
        rx
    }

    /// Sends `item` into `tx`, keeping the consumer in its group while there is no room
    /// ([`wait_for_room`](Self::wait_for_room)). False once the receiver is gone.
    pub fn hand_on<T>(
        self: &Arc<Self>,
        runtime: &Handle,
        tx: &mpsc::Sender<T>,
        item: T,
        early: &mut VecDeque<Polled>,
    ) -> bool {
        let item = match tx.try_send(item) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(item)) => item,
        };
        match self.wait_for_room(runtime, early, tx.reserve()) {
            Ok(room) => {
                room.send(item);
                true
            }
            Err(_closed) => false,
        }
    }

    /// Records whose outcomes are durable. Stores every offset that moved; librdkafka
    /// commits stored offsets every `auto.commit.interval.ms`.
    pub fn complete<'a>(&self, tickets: impl IntoIterator<Item = &'a Ticket>) {
        // The ledger stays locked until librdkafka has the offsets. Delivery tasks finish
        // records of one partition on several threads at once: unlocked, a task holding an
        // older (lower) point could store it after another stored a newer one, and the
        // partition's stored offset would stay behind for good (seen: committed 1596 of
        // 1649 with every record delivered).
        let mut ledger = self.state.ledger();
        // One entry per partition: a list naming a partition twice stores the last entry,
        // and rdkafka's add_partition_offset appends rather than replaces.
        let mut points: Vec<(&Ticket, i64)> = Vec::new();
        for ticket in tickets {
            let Some(point) = ledger.complete(ticket) else {
                continue;
            };
            let same = |(t, _): &&mut (&Ticket, i64)| {
                t.partition == ticket.partition && t.topic == ticket.topic
            };
            match points.iter_mut().find(same) {
                Some(entry) => entry.1 = entry.1.max(point),
                None => points.push((ticket, point)),
            }
        }
        if points.is_empty() {
            return;
        }
        let mut moved = TopicPartitionList::with_capacity(points.len());
        for (ticket, point) in points {
            let _ =
                moved.add_partition_offset(&ticket.topic, ticket.partition, Offset::Offset(point));
        }
        if let Err(error) = self.consumer.store_offsets(&moved) {
            // Happens when a partition was revoked in between: the next owner repeats the
            // records after the last commit, and mParticle drops the duplicates by
            // source_request_id.
            debug!(%error, "offset not stored");
        }
        drop(ledger);
    }

    /// True while this consumer still holds the record's partition under the assignment
    /// it was consumed in. `revocations_then`: [`revocations`](Self::revocations) when it
    /// was consumed; without a revocation since, the ledger is not asked.
    pub fn owns(&self, ticket: &Ticket, revocations_then: u64) -> bool {
        self.revocations() == revocations_then || self.state.ledger().is_current(ticket)
    }

    /// How many revocations this consumer has seen.
    pub fn revocations(&self) -> u64 {
        self.state.revocations.load(Ordering::SeqCst)
    }

    /// Commits every partition's done offset now and waits for the broker.
    pub fn commit_now(&self) -> Result<(), KafkaError> {
        let points = self.state.ledger().commit_points();
        if points.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), point) in points {
            tpl.add_partition_offset(&topic, partition, Offset::Offset(point))?;
        }
        self.consumer.commit(&tpl, CommitMode::Sync)
    }

    /// Records consumed and not yet done.
    pub fn pending(&self) -> usize {
        self.state.ledger().pending()
    }

    /// Leaves the group now (committing what is done as the partitions are revoked), so
    /// that the partitions move to another replica at once instead of after the session
    /// timeout. Blocking: serves the revoke callback while it waits, for at most `timeout`.
    ///
    /// False if librdkafka did not finish closing in time. Such a consumer is leaked
    /// rather than dropped, because dropping it would wait for the close without end.
    pub fn close(self: &Arc<Self>, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        if let Err(error) = self.consumer.close_queue() {
            warn!(%error, "cannot close the consumer; leaving the group by session timeout");
        } else {
            while !self.consumer.closed() && std::time::Instant::now() < deadline {
                let _ = self.consumer.poll(IDLE_POLL);
            }
        }
        let closed = self.consumer.closed();
        if !closed {
            std::mem::forget(self.clone());
        }
        closed
    }
}
