//! `replay-dlq`: dead letters republished to the topic they were first consumed from,
//! after the cause is fixed. Filters by error kind, action and time; `--dry-run` only
//! lists. Each replay adds one to `forwarder-replay-count`; a record already replayed
//! `max_replays` times is left where it is, so nothing loops forever.
//!
//! It reads the dead-letter topic from the beginning up to its end at the start of the run,
//! waits out a full local queue and transient consume errors, reports what was acknowledged and
//! what was not, and commits nothing: running it twice replays twice (mParticle drops
//! duplicates by `source_request_id`). Narrow it with `--since`.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::kafka::ffi;
use crate::kafka::headers::{ERROR_KIND, ORIGINAL_TOPIC, REPLAY_ATTRIBUTES, REPLAY_COUNT};
use crate::kafka::record::{HeaderList, SourceRecord};
use crate::kafka::settings;
use crate::kafka::shortened::is_shortened;
use crate::kafka::topic::Topic;

/// Which dead letters to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// `forwarder-error-kind` values; empty: every kind.
    pub kinds: Vec<String>,
    /// Loyalty-event actions; empty: every action.
    pub actions: Vec<String>,
    /// Dead-lettered at or after this unix ms.
    pub since_ms: Option<i64>,
    /// Dead-lettered before this unix ms.
    pub until_ms: Option<i64>,
    /// Replays a record may have had already.
    pub max_replays: u32,
    /// Replayed records keep their user attributes (by default the service leaves them
    /// out: the customer's later records have set newer values since).
    pub with_attributes: bool,
}

/// What to do with one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Replay {
        topic: String,
        replay_count: u32,
    },
    Filtered,
    /// Replayed `max_replays` times already.
    LoopGuard,
    /// No `forwarder-original-topic` header: not a dead letter of this service.
    NoOrigin,
    /// A shortened copy: what it holds is not the original record.
    Shortened,
}

/// Decides one dead letter. Pure.
pub fn decide(record: &SourceRecord, filter: &ReplayFilter) -> Decision {
    let Some(topic) = record.header_text(ORIGINAL_TOPIC) else {
        return Decision::NoOrigin;
    };
    if is_shortened(record.headers()) {
        return Decision::Shortened;
    }
    if !filter.kinds.is_empty() {
        let kind = record.header_text(ERROR_KIND).unwrap_or_default();
        if !filter.kinds.iter().any(|k| k == kind) {
            return Decision::Filtered;
        }
    }
    if !filter.actions.is_empty() {
        let action = record
            .value()
            .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
            .and_then(|v| v.get("action").and_then(|a| a.as_str()).map(str::to_string));
        if !action.is_some_and(|a| filter.actions.contains(&a)) {
            return Decision::Filtered;
        }
    }
    let at = record.timestamp_ms.unwrap_or(0);
    if filter.since_ms.is_some_and(|since| at < since)
        || filter.until_ms.is_some_and(|until| at >= until)
    {
        return Decision::Filtered;
    }
    let replays = record
        .header_text(REPLAY_COUNT)
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if replays >= filter.max_replays {
        return Decision::LoopGuard;
    }
    Decision::Replay {
        topic: topic.to_string(),
        replay_count: replays + 1,
    }
}

/// The headers of the replayed record: the original ones without any `forwarder-*`
/// header, plus the new replay count (and, `with_attributes`, the request to keep its
/// user attributes).
pub fn replay_headers(
    record: &SourceRecord,
    replay_count: u32,
    with_attributes: bool,
) -> HeaderList {
    let mut headers: HeaderList = record
        .headers()
        .iter()
        .filter(|(name, _)| !name.starts_with("forwarder-"))
        .cloned()
        .collect();
    headers.push((
        REPLAY_COUNT.into(),
        Some(replay_count.to_string().into_bytes()),
    ));
    if with_attributes {
        headers.push((REPLAY_ATTRIBUTES.into(), Some(b"keep".to_vec())));
    }
    headers
}

/// What a run did.
#[derive(Debug, Default)]
pub struct ReplayReport {
    pub examined: usize,
    /// Acknowledged by the broker (with `--dry-run`: would be replayed), per topic.
    pub replayed: BTreeMap<String, usize>,
    pub filtered: usize,
    pub loop_guarded: usize,
    pub no_origin: usize,
    /// Shortened copies of records too large to dead-letter whole: not replayable.
    pub shortened: usize,
    /// Queued but not acknowledged, with the first error.
    pub failed: usize,
    pub first_failure: Option<String>,
    /// Why the run ended before the topic's end, if it did.
    pub stopped: Option<String>,
}

impl ReplayReport {
    /// Everything examined was decided and every replay acknowledged.
    pub fn is_complete(&self) -> bool {
        self.failed == 0 && self.stopped.is_none()
    }
}

/// Replays queued and not yet acknowledged, oldest first. A full local queue waits for the
/// oldest rather than failing the run.
struct Replays {
    producer: FutureProducer,
    queued: VecDeque<(String, DeliveryFuture)>,
}

