//! The pacing benchmark (not a test): one to three release forwarders, as processes, drain
//! a backlog into the stand-in, which enforces one account's limit over all of them (as
//! mParticle does) and sends `X-mp-rate-limit-percentage-used` on its 2xx answers.
//!
//! `scripts/bench-pacing.sh [--events N] [--limit L]` builds and runs it; BENCHMARKS.md has
//! the figures. Reports a table over 1, 2 and 3 replicas × `Retry-After` on the 429s or not
//! × `MPARTICLE_MAX_BATCHES_PER_SECOND` set to the whole limit on each replica or not: the
//! share of the limit achieved while draining and the share of requests answered 429
//! (in all, and after the first 3 s); then how long one replica takes to settle when the
//! limit drops from 300 to 100 and rises back. Then a backlog of 20,000 events of 2,000
//! customers against 270 batches/s, with a customer's waiting events merged into one batch
//! and without (`MPF_BENCH_ONLY_MERGING=1` runs only that).

use std::process::Child;
use std::time::{Duration, Instant};

use mparticle_forwarder::standin::{RequestLog, StandIn, StandInConfig};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

#[path = "support/events.rs"]
mod events;
// The pipeline benchmark uses the rest of it.
#[allow(dead_code)]
#[path = "support/harness.rs"]
mod harness;
use harness::{Bench, KEY, SECRET, unique};

/// Learning is the first seconds of a drain; 429s after it are the steady state's.
const LEARNING: Duration = Duration::from_secs(3);

fn arg(name: &str, default: f64) -> f64 {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == name {
            return args.next().and_then(|v| v.parse().ok()).expect(name);
        }
    }
    default
}

async fn limited_standin(limit: f64, retry_after: Option<u32>) -> StandIn {
    StandIn::start_local(StandInConfig {
        api_key: KEY.into(),
        api_secret: SECRET.into(),
        rate_limit: Some(limit),
        rate_limit_retry_after: retry_after,
        ..StandInConfig::default()
    })
    .await
    .unwrap()
}

/// Records written to `topic` (its partitions' end offsets added up).
fn records_in(bench: &Bench, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bench.bootstrap)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap();
            high - low
        })
        .sum()
}

/// One forwarder group of `replicas` processes draining `topics` into `standin`.
struct Replicas {
    children: Vec<Child>,
    group: String,
}

impl Replicas {
    async fn start(
        bench: &Bench,
        standin: &StandIn,
        topics: &[String],
        replicas: usize,
        extra: &[(&str, String)],
    ) -> Replicas {
        let group = bench.forwarder_group("pacing").await;
        let children = (0..replicas)
            .map(|_| bench.spawn_forwarder(standin, topics, &group, extra))
            .collect();
        Replicas { children, group }
    }

    /// Stops the processes; returns the records they wrote to the retry and dead-letter
    /// topics.
    fn stop(mut self, bench: &Bench) -> (i64, i64) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        (
            records_in(bench, &format!("{}.retry-topic", self.group)),
            records_in(bench, &format!("{}.dlq-topic", self.group)),
        )
    }
}

