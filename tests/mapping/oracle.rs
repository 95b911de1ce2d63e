//! A second, plain way from a record value to its batch, for tests only: the event read
//! by serde_json into its `Value`, the field-assignments file read as plain TOML, and the
//! batch built as a `serde_json::Value`, rule by rule as the README states them. It knows
//! nothing of the service's engine; the property test and the fuzz target compare the two.

use serde_json::{Map, Number, Value, json};

use mparticle_forwarder::event::parse_rfc3339_ms;

/// Values longer than this many characters are cut to it.
const MAX_VALUE_CHARS: usize = 4096;
const NUMERIC_PRODUCT_FIELDS: [&str; 3] = ["price", "quantity", "position"];

/// What the oracle makes of a record: a batch, or the kind of reason it is refused.
#[derive(Debug, PartialEq)]
pub enum Expected {
    Batch(Value),
    /// `invalid_json`, `invalid_event`, `unmapped_action` or `mapping`.
    Refused(&'static str),
}

/// The batch `value` becomes under the field-assignments file `assignments` (its
/// TOML), for the development environment, with `fallback_ms` as the record's timestamp.
pub fn expected(assignments: &toml::Table, value: &[u8], fallback_ms: i64) -> Expected {
    let Ok(event) = serde_json::from_slice::<Value>(value) else {
        return Expected::Refused("invalid_json");
    };
    let Some(created_at) = valid_event(&event) else {
        return Expected::Refused("invalid_event");
    };
    match batch(assignments, &event, created_at.unwrap_or(fallback_ms)) {
        // mParticle takes batches under 128 KB.
        Ok(batch) if serde_json::to_vec(&batch).map_or(0, |b| b.len()) >= 128 * 1024 => {
            Expected::Refused("too_large")
        }
        Ok(batch) => Expected::Batch(batch),
        Err(kind) => Expected::Refused(kind),
    }
}

/// The schema's checks; `Some(created_at)` for a valid event.
fn valid_event(event: &Value) -> Option<Option<i64>> {
    let text_of = |value: Option<&Value>, max: usize| {
        value
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty() && s.chars().count() <= max)
    };
    let customer = event.get("customer")?;
    let string_or_null = |name| {
        customer
            .get(name)
            .is_none_or(|v| v.is_string() || v.is_null())
    };
    let valid = event.is_object()
        && text_of(event.get("id"), 128)
        && text_of(event.get("action"), 128)
        && customer.is_object()
        && text_of(customer.get("id"), 256)
        && string_or_null("email")
        && string_or_null("phone")
        && event
            .get("data")
            .is_none_or(|d| d.is_object() || d.is_null());
    if !valid {
        return None;
    }
    match event.get("created_at") {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(text)) => Some(Some(parse_rfc3339_ms(text)?)),
        Some(Value::Number(n)) => Some(Some(n.as_i64().filter(|ms| *ms >= 0)?)),
        Some(_) => None,
    }
}

fn batch(file: &toml::Table, event: &Value, timestamp_ms: i64) -> Result<Value, &'static str> {
    let action = event["action"].as_str().unwrap_or_default();
    let definition = file
        .get("events")
        .and_then(|events| events.get(action))
        .ok_or("unmapped_action")?;
    let section = |table: &toml::Value, name: &str| {
        table
            .get(name)
            .and_then(toml::Value::as_table)
            .cloned()
            .unwrap_or_default()
    };
    let root = toml::Value::Table(file.clone());
    let mut batch = json!({
        "environment": "development",
        "schema_version": 2,
        "source_request_id": event["id"],
    });
    let identities = members(&section(&root, "identities"), event, Kind::Text)?;
    let attributes = members(&section(&root, "user_attributes"), event, Kind::TextOrList)?;
    if !identities.is_empty() {
        batch["user_identities"] = Value::Object(identities);
    }
    if !attributes.is_empty() {
        batch["user_attributes"] = Value::Object(attributes);
    }
    let commerce =
        definition.get("event_type").and_then(toml::Value::as_str) == Some("commerce_event");
    let mut data = json!({
        "timestamp_unixtime_ms": timestamp_ms,
        "source_message_id": event["id"],
    });
    if !commerce {
        let name = definition
            .get("event_name")
            .and_then(toml::Value::as_str)
            .unwrap_or(action);
        let kind = definition
            .get("custom_event_type")
            .and_then(toml::Value::as_str)
            .unwrap_or("other");
        data["event_name"] = json!(name);
        data["custom_event_type"] = json!(kind);
    }
    let custom = members(&section(definition, "attributes"), event, Kind::Text)?;
    if !custom.is_empty() {
        data["custom_attributes"] = Value::Object(custom);
    }
    if commerce {
        let product = members(&section(definition, "product"), event, Kind::Product)?;
        data["product_action"] = json!({
            "action": definition["product_action"].as_str(),
            "products": [product],
        });
    }
    let event_type = if commerce {
        "commerce_event"
    } else {
        "custom_event"
    };
    batch["events"] = json!([{ "event_type": event_type, "data": data }]);
    Ok(batch)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Text,
    TextOrList,
    Product,
}

