//! Configuration: the process environment turned into a validated [`Config`].
//!
//! Every variable is read as text by its name (`config/names.rs`, each stated once) and parsed
//! here, so that every problem is found in one pass and reported together; the caller exits
//! with code 64 before anything connects. (envy, which reads the environment into a struct's
//! fields, was dropped: each name then stood twice, as a field and in the messages, and the
//! parsing and its messages are all here anyway.) Secrets are wrapped in [`Secret`], whose
//! `Debug` and `Display` print `****`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod kafka_properties;
mod names;
mod read;
#[cfg(test)]
mod tests;

pub use kafka_properties::GUARANTEE_PROPERTIES;
pub use names::*;
pub(crate) use read::api_urls;
pub use read::parse_duration;

use kafka_properties::{PASS_THROUGH_PREFIX, is_secret_property, refused_pass_through};
use read::{Env, Parser, valid_topic_name};

/// Default Events API URL for partner feeds.
pub const DEFAULT_API_URL: &str = "https://inbound.mparticle.com/s2s/v2/events";
/// Default per-request timeout: mParticle answers in well under a second when healthy.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default connect timeout: a TCP+TLS handshake that takes longer than this is not coming.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_BOOTSTRAP_SERVERS: &str = "localhost:9092";
pub const DEFAULT_GROUP_ID: &str = "mparticle-forwarder";
pub const DEFAULT_TOPICS: &str = "loyalty.point-add,loyalty.reward-claim";
pub const DEFAULT_RETRY_TOPIC: &str = "mparticle-forwarder.retry";
pub const DEFAULT_DLQ_TOPIC: &str = "mparticle-forwarder.dlq";
/// Delivery attempts in all, the first included: the loyalty platform's resend queue tries five times.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
pub const DEFAULT_BACKOFF: &str = "10s,30s,2m,10m";
pub const DEFAULT_FIELD_ASSIGNMENTS_FILE: &str = "config/field-assignments.toml";
pub const DEFAULT_ADMIN_ADDR: &str = "0.0.0.0:9090";
/// Largest record value accepted; mParticle refuses batches of 128 KB and over.
pub const DEFAULT_EVENT_MAX_BYTES: usize = 128 * 1024;
/// Concurrent HTTP requests to mParticle: enough to hide a ~50 ms round trip at the
/// account's default 270 batches per second even with single-batch requests.
pub const DEFAULT_MAX_IN_FLIGHT_REQUESTS: usize = 16;
/// Records held in memory between consume and a final outcome: 16 full requests need 1,600, so
/// 3,000 keep every request slot busy with the next pieces ready (docs/benchmarks-history.md:
/// 5,000 ran no faster and peaked 4-6 MiB higher). At the 128 KiB record cap the worst case is
/// about 400 MiB; at a typical 0.4 KiB record with its ~0.7 KiB batch, about 3.5 MiB.
pub const DEFAULT_MAX_IN_FLIGHT_RECORDS: usize = 3_000;
/// Bytes of record values and keys held between consume and outcome, once for source
/// records and once for retries. A record in flight also holds its batch (about as large),
/// so records take up to about four times this: 128 MiB at the default, within the
/// Deployment's 256 MiB with the ~50 MiB the rest of the process needs. At a typical
/// 0.4 KiB record, `MAX_IN_FLIGHT_RECORDS` binds long before this does.
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: usize = 32 * 1024 * 1024;
/// How long a partly filled bulk request waits for more batches before it is sent.
pub const DEFAULT_BULK_LINGER: Duration = Duration::from_millis(5);
/// Events of one customer in one batch when several wait together: as many as mParticle's
/// own SDKs put in a batch.
pub const DEFAULT_MAX_EVENTS_PER_BATCH: usize = 100;
/// Tokio worker threads (requests, retries, the admin server). The per-record work runs
/// on the source reader's own thread, and the async side needs well under a core to keep
/// up with it; a second worker only added cross-core wake-ups: docs/benchmarks-history.md, "Eighth
/// session", measured 10% less CPU per event with one than with two on two cores.
pub const DEFAULT_WORKER_THREADS: usize = 1;
/// Within the interface's default 25 s grace period; Kubernetes gets 30 s (deploy/).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// A value that must never be printed: `Debug` and `Display` show `****`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// What to do with an event whose action has no event definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnmappedAction {
    Skip,
    DeadLetter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where and how to reach mParticle.
#[derive(Debug, Clone)]
pub struct MparticleConfig {
    /// `.../events`: one batch per request.
    pub events_url: String,
    /// `.../bulkevents`: up to 100 batches per request.
    pub bulk_url: String,
    pub api_key: Secret,
    pub api_secret: Secret,
    pub development: bool,
    pub max_batches_per_second: Option<f64>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_in_flight_requests: usize,
    pub bulk_linger: Duration,
    /// Most events of one customer merged into one batch; 1 merges nothing.
    pub max_events_per_batch: usize,
}

