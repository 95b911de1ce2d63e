//! Bulk assembly: records ready to send are gathered into requests of up to 100 batches
//! (fewer when the pace is slow: [`Pacer::batches_per_request`](crate::pacer::Pacer::batches_per_request))
//! and under 256 KB, and each request passes the gate and the pacer here, before it is
//! handed to a delivery task, so that requests leave in the order they are composed.
//!
//! Records wait in a lane per customer ([`Lanes`]), and a customer has one batch under way
//! at a time: its next records go once that batch's records have their outcomes, so they
//! reach mParticle in order. A customer's records waiting together leave in one batch.
//! Below the limit a request leaves when it is full or when nothing more arrives within
//! `MPARTICLE_BULK_LINGER`; while the limit binds, it is composed when its turn at the
//! pacer comes, of everything handed on by then. Nothing waits in order to be merged.
//!
//! When a customer's record goes to the retry topic, the customer is held
//! ([`Holds`](super::holds::Holds)): its later records are written to the retry topic
//! behind it, due with it, until it comes back.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

use super::delivery;
use super::holds::{Customer, FirstSeen};
use super::lanes::{Lanes, Turn};
use super::outbound::{Outbound, members};
use super::{Context, Origin};
use crate::clock::unix_ms;
use crate::kafka::headers::Failure;
use crate::outcome::ErrorKind;

/// Runs until `pieces` closes and every record handed on has been handed to a delivery
/// task (or written behind its customer's retry).
pub(super) async fn assemble(ctx: Arc<Context>, mut pieces: mpsc::Receiver<Vec<Outbound>>) {
    let mut lanes: Lanes<Outbound, Customer> = Lanes::new();
    // Records held behind a retry are written one after another, in order.
    let (held_tx, held_rx) = mpsc::unbounded_channel();
    tokio::spawn(write_held(ctx.clone(), held_rx));
    let assembly = Assembly {
        ctx: &ctx,
        held: held_tx,
    };
    let mut open = true;
    loop {
        assembly.next_turns(&mut lanes);
        if lanes.ready() == 0 {
            if !open && lanes.is_empty() {
                return;
            }
            tokio::select! {
                _ = ctx.shutdown.wait() => return,
                piece = pieces.recv(), if open => match piece {
                    Some(piece) => assembly.line_up(&mut lanes, piece),
                    None => open = false,
                },
                _ = ctx.finished.wait() => {}
            }
            continue;
        }
        let Some(admitted) = delivery::admit(&ctx).await else {
            return;
        };
        if ctx.pacer.binds() {
            // Records wait anyway: the request is composed when its turn at the pacer
            // comes, so that what arrives meanwhile joins it.
            tokio::select! {
                _ = ctx.shutdown.wait() => return,
                _ = ctx.pacer.next_turn() => {}
            }
        } else {
            let deadline = Instant::now() + ctx.bulk_linger;
            while open && lanes.ready() < ctx.pacer.batches_per_request() {
                match timeout_at(deadline, pieces.recv()).await {
                    Ok(Some(piece)) => assembly.line_up(&mut lanes, piece),
                    Ok(None) => open = false,
                    Err(_) => break,
                }
            }
        }
        while let Ok(piece) = pieces.try_recv() {
            assembly.line_up(&mut lanes, piece);
        }
        assembly.next_turns(&mut lanes);
        let bulk = assembly.take(&mut lanes);
        if bulk.is_empty() {
            continue;
        }
        let Some(cleared) = delivery::pass_pacer(&ctx, admitted, bulk.len()).await else {
            return;
        };
        tokio::spawn(delivery::deliver(ctx.clone(), bulk, Some(cleared)));
    }
}

struct Assembly<'a> {
    ctx: &'a Arc<Context>,
    held: mpsc::UnboundedSender<(Outbound, i64)>,
}

