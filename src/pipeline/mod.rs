//! The forwarding pipeline: consume → intake (decode, map) → bulk assembly → delivery →
//! outcome, with the offset of every record moving only once its outcome is durable:
//! delivered, skipped by configuration, written to the retry topic, or written to the
//! dead-letter topic.
//!
//! Two readers feed the same bulk assembly: the source topics (a blocking thread that
//! decodes and maps as it polls), and the retry topic, whose
//! records wait in a [`RetrySchedule`](retry_schedule::RetrySchedule) until they are due.
//! Memory is bounded by `MAX_IN_FLIGHT_RECORDS` source records between consume and
//! outcome, as many retries waiting, and as many retries being sent; requests by
//! `MPARTICLE_MAX_IN_FLIGHT_REQUESTS`. The [`Gate`] stops requests and pauses
//! both readers while mParticle refuses the credentials or fails for everyone.

mod bulk;
mod delivery;
mod holds;
pub mod intake;
mod judgement;
mod lanes;
mod outbound;
mod parking;
mod readers;
pub mod retry_schedule;
mod source;
mod written_on;

use std::borrow::BorrowMut;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{info, warn};

use crate::accounts::{AccountId, Accounts, AccountsConfig};
use crate::admin::Health;
use crate::config::{Config, RetryConfig, UnmappedAction};
use crate::kafka::consumer::SourceConsumer;
use crate::kafka::follow::Follower;
use crate::kafka::offsets::Ticket;
use crate::kafka::producer::FailurePublisher;
use crate::kafka::record::SourceRecord;
use crate::kafka::retry_partitions::SharedRetryPartitions;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use intake::EventText;
use outbound::Outbound;

/// A consumed record on its way to a final outcome. Holding it holds one in-flight slot.
pub(crate) struct InFlight {
    pub record: SourceRecord,
    pub ticket: Ticket,
    /// The consumer whose offsets this record holds back.
    pub origin: Origin,
    /// The consumer's revocations when the record was consumed ([`Context::owns`]).
    pub revocations_then: u64,
    pub event_id: EventText,
    pub action: EventText,
    /// Delivery attempts made before this consume (0 for a source record).
    pub attempts: u32,
    pub first_attempt_ms: Option<i64>,
    /// For a due retry not yet sent: keeps it in the oldest-due-retry gauge.
    pub due: Option<DueToken>,
    /// Taken when the record finishes, so that a request's records release their slots
    /// together ([`Context::finish`]).
    slot: Option<OwnedSemaphorePermit>,
    /// The record's bytes within `MAX_IN_FLIGHT_BYTES`; released with `slot`.
    bytes: Option<OwnedSemaphorePermit>,
    /// The customer's batch under way that this record is in ([`lanes::Turn`]).
    turn: Option<Arc<lanes::Turn>>,
    /// The account intake routed it to (counted among its records until it finishes).
    pub account: Option<AccountId>,
}

/// Retries that are due and not yet sent (waiting for a request slot, the pacer or the
/// gate), for the `retry_oldest_due_age_seconds` gauge.
#[derive(Default)]
pub(crate) struct DueRetries {
    waiting: Mutex<BTreeMap<(i64, u64), ()>>,
    arrivals: AtomicU64,
}

/// A consumed record taken into the pipeline, holding `slot` until its outcome.
fn in_flight(
    ctx: &Context,
    origin: Origin,
    record: SourceRecord,
    ticket: Ticket,
    slot: OwnedSemaphorePermit,
    attempts: u32,
    first_attempt_ms: Option<i64>,
) -> InFlight {
    ctx.metrics.records_in_flight_add(1);
    InFlight {
        record,
        ticket,
        origin,
        revocations_then: ctx.consumer(origin).revocations(),
        event_id: EventText::Unknown,
        action: EventText::Unknown,
        attempts,
        first_attempt_ms,
        due: None,
        slot: Some(slot),
        bytes: None,
        turn: None,
        account: None,
    }
}

/// Which of the two consumers a record came from. (A plain tag: a shared pointer to the
/// consumer was counted up and down for every record, on different threads.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Origin {
    Source,
    Retries,
}

/// Registration of one due retry; dropping it (when the retry is sent or finished)
/// removes it.
pub(crate) struct DueToken {
    key: (i64, u64),
    registry: Arc<DueRetries>,
}

impl DueRetries {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(i64, u64), ()>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(self: &Arc<Self>, due_ms: i64) -> DueToken {
        let key = (due_ms, self.arrivals.fetch_add(1, Ordering::Relaxed));
        self.lock().insert(key, ());
        DueToken {
            key,
            registry: self.clone(),
        }
    }

