//! Pacing of one mParticle account's requests: a token bucket counted in batches, at the
//! rate [`RateControl`] learns from mParticle's answers (bounded by
//! `MPARTICLE_MAX_BATCHES_PER_SECOND` when set), the size of a request that rate allows,
//! and a hold that a 429's `Retry-After` puts on every request, not only on the one that
//! drew it.

mod control;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use crate::mparticle::MAX_BATCHES_PER_BULK;
pub use control::{RateControl, Signal};

/// The bucket holds this long's worth of batches, and a request carries at most as many:
/// a request never holds more than a fraction of a second of the limit, so a small limit
/// (a development workspace, an account shared with other senders) still drains, and the
/// account's usage moves in small steps.
pub const BURST: Duration = Duration::from_millis(25);

/// Shared by every request task of one account.
pub struct Pacer {
    control: Mutex<RateControl>,
    bucket: tokio::sync::Mutex<Bucket>,
    hold_until: Mutex<Option<Instant>>,
    /// When a request last had to wait for the rate or a hold.
    last_held: Mutex<Option<Instant>>,
    /// When mParticle last refused a request with a 429.
    last_refused: Mutex<Option<Instant>>,
}

/// How long after a 429 a binding limit counts as the account's ([`Pacer::limited`]).
pub const LIMITED_FOR: Duration = Duration::from_secs(10);

/// How long after a request last waited the limit still counts as binding.
const BINDING_FOR: Duration = Duration::from_secs(1);

struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pacer {
    /// `ceiling` in batches per second: the most this replica may send.
    pub fn new(ceiling: Option<f64>) -> Pacer {
        let now = Instant::now();
        let mut control = RateControl::new(ceiling, now);
        Pacer {
            bucket: tokio::sync::Mutex::new(Bucket {
                tokens: control.rate(now) * BURST.as_secs_f64(),
                refilled_at: now,
            }),
            control: Mutex::new(control),
            hold_until: Mutex::new(None),
            last_held: Mutex::new(None),
            last_refused: Mutex::new(None),
        }
    }

    /// The rate allowed now, in batches per second.
    pub fn rate(&self) -> f64 {
        lock(&self.control).rate(Instant::now())
    }

    /// The most batches one request may carry at the rate allowed now.
    pub fn batches_per_request(&self) -> usize {
        batches_per_request(self.rate())
    }

    /// Whether the limit binds: a request waited for the rate or a hold within the last
    /// second.
    pub fn binds(&self) -> bool {
        lock(&self.last_held).is_some_and(|at| at.elapsed() < BINDING_FOR)
    }

    /// Waits until a request of `batches` batches may be sent; returns how long it waited
    /// for the rate (a `Retry-After` hold is counted by [`hold`](Self::hold)).
    pub async fn acquire(&self, batches: usize) -> Duration {
        self.wait_for_hold().await;
        // The async mutex queues waiters in order, so requests leave in the order they came.
        let mut bucket = self.bucket.lock().await;
        let now = Instant::now();
        let rate = lock(&self.control).rate(now);
        let capacity = rate * BURST.as_secs_f64();
        let elapsed = now.duration_since(bucket.refilled_at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.refilled_at = now;
        bucket.tokens -= batches as f64;
        let mut waited = Duration::ZERO;
        if bucket.tokens < 0.0 {
            *lock(&self.last_held) = Some(now);
            lock(&self.control).bound(now);
            waited = Duration::from_secs_f64(-bucket.tokens / rate);
            sleep_until(now + waited).await;
            // The debt is paid by the wait; the clock moves on from the wake-up.
            bucket.tokens = 0.0;
            bucket.refilled_at = now + waited;
        }
        drop(bucket);
        self.wait_for_hold().await;
        waited
    }

    /// Waits until a request asking now would be the next to be let through: no hold in
    /// force, and the requests before it on their way. (Bulk assembly composes a request
    /// only then while the limit binds, so that what waits meanwhile can still be merged.)
    pub async fn next_turn(&self) {
        self.wait_for_hold().await;
        drop(self.bucket.lock().await);
    }

    /// What the answer to a request that left at `sent_at` says about the rate.
    pub fn observe(&self, sent_at: Instant, signal: Signal) {
        let now = Instant::now();
        if matches!(signal, Signal::Refused(_)) {
            *lock(&self.last_refused) = Some(now);
        }
        lock(&self.control).observe(now, sent_at, signal);
    }

    /// Whether the limit binds because it is the account's: requests wait for the rate,
    /// and mParticle answered 429 within [`LIMITED_FOR`] or the rate is at the configured
    /// ceiling. (A rate still growing towards a limit not yet found binds too, but for a
    /// moment only.)
    pub fn limited(&self) -> bool {
        let refused = lock(&self.last_refused).is_some_and(|at| at.elapsed() < LIMITED_FOR);
        self.binds() && (refused || lock(&self.control).at_ceiling())
    }

    /// How much longer a `Retry-After` holds every request, while one does.
    pub fn held_for(&self) -> Option<Duration> {
        let now = Instant::now();
        lock(&self.hold_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    /// No request may start for `wait` (a 429's `Retry-After`); returns how much longer
    /// that holds requests than the hold already in force.
    pub fn hold(&self, wait: Duration) -> Duration {
        let now = Instant::now();
        let until = now + wait;
        let mut hold = lock(&self.hold_until);
        let current = hold.filter(|c| *c > now).unwrap_or(now);
        if until <= current {
            return Duration::ZERO;
        }
        *hold = Some(until);
        until - current
    }

    /// Waits while a hold is in force; the limit binds from its end.
    async fn wait_for_hold(&self) {
        loop {
            let until = *lock(&self.hold_until);
            match until {
                Some(until) if until > Instant::now() => {
                    sleep_until(until).await;
                    *lock(&self.last_held) = Some(Instant::now());
                }
                _ => return,
            }
        }
    }
}

/// The most batches a request may carry at `rate`: [`BURST`]'s worth, 1 to 100.
pub fn batches_per_request(rate: f64) -> usize {
    ((rate * BURST.as_secs_f64()) as usize).clamp(1, MAX_BATCHES_PER_BULK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mparticle::response::LimitHit;

    #[tokio::test(start_paused = true)]
    async fn the_limit_binds_while_requests_wait_for_it() {
        let pacer = Pacer::new(Some(100.0));
        pacer.acquire(2).await;
        assert!(!pacer.binds(), "within the burst");
        pacer.acquire(10).await;
        assert!(pacer.binds(), "waited for the rate");
        tokio::time::sleep(BINDING_FOR).await;
        assert!(!pacer.binds(), "a second without waiting");
        pacer.hold(Duration::from_secs(2));
        pacer.acquire(1).await;
        assert!(pacer.binds(), "held by a Retry-After");
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_is_kept() {
        let pacer = Pacer::new(Some(100.0));
        let start = Instant::now();
        for _ in 0..30 {
            pacer.acquire(10).await;
        }
        // 300 batches at 100/s with a burst of 2.5: at least 2.95 s.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(2_950), "{took:?}");
        assert!(took <= Duration::from_millis(3_000), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_stops_every_request_until_it_ends() {
        let pacer = Pacer::new(None);
        let start = Instant::now();
        assert_eq!(pacer.hold(Duration::from_secs(3)), Duration::from_secs(3));
        // An earlier hold does not shorten it, nor count again.
        assert_eq!(pacer.hold(Duration::from_secs(1)), Duration::ZERO);
        pacer.acquire(1).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_slows_the_requests_that_follow() {
        let pacer = Pacer::new(None);
        let before = pacer.rate();
        let sent_at = Instant::now();
        pacer.acquire(1).await;
        pacer.observe(sent_at, Signal::Refused(LimitHit::Account));
        assert!(pacer.rate() < before * 0.8);
    }

    #[test]
    fn a_request_carries_a_fortieth_of_a_seconds_worth() {
        assert_eq!(batches_per_request(20.0), 1);
        assert_eq!(batches_per_request(270.0), 6);
        assert_eq!(batches_per_request(2.0), 1);
        assert_eq!(batches_per_request(100_000.0), MAX_BATCHES_PER_BULK);
    }
}
