//! The loyalty event: a Kafka record value parsed, read at the paths of a [`PathTree`]
//! (the schema's fields and those the field assignments add) and checked against
//! `loyalty-event.schema.json`. Unknown fields are kept (field assignments may point at
//! them) and never rejected.

use thiserror::Error;

use crate::json::{self, JsonValueTrait, Value, ValueRef};
use crate::outcome::ErrorKind;

mod paths;

pub use paths::{Node, PathTree};

pub(crate) const ID_MAX_CHARS: usize = 128;
pub(crate) const ACTION_MAX_CHARS: usize = 128;
pub(crate) const CUSTOMER_ID_MAX_CHARS: usize = 256;

/// A decoded, valid loyalty event, borrowing from the parsed record value.
#[derive(Debug, Clone)]
pub struct LoyaltyEvent<'v> {
    /// `id`: becomes `source_request_id` and `source_message_id`.
    pub id: &'v str,
    /// `action`: selects the event definition.
    pub action: &'v str,
    /// `created_at` in unix milliseconds, when given.
    pub created_at_ms: Option<i64>,
    /// The value at each node of the tree the event was read with.
    found: Vec<Option<&'v Value>>,
}

/// Why a record is not a loyalty event. Each is permanent: the record is dead-lettered.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum InvalidEvent {
    #[error("record value is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("record has no value")]
    Empty,
    #[error("record value is not UTF-8 JSON: {0}")]
    NotJson(String),
    #[error("record value is JSON but not an object")]
    NotObject,
    #[error("field {field}: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
}

impl InvalidEvent {
    pub fn kind(&self) -> ErrorKind {
        match self {
            InvalidEvent::TooLarge { .. } => ErrorKind::TooLarge,
            InvalidEvent::Empty | InvalidEvent::NotJson(_) => ErrorKind::InvalidJson,
            InvalidEvent::NotObject | InvalidEvent::Field { .. } => ErrorKind::InvalidEvent,
        }
    }
}

fn field(field: &'static str, problem: impl Into<String>) -> InvalidEvent {
    InvalidEvent::Field {
        field,
        problem: problem.into(),
    }
}

impl<'v> LoyaltyEvent<'v> {
    /// Parses one record value of at most `max_bytes`; [`read`](Self::read) decodes it.
    pub fn parse(value: Option<&[u8]>, max_bytes: usize) -> Result<Value, InvalidEvent> {
        let bytes = value.ok_or(InvalidEvent::Empty)?;
        if bytes.len() > max_bytes {
            return Err(InvalidEvent::TooLarge {
                size: bytes.len(),
                limit: max_bytes,
            });
        }
        if bytes.is_empty() {
            return Err(InvalidEvent::Empty);
        }
        json::parse(bytes).map_err(InvalidEvent::NotJson)
    }

    /// Reads a parsed record value at every path of `tree`, in one walk, and checks it.
    pub fn read(document: &'v Value, tree: &PathTree) -> Result<LoyaltyEvent<'v>, InvalidEvent> {
        if !document.is_object() {
            return Err(InvalidEvent::NotObject);
        }
        let found = tree.walk(document);
        let id = bounded_text(found[paths::ID], "id", ID_MAX_CHARS)?;
        let action = bounded_text(found[paths::ACTION], "action", ACTION_MAX_CHARS)?;
        let created_at_ms = created_at_ms(found[paths::CREATED_AT])?;
        let customer = found[paths::CUSTOMER].ok_or_else(|| field("customer", "is required"))?;
        if !customer.is_object() {
            return Err(field("customer", "must be an object"));
        }
        let customer_id = found[paths::CUSTOMER_ID];
        bounded_text(customer_id, "customer.id", CUSTOMER_ID_MAX_CHARS)?;
        for (node, path) in [
            (paths::CUSTOMER_EMAIL, "customer.email"),
            (paths::CUSTOMER_PHONE, "customer.phone"),
        ] {
            if found[node].is_some_and(|v| !v.is_str() && !v.is_null()) {
                return Err(field(path, "must be a string"));
            }
        }
        if found[paths::DATA].is_some_and(|v| !v.is_object() && !v.is_null()) {
            return Err(field("data", "must be an object"));
        }
        Ok(LoyaltyEvent {
            id,
            action,
            created_at_ms,
            found,
        })
    }

    /// [`read`](Self::read) of what [`parse`](Self::parse) gave: its error, or the event.
    pub fn decode(
        parsed: &'v Result<Value, InvalidEvent>,
        tree: &PathTree,
    ) -> Result<LoyaltyEvent<'v>, InvalidEvent> {
        Self::read(parsed.as_ref().map_err(Clone::clone)?, tree)
    }