impl MparticleConfig {
    /// True when the API URL is plain `http://` to a host other than this machine: the
    /// Basic credentials then cross the network in clear.
    pub fn credentials_in_clear(&self) -> bool {
        let Ok(url) = reqwest::Url::parse(&self.events_url) else {
            return false;
        };
        let host = url.host_str().unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        url.scheme() == "http" && !loopback
    }
}

/// `url` with the password of its userinfo, if any, as `****`: for logs, `check-config`
/// and configuration errors. Text that is not a URL is shown as `****` whole when it holds
/// an `@` (it may be a mistyped URL with a password in it).
pub fn masked_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("****"));
            parsed.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) if url.contains('@') => "****".to_string(),
        Err(_) => url.to_string(),
    }
}

/// The warning for [`MparticleConfig::credentials_in_clear`].
pub const CLEAR_CREDENTIALS_WARNING: &str =
    "MPARTICLE_API_URL is http://: the API key and secret are sent in clear; use https://";

/// Where and how to reach Kafka.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    pub group_id: String,
    /// Static membership (`KAFKA_GROUP_INSTANCE_ID`, the pod's name): a restarted
    /// container takes its partitions back at once instead of after a rebalance.
    pub group_instance_id: Option<String>,
    pub topics: Vec<String>,
    pub retry_topic: String,
    pub dlq_topic: String,
    /// librdkafka properties from the security variables and `KAFKA_PROPERTY_*`.
    pub properties: Vec<(String, KafkaPropertyValue)>,
}

/// A librdkafka property value; the SASL password is kept as a [`Secret`].
#[derive(Debug, Clone)]
pub enum KafkaPropertyValue {
    Plain(String),
    Secret(Secret),
}

impl KafkaPropertyValue {
    pub fn expose(&self) -> &str {
        match self {
            KafkaPropertyValue::Plain(v) => v,
            KafkaPropertyValue::Secret(s) => s.expose(),
        }
    }
}

/// The resend policy.
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before attempt 2, 3, …; the last value repeats.
    pub backoff: Vec<Duration>,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub mparticle: MparticleConfig,
    pub kafka: KafkaConfig,
    pub retry: RetryConfig,
    pub field_assignments_file: PathBuf,
    /// `MPARTICLE_ACCOUNTS_FILE`: several mParticle accounts, records routed among them.
    pub accounts_file: Option<PathBuf>,
    pub unmapped_action: UnmappedAction,
    pub admin_addr: SocketAddr,
    pub log_format: LogFormat,
    pub event_max_bytes: usize,
    pub max_in_flight_records: usize,
    pub max_in_flight_bytes: usize,
    pub worker_threads: usize,
    pub shutdown_grace: Duration,
}

/// Every configuration problem found, each naming its variable in plain words.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigProblems(pub Vec<String>);

impl ConfigProblems {
    pub fn push(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn extend(&mut self, other: ConfigProblems) {
        self.0.extend(other.0);
    }
}

impl fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigProblems> {
        Config::from_vars(std::env::vars())
    }

    /// Parses and validates configuration from `(name, value)` pairs.
    pub fn from_vars<I>(vars: I) -> Result<Config, ConfigProblems>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: BTreeMap<String, String> = vars.into_iter().collect();
        let mut problems = ConfigProblems::default();
        let env = Env::new(&vars);
        let mut p = Parser {
            problems: &mut problems,
        };

