//! Field assignments: the checked file as the service keeps it, and what it is asked.
//! Loading and checking the TOML file is `load.rs`; applying it to a loyalty event to make
//! the mParticle batch is `apply.rs`. Pure: no I/O beyond reading the file at start-up.
//!
//! A batch is written straight to JSON bytes, once, from a decoded
//! [`LoyaltyEvent`](crate::event::LoyaltyEvent) ([`FieldAssignments::map_into`]); the sender
//! joins those bytes into bulk requests without parsing them again. The service and `map`
//! come this one way.

use std::collections::HashMap;
use std::fmt;

use thiserror::Error;

use crate::mparticle::MAX_BATCH_BYTES;
use crate::outcome::ErrorKind;

mod apply;
mod load;

use crate::event::{Node, PathTree};

/// The prefix the loyalty platform's field sync uses for user attributes.
pub const ATTRIBUTE_PREFIX: &str = "antavo_";

/// Where a mapped value comes from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// A dotted path into the event, and its place in the file's [`PathTree`].
    Path { dotted: String, node: Node },
    /// A constant.
    Constant(String),
}

/// One `name = source` line of the file.
#[derive(Debug, Clone, PartialEq)]
struct Assignment {
    name: String,
    /// `,"name":` as JSON, rendered once here instead of once per event: the member with
    /// the comma before it (the writer turns an object's first comma into its `{`).
    member: Vec<u8>,
    source: Source,
    required: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventType {
    Custom,
    Commerce,
}

/// One `[events.<action>]` section: the external event definition.
#[derive(Debug, Clone)]
struct EventDefinition {
    /// The action, as the field assignments keep its name for the process
    /// ([`crate::names`]).
    action: &'static str,
    event_type: EventType,
    event_name: String,
    custom_event_type: Option<String>,
    product_action: Option<String>,
    attributes: Vec<Assignment>,
    product: Vec<Assignment>,
    /// The batch's fixed text from `"events"` to the event's timestamp (event type, name,
    /// custom event type), rendered once here instead of once per event.
    opening: Vec<u8>,
    /// `,"product_action":{"action":"…"` for a commerce event.
    product_opening: Option<Vec<u8>>,
}

/// The loaded, checked field-assignments file.
#[derive(Debug, Clone)]
pub struct FieldAssignments {
    identities: Vec<Assignment>,
    user_attributes: Vec<Assignment>,
    /// By the action.
    events: HashMap<&'static str, EventDefinition>,
    /// Every path the file reads, beside the schema's.
    paths: PathTree,
}

/// A finding about the file, with the line it stands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Why a file could not be loaded: every error found, each with its line.
#[derive(Debug, Clone, Error)]
#[error("{}", self.render())]
pub struct LoadError {
    pub file: String,
    pub errors: Vec<Finding>,
}

impl LoadError {
    fn render(&self) -> String {
        self.errors
            .iter()
            .map(|e| format!("{}: {e}", self.file))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Why one event could not be mapped. Permanent: the record is dead-lettered (or skipped,
/// for an unmapped action under `UNMAPPED_ACTION=skip`).
#[derive(Debug, Clone, Error, PartialEq)]
pub enum MapError {
    #[error("action {0:?} has no event definition in the field assignments")]
    Unmapped(String),
    #[error("required field {name} has no value at {path}")]
    MissingRequired { name: String, path: String },
    #[error("product field {name} at {path} is not a number")]
    NotANumber { name: String, path: String },
    #[error("the batch is {size} bytes, over mParticle's {MAX_BATCH_BYTES}-byte limit")]
    TooLarge { size: usize },
}

impl MapError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            MapError::Unmapped(_) => ErrorKind::Unmapped,
            MapError::MissingRequired { .. } | MapError::NotANumber { .. } => ErrorKind::Mapping,
            MapError::TooLarge { .. } => ErrorKind::TooLarge,
        }
    }
}

/// A batch ready to send: its JSON and what mapping it cost.
#[derive(Debug, Clone)]
pub struct MappedBatch {
    pub json: Vec<u8>,
    /// Attribute values cut to mParticle's 4,096 characters.
    pub truncated_values: u32,
}

/// Whether a batch carries the event's user attributes: a replayed dead letter's are left
/// out (unless replayed `--with-attributes`), since the customer's later records will have
/// set newer values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserAttributes {
    Write,
    LeaveOut,
}