/// Waits until `count` distinct events were accepted, for at most `timeout`.
async fn wait_for_unique(standin: &StandIn, count: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let unique: std::collections::HashSet<String> =
            standin.accepted_event_ids().into_iter().collect();
        if unique.len() >= count {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One cell of the table.
struct Drain {
    achieved: f64,
    achieved_after_learning: f64,
    refused_share: f64,
    refused_after_learning: f64,
    requests: usize,
    secs: f64,
    retried: i64,
    dead_lettered: i64,
    duplicates: usize,
}

/// A drain's shares of the limit and of refused requests, from its first acceptance to
/// its last, and from the end of learning on.
struct Shares {
    achieved: f64,
    achieved_after_learning: f64,
    refused: f64,
    refused_after_learning: f64,
    secs: f64,
}

fn shares(requests: &[RequestLog], limit: f64) -> Shares {
    let first = requests.iter().find(|r| r.status == 202).unwrap().at_ms;
    let learnt = first + LEARNING.as_millis() as i64;
    // Batches accepted per second of the limit from `from` to the last acceptance; the
    // last request's batches arrive at its end, so the span is over the others.
    let achieved = |from: i64| {
        let accepted: Vec<&RequestLog> = requests
            .iter()
            .filter(|r| r.status == 202 && r.at_ms >= from)
            .collect();
        let last = accepted[accepted.len() - 1].at_ms;
        let batches: usize = accepted[..accepted.len() - 1]
            .iter()
            .map(|r| r.ids.len())
            .sum();
        let secs = ((last - from) as f64 / 1000.0).max(0.001);
        (batches as f64 / secs / limit, secs)
    };
    let refused = |from: i64| {
        let rs: Vec<&RequestLog> = requests.iter().filter(|r| r.at_ms >= from).collect();
        rs.iter().filter(|r| r.status == 429).count() as f64 / rs.len().max(1) as f64
    };
    let (all, secs) = achieved(first);
    Shares {
        achieved: all,
        achieved_after_learning: achieved(learnt).0,
        refused: refused(0),
        refused_after_learning: refused(learnt),
        secs,
    }
}

async fn drain(
    bench: &Bench,
    events: usize,
    limit: f64,
    replicas: usize,
    retry_after: Option<u32>,
    configured: bool,
) -> Drain {
    let topics = vec![unique("pacing-a"), unique("pacing-b")];
    bench.create_topics(&topics, 6).await;
    bench.preload(&topics, events).await;
    let standin = limited_standin(limit, retry_after).await;
    let extra: Vec<(&str, String)> = if configured {
        vec![("MPARTICLE_MAX_BATCHES_PER_SECOND", limit.to_string())]
    } else {
        vec![]
    };
    let group = Replicas::start(bench, &standin, &topics, replicas, &extra).await;
    let timeout = Duration::from_secs_f64(events as f64 / limit * 4.0 + 60.0);
    let done = wait_for_unique(&standin, events, timeout).await;
    let (retried, dead_lettered) = group.stop(bench);
    assert!(done, "the backlog did not drain in {timeout:?}");
    let requests = standin.requests();
    if std::env::var_os("MPF_BENCH_TRACE").is_some() {
        trace(&requests, requests[0].at_ms);
    }
    let shares = shares(&requests, limit);
    let duplicates = standin.accepted_event_count() - events;
    standin.stop();
    Drain {
        achieved: shares.achieved,
        achieved_after_learning: shares.achieved_after_learning,
        refused_share: shares.refused,
        refused_after_learning: shares.refused_after_learning,
        requests: requests.len(),
        secs: shares.secs,
        retried,
        dead_lettered,
        duplicates,
    }
}

/// A customer's events merged into one batch: a backlog of `events` events of `customers`
/// customers (each customer's spread evenly over it, keyed by customer) drained by one
/// replica against `limit` batches/s, with `extra` settings. Returns the events and the
/// batches delivered per second, and the forwarder's peak RSS in MiB.
async fn merged_backlog(
    bench: &Bench,
    events: usize,
    customers: usize,
    limit: f64,
    extra: &[(&str, String)],
) -> (f64, f64, f64) {
    let topics = vec![unique("merging-a"), unique("merging-b")];
    bench.create_topics(&topics, 6).await;
    bench
        .preload_with(&topics, events, customers, |i| {
            events::event_of(i, customers, true)
        })
        .await;
    let standin = limited_standin(limit, Some(1)).await;
    let group = bench.forwarder_group("merging").await;
    let mut child = bench.spawn_forwarder(&standin, &topics, &group, extra);
    let timeout = Duration::from_secs_f64(events as f64 / limit * 2.0 + 60.0);
    let done = wait_for_unique(&standin, events, timeout).await;
    let (_, peak_rss) = harness::cpu_and_peak_rss(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(done, "the backlog did not drain in {timeout:?}");
    let batches_per_s = shares(&standin.requests(), limit).achieved * limit;
    let events_per_batch = standin.accepted_event_count() as f64 / standin.accepted_count() as f64;
    standin.stop();
    (
        batches_per_s * events_per_batch,
        batches_per_s,
        peak_rss as f64 / 1048576.0,
    )
}

/// One replica drains while the limit goes `high` → `low` → `high`; returns the seconds it
/// took to settle after the drop (429s over, and the accepted rate back at 90% of the
/// lower limit) and after the rise (the accepted rate at 90% of the higher limit).
async fn settle(bench: &Bench, high: f64, low: f64) -> (f64, f64) {
    let phase = Duration::from_secs(15);
    // More than the three phases can take, so that the backlog never runs dry.
    let events = (high * 3.0 * phase.as_secs_f64() + low * phase.as_secs_f64()) as usize;
    let topics = vec![unique("settle-a"), unique("settle-b")];
    bench.create_topics(&topics, 6).await;
    bench.preload(&topics, events).await;
    let standin = limited_standin(high, Some(1)).await;
    let group = Replicas::start(bench, &standin, &topics, 1, &[]).await;
    // The first phase begins once the forwarder delivers.
    while standin.accepted_count() == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(phase).await;
    let dropped_at = mparticle_forwarder::clock::unix_ms();
    standin.set_rate_limit(Some(low));
    tokio::time::sleep(phase).await;
    let raised_at = mparticle_forwarder::clock::unix_ms();
    standin.set_rate_limit(Some(high));
    tokio::time::sleep(phase).await;
    group.stop(bench);
    let requests = standin.requests();
    standin.stop();
    if std::env::var_os("MPF_BENCH_TRACE").is_some() {
        trace(&requests, dropped_at - phase.as_millis() as i64);
    }
    let last_refusal = requests
        .iter()
        .filter(|r| r.status == 429 && (dropped_at..raised_at).contains(&r.at_ms))
        .map(|r| r.at_ms)
        .max()
        .unwrap_or(dropped_at);
    let drop_settled = reaches(&requests, dropped_at, raised_at, 0.9 * low).max(last_refusal);
    let rise_settled = reaches(&requests, raised_at, i64::MAX, 0.9 * high);
    (
        (drop_settled - dropped_at) as f64 / 1000.0,
        (rise_settled - raised_at) as f64 / 1000.0,
    )
}

/// Prints each second's accepted batches and 429s from `from` on (`MPF_BENCH_TRACE=1`).
fn trace(requests: &[RequestLog], from: i64) {
    let mut second = from;
    let end = requests.last().map_or(from, |r| r.at_ms);
    while second < end {
        let in_second = requests
            .iter()
            .filter(|r| (second..second + 1000).contains(&r.at_ms));
        let (accepted, refused) = in_second.fold((0, 0), |(a, f), r| match r.status {
            202 => (a + r.ids.len(), f),
            _ => (a, f + 1),
        });
        println!(
            "  second {:>3}: {accepted} batches accepted, {refused} requests refused",
            (second - from) / 1000
        );
        second += 1000;
    }
}

/// The first moment in `from..until` at which the batches accepted in the trailing
/// second are at least `rate`, and stay so for the next three seconds.
fn reaches(requests: &[RequestLog], from: i64, until: i64, rate: f64) -> i64 {
    let accepted: Vec<(i64, usize)> = requests
        .iter()
        .filter(|r| r.status == 202 && (from..until).contains(&r.at_ms))
        .map(|r| (r.at_ms, r.ids.len()))
        .collect();
    let end = accepted.last().map_or(from, |(at, _)| *at);
    let holds = |t: i64| {
        let in_second: usize = accepted
            .iter()
            .filter(|(at, _)| (t - 1000..t).contains(at))
            .map(|(_, n)| n)
            .sum();
        in_second as f64 >= rate
    };
    let mut t = from + 1000;
    while t + 3000 <= end {
        if (0..=30).all(|step| holds(t + step * 100)) {
            return t;
        }
        t += 100;
    }
    end
}

#[tokio::main]
async fn main() {
    let bench = Bench::from_env();
    if std::env::var_os("MPF_BENCH_ONLY_MERGING").is_none() {
        limits(&bench).await;
    }
    let (events, customers, limit) = (20_000, 2_000, 270.0);
    println!();
    println!(
        "## Merging: a backlog of {events} events of {customers} customers (ten each, spread over it) against {limit} batches/s, one replica"
    );
    println!();
    println!("| MPARTICLE_MAX_EVENTS_PER_BATCH | events/s | batches/s | peak RSS (MiB) |");
    println!("|---|---|---|---|");
    for max_events in ["100 (default)", "1"] {
        let setting = max_events.split(' ').next().unwrap().to_string();
        let extra = [("MPARTICLE_MAX_EVENTS_PER_BATCH", setting)];
        let (events_per_s, batches_per_s, rss) =
            merged_backlog(&bench, events, customers, limit, &extra).await;
        println!("| {max_events} | {events_per_s:.0} | {batches_per_s:.0} | {rss:.1} |");
    }
}

/// The table of limits and replicas, and the settling times.
async fn limits(bench: &Bench) {
    let events = arg("--events", 6_000.0) as usize;
    let limit = arg("--limit", 300.0);
    println!("## Pacing: a backlog of {events} events against a shared limit of {limit} batches/s");
    println!();
    println!(
        "| replicas | Retry-After | rate configured | share of the limit | after the first 3 s | requests answered 429 | after the first 3 s | requests | drain (s) | retried | dead-lettered | duplicates |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    // MPF_BENCH_REPLICAS="1 3" runs only those rows.
    let counts: Vec<usize> = std::env::var("MPF_BENCH_REPLICAS")
        .map(|v| {
            v.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_else(|_| vec![1, 2, 3]);
    for replicas in counts {
        for retry_after in [Some(1), None] {
            for configured in [false, true] {
                let d = drain(bench, events, limit, replicas, retry_after, configured).await;
                println!(
                    "| {replicas} | {} | {} | {:.1}% | {:.1}% | {:.2}% | {:.2}% | {} | {:.1} | {} | {} | {} |",
                    if retry_after.is_some() {
                        "1 s"
                    } else {
                        "absent"
                    },
                    if configured {
                        "each to the whole limit"
                    } else {
                        "no"
                    },
                    d.achieved * 100.0,
                    d.achieved_after_learning * 100.0,
                    d.refused_share * 100.0,
                    d.refused_after_learning * 100.0,
                    d.requests,
                    d.secs,
                    d.retried,
                    d.dead_lettered,
                    d.duplicates,
                );
            }
        }
    }
    if std::env::var_os("MPF_BENCH_SKIP_SETTLE").is_some() {
        return;
    }
    let (after_drop, after_rise) = settle(bench, 300.0, 100.0).await;
    println!();
    println!(
        "settling, one replica: the limit dropped from 300 to 100 batches/s: {after_drop:.1} s; rose back to 300: {after_rise:.1} s"
    );
}
