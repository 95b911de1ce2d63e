//! The end-to-end benchmark (not a test): the local Kafka broker, the stand-in in fast
//! mode, and the release forwarder as its own process, measured from outside.
//!
//! `scripts/bench.sh [--events N]` builds and runs it; BENCHMARKS.md has the figures.
//! Reports, in order: the sink's own capacity; a consume-only floor over the preloaded
//! topics (librdkafka alone: no decoding, no HTTP); the forwarder draining the same
//! backlog (events per second, CPU seconds per million events, peak RSS); latency at a
//! steady 5,000 events per second, after a warm-up through the same forwarder. Pacing
//! against rate limits is `benches/pacing.rs`.

use std::process::Command;
use std::time::{Duration, Instant};

use mparticle_forwarder::standin::{Fault, StandIn, StandInConfig};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[path = "support/events.rs"]
mod events;
#[path = "support/harness.rs"]
mod harness;
use events::event;
use harness::{Bench, KEY, SECRET, cpu_and_peak_rss, forwarder_env, unique};

struct Args {
    events: usize,
    bench: Bench,
}

fn args() -> Args {
    let mut events = 1_000_000;
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        if arg == "--events" {
            events = iter
                .next()
                .and_then(|v| v.parse().ok())
                .expect("--events N");
        }
    }
    Args {
        events,
        bench: Bench::from_env(),
    }
}

/// The fast sink: no limit, no contract checks.
async fn standin() -> StandIn {
    StandIn::start_local(StandInConfig {
        api_key: KEY.into(),
        api_secret: SECRET.into(),
        fast: true,
        ..StandInConfig::default()
    })
    .await
    .unwrap()
}

/// How many batches per second the fast sink takes, from 8 concurrent clients sending
/// bulk requests of 100 batches for 3 s.
async fn sink_capacity() -> f64 {
    let sink = standin().await;
    let body: Vec<u8> = {
        let batches: Vec<String> = (0..100)
            .map(|i| {
                let text =
                    std::fs::read_to_string("tests/data/events/point_add.expected-batch.json")
                        .unwrap();
                let compact: serde_json::Value =
                    serde_json::from_str(&text.replace("evt_01JD4T9F3M2K", &format!("cap-{i}")))
                        .unwrap();
                compact.to_string()
            })
            .collect();
        format!("[{}]", batches.join(",")).into_bytes()
    };
    let url = sink.events_url().replace("/events", "/bulkevents");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let _ = client
                    .post(&url)
                    .basic_auth(KEY, Some(SECRET))
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await;
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let rate = sink.accepted_count() as f64 / started.elapsed().as_secs_f64();
    sink.stop();
    rate
}

/// One forwarder drain of the preloaded topics.
struct Drain {
    total_secs: f64,
    steady_secs: f64,
    cpu_secs: f64,
    peak_rss_mib: f64,
    requests: u64,
    duplicates: usize,
}