    /// When the oldest due retry not yet sent was due.
    pub fn oldest_due_ms(&self) -> Option<i64> {
        self.lock().first_key_value().map(|((due, _), _)| *due)
    }
}

impl Drop for DueToken {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.key);
    }
}

impl InFlight {
    pub(crate) fn action_or_unknown(&self) -> &str {
        self.action.get().unwrap_or("")
    }

    fn event_id(&self) -> Option<&str> {
        self.event_id.get()
    }
}

/// Everything the pipeline's tasks share.
pub(crate) struct Context {
    pub source: Arc<SourceConsumer>,
    pub retries: Arc<SourceConsumer>,
    pub publisher: FailurePublisher,
    /// Where each source partition's retries go, as the last rebalance read them.
    pub retry_partitions: SharedRetryPartitions,
    /// The mParticle accounts, each with its client, pacer, gate and request slots.
    pub accounts: Accounts,
    pub metrics: Metrics,
    pub health: Arc<Health>,
    pub shutdown: Shutdown,
    pub retry: RetryConfig,
    pub event_max_bytes: usize,
    pub unmapped_action: UnmappedAction,
    pub bulk_linger: Duration,
    /// Most events of one customer merged into one batch (`MPARTICLE_MAX_EVENTS_PER_BATCH`).
    pub max_events_per_batch: usize,
    /// Source records between consume and outcome.
    pub record_slots: Arc<Semaphore>,
    /// Due retries between leaving the schedule and their outcome.
    pub retry_slots: Arc<Semaphore>,
    pub max_in_flight_records: usize,
    /// Bytes of source records between consume and outcome.
    pub record_bytes: Arc<Semaphore>,
    /// Bytes of retries waiting in the schedule or being sent.
    pub retry_bytes: Arc<Semaphore>,
    pub max_in_flight_bytes: u32,
    pub due_retries: Arc<DueRetries>,
    /// Customers whose later records wait behind a retry, by [`AccountId`]: a customer
    /// is its Kafka key within its account, so that the same key in two brands is two
    /// customers.
    holds: Box<[holds::Holds]>,
}

impl Context {
    /// The customers of `account` held behind a retry.
    pub fn holds(&self, account: AccountId) -> &holds::Holds {
        &self.holds[account]
    }

    /// The account a record goes to, as intake routes it (`None`: it names none, and
    /// intake dead-letters it). A routing rule with event fields parses the record.
    pub fn account_of(&self, record: &SourceRecord) -> Option<AccountId> {
        let routing = self.accounts.routing();
        let document = routing
            .reads_event()
            .then(|| crate::event::LoyaltyEvent::parse(record.value(), self.event_max_bytes).ok())
            .flatten();
        routing.route(record, document.as_ref()).ok()
    }

    /// What a record counts against `MAX_IN_FLIGHT_BYTES`: its value and key (one larger
    /// than the whole bound counts as the bound, so that it can still go alone).
    pub fn bytes_of(&self, record: &SourceRecord) -> u32 {
        let size = record.value().map_or(0, <[u8]>::len) + record.key().map_or(0, <[u8]>::len);
        (size.max(1) as u64).min(u64::from(self.max_in_flight_bytes)) as u32
    }

    /// Records whose outcome is durable: their offsets may move. Taken as they are held
    /// (a request's records stay in its list rather than being moved out one by one).
    pub fn finish<R: BorrowMut<InFlight>>(&self, mut records: Vec<R>) {
        let from = |origin: Origin| {
            records
                .iter()
                .map(|r| r.borrow())
                .filter(move |r| r.origin == origin)
                .map(|r| &r.ticket)
        };
        self.source.complete(from(Origin::Source));
        self.retries.complete(from(Origin::Retries));
        // Nobody held anywhere (nearly always): no record to look at.
        if !self.holds.iter().all(holds::Holds::is_empty) {
            let retries = records.iter().map(|r| r.borrow());
            for item in retries.filter(|r| r.origin == Origin::Retries) {
                let Some(account) = item.account else {
                    continue;
                };
                if let Some(customer) = holds::customer_of(&item.record) {
                    let first_seen = holds::FirstSeen::of(&item.record);
                    self.holds(account).finished(customer, &first_seen);
                }
            }
        }
        self.metrics.records_in_flight_add(-(records.len() as i64));
        self.uncount(records.iter().filter_map(|r| r.borrow().account));
        let slots = merged_slots(&mut records);
        // The records' memory goes before their slots let new records in.
        drop(records);
        drop(slots);
    }