/// What [`FieldAssignments::map_into`] wrote besides the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Attribute values cut to mParticle's 4,096 characters.
    pub truncated_values: u32,
    /// Where the batch's `user_identities` member lies, from the batch's start (empty when
    /// it has none): the customer, for merging the batches of one.
    pub identities: std::ops::Range<usize>,
}

impl FieldAssignments {
    /// The paths an event is read at for these assignments
    /// ([`LoyaltyEvent::read`](crate::event::LoyaltyEvent::read)).
    pub fn paths(&self) -> &PathTree {
        &self.paths
    }

    /// The actions that have an event definition, sorted.
    pub fn actions(&self) -> Vec<&str> {
        let mut actions: Vec<&str> = self.events.values().map(|d| d.action).collect();
        actions.sort_unstable();
        actions
    }

    pub fn has_action(&self, action: &str) -> bool {
        self.events.contains_key(action)
    }

    /// The file's own copy of `action`'s name, kept for the process, when it has an event
    /// definition.
    pub fn defined_action(&self, action: &str) -> Option<&'static str> {
        self.events.get(action).map(|d| d.action)
    }

    /// A one-paragraph summary for `check-config`.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "identities: {}\nuser attributes: {}\n",
            names(&self.identities),
            names(&self.user_attributes)
        );
        for action in self.actions() {
            let def = &self.events[action];
            let kind = match def.event_type {
                EventType::Custom => format!(
                    "custom_event {:?} ({})",
                    def.event_name,
                    def.custom_event_type.as_deref().unwrap_or("other")
                ),
                EventType::Commerce => format!(
                    "commerce_event {}",
                    def.product_action.as_deref().unwrap_or("?")
                ),
            };
            out.push_str(&format!(
                "event {action}: {kind}, attributes: {}\n",
                names(&def.attributes)
            ));
        }
        out
    }
}

