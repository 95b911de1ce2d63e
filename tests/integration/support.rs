//! Test support: the local Kafka broker, unique names per test, producing and reading
//! records, and spawning the service in-process against the mParticle stand-in.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mparticle_forwarder::app::{App, Settings};
use mparticle_forwarder::shutdown::{Shutdown, StopReason};
use mparticle_forwarder::standin::{StandIn, StandInConfig};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::task::JoinHandle;

pub const API_KEY: &str = "test-key";
pub const API_SECRET: &str = "test-secret-7f3a";

/// The broker the tests use: `MPF_TEST_KAFKA`, else the one `scripts/kafka.sh` starts.
pub fn bootstrap() -> String {
    std::env::var("MPF_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos:x}-{n}", std::process::id())
}

fn client_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap());
    config
}

/// Creates topics with `partitions` partitions each; fails the test if the broker is not up.
pub async fn create_topics(names: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client_config().create().unwrap();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let results = tokio::time::timeout(
        Duration::from_secs(30),
        admin.create_topics(&topics, &options),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no Kafka broker answered at {}; start one with scripts/kafka.sh start",
            bootstrap()
        )
    })
    .expect("create topics");
    for result in results {
        result.expect("topic created");
    }
}

/// A producer for test input.
pub fn producer() -> FutureProducer {
    client_config()
        .set("linger.ms", "5")
        .set("acks", "all")
        .create()
        .unwrap()
}

/// Produces one record and waits for the acknowledgement; returns (partition, offset).
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    value: &[u8],
) -> (i32, i64) {
    let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).payload(value);
    if let Some(key) = key {
        record = record.key(key);
    }
    let delivery = producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
    (delivery.partition, delivery.offset)
}

/// Produces one record with headers to a partition and waits for the acknowledgement.
pub async fn produce_with_headers(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    value: &[u8],
    headers: &[(String, String)],
) -> i64 {
    let mut owned = rdkafka::message::OwnedHeaders::new();
    for (name, value) in headers {
        owned = owned.insert(rdkafka::message::Header {
            key: name,
            value: Some(value.as_bytes()),
        });
    }
    let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic)
        .partition(partition)
        .key(key)
        .payload(value)
        .headers(owned);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("produce")
        .offset
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
    /// Names and values as they are, in order.
    pub raw_headers: mparticle_forwarder::kafka::record::HeaderList,
}

impl ReadRecord {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Every partition's end offset.
pub fn end_offsets(topic: &str) -> HashMap<i32, i64> {
    let consumer: BaseConsumer = client_config().create().unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    partitions
        .into_iter()
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            (p, high)
        })
        .collect()
}