/// A fresh consumer group drains `topics` into a fresh fast sink.
async fn drain(a: &Args, topics: &[String]) -> Drain {
    let sink = standin().await;
    let group = a.bench.forwarder_group("group").await;
    let started = Instant::now();
    let mut child = a.bench.spawn_forwarder(&sink, topics, &group, &[]);
    let mut first_at = None;
    while sink.unique_accepted() < a.events {
        if first_at.is_none() && sink.accepted_count() > 0 {
            first_at = Some(Instant::now());
        }
        if started.elapsed() > Duration::from_secs(900) {
            panic!(
                "only {} of {} delivered in 15 minutes",
                sink.unique_accepted(),
                a.events
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total_secs = started.elapsed().as_secs_f64();
    let steady_secs = first_at.map_or(total_secs, |f| f.elapsed().as_secs_f64());
    let (cpu_secs, rss) = cpu_and_peak_rss(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let run = Drain {
        total_secs,
        steady_secs,
        cpu_secs,
        peak_rss_mib: rss as f64 / 1048576.0,
        requests: sink.status_counts().values().sum::<u64>(),
        duplicates: sink.accepted_event_count() - sink.unique_accepted(),
    };
    sink.stop();
    run
}

/// Compares forwarder binaries (`MPF_BENCH_COMPARE="A B"`, `MPF_BENCH_ROUNDS` rounds,
/// default 6): one preload, then drains that take turns, A B in odd rounds and B A in even
/// ones, each in a fresh group with a fresh sink. The machine's speed drifts between
/// minutes (BENCHMARKS.md), so what is compared is each round's pair, a few seconds apart.
async fn compare(a: &Args, binaries: Vec<String>) {
    let [first, second] = <[String; 2]>::try_from(binaries).expect("two binaries to compare");
    let rounds: usize = std::env::var("MPF_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(6)
        .max(1);
    let topics = vec![unique("point-add"), unique("reward-claim")];
    a.bench.create_topics(&topics, 3).await;
    a.bench.preload(&topics, a.events).await;
    let per_million = |cpu: f64| cpu / a.events as f64 * 1e6;
    let (mut costs_a, mut costs_b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let mut pair = [0f64; 2];
        let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for which in order {
            let binary = [&first, &second][which];
            let run = drain(
                &Args {
                    bench: Bench {
                        forwarder: binary.clone(),
                        bootstrap: a.bench.bootstrap.clone(),
                        accounts: a.bench.accounts,
                    },
                    events: a.events,
                },
                &topics,
            )
            .await;
            pair[which] = per_million(run.cpu_secs);
            println!(
                "round {round} {}: {:.2} CPU s per million events, {:.0} events/s, peak RSS {:.1} MiB ({binary})",
                ["A", "B"][which],
                pair[which],
                a.events as f64 / run.total_secs,
                run.peak_rss_mib,
            );
        }
        costs_a.push(pair[0]);
        costs_b.push(pair[1]);
        ratios.push(pair[1] / pair[0]);
    }
    let spread = |v: &[f64], digits: usize| {
        let (low, high) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
        format!("{low:.digits$} to {high:.digits$}")
    };
    let b_cheaper = ratios.iter().filter(|&&r| r < 1.0).count();
    println!(
        "A: median {:.2} CPU s per million events ({}); B: median {:.2} ({}); \
         B/A in the same round: median {:.3} ({}), B cheaper in {b_cheaper} of {rounds} rounds",
        median(&mut costs_a.clone()),
        spread(&costs_a, 2),
        median(&mut costs_b.clone()),
        spread(&costs_b, 2),
        median(&mut ratios.clone()),
        spread(&ratios, 3),
    );
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The floor: a consume-only pass in a child process (this binary with `--floor`).
/// Returns the seconds from start, the CPU seconds, and the seconds from the first record.
fn floor(a: &Args, topics: &[String]) -> (f64, f64, f64) {
    let started = Instant::now();
    let output = Command::new(std::env::current_exe().unwrap())
        .arg("--floor-child")
        .env("FLOOR_TOPICS", topics.join(","))
        .env("FLOOR_EVENTS", a.events.to_string())
        .env("MPF_TEST_KAFKA", &a.bench.bootstrap)
        .output()
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut figures = stdout
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(f64::NAN));
    let cpu = figures.next().unwrap_or(f64::NAN);
    let from_first = figures.next().unwrap_or(f64::NAN);
    (elapsed, cpu, from_first)
}

fn floor_child() {
    let topics: Vec<String> = std::env::var("FLOOR_TOPICS")
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    let events: usize = std::env::var("FLOOR_EVENTS").unwrap().parse().unwrap();
    let kafka = mparticle_forwarder::config::KafkaConfig {
        bootstrap_servers: std::env::var("MPF_TEST_KAFKA").unwrap(),
        group_id: unique("floor"),
        group_instance_id: None,
        topics: topics.clone(),
        retry_topic: "unused".into(),
        dlq_topic: "unused".into(),
        // The experiment's librdkafka properties apply to the floor as to the forwarder.
        properties: forwarder_env()
            .into_iter()
            .filter_map(|(name, value)| {
                let property = name.strip_prefix("KAFKA_PROPERTY_")?;
                Some((
                    property.to_lowercase().replace('_', "."),
                    mparticle_forwarder::config::KafkaPropertyValue::Plain(value),
                ))
            })
            .collect(),
    };
    // The forwarder's own consumer settings, so the floor differs only in what is done per record.
    let consumer: BaseConsumer =
        mparticle_forwarder::kafka::settings::consumer(&kafka, &kafka.group_id)
            .create()
            .unwrap();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names).unwrap();
    let mut seen = 0usize;
    let mut bytes = 0usize;
    let mut first_at = None;
    while seen < events {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            first_at.get_or_insert_with(Instant::now);
            seen += 1;
            bytes += rdkafka::Message::payload(&m).map_or(0, <[u8]>::len);
        }
    }
    std::hint::black_box(bytes);
    let (cpu, _) = cpu_and_peak_rss(std::process::id());
    let from_first = first_at.map_or(f64::NAN, |f| f.elapsed().as_secs_f64());
    println!("{cpu} {from_first}");
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--floor-child") {
        floor_child();
        return;
    }
    let a = args();
    if let Ok(binaries) = std::env::var("MPF_BENCH_COMPARE") {
        compare(
            &a,
            binaries.split_whitespace().map(str::to_string).collect(),
        )
        .await;
        return;
    }
    if std::env::var_os("MPF_BENCH_ONLY_LATENCY").is_some() {
        latency(&a).await;
        return;
    }
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    println!("## Run of {}", chrono_free_now());
    println!(
        "machine: {} cores ({cpu_model}), {} GiB",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_gib()
    );
    println!("events: {}", a.events);
    if a.bench.accounts > 0 {
        println!(
            "accounts: {} (MPARTICLE_ACCOUNTS_FILE, routed by a header; one customer, one account)",
            a.bench.accounts
        );
    }

    let capacity = sink_capacity().await;
    println!("sink capacity (fast stand-in, 8 clients, bulk of 100): {capacity:.0} batches/s");

    let topics = vec![unique("point-add"), unique("reward-claim")];
    a.bench.create_topics(&topics, 3).await;
    let (preload_secs, average_bytes) = a.bench.preload(&topics, a.events).await;
    println!(
        "preloaded {} events ({average_bytes} B on average, lz4) into 2 topics x 3 partitions in {preload_secs:.1} s",
        a.events
    );

    // One drain is one sample of a noisy machine (BENCHMARKS.md: the same build varies by
    // 20% between minutes), so floor and forwarder take turns for a few rounds, each
    // forwarder round in a fresh group, and the medians are the figures.
    let rounds: usize = std::env::var("MPF_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    let per_million = |cpu: f64| cpu / a.events as f64 * 1e6;
    let (mut floors, mut drains, mut ratios, mut rates, mut peak_rss) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), 0f64);
    for round in 1..=rounds {
        if rounds > 1 {
            println!("round {round} of {rounds}:");
        }
        let (floor_secs, floor_cpu, floor_steady) = floor(&a, &topics);
        println!(
            "floor (librdkafka consume only): {:.0} events/s from start, {:.0} events/s from the first record; \
             {:.2} CPU s per million events",
            a.events as f64 / floor_secs,
            a.events as f64 / floor_steady,
            per_million(floor_cpu)
        );
        let run = drain(&a, &topics).await;
        println!(
            "forwarder: {:.0} events/s from start ({:.1} s), {:.0} events/s from the first delivery; \
             {:.2} CPU s per million events ({:.1}x the floor); peak RSS {:.1} MiB; {} requests, {} duplicates",
            a.events as f64 / run.total_secs,
            run.total_secs,
            a.events as f64 / run.steady_secs,
            per_million(run.cpu_secs),
            run.cpu_secs / floor_cpu,
            run.peak_rss_mib,
            run.requests,
            run.duplicates,
        );
        floors.push(per_million(floor_cpu));
        drains.push(per_million(run.cpu_secs));
        ratios.push(run.cpu_secs / floor_cpu);
        rates.push(a.events as f64 / run.total_secs);
        peak_rss = peak_rss.max(run.peak_rss_mib);
    }
    if rounds > 1 {
        println!(
            "medians over {rounds} rounds: floor {:.2} CPU s per million events, forwarder {:.2} \
             ({:.1}x the floor, the median of the rounds' ratios), {:.0} events/s from start; \
             highest peak RSS {peak_rss:.1} MiB",
            median(&mut floors),
            median(&mut drains),
            median(&mut ratios),
            median(&mut rates),
        );
    }

    if std::env::var_os("MPF_BENCH_SKIP_LATENCY").is_none() {
        latency(&a).await;
    }
}

async fn latency(a: &Args) {
    let sink = standin().await;
    let warm_topic = unique("lat-warm-up");
    let topics = vec![unique("lat-a"), unique("lat-b")];
    let subscribed: Vec<String> = std::iter::once(warm_topic.clone())
        .chain(topics.iter().cloned())
        .collect();
    a.bench.create_topics(&subscribed, 3).await;
    let group = a.bench.forwarder_group("lat-group").await;
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = format!("127.0.0.1:{admin_port}");
    // With MPF_BENCH_HELD_CUSTOMER, one customer's events (one in a thousand) are held
    // behind its first, which fails three times: the others' latency should not move.
    let held = std::env::var_os("MPF_BENCH_HELD_CUSTOMER").is_some();
    let mut env = vec![("ADMIN_ADDR", admin.clone())];
    if held {
        env.push(("RETRY_BACKOFF", "1s".to_string()));
    }
    let mut child = a.bench.spawn_forwarder(&sink, &subscribed, &group, &env);
    // Produce only once the consumer has joined its group (readyz), so that the join is
    // not counted as latency.
    let ready_url = format!("http://{admin}/readyz");
    for _ in 0..300 {
        if reqwest::get(&ready_url)
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let producer = paced_producer(&a.bench.bootstrap);
    let rate = 5_000usize;
    let seconds = 20usize;
    if std::env::var_os("MPF_BENCH_SKIP_WARMUP").is_none() {
        let (secs, p99) = warm_up(&sink, &producer, &warm_topic, rate).await;
        println!(
            "warm-up: {secs:.0} s of the same traffic through the forwarder to a scratch topic, \
             until two 5 s windows in a row had a p99 under 50 ms (the last: {p99} ms)"
        );
    }
    let (measured_from, unique_before) = (sink.latencies_ms().len(), sink.unique_accepted());
    if held {
        sink.add_fault(Fault::status(503).when_id(event_id(HELD_FIRST)).times(3));
    }
    let mut acks = produce_paced(&producer, &topics, 0, rate, seconds, held).await;
    wait_for_acceptance(&sink, unique_before + rate * seconds).await;
    if held {
        let metrics = reqwest::get(format!("http://{admin}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let behind: f64 = metrics
            .lines()
            .filter(|l| l.contains("events_retried_total") && l.contains("held_behind"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        println!(
            "held customer: {} of its events in the window, {behind:.0} written to the retry topic behind its first",
            rate * seconds / HELD_EVERY
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut latencies = sink.latencies_ms().split_off(measured_from);
    if std::env::var_os("MPF_BENCH_LATENCY_TRACE").is_some() {
        // Per second of acceptances: median and max, to tell a steady lag from spikes.
        for (second, (window, sent)) in latencies.chunks(rate).zip(acks.chunks(rate)).enumerate() {
            let mut window = window.to_vec();
            window.sort_unstable();
            let mut sent = sent.to_vec();
            sent.sort_unstable();
            println!(
                "  second {second}: p50 {} ms, max {} ms; broker ack p50 {} ms, max {} ms",
                percentile(&window, 0.5),
                window.last().copied().unwrap_or(-1),
                percentile(&sent, 0.5),
                sent.last().copied().unwrap_or(-1)
            );
        }
    }
    let mut acks = acks.split_off((rate * 2).min(acks.len()));
    acks.sort_unstable();
    // The first 2 s are warm-up (connections, first fetches).
    let latencies = latencies.split_off((rate * 2).min(latencies.len()));
    let mut sorted = latencies;
    sorted.sort_unstable();
    println!(
        "latency at {rate} events/s for {seconds} s (record timestamp to the sink's acceptance, first 2 s dropped): p50 {} ms, p99 {} ms, max {} ms",
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        sorted.last().copied().unwrap_or(-1)
    );
    println!(
        "  the broker's acknowledgement of the same produces (a floor under the figure above): p50 {} ms, p99 {} ms, max {} ms",
        percentile(&acks, 0.5),
        percentile(&acks, 0.99),
        acks.last().copied().unwrap_or(-1)
    );
    sink.stop();
}

/// The latency stage's producer: 2 ms of batching, counted in the latency (record
/// timestamps are taken at send). With 0, every record is its own produce request, and at
/// 5,000/s the broker, on the same two cores, falls behind: records wait in this
/// producer's queue, timestamped already, and that wait showed up as seconds of
/// "latency" (BENCHMARKS.md).
fn paced_producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "linger.ms",
            std::env::var("MPF_BENCH_PRODUCER_LINGER_MS").unwrap_or_else(|_| "2".into()),
        )
        .create()
        .unwrap()
}

/// With `MPF_BENCH_HELD_CUSTOMER`, every this many events one is the held customer's,
/// from event `HELD_FIRST` on.
const HELD_EVERY: usize = 1_000;
const HELD_FIRST: usize = 500;

fn event_id(i: usize) -> String {
    format!("bench-{i:09}")
}

/// Produces `rate` events a second for `seconds`, alternating between `topics`, numbered
/// from `first` (with `held`, one in [`HELD_EVERY`] keyed as one customer's); returns each
/// record's time from send to the broker's acknowledgement, in send order.
async fn produce_paced(
    producer: &FutureProducer,
    topics: &[String],
    first: usize,
    rate: usize,
    seconds: usize,
    held: bool,
) -> Vec<i64> {
    let started = Instant::now();
    let acks: std::sync::Arc<std::sync::Mutex<Vec<i64>>> =
        std::sync::Arc::new(std::sync::Mutex::new(vec![-1; rate * seconds]));
    let mut pending = Vec::new();
    for i in 0..rate * seconds {
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let value = event(first + i, false);
        let key = if held && (first + i) % HELD_EVERY == HELD_FIRST {
            "cust-held".to_string()
        } else {
            format!("cust-{:06}", (first + i) % 100_000)
        };
        let sent_at = Instant::now();
        let delivery = producer
            .send_result(
                FutureRecord::to(&topics[i % topics.len()])
                    .key(&key)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        let acks = acks.clone();
        pending.push(tokio::spawn(async move {
            let _ = delivery.await;
            acks.lock().unwrap()[i] = sent_at.elapsed().as_millis() as i64;
        }));
    }
    for p in pending {
        let _ = p.await;
    }
    std::mem::take(&mut *acks.lock().unwrap())
}

/// Waits until the sink has accepted `count` distinct batches (at most a minute).
async fn wait_for_acceptance(sink: &StandIn, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink.unique_accepted() < count {
        assert!(
            Instant::now() < deadline,
            "the sink accepted {} of {count} batches within a minute",
            sink.unique_accepted()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Event numbers of the warm-up, apart from the measured ones (the sink counts distinct
/// batches).
const WARM_UP_FIRST_EVENT: usize = 1_000_000_000;

/// A freshly started broker answers slowly at first: for its first minute or so its JVM
/// compiles the hot paths (`jstat -compiler` counted 37 s of compilation in 47 s on these
/// two cores, BENCHMARKS.md), and produces wait up to seconds. That would be measured as
/// the forwarder's latency, so the same traffic goes through the same forwarder, group and
/// sink to a scratch topic first, in 5 s windows, until two windows in a row have an
/// end-to-end p99 under 50 ms (at most 180 s). Returns the seconds it took and the last
/// window's p99.
async fn warm_up(
    sink: &StandIn,
    producer: &FutureProducer,
    topic: &str,
    rate: usize,
) -> (f64, i64) {
    let started = Instant::now();
    let (mut window, mut settled) = (0, 0);
    loop {
        let (from, unique_before) = (sink.latencies_ms().len(), sink.unique_accepted());
        let first = WARM_UP_FIRST_EVENT + window * rate * 5;
        produce_paced(producer, &[topic.to_string()], first, rate, 5, false).await;
        wait_for_acceptance(sink, unique_before + rate * 5).await;
        let mut latencies = sink.latencies_ms().split_off(from);
        latencies.sort_unstable();
        let p99 = percentile(&latencies, 0.99);
        window += 1;
        settled = if p99 < 50 { settled + 1 } else { 0 };
        if settled == 2 || started.elapsed() > Duration::from_secs(180) {
            return (started.elapsed().as_secs_f64(), p99);
        }
    }
}

fn mem_gib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024 / 1024)
}

fn chrono_free_now() -> String {
    Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%dT%H:%M:%SZ")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
