//! The metrics facade: one method per thing that happens, over an injected prometheus
//! [`Registry`]. Names follow the contract (prefix `mparticle_forwarder_`); every label is
//! a bounded set (topics and actions from configuration, error kinds, status classes).

use std::collections::HashSet;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::gate::{Change, Reason};
use crate::mparticle::response::LimitHit;
use crate::outcome::ErrorKind;

mod accounts;
pub use accounts::AccountMetrics;

fn reason_label(reason: Reason) -> &'static str {
    match reason {
        Reason::Auth => "auth",
        Reason::Outage => "outage",
    }
}

const PREFIX: &str = "mparticle_forwarder";

/// Label used for an action that has no event definition, so labels stay bounded.
pub const OTHER_ACTION: &str = "other";

/// The service's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    known_actions: HashSet<String>,
    events_consumed: IntCounterVec,
    events_delivered: IntCounterVec,
    events_retried: IntCounterVec,
    events_dead_lettered: IntCounterVec,
    events_skipped: IntCounterVec,
    values_truncated: IntCounter,
    http_requests: IntCounterVec,
    http_request_duration: Histogram,
    delivery_latency: Histogram,
    bulk_size: Histogram,
    events_per_batch: Histogram,
    retry_scheduled: IntGauge,
    oldest_due_retry_age: prometheus::Gauge,
    consumer_lag: IntGaugeVec,
    auth_failed: IntGauge,
    outage: IntGauge,
    gate_openings: IntCounterVec,
    records_in_flight: IntGauge,
    bytes_in_flight: IntGauge,
    customers_held: IntGauge,
    records_held: IntGauge,
    requests_in_flight: IntGauge,
    rebalances: IntCounterVec,
    pacing_rate: prometheus::Gauge,
    rate_limited: IntCounterVec,
    pacing_held: prometheus::Counter,
    /// The series labelled by account.
    pub accounts: AccountMetrics,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(PREFIX)
}

/// A labelled counter, registered on `registry`.
fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let counter = IntCounterVec::new(opts(name, help), labels)?;
    registry.register(Box::new(counter.clone()))?;
    Ok(counter)
}