/// Every record now in `topic`.
pub fn read_all(topic: &str) -> Vec<ReadRecord> {
    let ends = end_offsets(topic);
    let consumer: BaseConsumer = client_config()
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in ends.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let wanted: i64 = ends.values().sum();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (records.len() as i64) < wanted && Instant::now() < deadline {
        if let Some(result) = consumer.poll(Duration::from_millis(200)) {
            let m = result.expect("read");
            // As bytes: a name need not be UTF-8, and rdkafka's accessors panic on one that
            // is not.
            let raw = m
                .headers()
                .map(mparticle_forwarder::kafka::ffi::read_headers)
                .unwrap_or_default();
            let headers = raw
                .iter()
                .map(|(name, value)| {
                    (
                        String::from_utf8_lossy(name.as_bytes()).into_owned(),
                        String::from_utf8_lossy(value.as_deref().unwrap_or_default()).into_owned(),
                    )
                })
                .collect();
            records.push(ReadRecord {
                partition: m.partition(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers,
                raw_headers: raw,
            });
        }
    }
    records
}

/// The group's committed offsets on `topic`, by partition (absent: nothing committed).
pub fn committed(group: &str, topic: &str) -> HashMap<i32, i64> {
    let consumer: BaseConsumer = client_config().set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in end_offsets(topic).keys() {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// Polls `check` every 100 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the sample `series` (name and labels, exactly as exposed) in a
/// Prometheus text exposition.
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

/// Scrapes `/metrics` at `admin` synchronously (for use inside [`eventually`]).
pub fn scrape(admin: SocketAddr) -> String {
    std::process::Command::new("curl")
        .args(["-s", &format!("http://{admin}/metrics")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// A loyalty event as JSON text.
pub fn point_add(id: &str, customer: &str, points: u32) -> String {
    format!(
        r#"{{"id":"{id}","action":"point_add","created_at":"2026-11-28T12:00:00Z","customer":{{"id":"{customer}","email":"{customer}@example.com","tier":"gold"}},"data":{{"points":{points},"reason":"purchase"}}}}"#
    )
}

pub fn reward_claim(id: &str, customer: &str) -> String {
    format!(
        r#"{{"id":"{id}","action":"reward_claim","created_at":1795867500000,"customer":{{"id":"{customer}"}},"data":{{"reward_id":"rw-{id}","reward_name":"10% off","points_spent":500,"coupon":{{"code":"C-{id}"}}}}}}"#
    )
}

/// Produces the events `{prefix}-0` to `{prefix}-{count - 1}` of 1,013 customers (the record
/// key), point adds and reward claims alternating over the first two of `topics` (or all
/// on one), every send in flight at once; returns their ids once all are acknowledged.
pub async fn produce_events(topics: &[String], count: usize, prefix: &str) -> HashSet<String> {
    let producer = producer();
    let mut ids = HashSet::new();
    let mut pending = Vec::new();
    for i in 0..count {
        let id = format!("{prefix}-{i}");
        let customer = format!("cust-{}", i % 1013);
        let (topic, value) = if i % 2 == 0 {
            (&topics[0], point_add(&id, &customer, (i % 300) as u32))
        } else {
            (topics.last().unwrap(), reward_claim(&id, &customer))
        };
        let record = rdkafka::producer::FutureRecord::to(topic)
            .key(&customer)
            .payload(&value);
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        ids.insert(id);
    }
    for p in pending {
        p.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    ids
}

/// A recording stand-in on a free local port, accepting the tests' credentials.
pub async fn standin() -> StandIn {
    StandIn::start_local(StandInConfig {
        api_key: API_KEY.into(),
        api_secret: API_SECRET.into(),
        ..StandInConfig::default()
    })
    .await
    .unwrap()
}

/// One service under test with its own topics, group and stand-in.
pub struct TestService {
    pub standin: StandIn,
    pub topics: Vec<String>,
    pub retry_topic: String,
    pub dlq_topic: String,
    pub group: String,
    pub admin: SocketAddr,
    shutdown: Shutdown,
    task: Option<JoinHandle<StopReason>>,
}

impl Drop for TestService {
    /// A test that fails midway drops its service: stop it, so that the runtime's
    /// shutdown does not wait forever for the service's reader threads.
    fn drop(&mut self) {
        self.shutdown.trigger(StopReason::Requested);
    }
}

/// Builder for [`TestService`].
pub struct ServiceSpec {
    pub partitions: i32,
    pub topic_count: usize,
    pub env: Vec<(String, String)>,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        ServiceSpec {
            partitions: 3,
            topic_count: 2,
            env: Vec::new(),
        }
    }
}

impl ServiceSpec {
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions;
        self
    }

    pub fn topics(mut self, count: usize) -> Self {
        self.topic_count = count;
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Creates the topics, starts a stand-in and the service.
    pub async fn spawn(self) -> TestService {
        self.spawn_with(standin().await).await
    }

    /// As [`spawn`](Self::spawn), against a given stand-in.
    pub async fn spawn_with(self, standin: StandIn) -> TestService {
        let topics: Vec<String> = (0..self.topic_count)
            .map(|i| unique(&format!("src{i}")))
            .collect();
        let retry_topic = unique("retry");
        let dlq_topic = unique("dlq");
        let mut all: Vec<&str> = topics.iter().map(String::as_str).collect();
        all.push(&dlq_topic);
        create_topics(&all, self.partitions).await;
        // A retry partition for every source partition, as deploy/ creates it.
        let retry_partitions = self.partitions * self.topic_count as i32;
        create_topics(&[&retry_topic], retry_partitions).await;
        let group = unique("group");
        self.start(standin, topics, retry_topic, dlq_topic, group)
            .await
    }

    /// Starts another replica of `first`: its topics and group, against `standin`.
    pub async fn replica_of(self, first: &TestService, standin: StandIn) -> TestService {
        self.start(
            standin,
            first.topics.clone(),
            first.retry_topic.clone(),
            first.dlq_topic.clone(),
            first.group.clone(),
        )
        .await
    }

    /// Starts a service on existing topics and group (a second replica, a restart).
    pub async fn start(
        self,
        standin: StandIn,
        topics: Vec<String>,
        retry_topic: String,
        dlq_topic: String,
        group: String,
    ) -> TestService {
        let mut vars: Vec<(String, String)> = vec![
            ("MPARTICLE_API_URL".into(), standin.events_url()),
            ("MPARTICLE_API_KEY".into(), API_KEY.into()),
            ("MPARTICLE_API_SECRET".into(), API_SECRET.into()),
            ("MPARTICLE_TIMEOUT".into(), "2s".into()),
            ("KAFKA_BOOTSTRAP_SERVERS".into(), bootstrap()),
            ("KAFKA_GROUP_ID".into(), group.clone()),
            ("KAFKA_TOPICS".into(), topics.join(",")),
            ("KAFKA_RETRY_TOPIC".into(), retry_topic.clone()),
            ("KAFKA_DLQ_TOPIC".into(), dlq_topic.clone()),
            ("RETRY_BACKOFF".into(), "1s,2s".into()),
            (
                "FIELD_ASSIGNMENTS_FILE".into(),
                "tests/data/field-assignments.toml".into(),
            ),
            ("ADMIN_ADDR".into(), "127.0.0.1:0".into()),
            ("SHUTDOWN_GRACE".into(), "5s".into()),
            // Commit soon after each outcome so tests see it without waiting.
            (
                "KAFKA_PROPERTY_AUTO_COMMIT_INTERVAL_MS".into(),
                "200".into(),
            ),
        ];
        for (name, value) in self.env {
            vars.retain(|(n, _)| *n != name);
            vars.push((name, value));
        }
        if std::env::var_os("MPF_TEST_LOG").is_some() {
            mparticle_forwarder::telemetry::init(mparticle_forwarder::config::LogFormat::Text);
        }
        let settings = Settings::load(vars).expect("valid test configuration");
        let app = App::build(settings).await.expect("service builds");
        let admin = app.admin_addr();
        let shutdown = app.shutdown_handle();
        let task = tokio::spawn(app.run());
        TestService {
            standin,
            topics,
            retry_topic,
            dlq_topic,
            group,
            admin,
            shutdown,
            task: Some(task),
        }
    }
}

impl TestService {
    /// GETs an admin path; returns (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{}{path}", self.admin))
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// Waits until the group's committed offsets on every source topic reach their ends.
    pub async fn wait_fully_committed(&self, timeout: Duration) -> bool {
        let topics = self.topics.clone();
        let group = self.group.clone();
        eventually(timeout, || {
            topics.iter().all(|t| {
                let ends = end_offsets(t);
                let done = committed(&group, t);
                ends.iter()
                    .all(|(p, end)| *end == 0 || done.get(p) == Some(end))
            })
        })
        .await
    }

    /// Stops the service gracefully and returns why it stopped.
    pub async fn stop(mut self) -> StopReason {
        self.shutdown.trigger(StopReason::Requested);
        let task = self.task.take().expect("stopped once");
        let reason = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("service stops within 30 s")
            .expect("service task");
        self.standin.stop();
        reason
    }
}
