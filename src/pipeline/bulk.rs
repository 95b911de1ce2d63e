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
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout_at};

use super::delivery;
use super::holds::{Customer, FirstSeen, Holds};
use super::lanes::{Finished, Lanes, Turn};
use super::outbound::{Outbound, members};
use super::parking::{self, Parked};
use super::{Context, Origin};
use crate::accounts::AccountId;
use crate::accounts::live::Account;
use crate::clock::unix_ms;
use crate::kafka::headers::Failure;
use crate::outcome::ErrorKind;

/// Runs until `pieces` closes and every record of `account` handed on has been handed to
/// a delivery task (or written to the retry topic behind its customer's retry).
///
/// When several accounts share the process, it keeps taking pieces in while its account
/// waits for its gate or its pacer, so that a stopped or rate-limited account never stops
/// the readers; what that account cannot keep in memory is parked in the retry topic
/// ([`Assembly::parks`]).
pub(super) async fn assemble(
    ctx: Arc<Context>,
    account: AccountId,
    mut pieces: mpsc::Receiver<Vec<Outbound>>,
) {
    let mut lanes: Lanes<Outbound, Customer> = Lanes::new();
    // Records held behind a retry are written one after another, in order.
    let (held_tx, held_rx) = mpsc::unbounded_channel();
    tokio::spawn(write_held(ctx.clone(), held_rx));
    let finished = Arc::new(Finished::default());
    let assembly = Assembly {
        ctx: &ctx,
        account: ctx.accounts.get(account),
        holds: ctx.holds(account),
        shared: ctx.accounts.are_shared(),
        held: held_tx,
        finished: finished.clone(),
    };
    let pacer = &assembly.account.pacer;
    let mut open = true;
    loop {
        assembly.next_turns(&mut lanes);
        assembly.park_waiting(&mut lanes);
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
                _ = finished.wait() => {}
                _ = sleep(LOOK_AGAIN), if assembly.shared && !lanes.is_empty() => {}
            }
            continue;
        }
        let admitted = tokio::select! {
            _ = ctx.shutdown.wait() => return,
            admitted = delivery::admit(assembly.account) => match admitted {
                Some(admitted) => admitted,
                None => return,
            },
            piece = pieces.recv(), if open && assembly.shared => {
                match piece {
                    Some(piece) => assembly.line_up(&mut lanes, piece),
                    None => open = false,
                }
                continue;
            }
            // The waiting records may have to park: memory may be short by now.
            _ = sleep(LOOK_AGAIN), if assembly.shared => continue,
        };
        if pacer.binds() {
            // Records wait anyway: the request is composed when its turn at the pacer
            // comes, so that what arrives meanwhile joins it.
            loop {
                tokio::select! {
                    _ = ctx.shutdown.wait() => return,
                    _ = pacer.next_turn() => break,
                    piece = pieces.recv(), if open && assembly.shared => match piece {
                        Some(piece) => assembly.line_up(&mut lanes, piece),
                        None => open = false,
                    },
                    _ = sleep(LOOK_AGAIN), if assembly.shared => assembly.park_waiting(&mut lanes),
                }
            }
        } else {
            let deadline = Instant::now() + ctx.bulk_linger;
            while open && lanes.ready() < pacer.batches_per_request() {
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
        if assembly.shared {
            // The delivery task waits for the pacer, so that this account's pieces keep
            // being taken in meanwhile.
            let passed = delivery::Passed::Admitted(admitted);
            tokio::spawn(delivery::deliver(ctx.clone(), bulk, passed));
            continue;
        }
        let Some(cleared) = delivery::pass_pacer(&ctx, pacer, admitted, bulk.len()).await else {
            return;
        };
        let passed = delivery::Passed::Cleared(cleared);
        tokio::spawn(delivery::deliver(ctx.clone(), bulk, passed));
    }
}

struct Assembly<'a> {
    ctx: &'a Arc<Context>,
    account: &'a Account,
    /// Its account's customers held behind a retry.
    holds: &'a Holds,
    /// Several accounts share the process.
    shared: bool,
    held: mpsc::UnboundedSender<(Outbound, Waits)>,
    /// Customers of this account whose batch under way has its outcome.
    finished: Arc<Finished>,
}

/// Why a record goes to the retry topic without using an attempt, and until when.
#[derive(Clone, Copy)]
enum Waits {
    /// Behind its customer's retry, due with it.
    Behind { due_ms: i64 },
    /// Its account cannot send and memory is short ([`parking`]).
    Parked(Parked),
}

impl Waits {
    fn due_ms(self) -> i64 {
        match self {
            Waits::Behind { due_ms } | Waits::Parked(Parked { due_ms, .. }) => due_ms,
        }
    }
}

/// How often an assembly waiting for its account's gate or pacer, with several accounts
/// in the process, looks whether its waiting records must park.
const LOOK_AGAIN: Duration = Duration::from_millis(250);

