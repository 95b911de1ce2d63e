//! The delivery gate: a circuit breaker in front of every Events API request.
//!
//! - **Closed**: requests go. Ten requests in a row that fail retryably (timeouts,
//!   connection errors, 5xx; not 429, which the pacer handles) mean mParticle is failing
//!   for everyone: the gate opens.
//! - **Open**: no request goes and the consumers pause, so records are not burnt through
//!   their attempts during an outage. After the wait (5 s, doubling up to 60 s) the gate is
//!   half-open.
//! - **HalfOpen**: one request goes as a probe (consumers may pull until a probe is
//!   found). Its success closes the gate; a retryable failure opens it again.
//!
//! A 401 or 403 opens the gate at once for reason `Auth`: the refused records wait (they
//! are the probes) and nothing is dead-lettered; `/readyz` says not ready meanwhile.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use crate::mparticle::response::Verdict;

/// Retryable request failures in a row that open the gate.
pub const OUTAGE_THRESHOLD: u32 = 10;
/// First wait before probing; doubles up to [`MAX_WAIT`].
pub const FIRST_WAIT: Duration = Duration::from_secs(5);
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Why the gate is not closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// mParticle fails every request retryably.
    Outage,
    /// mParticle refuses the API key or secret.
    Auth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures_in_a_row: u32,
    },
    Open {
        reason: Reason,
        until: Instant,
        wait: Duration,
    },
    HalfOpen {
        reason: Reason,
        wait: Duration,
        probe_taken: bool,
    },
}

/// What changed, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Opened(Reason),
    Closed(Reason),
}

/// The gate, shared by every delivery task and reader.
pub struct Gate {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    pub fn new() -> Gate {
        Gate::telling(watch::channel(0).0)
    }

