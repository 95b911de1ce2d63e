//! What both end-to-end benchmarks need around the forwarder: topics, a fast preload, the
//! release forwarder as its own process, and a fresh consumer group for each run.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mparticle_forwarder::standin::StandIn;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::events::{CUSTOMERS, event};

pub const KEY: &str = "bench-key";
pub const SECRET: &str = "bench-secret";

/// The broker and the forwarder binary under test.
pub struct Bench {
    pub bootstrap: String,
    pub forwarder: String,
    /// `MPF_BENCH_ACCOUNTS`: with N > 0, the forwarder serves N mParticle accounts
    /// (`MPARTICLE_ACCOUNTS_FILE`, all on the same sink), and each customer's records name
    /// one of them in the header [`ACCOUNT_HEADER`].
    pub accounts: usize,
}

/// The header naming a record's account when the benchmark runs with several.
pub const ACCOUNT_HEADER: &str = "mparticle-account";

impl Bench {
    /// `MPF_TEST_KAFKA` (else the local broker) and `MPF_BENCH_FORWARDER` (else the release
    /// build).
    pub fn from_env() -> Bench {
        Bench {
            bootstrap: std::env::var("MPF_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into()),
            forwarder: std::env::var("MPF_BENCH_FORWARDER")
                .unwrap_or_else(|_| "target/release/mparticle-forwarder".into()),
            accounts: std::env::var("MPF_BENCH_ACCOUNTS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        }
    }

    pub async fn create_topics(&self, names: &[String], partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .unwrap();
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
            .collect();
        for result in admin
            .create_topics(&topics, &AdminOptions::new())
            .await
            .unwrap()
        {
            result.unwrap();
        }
    }

    /// Produces `events` events over `topics`; returns the seconds it took and the values'
    /// average size.
    pub async fn preload(&self, topics: &[String], events: usize) -> (f64, usize) {
        self.preload_with(topics, events, CUSTOMERS, |i| event(i, true))
            .await
    }

    /// As [`preload`](Self::preload), the `i`th value made by `value`.
    pub async fn preload_with(
        &self,
        topics: &[String],
        events: usize,
        customers: usize,
        value: impl Fn(usize) -> String,
    ) -> (f64, usize) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .unwrap();
        let started = Instant::now();
        let mut pending = std::collections::VecDeque::new();
        let mut value_bytes = 0;
        for i in 0..events {
            let value = value(i);
            value_bytes += value.len();
            let key = format!("cust-{:06}", i % customers);
            let mut record = FutureRecord::to(&topics[i % topics.len()])
                .key(&key)
                .payload(&value);
            if self.accounts > 0 {
                let account = account_name(i % customers % self.accounts);
                record = record.headers(rdkafka::message::OwnedHeaders::new().insert(
                    rdkafka::message::Header {
                        key: ACCOUNT_HEADER,
                        value: Some(account.as_bytes()),
                    },
                ));
            }
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push_back(delivery);
                        break;
                    }
                    // The local queue is full: wait for the oldest acknowledgement.
                    Err((_, back)) => {
                        record = back;
                        match pending.pop_front() {
                            Some(d) => {
                                let _ = d.await;
                            }
                            None => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                }
            }
            if pending.len() > 200_000 {
                while pending.len() > 100_000 {
                    let _ = pending.pop_front().unwrap().await;
                }
            }
        }
        for d in pending {
            d.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        (started.elapsed().as_secs_f64(), value_bytes / events.max(1))
    }

    /// A fresh consumer group for a forwarder, with its retry and dead-letter topics made
    /// (the retry topic with a partition for each source partition of every benchmark:
    /// at most 3 topics of 6).
    pub async fn forwarder_group(&self, name: &str) -> String {
        let group = unique(name);
        self.create_topics(&[format!("{group}.retry-topic")], 18)
            .await;
        self.create_topics(&[format!("{group}.dlq-topic")], 3).await;
        group
    }

    /// Starts the forwarder on `topics` as consumer group `group`, sending to `standin`.
    pub fn spawn_forwarder(
        &self,
        standin: &StandIn,
        topics: &[String],
        group: &str,
        extra: &[(&str, String)],
    ) -> Child {
        let mut command = Command::new(&self.forwarder);
        command
            .env_clear()
            .env("MPARTICLE_API_URL", standin.events_url())
            .env("MPARTICLE_API_KEY", KEY)
            .env("MPARTICLE_API_SECRET", SECRET)
            .env("KAFKA_BOOTSTRAP_SERVERS", &self.bootstrap)
            .env("KAFKA_GROUP_ID", group)
            .env("KAFKA_TOPICS", topics.join(","))
            .env("KAFKA_RETRY_TOPIC", format!("{group}.retry-topic"))
            .env("KAFKA_DLQ_TOPIC", format!("{group}.dlq-topic"))
            .env("FIELD_ASSIGNMENTS_FILE", "config/field-assignments.toml")
            .env("ADMIN_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            // As the image runs it (deploy/Dockerfile): 52.6-55.5 MiB peak instead of
            // 60.6-63.5 in a 1M-event drain (BENCHMARKS.md).
            .env("MIMALLOC_ARENA_EAGER_COMMIT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in extra {
            command.env(k, v);
        }
        if self.accounts > 0 {
            let file = accounts_file(self.accounts, &standin.events_url(), group);
            command
                .env("MPARTICLE_ACCOUNTS_FILE", file)
                .env("BENCH_ACCOUNT_KEY", KEY)
                .env("BENCH_ACCOUNT_SECRET", SECRET);
        }
        for (k, v) in forwarder_env() {
            command.env(k, v);
        }
        command
            .spawn()
            .expect("the release forwarder (cargo build --release)")
    }
}

fn account_name(n: usize) -> String {
    format!("brand-{n:03}")
}

/// Writes an accounts file of `accounts` accounts on `url`, routed by [`ACCOUNT_HEADER`];
/// returns its path.
fn accounts_file(accounts: usize, url: &str, group: &str) -> String {
    let mut text = format!("[routing]\nheader = \"{ACCOUNT_HEADER}\"\n");
    for n in 0..accounts {
        text.push_str(&format!(
            "\n[accounts.{}]\napi_url = \"{url}\"\napi_key_env = \"BENCH_ACCOUNT_KEY\"\n\
             api_secret_env = \"BENCH_ACCOUNT_SECRET\"\n",
            account_name(n)
        ));
    }
    let path = std::env::temp_dir().join(format!("{group}-accounts.toml"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The CPU seconds a process has used and its peak resident set in bytes, from /proc.
pub fn cpu_and_peak_rss(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the name.
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    (ticks / 100.0, hwm_kb * 1024)
}

/// A name no earlier run used.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("bench-{prefix}-{nanos:x}")
}

/// Extra settings for experiments: MPF_BENCH_FORWARDER_ENV="NAME=value NAME=value".
pub fn forwarder_env() -> Vec<(String, String)> {
    std::env::var("MPF_BENCH_FORWARDER_ENV")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
