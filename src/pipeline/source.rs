//! The source reader: one blocking thread that polls the source consumer, takes every
//! record in (decode, map) and hands the batches on to bulk assembly in pieces of up to a
//! full request. Reading, decoding and mapping stay on this thread, so a record costs no
//! task wake-up of its own; the async side is woken once per piece.
//!
//! A piece's batches are written into one buffer, a comma between each two, so that a
//! request made of them goes out as one slice of it
//! ([`RequestBody`](crate::mparticle::body::RequestBody)). A piece leaves when it holds a
//! full request, when librdkafka has nothing more queued, or before the thread waits for
//! room (a record slot). The thread pauses the consumer
//! while the gate holds consumers, and while it waits for room for longer than a second;
//! it keeps polling meanwhile, so it stays in its group however long an outage holds every
//! slot.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, TryAcquireError};
use tracing::warn;

use super::in_flight;
use super::intake::{Taken, take_in};
use super::outbound::Outbound;
use super::{Context, ToAssembly};
use super::{InFlight, Origin};
use crate::accounts::AccountId;
use crate::kafka::consumer::{IDLE_POLL, PauseReason, Polled};
use crate::kafka::topic::Topic;
use crate::mparticle::{MAX_BATCHES_PER_BULK, MAX_REQUEST_BYTES};

/// Records taken in since the last piece left, their batches in one buffer, and how many
/// records were consumed per topic.
struct Piece {
    taken: Vec<Taken>,
    json: Vec<u8>,
    consumed: Vec<(Topic, u64)>,
}

impl Piece {
    fn new() -> Piece {
        Piece {
            taken: Vec::with_capacity(MAX_BATCHES_PER_BULK),
            json: Vec::new(),
            consumed: Vec::new(),
        }
    }

    /// Takes a record in; true once the piece holds a full request.
    fn take(&mut self, ctx: &Arc<Context>, item: InFlight) -> bool {
        let mark = self.json.len();
        if mark > 0 {
            self.json.push(b',');
        }
        match take_in(ctx, item, &mut self.json) {
            Some(taken) => self.taken.push(taken),
            None => self.json.truncate(mark),
        }
        self.taken.len() >= MAX_BATCHES_PER_BULK
    }

    fn is_empty(&self) -> bool {
        self.taken.is_empty()
    }

    fn count_consumed(&mut self, topic: Topic) {
        match self.consumed.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, count)) => *count += 1,
            None => self.consumed.push((topic, 1)),
        }
    }

    /// Hands the batches on and counts what was consumed. False once assembly is gone.
    /// While assembly has no room (every request waits at the pacer or the gate), the
    /// consumer keeps polling, so that it stays in its group.
    fn send(
        &mut self,
        ctx: &Arc<Context>,
        outbound: &Outlet,
        early: &mut VecDeque<Polled>,
    ) -> bool {
        for (topic, count) in self.consumed.drain(..) {
            ctx.metrics.events_consumed(&topic, count);
        }
        if self.taken.is_empty() {
            return true;
        }
        // The next piece is likely the size of this one: room for it and a quarter more up
        // front, so that it seldom grows (growing doubles the buffer, and the spare room
        // stays allocated while the batches are in flight). A piece of large events
        // reserves no more than one request's worth.
        let room = (self.json.len() + self.json.len() / 4).min(MAX_REQUEST_BYTES);
        let json = Bytes::from(std::mem::replace(&mut self.json, Vec::with_capacity(room)));
        let account_of = |taken: &Taken| taken.item.account.unwrap_or_default();
        let first = self.taken.first().map(account_of).unwrap_or_default();
        if self.taken.iter().all(|taken| account_of(taken) == first) {
            let batches = self
                .taken
                .drain(..)
                .map(|taken| Outbound::new(taken, &json))
                .collect();
            return ctx
                .source
                .hand_on(&outbound.runtime, outbound.tx.of(first), batches, early);
        }
        // Records of several accounts: each account's go to its own assembly, in order,
        // their batches copied into a buffer of that account's own. (Sharing the piece's
        // buffer, a record of each account kept a whole piece's buffer alive: with 100
        // accounts the peak RSS went from 50 to 250 MiB.)
        let mut by_account: Vec<(AccountId, Vec<u8>, Vec<Taken>)> = Vec::new();
        for mut taken in self.taken.drain(..) {
            let account = account_of(&taken);
            let at = match by_account.iter().position(|(a, _, _)| *a == account) {
                Some(at) => at,
                None => {
                    by_account.push((account, Vec::new(), Vec::new()));
                    by_account.len() - 1
                }
            };
            let (_, buffer, group) = &mut by_account[at];
            if !buffer.is_empty() {
                buffer.push(b',');
            }
            let start = buffer.len();
            buffer.extend_from_slice(&json[taken.batch.clone()]);
            taken.batch = start..buffer.len();
            group.push(taken);
        }
        by_account.into_iter().all(|(account, buffer, group)| {
            let buffer = Bytes::from(buffer);
            let batches = group
                .into_iter()
                .map(|taken| Outbound::new(taken, &buffer))
                .collect();
            ctx.source
                .hand_on(&outbound.runtime, outbound.tx.of(account), batches, early)
        })
    }
}

