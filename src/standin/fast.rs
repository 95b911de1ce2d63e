//! Fast mode, for benchmarks: a body is scanned, not parsed, and only counts, a hash of
//! each event's id and each batch's latency are kept.

use std::hash::Hasher;
use std::sync::LazyLock;

use memchr::memmem::Finder;

use super::rate_limit::{accepted, check_rate, rate_limited};
use super::{State, lock};
use crate::http_server::HttpResponse;

/// An event's id and timestamp, as fast mode finds them.
type ScannedEvent<'b> = (&'b [u8], Option<i64>);

/// Fast mode's view of a body: how many batches it holds, and each event's
/// `source_message_id` and `timestamp_unixtime_ms`, found by scanning the forwarder's
/// compact JSON (which writes an event's timestamp before its id). The scan uses `memchr`'s
/// vectorised substring search: the sink shares the benchmark's two cores with the
/// forwarder, and a byte-by-byte search made it burn most of a core at full speed
/// (docs/benchmarks-history.md).
pub(super) fn scan_events(body: &[u8]) -> (usize, Vec<ScannedEvent<'_>>) {
    static BATCH: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(b"\"source_request_id\":\""));
    static EVENT: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(b"\"source_message_id\":\""));
    static TS: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(b"\"timestamp_unixtime_ms\":"));
    let batches = BATCH.find_iter(body).count();
    let mut events = Vec::new();
    let mut from = 0;
    for at in EVENT.find_iter(body) {
        // The event's timestamp lies between the previous event's id and its own.
        let timestamp = TS.find(&body[from..at]).and_then(|t| {
            let digits = &body[from + t + TS.needle().len()..];
            let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
            std::str::from_utf8(&digits[..len]).ok()?.parse().ok()
        });
        let start = at + EVENT.needle().len();
        let len = memchr::memchr(b'"', &body[start..]).unwrap_or(body.len() - start);
        events.push((&body[start..start + len], timestamp));
        from = start + len;
    }
    (batches, events)
}

pub(super) fn fast_accept(state: &State, account: usize, body: &[u8]) -> HttpResponse {
    let (batches, events) = scan_events(body);
    let usage = match check_rate(state, account, batches) {
        Ok(usage) => usage,
        Err(retry_after) => return rate_limited(retry_after),
    };
    let now = crate::clock::unix_ms();
    let mut recorded = lock(&state.recorded);
    recorded.accepted_count += batches as u64;
    *recorded
        .by_account
        .entry(state.accounts.name(account).to_string())
        .or_default() += batches as u64;
    recorded.accepted_event_count += events.len() as u64;
    for (id, timestamp) in events {
        recorded.unique_hashes.insert(id_hash(id));
        if let Some(ts) = timestamp {
            recorded.latencies_ms.push(now - ts);
        }
    }
    accepted(usage)
}

/// An accepted id's hash for the unique count: FNV-1a over its bytes, then MurmurHash3's
/// finaliser, so that every bit of the result depends on every byte and the set can take
/// it as its own hash ([`AlreadyHashed`]). The ids are the forwarder's, not an
/// adversary's: SipHash, once for the id and once more in the set, was a tenth of the
/// sink's time in a drain.
fn id_hash(id: &[u8]) -> u64 {
    let mut hash = id.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ hash >> 33
}

/// The hasher of a set of values that are hashes already: a value is its own hash.
#[derive(Default)]
pub(super) struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64s are hashed here; anything else still gets a hash.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    use crate::standin::{StandInConfig, State};

    #[test]
    fn fast_mode_scans_events_and_their_timestamps() {
        let body = br#"[{"environment":"production","schema_version":2,"source_request_id":"a1","events":[{"event_type":"custom_event","data":{"timestamp_unixtime_ms":1000,"source_message_id":"a1"}}]},{"source_request_id":"m","events":[{"data":{"source_message_id":"b2"}},{"data":{"timestamp_unixtime_ms":7,"source_message_id":"b3"}}]}]"#;
        let (batches, events) = scan_events(body);
        assert_eq!(batches, 2);
        // An event without a timestamp does not take the next event's.
        assert_eq!(
            events,
            vec![
                (&b"a1"[..], Some(1000)),
                (&b"b2"[..], None),
                (&b"b3"[..], Some(7))
            ]
        );
        assert_eq!(scan_events(b"[]"), (0, vec![]));
    }

    #[test]
    fn fast_mode_counts_repeated_ids_once() {
        let config = StandInConfig {
            fast: true,
            ..StandInConfig::default()
        };
        let state = State::new(config, None);
        let body = |ids: &[&str]| {
            let batches: Vec<String> = ids
                .iter()
                .map(|id| {
                    format!(
                        r#"{{"source_request_id":"{id}","events":[{{"data":{{"source_message_id":"{id}"}}}}]}}"#
                    )
                })
                .collect();
            format!("[{}]", batches.join(","))
        };
        let first: Vec<String> = (0..1000).map(|i| format!("bench-{i:09}")).collect();
        let first: Vec<&str> = first.iter().map(String::as_str).collect();
        fast_accept(&state, 0, body(&first).as_bytes());
        fast_accept(
            &state,
            0,
            body(&["bench-000000007", "other", "bench-000000999"]).as_bytes(),
        );
        let recorded = lock(&state.recorded);
        assert_eq!(recorded.accepted_count, 1003);
        assert_eq!(recorded.unique_hashes.len(), 1001);
        // The set takes the hashes as they are, so their low bits (its bucket) and high
        // bits (its tag) must spread even for ids that differ in one digit.
        let spread = |bits: fn(u64) -> u64| {
            let values: HashSet<u64> = first
                .iter()
                .map(|id| bits(id_hash(id.as_bytes())))
                .collect();
            values.len()
        };
        assert!(spread(|h| h & 1023) > 550, "low bits");
        assert!(spread(|h| h >> 54) > 550, "high bits");
    }
}