/// One section of the file applied: each name with a value, as `kind` writes it.
fn members(
    section: &toml::Table,
    event: &Value,
    kind: Kind,
) -> Result<Map<String, Value>, &'static str> {
    let mut out = Map::new();
    for (name, source) in section {
        let (found, constant) = match source {
            toml::Value::String(path) => (at(event, path), None),
            toml::Value::Table(table) => match (table.get("path"), table.get("value")) {
                (Some(path), _) => {
                    let found = at(event, path.as_str().unwrap_or_default());
                    let required =
                        table.get("required").and_then(toml::Value::as_bool) == Some(true);
                    if found.is_none() && required {
                        return Err("mapping");
                    }
                    (found, None)
                }
                (None, Some(value)) => (None, Some(constant_text(value))),
                (None, None) => (None, None),
            },
            _ => (None, None),
        };
        let value = match (kind, &found, &constant) {
            (Kind::Product, _, _) if NUMERIC_PRODUCT_FIELDS.contains(&name.as_str()) => {
                let number = match (&found, &constant) {
                    (Some(Value::Number(n)), _) => Some(unsigned_zero(n)),
                    (Some(Value::String(s)), _) | (None, Some(s)) => {
                        s.trim().parse::<Number>().ok()
                    }
                    (None, None) => continue,
                    _ => None,
                };
                Value::Number(number.ok_or("mapping")?)
            }
            (_, _, Some(text)) => Value::String(text.clone()),
            (Kind::TextOrList, Some(Value::Array(items)), _) => Value::Array(
                items
                    .iter()
                    .filter(|item| !item.is_null())
                    .map(|item| Value::String(cut(text(item))))
                    .collect(),
            ),
            (_, Some(found), _) => Value::String(cut(text(found))),
            (_, None, None) => continue,
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

/// The value at a dotted path: object members by name, array items by index; `None`
/// when absent or null.
fn at<'v>(event: &'v Value, path: &str) -> Option<&'v Value> {
    let mut current = event;
    for segment in path.split('.') {
        current = match current {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    (!current.is_null()).then_some(current)
}

fn constant_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        other => other.to_string(),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => unsigned_zero(n).to_string(),
        other => other.to_string(),
    }
}

/// The one difference the service has from serde_json, stated here: its parser reads a
/// negative zero (`-0`, `-0.0`) as 0.0.
fn unsigned_zero(n: &Number) -> Number {
    match n.as_f64() {
        Some(f) if f == 0.0 && n.is_f64() => Number::from_f64(0.0).expect("finite"),
        _ => n.clone(),
    }
}

/// `batch` with every text value that holds a JSON object or array replaced by that
/// value: the service writes such a value's members in the event's order, serde_json
/// sorted and without repeated names, and both are the same JSON.
pub fn normalized(batch: &Value) -> Value {
    match batch {
        Value::String(s) if s.starts_with(['{', '[']) => match serde_json::from_str::<Value>(s) {
            Ok(inner) if inner.is_object() || inner.is_array() => normalized(&inner),
            _ => batch.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .collect(),
        ),
        Value::Number(n) => Value::Number(unsigned_zero(n)),
        other => other.clone(),
    }
}

fn cut(text: String) -> String {
    text.chars().take(MAX_VALUE_CHARS).collect()
}
