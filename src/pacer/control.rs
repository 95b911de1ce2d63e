//! The rate the pacer allows, learnt from mParticle's answers. Pure: every call is told
//! the time.
//!
//! mParticle limits batches per second per account, and every replica shares that limit
//! without knowing the others. Each replica runs this same control on what mParticle
//! tells all of them alike, so together they settle on the limit:
//!
//! - **Usage on 2xx** (`X-mp-rate-limit-percentage-used`, the account's use of its limit).
//!   The account counts the last second, so usage is read per batch of this replica's own
//!   count of what was accepted in that second, and scaled to a full second at the rate
//!   now: what the usage will be once the window catches up. (After a start, a cut or a
//!   `Retry-After` hold the window holds less than the rate sends; read plainly, the
//!   usage would grow the rate far too fast.) That per-batch usage is smoothed over a few
//!   tenths of a second, as other replicas' requests move it. Below [`TARGET_USAGE`] the
//!   rate grows in proportion to the room left, so every replica grows by the same factor
//!   and the account's total approaches the target; at [`FULL_USAGE`] or more it is cut,
//!   before mParticle refuses anything.
//! - **429** (any limit but `acceleration`): a multiplicative cut (jittered, so replicas do
//!   not move in lockstep). Every cut, on usage or on a 429, waits [`CUT_EVERY`] after the
//!   last, and only a request sent after the last cut can cause one: the account counts a
//!   second, so refusals go on for a while after the rate was cut, and answers to requests
//!   sent before it are answers to the old rate. The rate refused is remembered as the limit's
//!   estimate: growth near it is slow, and once well past it without a refusal (the limit
//!   rose) the estimate is dropped.
//! - **429 `acceleration`**: traffic grew too fast: a small cut, and slower growth for a
//!   while.
//! - **No signal** (no usage header ever, no 429 yet): fast growth, about sevenfold a second,
//!   to find the limit (or, with a sink that has none, full speed) within seconds; but
//!   only while the rate binds (a request had to wait for it), so that a quiet period
//!   never builds up a rate that a burst would then exceed.
//!
//! A configured `MPARTICLE_MAX_BATCHES_PER_SECOND` is the upper bound. The rate starts at
//! [`START_RATE`] (or the bound, if lower): replicas that each were told the whole limit
//! would otherwise start at a multiple of it together.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::mparticle::response::LimitHit;
use crate::random::Xorshift;

/// Where an account's rate starts without a configured one: half of mParticle's default
/// limit, so that two replicas starting together fit in it; the usage header grows one
/// alone to the limit in about a second.
pub const START_RATE: f64 = 135.0;
/// The lowest rate: a request a second still finds out when the limit is back.
pub const MIN_RATE: f64 = 1.0;
/// Keeps the arithmetic finite when nothing ever limits (the benchmark's sink).
pub const MAX_RATE: f64 = 1_000_000.0;
/// The account's usage the growth aims at, in percent.
pub const TARGET_USAGE: f64 = 95.0;
/// Usage at which the rate is cut before any 429.
pub const FULL_USAGE: f64 = 98.0;
/// Usage older than this is not acted on: it may describe a limit that has changed.
const USAGE_FRESH_FOR: Duration = Duration::from_secs(2);
/// The time constant of the usage's smoothing.
const USAGE_SMOOTHING: Duration = Duration::from_millis(300);
/// What the usage counts: the last second.
const USAGE_WINDOW: Duration = Duration::from_secs(1);
/// The account counts the last second: a cut waits this long for the last one to begin to
/// show in its count.
const CUT_EVERY: Duration = Duration::from_millis(500);
/// A rate that made a request wait within this long binds.
const BINDING_FOR: Duration = Duration::from_secs(1);
/// Growth per second of the rate's logarithm: far from any known limit, below the
/// estimate, near it; per point of usage left below the target.
const GROWTH_UNKNOWN: f64 = 2.0;
const GROWTH_BELOW_ESTIMATE: f64 = 0.4;
const GROWTH_NEAR_ESTIMATE: f64 = 0.03;
const GROWTH_PER_USAGE_POINT: f64 = 0.015;
/// After an `acceleration` 429, growth is slowed by this factor for this long.
const SLOWED_GROWTH: f64 = 0.25;
const SLOWED_FOR: Duration = Duration::from_secs(10);
/// Cuts: on a 429 (jittered by ±[`JITTER`]), on full usage, on an `acceleration` 429.
const CUT_ON_REFUSAL: f64 = 0.75;
const CUT_ON_FULL_USAGE: f64 = 0.85;
const CUT_ON_ACCELERATION: f64 = 0.9;
const JITTER: f64 = 0.05;
/// Past the estimate by this factor without a refusal: the limit rose.
const ESTIMATE_FORGOTTEN_ABOVE: f64 = 1.1;