fn names(assignments: &[Assignment]) -> String {
    if assignments.is_empty() {
        return "(none)".to_string();
    }
    assignments
        .iter()
        .map(|a| match &a.source {
            Source::Path { dotted, .. } if a.required => {
                format!("{} <- {dotted} (required)", a.name)
            }
            Source::Path { dotted, .. } => format!("{} <- {dotted}", a.name),
            Source::Constant(c) => format!("{} = {c:?}", a.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::LoyaltyEvent;
    use crate::mparticle::{Environment, MAX_VALUE_CHARS};
    use serde_json::Value;

    const EXAMPLE: &str = include_str!("../tests/data/field-assignments.toml");

    /// Maps the event `json` with `assignments`, in `environment`.
    fn map(
        assignments: &FieldAssignments,
        json: &str,
        environment: Environment,
        fallback_ms: Option<i64>,
    ) -> Result<MappedBatch, MapError> {
        let document = LoyaltyEvent::parse(Some(json.as_bytes()), 1 << 20).unwrap();
        let event = LoyaltyEvent::read(&document, assignments.paths()).unwrap();
        assignments.map(&event, environment, fallback_ms)
    }

    fn mapped(assignments: &FieldAssignments, json: &str) -> Value {
        let batch = map(assignments, json, Environment::Production, None).unwrap();
        serde_json::from_slice(&batch.json).unwrap()
    }

    #[test]
    fn the_sample_events_become_the_expected_batches() {
        let (assignments, warnings) = FieldAssignments::parse(EXAMPLE).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        for name in ["point_add", "reward_claim"] {
            let input = std::fs::read_to_string(format!("tests/data/events/{name}.json")).unwrap();
            let expected: Value = serde_json::from_str(
                &std::fs::read_to_string(format!("tests/data/events/{name}.expected-batch.json"))
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(mapped(&assignments, &input), expected, "{name}");
        }
    }

    #[test]
    fn missing_required_field_is_a_mapping_error() {
        let (assignments, _) = FieldAssignments::parse(EXAMPLE).unwrap();
        let err = map(
            &assignments,
            r#"{"id":"e1","action":"point_add","customer":{"id":"c1"},"data":{}}"#,
            Environment::Production,
            None,
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Mapping);
        assert!(err.to_string().contains("data.points"), "{err}");
    }

    #[test]
    fn unmapped_action_is_reported() {
        let (assignments, _) = FieldAssignments::parse(EXAMPLE).unwrap();
        let err = map(
            &assignments,
            r#"{"id":"e1","action":"tier_change","customer":{"id":"c1"}}"#,
            Environment::Production,
            None,
        )
        .unwrap_err();
        assert_eq!(err, MapError::Unmapped("tier_change".into()));
    }

    #[test]
    fn development_flag_and_fallback_timestamp() {
        let (assignments, _) = FieldAssignments::parse(EXAMPLE).unwrap();
        let e = r#"{"id":"e1","action":"point_add","customer":{"id":"c1"},"data":{"points":5}}"#;
        let batch = map(&assignments, e, Environment::Development, Some(42)).unwrap();
        let v: Value = serde_json::from_slice(&batch.json).unwrap();
        assert_eq!(v["environment"], "development");
        assert_eq!(v["events"][0]["data"]["timestamp_unixtime_ms"], 42);
        assert_eq!(
            v["events"][0]["data"]["custom_attributes"]["antavo_points"],
            "5"
        );
        assert!(
            v["user_identities"].get("email").is_none(),
            "absent optional paths are left out"
        );
    }

    #[test]
    fn long_values_are_truncated_and_counted() {
        let (assignments, _) = FieldAssignments::parse(EXAMPLE).unwrap();
        let long = "é".repeat(5000);
        let json = format!(
            r#"{{"id":"e1","action":"point_add","customer":{{"id":"c1"}},"data":{{"points":1,"reason":"{long}"}}}}"#
        );
        let batch = map(&assignments, &json, Environment::Production, None).unwrap();
        assert_eq!(batch.truncated_values, 1);
        let v: Value = serde_json::from_slice(&batch.json).unwrap();
        let reason = v["events"][0]["data"]["custom_attributes"]["antavo_reason"]
            .as_str()
            .unwrap();
        assert_eq!(reason.chars().count(), MAX_VALUE_CHARS);
    }

    #[test]
    fn user_attribute_lists_stay_lists() {
        let (assignments, _) = FieldAssignments::parse(
            "[user_attributes]\nantavo_tags = \"customer.tags\"\n[events.a]\n",
        )
        .unwrap();
        let v = mapped(
            &assignments,
            r#"{"id":"e","action":"a","customer":{"id":"c","tags":["x",2,true]}}"#,
        );
        assert_eq!(
            v["user_attributes"]["antavo_tags"],
            serde_json::json!(["x", "2", "true"])
        );
    }

    #[test]
    fn problems_in_the_file_name_their_line() {
        let text = "[identities]\ncustomer_id = \"customer.id\"\nloyalty_card = \"customer.card\"\n\n[events.x]\ncustom_event_type = \"fun\"\n";
        let errors = FieldAssignments::parse(text).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].line, Some(3));
        assert!(errors[0].message.contains("loyalty_card"));
        assert_eq!(errors[1].line, Some(6));
        assert!(errors[1].message.contains("fun"));
    }

    #[test]
    fn unprefixed_user_attribute_is_a_warning() {
        let text = "[user_attributes]\ntier = \"customer.tier\"\n\"$city\" = \"customer.city\"\n";
        let (_, warnings) = FieldAssignments::parse(text).unwrap();
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].line, Some(2));
    }

    #[test]
    fn syntax_errors_name_their_line() {
        let errors = FieldAssignments::parse("[identities]\ncustomer_id = \n").unwrap_err();
        assert_eq!(errors[0].line, Some(2), "{errors:?}");
    }

    #[test]
    fn commerce_events_carry_a_product_action() {
        let text = r#"
[events.reward_purchase]
event_type = "commerce_event"
product_action = "purchase"
[events.reward_purchase.product]
id = { path = "data.reward_id", required = true }
price = "data.price"
quantity = { value = 1 }
"#;
        let (assignments, _) = FieldAssignments::parse(text).unwrap();
        let v = mapped(
            &assignments,
            r#"{"id":"e","action":"reward_purchase","customer":{"id":"c"},"data":{"reward_id":"r1","price":"9.5"}}"#,
        );
        let data = &v["events"][0]["data"];
        assert_eq!(v["events"][0]["event_type"], "commerce_event");
        assert!(data.get("custom_event_type").is_none());
        assert_eq!(data["product_action"]["action"], "purchase");
        assert_eq!(
            data["product_action"]["products"][0],
            serde_json::json!({"id": "r1", "price": 9.5, "quantity": 1})
        );
    }

    #[test]
    fn commerce_event_without_product_action_is_refused() {
        let errors =
            FieldAssignments::parse("[events.x]\nevent_type = \"commerce_event\"\n").unwrap_err();
        assert!(errors[0].message.contains("product_action"));
    }
}
