//! Bulk assembly: batches ready to send are gathered into requests of up to 100 batches
//! (fewer when the pace is slow: [`Pacer::batches_per_request`](crate::pacer::Pacer::batches_per_request))
//! and under 256 KB. They arrive in pieces (the source reader sends up to a full request
//! at a time, the retry reader one by one). A request leaves when it is full, or when no
//! further batch arrives within `MPARTICLE_BULK_LINGER`; under load requests fill up
//! without waiting. When the rate limit binds, or more batches wait than a request takes,
//! the records of one customer among them are merged into one batch ([`Lanes`]): nothing
//! ever waits in order to be merged.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

use super::Context;
use super::delivery;
use super::lanes::Lanes;
use super::outbound::{Customer, Outbound};
use crate::mparticle::body::array_size;
use crate::mparticle::{MAX_BATCHES_PER_BULK, MAX_REQUEST_BYTES};

/// Runs until `pieces` closes and every gathered batch has been handed to a delivery task.
/// Each request passes the gate and the pacer here, before it is handed on: requests leave
/// in the order they are composed, and whether the limit binds is known when the next one
/// is composed.
pub(super) async fn assemble(ctx: Arc<Context>, mut pieces: mpsc::Receiver<Vec<Outbound>>) {
    let mut waiting: VecDeque<Outbound> = VecDeque::new();
    // While the limit binds (and until they are all sent), records wait here instead.
    let mut lanes: Lanes<Outbound, Customer> = Lanes::new();
    loop {
        if waiting.is_empty() && lanes.is_empty() {
            match pieces.recv().await {
                // A full request on its own (the source reader's pieces under load) goes
                // as it came: moving each 300-byte record into `waiting` and out again
                // showed in profiles.
                Some(piece)
                    if is_full_request(
                        piece.iter().map(|o| o.batch.len()),
                        ctx.pacer.batches_per_request(),
                    ) =>
                {
                    let Some(admitted) = delivery::admit(&ctx).await else {
                        return;
                    };
                    if !hand_on(&ctx, piece, admitted).await {
                        return;
                    }
                }
                Some(piece) => waiting.extend(piece),
                None => return,
            }
            continue;
        }
        let Some(admitted) = delivery::admit(&ctx).await else {
            return;
        };
        let most = ctx.pacer.batches_per_request();
        let queued = waiting.len() > most || !lanes.is_empty();
        let bulk = if ctx.max_events_per_batch > 1 && (queued || ctx.pacer.binds()) {
            // Records wait anyway (for the limit, or more of them than a request takes):
            // the request is composed when its turn at the pacer comes, of every piece
            // handed on by then (within the records in flight), and a customer's records
            // among them leave together. (Otherwise nothing is held back to be merged.)
            tokio::select! {
                _ = ctx.shutdown.wait() => return,
                _ = ctx.pacer.next_turn() => {}
            }
            let arrived = std::iter::from_fn(|| pieces.try_recv().ok()).flatten();
            for o in waiting.drain(..).chain(arrived) {
                let customer = o.customer();
                lanes.push(o, customer);
            }
            let most = ctx.pacer.batches_per_request();
            take_merged(&mut lanes, most, ctx.max_events_per_batch)
        } else {
            let mut bulk = Vec::with_capacity(most.min(waiting.len()));
            let mut size = array_size([]);
            let deadline = Instant::now() + ctx.bulk_linger;
            loop {
                if take_fitting(&mut waiting, &mut bulk, &mut size, most, |o| o.batch.len()) {
                    break;
                }
                match timeout_at(deadline, pieces.recv()).await {
                    Ok(Some(piece)) => waiting.extend(piece),
                    _ => break,
                }
            }
            bulk
        };
        if !hand_on(&ctx, bulk, admitted).await {
            return;
        }
    }
}

/// Waits for the request's turn at the pacer and hands it to a delivery task; false at
/// shutdown.
async fn hand_on(ctx: &Arc<Context>, bulk: Vec<Outbound>, admitted: delivery::Admitted) -> bool {
    let Some(cleared) = delivery::pass_pacer(ctx, admitted, bulk.len()).await else {
        return false;
    };
    tokio::spawn(delivery::deliver(ctx.clone(), bulk, Some(cleared)));
    true
}

