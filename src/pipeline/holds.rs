//! Customers held behind a retry. While one of a customer's records waits for another
//! attempt (written to the retry topic, or read back into the retry schedule), the
//! customer's later records must not overtake it: bulk assembly writes them to the retry
//! topic behind it, due with it, with no attempt used. A customer is its records' Kafka
//! key (upstream keys records by customer) within its account: each account has holds of
//! its own. Records without a key are nobody's and are never held.
//!
//! A hold lists the held records by where they were first consumed, so that reading one
//! again (after a restart, or a rebalance) counts it once. It ends when the last of them
//! comes back out of the retry schedule (bulk assembly then keeps them in order), is
//! finished at intake, or has been due for longer than [`STALE_AFTER_MS`] (its retry
//! partition is another replica's to read, and this replica would never see it back).
//! Records back and not yet finished are still listed, for the dead letter of one of the
//! customer's records to name those that go on without it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::kafka::headers::{ORIGINAL_OFFSET, ORIGINAL_PARTITION, ORIGINAL_TOPIC};
use crate::kafka::record::SourceRecord;

/// How long after it was due a held record that has not come back stops holding its
/// customer.
pub const STALE_AFTER_MS: i64 = 60_000;

/// A record back from the retry topic behind an earlier one still waiting is due again no
/// sooner than this.
pub const RECHECK_MS: i64 = 1_000;

/// A customer as bulk assembly keeps it: its records' Kafka key, shared by its lane, its
/// batch's turn and the finished list without a copy each.
pub(crate) type Customer = std::sync::Arc<[u8]>;

/// The customer whose record this is: its Kafka key, when it has a non-empty one.
pub(crate) fn customer_of(record: &SourceRecord) -> Option<&[u8]> {
    record.key().filter(|key| !key.is_empty())
}

/// Where a record was first consumed: the same record however often it is read again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct FirstSeen {
    topic: String,
    partition: i32,
    offset: i64,
}

impl FirstSeen {
    /// The `forwarder-original-*` headers of a retry, or the record's own place.
    pub fn of(record: &SourceRecord) -> FirstSeen {
        let header = |name| record.header_text(name).map(str::trim);
        let number = |name| header(name).and_then(|v| v.parse::<i64>().ok());
        match (
            header(ORIGINAL_TOPIC),
            number(ORIGINAL_PARTITION),
            number(ORIGINAL_OFFSET),
        ) {
            (Some(topic), Some(partition), Some(offset)) => FirstSeen {
                topic: topic.to_string(),
                partition: partition as i32,
                offset,
            },
            _ => FirstSeen {
                topic: record.topic.to_string(),
                partition: record.partition,
                offset: record.offset,
            },
        }
    }
}

impl FirstSeen {
    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }
}

impl std::fmt::Display for FirstSeen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

#[derive(Default)]
struct Hold {
    /// In the retry topic or the retry schedule: these hold the customer.
    waiting: HashSet<FirstSeen>,
    /// Back from the retry schedule and not finished yet: these no longer hold it, but a
    /// dead letter of the customer names them among the records going on without it.
    back: HashSet<FirstSeen>,
    /// When the latest-due of them is due: a record held behind them is due then too.
    due_ms: i64,
    /// The retry partition of the first of them: the records held behind it are written
    /// there too, so that they come back behind it in order, whichever source partition
    /// (of another topic, say) they came from.
    retry_partition: Option<i32>,
}

impl Hold {
    /// Its records have been due for longer than [`STALE_AFTER_MS`] without coming back.
    fn stale(&self, now_ms: i64) -> bool {
        self.due_ms + STALE_AFTER_MS < now_ms
    }
}

/// The held customers of this replica, shared by delivery, the retry reader and bulk
/// assembly.
#[derive(Default)]
pub(crate) struct Holds {
    customers: Mutex<HashMap<Box<[u8]>, Hold>>,
    /// How many customers have an entry, read without the lock on every record.
    entries: AtomicUsize,
}

impl Holds {
    fn lock(&self) -> MutexGuard<'_, HashMap<Box<[u8]>, Hold>> {
        self.customers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the entry of `customer` (if it has one), dropping it once empty.
    fn change(&self, customer: &[u8], change: impl FnOnce(&mut Hold)) {
        if self.is_empty() {
            return;
        }
        let mut customers = self.lock();
        if let Some(hold) = customers.get_mut(customer) {
            change(hold);
            if hold.waiting.is_empty() && hold.back.is_empty() {
                customers.remove(customer);
            }
        }
        self.entries.store(customers.len(), Ordering::Relaxed);
    }

    /// No customer has an entry (the cheap check before each record).
    pub fn is_empty(&self) -> bool {
        self.entries.load(Ordering::Relaxed) == 0
    }