        let accounts_file = env
            .get(MPARTICLE_ACCOUNTS_FILE)
            .map(|path| PathBuf::from(path.trim()))
            .filter(|path| !path.as_os_str().is_empty());
        let api_url = p.text(env.get(MPARTICLE_API_URL), DEFAULT_API_URL);
        let (events_url, bulk_url) = p.api_urls(&api_url);
        // With an accounts file, each account names its own credentials.
        let (api_key, api_secret) = match accounts_file {
            Some(_) => (
                Secret::new(env.get(MPARTICLE_API_KEY).unwrap_or_default().trim()),
                Secret::new(env.get(MPARTICLE_API_SECRET).unwrap_or_default().trim()),
            ),
            None => (
                p.required_secret(MPARTICLE_API_KEY, env.get(MPARTICLE_API_KEY)),
                p.required_secret(MPARTICLE_API_SECRET, env.get(MPARTICLE_API_SECRET)),
            ),
        };
        let development = p.boolean(MPARTICLE_DEVELOPMENT, env.get(MPARTICLE_DEVELOPMENT), false);
        let max_batches_per_second = p.optional_rate(
            MPARTICLE_MAX_BATCHES_PER_SECOND,
            env.get(MPARTICLE_MAX_BATCHES_PER_SECOND),
        );
        let timeout = p.duration(
            MPARTICLE_TIMEOUT,
            env.get(MPARTICLE_TIMEOUT),
            DEFAULT_TIMEOUT,
        );
        let connect_timeout = p.duration(
            MPARTICLE_CONNECT_TIMEOUT,
            env.get(MPARTICLE_CONNECT_TIMEOUT),
            DEFAULT_CONNECT_TIMEOUT,
        );
        let max_in_flight_requests = p.count(
            MPARTICLE_MAX_IN_FLIGHT_REQUESTS,
            env.get(MPARTICLE_MAX_IN_FLIGHT_REQUESTS),
            DEFAULT_MAX_IN_FLIGHT_REQUESTS,
            1..=1024,
        );
        let bulk_linger = p.duration(
            MPARTICLE_BULK_LINGER,
            env.get(MPARTICLE_BULK_LINGER),
            DEFAULT_BULK_LINGER,
        );
        let max_events_per_batch = p.count(
            MPARTICLE_MAX_EVENTS_PER_BATCH,
            env.get(MPARTICLE_MAX_EVENTS_PER_BATCH),
            DEFAULT_MAX_EVENTS_PER_BATCH,
            1..=1000,
        );

        let bootstrap_servers = p.text(env.get(KAFKA_BOOTSTRAP_SERVERS), DEFAULT_BOOTSTRAP_SERVERS);
        let group_id = p.text(env.get(KAFKA_GROUP_ID), DEFAULT_GROUP_ID);
        let group_instance_id = env
            .get(KAFKA_GROUP_INSTANCE_ID)
            .map(|id| id.trim().to_string())
            .filter(|id| !id.is_empty());
        if let Some(id) = &group_instance_id {
            // Kafka takes any string; these are what a pod name is made of, and they keep
            // the id readable in the broker's tools.
            if id.len() > 200 || !valid_topic_name(id) {
                p.problems.push(format!(
                    "KAFKA_GROUP_INSTANCE_ID is {id:?}; it must be 1 to 200 of the characters \
                     a-z A-Z 0-9 . _ - (the pod's name)"
                ));
            }
        }
        let topics = p.topic_list(KAFKA_TOPICS, env.get(KAFKA_TOPICS));
        let retry_topic = p.topic(
            KAFKA_RETRY_TOPIC,
            env.get(KAFKA_RETRY_TOPIC),
            DEFAULT_RETRY_TOPIC,
        );
        let dlq_topic = p.topic(KAFKA_DLQ_TOPIC, env.get(KAFKA_DLQ_TOPIC), DEFAULT_DLQ_TOPIC);
        for topic in &topics {
            if *topic == retry_topic || *topic == dlq_topic {
                p.problems.push(format!(
                    "KAFKA_TOPICS names {topic:?}, which is also the retry or dead-letter topic: \
                     the service would consume its own output"
                ));
            }
        }
        if retry_topic == dlq_topic {
            p.problems.push(format!(
                "KAFKA_RETRY_TOPIC and KAFKA_DLQ_TOPIC are both {retry_topic:?}; they must differ"
            ));
        }
        let mut properties = Vec::new();
        let security = [
            (
                KAFKA_SECURITY_PROTOCOL,
                "security.protocol",
                env.get(KAFKA_SECURITY_PROTOCOL),
            ),
            (
                KAFKA_SASL_MECHANISM,
                "sasl.mechanism",
                env.get(KAFKA_SASL_MECHANISM),
            ),
            (
                KAFKA_SASL_USERNAME,
                "sasl.username",
                env.get(KAFKA_SASL_USERNAME),
            ),
            (
                KAFKA_SSL_CA_LOCATION,
                "ssl.ca.location",
                env.get(KAFKA_SSL_CA_LOCATION),
            ),
        ];
        for (_, property, value) in security {
            if let Some(value) = value.filter(|v| !v.trim().is_empty()) {
                properties.push((property.to_string(), KafkaPropertyValue::Plain(value)));
            }
        }
        if let Some(password) = env.get(KAFKA_SASL_PASSWORD).filter(|v| !v.is_empty()) {
            properties.push((
                "sasl.password".to_string(),
                KafkaPropertyValue::Secret(Secret::new(password)),
            ));
        }
        for (name, value) in &vars {
            let Some(suffix) = name.strip_prefix(PASS_THROUGH_PREFIX) else {
                continue;
            };
            let property = suffix.to_ascii_lowercase().replace('_', ".");
            if property.is_empty() {
                p.problems
                    .push(format!("{name} names no librdkafka property"));
            } else if GUARANTEE_PROPERTIES.contains(&property.as_str()) {
                p.problems.push(format!(
                    "{name} would set {property}, which the delivery guarantee depends on; \
                     the service sets it itself"
                ));
            } else if let Some(why) = refused_pass_through(&property, value) {
                p.problems.push(format!("{name} is refused: {why}"));
            } else {
                let value = if is_secret_property(&property) {
                    KafkaPropertyValue::Secret(Secret::new(value.clone()))
                } else {
                    KafkaPropertyValue::Plain(value.clone())
                };
                properties.push((property, value));
            }
        }

