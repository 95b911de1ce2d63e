//! Bulk assembly: batches ready to send are gathered into requests of up to 100 batches
//! (fewer when the pace is slow: [`Pacer::batches_per_request`](crate::pacer::Pacer::batches_per_request))
//! and under 256 KB. They arrive in pieces (the source reader sends up to a full request
//! at a time, the retry reader one by one). A request leaves when it is full, or when no
//! further batch arrives within `MPARTICLE_BULK_LINGER`; under load requests fill up
//! without waiting. When more batches wait than a request takes (the rate limit binds),
//! the records of one customer among them are merged into one batch: nothing ever waits
//! in order to be merged.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

use super::Context;
use super::delivery;
use super::outbound::Outbound;
use crate::mparticle::body::array_size;
use crate::mparticle::{MAX_BATCH_BYTES, MAX_BATCHES_PER_BULK, MAX_REQUEST_BYTES};

/// Runs until `pieces` closes and every gathered batch has been handed to a delivery task.
pub(super) async fn assemble(ctx: Arc<Context>, mut pieces: mpsc::Receiver<Vec<Outbound>>) {
    let mut waiting: VecDeque<Outbound> = VecDeque::new();
    loop {
        if waiting.is_empty() {
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
                    let Ok(slot) = ctx.request_slots.clone().acquire_owned().await else {
                        return;
                    };
                    tokio::spawn(delivery::deliver(ctx.clone(), piece, Some(slot)));
                }
                Some(piece) => waiting.extend(piece),
                None => return,
            }
            continue;
        }
        // Waiting for a request slot first lets the request fill while earlier ones run.
        let Ok(slot) = ctx.request_slots.clone().acquire_owned().await else {
            return;
        };
        let most = ctx.pacer.batches_per_request();
        if ctx.max_events_per_batch > 1 && ctx.pacer.binds() {
            // Records wait for the limit anyway: the request is composed when its turn
            // comes, of every piece handed on by then (within the records in flight), and
            // a customer's records among them leave together. (Below the limit nothing is
            // held back to be merged.)
            tokio::select! {
                _ = ctx.shutdown.wait() => return,
                _ = ctx.pacer.next_turn() => {}
            }
            while let Ok(piece) = pieces.try_recv() {
                waiting.extend(piece);
            }
            let bulk = take_merged(&mut waiting, most, ctx.max_events_per_batch);
            tokio::spawn(delivery::deliver(ctx.clone(), bulk, Some(slot)));
            continue;
        }
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
        tokio::spawn(delivery::deliver(ctx.clone(), bulk, Some(slot)));
    }
}

/// Takes a request's worth of batches from `waiting`, a customer's records merged into one
/// batch ([`Outbound::merge`]); those that cannot be merged stay first in `waiting`.
fn take_merged(waiting: &mut VecDeque<Outbound>, most: usize, max_events: usize) -> Vec<Outbound> {
    let groups = group(waiting, most, max_events, Outbound::customer, |o| {
        o.batch.len()
    });
    let mut bulk = Vec::with_capacity(groups.len());
    let mut back = Vec::new();
    for mut group in groups {
        let mut lead = group.remove(0);
        if !group.is_empty() {
            if let Err(followers) = lead.merge(group) {
                back.extend(followers);
            }
        }
        bulk.push(lead);
    }
    for o in back.into_iter().rev() {
        waiting.push_front(o);
    }
    bulk
}