/// Most replays queued unacknowledged at once (the memory of their copies).
const MAX_QUEUED: usize = 10_000;

/// How long polling may go without a record before the run gives up.
const POLL_PATIENCE: Duration = Duration::from_secs(30);

impl Replays {
    async fn send(
        &mut self,
        target: &str,
        record: &SourceRecord,
        headers: OwnedHeaders,
        report: &mut ReplayReport,
    ) {
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(target).headers(headers);
        if let Some(key) = record.key() {
            out = out.key(key);
        }
        if let Some(value) = record.value() {
            out = out.payload(value);
        }
        loop {
            if self.queued.len() >= MAX_QUEUED {
                self.settle_oldest(report).await;
            }
            match self.producer.send_result(out) {
                Ok(delivery) => {
                    self.queued.push_back((target.to_string(), delivery));
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    out = back;
                    if self.queued.is_empty() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    } else {
                        self.settle_oldest(report).await;
                    }
                }
                Err((error, _)) => {
                    return fail(
                        report,
                        format!("cannot queue a replay to {target}: {error}"),
                    );
                }
            }
        }
    }

    async fn settle_oldest(&mut self, report: &mut ReplayReport) {
        let Some((target, delivery)) = self.queued.pop_front() else {
            return;
        };
        match delivery.await {
            Ok(Ok(_)) => *report.replayed.entry(target).or_default() += 1,
            Ok(Err((error, _))) => fail(report, format!("a replay to {target} failed: {error}")),
            Err(_) => fail(report, "the producer went away".to_string()),
        }
    }

    async fn settle_all(&mut self, report: &mut ReplayReport) {
        while !self.queued.is_empty() {
            self.settle_oldest(report).await;
        }
    }
}

fn fail(report: &mut ReplayReport, why: String) {
    report.failed += 1;
    report.first_failure.get_or_insert(why);
}

