//! Writes retry and dead-letter records: the original key and value bytes, the original
//! headers and the `forwarder-*` headers. A write counts only once the broker has
//! acknowledged it (acks=all, idempotent producer); only then may the source offset move.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use thiserror::Error;

use crate::config::KafkaConfig;
use crate::kafka::headers::{Failure, failure_headers};
use crate::kafka::record::{HeaderList, SourceRecord};
use crate::kafka::settings;

/// How long a write may wait for room in librdkafka's local queue before it fails.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// A record could not be written. Fatal: the process stops without moving the offset, and
/// the record is consumed again after restart.
#[derive(Debug, Error)]
#[error("could not write to {topic}: {source}")]
pub struct PublishError {
    pub topic: String,
    #[source]
    pub source: KafkaError,
}

/// The producer for the retry and dead-letter topics.
#[derive(Clone)]
pub struct FailurePublisher {
    producer: FutureProducer,
    dlq_topic: String,
    retry_topic: String,
}

impl FailurePublisher {
    pub fn new(kafka: &KafkaConfig) -> Result<FailurePublisher, KafkaError> {
        Ok(FailurePublisher {
            producer: settings::producer(kafka).create()?,
            dlq_topic: kafka.dlq_topic.clone(),
            retry_topic: kafka.retry_topic.clone(),
        })
    }

    /// Writes `record` to the dead-letter topic and waits for the acknowledgement.
    pub async fn dead_letter(
        &self,
        record: &SourceRecord,
        failure: &Failure,
    ) -> Result<(), PublishError> {
        self.publish(&self.dlq_topic, record, failure).await
    }

    /// Writes `record` to the retry topic and waits for the acknowledgement.
    pub async fn retry(
        &self,
        record: &SourceRecord,
        failure: &Failure,
    ) -> Result<(), PublishError> {
        self.publish(&self.retry_topic, record, failure).await
    }

    /// Writes a retry record back to the end of the retry topic unchanged (its headers
    /// already say when it is due), and waits for the acknowledgement.
    pub async fn requeue(&self, record: &SourceRecord) -> Result<(), PublishError> {
        self.write(&self.retry_topic, record, record.headers().to_vec())
            .await
    }

    async fn publish(
        &self,
        topic: &str,
        record: &SourceRecord,
        failure: &Failure,
    ) -> Result<(), PublishError> {
        self.write(topic, record, failure_headers(record, failure))
            .await
    }

    async fn write(
        &self,
        topic: &str,
        record: &SourceRecord,
        headers_out: HeaderList,
    ) -> Result<(), PublishError> {
        let mut headers = OwnedHeaders::new();
        for (key, value) in headers_out {
            headers = headers.insert(Header {
                key: &key,
                value: value.as_deref(),
            });
        }
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(key) = record.key() {
            out = out.key(key);
        }
        if let Some(value) = record.value() {
            out = out.payload(value);
        }
        match self.producer.send(out, QUEUE_TIMEOUT).await {
            Ok(_) => Ok(()),
            Err((source, _)) => Err(PublishError {
                topic: topic.to_string(),
                source,
            }),
        }
    }

    /// Waits for everything queued to be acknowledged, up to `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}
