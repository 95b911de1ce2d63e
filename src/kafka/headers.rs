//! The `forwarder-*` headers of retry and dead-letter records. Pure.
//!
//! A retry or dead-letter record is the original record plus these headers. The
//! `forwarder-original-*` and `forwarder-first-attempt-ms` headers are set at the first
//! failure and kept after; the others describe the latest attempt and are replaced.

use crate::kafka::record::{Header, HeaderList, SourceRecord};
use crate::outcome::ErrorKind;
use crate::retry::RetryState;

pub const ATTEMPT: &str = "forwarder-attempt";
pub const NOT_BEFORE_MS: &str = "forwarder-not-before-ms";
pub const ORIGINAL_TOPIC: &str = "forwarder-original-topic";
pub const ORIGINAL_PARTITION: &str = "forwarder-original-partition";
pub const ORIGINAL_OFFSET: &str = "forwarder-original-offset";
pub const FIRST_ATTEMPT_MS: &str = "forwarder-first-attempt-ms";
pub const LAST_ATTEMPT_MS: &str = "forwarder-last-attempt-ms";
pub const ERROR_KIND: &str = "forwarder-error-kind";
pub const ERROR: &str = "forwarder-error";
pub const HTTP_STATUS: &str = "forwarder-http-status";
pub const HTTP_BODY: &str = "forwarder-http-body";
pub const REPLAY_COUNT: &str = "forwarder-replay-count";
/// On a replayed record, `keep`: its batch carries its user attributes (`replay-dlq
/// --with-attributes`); without it a replayed record's are left out.
pub const REPLAY_ATTRIBUTES: &str = "forwarder-replay-attributes";
/// On a dead letter: the customer's later records that waited behind it and go on without
/// it, each as `topic/partition/offset` where it was first consumed.
pub const LATER_RECORDS: &str = "forwarder-later-records";

/// Headers that describe the latest failure and are replaced at each one.
const PER_FAILURE: &[&str] = &[
    ATTEMPT,
    NOT_BEFORE_MS,
    LAST_ATTEMPT_MS,
    ERROR_KIND,
    ERROR,
    HTTP_STATUS,
    HTTP_BODY,
    LATER_RECORDS,
];

/// Headers set once, at the first failure.
const SET_ONCE: &[&str] = &[
    ORIGINAL_TOPIC,
    ORIGINAL_PARTITION,
    ORIGINAL_OFFSET,
    FIRST_ATTEMPT_MS,
];

/// Most bytes of `forwarder-error` and `forwarder-http-body`.
pub const MAX_DETAIL_BYTES: usize = 1024;

/// What went wrong, for the headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub kind: ErrorKind,
    /// One line of detail; cut to 1 KiB when written.
    pub error: String,
    pub http_status: Option<u16>,
    pub http_body: Option<String>,
    /// Delivery attempts made so far (0 for a record never sent).
    pub attempt: u32,
    pub first_attempt_ms: Option<i64>,
    pub last_attempt_ms: Option<i64>,
    /// For a dead letter: the customer's later records that waited behind it
    /// ([`LATER_RECORDS`]).
    pub later_records: Vec<String>,
    /// For a retry record: when the next attempt may start.
    pub not_before_ms: Option<i64>,
}

impl Failure {
    /// A record written to the retry topic without being sent (held behind its customer's
    /// retry, or parked while its account cannot send): no attempt used, due at `due_ms`.
    pub fn waiting(
        kind: ErrorKind,
        error: String,
        attempt: u32,
        first_attempt_ms: Option<i64>,
        due_ms: i64,
    ) -> Failure {
        Failure {
            kind,
            error,
            http_status: None,
            http_body: None,
            attempt,
            first_attempt_ms,
            last_attempt_ms: None,
            later_records: Vec::new(),
            not_before_ms: Some(due_ms),
        }
    }
}

/// The headers for the retry or dead-letter copy of `record`.
pub fn failure_headers(record: &SourceRecord, failure: &Failure) -> HeaderList {
    let mut headers: HeaderList = record
        .headers()
        .iter()
        .filter(|(name, _)| !PER_FAILURE.iter().any(|p| name.is(p)))
        .cloned()
        .collect();
    let has = |headers: &[Header], name: &str| headers.iter().any(|(n, _)| n == name);
    let mut add = |name: &str, value: String| headers.push((name.into(), Some(value.into_bytes())));
    let first_failure = !SET_ONCE
        .iter()
        .any(|name| record.headers().iter().any(|(n, _)| n == name));
    if first_failure {
        add(ORIGINAL_TOPIC, record.topic.to_string());
        add(ORIGINAL_PARTITION, record.partition.to_string());
        add(ORIGINAL_OFFSET, record.offset.to_string());
    }
    add(ATTEMPT, failure.attempt.to_string());
    if let Some(ms) = failure.not_before_ms {
        add(NOT_BEFORE_MS, ms.to_string());
    }
    if let Some(ms) = failure.last_attempt_ms {
        add(LAST_ATTEMPT_MS, ms.to_string());
    }
    add(ERROR_KIND, failure.kind.as_str().to_string());
    add(ERROR, cut(&failure.error));
    if let Some(status) = failure.http_status {
        add(HTTP_STATUS, status.to_string());
    }
    if let Some(body) = &failure.http_body {
        add(HTTP_BODY, cut(body));
    }
    if !failure.later_records.is_empty() {
        add(LATER_RECORDS, cut(&failure.later_records.join(",")));
    }
    if let Some(ms) = failure.first_attempt_ms {
        if !has(record.headers(), FIRST_ATTEMPT_MS) {
            headers.push((FIRST_ATTEMPT_MS.into(), Some(ms.to_string().into_bytes())));
        }
    }
    headers
}

