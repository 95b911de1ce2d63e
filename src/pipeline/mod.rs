//! The forwarding pipeline: consume → intake (decode, map) → bulk assembly → delivery →
//! outcome, with the offset of every record moving only once its outcome is durable.
//!
//! Concurrency and memory are bounded by two semaphores: `MAX_IN_FLIGHT_RECORDS` records
//! between consume and outcome (the reader stops pulling when they are used up), and
//! `MPARTICLE_MAX_IN_FLIGHT_REQUESTS` requests to mParticle at once.

mod bulk;
mod delivery;
pub mod intake;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tracing::{error, info, warn};

use crate::admin::Health;
use crate::config::{Config, RetryConfig, UnmappedAction};
use crate::kafka::consumer::SourceConsumer;
use crate::kafka::headers::Failure;
use crate::kafka::offsets::Ticket;
use crate::kafka::producer::FailurePublisher;
use crate::kafka::record::SourceRecord;
use crate::mapping::FieldAssignments;
use crate::metrics::Metrics;
use crate::mparticle::Environment;
use crate::mparticle::client::Client;
use crate::pacer::Pacer;
use crate::shutdown::{Shutdown, StopReason};
use intake::{IntakeRules, Prepared};

/// A consumed record on its way to a final outcome. Holding it holds one in-flight slot.
pub(crate) struct InFlight {
    pub record: SourceRecord,
    pub ticket: Ticket,
    pub event_id: Option<String>,
    pub action: Option<String>,
    _slot: OwnedSemaphorePermit,
}

impl InFlight {
    fn action_or_unknown(&self) -> &str {
        self.action.as_deref().unwrap_or("")
    }
}

/// Everything the pipeline's tasks share.
pub(crate) struct Context {
    pub consumer: SourceConsumer,
    pub publisher: FailurePublisher,
    pub client: Client,
    pub assignments: FieldAssignments,
    pub metrics: Metrics,
    pub pacer: Pacer,
    pub health: Arc<Health>,
    pub shutdown: Shutdown,
    pub environment: Environment,
    pub retry: RetryConfig,
    pub event_max_bytes: usize,
    pub unmapped_action: UnmappedAction,
    pub bulk_linger: Duration,
    pub request_slots: Arc<Semaphore>,
    record_slots: Arc<Semaphore>,
    max_in_flight_records: usize,
    /// True while mParticle refuses the credentials: the reader stops pulling.
    pub auth_failed: watch::Sender<bool>,
}

impl Context {
    /// Records whose outcome is durable: their offsets may move.
    pub fn finish(&self, records: Vec<InFlight>) {
        self.consumer.complete(records.iter().map(|r| &r.ticket));
        self.metrics.records_in_flight_add(-(records.len() as i64));
    }

    /// Writes a record to the dead-letter topic, then finishes it. If the write fails the
    /// service stops (exit 1) and the offset stays before the record.
    pub async fn dead_letter(&self, item: InFlight, failure: Failure) {
        let action = item.action_or_unknown().to_string();
        match self.publisher.dead_letter(&item.record, &failure).await {
            Ok(()) => {
                warn!(
                    event_id = item.event_id.as_deref().unwrap_or("-"),
                    topic = %item.record.topic,
                    partition = item.record.partition,
                    offset = item.record.offset,
                    kind = failure.kind.as_str(),
                    attempt = failure.attempt,
                    reason = %failure.error,
                    "dead-lettered"
                );
                self.metrics.event_dead_lettered(&action, failure.kind);
                self.finish(vec![item]);
            }
            Err(publish_error) => {
                error!(
                    error = %publish_error,
                    topic = %item.record.topic,
                    partition = item.record.partition,
                    offset = item.record.offset,
                    "cannot write a dead letter; stopping without moving the offset"
                );
                self.metrics.records_in_flight_add(-1);
                self.shutdown
                    .trigger(StopReason::Fatal(publish_error.to_string()));
            }
        }
    }
}

/// The running pipeline.
pub struct Pipeline {
    ctx: Arc<Context>,
}