    /// The value at `node` of the tree the event was read with; `None` when absent or null.
    pub fn at(&self, node: Node) -> Option<&'v Value> {
        self.found
            .get(node)
            .copied()
            .flatten()
            .filter(|v| !v.is_null())
    }
}

fn created_at_ms(value: Option<&Value>) -> Result<Option<i64>, InvalidEvent> {
    match value.map(Value::as_ref) {
        None | Some(ValueRef::Null) => Ok(None),
        Some(ValueRef::String(text)) => parse_rfc3339_ms(text).map(Some).ok_or_else(|| {
            field(
                "created_at",
                "is not an RFC 3339 date-time such as 2026-11-28T12:00:00Z",
            )
        }),
        Some(ValueRef::Number(n)) => json::number(&n)
            .as_i64()
            .filter(|ms| *ms >= 0)
            .map(Some)
            .ok_or_else(|| {
                field(
                    "created_at",
                    "must be a non-negative whole number of unix milliseconds",
                )
            }),
        Some(_) => Err(field(
            "created_at",
            "must be RFC 3339 text or integer unix milliseconds",
        )),
    }
}

/// `value` as text of 1 to `max_chars` characters, or why it is not.
fn bounded_text<'v>(
    value: Option<&'v Value>,
    name: &'static str,
    max_chars: usize,
) -> Result<&'v str, InvalidEvent> {
    let value = value.ok_or_else(|| field(name, "is required"))?;
    match value.as_str() {
        // Bytes bound characters from above: most text needs no count.
        Some(s) if !s.is_empty() && (s.len() <= max_chars || s.chars().count() <= max_chars) => {
            Ok(s)
        }
        Some(_) => Err(field(name, format!("must be 1 to {max_chars} characters"))),
        None => Err(field(name, "must be a string")),
    }
}

/// Parses an RFC 3339 date-time (`2026-11-28T12:00:00Z`, `…T12:00:00.250+01:00`) into unix
/// milliseconds. Fractions beyond milliseconds are cut off. (Read byte by byte, without
/// allocating: it runs once for every event.)
pub fn parse_rfc3339_ms(text: impl AsRef<[u8]>) -> Option<i64> {
    let b = text.as_ref();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0i64;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let count = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        let kept = count.min(3);
        if count == 0 {
            return None;
        }
        millis = digits(&fraction[..kept])? * [100, 10, 1][kept - 1];
        rest = &fraction[count..];
    }
    let offset_minutes = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (hours, minutes) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let total = hours * 60 + minutes;
            if *sign == b'-' { -total } else { total }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second.min(59) - offset_minutes * 60;
    Some(seconds * 1_000 + millis)
}