/// What a record read from the retry topic says about its earlier attempts. A record
/// without the headers (written by hand, say) is due at once, counted as one attempt made.
pub fn retry_state(record: &SourceRecord) -> RetryState {
    let number = |name: &str| {
        record
            .header_text(name)
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    RetryState {
        attempts_made: number(ATTEMPT).map_or(1, |n| n.clamp(0, i64::from(u32::MAX)) as u32),
        not_before_ms: number(NOT_BEFORE_MS).unwrap_or(0),
        first_attempt_ms: number(FIRST_ATTEMPT_MS),
    }
}

fn cut(text: &str) -> String {
    crate::mparticle::client::one_line(text, MAX_DETAIL_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::topic::Topic;

    fn record(headers: Vec<(&str, &str)>) -> SourceRecord {
        SourceRecord::new(
            Topic::named("loyalty.point-add"),
            2,
            41,
            Some(1),
            Some(b"cust-1".to_vec()),
            Some(b"{}".to_vec()),
            headers
                .into_iter()
                .map(|(k, v)| (k.into(), Some(v.as_bytes().to_vec())))
                .collect(),
        )
    }

    fn get<'a>(headers: &'a [Header], name: &str) -> Vec<&'a str> {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| std::str::from_utf8(v.as_deref().unwrap()).unwrap())
            .collect()
    }

    fn failure() -> Failure {
        Failure {
            kind: ErrorKind::Http5xx,
            error: "HTTP 503 from mParticle".into(),
            http_status: Some(503),
            http_body: Some("unavailable\nretry".into()),
            attempt: 1,
            first_attempt_ms: Some(1000),
            last_attempt_ms: Some(1000),
            not_before_ms: Some(11_000),
            later_records: Vec::new(),
        }
    }

    #[test]
    fn first_failure_records_the_origin_and_keeps_original_headers() {
        let h = failure_headers(&record(vec![("traceparent", "00-abc")]), &failure());
        assert_eq!(get(&h, "traceparent"), ["00-abc"]);
        assert_eq!(get(&h, ORIGINAL_TOPIC), ["loyalty.point-add"]);
        assert_eq!(get(&h, ORIGINAL_PARTITION), ["2"]);
        assert_eq!(get(&h, ORIGINAL_OFFSET), ["41"]);
        assert_eq!(get(&h, ATTEMPT), ["1"]);
        assert_eq!(get(&h, NOT_BEFORE_MS), ["11000"]);
        assert_eq!(get(&h, HTTP_BODY), ["unavailable retry"]);
        assert_eq!(get(&h, FIRST_ATTEMPT_MS), ["1000"]);
    }

    #[test]
    fn later_failures_keep_the_origin_and_replace_the_rest() {
        let earlier = record(vec![
            (ORIGINAL_TOPIC, "loyalty.reward-claim"),
            (ORIGINAL_PARTITION, "0"),
            (ORIGINAL_OFFSET, "7"),
            (FIRST_ATTEMPT_MS, "500"),
            (ATTEMPT, "1"),
            (ERROR_KIND, "timeout"),
        ]);
        let mut later = failure();
        later.attempt = 2;
        let h = failure_headers(&earlier, &later);
        assert_eq!(get(&h, ORIGINAL_TOPIC), ["loyalty.reward-claim"]);
        assert_eq!(get(&h, ORIGINAL_OFFSET), ["7"]);
        assert_eq!(get(&h, FIRST_ATTEMPT_MS), ["500"]);
        assert_eq!(get(&h, ATTEMPT), ["2"]);
        assert_eq!(get(&h, ERROR_KIND), ["http_5xx"]);
    }

    #[test]
    fn retry_state_is_read_from_the_headers() {
        let retry = record(vec![
            (ATTEMPT, "2"),
            (NOT_BEFORE_MS, "12345"),
            (FIRST_ATTEMPT_MS, "100"),
        ]);
        assert_eq!(
            retry_state(&retry),
            RetryState {
                attempts_made: 2,
                not_before_ms: 12_345,
                first_attempt_ms: Some(100)
            }
        );
        let by_hand = record(vec![]);
        assert_eq!(retry_state(&by_hand).not_before_ms, 0);
        assert_eq!(retry_state(&by_hand).attempts_made, 1);
    }

    #[test]
    fn detail_is_cut_to_one_kibibyte() {
        let mut f = failure();
        f.error = "x".repeat(5000);
        let h = failure_headers(&record(vec![]), &f);
        assert_eq!(get(&h, ERROR)[0].len(), MAX_DETAIL_BYTES);
    }
}
