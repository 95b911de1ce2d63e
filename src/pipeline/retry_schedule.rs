//! Retries waiting for their time, in memory, ordered by when they are due. Pure.
//!
//! Bounded: once `capacity` retries wait, the reader takes no more from the retry topic
//! until one is due and leaves. (Writing the latest-due one back to the end of the topic
//! instead kept the order by due time, but with more retries waiting than memory holds it
//! read and wrote the same records in a loop for as long as their backoff lasted.)

use std::collections::BTreeMap;

/// Waiting retries keyed by (due unix ms, arrival order).
pub struct RetrySchedule<T> {
    waiting: BTreeMap<(i64, u64), T>,
    capacity: usize,
    arrivals: u64,
}

impl<T> RetrySchedule<T> {
    pub fn new(capacity: usize) -> Self {
        RetrySchedule {
            waiting: BTreeMap::new(),
            capacity: capacity.max(1),
            arrivals: 0,
        }
    }

    /// Adds a retry due at `due_ms` (the caller takes none while [full](Self::is_full)).
    pub fn insert(&mut self, due_ms: i64, item: T) {
        self.arrivals += 1;
        self.waiting.insert((due_ms, self.arrivals), item);
    }

    /// As many retries wait as memory is given for.
    pub fn is_full(&self) -> bool {
        self.waiting.len() >= self.capacity
    }

    /// When the earliest retry is due.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.waiting.first_key_value().map(|((due, _), _)| *due)
    }

    /// The earliest retry, if it is due at `now_ms`.
    pub fn pop_due(&mut self, now_ms: i64) -> Option<T> {
        match self.next_due_ms() {
            Some(due) if due <= now_ms => self.waiting.pop_first().map(|(_, item)| item),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_due_later_never_holds_back_one_due_earlier() {
        let mut schedule = RetrySchedule::new(10);
        schedule.insert(30_000, "due in 30 s");
        schedule.insert(1_000, "due in 1 s");
        assert_eq!(schedule.next_due_ms(), Some(1_000));
        assert_eq!(schedule.pop_due(999), None);
        assert_eq!(schedule.pop_due(1_000), Some("due in 1 s"));
        assert_eq!(schedule.pop_due(29_999), None);
        assert_eq!(schedule.pop_due(30_000), Some("due in 30 s"));
        assert!(schedule.is_empty());
    }

    #[test]
    fn equal_due_times_keep_arrival_order() {
        let mut schedule = RetrySchedule::new(10);
        schedule.insert(5, "a");
        schedule.insert(5, "b");
        assert_eq!(schedule.pop_due(5), Some("a"));
        assert_eq!(schedule.pop_due(5), Some("b"));
    }

    #[test]
    fn full_at_capacity_until_one_leaves() {
        let mut schedule = RetrySchedule::new(2);
        schedule.insert(100, "late");
        assert!(!schedule.is_full());
        schedule.insert(10, "early");
        assert!(schedule.is_full());
        assert_eq!(schedule.pop_due(50), Some("early"));
        assert!(!schedule.is_full());
    }
}