impl Assembly<'_> {
    /// Puts each record of `piece` in its customer's lane, or, while the customer is held
    /// behind a retry, on its way to the retry topic behind it.
    fn line_up(&self, lanes: &mut Lanes<Outbound, Customer>, piece: Vec<Outbound>) {
        for o in piece {
            let Some(customer) = o.customer() else {
                lanes.push(o, None);
                continue;
            };
            match o.item.origin {
                // Back from the retry topic: it holds its customer no longer, and its
                // lane keeps it in order from here; unless an earlier record of the
                // customer failed again meanwhile, which it then waits behind again.
                Origin::Retries => {
                    let first_seen = FirstSeen::of(&o.item.record);
                    match self
                        .ctx
                        .holds
                        .ahead_due_ms(&customer, &first_seen, unix_ms())
                    {
                        Some(due_ms) => self.hold_back(&customer, vec![o], due_ms),
                        None => {
                            self.ctx.holds.came_back(&customer, &first_seen);
                            lanes.push(o, Some(customer));
                        }
                    }
                }
                Origin::Source => match self.ctx.holds.due_now(&customer) {
                    Some(due_ms) => self.hold_back(&customer, vec![o], due_ms),
                    None => lanes.push(o, Some(customer)),
                },
            }
        }
    }

    /// Lets the customers whose batches have their outcomes send their next records, or,
    /// when the batch went to the retry topic, writes those records behind it.
    fn next_turns(&self, lanes: &mut Lanes<Outbound, Customer>) {
        for customer in self.ctx.finished.take() {
            if let Some(due_ms) = self.ctx.holds.due_now(&customer) {
                let waiting = lanes.drain(customer.clone());
                self.hold_back(&customer, waiting, due_ms);
            }
            lanes.done(customer);
        }
    }

    /// Sends `records` of a held `customer` to the retry topic behind its retry, due at
    /// `due_ms`; they hold the customer from now on, so that none of its later records
    /// overtakes them while they are written.
    fn hold_back(&self, customer: &[u8], records: Vec<Outbound>, due_ms: i64) {
        for o in members(records) {
            // Held already, so the hold's retry partition stands.
            let first_seen = FirstSeen::of(&o.item.record);
            self.ctx.holds.add(customer, first_seen, due_ms, None);
            // Closed only when the writer is gone, at shutdown: the record is then left
            // unfinished, to be consumed again.
            let _ = self.held.send((o, due_ms));
        }
    }

    /// A request's worth of batches: from each ready lane the customer's first records,
    /// merged into one batch ([`Outbound::merge`]) when several join; those that cannot be
    /// merged stay first in their lane. Each batch of a customer is its turn ([`Turn`]).
    fn take(&self, lanes: &mut Lanes<Outbound, Customer>) -> Vec<Outbound> {
        let most = self.ctx.pacer.batches_per_request();
        let max_events = self.ctx.max_events_per_batch;
        let batches = lanes.take(most, max_events, |o| o.batch.len(), Outbound::joins);
        let mut bulk = Vec::with_capacity(batches.len());
        for (customer, mut members) in batches {
            let mut lead = members.remove(0);
            if !members.is_empty() {
                if let Err(followers) = lead.merge(members) {
                    lanes.put_back(followers, customer.clone());
                }
            }
            if let Some(customer) = customer {
                let turn = Turn::new(customer, self.ctx.finished.clone());
                for record in lead.records_mut() {
                    record.turn = Some(turn.clone());
                }
            }
            bulk.push(lead);
        }
        bulk
    }
}

/// Writes held records to the retry topic in the order they were held back, each due with
/// the retry it waits behind and with no attempt used.
async fn write_held(ctx: Arc<Context>, mut held: mpsc::UnboundedReceiver<(Outbound, i64)>) {
    while let Some((o, due_ms)) = held.recv().await {
        let item = o.item;
        let failure = Failure {
            kind: ErrorKind::HeldBehind,
            error: "waiting behind an earlier record of the customer, which waits for a retry"
                .to_string(),
            http_status: None,
            http_body: None,
            attempt: item.attempts,
            first_attempt_ms: item.first_attempt_ms,
            last_attempt_ms: None,
            not_before_ms: Some(due_ms),
            later_records: Vec::new(),
        };
        ctx.retry_later(item, failure).await;
    }
}
