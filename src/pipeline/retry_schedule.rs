//! Retries waiting for their time, in memory, ordered by when they are due. Pure.
//!
//! Bounded: past `capacity` the retry due latest is handed back to be written to the end
//! of the retry topic again, so memory stays bounded without a retry due later ever
//! holding back one due earlier.

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

    /// Adds a retry due at `due_ms`. Returns the retry to write back when over capacity
    /// (the one due latest, which may be this one).
    pub fn insert(&mut self, due_ms: i64, item: T) -> Option<T> {
        self.arrivals += 1;
        self.waiting.insert((due_ms, self.arrivals), item);
        if self.waiting.len() > self.capacity {
            return self.waiting.pop_last().map(|(_, item)| item);
        }
        None
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
    fn over_capacity_the_latest_due_is_handed_back() {
        let mut schedule = RetrySchedule::new(2);
        assert_eq!(schedule.insert(100, "late"), None);
        assert_eq!(schedule.insert(10, "early"), None);
        assert_eq!(schedule.insert(50, "middle"), Some("late"));
        assert_eq!(schedule.insert(500, "latest"), Some("latest"));
        assert_eq!(schedule.len(), 2);
        assert_eq!(schedule.pop_due(1_000), Some("early"));
        assert_eq!(schedule.pop_due(1_000), Some("middle"));
    }
}