impl Assembly<'_> {
    /// Puts each record of `piece` in its customer's lane, or, while the customer is held
    /// behind a retry, on its way to the retry topic behind it.
    fn line_up(&self, lanes: &mut Lanes<Outbound, Customer>, piece: Vec<Outbound>) {
        for o in piece {
            let Some(customer) = o.customer() else {
                match self.parks(o.item.origin) {
                    Some(waits) => self.send_on(vec![o], waits),
                    None => lanes.push(o, None),
                }
                continue;
            };
            match o.item.origin {
                // Back from the retry topic: it holds its customer no longer, and its
                // lane keeps it in order from here; unless an earlier record of the
                // customer failed again meanwhile, which it then waits behind again.
                Origin::Retries => {
                    let first_seen = FirstSeen::of(&o.item.record);
                    match self.holds.ahead_due_ms(&customer, &first_seen, unix_ms()) {
                        Some(due_ms) => self.hold_back(&customer, vec![o], due_ms),
                        None => {
                            self.holds.came_back(&customer, &first_seen);
                            self.push_or_park(lanes, o, customer);
                        }
                    }
                }
                Origin::Source => match self.holds.due_now(&customer) {
                    Some(due_ms) => self.hold_back(&customer, vec![o], due_ms),
                    None => self.push_or_park(lanes, o, customer),
                },
            }
        }
    }

    /// Queues a record of a customer not held in its lane, unless it parks.
    fn push_or_park(&self, lanes: &mut Lanes<Outbound, Customer>, o: Outbound, customer: Customer) {
        match self.parks(o.item.origin) {
            Some(waits) => self.park(&customer, vec![o], waits),
            None => lanes.push(o, Some(customer)),
        }
    }

    /// Whether a record of `origin` parks in the retry topic ([`parking`](super::parking)).
    fn parks(&self, origin: Origin) -> Option<Waits> {
        if !self.shared {
            return None;
        }
        parking::parks(self.ctx, self.account, origin).map(Waits::Parked)
    }

    /// Parks every record waiting in the lanes while the account cannot send and memory
    /// is short ([`parks`](Self::parks)): records that came in before it stopped must not
    /// keep the readers from the other accounts' records.
    fn park_waiting(&self, lanes: &mut Lanes<Outbound, Customer>) {
        if !self.shared || lanes.is_empty() {
            return;
        }
        let Some(waits) = self
            .parks(Origin::Source)
            .or_else(|| self.parks(Origin::Retries))
        else {
            return;
        };
        for (customer, records) in lanes.drain_all() {
            match customer {
                Some(customer) => self.park(&customer, records, waits),
                None => self.send_on(records, waits),
            }
        }
    }

    /// Parks `records` of `customer` (in order) in the retry topic; the first holds the
    /// customer from now on, so that its later records wait behind it.
    fn park(&self, customer: &[u8], records: Vec<Outbound>, waits: Waits) {
        for o in members(records) {
            let first_seen = FirstSeen::of(&o.item.record);
            let partition = self.holds.retry_partition(customer).or_else(|| {
                self.ctx
                    .retry_partitions
                    .of(first_seen.topic(), first_seen.partition())
            });
            self.holds
                .add(customer, first_seen, waits.due_ms(), partition);
            let _ = self.held.send((o, waits));
        }
    }

    /// Sends records to the retry topic as they are, in order.
    fn send_on(&self, records: Vec<Outbound>, waits: Waits) {
        for o in members(records) {
            let _ = self.held.send((o, waits));
        }
    }

    /// Lets the customers whose batches have their outcomes send their next records, or,
    /// when the batch went to the retry topic, writes those records behind it.
    fn next_turns(&self, lanes: &mut Lanes<Outbound, Customer>) {
        for customer in self.finished.take() {
            if let Some(due_ms) = self.holds.due_now(&customer) {
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
            self.holds.add(customer, first_seen, due_ms, None);
            // Closed only when the writer is gone, at shutdown: the record is then left
            // unfinished, to be consumed again.
            let _ = self.held.send((o, Waits::Behind { due_ms }));
        }
    }

    /// A request's worth of batches: from each ready lane the customer's first records,
    /// merged into one batch ([`Outbound::merge`]) when several join; those that cannot be
    /// merged stay first in their lane. Each batch of a customer is its turn ([`Turn`]).
    fn take(&self, lanes: &mut Lanes<Outbound, Customer>) -> Vec<Outbound> {
        let most = self.account.pacer.batches_per_request();
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
                let turn = Turn::new(customer, self.finished.clone());
                for record in lead.records_mut() {
                    record.turn = Some(turn.clone());
                }
            }
            bulk.push(lead);
        }
        bulk
    }
}

/// Writes held and parked records to the retry topic in the order they were held back,
/// each due with the retry it waits behind (or when its account may send again) and with
/// no attempt used.
async fn write_held(ctx: Arc<Context>, mut held: mpsc::UnboundedReceiver<(Outbound, Waits)>) {
    while let Some((o, waits)) = held.recv().await {
        let item = o.item;
        let (kind, error) = match waits {
            Waits::Behind { .. } => (
                ErrorKind::HeldBehind,
                "waiting behind an earlier record of the customer, which waits for a retry"
                    .to_string(),
            ),
            Waits::Parked(parked) => (
                ErrorKind::AccountStopped,
                parking::reason(
                    ctx.accounts.get(item.account.unwrap_or_default()),
                    parked.why,
                ),
            ),
        };
        let (attempt, first_attempt_ms) = (item.attempts, item.first_attempt_ms);
        let failure = Failure::waiting(kind, error, attempt, first_attempt_ms, waits.due_ms());
        ctx.retry_later(item, failure).await;
    }
}