/// A run of ASCII digits as a number; `None` when any byte is not a digit.
fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0i64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 128 * 1024;

    /// Parses and reads `bytes` with the schema's paths alone: `Ok` with the event's id,
    /// or why it is not one.
    fn decode_bytes(bytes: &[u8], limit: usize) -> Result<String, InvalidEvent> {
        let document = LoyaltyEvent::parse(Some(bytes), limit)?;
        LoyaltyEvent::read(&document, &PathTree::default()).map(|e| e.id.to_string())
    }

    fn decode(text: &str) -> Result<String, InvalidEvent> {
        decode_bytes(text.as_bytes(), LIMIT)
    }

    #[test]
    fn sample_point_add_decodes() {
        let text = include_str!("../tests/data/events/point_add.json");
        let document = LoyaltyEvent::parse(Some(text.as_bytes()), LIMIT).unwrap();
        let mut paths = PathTree::default();
        let tier = paths.insert(&["customer", "tier"]);
        let event = LoyaltyEvent::read(&document, &paths).unwrap();
        assert_eq!(event.id, "evt_01JD4T9F3M2K");
        assert_eq!(event.action, "point_add");
        assert_eq!(event.created_at_ms, Some(1_795_867_200_000));
        assert_eq!(event.at(tier).and_then(|v| v.as_str()), Some("gold"));
    }

    #[test]
    fn rfc3339_with_offsets_and_fractions() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-28T12:00:00Z"),
            Some(1_795_867_200_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-28T13:00:00+01:00"),
            Some(1_795_867_200_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-28T12:00:00.25Z"),
            Some(1_795_867_200_250)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-28T12:00:00.123456-00:30"),
            Some(1_795_869_000_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
        assert_eq!(parse_rfc3339_ms("2025-02-29T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("2026-11-28 12:00"), None);
        assert_eq!(parse_rfc3339_ms("yesterday at noon!!"), None);
        assert_eq!(parse_rfc3339_ms("2026-11-28T12:00:00.Z"), None);
        assert_eq!(parse_rfc3339_ms("2026-11-28T12:00:00++5:00"), None);
        assert_eq!(parse_rfc3339_ms("2026-11-28T12:00:00+01:00x"), None);
        assert_eq!(parse_rfc3339_ms("2026-11-28T12:0a:00Z"), None);
        assert_eq!(
            parse_rfc3339_ms("2026-11-28T12:00:00.7Z"),
            parse_rfc3339_ms("2026-11-28T12:00:00Z").map(|ms| ms + 700)
        );
    }

    #[test]
    fn invalid_records_say_why() {
        let cases: &[(&[u8], ErrorKind, &str)] = &[
            (b"not json", ErrorKind::InvalidJson, "not UTF-8 JSON"),
            (b"\xff\xfe{}", ErrorKind::InvalidJson, "not UTF-8 JSON"),
            (b"[1,2]", ErrorKind::InvalidEvent, "not an object"),
            (
                br#"{"action":"point_add","customer":{"id":"c"}}"#,
                ErrorKind::InvalidEvent,
                "field id: is required",
            ),
            (
                br#"{"id":"e","action":"point_add","customer":{}}"#,
                ErrorKind::InvalidEvent,
                "customer.id: is required",
            ),
            (
                br#"{"id":"e","action":"point_add"}"#,
                ErrorKind::InvalidEvent,
                "customer: is required",
            ),
            (
                br#"{"id":7,"action":"point_add","customer":{"id":"c"}}"#,
                ErrorKind::InvalidEvent,
                "id: must be a string",
            ),
            (
                br#"{"id":"e","action":"a","customer":{"id":"c"},"created_at":"noon"}"#,
                ErrorKind::InvalidEvent,
                "created_at",
            ),
            (
                br#"{"id":"e","action":"a","customer":{"id":"c"},"data":[1]}"#,
                ErrorKind::InvalidEvent,
                "data: must be an object",
            ),
        ];
        for (bytes, kind, text) in cases {
            let err = decode_bytes(bytes, LIMIT).unwrap_err();
            assert_eq!(err.kind(), *kind, "{err}");
            assert!(err.to_string().contains(text), "{err} lacks {text}");
        }
    }

    #[test]
    fn oversized_and_empty_records_are_refused() {
        let big = vec![b' '; 200];
        assert_eq!(
            decode_bytes(&big, 100).unwrap_err().kind(),
            ErrorKind::TooLarge
        );
        assert_eq!(
            LoyaltyEvent::parse(None, 100).unwrap_err(),
            InvalidEvent::Empty
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(decode(&deep).unwrap_err().kind(), ErrorKind::InvalidJson);
    }

    #[test]
    fn unknown_fields_are_kept() {
        let text = r#"{"id":"e","action":"a","customer":{"id":"c"},"extra":{"x":1}}"#;
        let document = LoyaltyEvent::parse(Some(text.as_bytes()), LIMIT).unwrap();
        let mut paths = PathTree::default();
        let extra = paths.insert(&["extra", "x"]);
        let event = LoyaltyEvent::read(&document, &paths).unwrap();
        assert!(event.at(extra).is_some());
    }
}
