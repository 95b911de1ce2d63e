//! The Events API contract as the stand-in enforces it: what makes a batch or a request
//! malformed (mparticle-events-api.md). Independent of the forwarder's own mapping code:
//! it shares only the documented limits and allowed values.

use serde_json::{Map, Value};

use crate::mparticle::{
    CUSTOM_EVENT_TYPES, IDENTITY_TYPES, MAX_BATCH_BYTES, MAX_BATCHES_PER_BULK, MAX_NAME_CHARS,
    MAX_REQUEST_BYTES, MAX_USER_ATTRIBUTES, MAX_VALUE_CHARS, PRODUCT_ACTIONS,
};

/// Checks a `/events` or `/bulkevents` body; returns the batches on success.
pub fn check_request(body: &[u8], bulk: bool) -> Result<Vec<Value>, String> {
    if body.len() >= MAX_REQUEST_BYTES {
        return Err(format!(
            "request body is {} bytes; it must be under {MAX_REQUEST_BYTES}",
            body.len()
        ));
    }
    let parsed: Value = serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
    let batches = match (bulk, parsed) {
        (false, batch @ Value::Object(_)) => vec![batch],
        (false, _) => return Err("the body of /events must be one batch object".into()),
        (true, Value::Array(batches)) => batches,
        (true, _) => return Err("the body of /bulkevents must be an array of batches".into()),
    };
    if bulk && batches.is_empty() {
        return Err("the bulk request holds no batch".into());
    }
    if batches.len() > MAX_BATCHES_PER_BULK {
        return Err(format!(
            "{} batches in one request; at most {MAX_BATCHES_PER_BULK}",
            batches.len()
        ));
    }
    for (i, batch) in batches.iter().enumerate() {
        check_batch(batch).map_err(|e| if bulk { format!("batch {i}: {e}") } else { e })?;
    }
    Ok(batches)
}

/// Checks one batch.
pub fn check_batch(batch: &Value) -> Result<(), String> {
    let Value::Object(batch) = batch else {
        return Err("a batch must be an object".into());
    };
    let size = serde_json::to_vec(batch).map(|b| b.len()).unwrap_or(0);
    if size >= MAX_BATCH_BYTES {
        return Err(format!(
            "batch is {size} bytes; it must be under {MAX_BATCH_BYTES}"
        ));
    }
    match batch.get("environment").and_then(Value::as_str) {
        Some("production" | "development") => {}
        Some(other) => {
            return Err(format!(
                "environment {other:?} is not production or development"
            ));
        }
        None => return Err("environment is missing".into()),
    }
    if let Some(version) = batch.get("schema_version") {
        if version.as_i64() != Some(2) {
            return Err("schema_version must be 2".into());
        }
    }
    if let Some(id) = batch.get("source_request_id") {
        if !id.is_string() {
            return Err("source_request_id must be a string".into());
        }
    }
    if let Some(identities) = batch.get("user_identities") {
        let identities = object(identities, "user_identities")?;
        for (name, value) in identities {
            if !IDENTITY_TYPES.contains(&name.as_str()) {
                return Err(format!("user_identities: unknown identity type {name:?}"));
            }
            if !value.is_string() {
                return Err(format!("user_identities.{name} must be a string"));
            }
        }
    }
    if let Some(attributes) = batch.get("user_attributes") {
        let attributes = object(attributes, "user_attributes")?;
        if attributes.len() > MAX_USER_ATTRIBUTES {
            return Err(format!(
                "{} user attributes; at most {MAX_USER_ATTRIBUTES}",
                attributes.len()
            ));
        }
        for (name, value) in attributes {
            check_name(name, "user_attributes")?;
            match value {
                Value::String(s) => check_value(name, s)?,
                Value::Array(items) => {
                    for item in items {
                        let Value::String(s) = item else {
                            return Err(format!(
                                "user_attributes.{name}: list items must be strings"
                            ));
                        };
                        check_value(name, s)?;
                    }
                }
                _ => {
                    return Err(format!(
                        "user_attributes.{name} must be a string or a list of strings"
                    ));
                }
            }
        }
    }
    let events = match batch.get("events") {
        Some(Value::Array(events)) => events,
        Some(_) => return Err("events must be an array".into()),
        None => return Err("events is missing".into()),
    };
    for (i, event) in events.iter().enumerate() {
        check_event(event).map_err(|e| format!("events[{i}]: {e}"))?;
    }
    Ok(())
}

