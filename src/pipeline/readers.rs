//! The retry reader, which keeps the retry topic's records in a schedule until they are
//! due, then hands them to [intake](super::intake::take_in) and on to bulk assembly, as
//! the [source reader](super::source) does; both pause (and keep polling, so they stay
//! in their groups) while the gate holds consumers.

use std::sync::Arc;

use bytes::Bytes;
use rdkafka::error::KafkaError;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Duration, Instant, sleep_until};
use tracing::warn;

use super::holds::{FirstSeen, customer_of};
use super::intake::take_in;
use super::outbound::Outbound;
use super::retry_schedule::RetrySchedule;
use super::{Context, Origin, ToAssembly, in_flight};
use crate::accounts::AccountId;
use crate::clock::unix_ms;
use crate::kafka::consumer::PauseReason;
use crate::kafka::headers::retry_state;
use crate::kafka::offsets::Ticket;
use crate::kafka::record::SourceRecord;
use crate::retry::RetryState;

/// A retry record waiting in the schedule, with its bytes within `MAX_IN_FLIGHT_BYTES`.
struct Waiting {
    record: SourceRecord,
    ticket: Ticket,
    state: RetryState,
    bytes: OwnedSemaphorePermit,
    /// Its account, as intake will route it: whose customers it holds.
    account: Option<AccountId>,
}

/// Reads the retry topic into the schedule and hands each retry on once it is due.
pub(super) async fn read_retries(ctx: Arc<Context>, outbound: ToAssembly) {
    // A few records in hand; the schedule is where retries wait.
    let mut arrivals = ctx.retries.feed(64);
    let stop = ctx.shutdown.wait();
    tokio::pin!(stop);
    let mut schedule: RetrySchedule<Waiting> = RetrySchedule::new(ctx.max_in_flight_records);
    let mut gate_changes = ctx.accounts.subscribe_gates();
    let mut paused = false;
    // The latest arrival, until it has room for its bytes: nothing more is read meanwhile.
    let mut parked: Option<(SourceRecord, Ticket)> = None;
    loop {
        ctx.metrics.set_retry_scheduled(schedule.len());
        let hold = ctx.accounts.hold_consumers();
        if hold != paused {
            ctx.retries.set_paused(PauseReason::Gate, hold);
            paused = hold;
        }
        let now_ms = unix_ms();
        while let Some(waiting) = schedule.pop_due(now_ms) {
            let slot = tokio::select! {
                _ = &mut stop => return,
                slot = ctx.retry_slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
            };
            let Waiting {
                record,
                ticket,
                state,
                bytes,
                account,
            } = waiting;
            let mut item = in_flight(
                &ctx,
                Origin::Retries,
                record,
                ticket,
                slot,
                state.attempts_made,
                state.first_attempt_ms,
            );
            item.due = Some(ctx.due_retries.register(state.not_before_ms));
            item.bytes = Some(bytes);
            let held = account
                .zip(customer_of(&item.record))
                .map(|(account, customer)| {
                    let first_seen = FirstSeen::of(&item.record);
                    (account, Box::<[u8]>::from(customer), first_seen)
                });
            let mut json = Vec::new();
            match take_in(&ctx, item, &mut json) {
                Some(taken) => {
                    let account = taken.item.account.unwrap_or_default();
                    let ready = Outbound::new(taken, &Bytes::from(json));
                    if outbound.of(account).send(vec![ready]).await.is_err() {
                        return;
                    }
                }
                // Finished at intake (dead-lettered, skipped): it holds its customer no
                // longer.
                None => {
                    if let Some((account, customer, first_seen)) = held {
                        ctx.holds(account).release(&customer, &first_seen);
                    }
                }
            }
        }
        let next_due = schedule.next_due_ms().map(|due| {
            Instant::now() + Duration::from_millis(due.saturating_sub(unix_ms()).max(0) as u64)
        });
        // Wake for the next due retry, and when the gate's wait ends: paused with nothing
        // due, this reader may be the only one to see it end.
        let wake_at = next_due
            .into_iter()
            .chain(ctx.accounts.gate_wait_ends_at())
            .min();
        let parked_bytes = ctx.retry_bytes.clone().acquire_many_owned(
            parked
                .as_ref()
                .map_or(1, |(record, _)| ctx.bytes_of(record)),
        );
        let next = tokio::select! {
            _ = &mut stop => return,
            _ = gate_changes.changed() => continue,
            _ = sleep_until(wake_at.unwrap_or_else(Instant::now)), if wake_at.is_some() => continue,
            bytes = parked_bytes, if parked.is_some() => {
                let (Ok(bytes), Some((record, ticket))) = (bytes, parked.take()) else {
                    return;
                };
                schedule_retry(&ctx, &mut schedule, record, ticket, bytes);
                continue;
            }
            // Full: the rest stay in the topic (its reader pauses, in its group) until one
            // of these is due.
            next = arrivals.recv(), if !schedule.is_full() && parked.is_none() => match next {
                Some(next) => next,
                None => return,
            },
        };
        let (record, ticket) = match next {
            Ok(next) => next,
            // Every record before it is in the schedule, its customer held: the source
            // partition whose retries these are may go on.
            Err(KafkaError::PartitionEOF(partition)) => {
                ctx.source.caught_up(partition);
                continue;
            }
            Err(error) => {
                warn!(%error, "consume error on the retry topic");
                continue;
            }
        };
        // It goes into the schedule once it has room for its bytes (the branch above).
        parked = Some((record, ticket));
    }
}

/// Puts a retry in the schedule; it holds its customer until it comes out (after a
/// restart, this is how the holds come back).
fn schedule_retry(
    ctx: &Context,
    schedule: &mut RetrySchedule<Waiting>,
    record: SourceRecord,
    ticket: Ticket,
    bytes: OwnedSemaphorePermit,
) {
    let state = retry_state(&record);
    let account = ctx.account_of(&record);
    if let Some((account, customer)) = account.zip(customer_of(&record)) {
        ctx.holds(account).add(
            customer,
            FirstSeen::of(&record),
            state.not_before_ms,
            Some(record.partition),
        );
    }
    schedule.insert(
        state.not_before_ms,
        Waiting {
            record,
            ticket,
            state,
            bytes,
            account,
        },
    );
}
