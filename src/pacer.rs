//! Pacing of Events API requests: an optional token bucket at the account's rate limit
//! (`MPARTICLE_MAX_BATCHES_PER_SECOND`, counted in batches) and a hold that a 429's
//! `Retry-After` puts on the whole sender, not only on the one request that drew it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

/// Shared by every request task.
pub struct Pacer {
    bucket: Option<tokio::sync::Mutex<Bucket>>,
    hold_until: Mutex<Option<Instant>>,
}

struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl Pacer {
    /// `rate` in batches per second; `None` paces only by `Retry-After`.
    pub fn new(rate: Option<f64>) -> Pacer {
        Pacer {
            bucket: rate.map(|rate| {
                // A fifth of a second of burst: enough to fill a bulk request at mParticle's
                // default 270/s, small enough not to trip its ramp-up limit.
                let capacity = (rate / 5.0).max(1.0);
                tokio::sync::Mutex::new(Bucket {
                    rate,
                    capacity,
                    tokens: capacity,
                    refilled_at: Instant::now(),
                })
            }),
            hold_until: Mutex::new(None),
        }
    }

    /// Waits until a request of `batches` batches may be sent.
    pub async fn acquire(&self, batches: usize) {
        self.wait_for_hold().await;
        let Some(bucket) = &self.bucket else {
            return;
        };
        // The async mutex queues waiters in order, so requests leave in the order they came.
        let mut bucket = bucket.lock().await;
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.refilled_at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * bucket.rate).min(bucket.capacity);
        bucket.refilled_at = now;
        bucket.tokens -= batches as f64;
        if bucket.tokens < 0.0 {
            let wait = Duration::from_secs_f64(-bucket.tokens / bucket.rate);
            sleep_until(now + wait).await;
            // The debt is paid by the wait; the clock moves on from the wake-up.
            bucket.tokens = 0.0;
            bucket.refilled_at = now + wait;
        }
        drop(bucket);
        self.wait_for_hold().await;
    }

    /// No request may start before `until` (a 429's `Retry-After`).
    pub fn hold(&self, until: Instant) {
        let mut hold = self.hold_until.lock().unwrap_or_else(|p| p.into_inner());
        if hold.is_none_or(|current| current < until) {
            *hold = Some(until);
        }
    }

    async fn wait_for_hold(&self) {
        loop {
            let until = *self.hold_until.lock().unwrap_or_else(|p| p.into_inner());
            match until {
                Some(until) if until > Instant::now() => sleep_until(until).await,
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_rate_is_kept() {
        let pacer = Pacer::new(Some(100.0));
        let start = Instant::now();
        for _ in 0..30 {
            pacer.acquire(10).await;
        }
        // 300 batches at 100/s with a burst of 20: at least 2.8 s.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(2_800), "{took:?}");
        assert!(took <= Duration::from_millis(3_000), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_stops_every_request_until_it_ends() {
        let pacer = Pacer::new(None);
        let start = Instant::now();
        pacer.hold(start + Duration::from_secs(3));
        pacer.hold(start + Duration::from_secs(1)); // an earlier hold does not shorten it
        pacer.acquire(1).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn no_rate_means_no_wait() {
        let pacer = Pacer::new(None);
        let start = Instant::now();
        pacer.acquire(100).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