impl Pipeline {
    /// Connects the consumer and the producer (nothing is sent until [`run`](Self::run)).
    pub fn new(
        config: &Config,
        assignments: FieldAssignments,
        metrics: Metrics,
        health: Arc<Health>,
        shutdown: Shutdown,
    ) -> anyhow::Result<Pipeline> {
        let consumer = SourceConsumer::subscribe(&config.kafka, metrics.clone(), health.clone())?;
        let publisher = FailurePublisher::new(&config.kafka)?;
        let client = Client::new(&config.mparticle)?;
        let (auth_failed, _) = watch::channel(false);
        let ctx = Context {
            consumer,
            publisher,
            client,
            assignments,
            metrics,
            pacer: Pacer::new(config.mparticle.max_batches_per_second),
            health,
            shutdown,
            environment: Environment::from_development_flag(config.mparticle.development),
            retry: config.retry.clone(),
            event_max_bytes: config.event_max_bytes,
            unmapped_action: config.unmapped_action,
            bulk_linger: config.mparticle.bulk_linger,
            request_slots: Arc::new(Semaphore::new(config.mparticle.max_in_flight_requests)),
            record_slots: Arc::new(Semaphore::new(config.max_in_flight_records)),
            max_in_flight_records: config.max_in_flight_records,
            auth_failed,
        };
        Ok(Pipeline { ctx: Arc::new(ctx) })
    }

    /// Runs until shutdown, then drains for at most `grace` and commits what is done.
    pub async fn run(self, grace: Duration) {
        let ctx = self.ctx;
        let (outbound_tx, outbound_rx) = mpsc::channel(ctx.max_in_flight_records.min(4096));
        let assembler = tokio::spawn(bulk::assemble(ctx.clone(), outbound_rx));
        read_records(&ctx, outbound_tx).await;

        ctx.health.draining.store(true, Ordering::SeqCst);
        let pending = ctx.consumer.pending();
        info!(
            pending,
            grace_secs = grace.as_secs(),
            "no longer taking records; draining"
        );
        let _ = assembler.await;
        let all = ctx.max_in_flight_records as u32;
        let drained = tokio::time::timeout(grace, ctx.record_slots.acquire_many(all)).await;
        if drained.is_err() {
            warn!(
                pending = ctx.consumer.pending(),
                "grace period over; records still in flight will be consumed again after restart"
            );
        }
        if let Err(error) = ctx.publisher.flush(Duration::from_secs(5)) {
            warn!(%error, "producer flush incomplete");
        }
        match ctx.consumer.commit_now() {
            Ok(()) => info!("final offsets committed"),
            Err(error) => warn!(%error, "final commit failed; some records will be consumed again"),
        }
        ctx.consumer.leave();
    }
}

/// Pulls records while there is room and mParticle accepts the credentials.
async fn read_records(ctx: &Arc<Context>, outbound: mpsc::Sender<delivery::Outbound>) {
    let mut auth_failed = ctx.auth_failed.subscribe();
    let rules = IntakeRules {
        assignments: &ctx.assignments,
        environment: ctx.environment,
        event_max_bytes: ctx.event_max_bytes,
        unmapped_action: ctx.unmapped_action,
    };
    loop {
        let slot = tokio::select! {
            _ = ctx.shutdown.wait() => return,
            slot = ctx.record_slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        if *auth_failed.borrow() {
            tokio::select! {
                _ = ctx.shutdown.wait() => return,
                _ = auth_failed.wait_for(|failed| !failed) => {}
            }
        }
        let next = tokio::select! {
            _ = ctx.shutdown.wait() => return,
            next = ctx.consumer.next() => next,
        };
        let (record, ticket) = match next {
            Ok(next) => next,
            Err(error) => {
                warn!(%error, "consume error");
                continue;
            }
        };
        ctx.metrics.event_consumed(&record.topic);
        ctx.metrics.records_in_flight_add(1);
        let prepared = intake::prepare(&record, &rules);
        let mut item = InFlight {
            record,
            ticket,
            event_id: None,
            action: None,
            _slot: slot,
        };
        match prepared {
            Prepared::Send {
                event_id,
                action,
                batch,
            } => {
                ctx.metrics.values_truncated(batch.truncated_values);
                item.event_id = Some(event_id);
                item.action = Some(action);
                // The assembler only ends after this sender is dropped, so a failed send
                // cannot happen; if it did, the record stays pending and is consumed again.
                if outbound
                    .send(delivery::Outbound::new(item, batch.json))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Prepared::Skip {
                event_id,
                action,
                reason,
            } => {
                item.event_id = Some(event_id);
                item.action = Some(action);
                ctx.metrics.event_skipped(reason);
                ctx.finish(vec![item]);
            }
            Prepared::Reject {
                event_id,
                action,
                failure,
            } => {
                item.event_id = event_id;
                item.action = action;
                let ctx = ctx.clone();
                tokio::spawn(async move { ctx.dead_letter(item, failure).await });
            }
        }
    }
}
