//! The retry reader, which keeps the retry topic's records in a schedule until they are
//! due, and the intake step shared with the [source reader](super::source): both hand
//! records to intake and on to bulk assembly; both pause (and keep polling, so they stay
//! in their groups) while the gate holds consumers.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::{Duration, Instant, sleep_until};
use tracing::warn;

use super::delivery::Outbound;
use super::intake::{EventText, IntakeRules, Prepared, prepare};
use super::retry_schedule::RetrySchedule;
use super::{Context, InFlight, Origin};
use crate::clock::unix_ms;
use crate::kafka::consumer::PauseReason;
use crate::kafka::offsets::Ticket;
use crate::kafka::record::SourceRecord;
use crate::mparticle::body::Batch;
use crate::retry::RetryState;

/// A retry record waiting in the schedule, with its bytes within `MAX_IN_FLIGHT_BYTES`.
struct Waiting {
    record: SourceRecord,
    ticket: Ticket,
    state: RetryState,
    bytes: OwnedSemaphorePermit,
}

/// Reads the retry topic into the schedule and hands each retry on once it is due.
pub(super) async fn read_retries(ctx: Arc<Context>, outbound: mpsc::Sender<Vec<Outbound>>) {
    // A few records in hand; the schedule is where retries wait.
    let mut arrivals = ctx.retries.feed(64);
    let stop = ctx.shutdown.wait();
    tokio::pin!(stop);
    let mut schedule: RetrySchedule<Waiting> = RetrySchedule::new(ctx.max_in_flight_records);
    let mut gate_changes = ctx.gate.subscribe();
    let mut paused = false;
    // An arrival waiting for bytes: nothing more is read until it has them.
    let mut parked: Option<(SourceRecord, Ticket)> = None;
    loop {
        ctx.metrics.set_retry_scheduled(schedule.len());
        let hold = ctx.gate.holds_consumers();
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
            let mut json = Vec::new();
            if let Some((item, range)) = take_in(&ctx, item, &mut json) {
                let batch = Batch::new(Bytes::from(json), range);
                if outbound.send(vec![Outbound { item, batch }]).await.is_err() {
                    return;
                }
            }
        }
        let next_due = schedule.next_due_ms().map(|due| {
            Instant::now() + Duration::from_millis(due.saturating_sub(unix_ms()).max(0) as u64)
        });
        // Wake for the next due retry, and when the gate's wait ends: paused with nothing
        // due, this reader may be the only one to see it end.
        let wake_at = next_due.into_iter().chain(ctx.gate.wait_ends_at()).min();
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
                schedule_retry(&mut schedule, record, ticket, bytes);
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
            Err(error) => {
                warn!(%error, "consume error on the retry topic");
                continue;
            }
        };
        match ctx
            .retry_bytes
            .clone()
            .try_acquire_many_owned(ctx.bytes_of(&record))
        {
            Ok(bytes) => schedule_retry(&mut schedule, record, ticket, bytes),
            Err(_) => parked = Some((record, ticket)),
        }
    }
}

fn schedule_retry(
    schedule: &mut RetrySchedule<Waiting>,
    record: SourceRecord,
    ticket: Ticket,
    bytes: OwnedSemaphorePermit,
) {
    let state = RetryState::of(&record);
    schedule.insert(
        state.not_before_ms,
        Waiting {
            record,
            ticket,
            state,
            bytes,
        },
    );
}

pub(super) fn in_flight(
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
    }
}

/// Intake: a record to send comes back, its batch appended to `out` at the range given;
/// one skipped or rejected is finished here and leaves `out` as it was.
pub(super) fn take_in(
    ctx: &Arc<Context>,
    mut item: InFlight,
    out: &mut Vec<u8>,
) -> Option<(InFlight, Range<usize>)> {
    let rules = IntakeRules {
        assignments: &ctx.assignments,
        environment: ctx.environment,
        event_max_bytes: ctx.event_max_bytes,
        unmapped_action: ctx.unmapped_action,
    };
    match prepare(&item.record, &rules, out) {
        Prepared::Send {
            event_id,
            action,
            batch,
            truncated_values,
        } => {
            ctx.metrics.values_truncated(truncated_values);
            item.event_id = event_id;
            item.action = action;
            Some((item, batch))
        }
        Prepared::Skip {
            event_id,
            action,
            reason,
        } => {
            item.event_id = event_id;
            item.action = action;
            ctx.metrics.event_skipped(reason);
            ctx.finish(vec![item]);
            None
        }
        Prepared::Reject {
            event_id,
            action,
            mut failure,
        } => {
            item.event_id = event_id;
            item.action = action;
            failure.attempt = item.attempts;
            failure.first_attempt_ms = item.first_attempt_ms;
            let ctx = ctx.clone();
            tokio::spawn(async move { ctx.dead_letter(item, failure).await });
            None
        }
    }
}
