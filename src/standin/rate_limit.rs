//! The account's rate limit as mParticle enforces it (a sliding second over every
//! connection), and the answers that go with it: 202 with the usage header, or 429.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use hyper::header::{HeaderValue, RETRY_AFTER};

use super::{State, lock};
use crate::http_server::{self, HttpResponse};

/// The account's limit: at most `rate` batches accepted in any second (a sliding window),
/// the same count its usage header reports, so that the header tells a sender how close
/// it is to a 429.
pub(super) struct RateLimit {
    rate: f64,
    accepted: VecDeque<(Instant, usize)>,
    accepted_in_window: usize,
}

impl RateLimit {
    pub(super) fn new(rate: f64) -> RateLimit {
        RateLimit {
            rate,
            accepted: VecDeque::new(),
            accepted_in_window: 0,
        }
    }

    pub(super) fn take(&mut self, batches: usize) -> bool {
        let now = Instant::now();
        self.forget_before(now);
        if (self.accepted_in_window + batches) as f64 > self.rate {
            return false;
        }
        self.accepted.push_back((now, batches));
        self.accepted_in_window += batches;
        true
    }

    fn forget_before(&mut self, now: Instant) {
        while let Some(&(at, batches)) = self.accepted.front() {
            if now.duration_since(at) < Duration::from_secs(1) {
                break;
            }
            self.accepted.pop_front();
            self.accepted_in_window -= batches;
        }
    }

    /// The batches accepted in the last second as a percentage of the limit, 0–100.
    pub(super) fn usage_percent(&mut self) -> u32 {
        self.forget_before(Instant::now());
        (100.0 * self.accepted_in_window as f64 / self.rate)
            .round()
            .min(100.0) as u32
    }

    /// A new limit applies to the second already under way.
    pub(super) fn change(&mut self, rate: f64) {
        self.rate = rate;
    }
}

/// What the limit answers a request of `batches` batches: accepted, with the usage header's
/// value if one is sent, or refused, with the `Retry-After` seconds if any.
pub(super) fn check_rate(
    state: &State,
    account: usize,
    batches: usize,
) -> Result<Option<u32>, Option<u32>> {
    if account != 0 {
        return match state.accounts.take(account, batches) {
            Some(false) => Err(lock(&state.rate_options).retry_after),
            _ => Ok(None),
        };
    }
    let mut limit = lock(&state.rate_limit);
    let Some(limit) = limit.as_mut() else {
        return Ok(None);
    };
    if !limit.take(batches) {
        return Err(lock(&state.rate_options).retry_after);
    }
    Ok(lock(&state.rate_options)
        .usage_header
        .then(|| limit.usage_percent()))
}

/// How the limiter answers, changeable while running.
#[derive(Debug, Clone, Copy)]
pub(super) struct RateOptions {
    pub(super) retry_after: Option<u32>,
    pub(super) usage_header: bool,
}

/// `POST /_standin/rate-limit`: `{"batches_per_second": 100}` (`null`: no limit), and
/// optionally `"retry_after"` (seconds; 0: none) and `"usage_header"`.
#[derive(serde::Deserialize)]
pub(super) struct RateLimitChange {
    pub(super) batches_per_second: Option<f64>,
    #[serde(default)]
    pub(super) retry_after: Option<u32>,
    #[serde(default)]
    pub(super) usage_header: Option<bool>,
}

pub(super) fn set_rate_limit(state: &State, batches_per_second: Option<f64>) {
    let mut limit = lock(&state.rate_limit);
    match (limit.as_mut(), batches_per_second) {
        (Some(current), Some(rate)) => current.change(rate),
        (_, rate) => *limit = rate.map(RateLimit::new),
    }
}

/// 202, with the usage header when the limiter gives one.
pub(super) fn accepted(usage_percent: Option<u32>) -> HttpResponse {
    let mut response = http_server::json(StatusCode::ACCEPTED, "{}");
    if let Some(usage) = usage_percent {
        response
            .headers_mut()
            .insert("x-mp-rate-limit-percentage-used", HeaderValue::from(usage));
    }
    response
}

pub(super) fn rate_limited(retry_after: Option<u32>) -> HttpResponse {
    let mut response = http_server::text(StatusCode::TOO_MANY_REQUESTS, "");
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response.headers_mut().insert(
        "x-mp-rate-limit-exceeded",
        HeaderValue::from_static("account"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_counts_the_last_second_and_reports_its_usage() {
        let mut limit = RateLimit::new(100.0);
        assert!(limit.take(40));
        assert_eq!(limit.usage_percent(), 40);
        assert!(limit.take(60));
        assert!(!limit.take(10));
        assert_eq!(limit.usage_percent(), 100);
        limit.change(20.0);
        assert!(
            !limit.take(1),
            "a lowered limit holds no more than its own second"
        );
    }
}
