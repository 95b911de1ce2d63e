//! Customers held behind a retry. While one of a customer's records waits for another
//! attempt (written to the retry topic, or read back into the retry schedule), the
//! customer's later records must not overtake it: bulk assembly writes them to the retry
//! topic behind it, due with it, with no attempt used. A customer is its records' Kafka
//! key (upstream keys records by customer); records without a key are nobody's and are
//! never held.
//!
//! A hold lists the held records by where they were first consumed, so that reading one
//! again (after a restart, or a rebalance) counts it once. It ends when the last of them
//! comes back out of the retry schedule (bulk assembly then keeps them in order), is
//! finished at intake, or has been due for longer than [`STALE_AFTER`] (its retry
//! partition is another replica's to read, and this replica would never see it back).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::kafka::headers::{ORIGINAL_OFFSET, ORIGINAL_PARTITION, ORIGINAL_TOPIC};
use crate::kafka::record::SourceRecord;

/// How long after it was due a held record that has not come back stops holding its
/// customer.
pub const STALE_AFTER_MS: i64 = 60_000;

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

struct Hold {
    records: HashSet<FirstSeen>,
    /// When the latest-due of them is due: a record held behind them is due then too.
    due_ms: i64,
}

/// The held customers of this replica, shared by delivery, the retry reader and bulk
/// assembly.
#[derive(Default)]
pub(crate) struct Holds {
    customers: Mutex<HashMap<Box<[u8]>, Hold>>,
    /// How many customers are held, read without the lock on every record.
    held: AtomicUsize,
}

impl Holds {
    fn lock(&self) -> MutexGuard<'_, HashMap<Box<[u8]>, Hold>> {
        self.customers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, customers: &HashMap<Box<[u8]>, Hold>) {
        self.held.store(customers.len(), Ordering::Relaxed);
    }

    /// `record` of `customer` waits for a retry due at `due_ms`.
    pub fn add(&self, customer: &[u8], record: FirstSeen, due_ms: i64) {
        let mut customers = self.lock();
        let hold = customers.entry(customer.into()).or_insert_with(|| Hold {
            records: HashSet::new(),
            due_ms,
        });
        hold.records.insert(record);
        hold.due_ms = hold.due_ms.max(due_ms);
        self.count(&customers);
    }

    /// `record` of `customer` came back (or was finished): it holds nobody any more.
    pub fn release(&self, customer: &[u8], record: &FirstSeen) {
        if self.held.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut customers = self.lock();
        if let Some(hold) = customers.get_mut(customer) {
            hold.records.remove(record);
            if hold.records.is_empty() {
                customers.remove(customer);
            }
        }
        self.count(&customers);
    }

    /// When a record of `customer` held behind the others now would be due, if the
    /// customer is held.
    pub fn due_ms(&self, customer: &[u8], now_ms: i64) -> Option<i64> {
        if self.held.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut customers = self.lock();
        let due_ms = customers.get(customer)?.due_ms;
        if due_ms + STALE_AFTER_MS < now_ms {
            customers.remove(customer);
            self.count(&customers);
            return None;
        }
        Some(due_ms)
    }

    /// Customers held, and the records holding them (for the gauges).
    pub fn sizes(&self) -> (usize, usize) {
        let customers = self.lock();
        let records = customers.values().map(|h| h.records.len()).sum();
        (customers.len(), records)
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
        holds.add(b"c1", seen(1), 5_000);
        holds.add(b"c1", seen(2), 4_000);
        // Read again after a restart: still one record.
        holds.add(b"c1", seen(1), 5_000);
        assert_eq!(holds.due_ms(b"c1", 0), Some(5_000), "the latest due");
        assert_eq!(holds.due_ms(b"c2", 0), None);
        assert_eq!(holds.sizes(), (1, 2));
        holds.release(b"c1", &seen(1));
        assert_eq!(holds.due_ms(b"c1", 0), Some(5_000));
        holds.release(b"c1", &seen(2));
        assert_eq!(holds.due_ms(b"c1", 0), None);
        assert_eq!(holds.sizes(), (0, 0));
    }

    #[test]
    fn a_hold_whose_records_never_come_back_ends() {
        let holds = Holds::default();
        holds.add(b"c1", seen(1), 1_000);
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
}