/// Takes a request's worth of batches from `lanes`, a customer's waiting records merged
/// into one batch ([`Outbound::merge`]); those that cannot be merged stay first in their
/// lane.
fn take_merged(
    lanes: &mut Lanes<Outbound, Customer>,
    most: usize,
    max_events: usize,
) -> Vec<Outbound> {
    let batches = lanes.take(most, max_events, |o| o.batch.len());
    let mut bulk = Vec::with_capacity(batches.len());
    for mut members in batches {
        let mut lead = members.remove(0);
        if !members.is_empty() {
            if let Err(followers) = lead.merge(members) {
                let customer = lead.customer();
                lanes.put_back(followers, customer);
            }
        }
        bulk.push(lead);
    }
    bulk
}

/// True when a piece of batches of these sizes is one request as [`take_fitting`] fills
/// it: `most` batches (100 at full pace), under the size limit.
fn is_full_request(batch_sizes: impl ExactSizeIterator<Item = usize>, most: usize) -> bool {
    batch_sizes.len() == most.min(MAX_BATCHES_PER_BULK)
        && array_size(batch_sizes) < MAX_REQUEST_BYTES
}

/// Moves batches from `waiting` into `bulk` while they fit, `most` at the most; true once
/// the bulk is full. The first batch always goes in: intake keeps every batch under the
/// request limit.
fn take_fitting<T>(
    waiting: &mut VecDeque<T>,
    bulk: &mut Vec<T>,
    size: &mut usize,
    most: usize,
    batch_len: impl Fn(&T) -> usize,
) -> bool {
    while bulk.len() < most.min(MAX_BATCHES_PER_BULK) {
        let Some(next) = waiting.front() else {
            return false;
        };
        let grown = *size + batch_len(next) + usize::from(!bulk.is_empty());
        if !bulk.is_empty() && grown >= MAX_REQUEST_BYTES {
            return true;
        }
        *size = grown;
        bulk.extend(waiting.pop_front());
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills bulks from `sizes` the way assembly does, returning each bulk's batch sizes.
    fn bulks(sizes: &[usize]) -> Vec<Vec<usize>> {
        let mut waiting: VecDeque<usize> = sizes.iter().copied().collect();
        let mut out = Vec::new();
        while !waiting.is_empty() {
            let (mut bulk, mut size) = (Vec::new(), array_size([]));
            take_fitting(
                &mut waiting,
                &mut bulk,
                &mut size,
                MAX_BATCHES_PER_BULK,
                |s| *s,
            );
            assert_eq!(size, array_size(bulk.iter().copied()));
            out.push(bulk);
        }
        out
    }

    #[test]
    fn a_bulk_holds_at_most_100_batches() {
        let out = bulks(&[500; 250]);
        assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), [100, 100, 50]);
    }

    #[test]
    fn a_bulk_stays_under_the_request_limit() {
        let out = bulks(&[100_000; 5]);
        assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        for bulk in &out {
            assert!(array_size(bulk.iter().copied()) < MAX_REQUEST_BYTES);
        }
    }

    #[test]
    fn a_piece_goes_as_it_came_only_when_assembly_would_send_it_so() {
        for sizes in [
            vec![500; 100],
            vec![2_559; 100],
            vec![2_560; 100],
            vec![500; 99],
        ] {
            let as_assembled = bulks(&sizes);
            let whole = as_assembled.len() == 1 && as_assembled[0].len() == MAX_BATCHES_PER_BULK;
            assert_eq!(
                is_full_request(sizes.iter().copied(), MAX_BATCHES_PER_BULK),
                whole,
                "{}",
                sizes[0]
            );
        }
        assert!(is_full_request([2_549; 100].into_iter(), 100));
        assert!(!is_full_request([2_560; 100].into_iter(), 100));
        assert!(
            !is_full_request([500; 100].into_iter(), 54),
            "over the pace"
        );
        assert!(is_full_request([500; 54].into_iter(), 54));
    }

    #[test]
    fn a_slow_pace_makes_small_bulks() {
        let mut waiting: VecDeque<usize> = [10; 10].into_iter().collect();
        let (mut bulk, mut size) = (Vec::new(), array_size([]));
        assert!(take_fitting(&mut waiting, &mut bulk, &mut size, 4, |s| *s));
        assert_eq!(bulk.len(), 4);
    }

    #[test]
    fn an_unfilled_bulk_waits_for_more() {
        let mut waiting: VecDeque<usize> = [10, 10].into_iter().collect();
        let (mut bulk, mut size) = (Vec::new(), array_size([]));
        assert!(!take_fitting(
            &mut waiting,
            &mut bulk,
            &mut size,
            MAX_BATCHES_PER_BULK,
            |s| *s
        ));
        assert_eq!(bulk, [10, 10]);
    }
}
