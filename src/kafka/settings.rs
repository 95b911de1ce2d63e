//! librdkafka settings for the consumer and the producer. The operator's pass-through
//! properties go in first; the settings the delivery guarantee depends on go in last, so
//! nothing can override them.

use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

fn base(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set(
        "client.id",
        concat!("mparticle-forwarder-", env!("CARGO_PKG_VERSION")),
    );
    for (name, value) in &kafka.properties {
        config.set(name, value.expose());
    }
    config.set("bootstrap.servers", &kafka.bootstrap_servers);
    config
}

/// The source-topic consumer: offsets are stored by the service only once a record's
/// outcome is durable, and librdkafka commits what was stored.
pub fn consumer(kafka: &KafkaConfig, group_id: &str) -> ClientConfig {
    let mut config = base(kafka);
    set_default(&mut config, "auto.offset.reset", "earliest");
    set_default(&mut config, "auto.commit.interval.ms", "1000");
    set_default(&mut config, "statistics.interval.ms", "5000");
    set_default(
        &mut config,
        "partition.assignment.strategy",
        "cooperative-sticky",
    );
    // Memory: librdkafka's defaults (50 MiB fetch responses, 1 MiB per partition, a 64 MiB
    // queue, 100,000 prefetched messages per partition) make most of the process's memory
    // at full speed, and the queue's limit counts compressed bytes, so decompressed batches
    // take several times more. These keep a backlog drain under 64 MiB peak RSS without
    // slowing it (BENCHMARKS.md); operators can raise them with KAFKA_PROPERTY_*.
    set_default(&mut config, "fetch.max.bytes", "1048576");
    set_default(&mut config, "max.partition.fetch.bytes", "131072");
    set_default(&mut config, "queued.max.messages.kbytes", "2048");
    set_default(&mut config, "queued.min.messages", "10000");
    // With the queue bounded, a partition whose queue is full waits this long before its
    // next fetch; librdkafka's default of 1 s stalled every partition in turn and held
    // consumption at a fraction of what the broker serves (BENCHMARKS.md).
    set_default(&mut config, "fetch.queue.backoff.ms", "10");
    config.set("group.id", group_id);
    config.set("enable.auto.commit", "true");
    config.set("enable.auto.offset.store", "false");
    config.set("enable.partition.eof", "false");
    config
}

/// The retry and dead-letter producer: a record is written once and acknowledged by every
/// in-sync replica before the source offset moves.
pub fn producer(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = base(kafka);
    set_default(&mut config, "linger.ms", "5");
    set_default(&mut config, "compression.type", "lz4");
    config.set("acks", "all");
    config.set("enable.idempotence", "true");
    config
}

/// Sets a property unless the operator's pass-through already did.
fn set_default(config: &mut ClientConfig, name: &str, value: &str) {
    if config.get(name).is_none() {
        config.set(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KafkaPropertyValue;

    fn kafka(properties: Vec<(&str, &str)>) -> KafkaConfig {
        KafkaConfig {
            bootstrap_servers: "localhost:9092".into(),
            group_id: "g".into(),
            group_instance_id: None,
            topics: vec!["t".into()],
            retry_topic: "r".into(),
            dlq_topic: "d".into(),
            properties: properties
                .into_iter()
                .map(|(k, v)| (k.to_string(), KafkaPropertyValue::Plain(v.to_string())))
                .collect(),
        }
    }

    #[test]
    fn guarantee_settings_win_over_pass_through() {
        let config = consumer(
            &kafka(vec![
                ("enable.auto.offset.store", "true"),
                ("fetch.max.bytes", "1000"),
            ]),
            "g",
        );
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(config.get("fetch.max.bytes"), Some("1000"));
        let config = producer(&kafka(vec![("acks", "1")]));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
    }

    #[test]
    fn operators_may_tune_defaults() {
        let config = consumer(&kafka(vec![("auto.offset.reset", "latest")]), "g");
        assert_eq!(config.get("auto.offset.reset"), Some("latest"));
    }
}
