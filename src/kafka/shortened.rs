//! A dead letter that fits when the original record does not. Pure.
//!
//! A record near the broker's size limit (a value of about 1 MB, or a huge header) plus
//! the `forwarder-*` headers is over that limit, and a dead letter that cannot be written
//! would stop the service on every restart. Its shortened copy keeps what a person needs
//! to tell what it was: the `forwarder-*` headers, the original headers that fit, the first
//! bytes of the value, the value's size and SHA-256. `forwarder-original-truncated` says
//! what was cut; `replay-dlq` never republishes such a record.

use crate::digest::sha256_hex;
use crate::kafka::record::{Header, HeaderList, HeaderName, SourceRecord};

/// What was cut, comma-separated: `value`, `headers`, `key`.
pub const TRUNCATED: &str = "forwarder-original-truncated";
/// The original value's size in bytes.
pub const VALUE_BYTES: &str = "forwarder-original-value-bytes";
/// The original value's SHA-256, lowercase hex.
pub const VALUE_SHA256: &str = "forwarder-original-value-sha256";
/// How many original headers were left out.
pub const HEADERS_DROPPED: &str = "forwarder-original-headers-dropped";

/// How much of the original a shortened copy keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The first 16 KiB of the value, original headers up to 16 KiB, a key up to 1 KiB.
    Prefix,
    /// No value and no original headers: for a topic whose limit is smaller still.
    Bare,
}

impl Cut {
    fn value_bytes(self) -> usize {
        match self {
            Cut::Prefix => 16 * 1024,
            Cut::Bare => 0,
        }
    }

    fn header_bytes(self) -> usize {
        match self {
            Cut::Prefix => 16 * 1024,
            Cut::Bare => 0,
        }
    }

    fn key_bytes(self) -> usize {
        match self {
            Cut::Prefix => 1024,
            Cut::Bare => 256,
        }
    }
}

/// A record to write in place of one that is too large.
#[derive(Debug, PartialEq)]
pub struct Shortened {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: HeaderList,
}

/// The shortened copy of `record`, whose dead letter would carry `headers` (the original
/// headers and the `forwarder-*` ones).
pub fn shorten(record: &SourceRecord, headers: &HeaderList, cut: Cut) -> Shortened {
    let mut what = Vec::new();
    let value = record.value().unwrap_or_default();
    let kept_value = &value[..value.len().min(cut.value_bytes())];
    if kept_value.len() < value.len() {
        what.push("value");
    }
    let mut kept = HeaderList::new();
    let (mut room, mut dropped) = (cut.header_bytes(), 0usize);
    for header @ (name, v) in headers {
        let size = name.len() + v.as_ref().map_or(0, Vec::len);
        if is_forwarders(name) {
            kept.push(header.clone());
        } else if size <= room {
            room -= size;
            kept.push(header.clone());
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        what.push("headers");
    }
    let key = record
        .key()
        .map(|k| k[..k.len().min(cut.key_bytes())].to_vec());
    if key.as_ref().map(Vec::len) != record.key().map(<[u8]>::len) {
        what.push("key");
    }
    let mut add = |name: &str, text: String| kept.push((name.into(), Some(text.into())));
    add(TRUNCATED, what.join(","));
    add(VALUE_BYTES, value.len().to_string());
    add(VALUE_SHA256, sha256_hex(value));
    add(HEADERS_DROPPED, dropped.to_string());
    Shortened {
        key,
        value: record.value().map(|_| kept_value.to_vec()),
        headers: kept,
    }
}

/// True for a dead letter that is a shortened copy (not to be replayed as it is).
pub fn is_shortened(headers: &[Header]) -> bool {
    headers.iter().any(|(name, _)| name == TRUNCATED)
}

fn is_forwarders(name: &HeaderName) -> bool {
    name.starts_with("forwarder-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::topic::Topic;

    fn record(key: usize, value: usize, headers: HeaderList) -> SourceRecord {
        SourceRecord::new(
            Topic::named("loyalty.point-add"),
            0,
            7,
            None,
            Some(vec![b'k'; key]),
            Some(vec![b'v'; value]),
            headers,
        )
    }

    fn header(name: &str, size: usize) -> Header {
        (name.into(), Some(vec![b'h'; size]))
    }

    fn text<'a>(s: &'a Shortened, name: &str) -> Option<&'a str> {
        s.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v.as_deref()?).ok())
    }

    #[test]
    fn a_huge_value_keeps_its_first_bytes_size_and_hash() {
        let original = record(6, 1_000_000, vec![]);
        let headers = vec![header("traceparent", 55), header("forwarder-error", 900)];
        let s = shorten(&original, &headers, Cut::Prefix);
        assert_eq!(s.value.as_ref().map(Vec::len), Some(16 * 1024));
        assert_eq!(s.key.as_deref(), Some(&b"kkkkkk"[..]));
        assert_eq!(text(&s, TRUNCATED), Some("value"));
        assert_eq!(text(&s, VALUE_BYTES), Some("1000000"));
        let sha = text(&s, VALUE_SHA256).unwrap();
        assert_eq!(sha.len(), 64);
        assert_eq!(sha, sha256_hex(&vec![b'v'; 1_000_000]));
        assert_eq!(text(&s, HEADERS_DROPPED), Some("0"));
        assert!(text(&s, "traceparent").is_some());
        assert!(text(&s, "forwarder-error").is_some());
        assert!(is_shortened(&s.headers));
    }

    #[test]
    fn a_huge_header_is_left_out_and_the_forwarders_headers_stay() {
        let original = record(3, 10, vec![]);
        let headers = vec![
            header("small", 10),
            header("huge", 1_000_000),
            header("after", 10),
            header("forwarder-error-kind", 9),
        ];
        let s = shorten(&original, &headers, Cut::Prefix);
        let names: Vec<&[u8]> = s.headers.iter().map(|(n, _)| n.as_bytes()).collect();
        assert_eq!(
            names[..3],
            [&b"small"[..], b"after", b"forwarder-error-kind"]
        );
        assert_eq!(text(&s, TRUNCATED), Some("headers"));
        assert_eq!(text(&s, HEADERS_DROPPED), Some("1"));
        assert_eq!(s.value.as_deref(), Some(&[b'v'; 10][..]));
    }

    #[test]
    fn bare_keeps_only_the_forwarders_headers_and_a_short_key() {
        let original = record(5_000, 100, vec![]);
        let headers = vec![header("small", 1), header("forwarder-attempt", 1)];
        let s = shorten(&original, &headers, Cut::Bare);
        assert_eq!(s.value.as_deref(), Some(&[][..]));
        assert_eq!(s.key.as_ref().map(Vec::len), Some(256));
        assert_eq!(text(&s, TRUNCATED), Some("value,headers,key"));
        assert!(text(&s, "forwarder-attempt").is_some());
        assert!(text(&s, "small").is_none());
    }
}
