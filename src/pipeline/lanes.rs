//! Records waiting for a request, in a lane per customer. A customer has at most one
//! batch under way: its later records wait in its lane until that batch's records have
//! their outcomes ([`Lanes::done`]), so that they reach mParticle in order. A request
//! takes the first ready lanes in the order of their oldest record, and from each as many
//! of its first records as one batch holds. Adding a record and taking one cost the same
//! however many wait, so the queue can reach as far as the records in flight.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::holds::Customer;

use crate::mparticle::body::array_size;
use crate::mparticle::{MAX_BATCH_BYTES, MAX_BATCHES_PER_BULK, MAX_REQUEST_BYTES};

/// A lane: one customer's records, or a record nobody's (without a customer).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Lane<K> {
    Customer(K),
    Alone(u64),
}

pub(super) struct Lanes<T, K> {
    records: HashMap<Lane<K>, VecDeque<T>>,
    /// The lanes that hold records and may send, in the order of their oldest.
    order: VecDeque<Lane<K>>,
    /// Customers with a batch under way.
    busy: HashSet<K>,
    alone: u64,
}

impl<T, K: Hash + Eq + Clone> Lanes<T, K> {
    pub fn new() -> Self {
        Lanes {
            records: HashMap::new(),
            order: VecDeque::new(),
            busy: HashSet::new(),
            alone: 0,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.records.values().map(VecDeque::len).sum()
    }

    /// No record waits.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// How many lanes could send now.
    pub fn ready(&self) -> usize {
        self.order.len()
    }

    fn sends(&self, lane: &Lane<K>) -> bool {
        match lane {
            Lane::Customer(k) => !self.busy.contains(k),
            Lane::Alone(_) => true,
        }
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
        let was_empty = records.is_empty();
        records.push_back(record);
        if was_empty && self.sends(&lane) {
            self.order.push_back(lane);
        }
    }

    /// Puts `records` (taken last, in order, and not sent) back first in their lane.
    pub fn put_back(&mut self, records: Vec<T>, customer: Option<K>) {
        let Some(k) = customer else {
            for record in records {
                self.push(record, None);
            }
            return;
        };
        let lane = Lane::Customer(k);
        let queue = self.records.entry(lane.clone()).or_default();
        let was_empty = queue.is_empty();
        for record in records.into_iter().rev() {
            queue.push_front(record);
        }
        if was_empty && self.sends(&lane) {
            self.order.push_front(lane);
        }
    }

    /// The batch of `customer` taken last has its outcome: its next records may go.
    pub fn done(&mut self, customer: K) {
        self.busy.remove(&customer);
        let lane = Lane::Customer(customer);
        if self.records.contains_key(&lane) {
            self.order.push_back(lane);
        }
    }

    /// Takes every record waiting in the lane of `customer`, whose batch is under way.
    pub fn drain(&mut self, customer: K) -> Vec<T> {
        debug_assert!(self.busy.contains(&customer));
        self.records
            .remove(&Lane::Customer(customer))
            .map_or_else(Vec::new, Vec::from)
    }

    /// Takes every record waiting, by lane, each lane's in order; customers with a batch
    /// under way stay busy until [`done`](Self::done).
    pub fn drain_all(&mut self) -> Vec<(Option<K>, Vec<T>)> {
        self.order.clear();
        self.records
            .drain()
            .map(|(lane, records)| {
                let customer = match lane {
                    Lane::Customer(k) => Some(k),
                    Lane::Alone(_) => None,
                };
                (customer, Vec::from(records))
            })
            .collect()
    }

    /// The records of up to `most` batches, each with its customer: from each ready lane
    /// its first records, as long as `joins` the first and under the batch limit (up to
    /// `max_events`), the request under its limit. A customer's lane is then busy until
    /// [`done`](Self::done).
    pub fn take(
        &mut self,
        most: usize,
        max_events: usize,
        batch_len: impl Fn(&T) -> usize,
        joins: impl Fn(&T, &T) -> bool,
    ) -> Vec<(Option<K>, Vec<T>)> {
        let mut batches = Vec::new();
        let mut size = array_size([]);
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
            let (mut batch, mut batch_size): (Vec<T>, usize) = (Vec::new(), 0);
            while let Some(next) = records.front() {
                let len = batch_len(next);
                let fits = batch.is_empty()
                    || (batch.len() < max_events
                        && joins(&batch[0], next)
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
            }
            let customer = match lane {
                Lane::Customer(k) => {
                    self.busy.insert(k.clone());
                    Some(k)
                }
                Lane::Alone(_) => None,
            };
            batches.push((customer, batch));
        }
        batches
    }
}

/// The customers whose batches have their outcomes, for bulk assembly to collect.
#[derive(Default)]
pub(crate) struct Finished {
    customers: Mutex<Vec<Customer>>,
    notify: Notify,
}

impl Finished {
    pub fn take(&self) -> Vec<Customer> {
        std::mem::take(&mut *self.customers.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Waits until a customer's batch has its outcome (at once if one had since the last
    /// wait).
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

/// A customer's batch under way, shared by its records: when the last of them has its
/// outcome (and is dropped), bulk assembly learns that the customer's next records may go.
pub(crate) struct Turn {
    customer: Customer,
    finished: Arc<Finished>,
}

impl Turn {
    pub fn new(customer: Customer, finished: Arc<Finished>) -> Arc<Turn> {
        Arc::new(Turn { customer, finished })
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let customer = self.customer.clone();
        self.finished
            .customers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(customer);
        self.finished.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Record = (usize, usize);

    fn filled(records: &[(Option<char>, usize)]) -> Lanes<Record, char> {
        let mut lanes = Lanes::new();
        for (i, (customer, size)) in records.iter().enumerate() {
            lanes.push((i, *size), *customer);
        }
        lanes
    }

    /// The records' numbers per batch of a request taken from `lanes`.
    fn take(lanes: &mut Lanes<Record, char>, most: usize, max_events: usize) -> Vec<Vec<usize>> {
        numbers(&lanes.take(most, max_events, |r| r.1, |_, _| true))
    }

    fn numbers(batches: &[(Option<char>, Vec<Record>)]) -> Vec<Vec<usize>> {
        batches
            .iter()
            .map(|(_, b)| b.iter().map(|r| r.0).collect())
            .collect()
    }

    #[test]
    fn a_customers_waiting_records_share_a_batch_in_order() {
        let (a, b) = (Some('a'), Some('b'));
        let mut lanes = filled(&[(a, 10), (b, 10), (a, 10), (None, 10), (a, 10), (None, 10)]);
        assert_eq!(take(&mut lanes, 3, 100), [vec![0, 2, 4], vec![1], vec![3]]);
        assert_eq!(lanes.len(), 1);
    }

    #[test]
    fn a_customers_later_records_wait_until_its_batch_is_done() {
        let (a, b, c) = (Some('a'), Some('b'), Some('c'));
        let mut lanes = filled(&[(a, 1), (a, 1), (b, 1), (a, 1), (c, 1), (a, 1)]);
        assert_eq!(take(&mut lanes, 2, 2), [vec![0, 1], vec![2]]);
        assert_eq!(take(&mut lanes, 2, 2), [vec![4]], "a's batch is under way");
        lanes.push((6, 1), b);
        assert_eq!(
            take(&mut lanes, 2, 2),
            Vec::<Vec<usize>>::new(),
            "so is b's"
        );
        lanes.done('a');
        lanes.done('b');
        let mut taken = lanes.take(2, 2, |r| r.1, |_, _| true);
        assert_eq!(numbers(&taken), [vec![3, 5], vec![6]]);
        // Given back unsent, a's records are first again once its batch is done.
        lanes.put_back(taken.remove(0).1, a);
        assert_eq!(take(&mut lanes, 1, 2), Vec::<Vec<usize>>::new());
        lanes.done('a');
        assert_eq!(take(&mut lanes, 1, 2), [vec![3, 5]]);
        lanes.done('a');
        assert!(lanes.is_empty());
        assert_eq!(lanes.ready(), 0);
    }

    #[test]
    fn only_records_that_join_the_first_share_its_batch() {
        let a = Some('a');
        let mut lanes = filled(&[(a, 1), (a, 2), (a, 1)]);
        let joins = |first: &Record, next: &Record| first.1 == next.1;
        assert_eq!(numbers(&lanes.take(5, 100, |r| r.1, joins)), [vec![0]]);
        lanes.done('a');
        assert_eq!(numbers(&lanes.take(5, 100, |r| r.1, joins)), [vec![1]]);
    }

    #[test]
    fn a_busy_customers_waiting_records_can_be_drained() {
        let a = Some('a');
        let mut lanes = filled(&[(a, 1), (a, 1), (a, 1)]);
        assert_eq!(take(&mut lanes, 1, 1), [vec![0]]);
        let drained: Vec<usize> = lanes.drain('a').iter().map(|r| r.0).collect();
        assert_eq!(drained, [1, 2]);
        lanes.done('a');
        assert!(lanes.is_empty());
        assert_eq!(lanes.ready(), 0);
    }

    #[test]
    fn every_waiting_record_can_be_drained_in_its_lanes_order() {
        let (a, b) = (Some('a'), Some('b'));
        let mut lanes = filled(&[(a, 1), (b, 1), (a, 1), (None, 1), (a, 1)]);
        assert_eq!(take(&mut lanes, 1, 1), [vec![0]]);
        let mut drained: Vec<(Option<char>, Vec<usize>)> = lanes
            .drain_all()
            .into_iter()
            .map(|(k, records)| (k, records.iter().map(|r| r.0).collect()))
            .collect();
        drained.sort();
        assert_eq!(drained, [(None, vec![3]), (a, vec![2, 4]), (b, vec![1])]);
        assert_eq!(lanes.ready(), 0);
        lanes.push((5, 1), a);
        assert_eq!(lanes.ready(), 0, "a's batch is still under way");
        lanes.done('a');
        assert_eq!(take(&mut lanes, 1, 1), [vec![5]]);
    }

    /// Customers `0..n`, a record each of `size` bytes.
    fn one_each(n: usize, size: usize) -> Lanes<Record, char> {
        let records: Vec<_> = (0..n)
            .map(|i| (char::from_u32(0x100 + i as u32), size))
            .collect();
        filled(&records)
    }

    #[test]
    fn a_request_holds_at_most_100_batches_and_fewer_at_a_slow_pace() {
        let mut lanes = one_each(250, 500);
        let sizes: Vec<usize> = (0..3).map(|_| take(&mut lanes, 1_000, 1).len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let mut lanes = one_each(10, 10);
        assert_eq!(take(&mut lanes, 4, 1).len(), 4);
    }

    #[test]
    fn a_request_stays_under_the_request_limit() {
        let mut lanes = one_each(5, 100_000);
        let sizes: Vec<usize> = (0..3).map(|_| take(&mut lanes, 100, 1).len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
    }

    #[test]
    fn merged_batches_stay_under_the_limits() {
        let a = Some('a');
        let mut lanes = filled(&[(a, 60_000), (a, 60_000), (a, 60_000)]);
        assert_eq!(
            take(&mut lanes, 5, 100),
            [vec![0, 1]],
            "under 128 KB a batch"
        );
        assert_eq!(lanes.len(), 1);
        let records: Vec<_> = (0..5)
            .map(|i| (Some(char::from(b'a' + i)), 60_000))
            .collect();
        let mut lanes = filled(&records);
        assert_eq!(take(&mut lanes, 10, 100).len(), 4, "under 256 KB a request");
        assert_eq!(lanes.len(), 1);
    }
}