/// Replays the dead-letter topic's records as `filter` says; with `dry_run` only lists
/// them on `out`. Waits for every replay's acknowledgement; what went wrong is in the
/// report rather than an early error, so that it says what was replayed.
pub async fn run(
    kafka: &KafkaConfig,
    filter: &ReplayFilter,
    dry_run: bool,
    out: &mut dyn Write,
) -> anyhow::Result<ReplayReport> {
    let consumer: BaseConsumer = {
        let mut config = settings::consumer(kafka, &format!("{}.replay", kafka.group_id));
        config.set("enable.auto.commit", "false");
        config.create()?
    };
    let mut replays = Replays {
        producer: settings::producer(kafka).create()?,
        queued: VecDeque::new(),
    };
    let dlq = kafka.dlq_topic.as_str();
    let metadata = consumer.fetch_metadata(Some(dlq), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(dlq, p, Duration::from_secs(10))?;
        if high > low {
            ends.insert(p, high);
            assignment.add_partition_offset(dlq, p, Offset::Beginning)?;
        }
    }
    let mut report = ReplayReport::default();
    if ends.is_empty() {
        return Ok(report);
    }
    consumer.assign(&assignment)?;
    let topic = Topic::named(dlq);
    let mut last_record = Instant::now();
    while !ends.is_empty() {
        // The poll blocks this thread: the replays' acknowledgements arrive on librdkafka's
        // own threads meanwhile.
        let message = match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => message,
            Some(Err(error)) if last_record.elapsed() < POLL_PATIENCE => {
                writeln!(out, "consume error (carrying on): {error}")?;
                continue;
            }
            None if last_record.elapsed() < POLL_PATIENCE => continue,
            Some(Err(error)) => {
                report.stopped = Some(format!(
                    "no record from {dlq} for {POLL_PATIENCE:?} before its end; last error: {error}"
                ));
                break;
            }
            None => {
                report.stopped = Some(format!(
                    "no record from {dlq} for {POLL_PATIENCE:?} before its end; is the broker up?"
                ));
                break;
            }
        };
        last_record = Instant::now();
        let record = SourceRecord::copy_from(&message, topic);
        if ends
            .get(&message.partition())
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(&message.partition());
        }
        report.examined += 1;
        match decide(&record, filter) {
            Decision::Filtered => report.filtered += 1,
            Decision::LoopGuard => report.loop_guarded += 1,
            Decision::NoOrigin => report.no_origin += 1,
            Decision::Shortened => {
                report.shortened += 1;
                writeln!(
                    out,
                    "not replayable {}/{}: a shortened copy of a record too large to dead-letter whole",
                    record.partition, record.offset
                )?;
            }
            Decision::Replay {
                topic: target,
                replay_count,
            } => {
                writeln!(
                    out,
                    "{} {}/{} -> {} ({}, replay {replay_count})",
                    if dry_run { "would replay" } else { "replaying" },
                    record.partition,
                    record.offset,
                    target,
                    record.header_text(ERROR_KIND).unwrap_or("?"),
                )?;
                if dry_run {
                    *report.replayed.entry(target).or_default() += 1;
                    continue;
                }
                let headers = ffi::write_headers(&replay_headers(
                    &record,
                    replay_count,
                    filter.with_attributes,
                ));
                replays.send(&target, &record, headers, &mut report).await;
            }
        }
    }
    replays.settle_all(&mut report).await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_letter(headers: &[(&str, &str)], value: &str, timestamp_ms: i64) -> SourceRecord {
        SourceRecord::new(
            Topic::named("dlq"),
            0,
            3,
            Some(timestamp_ms),
            Some(b"c1".to_vec()),
            Some(value.as_bytes().to_vec()),
            headers
                .iter()
                .map(|(k, v)| ((*k).into(), Some(v.as_bytes().to_vec())))
                .collect(),
        )
    }

    fn filter() -> ReplayFilter {
        ReplayFilter {
            max_replays: 3,
            ..ReplayFilter::default()
        }
    }

    const EVENT: &str = r#"{"id":"e1","action":"point_add","customer":{"id":"c1"}}"#;

    #[test]
    fn a_dead_letter_goes_back_to_its_original_topic() {
        let record = dead_letter(
            &[
                (ORIGINAL_TOPIC, "loyalty.point-add"),
                (ERROR_KIND, "http_4xx"),
            ],
            EVENT,
            10,
        );
        assert_eq!(
            decide(&record, &filter()),
            Decision::Replay {
                topic: "loyalty.point-add".into(),
                replay_count: 1
            }
        );
    }

    #[test]
    fn filters_select_by_kind_action_and_time() {
        let record = dead_letter(
            &[(ORIGINAL_TOPIC, "t"), (ERROR_KIND, "mapping")],
            EVENT,
            1_000,
        );
        let by_kind = ReplayFilter {
            kinds: vec!["attempts_exhausted".into()],
            ..filter()
        };
        assert_eq!(decide(&record, &by_kind), Decision::Filtered);
        let by_action = ReplayFilter {
            actions: vec!["reward_claim".into()],
            ..filter()
        };
        assert_eq!(decide(&record, &by_action), Decision::Filtered);
        let matching_action = ReplayFilter {
            actions: vec!["point_add".into()],
            ..filter()
        };
        assert!(matches!(
            decide(&record, &matching_action),
            Decision::Replay { .. }
        ));
        let too_early = ReplayFilter {
            since_ms: Some(2_000),
            ..filter()
        };
        assert_eq!(decide(&record, &too_early), Decision::Filtered);
        let too_late = ReplayFilter {
            until_ms: Some(1_000),
            ..filter()
        };
        assert_eq!(decide(&record, &too_late), Decision::Filtered);
    }

    #[test]
    fn a_record_replayed_too_often_stays() {
        let record = dead_letter(&[(ORIGINAL_TOPIC, "t"), (REPLAY_COUNT, "3")], EVENT, 0);
        assert_eq!(decide(&record, &filter()), Decision::LoopGuard);
        let record = dead_letter(&[(ORIGINAL_TOPIC, "t"), (REPLAY_COUNT, "2")], EVENT, 0);
        assert_eq!(
            decide(&record, &filter()),
            Decision::Replay {
                topic: "t".into(),
                replay_count: 3
            }
        );
    }

    #[test]
    fn replayed_headers_drop_the_failure_and_count_the_replay() {
        let record = dead_letter(
            &[
                (ORIGINAL_TOPIC, "t"),
                (ERROR_KIND, "mapping"),
                ("traceparent", "00-x"),
                (REPLAY_COUNT, "1"),
            ],
            EVENT,
            0,
        );
        let headers = replay_headers(&record, 2, false);
        let names: Vec<&[u8]> = headers.iter().map(|(n, _)| n.as_bytes()).collect();
        assert_eq!(names, [&b"traceparent"[..], REPLAY_COUNT.as_bytes()]);
        assert_eq!(headers[1].1.as_deref(), Some(&b"2"[..]));
        let kept = replay_headers(&record, 2, true);
        assert_eq!(
            kept.last().unwrap().0.as_bytes(),
            REPLAY_ATTRIBUTES.as_bytes()
        );
        assert_eq!(kept.last().unwrap().1.as_deref(), Some(&b"keep"[..]));
    }

    #[test]
    fn a_shortened_copy_is_never_replayed() {
        let record = dead_letter(
            &[
                (ORIGINAL_TOPIC, "t"),
                (crate::kafka::shortened::TRUNCATED, "value"),
            ],
            "{\"id\":",
            0,
        );
        assert_eq!(decide(&record, &filter()), Decision::Shortened);
    }

    #[test]
    fn a_record_of_unknown_origin_is_left_alone() {
        assert_eq!(
            decide(&dead_letter(&[], EVENT, 0), &filter()),
            Decision::NoOrigin
        );
    }
}
