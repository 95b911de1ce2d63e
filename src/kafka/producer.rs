//! Writes retry and dead-letter records: the original key and value bytes, the original
//! headers and the `forwarder-*` headers. A write counts only once the broker has
//! acknowledged it (acks=all, idempotent producer); only then may the source offset move.
//! A dead letter too large for its topic is written [shortened](super::shortened) instead.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use thiserror::Error;

use crate::config::KafkaConfig;
use crate::kafka::ffi;
use crate::kafka::headers::{Failure, failure_headers};
use crate::kafka::record::{HeaderList, SourceRecord};
use crate::kafka::settings;
use crate::kafka::shortened::{Cut, shorten};

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

impl PublishError {
    /// The record (with its headers) is over the producer's or the topic's size limit.
    pub fn is_too_large(&self) -> bool {
        matches!(
            self.source.rdkafka_error_code(),
            Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
        )
    }
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

    /// Writes `record` to the dead-letter topic and waits for the acknowledgement. When
    /// the topic refuses it as too large, a shortened copy goes instead, and a bare one if
    /// that is still too large.
    pub async fn dead_letter(
        &self,
        record: &SourceRecord,
        failure: &Failure,
    ) -> Result<(), PublishError> {
        let headers = failure_headers(record, failure);
        let mut outcome = self
            .write(
                &self.dlq_topic,
                None,
                record.key(),
                record.value(),
                &headers,
            )
            .await;
        for cut in [Cut::Prefix, Cut::Bare] {
            match &outcome {
                Err(error) if error.is_too_large() => {}
                _ => break,
            }
            let short = shorten(record, &headers, cut);
            outcome = self
                .write(
                    &self.dlq_topic,
                    None,
                    short.key.as_deref(),
                    short.value.as_deref(),
                    &short.headers,
                )
                .await;
        }
        outcome
    }

    /// Writes `record` to the retry topic, on `partition` if one is given, and waits for
    /// the acknowledgement. A record too large for it fails with
    /// [`PublishError::is_too_large`].
    pub async fn retry(
        &self,
        record: &SourceRecord,
        failure: &Failure,
        partition: Option<i32>,
    ) -> Result<(), PublishError> {
        let headers = failure_headers(record, failure);
        self.write(
            &self.retry_topic,
            partition,
            record.key(),
            record.value(),
            &headers,
        )
        .await
    }

    async fn write(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers_out: &HeaderList,
    ) -> Result<(), PublishError> {
        let mut out: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).headers(ffi::write_headers(headers_out));
        if let Some(partition) = partition {
            out = out.partition(partition);
        }
        if let Some(key) = key {
            out = out.key(key);
        }
        if let Some(value) = value {
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
