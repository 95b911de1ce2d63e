//! The resend policy, pure: after a failed attempt, whether a record is tried again and
//! when, and what a consumed retry record says about its earlier attempts.

use std::time::Duration;

use crate::config::RetryConfig;
use crate::kafka::headers::{ATTEMPT, FIRST_ATTEMPT_MS, NOT_BEFORE_MS};
use crate::kafka::record::SourceRecord;

/// What becomes of a record whose latest attempt failed retryably.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// To the retry topic; the next attempt may start at this unix ms.
    RetryAt { not_before_ms: i64 },
    /// The attempts are used up: to the dead-letter topic.
    Exhausted,
}

/// Decides the next step after `attempts_made` attempts, the latest failing at `now_ms`.
/// The wait is the configured backoff, or `retry_after` when that is later.
pub fn next_step(
    policy: &RetryConfig,
    attempts_made: u32,
    retry_after: Option<Duration>,
    now_ms: i64,
) -> NextStep {
    if attempts_made >= policy.max_attempts {
        return NextStep::Exhausted;
    }
    let backoff = policy.backoff_before(attempts_made + 1);
    let wait = retry_after.map_or(backoff, |ra| ra.max(backoff));
    NextStep::RetryAt {
        not_before_ms: now_ms.saturating_add(wait.as_millis() as i64),
    }
}

/// What a record read from the retry topic carries about its earlier attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryState {
    pub attempts_made: u32,
    /// The next attempt must not start before this unix ms.
    pub not_before_ms: i64,
    pub first_attempt_ms: Option<i64>,
}

impl RetryState {
    /// Reads the `forwarder-*` headers. A record without them (written by hand, say) is
    /// due at once, counted as one attempt made.
    pub fn of(record: &SourceRecord) -> RetryState {
        let number = |name: &str| {
            record
                .header_text(name)
                .and_then(|v| v.trim().parse::<i64>().ok())
        };
        RetryState {
            attempts_made: number(ATTEMPT).map_or(1, |n| n.clamp(0, i64::from(u32::MAX)) as u32),
            not_before_ms: number(NOT_BEFORE_MS).unwrap_or(0),
            first_attempt_ms: number(FIRST_ATTEMPT_MS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::topic::Topic;

    fn policy() -> RetryConfig {
        RetryConfig {
            max_attempts: 5,
            backoff: vec![Duration::from_secs(10), Duration::from_secs(30)],
        }
    }

    #[test]
    fn backoff_follows_the_attempt_and_the_last_value_repeats() {
        let p = policy();
        assert_eq!(
            next_step(&p, 1, None, 1_000),
            NextStep::RetryAt {
                not_before_ms: 11_000
            }
        );
        assert_eq!(
            next_step(&p, 2, None, 1_000),
            NextStep::RetryAt {
                not_before_ms: 31_000
            }
        );
        assert_eq!(
            next_step(&p, 4, None, 1_000),
            NextStep::RetryAt {
                not_before_ms: 31_000
            }
        );
    }

    #[test]
    fn a_later_retry_after_wins() {
        let p = policy();
        let later = Some(Duration::from_secs(60));
        let sooner = Some(Duration::from_secs(3));
        assert_eq!(
            next_step(&p, 1, later, 0),
            NextStep::RetryAt {
                not_before_ms: 60_000
            }
        );
        assert_eq!(
            next_step(&p, 1, sooner, 0),
            NextStep::RetryAt {
                not_before_ms: 10_000
            }
        );
    }

    #[test]
    fn the_fifth_failure_exhausts_five_attempts() {
        assert_eq!(next_step(&policy(), 5, None, 0), NextStep::Exhausted);
        let single = RetryConfig {
            max_attempts: 1,
            backoff: vec![],
        };
        assert_eq!(next_step(&single, 1, None, 0), NextStep::Exhausted);
    }

    #[test]
    fn retry_state_is_read_from_the_headers() {
        let headers = vec![
            (ATTEMPT.into(), Some(b"2".to_vec())),
            (NOT_BEFORE_MS.into(), Some(b"12345".to_vec())),
            (FIRST_ATTEMPT_MS.into(), Some(b"100".to_vec())),
        ];
        let record = SourceRecord::new(Topic::named("retry"), 0, 0, None, None, None, headers);
        assert_eq!(
            RetryState::of(&record),
            RetryState {
                attempts_made: 2,
                not_before_ms: 12_345,
                first_attempt_ms: Some(100)
            }
        );
        let record = SourceRecord::new(Topic::named("retry"), 0, 0, None, None, None, vec![]);
        assert_eq!(RetryState::of(&record).not_before_ms, 0);
        assert_eq!(RetryState::of(&record).attempts_made, 1);
    }
}