/// Takes from `waiting` the records of up to `most` batches, in order, each record joining
/// the batch of the earlier records with its key (up to `max_events` events, under the
/// batch limit); a record without a key is a batch of its own. Once one of a key's records
/// stays behind, so do its later ones: a customer's events never overtake each other.
fn group<T, K: Hash + Eq>(
    waiting: &mut VecDeque<T>,
    most: usize,
    max_events: usize,
    key: impl Fn(&T) -> Option<K>,
    batch_len: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let most = most.min(MAX_BATCHES_PER_BULK);
    let mut groups: Vec<(Vec<T>, usize)> = Vec::new();
    let mut open: HashMap<K, usize> = HashMap::new();
    let mut held: HashSet<K> = HashSet::new();
    let mut size = array_size([]);
    let mut left = VecDeque::new();
    for next in waiting.drain(..) {
        let len = batch_len(&next);
        let key = key(&next);
        if key.as_ref().is_some_and(|k| held.contains(k)) {
            left.push_back(next);
            continue;
        }
        let joined = key.as_ref().and_then(|k| open.get(k)).copied();
        let fits = |grown: usize| groups.is_empty() || grown < MAX_REQUEST_BYTES;
        match joined {
            Some(g)
                if groups[g].0.len() < max_events
                    && groups[g].1 + len < MAX_BATCH_BYTES
                    && fits(size + len) =>
            {
                groups[g].0.push(next);
                groups[g].1 += len;
                size += len;
            }
            None if groups.len() < most && fits(size + len + 1) => {
                size += len + usize::from(!groups.is_empty());
                if let Some(k) = key {
                    open.insert(k, groups.len());
                }
                groups.push((vec![next], len));
            }
            _ => {
                if let Some(k) = key {
                    held.insert(k);
                }
                left.push_back(next);
            }
        }
    }
    *waiting = left;
    groups.into_iter().map(|(members, _)| members).collect()
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

    /// Groups `(customer, size)` records the way assembly does, returning the customers'
    /// record numbers per batch, and what stays behind.
    fn grouped(
        records: &[(Option<char>, usize)],
        most: usize,
        max_events: usize,
    ) -> (Vec<Vec<usize>>, Vec<usize>) {
        let mut waiting: VecDeque<(usize, Option<char>, usize)> = records
            .iter()
            .enumerate()
            .map(|(i, (c, s))| (i, *c, *s))
            .collect();
        let groups = group(&mut waiting, most, max_events, |r| r.1, |r| r.2);
        let numbers = |rs: &[(usize, Option<char>, usize)]| rs.iter().map(|r| r.0).collect();
        (
            groups.iter().map(|g| numbers(g)).collect(),
            numbers(waiting.make_contiguous()),
        )
    }

    #[test]
    fn a_customers_waiting_records_share_a_batch_in_order() {
        let a = Some('a');
        let b = Some('b');
        let (groups, left) = grouped(&[(a, 10), (b, 10), (a, 10), (None, 10), (a, 10)], 3, 100);
        assert_eq!(groups, [vec![0, 2, 4], vec![1], vec![3]]);
        assert!(left.is_empty());
    }

    #[test]
    fn a_full_batch_holds_the_customers_later_records_back() {
        let a = Some('a');
        let b = Some('b');
        let c = Some('c');
        // Two events a batch: a's third record stays, and so does its fourth, although a
        // batch for it would fit.
        let (groups, left) = grouped(&[(a, 1), (a, 1), (b, 1), (a, 1), (c, 1), (a, 1)], 5, 2);
        assert_eq!(groups, [vec![0, 1], vec![2], vec![4]]);
        assert_eq!(left, [3, 5]);
        // Room for two batches: c's records wait, b's later record joins b's batch.
        let (groups, left) = grouped(&[(a, 1), (b, 1), (c, 1), (b, 1), (c, 1)], 2, 10);
        assert_eq!(groups, [vec![0], vec![1, 3]]);
        assert_eq!(left, [2, 4]);
    }

    #[test]
    fn merged_batches_stay_under_the_limits() {
        let a = Some('a');
        let (groups, left) = grouped(&[(a, 60_000), (a, 60_000), (a, 60_000)], 5, 100);
        assert_eq!(groups, [vec![0, 1]], "under 128 KB a batch");
        assert_eq!(left, [2]);
        let records: Vec<_> = (0..5)
            .map(|i| (Some(char::from(b'a' + i)), 60_000))
            .collect();
        let (groups, left) = grouped(&records, 10, 100);
        assert_eq!(groups.len(), 4, "under 256 KB a request");
        assert_eq!(left, [4]);
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