/// Where pieces go: each account's bulk assembly, on the runtime this thread blocks on
/// while it waits.
struct Outlet {
    tx: ToAssembly,
    runtime: Handle,
}

/// Runs on a blocking thread (`spawn_blocking`) until shutdown.
pub(super) fn read_source(ctx: Arc<Context>, outbound: ToAssembly) {
    let outbound = Outlet {
        tx: outbound,
        runtime: Handle::current(),
    };
    let mut piece = Piece::new();
    let mut slot: Option<OwnedSemaphorePermit> = None;
    // Records polled while waiting for room, to take in first.
    let mut early: VecDeque<Polled> = VecDeque::new();
    let mut paused = false;
    loop {
        // Between pieces (under load every 100 records, idle at every poll): shutdown, the
        // gate and assembly are asked once per piece, not per record, as each takes a
        // lock or an atomic that other threads write. Assembly gone means the runtime is
        // going away: nothing could leave any more.
        if piece.is_empty() {
            if ctx.shutdown.is_triggered() || outbound.tx.is_closed() {
                break;
            }
            let hold = ctx.accounts.hold_consumers();
            if hold != paused {
                ctx.source.set_paused(PauseReason::Gate, hold);
                paused = hold;
            }
        }
        // Room for one more record first, so that a full pipeline stops pulling.
        let permit = match slot.take() {
            Some(permit) => permit,
            None => match ctx.record_slots.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(TryAcquireError::Closed) => break,
                Err(TryAcquireError::NoPermits) => {
                    // What this thread holds must go on before it waits for room.
                    if !piece.send(&ctx, &outbound, &mut early) {
                        return;
                    }
                    match wait_for_slot(&ctx, &outbound, &mut early) {
                        Some(permit) => permit,
                        None => break,
                    }
                }
            },
        };
        // Without a piece under way, wait; with one, only take what is queued already.
        let timeout = if piece.is_empty() {
            IDLE_POLL
        } else {
            Duration::ZERO
        };
        let Some(next) = early.pop_front().or_else(|| ctx.source.poll(timeout)) else {
            slot = Some(permit);
            if !piece.send(&ctx, &outbound, &mut early) {
                return;
            }
            continue;
        };
        let (record, ticket) = match next {
            Ok(next) => next,
            Err(error) => {
                slot = Some(permit);
                warn!(%error, "consume error");
                continue;
            }
        };
        // Room for its bytes too, so that large records cannot fill memory within the
        // record count.
        let cost = ctx.bytes_of(&record);
        let bytes = match ctx.record_bytes.clone().try_acquire_many_owned(cost) {
            Ok(bytes) => bytes,
            Err(TryAcquireError::Closed) => break,
            Err(TryAcquireError::NoPermits) => {
                if !piece.send(&ctx, &outbound, &mut early) {
                    return;
                }
                let bytes = ctx.record_bytes.clone().acquire_many_owned(cost);
                match wait_for(&ctx, &outbound, &mut early, bytes) {
                    Some(bytes) => bytes,
                    None => break,
                }
            }
        };
        piece.count_consumed(record.topic);
        let mut item = in_flight(&ctx, Origin::Source, record, ticket, permit, 0, None);
        item.bytes = Some(bytes);
        if piece.take(&ctx, item) && !piece.send(&ctx, &outbound, &mut early) {
            return;
        }
    }
    let _ = piece.send(&ctx, &outbound, &mut early);
}

/// Waits for a record slot, or `None` at shutdown or once assembly is gone.
fn wait_for_slot(
    ctx: &Context,
    outbound: &Outlet,
    early: &mut VecDeque<Polled>,
) -> Option<OwnedSemaphorePermit> {
    wait_for(
        ctx,
        outbound,
        early,
        ctx.record_slots.clone().acquire_owned(),
    )
}

/// Waits for `room` (a record slot, or bytes), or `None` at shutdown or once assembly is
/// gone; keeps the consumer in its group meanwhile
/// ([`SourceConsumer::wait_for_room`](crate::kafka::consumer::SourceConsumer::wait_for_room)).
fn wait_for<E>(
    ctx: &Context,
    outbound: &Outlet,
    early: &mut VecDeque<Polled>,
    room: impl Future<Output = Result<OwnedSemaphorePermit, E>>,
) -> Option<OwnedSemaphorePermit> {
    let room = async {
        tokio::select! {
            _ = ctx.shutdown.wait() => None,
            _ = outbound.tx.closed() => None,
            permit = room => permit.ok(),
        }
    };
    ctx.source.wait_for_room(&outbound.runtime, early, room)
}
