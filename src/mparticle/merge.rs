//! One batch from the batches of several records of one customer: their events in order,
//! the user attributes of all with the latest record's value winning, the identities they
//! share. mParticle's limit counts batches, not events, so a customer's events that wait
//! together leave as one.
//!
//! Merging runs only while records wait (for the rate limit, or behind each other), when
//! the process has time to spare: it reads the batches back with serde_json rather than
//! keeping their parts apart.

use serde_json::{Map, Value};

use super::{MAX_BATCH_BYTES, MAX_USER_ATTRIBUTES};
use crate::digest::sha256_hex;

/// The batch carrying the events of `batches` (each a batch of one record, in the records'
/// order), or `None` when they cannot share one: their identities or environments differ,
/// their user attributes would pass mParticle's 100, or the batch would reach 128 KB.
pub fn merged<'b>(batches: impl IntoIterator<Item = &'b [u8]>) -> Option<Vec<u8>> {
    let mut batches = batches.into_iter();
    let mut first: Map<String, Value> = serde_json::from_slice(batches.next()?).ok()?;
    let mut ids = vec![text(&first, "source_request_id")?];
    let mut events = take_array(&mut first, "events")?;
    let mut attributes = take_object(&mut first, "user_attributes")?;
    for batch in batches {
        let mut next: Map<String, Value> = serde_json::from_slice(batch).ok()?;
        let same = |key: &str| first.get(key) == next.get(key);
        if !same("user_identities") || !same("environment") {
            return None;
        }
        ids.push(text(&next, "source_request_id")?);
        events.append(&mut take_array(&mut next, "events")?);
        attributes.extend(take_object(&mut next, "user_attributes")?);
    }
    if attributes.len() > MAX_USER_ATTRIBUTES {
        return None;
    }
    first.insert("source_request_id".into(), Value::String(merged_id(&ids)));
    first.insert("events".into(), Value::Array(events));
    if !attributes.is_empty() {
        first.insert("user_attributes".into(), Value::Object(attributes));
    }
    let json = serde_json::to_vec(&first).ok()?;
    (json.len() < MAX_BATCH_BYTES).then_some(json)
}

/// The `source_request_id` of a batch of these records' events: the same records in the
/// same order always get the same id, so that a resent batch is deduplicated by mParticle.
pub fn merged_id(ids: &[String]) -> String {
    let digest = sha256_hex(ids.join("\n").as_bytes());
    format!("merged-{}-{}", ids.len(), &digest[..32])
}

fn text(batch: &Map<String, Value>, key: &str) -> Option<String> {
    batch.get(key)?.as_str().map(str::to_string)
}

fn take_array(batch: &mut Map<String, Value>, key: &str) -> Option<Vec<Value>> {
    match batch.remove(key) {
        Some(Value::Array(items)) => Some(items),
        _ => None,
    }
}

fn take_object(batch: &mut Map<String, Value>, key: &str) -> Option<Map<String, Value>> {
    match batch.remove(key) {
        None => Some(Map::new()),
        Some(Value::Object(members)) => Some(members),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn batch(id: &str, spendable: u32, extra: Option<(&str, &str)>) -> Vec<u8> {
        let mut attributes = json!({ "antavo_spendable": spendable.to_string() });
        if let Some((name, value)) = extra {
            attributes[name] = json!(value);
        }
        serde_json::to_vec(&json!({
            "environment": "production",
            "schema_version": 2,
            "source_request_id": id,
            "user_identities": { "customer_id": "cust-1" },
            "user_attributes": attributes,
            "events": [{ "event_type": "custom_event",
                         "data": { "event_name": "point_add", "source_message_id": id } }],
        }))
        .unwrap()
    }

    #[test]
    fn events_keep_their_order_and_the_latest_attributes_win() {
        let (a, b, c) = (
            batch("r1", 100, Some(("antavo_tier", "gold"))),
            batch("r2", 150, None),
            batch("r3", 175, None),
        );
        let merged: Value =
            serde_json::from_slice(&merged([&a[..], &b, &c]).expect("one customer")).unwrap();
        let ids: Vec<&str> = merged["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["data"]["source_message_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["r1", "r2", "r3"]);
        assert_eq!(
            merged["user_attributes"],
            json!({ "antavo_spendable": "175", "antavo_tier": "gold" })
        );
        assert_eq!(
            merged["user_identities"],
            json!({ "customer_id": "cust-1" })
        );
        let id = merged["source_request_id"].as_str().unwrap();
        assert_eq!(id, merged_id(&["r1".into(), "r2".into(), "r3".into()]));
        assert_ne!(
            id,
            merged_id(&["r1".into(), "r2".into()]),
            "another composition"
        );
        assert_ne!(id, merged_id(&["r2".into(), "r1".into(), "r3".into()]));
    }

    #[test]
    fn other_customers_do_not_merge() {
        let a = batch("r1", 1, None);
        let mut other: Value = serde_json::from_slice(&batch("r2", 2, None)).unwrap();
        other["user_identities"]["customer_id"] = json!("cust-2");
        let other = serde_json::to_vec(&other).unwrap();
        assert!(merged([&a[..], &other]).is_none());
    }

    #[test]
    fn mparticle_limits_hold() {
        let many: Vec<Vec<u8>> = (0..101)
            .map(|i| batch(&format!("r{i}"), 1, Some((&format!("a{i}"), "x"))))
            .collect();
        assert!(
            merged(many.iter().map(Vec::as_slice)).is_none(),
            "over 100 user attributes"
        );
        let large: Vec<Vec<u8>> = (0..40)
            .map(|i| {
                let mut b: Value =
                    serde_json::from_slice(&batch(&format!("r{i}"), 1, None)).unwrap();
                b["events"][0]["data"]["custom_attributes"] = json!({ "note": "x".repeat(4000) });
                serde_json::to_vec(&b).unwrap()
            })
            .collect();
        let events = |n: usize| merged(large[..n].iter().map(Vec::as_slice));
        assert!(events(20).is_some());
        assert!(events(40).is_none(), "128 KB");
    }
}