    /// Records leaving their accounts' counts (a request's are all of one account).
    fn uncount(&self, accounts: impl Iterator<Item = AccountId>) {
        let mut run: Option<(AccountId, i64)> = None;
        for account in accounts {
            match &mut run {
                Some((same, count)) if *same == account => *count += 1,
                _ => {
                    if let Some((id, count)) = run.replace((account, 1)) {
                        self.accounts.get(id).records_add(-count);
                    }
                }
            }
        }
        if let Some((id, count)) = run {
            self.accounts.get(id).records_add(-count);
        }
    }

    /// True while this replica still owns the record's partition. A record whose partition
    /// a rebalance moved is the new owner's to send: its outcome here would be ignored.
    pub fn owns(&self, item: &InFlight) -> bool {
        self.consumer(item.origin)
            .owns(&item.ticket, item.revocations_then)
    }

    pub(crate) fn consumer(&self, origin: Origin) -> &SourceConsumer {
        match origin {
            Origin::Source => &self.source,
            Origin::Retries => &self.retries,
        }
    }
}

/// Takes the records' slots merged into one permit per semaphore, so that they are
/// released with one release each (each takes the semaphore's lock, and a request
/// finishes up to 100 records at once).
fn merged_slots<R: BorrowMut<InFlight>>(records: &mut [R]) -> Vec<OwnedSemaphorePermit> {
    let mut slots: Vec<OwnedSemaphorePermit> = Vec::with_capacity(2);
    for slot in records.iter_mut().flat_map(|r| {
        let r = r.borrow_mut();
        [r.slot.take(), r.bytes.take()].into_iter().flatten()
    }) {
        match slots
            .iter_mut()
            .find(|s| Arc::ptr_eq(s.semaphore(), slot.semaphore()))
        {
            Some(merged) => merged.merge(slot),
            None => slots.push(slot),
        }
    }
    slots
}

/// How long closing a consumer (leaving its group) may take at shutdown.
const CONSUMER_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The running pipeline.
pub struct Pipeline {
    ctx: Arc<Context>,
}

impl Pipeline {
    /// Connects the consumers and the producer (nothing is sent until [`run`](Self::run)).
    pub fn new(
        config: &Config,
        accounts: &AccountsConfig,
        metrics: Metrics,
        health: Arc<Health>,
        shutdown: Shutdown,
    ) -> anyhow::Result<Pipeline> {
        let kafka = &config.kafka;
        let source = SourceConsumer::subscribe(
            kafka,
            &kafka.group_id,
            &kafka.topics,
            metrics.clone(),
            health.clone(),
        )?
        .holding_messages();
        // The retry consumer reads the retry partitions of the source partitions this
        // replica owns, committing in a group of its own that has no members.
        let retries = Arc::new(SourceConsumer::assigned_by_hand(
            kafka,
            &retry_group(&kafka.group_id),
            &kafka.retry_topic,
            metrics.clone(),
        )?);
        let retry_partitions = SharedRetryPartitions::default();
        source.lead(Follower::new(
            retries.clone(),
            &kafka.retry_topic,
            &kafka.topics,
            retry_partitions.clone(),
            shutdown.clone(),
        ));
        health.watch("source reader", source.polls());
        health.watch("retry reader", retries.polls());
        let ctx = Context {
            source: Arc::new(source),
            retries,
            publisher: FailurePublisher::new(kafka)?,
            retry_partitions,
            accounts: Accounts::new(accounts)?,
            metrics,
            health,
            shutdown,
            retry: config.retry.clone(),
            event_max_bytes: config.event_max_bytes,
            unmapped_action: config.unmapped_action,
            bulk_linger: config.mparticle.bulk_linger,
            max_events_per_batch: config.mparticle.max_events_per_batch,
            record_slots: Arc::new(Semaphore::new(config.max_in_flight_records)),
            retry_slots: Arc::new(Semaphore::new(config.max_in_flight_records)),
            max_in_flight_records: config.max_in_flight_records,
            record_bytes: Arc::new(Semaphore::new(config.max_in_flight_bytes)),
            retry_bytes: Arc::new(Semaphore::new(config.max_in_flight_bytes)),
            max_in_flight_bytes: config.max_in_flight_bytes as u32,
            due_retries: Arc::new(DueRetries::default()),
            holds: (0..accounts.accounts.len())
                .map(|_| holds::Holds::default())
                .collect(),
        };
        Ok(Pipeline { ctx: Arc::new(ctx) })
    }