fn check_event(event: &Value) -> Result<(), String> {
    let event = object(event, "event")?;
    let event_type = event
        .get("event_type")
        .and_then(Value::as_str)
        .ok_or("event_type is missing")?;
    let data = object(event.get("data").ok_or("data is missing")?, "data")?;
    if let Some(ts) = data.get("timestamp_unixtime_ms") {
        if !ts.is_i64() && !ts.is_u64() {
            return Err("timestamp_unixtime_ms must be an integer".into());
        }
    }
    if let Some(attributes) = data.get("custom_attributes") {
        for (name, value) in object(attributes, "custom_attributes")? {
            check_name(name, "custom_attributes")?;
            match value {
                Value::String(s) => check_value(name, s)?,
                _ => return Err(format!("custom_attributes.{name} must be a string")),
            }
        }
    }
    match event_type {
        "custom_event" => {
            let name = data
                .get("event_name")
                .and_then(Value::as_str)
                .ok_or("a custom_event needs event_name")?;
            if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
                return Err(format!(
                    "event_name must be 1 to {MAX_NAME_CHARS} characters"
                ));
            }
            let kind = data
                .get("custom_event_type")
                .and_then(Value::as_str)
                .ok_or("a custom_event needs custom_event_type")?;
            if !CUSTOM_EVENT_TYPES.contains(&kind) {
                return Err(format!("custom_event_type {kind:?} is not allowed"));
            }
        }
        "commerce_event" => {
            if data.contains_key("custom_event_type") {
                return Err("a commerce_event must not have custom_event_type".into());
            }
            let present = ["product_action", "promotion_action", "product_impressions"]
                .iter()
                .filter(|k| data.contains_key(**k))
                .count();
            if present != 1 {
                return Err("a commerce_event needs exactly one of product_action, promotion_action, product_impressions".into());
            }
            if let Some(action) = data.get("product_action") {
                let action = object(action, "product_action")?;
                match action.get("action").and_then(Value::as_str) {
                    Some(a) if PRODUCT_ACTIONS.contains(&a) => {}
                    _ => return Err("product_action.action is missing or not allowed".into()),
                }
            }
        }
        other => {
            return Err(format!(
                "event_type {other:?} is not custom_event or commerce_event"
            ));
        }
    }
    Ok(())
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("{what} must be an object"))
}

fn check_name(name: &str, section: &str) -> Result<(), String> {
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "{section}: a name is over {MAX_NAME_CHARS} characters"
        ));
    }
    Ok(())
}

fn check_value(name: &str, value: &str) -> Result<(), String> {
    if value.chars().count() > MAX_VALUE_CHARS {
        return Err(format!(
            "{name}: the value is over {MAX_VALUE_CHARS} characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(name: &str) -> Value {
        let text = std::fs::read_to_string(format!("tests/data/events/{name}.expected-batch.json"))
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn the_expected_batches_are_valid() {
        assert_eq!(check_batch(&expected("point_add")), Ok(()));
        assert_eq!(check_batch(&expected("reward_claim")), Ok(()));
    }

    #[test]
    fn malformed_batches_are_refused() {
        let mut cases = Vec::new();
        let mut b = expected("point_add");
        b.as_object_mut().unwrap().remove("environment");
        cases.push((b, "environment"));
        let mut b = expected("point_add");
        b["events"][0]["data"]["custom_event_type"] = "fun".into();
        cases.push((b, "custom_event_type"));
        let mut b = expected("point_add");
        b["user_identities"]["loyalty_card"] = "x".into();
        cases.push((b, "identity type"));
        let mut b = expected("point_add");
        b["events"][0]["data"]["custom_attributes"]["antavo_points"] = 100.into();
        cases.push((b, "must be a string"));
        let mut b = expected("point_add");
        b["events"][0]["data"]["product_action"] = serde_json::json!({"action": "purchase"});
        b["events"][0]["event_type"] = "commerce_event".into();
        cases.push((b, "custom_event_type"));
        for (batch, needle) in cases {
            let err = check_batch(&batch).unwrap_err();
            assert!(err.contains(needle), "{err} lacks {needle}");
        }
    }

    #[test]
    fn bulk_limits_are_enforced() {
        let one = serde_json::to_string(&expected("point_add")).unwrap();
        let many = format!("[{}]", vec![one.as_str(); 101].join(","));
        assert!(
            check_request(many.as_bytes(), true)
                .unwrap_err()
                .contains("at most 100")
        );
        let fifty = format!("[{}]", vec![one.as_str(); 50].join(","));
        assert_eq!(check_request(fifty.as_bytes(), true).unwrap().len(), 50);
        let huge = vec![b' '; MAX_REQUEST_BYTES];
        assert!(check_request(&huge, true).unwrap_err().contains("under"));
        assert!(
            check_request(b"[]", false)
                .unwrap_err()
                .contains("one batch object")
        );
    }
}
