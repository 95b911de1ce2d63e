//! Records waiting for a request (while the rate limit binds, or more wait than a request
//! takes), in a lane per customer: a
//! request takes the first lanes in the order of their oldest record, and from each as
//! many of its records as one batch holds. Adding a record and taking one cost the same
//! however many wait, so the queue can reach as far as the records in flight.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use crate::mparticle::body::array_size;
use crate::mparticle::{MAX_BATCH_BYTES, MAX_BATCHES_PER_BULK, MAX_REQUEST_BYTES};

/// A lane: one customer's records, or a record nobody's (a batch without identities).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Lane<K> {
    Customer(K),
    Alone(u64),
}

pub(super) struct Lanes<T, K> {
    records: HashMap<Lane<K>, VecDeque<T>>,
    /// The lanes that hold records, in the order of their oldest.
    order: VecDeque<Lane<K>>,
    alone: u64,
}

impl<T, K: Hash + Eq + Clone> Lanes<T, K> {
    pub fn new() -> Self {
        Lanes {
            records: HashMap::new(),
            order: VecDeque::new(),
            alone: 0,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.records.values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Queues a record of `customer` (`None`: a lane of its own) behind the customer's others.
    pub fn push(&mut self, record: T, customer: Option<K>) {
        let lane = match customer {
            Some(k) => Lane::Customer(k),
            None => {
                self.alone += 1;
                Lane::Alone(self.alone)
            }
        };
        let records = self.records.entry(lane.clone()).or_default();
        if records.is_empty() {
            self.order.push_back(lane);
        }
        records.push_back(record);
    }

    /// Puts `records` (taken last, in order) back first in their lane.
    pub fn put_back(&mut self, records: Vec<T>, customer: Option<K>) {
        let Some(k) = customer else {
            for record in records {
                self.push(record, None);
            }
            return;
        };
        let lane = Lane::Customer(k);
        let queue = self.records.entry(lane.clone()).or_default();
        if queue.is_empty() {
            self.order.push_front(lane);
        }
        for record in records.into_iter().rev() {
            queue.push_front(record);
        }
    }

    /// The records of up to `most` batches, a lane's first records in each (up to
    /// `max_events`, under the batch limit), the request under its limit. A lane with
    /// records left keeps its place at the front.
    pub fn take(
        &mut self,
        most: usize,
        max_events: usize,
        batch_len: impl Fn(&T) -> usize,
    ) -> Vec<Vec<T>> {
        let mut batches = Vec::new();
        let mut size = array_size([]);
        let mut kept = Vec::new();
        while batches.len() < most.min(MAX_BATCHES_PER_BULK) {
            let Some(lane) = self.order.front() else {
                break;
            };
            let records = self.records.get_mut(lane).expect("a listed lane");
            let first = batch_len(records.front().expect("a lane holds a record"));
            let comma = usize::from(!batches.is_empty());
            if !batches.is_empty() && size + comma + first >= MAX_REQUEST_BYTES {
                break;
            }
            size += comma;
            let (mut batch, mut batch_size) = (Vec::new(), 0);
            while let Some(next) = records.front() {
                let len = batch_len(next);
                let fits = batch.is_empty()
                    || (batch.len() < max_events
                        && batch_size + len < MAX_BATCH_BYTES
                        && size + len < MAX_REQUEST_BYTES);
                if !fits {
                    break;
                }
                batch_size += len;
                size += len;
                batch.extend(records.pop_front());
            }
            let lane = self.order.pop_front().expect("the front lane");
            if self.records[&lane].is_empty() {
                self.records.remove(&lane);
            } else {
                kept.push(lane);
            }
            batches.push(batch);
        }
        for lane in kept.into_iter().rev() {
            self.order.push_front(lane);
        }
        batches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes from lanes filled with `(customer, size)` records, returning the records'
    /// numbers per batch and how many still wait.
    fn taken(
        records: &[(Option<char>, usize)],
        most: usize,
        max_events: usize,
    ) -> (Vec<Vec<usize>>, usize) {
        let mut lanes = Lanes::new();
        for (i, (customer, size)) in records.iter().enumerate() {
            lanes.push((i, *size), *customer);
        }
        let batches = lanes.take(most, max_events, |r| r.1);
        let numbers = batches
            .iter()
            .map(|b| b.iter().map(|r| r.0).collect())
            .collect();
        (numbers, lanes.len())
    }

    #[test]
    fn a_customers_waiting_records_share_a_batch_in_order() {
        let (a, b) = (Some('a'), Some('b'));
        let records = [(a, 10), (b, 10), (a, 10), (None, 10), (a, 10), (None, 10)];
        let (batches, left) = taken(&records, 3, 100);
        assert_eq!(batches, [vec![0, 2, 4], vec![1], vec![3]]);
        assert_eq!(left, 1);
    }

    #[test]
    fn a_full_batch_leaves_the_customers_later_records_first_in_line() {
        let (a, b, c) = (Some('a'), Some('b'), Some('c'));
        let records = [(a, 1), (a, 1), (b, 1), (a, 1), (c, 1), (a, 1)];
        let mut lanes = Lanes::new();
        for (i, (customer, size)) in records.iter().enumerate() {
            lanes.push((i, *size), *customer);
        }
        let numbers = |batches: Vec<Vec<(usize, usize)>>| -> Vec<Vec<usize>> {
            batches
                .iter()
                .map(|b| b.iter().map(|r| r.0).collect())
                .collect()
        };
        assert_eq!(numbers(lanes.take(2, 2, |r| r.1)), [vec![0, 1], vec![2]]);
        let mut taken = lanes.take(2, 2, |r| r.1);
        assert_eq!(numbers(taken.clone()), [vec![3, 5], vec![4]]);
        // Given back, a's records are first again.
        lanes.put_back(taken.remove(0), a);
        assert_eq!(numbers(lanes.take(1, 2, |r| r.1)), [vec![3, 5]]);
        assert!(lanes.is_empty());
    }

    #[test]
    fn merged_batches_stay_under_the_limits() {
        let a = Some('a');
        let (batches, left) = taken(&[(a, 60_000), (a, 60_000), (a, 60_000)], 5, 100);
        assert_eq!(batches, [vec![0, 1]], "under 128 KB a batch");
        assert_eq!(left, 1);
        let records: Vec<_> = (0..5)
            .map(|i| (Some(char::from(b'a' + i)), 60_000))
            .collect();
        let (batches, left) = taken(&records, 10, 100);
        assert_eq!(batches.len(), 4, "under 256 KB a request");
        assert_eq!(left, 1);
    }
}