    /// `record` of `customer` waits for a retry due at `due_ms`, on `retry_partition`.
    pub fn add(
        &self,
        customer: &[u8],
        record: FirstSeen,
        due_ms: i64,
        retry_partition: Option<i32>,
    ) {
        let mut customers = self.lock();
        let hold = customers.entry(customer.into()).or_default();
        if hold.waiting.is_empty() {
            hold.retry_partition = retry_partition;
        }
        hold.waiting.insert(record);
        hold.due_ms = hold.due_ms.max(due_ms);
        self.entries.store(customers.len(), Ordering::Relaxed);
    }

    /// `record` of `customer` came back out of the retry schedule: it holds nobody any
    /// more, and is named in the customer's dead letters until it finishes.
    pub fn came_back(&self, customer: &[u8], record: &FirstSeen) {
        self.change(customer, |hold| {
            if hold.waiting.remove(record) {
                hold.back.insert(record.clone());
            }
        });
    }

    /// `record` of `customer`, back from the retry topic, has its outcome.
    pub fn finished(&self, customer: &[u8], record: &FirstSeen) {
        self.change(customer, |hold| {
            hold.back.remove(record);
        });
    }

    /// `record` of `customer` will not come back (finished at intake, or dead-lettered
    /// instead of retried).
    pub fn release(&self, customer: &[u8], record: &FirstSeen) {
        self.change(customer, |hold| {
            hold.waiting.remove(record);
            hold.back.remove(record);
        });
    }

    /// The retry partition that records held behind `customer`'s retries go to, while it
    /// is held.
    pub fn retry_partition(&self, customer: &[u8]) -> Option<i32> {
        if self.is_empty() {
            return None;
        }
        let customers = self.lock();
        let hold = customers.get(customer)?;
        if hold.waiting.is_empty() {
            return None;
        }
        hold.retry_partition
    }

    /// When a record of `customer` held behind the others now would be due, if the
    /// customer is held.
    pub fn due_ms(&self, customer: &[u8], now_ms: i64) -> Option<i64> {
        if self.is_empty() {
            return None;
        }
        let mut customers = self.lock();
        let hold = customers.get_mut(customer)?;
        if hold.waiting.is_empty() {
            return None;
        }
        if hold.stale(now_ms) {
            hold.waiting.clear();
            if hold.back.is_empty() {
                customers.remove(customer);
            }
            self.entries.store(customers.len(), Ordering::Relaxed);
            return None;
        }
        Some(hold.due_ms)
    }

    /// When `record` of `customer`, back from the retry schedule, must wait again: one of
    /// the customer's earlier records (consumed before it from the same partition) still
    /// waits for its retry. (Records held behind one come back due with it, so one that
    /// failed again meanwhile is found here.) It is due with that one, and at least
    /// [`RECHECK_MS`] from now, so that a record waiting behind one that is overdue (not
    /// read back yet) does not go round the retry topic as fast as it can.
    pub fn ahead_due_ms(&self, customer: &[u8], record: &FirstSeen, now_ms: i64) -> Option<i64> {
        if self.is_empty() {
            return None;
        }
        let customers = self.lock();
        let hold = customers.get(customer)?;
        let ahead = hold.waiting.iter().any(|r| {
            r.topic == record.topic && r.partition == record.partition && r.offset < record.offset
        });
        (ahead && !hold.stale(now_ms)).then_some(hold.due_ms.max(now_ms + RECHECK_MS))
    }

    /// [`due_ms`](Self::due_ms) now; the clock is read only while a customer is held.
    pub fn due_now(&self, customer: &[u8]) -> Option<i64> {
        if self.is_empty() {
            return None;
        }
        self.due_ms(customer, crate::clock::unix_ms())
    }