impl Metrics {
    /// Registers every metric on `registry`. `actions` are the mapped actions: any other
    /// action is counted as `other`.
    pub fn new<'a>(
        registry: Registry,
        actions: impl IntoIterator<Item = &'a str>,
    ) -> prometheus::Result<Metrics> {
        let counter =
            |name: &str, help: &str, labels: &[&str]| counter_vec(&registry, name, help, labels);
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::with_opts(opts(name, help))?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let histogram =
            |name: &str, help: &str, buckets: Vec<f64>| -> prometheus::Result<Histogram> {
                let h = Histogram::with_opts(
                    HistogramOpts::new(name, help)
                        .namespace(PREFIX)
                        .buckets(buckets),
                )?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let seconds = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ];
        let latency = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            900.0, 3600.0,
        ];
        let events_consumed = counter(
            "events_consumed_total",
            "Records consumed from the source topics.",
            &["topic"],
        )?;
        let values_truncated = IntCounter::with_opts(opts(
            "attribute_values_truncated_total",
            "Attribute values cut to mParticle's 4096 characters.",
        ))?;
        registry.register(Box::new(values_truncated.clone()))?;
        let consumer_lag = IntGaugeVec::new(
            opts(
                "consumer_lag",
                "Records behind the end of each partition, from librdkafka's statistics.",
            ),
            &["topic", "partition"],
        )?;
        registry.register(Box::new(consumer_lag.clone()))?;
        let accounts = AccountMetrics::register(&registry)?;
        let metrics = Metrics {
            accounts,
            known_actions: actions.into_iter().map(str::to_string).collect(),
            events_consumed,
            events_delivered: counter(
                "events_delivered_total",
                "Events mParticle accepted.",
                &["action"],
            )?,
            events_retried: counter(
                "events_retried_total",
                "Events scheduled for another attempt.",
                &["action", "kind"],
            )?,
            events_dead_lettered: counter(
                "events_dead_lettered_total",
                "Events written to the dead-letter topic.",
                &["action", "kind"],
            )?,
            events_skipped: counter(
                "events_skipped_total",
                "Events skipped by configuration.",
                &["reason"],
            )?,
            values_truncated,
            http_requests: counter(
                "http_requests_total",
                "Requests to the Events API by answer.",
                &["status"],
            )?,
            http_request_duration: histogram(
                "http_request_duration_seconds",
                "Events API request duration.",
                seconds,
            )?,
            delivery_latency: histogram(
                "delivery_latency_seconds",
                "Record timestamp to mParticle's acceptance.",
                latency,
            )?,
            bulk_size: histogram(
                "batches_per_request",
                "Batches in each Events API request.",
                vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0],
            )?,
            events_per_batch: histogram(
                "events_per_batch",
                "Events in each delivered batch (its count is the batches delivered, which the rate limit counts): more than one when a customer's records waited together (MPARTICLE_MAX_EVENTS_PER_BATCH).",
                vec![1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0],
            )?,
            oldest_due_retry_age: {
                let g = prometheus::Gauge::with_opts(opts(
                    "retry_oldest_due_age_seconds",
                    "How long the oldest retry that is due has waited to be sent (0: none waiting).",
                ))?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            retry_scheduled: gauge("retry_scheduled", "Records waiting for their next attempt.")?,
            consumer_lag,
            auth_failed: gauge(
                "mparticle_auth_failed",
                "1 while stopped by a 401 or 403 from mParticle.",
            )?,
            outage: gauge(
                "mparticle_outage",
                "1 while consumption is paused because every recent request failed retryably.",
            )?,
            gate_openings: counter(
                "delivery_paused_total",
                "Times delivery paused, by reason (auth, outage).",
                &["reason"],
            )?,
            records_in_flight: gauge(
                "records_in_flight",
                "Records consumed and without a final outcome yet.",
            )?,
            bytes_in_flight: gauge(
                "bytes_in_flight",
                "Bytes of record values and keys held in memory (source records in flight, retries waiting or sent), within MAX_IN_FLIGHT_BYTES each.",
            )?,
            customers_held: gauge(
                "customers_held_behind_retry",
                "Customers whose later records wait behind one of their records waiting for a retry.",
            )?,
            records_held: gauge(
                "records_held_behind_retry",
                "Records of held customers in the retry path: the retries they wait behind, and the records waiting behind those.",
            )?,
            requests_in_flight: gauge("requests_in_flight", "Events API requests under way.")?,
            rebalances: counter(
                "rebalances_total",
                "Consumer group rebalances seen.",
                &["kind"],
            )?,
            pacing_rate: {
                let g = prometheus::Gauge::with_opts(opts(
                    "pacing_rate_batches_per_second",
                    "The rate the pacer allows now, learnt from mParticle's answers and bounded by MPARTICLE_MAX_BATCHES_PER_SECOND.",
                ))?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            rate_limited: counter(
                "rate_limited_total",
                "429 answers, by the limit mParticle named (X-mp-rate-limit-exceeded; unnamed when absent).",
                &["limit"],
            )?,
            pacing_held: {
                let c = prometheus::Counter::with_opts(opts(
                    "pacing_held_seconds_total",
                    "Seconds requests were held back by the pacer: the rate, and Retry-After holds.",
                ))?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            registry,
        };
        // Series of bounded label sets exist from the start, so that rate() and alerts see a
        // zero rather than nothing.
        let actions = metrics
            .known_actions
            .iter()
            .map(String::as_str)
            .chain([OTHER_ACTION]);
        for action in actions {
            metrics.events_delivered.with_label_values(&[action]);
            // increase() in the dead-letter alert needs a series before its first event.
            for kind in crate::outcome::ALL_KINDS {
                metrics
                    .events_retried
                    .with_label_values(&[action, kind.as_str()]);
                metrics
                    .events_dead_lettered
                    .with_label_values(&[action, kind.as_str()]);
            }
        }
        for reason in [Reason::Auth, Reason::Outage] {
            metrics
                .gate_openings
                .with_label_values(&[reason_label(reason)]);
        }
        metrics
            .events_skipped
            .with_label_values(&["unmapped_action"]);
        for limit in LimitHit::ALL {
            metrics.rate_limited.with_label_values(&[limit.as_str()]);
        }
        Ok(metrics)
    }

    /// The action as a bounded label.
    pub fn action_label<'a>(&self, action: &'a str) -> &'a str {
        if self.known_actions.contains(action) {
            action
        } else {
            OTHER_ACTION
        }
    }

    pub fn events_consumed(&self, topic: &str, count: u64) {
        self.events_consumed
            .with_label_values(&[topic])
            .inc_by(count);
    }

    pub fn events_delivered(&self, action: &str, count: u64) {
        let label = self.action_label(action);
        self.events_delivered
            .with_label_values(&[label])
            .inc_by(count);
    }

    pub fn event_retried(&self, action: &str, kind: ErrorKind) {
        let label = self.action_label(action);
        self.events_retried
            .with_label_values(&[label, kind.as_str()])
            .inc();
    }

    pub fn event_dead_lettered(&self, action: &str, kind: ErrorKind) {
        let label = self.action_label(action);
        self.events_dead_lettered
            .with_label_values(&[label, kind.as_str()])
            .inc();
    }

    pub fn event_skipped(&self, reason: &'static str) {
        self.events_skipped.with_label_values(&[reason]).inc();
    }

    pub fn values_truncated(&self, count: u32) {
        if count > 0 {
            self.values_truncated.inc_by(u64::from(count));
        }
    }

    /// One Events API request finished with `status_label` after `elapsed`.
    pub fn http_request(&self, status_label: &str, elapsed: Duration, batches: usize) {
        self.http_requests.with_label_values(&[status_label]).inc();
        self.http_request_duration.observe(elapsed.as_secs_f64());
        self.bulk_size.observe(batches as f64);
    }

    /// The batches of one delivered request, by the events each carried.
    pub fn batches_delivered(&self, events: impl Iterator<Item = usize>) {
        let local = self.events_per_batch.local();
        for n in events {
            local.observe(n as f64);
        }
        local.flush();
    }

    /// The latencies of one request's records, added to the histogram at once.
    pub fn delivery_latencies(&self, latencies: impl Iterator<Item = Duration>) {
        let local = self.delivery_latency.local();
        for latency in latencies {
            local.observe(latency.as_secs_f64());
        }
        local.flush();
    }

    pub fn set_retry_scheduled(&self, waiting: usize) {
        self.retry_scheduled.set(waiting as i64);
    }

    pub fn set_oldest_due_retry_age(&self, age: Duration) {
        self.oldest_due_retry_age.set(age.as_secs_f64());
    }

    pub fn set_consumer_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.consumer_lag
            .with_label_values(&[topic, &partition.to_string()])
            .set(lag);
    }

    pub fn forget_consumer_lag(&self, topic: &str, partition: i32) {
        let _ = self
            .consumer_lag
            .remove_label_values(&[topic, &partition.to_string()]);
    }

    pub fn set_auth_failed(&self, failed: bool) {
        self.auth_failed.set(i64::from(failed));
    }

    /// The delivery gate opened or closed.
    /// An account's gate changed; `outage` is whether some account is now stopped by an
    /// outage.
    pub fn gate_changed(&self, change: Change, outage: bool) {
        if let Change::Opened(reason) = change {
            self.gate_openings
                .with_label_values(&[reason_label(reason)])
                .inc();
        }
        self.outage.set(i64::from(outage));
    }

    pub fn set_bytes_in_flight(&self, bytes: u64) {
        self.bytes_in_flight.set(bytes as i64);
    }

    pub fn set_held_behind_retries(&self, customers: usize, records: usize) {
        self.customers_held.set(customers as i64);
        self.records_held.set(records as i64);
    }

    pub fn records_in_flight_add(&self, delta: i64) {
        self.records_in_flight.add(delta);
    }

    pub fn requests_in_flight_add(&self, delta: i64) {
        self.requests_in_flight.add(delta);
    }

    pub fn set_pacing_rate(&self, batches_per_second: f64) {
        self.pacing_rate.set(batches_per_second);
    }

    /// mParticle answered 429, naming `limit`.
    pub fn rate_limited(&self, limit: LimitHit) {
        self.rate_limited.with_label_values(&[limit.as_str()]).inc();
    }

    /// Requests were held back for `held` by the pacer.
    pub fn pacing_held(&self, held: Duration) {
        if !held.is_zero() {
            self.pacing_held.inc_by(held.as_secs_f64());
        }
    }

    pub fn rebalance(&self, kind: &'static str) {
        self.rebalances.with_label_values(&[kind]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_actions_are_counted_as_other() {
        let metrics = Metrics::new(Registry::new(), ["point_add"]).unwrap();
        metrics.events_delivered("point_add", 2);
        metrics.event_dead_lettered("who-knows-what-9f8a", ErrorKind::Unmapped);
        let text = metrics.render();
        assert!(
            text.contains(r#"mparticle_forwarder_events_delivered_total{action="point_add"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"mparticle_forwarder_events_dead_lettered_total{action="other",kind="unmapped_action"} 1"#));
        assert!(!text.contains("who-knows-what"));
    }

    #[test]
    fn every_retry_and_dead_letter_series_exists_from_the_start() {
        let metrics = Metrics::new(Registry::new(), ["point_add"]).unwrap();
        let text = metrics.render();
        for action in ["point_add", "other"] {
            for kind in crate::outcome::ALL_KINDS {
                let kind = kind.as_str();
                for name in ["events_retried_total", "events_dead_lettered_total"] {
                    let series = format!(
                        r#"mparticle_forwarder_{name}{{action="{action}",kind="{kind}"}} 0"#
                    );
                    assert!(text.contains(&series), "{series}");
                }
            }
        }
    }
}
