//! The series labelled by account: each is a name of the accounts file (or `default`), a
//! bounded set. The interface's own series count every account together.

use prometheus::{IntCounterVec, IntGaugeVec, Registry};

use super::{counter_vec, opts};
use crate::accounts::live::Stuck;
use crate::gate::Reason;
use crate::mparticle::response::LimitHit;
use crate::outcome::ErrorKind;

/// The per-account series: their `account` label is a name of the accounts file (or
/// `default`), a bounded set.
#[derive(Clone)]
pub struct AccountMetrics {
    delivered: IntCounterVec,
    retried: IntCounterVec,
    dead_lettered: IntCounterVec,
    http_requests: IntCounterVec,
    rate_limited: IntCounterVec,
    auth_failed: IntGaugeVec,
    outage: IntGaugeVec,
    rate_limited_now: IntGaugeVec,
    pacing_rate: prometheus::GaugeVec,
    records_in_flight: IntGaugeVec,
}

impl AccountMetrics {
    pub(super) fn register(registry: &Registry) -> prometheus::Result<AccountMetrics> {
        let counter =
            |name: &str, help: &str, labels: &[&str]| counter_vec(registry, name, help, labels);
        let gauges = |name: &str, help: &str| -> prometheus::Result<IntGaugeVec> {
            let g = IntGaugeVec::new(opts(name, help), &["account"])?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        Ok(AccountMetrics {
            delivered: counter(
                "account_events_delivered_total",
                "Events mParticle accepted, by account.",
                &["account"],
            )?,
            retried: counter(
                "account_events_retried_total",
                "Events written to the retry topic, by account and kind (account_stopped: parked while the account cannot send).",
                &["account", "kind"],
            )?,
            dead_lettered: counter(
                "account_events_dead_lettered_total",
                "Events dead-lettered, by account and kind (records that name no account are in events_dead_lettered_total as unknown_account).",
                &["account", "kind"],
            )?,
            http_requests: counter(
                "account_http_requests_total",
                "Requests to the Events API by account and answer.",
                &["account", "status"],
            )?,
            rate_limited: counter(
                "account_rate_limited_total",
                "429 answers by account and the limit mParticle named.",
                &["account", "limit"],
            )?,
            auth_failed: gauges(
                "account_auth_failed",
                "1 while the account's requests are stopped by a 401 or 403.",
            )?,
            outage: gauges(
                "account_outage",
                "1 while the account's requests are stopped because every recent one failed retryably.",
            )?,
            rate_limited_now: gauges(
                "account_rate_limited",
                "1 while mParticle refuses the account with 429 (or holds it with Retry-After).",
            )?,
            pacing_rate: {
                let g = prometheus::GaugeVec::new(
                    opts(
                        "account_pacing_rate_batches_per_second",
                        "The rate the account's pacer allows now.",
                    ),
                    &["account"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            records_in_flight: gauges(
                "account_records_in_flight",
                "The account's records between intake and outcome.",
            )?,
        })
    }

    pub fn delivered(&self, account: &str, count: u64) {
        self.delivered.with_label_values(&[account]).inc_by(count);
    }

    pub fn retried(&self, account: &str, kind: ErrorKind) {
        self.retried
            .with_label_values(&[account, kind.as_str()])
            .inc();
    }

    pub fn dead_lettered(&self, account: &str, kind: ErrorKind) {
        self.dead_lettered
            .with_label_values(&[account, kind.as_str()])
            .inc();
    }

    pub fn http_request(&self, account: &str, status_label: &str) {
        self.http_requests
            .with_label_values(&[account, status_label])
            .inc();
    }

    pub fn rate_limited(&self, account: &str, limit: LimitHit) {
        self.rate_limited
            .with_label_values(&[account, limit.as_str()])
            .inc();
    }

    /// An account's state now: its pacing rate, its records in flight, and why it cannot
    /// send, if it cannot.
    pub fn set_state(&self, account: &str, rate: f64, records: i64, stuck: Option<Stuck>) {
        let a = self;
        a.pacing_rate.with_label_values(&[account]).set(rate);
        a.records_in_flight
            .with_label_values(&[account])
            .set(records);
        let states = [
            (&a.auth_failed, Stuck::Gate(Reason::Auth)),
            (&a.outage, Stuck::Gate(Reason::Outage)),
            (&a.rate_limited_now, Stuck::RateLimited),
        ];
        for (gauge, state) in states {
            gauge
                .with_label_values(&[account])
                .set(i64::from(stuck == Some(state)));
        }
    }
}