/// What an answer says about the rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// 2xx for `batches` batches, with the account's usage of its limit when mParticle
    /// said it.
    Accepted {
        batches: usize,
        usage_percent: Option<f64>,
    },
    /// 429, and which limit.
    Refused(LimitHit),
}

/// One account's rate.
#[derive(Debug, Clone)]
pub struct RateControl {
    ceiling: Option<f64>,
    rate: f64,
    /// The rate last refused with a 429: the estimate of the limit.
    refused_rate: Option<f64>,
    /// The last cut: requests sent before it got answers to an older rate.
    cut_at: Option<Instant>,
    /// Batches of this replica's accepted in the last [`USAGE_WINDOW`], as the account
    /// counts them.
    accepted: VecDeque<(Instant, usize)>,
    accepted_in_window: usize,
    /// When usage was last read, and the usage per batch of this replica's in the window.
    usage: Option<(Instant, f64)>,
    bound_at: Option<Instant>,
    grown_at: Instant,
    slowed_until: Option<Instant>,
    random: Xorshift,
}

impl RateControl {
    /// `ceiling`: the configured most batches per second.
    pub fn new(ceiling: Option<f64>, now: Instant) -> RateControl {
        let rate = ceiling
            .map_or(START_RATE, |c| c.min(START_RATE))
            .clamp(MIN_RATE, MAX_RATE);
        RateControl {
            ceiling,
            rate,
            refused_rate: None,
            cut_at: None,
            accepted: VecDeque::new(),
            accepted_in_window: 0,
            usage: None,
            bound_at: None,
            grown_at: now,
            slowed_until: None,
            // Seeded by the process, so that replicas draw different jitter.
            random: Xorshift::seeded(u64::from(std::process::id()) << 32 | 0x9e37_79b9),
        }
    }