    /// Runs until shutdown, then drains for at most `grace` and commits what is done.
    pub async fn run(self, grace: Duration) {
        let ctx = self.ctx;
        // Bulk assembly per account, fed pieces of up to a full request each; the record
        // slots bound what they hold.
        let mut senders = Vec::with_capacity(ctx.accounts.len());
        let mut assemblers = Vec::with_capacity(ctx.accounts.len());
        for account in 0..ctx.accounts.len() {
            let (tx, rx) = mpsc::channel(64);
            senders.push(tx);
            assemblers.push(tokio::spawn(bulk::assemble(ctx.clone(), account, rx)));
        }
        let outbound_tx = ToAssembly(Arc::from(senders));
        let retry_reader = tokio::spawn(readers::read_retries(ctx.clone(), outbound_tx.clone()));
        let gauges = tokio::spawn(update_gauges(ctx.clone()));
        let source_ctx = ctx.clone();
        let _ =
            tokio::task::spawn_blocking(move || source::read_source(source_ctx, outbound_tx)).await;
        let _ = retry_reader.await;
        gauges.abort();

        ctx.health.draining.store(true, Ordering::SeqCst);
        info!(
            pending = ctx.source.pending() + ctx.retries.pending(),
            grace_secs = grace.as_secs(),
            "no longer taking records; draining"
        );
        for assembler in assemblers {
            let _ = assembler.await;
        }
        let all = ctx.max_in_flight_records as u32;
        let drained = tokio::time::timeout(grace, async {
            let _ = ctx.record_slots.acquire_many(all).await;
            let _ = ctx.retry_slots.acquire_many(all).await;
        })
        .await;
        if drained.is_err() {
            warn!(
                pending = ctx.source.pending() + ctx.retries.pending(),
                "grace period over; records still in flight will be consumed again after restart"
            );
        }
        if let Err(error) = ctx.publisher.flush(Duration::from_secs(5)) {
            warn!(%error, "producer flush incomplete");
        }
        for consumer in [&ctx.source, &ctx.retries] {
            match consumer.commit_now() {
                Ok(()) => info!("final offsets committed"),
                Err(error) => {
                    warn!(%error, "final commit failed; some records will be consumed again")
                }
            }
        }
        // Closing blocks in librdkafka, which has had bugs that made it hang: it runs on a
        // blocking thread, bounded, so that a stuck close cannot stop the process exiting.
        let closing = tokio::task::spawn_blocking(move || {
            for consumer in [&ctx.source, &ctx.retries] {
                if !consumer.close(CONSUMER_CLOSE_TIMEOUT) {
                    warn!(
                        timeout_secs = CONSUMER_CLOSE_TIMEOUT.as_secs(),
                        "consumer did not close in time; the group notices at its session timeout"
                    );
                }
            }
        });
        let _ = closing.await;
    }
}

/// Refreshes the gauges that are not set where things happen, once a second.
async fn update_gauges(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let age_ms = ctx
            .due_retries
            .oldest_due_ms()
            .map_or(0, |due| (crate::clock::unix_ms() - due).max(0));
        ctx.metrics
            .set_oldest_due_retry_age(Duration::from_millis(age_ms as u64));
        let mut rate = 0.0;
        for account in ctx.accounts.iter() {
            let account_rate = account.pacer.rate();
            rate += account_rate;
            ctx.metrics.accounts.set_state(
                account.name,
                account_rate,
                account.records(),
                account.stuck().map(|(stuck, _)| stuck),
            );
        }
        ctx.metrics.set_pacing_rate(rate);
        ctx.health.set_accounts(ctx.accounts.report());
        let held = |bytes: &Semaphore| {
            u64::from(ctx.max_in_flight_bytes).saturating_sub(bytes.available_permits() as u64)
        };
        ctx.metrics
            .set_bytes_in_flight(held(&ctx.record_bytes) + held(&ctx.retry_bytes));
        let (customers, records) = ctx
            .holds
            .iter()
            .map(holds::Holds::sizes)
            .fold((0, 0), |(customers, records), (c, r)| {
                (customers + c, records + r)
            });
        ctx.metrics.set_held_behind_retries(customers, records);
    }
}

/// Where records ready to send go: each account's bulk assembly, by [`AccountId`].
#[derive(Clone)]
struct ToAssembly(Arc<[mpsc::Sender<Vec<Outbound>>]>);

impl ToAssembly {
    pub fn of(&self, account: AccountId) -> &mpsc::Sender<Vec<Outbound>> {
        &self.0[account]
    }

    /// True once every assembly is gone (the runtime is going away).
    pub fn is_closed(&self) -> bool {
        self.0.iter().all(mpsc::Sender::is_closed)
    }

    /// Resolves once every assembly is gone.
    pub async fn closed(&self) {
        for tx in self.0.iter() {
            tx.closed().await;
        }
    }
}

/// The consumer group of the retry topic: the source group's name with `.retry`.
pub fn retry_group(group_id: &str) -> String {
    format!("{group_id}.retry")
}
