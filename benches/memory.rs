//! The memory benchmark (not a test): one release forwarder, as a process, drains a
//! backlog of large events (about 100 KB each, the size that filled memory within the
//! record count) into the stand-in at an account limit of 200 batches/s. Reports the
//! forwarder's peak RSS with `MAX_IN_FLIGHT_BYTES` at its default and with the byte bound
//! out of the way (only `MAX_IN_FLIGHT_RECORDS` bounding), against the Deployment's
//! 256 MiB limit.
//!
//! `scripts/bench-memory.sh [--events N]` builds and runs it; BENCHMARKS.md has the
//! figures.

use std::time::{Duration, Instant};

use mparticle_forwarder::random::Xorshift;
use mparticle_forwarder::standin::{StandIn, StandInConfig};

#[path = "support/events.rs"]
mod events;
// The pipeline benchmark uses the rest of it.
#[allow(dead_code)]
#[path = "support/harness.rs"]
mod harness;
use harness::{Bench, KEY, SECRET, cpu_and_peak_rss, unique};

const LIMIT: f64 = 200.0;
const PADDING_BYTES: usize = 100_000;

fn events_arg() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .map_or(4_000, |v| v.parse().expect("--events N"))
}

/// A loyalty event of about 100 KB: the usual one with a field no assignment reads, of
/// random letters (repeated ones compress a hundredfold, and librdkafka's prefetch limits
/// count compressed bytes, which would measure the prefetch instead).
fn large_event(i: usize) -> String {
    const LETTERS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut random = Xorshift::seeded(i as u64 + 1);
    let padding: String = (0..PADDING_BYTES)
        .map(|_| LETTERS[(random.next_unit() * 64.0) as usize] as char)
        .collect();
    events::event(i, true).replacen('{', &format!(r#"{{"notes":"{padding}","#), 1)
}

/// Drains `events` large events with `extra` settings; returns (seconds, peak RSS bytes).
async fn drain(bench: &Bench, events: usize, extra: &[(&str, String)]) -> (f64, u64) {
    let topics = vec![unique("memory-a"), unique("memory-b")];
    bench.create_topics(&topics, 6).await;
    bench
        .preload_with(&topics, events, 100_000, large_event)
        .await;
    let standin = StandIn::start_local(StandInConfig {
        api_key: KEY.into(),
        api_secret: SECRET.into(),
        rate_limit: Some(LIMIT),
        ..StandInConfig::default()
    })
    .await
    .unwrap();
    let group = bench.forwarder_group("memory").await;
    let mut child = bench.spawn_forwarder(&standin, &topics, &group, extra);
    let started = Instant::now();
    let timeout = Duration::from_secs_f64(events as f64 / LIMIT * 4.0 + 60.0);
    while standin.accepted_event_count() < events && started.elapsed() < timeout {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let (_, peak) = cpu_and_peak_rss(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        standin.accepted_event_count() >= events,
        "the backlog did not drain in {timeout:?}"
    );
    standin.stop();
    (secs, peak)
}

#[tokio::main]
async fn main() {
    let bench = Bench::from_env();
    let events = events_arg();
    println!(
        "{events} events of about {} KB at {LIMIT} batches/s",
        large_event(0).len() / 1000
    );
    println!("| bound | drain s | peak RSS MiB |\n|---|---:|---:|");
    let unbounded = [("MAX_IN_FLIGHT_BYTES", u32::MAX.to_string())];
    for (name, extra) in [
        ("MAX_IN_FLIGHT_BYTES default (32 MiB)", &[][..]),
        ("records only (MAX_IN_FLIGHT_BYTES=4 GiB)", &unbounded[..]),
    ] {
        let (secs, peak) = drain(&bench, events, extra).await;
        println!(
            "| {name} | {secs:.1} | {:.0} |",
            peak as f64 / (1024.0 * 1024.0)
        );
    }
}