    /// A gate that tells its changes on `changed`, which other gates may share (one
    /// account's each, watched together by the readers).
    pub fn telling(changed: watch::Sender<u64>) -> Gate {
        Gate {
            state: Mutex::new(State::Closed {
                failures_in_a_row: 0,
            }),
            changed,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Waits until a request may go.
    pub async fn admit(&self) {
        let mut changes = self.changed.subscribe();
        loop {
            let wake_at = {
                let mut state = self.state();
                match *state {
                    State::Closed { .. } => return,
                    State::HalfOpen {
                        reason,
                        wait,
                        probe_taken: false,
                    } => {
                        *state = State::HalfOpen {
                            reason,
                            wait,
                            probe_taken: true,
                        };
                        drop(state);
                        self.notify();
                        return;
                    }
                    State::HalfOpen {
                        probe_taken: true, ..
                    } => None,
                    State::Open { until, .. } => {
                        if self.half_open_if_due(state) {
                            continue;
                        }
                        Some(until)
                    }
                }
            };
            match wake_at {
                Some(until) => tokio::select! {
                    _ = sleep_until(until) => {}
                    _ = changes.changed() => {}
                },
                None => {
                    let _ = changes.changed().await;
                }
            }
        }
    }

    /// Records a request's verdict; returns what changed, if anything.
    pub fn record(&self, verdict: &Verdict) -> Option<Change> {
        let mut state = self.state();
        let before = *state;
        let now = Instant::now();
        let next = match (verdict, before) {
            (
                Verdict::AuthFailed,
                State::Open {
                    reason: Reason::Auth,
                    ..
                },
            ) => before,
            (
                Verdict::AuthFailed,
                State::HalfOpen {
                    reason: Reason::Auth,
                    wait,
                    ..
                },
            ) => {
                let wait = (wait * 2).min(MAX_WAIT);
                State::Open {
                    reason: Reason::Auth,
                    until: now + wait,
                    wait,
                }
            }
            (Verdict::AuthFailed, _) => State::Open {
                reason: Reason::Auth,
                until: now + FIRST_WAIT,
                wait: FIRST_WAIT,
            },
            (Verdict::Retryable(_), _) => match before {
                State::Closed { failures_in_a_row }
                    if failures_in_a_row + 1 >= OUTAGE_THRESHOLD =>
                {
                    State::Open {
                        reason: Reason::Outage,
                        until: now + FIRST_WAIT,
                        wait: FIRST_WAIT,
                    }
                }
                State::Closed { failures_in_a_row } => State::Closed {
                    failures_in_a_row: failures_in_a_row + 1,
                },
                State::HalfOpen { wait, .. } => {
                    let wait = (wait * 2).min(MAX_WAIT);
                    State::Open {
                        reason: Reason::Outage,
                        until: now + wait,
                        wait,
                    }
                }
                State::Open { .. } => before,
            },
            // Delivered, refused for good, or rate-limited: mParticle is answering.
            _ => match before {
                // Requests admitted before the gate opened may still succeed; an open gate
                // waits for its own probe.
                State::Open { .. } => before,
                _ => State::Closed {
                    failures_in_a_row: 0,
                },
            },
        };
        *state = next;
        drop(state);
        let change = match (before, next) {
            (State::Closed { .. }, State::Open { reason, .. }) => Some(Change::Opened(reason)),
            (State::HalfOpen { reason: a, .. }, State::Open { reason: b, .. }) if a != b => {
                Some(Change::Opened(b))
            }
            (State::Open { reason: a, .. }, State::Open { reason: b, .. }) if a != b => {
                Some(Change::Opened(b))
            }
            (State::HalfOpen { reason, .. } | State::Open { reason, .. }, State::Closed { .. }) => {
                Some(Change::Closed(reason))
            }
            _ => None,
        };
        if before != next {
            self.notify();
        }
        change
    }

    /// True while consumers should not pull records: open, or half-open with its probe
    /// already under way.
    ///
    /// An open gate whose wait is over half-opens here too, not only in
    /// [`admit`](Self::admit): after an outage's failed probe every record in flight may
    /// have gone to the retry topic, and then no request waits at the gate. The consumers
    /// resume, and the next record they bring is the probe.
    pub fn holds_consumers(&self) -> bool {
        let state = self.state();
        match *state {
            State::Open { .. } => !self.half_open_if_due(state),
            State::HalfOpen {
                probe_taken: true, ..
            } => true,
            _ => false,
        }
    }

    /// An open gate whose wait is over becomes half-open (and says so to the waiters);
    /// true if it did.
    fn half_open_if_due(&self, mut state: std::sync::MutexGuard<'_, State>) -> bool {
        let State::Open {
            reason,
            until,
            wait,
        } = *state
        else {
            return false;
        };
        if Instant::now() < until {
            return false;
        }
        *state = State::HalfOpen {
            reason,
            wait,
            probe_taken: false,
        };
        drop(state);
        self.notify();
        true
    }

    /// When an open gate's wait ends: a paused reader checks
    /// [`holds_consumers`](Self::holds_consumers) again then.
    pub fn wait_ends_at(&self) -> Option<Instant> {
        match *self.state() {
            State::Open { until, .. } => Some(until),
            _ => None,
        }
    }

    /// While the gate is not closed, the reason and the wait it is in (the next probe's
    /// distance when open): how long its account's records are likely to wait.
    pub fn stopped(&self) -> Option<(Reason, Duration)> {
        match *self.state() {
            State::Closed { .. } => None,
            State::Open { reason, wait, .. } | State::HalfOpen { reason, wait, .. } => {
                Some((reason, wait))
            }
        }
    }

    /// True while the gate is not closed because of refused credentials.
    pub fn auth_failed(&self) -> bool {
        matches!(
            *self.state(),
            State::Open {
                reason: Reason::Auth,
                ..
            } | State::HalfOpen {
                reason: Reason::Auth,
                ..
            }
        )
    }

    /// Resolves at the next change of state (or of the probe).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::ErrorKind;

    fn fail() -> Verdict {
        Verdict::Retryable(ErrorKind::Http5xx)
    }

    #[tokio::test(start_paused = true)]
    async fn ten_failures_in_a_row_open_the_gate_and_a_probe_closes_it() {
        let gate = Gate::new();
        for _ in 0..OUTAGE_THRESHOLD - 1 {
            assert_eq!(gate.record(&fail()), None);
        }
        assert!(!gate.holds_consumers());
        assert_eq!(gate.record(&fail()), Some(Change::Opened(Reason::Outage)));
        assert!(gate.holds_consumers());
        let start = Instant::now();
        gate.admit().await; // the probe
        assert_eq!(start.elapsed(), FIRST_WAIT);
        assert!(gate.holds_consumers(), "only one probe at a time");
        assert_eq!(
            gate.record(&Verdict::Delivered),
            Some(Change::Closed(Reason::Outage))
        );
        assert!(!gate.holds_consumers());
        gate.admit().await;
        assert_eq!(start.elapsed(), FIRST_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_doubles_the_wait() {
        let gate = Gate::new();
        for _ in 0..OUTAGE_THRESHOLD {
            gate.record(&fail());
        }
        let start = Instant::now();
        gate.admit().await;
        gate.record(&fail());
        gate.admit().await;
        assert_eq!(start.elapsed(), FIRST_WAIT * 3, "5 s, then 10 s");
    }

    #[tokio::test(start_paused = true)]
    async fn with_nobody_waiting_the_consumers_resume_once_the_wait_is_over() {
        let gate = Gate::new();
        for _ in 0..OUTAGE_THRESHOLD {
            gate.record(&fail());
        }
        assert!(gate.holds_consumers());
        assert_eq!(gate.wait_ends_at(), Some(Instant::now() + FIRST_WAIT));
        tokio::time::sleep(FIRST_WAIT).await;
        assert!(!gate.holds_consumers(), "half-open: the next record probes");
        assert_eq!(gate.wait_ends_at(), None);
        gate.admit().await; // the probe, at once
        assert!(gate.holds_consumers(), "only one probe at a time");
        assert_eq!(gate.record(&fail()), None);
        assert_eq!(gate.wait_ends_at(), Some(Instant::now() + FIRST_WAIT * 2));
        assert!(gate.holds_consumers());
        tokio::time::sleep(FIRST_WAIT * 2).await;
        assert!(!gate.holds_consumers());
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_between_failures_resets_the_count() {
        let gate = Gate::new();
        for _ in 0..OUTAGE_THRESHOLD - 1 {
            gate.record(&fail());
        }
        gate.record(&Verdict::Delivered);
        gate.record(&fail());
        assert!(!gate.holds_consumers());
        gate.record(&Verdict::RateLimited);
        assert!(!gate.holds_consumers(), "429s are the pacer's business");
    }

    #[tokio::test(start_paused = true)]
    async fn refused_credentials_open_the_gate_at_once() {
        let gate = Gate::new();
        assert_eq!(
            gate.record(&Verdict::AuthFailed),
            Some(Change::Opened(Reason::Auth))
        );
        assert!(gate.auth_failed());
        assert_eq!(gate.record(&Verdict::AuthFailed), None);
        gate.admit().await;
        assert_eq!(
            gate.record(&Verdict::Delivered),
            Some(Change::Closed(Reason::Auth))
        );
        assert!(!gate.auth_failed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_waiter_waits_for_the_probe() {
        let gate = std::sync::Arc::new(Gate::new());
        gate.record(&Verdict::AuthFailed);
        gate.admit().await; // probe taken
        let second = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.admit().await })
        };
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(!second.is_finished());
        gate.record(&Verdict::Delivered);
        second.await.unwrap();
    }
}