    /// The records of `customer` in the retry path other than `record` (waiting, or back
    /// and not finished), in the order they were first consumed: when `record` is
    /// dead-lettered, they go on without it.
    pub fn others(&self, customer: &[u8], record: &FirstSeen) -> Vec<FirstSeen> {
        let customers = self.lock();
        let mut others: Vec<FirstSeen> = customers
            .get(customer)
            .map(|h| {
                h.waiting
                    .iter()
                    .chain(&h.back)
                    .filter(|r| *r != record)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        others.sort_by(|a, b| {
            (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset))
        });
        others.dedup();
        others
    }

    /// Customers held, and the records holding them (for the gauges).
    pub fn sizes(&self) -> (usize, usize) {
        let customers = self.lock();
        let held = customers.values().filter(|h| !h.waiting.is_empty());
        held.fold((0, 0), |(c, r), h| (c + 1, r + h.waiting.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(offset: i64) -> FirstSeen {
        FirstSeen {
            topic: "t".into(),
            partition: 0,
            offset,
        }
    }

    #[test]
    fn a_customer_is_held_until_each_of_its_records_is_back() {
        let holds = Holds::default();
        assert_eq!(holds.due_ms(b"c1", 0), None);
        holds.add(b"c1", seen(1), 5_000, None);
        holds.add(b"c1", seen(2), 4_000, None);
        // Read again after a restart: still one record.
        holds.add(b"c1", seen(1), 5_000, None);
        assert_eq!(holds.due_ms(b"c1", 0), Some(5_000), "the latest due");
        assert_eq!(holds.due_ms(b"c2", 0), None);
        assert_eq!(holds.sizes(), (1, 2));
        assert_eq!(holds.others(b"c1", &seen(1)), [seen(2)]);
        assert_eq!(seen(2).to_string(), "t/0/2");
        holds.came_back(b"c1", &seen(1));
        assert_eq!(holds.due_ms(b"c1", 0), Some(5_000));
        holds.came_back(b"c1", &seen(2));
        assert_eq!(holds.due_ms(b"c1", 0), None, "both back");
        assert_eq!(holds.sizes(), (0, 0));
        // Back and not finished, they are still named by the customer's dead letters.
        assert_eq!(holds.others(b"c1", &seen(3)), [seen(1), seen(2)]);
        holds.finished(b"c1", &seen(1));
        holds.finished(b"c1", &seen(2));
        assert!(holds.others(b"c1", &seen(3)).is_empty());
        assert!(holds.is_empty());
    }

    #[test]
    fn a_record_retried_again_after_it_came_back_holds_its_customer_again() {
        let holds = Holds::default();
        holds.add(b"c1", seen(1), 1_000, None);
        holds.came_back(b"c1", &seen(1));
        // Failed again: held from before it is written, then finished.
        holds.add(b"c1", seen(1), 2_000, None);
        holds.finished(b"c1", &seen(1));
        assert_eq!(holds.due_ms(b"c1", 0), Some(2_000));
        holds.release(b"c1", &seen(1));
        assert_eq!(holds.due_ms(b"c1", 0), None);
    }

    #[test]
    fn a_record_back_while_an_earlier_one_waits_again_must_wait_too() {
        let holds = Holds::default();
        for offset in 1..=3 {
            holds.add(b"c1", seen(offset), 1_000, None);
        }
        assert_eq!(
            holds.ahead_due_ms(b"c1", &seen(1), 0),
            None,
            "the first goes"
        );
        holds.came_back(b"c1", &seen(1));
        assert_eq!(
            holds.ahead_due_ms(b"c1", &seen(2), 0),
            None,
            "so does the next"
        );
        holds.came_back(b"c1", &seen(2));
        // The first failed again before the third came back.
        holds.add(b"c1", seen(1), 9_000, None);
        assert_eq!(holds.ahead_due_ms(b"c1", &seen(3), 0), Some(9_000));
        assert_eq!(
            holds.ahead_due_ms(b"c1", &seen(3), 9_500),
            Some(9_500 + RECHECK_MS),
            "overdue: not at once"
        );
        assert_eq!(
            holds.ahead_due_ms(b"c1", &seen(3), 9_001 + STALE_AFTER_MS),
            None
        );
    }

    #[test]
    fn a_hold_whose_records_never_come_back_ends() {
        let holds = Holds::default();
        holds.add(b"c1", seen(1), 1_000, None);
        assert!(holds.due_ms(b"c1", 1_000 + STALE_AFTER_MS).is_some());
        assert!(holds.due_ms(b"c1", 1_001 + STALE_AFTER_MS).is_none());
        assert_eq!(holds.sizes(), (0, 0));
    }

    #[test]
    fn a_retry_is_known_by_where_it_was_first_consumed() {
        use crate::kafka::topic::Topic;
        let header = |k: &str, v: &str| (k.into(), Some(v.as_bytes().to_vec()));
        let retry = SourceRecord::new(
            Topic::named("forwarder.retry"),
            3,
            7,
            None,
            Some(b"c1".to_vec()),
            None,
            vec![
                header(ORIGINAL_TOPIC, "loyalty"),
                header(ORIGINAL_PARTITION, "2"),
                header(ORIGINAL_OFFSET, "41"),
            ],
        );
        assert_eq!(
            FirstSeen::of(&retry),
            FirstSeen {
                topic: "loyalty".into(),
                partition: 2,
                offset: 41
            }
        );
    }

    #[test]
    fn records_held_behind_go_to_the_retry_partition_of_the_first_retry() {
        let holds = Holds::default();
        assert_eq!(holds.retry_partition(b"c1"), None);
        holds.add(b"c1", seen(1), 1_000, Some(4));
        // Another topic's record of the customer, held behind it.
        holds.add(b"c1", seen(2), 1_000, Some(1));
        assert_eq!(holds.retry_partition(b"c1"), Some(4));
        holds.came_back(b"c1", &seen(1));
        holds.came_back(b"c1", &seen(2));
        assert_eq!(holds.retry_partition(b"c1"), None, "held no more");
        holds.add(b"c1", seen(2), 2_000, Some(1));
        assert_eq!(holds.retry_partition(b"c1"), Some(1));
    }
}
