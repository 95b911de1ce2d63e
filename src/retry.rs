//! The resend policy, pure, on plain values: the backoff before each attempt, and after a
//! failed attempt whether a record is tried again and when. (What a retry record's headers
//! say about its earlier attempts is read in [`crate::kafka::headers::retry_state`].)

use std::time::Duration;

use crate::config::RetryConfig;

impl RetryConfig {
    /// The delay before attempt `next_attempt` (2 for the first retry); the last value
    /// repeats.
    pub fn backoff_before(&self, next_attempt: u32) -> Duration {
        let index = next_attempt.saturating_sub(2) as usize;
        self.backoff
            .get(index)
            .or(self.backoff.last())
            .copied()
            .unwrap_or_default()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