        let max_attempts = p.count(
            RETRY_MAX_ATTEMPTS,
            env.get(RETRY_MAX_ATTEMPTS),
            DEFAULT_MAX_ATTEMPTS as usize,
            1..=100,
        ) as u32;
        let backoff = p.backoff(RETRY_BACKOFF, env.get(RETRY_BACKOFF));
        let field_assignments_file = PathBuf::from(p.text(
            env.get(FIELD_ASSIGNMENTS_FILE),
            DEFAULT_FIELD_ASSIGNMENTS_FILE,
        ));
        let unmapped_action = match env.get(UNMAPPED_ACTION).as_deref().map(str::trim) {
            None | Some("") | Some("skip") => UnmappedAction::Skip,
            Some("dead-letter") => UnmappedAction::DeadLetter,
            Some(other) => {
                p.problems.push(format!(
                    "UNMAPPED_ACTION is {other:?}; it must be \"skip\" or \"dead-letter\""
                ));
                UnmappedAction::Skip
            }
        };
        let admin_addr = p.socket_addr(ADMIN_ADDR, env.get(ADMIN_ADDR), DEFAULT_ADMIN_ADDR);
        let log_format = match env.get(LOG_FORMAT).as_deref().map(str::trim) {
            None | Some("") | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                p.problems.push(format!(
                    "LOG_FORMAT is {other:?}; it must be \"text\" or \"json\""
                ));
                LogFormat::Text
            }
        };
        let event_max_bytes = p.count(
            EVENT_MAX_BYTES,
            env.get(EVENT_MAX_BYTES),
            DEFAULT_EVENT_MAX_BYTES,
            64..=4 * 1024 * 1024,
        );
        let max_in_flight_records = p.count(
            MAX_IN_FLIGHT_RECORDS,
            env.get(MAX_IN_FLIGHT_RECORDS),
            DEFAULT_MAX_IN_FLIGHT_RECORDS,
            1..=1_000_000,
        );
        let max_in_flight_bytes = p.count(
            MAX_IN_FLIGHT_BYTES,
            env.get(MAX_IN_FLIGHT_BYTES),
            DEFAULT_MAX_IN_FLIGHT_BYTES,
            // Within a semaphore's u32 acquire; at least one record at the largest
            // EVENT_MAX_BYTES.
            64 * 1024..=u32::MAX as usize,
        );
        let worker_threads = p.count(
            WORKER_THREADS,
            env.get(WORKER_THREADS),
            DEFAULT_WORKER_THREADS,
            1..=256,
        );
        let shutdown_grace = p.duration(
            SHUTDOWN_GRACE,
            env.get(SHUTDOWN_GRACE),
            DEFAULT_SHUTDOWN_GRACE,
        );

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Config {
            mparticle: MparticleConfig {
                events_url,
                bulk_url,
                api_key,
                api_secret,
                development,
                max_batches_per_second,
                timeout,
                connect_timeout,
                max_in_flight_requests,
                bulk_linger,
                max_events_per_batch,
            },
            kafka: KafkaConfig {
                bootstrap_servers,
                group_id,
                group_instance_id,
                topics,
                retry_topic,
                dlq_topic,
                properties,
            },
            retry: RetryConfig {
                max_attempts,
                backoff,
            },
            field_assignments_file,
            accounts_file,
            unmapped_action,
            admin_addr,
            log_format,
            event_max_bytes,
            max_in_flight_records,
            max_in_flight_bytes,
            worker_threads,
            shutdown_grace,
        })
    }

    /// The field-assignments path as configured, even when other variables are wrong, so
    /// that its problems can be reported in the same pass.
    pub fn field_assignments_path_from_vars<I>(vars: I) -> PathBuf
    where
        I: IntoIterator<Item = (String, String)>,
    {
        vars.into_iter()
            .find(|(name, value)| name == FIELD_ASSIGNMENTS_FILE && !value.trim().is_empty())
            .map(|(_, value)| PathBuf::from(value.trim()))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_FIELD_ASSIGNMENTS_FILE))
    }
}
