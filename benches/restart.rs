//! The restart benchmark (not a test): a release forwarder, as a process, delivers a steady
//! 200 events/s; it is killed (SIGKILL) and started again at once, as Kubernetes restarts
//! a crashed container in its pod. Reports the seconds from the restart to the first
//! delivery and to the moment every event produced in the 5 s after the restart is
//! delivered, with and without static membership (`KAFKA_GROUP_INSTANCE_ID`, the pod's
//! name).
//!
//! `scripts/bench-restart.sh` builds and runs it; BENCHMARKS.md has the figures.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mparticle_forwarder::clock::unix_ms;
use mparticle_forwarder::standin::{StandIn, StandInConfig};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::Mutex;

#[path = "support/events.rs"]
mod events;
// The pipeline benchmark uses the rest of it.
#[allow(dead_code)]
#[path = "support/harness.rs"]
mod harness;
use harness::{Bench, KEY, SECRET, unique};

const RATE: u64 = 200;
/// Events produced this long after the restart must all be delivered to count as caught up.
const CAUGHT_UP_WINDOW: Duration = Duration::from_secs(5);

/// Produces `RATE` events a second until `stop`; the ids go to `produced` with their time.
fn produce_steadily(
    bench: &Bench,
    topics: Vec<String>,
    produced: Arc<Mutex<Vec<(i64, String)>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bench.bootstrap)
        .set("linger.ms", "2")
        .create()
        .unwrap();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let value = events::event(i, true);
            let id = format!("bench-{i:09}");
            let key = format!("cust-{:06}", i % 100_000);
            let record = FutureRecord::to(&topics[i % topics.len()])
                .key(&key)
                .payload(&value);
            if producer.send(record, Duration::from_secs(5)).await.is_ok() {
                produced.lock().await.push((unix_ms(), id));
            }
            i += 1;
        }
    })
}

/// One kill and restart; returns the seconds from the restart to the first delivery, and
/// until every event produced in the 5 s after the restart is delivered.
async fn restart(bench: &Bench, static_member: bool) -> (f64, f64) {
    let topics = vec![unique("restart-a"), unique("restart-b")];
    bench.create_topics(&topics, 6).await;
    let standin = StandIn::start_local(StandInConfig {
        api_key: KEY.into(),
        api_secret: SECRET.into(),
        ..StandInConfig::default()
    })
    .await
    .unwrap();
    let group = bench.forwarder_group("restart").await;
    let extra: Vec<(&str, String)> = if static_member {
        vec![("KAFKA_GROUP_INSTANCE_ID", "bench-pod-0".to_string())]
    } else {
        vec![]
    };
    let produced = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let producing = produce_steadily(bench, topics.clone(), produced.clone(), stop.clone());
    let mut first = bench.spawn_forwarder(&standin, &topics, &group, &extra);
    // Delivering steadily for 10 s before the kill.
    while standin.accepted_count() == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let _ = first.kill();
    let _ = first.wait();
    let restarted_ms = unix_ms();
    let started = Instant::now();
    let mut second = bench.spawn_forwarder(&standin, &topics, &group, &extra);
    // Resumed: the first delivery after the restart.
    let resumed = loop {
        let delivered = standin
            .requests()
            .iter()
            .any(|r| r.at_ms > restarted_ms && (200..300).contains(&r.status));
        if delivered {
            break started.elapsed().as_secs_f64();
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no delivery in 5 min"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Caught up: every event produced in the first 5 s after the restart is delivered.
    while started.elapsed() < CAUGHT_UP_WINDOW {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let window_end = restarted_ms + CAUGHT_UP_WINDOW.as_millis() as i64;
    let wanted: HashSet<String> = produced
        .lock()
        .await
        .iter()
        .filter(|(at, _)| *at <= window_end)
        .map(|(_, id)| id.clone())
        .collect();
    let caught_up = loop {
        let accepted: HashSet<String> = standin.accepted_ids().into_iter().collect();
        if wanted.iter().all(|id| accepted.contains(id)) {
            break started.elapsed().as_secs_f64();
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "not caught up in 5 min"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.store(true, Ordering::Relaxed);
    let _ = producing.await;
    let _ = second.kill();
    let _ = second.wait();
    standin.stop();
    (resumed, caught_up)
}

#[tokio::main]
async fn main() {
    let bench = Bench::from_env();
    println!(
        "a forwarder delivering {RATE} events/s is killed (SIGKILL) and started again at once"
    );
    println!(
        "| membership | restart to first delivery, s | restart to caught up (5 s of events), s |\n|---|---:|---:|"
    );
    for (name, static_member) in [
        ("dynamic (no KAFKA_GROUP_INSTANCE_ID)", false),
        ("static (KAFKA_GROUP_INSTANCE_ID)", true),
    ] {
        let (first, caught_up) = restart(&bench, static_member).await;
        println!("| {name} | {first:.1} | {caught_up:.1} |");
    }
}