    /// The rate allowed now, in batches per second, grown for the time since last asked.
    pub fn rate(&mut self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.grown_at);
        self.grown_at = now;
        self.forget_accepted_before(now);
        if self.binds(now) {
            let growth = self.growth(now) * elapsed.min(BINDING_FOR).as_secs_f64();
            self.set_rate(self.rate * growth.exp());
            if let Some(estimate) = self.refused_rate {
                if self.rate > estimate * ESTIMATE_FORGOTTEN_ABOVE {
                    self.refused_rate = None;
                }
            }
        }
        self.rate
    }

    fn count_accepted(&mut self, now: Instant, batches: usize) {
        self.forget_accepted_before(now);
        self.accepted.push_back((now, batches));
        self.accepted_in_window += batches;
    }

    fn forget_accepted_before(&mut self, now: Instant) {
        while let Some(&(at, batches)) = self.accepted.front() {
            if now.saturating_duration_since(at) < USAGE_WINDOW {
                break;
            }
            self.accepted.pop_front();
            self.accepted_in_window -= batches;
        }
    }

    /// A request had to wait for the rate: it binds, and growing it is worth something.
    pub fn bound(&mut self, now: Instant) {
        self.bound_at = Some(now);
    }

    /// What the answer to a request sent at `sent_at` says.
    pub fn observe(&mut self, now: Instant, sent_at: Instant, signal: Signal) {
        self.rate(now);
        let may_cut = self
            .cut_at
            .is_none_or(|at| sent_at >= at && now.saturating_duration_since(at) >= CUT_EVERY);
        match signal {
            Signal::Accepted {
                batches,
                usage_percent: Some(reading),
            } => {
                self.count_accepted(now, batches);
                self.read_usage(now, reading);
                let usage = self.predicted_usage(now).unwrap_or(reading);
                if usage >= FULL_USAGE && may_cut {
                    self.cut(now, CUT_ON_FULL_USAGE);
                }
            }
            Signal::Accepted {
                batches,
                usage_percent: None,
            } => self.count_accepted(now, batches),
            Signal::Refused(_) if !may_cut => {}
            Signal::Refused(LimitHit::Acceleration) => {
                self.slowed_until = Some(now + SLOWED_FOR);
                self.cut(now, CUT_ON_ACCELERATION);
            }
            Signal::Refused(_) => {
                self.refused_rate = Some(self.rate);
                let factor =
                    CUT_ON_REFUSAL * (1.0 + JITTER * (2.0 * self.random.next_unit() - 1.0));
                self.cut(now, factor);
            }
        }
    }

    /// Folds a reading into the usage per batch of this replica's in the window, smoothed;
    /// a stale value is replaced, not folded. (Smoothing the reading itself lagged behind
    /// a window filling after a hold, while the replica's own count did not.)
    fn read_usage(&mut self, now: Instant, reading: f64) {
        if self.accepted_in_window == 0 {
            return;
        }
        let per_batch = reading / self.accepted_in_window as f64;
        let smoothed = match self.usage {
            Some((at, before)) if now.saturating_duration_since(at) < USAGE_FRESH_FOR => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                let weight = 1.0 - (-dt / USAGE_SMOOTHING.as_secs_f64()).exp();
                before + (per_batch - before) * weight
            }
            _ => per_batch,
        };
        self.usage = Some((now, smoothed));
    }

    /// The fresh usage as it will be with a full window at the rate now.
    fn predicted_usage(&self, now: Instant) -> Option<f64> {
        let (at, per_batch) = self.usage?;
        if now.saturating_duration_since(at) >= USAGE_FRESH_FOR {
            return None;
        }
        Some(per_batch * self.rate * USAGE_WINDOW.as_secs_f64())
    }

    fn cut(&mut self, now: Instant, factor: f64) {
        self.set_rate(self.rate * factor);
        self.cut_at = Some(now);
    }

    fn set_rate(&mut self, rate: f64) {
        let ceiling = self.ceiling.unwrap_or(MAX_RATE).min(MAX_RATE);
        self.rate = rate.clamp(MIN_RATE, ceiling.max(MIN_RATE));
    }

    /// Whether the rate is at the configured ceiling (`MPARTICLE_MAX_BATCHES_PER_SECOND`).
    pub fn at_ceiling(&self) -> bool {
        self.ceiling
            .is_some_and(|c| self.rate >= c.min(MAX_RATE) * 0.99)
    }

    fn binds(&self, now: Instant) -> bool {
        self.bound_at
            .is_some_and(|at| now.saturating_duration_since(at) < BINDING_FOR)
    }

    /// Growth per second of the rate's logarithm.
    fn growth(&self, now: Instant) -> f64 {
        let growth = match (self.predicted_usage(now), self.refused_rate) {
            (Some(usage), _) => GROWTH_PER_USAGE_POINT * (TARGET_USAGE - usage).max(0.0),
            (None, Some(estimate)) if self.rate < 0.9 * estimate => GROWTH_BELOW_ESTIMATE,
            (None, Some(_)) => GROWTH_NEAR_ESTIMATE,
            // An account that reports its usage and has gone quiet is refusing (a
            // `Retry-After` hold): that is no time to probe fast.
            (None, None) if self.usage.is_some() => GROWTH_NEAR_ESTIMATE,
            (None, None) => GROWTH_UNKNOWN,
        };
        match self.slowed_until {
            Some(until) if now < until => growth * SLOWED_GROWTH,
            _ => growth,
        }
    }
}

#[cfg(test)]
mod tests;
