//! Field assignments: loading and checking the TOML file, and applying it to a loyalty
//! event to make the mParticle batch. Pure: no I/O beyond reading the file at start-up.
//!
//! A batch is serialised straight to JSON bytes, once; the sender joins those bytes into
//! bulk requests without parsing them again. Two ways lead there: [`FieldAssignments::map_into`]
//! from a decoded [`LoyaltyEvent`] (the reference, which handles everything and words every
//! error), and [`FieldAssignments::map_direct`] straight from a record's bytes in one pass
//! ([`slots`], [`direct`]), which handles what nearly every record is and gives the rest back.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use crate::json::{Json, write_i64, write_str};
use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::event::{LoyaltyEvent, descend};
use crate::mparticle::{
    CUSTOM_EVENT_TYPES, Environment, IDENTITY_TYPES, MAX_BATCH_BYTES, MAX_NAME_CHARS,
    MAX_USER_ATTRIBUTES, MAX_VALUE_CHARS, NUMERIC_PRODUCT_FIELDS, PRODUCT_ACTIONS, PRODUCT_FIELDS,
};
use crate::names::NameHashing;
use crate::outcome::ErrorKind;

mod direct;
mod slots;

pub use direct::Direct;

/// The prefix the loyalty platform's field sync uses for user attributes.
pub const ATTRIBUTE_PREFIX: &str = "antavo_";

/// Where a mapped value comes from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// A dotted path into the event, split into segments.
    Path {
        dotted: String,
        segments: Vec<String>,
        /// Where the single pass notes this path's value ([`direct`]).
        slot: usize,
    },
    /// A constant.
    Constant(String),
}

/// One `name = source` line of the file.
#[derive(Debug, Clone, PartialEq)]
struct Assignment {
    name: String,
    /// `,"name":"` as JSON, rendered once here instead of once per event: the member
    /// with the comma before it ([`Members::write`] turns an object's first comma into its
    /// `{`), and the opening quote of a string value, which most values are.
    member_and_quote: Vec<u8>,
    source: Source,
    required: bool,
}

impl Assignment {
    /// `,"name":`: the member, the comma before it, no value.
    fn member(&self) -> &[u8] {
        &self.member_and_quote[..self.member_and_quote.len() - 1]
    }
}

/// Ends an object whose members were written from `open` on, each after a comma: the
/// first comma becomes the `{`. Without members it is `{}` or, when `empty` says so,
/// left out with the prefix before it (written from `mark`).
fn close_members(out: &mut Vec<u8>, mark: usize, open: usize, empty: Empty) {
    if out.len() > open {
        out[open] = b'{';
        out.push(b'}');
    } else if empty == Empty::Write {
        out.extend_from_slice(b"{}");
    } else {
        out.truncate(mark);
    }
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
    /// By the action's bytes (a record's are looked up as they stand, without reading
    /// them as UTF-8 again).
    events: HashMap<&'static [u8], EventDefinition, NameHashing>,
    /// The paths compiled for reading events in one pass ([`map_direct`](Self::map_direct)).
    single_pass: Option<direct::SinglePass>,
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

// ---------------------------------------------------------------------------------------
// Loading

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    identities: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    user_attributes: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    events: BTreeMap<String, Spanned<RawEvent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    event_type: Option<Spanned<String>>,
    event_name: Option<Spanned<String>>,
    custom_event_type: Option<Spanned<String>>,
    product_action: Option<Spanned<String>>,
    #[serde(default)]
    attributes: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    product: BTreeMap<String, Spanned<toml::Value>>,
}

/// Turns byte spans into line numbers.
struct Lines<'a>(&'a str);

impl Lines<'_> {
    fn of(&self, offset: usize) -> usize {
        self.0.as_bytes()[..offset.min(self.0.len())]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }
}

/// Collects errors and warnings while a file is checked.
struct Checker<'a> {
    lines: Lines<'a>,
    errors: Vec<Finding>,
    warnings: Vec<Finding>,
}

impl Checker<'_> {
    fn error(&mut self, offset: usize, message: impl Into<String>) {
        let line = Some(self.lines.of(offset));
        self.errors.push(Finding {
            line,
            message: message.into(),
        });
    }

    fn warn(&mut self, offset: usize, message: impl Into<String>) {
        let line = Some(self.lines.of(offset));
        self.warnings.push(Finding {
            line,
            message: message.into(),
        });
    }

    fn assignment(
        &mut self,
        section: &str,
        name: &str,
        raw: &Spanned<toml::Value>,
    ) -> Option<Assignment> {
        let at = raw.span().start;
        if name.chars().count() > MAX_NAME_CHARS {
            self.error(
                at,
                format!("{section}: the name {name:?} is over {MAX_NAME_CHARS} characters"),
            );
            return None;
        }
        let (source, required) = match raw.get_ref() {
            toml::Value::String(path) => (self.path(section, name, path, at)?, false),
            toml::Value::Table(table) => {
                for key in table.keys() {
                    if !["path", "required", "value"].contains(&key.as_str()) {
                        self.error(at, format!("{section}.{name}: unknown key {key:?} (use path, required or value)"));
                        return None;
                    }
                }
                let required = match table.get("required") {
                    None => false,
                    Some(toml::Value::Boolean(b)) => *b,
                    Some(_) => {
                        self.error(
                            at,
                            format!("{section}.{name}: required must be true or false"),
                        );
                        return None;
                    }
                };
                match (table.get("path"), table.get("value")) {
                    (Some(toml::Value::String(path)), None) => {
                        (self.path(section, name, path, at)?, required)
                    }
                    (None, Some(value)) => {
                        let text = match value {
                            toml::Value::String(s) => s.clone(),
                            toml::Value::Integer(i) => i.to_string(),
                            toml::Value::Float(f) => f.to_string(),
                            toml::Value::Boolean(b) => b.to_string(),
                            _ => {
                                self.error(at, format!("{section}.{name}: value must be text, a number or a boolean"));
                                return None;
                            }
                        };
                        if text.chars().count() > MAX_VALUE_CHARS {
                            self.error(at, format!("{section}.{name}: the constant is over {MAX_VALUE_CHARS} characters"));
                            return None;
                        }
                        (Source::Constant(text), false)
                    }
                    _ => {
                        self.error(
                            at,
                            format!(
                                "{section}.{name}: give either path = \"...\" or value = \"...\""
                            ),
                        );
                        return None;
                    }
                }
            }
            _ => {
                self.error(at, format!(
                    "{section}.{name}: expected a dotted path, {{ path = \"...\", required = true }} or {{ value = \"...\" }}"
                ));
                return None;
            }
        };
        let mut member_and_quote = Vec::with_capacity(name.len() + 5);
        member_and_quote.push(b',');
        write_str(&mut member_and_quote, name);
        member_and_quote.extend_from_slice(b":\"");
        Some(Assignment {
            name: name.to_string(),
            member_and_quote,
            source,
            required,
        })
    }

    fn path(&mut self, section: &str, name: &str, path: &str, at: usize) -> Option<Source> {
        let segments: Vec<String> = path.split('.').map(str::to_string).collect();
        if path.is_empty() || segments.iter().any(String::is_empty) {
            self.error(
                at,
                format!("{section}.{name}: {path:?} is not a dotted path such as customer.tier"),
            );
            return None;
        }
        Some(Source::Path {
            dotted: path.to_string(),
            segments,
            slot: 0,
        })
    }

    fn section(
        &mut self,
        section: &str,
        raw: &BTreeMap<String, Spanned<toml::Value>>,
    ) -> Vec<Assignment> {
        raw.iter()
            .filter_map(|(name, value)| self.assignment(section, name, value))
            .collect()
    }

    fn event(&mut self, action: &str, raw: &Spanned<RawEvent>) -> Option<EventDefinition> {
        let at = raw.span().start;
        let raw = raw.get_ref();
        let event_type = match raw
            .event_type
            .as_ref()
            .map(|s| (s.get_ref().as_str(), s.span().start))
        {
            None | Some(("custom_event", _)) => EventType::Custom,
            Some(("commerce_event", _)) => EventType::Commerce,
            Some((other, at)) => {
                self.error(at, format!("events.{action}: event_type {other:?} must be custom_event or commerce_event"));
                return None;
            }
        };
        let event_name = raw
            .event_name
            .as_ref()
            .map(|s| s.get_ref().clone())
            .unwrap_or_else(|| action.to_string());
        if event_name.is_empty() || event_name.chars().count() > MAX_NAME_CHARS {
            self.error(
                at,
                format!("events.{action}: event_name must be 1 to {MAX_NAME_CHARS} characters"),
            );
        }
        let mut custom_event_type = None;
        let mut product_action = None;
        match event_type {
            EventType::Custom => {
                let value = raw.custom_event_type.as_ref();
                let text = value.map(|s| s.get_ref().as_str()).unwrap_or("other");
                if !CUSTOM_EVENT_TYPES.contains(&text) {
                    let at = value.map(|s| s.span().start).unwrap_or(at);
                    self.error(
                        at,
                        format!(
                            "events.{action}: custom_event_type {text:?} is not one of {}",
                            CUSTOM_EVENT_TYPES.join(", ")
                        ),
                    );
                }
                custom_event_type = Some(text.to_string());
                if let Some(pa) = &raw.product_action {
                    self.error(
                        pa.span().start,
                        format!("events.{action}: product_action belongs to a commerce_event"),
                    );
                }
                if !raw.product.is_empty() {
                    self.error(
                        at,
                        format!("events.{action}: [product] belongs to a commerce_event"),
                    );
                }
            }
            EventType::Commerce => {
                if let Some(cet) = &raw.custom_event_type {
                    self.error(
                        cet.span().start,
                        format!(
                            "events.{action}: a commerce_event must not have custom_event_type"
                        ),
                    );
                }
                match &raw.product_action {
                    Some(pa) if PRODUCT_ACTIONS.contains(&pa.get_ref().as_str()) => {
                        product_action = Some(pa.get_ref().clone());
                    }
                    Some(pa) => self.error(
                        pa.span().start,
                        format!(
                            "events.{action}: product_action {:?} is not one of {}",
                            pa.get_ref(),
                            PRODUCT_ACTIONS.join(", ")
                        ),
                    ),
                    None => self.error(
                        at,
                        format!(
                            "events.{action}: a commerce_event needs product_action (one of {})",
                            PRODUCT_ACTIONS.join(", ")
                        ),
                    ),
                }
                for (name, value) in &raw.product {
                    if !PRODUCT_FIELDS.contains(&name.as_str()) {
                        self.error(
                            value.span().start,
                            format!(
                                "events.{action}.product: {name:?} is not a product field ({})",
                                PRODUCT_FIELDS.join(", ")
                            ),
                        );
                    }
                }
            }
        }
        let attributes = self.section(&format!("events.{action}.attributes"), &raw.attributes);
        let product = self.section(&format!("events.{action}.product"), &raw.product);
        let opening = event_opening(event_type, &event_name, custom_event_type.as_deref());
        let product_opening = product_action.as_deref().map(|action| {
            let mut text = br#","product_action":{"action":"#.to_vec();
            write_str(&mut text, action);
            text
        });
        Some(EventDefinition {
            action: crate::names::intern(action),
            event_type,
            event_name,
            custom_event_type,
            product_action,
            attributes,
            product,
            opening,
            product_opening,
        })
    }
}

impl FieldAssignments {
    /// Reads and checks a file; warnings come back with the assignments.
    pub fn load(path: &Path) -> Result<(FieldAssignments, Vec<Finding>), LoadError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| LoadError {
            file: file.clone(),
            errors: vec![Finding {
                line: None,
                message: format!(
                    "cannot read the field-assignments file (FIELD_ASSIGNMENTS_FILE): {e}"
                ),
            }],
        })?;
        FieldAssignments::parse(&text).map_err(|errors| LoadError { file, errors })
    }

    /// Parses and checks the text of a file.
    pub fn parse(text: &str) -> Result<(FieldAssignments, Vec<Finding>), Vec<Finding>> {
        let lines = Lines(text);
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            vec![Finding {
                line: e.span().map(|s| lines.of(s.start)),
                message: e.message().trim().to_string(),
            }]
        })?;
        let mut checker = Checker {
            lines,
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        for (name, value) in &raw.identities {
            if !IDENTITY_TYPES.contains(&name.as_str()) {
                checker.error(
                    value.span().start,
                    format!(
                        "identities: {name:?} is not an mParticle identity type ({})",
                        IDENTITY_TYPES.join(", ")
                    ),
                );
            }
        }
        let identities = checker.section("identities", &raw.identities);
        for (name, value) in &raw.user_attributes {
            if !name.starts_with(ATTRIBUTE_PREFIX) && !name.starts_with('$') {
                checker.warn(value.span().start, format!(
                    "user_attributes: {name:?} lacks the {ATTRIBUTE_PREFIX} prefix the loyalty platform's field sync uses"
                ));
            }
        }
        if raw.user_attributes.len() > MAX_USER_ATTRIBUTES {
            checker.error(
                0,
                format!(
                    "user_attributes: {} names, over mParticle's {MAX_USER_ATTRIBUTES} per batch",
                    raw.user_attributes.len()
                ),
            );
        }
        let user_attributes = checker.section("user_attributes", &raw.user_attributes);
        let mut events = HashMap::default();
        for (action, raw_event) in &raw.events {
            if let Some(definition) = checker.event(action, raw_event) {
                events.insert(definition.action.as_bytes(), definition);
            }
        }
        if !checker.errors.is_empty() {
            return Err(checker.errors);
        }
        let mut assignments = FieldAssignments {
            identities,
            user_attributes,
            events,
            single_pass: None,
        };
        assignments.single_pass = direct::SinglePass::compile(&mut assignments);
        Ok((assignments, checker.warnings))
    }

    /// The actions that have an event definition, sorted.
    pub fn actions(&self) -> Vec<&str> {
        let mut actions: Vec<&str> = self.events.values().map(|d| d.action).collect();
        actions.sort_unstable();
        actions
    }

    pub fn has_action(&self, action: &str) -> bool {
        self.events.contains_key(action.as_bytes())
    }

    /// The file's own copy of `action`'s name, kept for the process, when it has an event
    /// definition.
    pub fn defined_action(&self, action: &str) -> Option<&'static str> {
        self.events.get(action.as_bytes()).map(|d| d.action)
    }

    /// A one-paragraph summary for `check-config`.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "identities: {}\nuser attributes: {}\n",
            names(&self.identities),
            names(&self.user_attributes)
        );
        for action in self.actions() {
            let def = &self.events[action.as_bytes()];
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

    /// Makes the mParticle batch for one event. `fallback_timestamp_ms` (the Kafka record's
    /// timestamp) is used when the event has no `created_at`.
    pub fn map(
        &self,
        event: &LoyaltyEvent<'_>,
        environment: Environment,
        fallback_timestamp_ms: Option<i64>,
    ) -> Result<MappedBatch, MapError> {
        let mut json = Vec::new();
        let truncated_values =
            self.map_into(event, environment, fallback_timestamp_ms, &mut json)?;
        Ok(MappedBatch {
            json,
            truncated_values,
        })
    }

    /// [`map`](Self::map), appending the batch to `out` (the pipeline writes the batches of
    /// one piece into one buffer). Returns how many values were truncated; on an error
    /// `out` is left as it was.
    pub fn map_into(
        &self,
        event: &LoyaltyEvent<'_>,
        environment: Environment,
        fallback_timestamp_ms: Option<i64>,
        out: &mut Vec<u8>,
    ) -> Result<u32, MapError> {
        let definition = self
            .events
            .get(event.action.as_bytes())
            .ok_or_else(|| MapError::Unmapped(event.action.to_string()))?;
        let start = out.len();
        let mut truncated = 0u32;
        let written = self.write_batch(
            out,
            definition,
            event,
            environment,
            fallback_timestamp_ms,
            &mut truncated,
        );
        let size = out.len() - start;
        let result = match written {
            Ok(()) if size >= MAX_BATCH_BYTES => Err(MapError::TooLarge { size }),
            Ok(()) => Ok(truncated),
            Err(error) => Err(error),
        };
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Writes the batch by hand rather than through serde: this runs once per event, so
    /// the fixed parts are written as literals and member names were rendered at load.
    /// Members without a value are left out.
    fn write_batch(
        &self,
        out: &mut Vec<u8>,
        definition: &EventDefinition,
        event: &LoyaltyEvent<'_>,
        environment: Environment,
        fallback_timestamp_ms: Option<i64>,
        truncated: &mut u32,
    ) -> Result<(), MapError> {
        out.extend_from_slice(batch_head(environment));
        write_str(out, &event.id);
        let mut members = Members::new(event, truncated);
        members.write(
            out,
            br#","user_identities":"#,
            &self.identities,
            Shape::Text,
            Empty::LeaveOut,
        )?;
        members.write(
            out,
            br#","user_attributes":"#,
            &self.user_attributes,
            Shape::TextOrList,
            Empty::LeaveOut,
        )?;
        out.extend_from_slice(&definition.opening);
        if let Some(ms) = event.created_at_ms.or(fallback_timestamp_ms) {
            out.extend_from_slice(br#""timestamp_unixtime_ms":"#);
            write_i64(out, ms);
            out.push(b',');
        }
        out.extend_from_slice(br#""source_message_id":"#);
        write_str(out, &event.id);
        members.write(
            out,
            br#","custom_attributes":"#,
            &definition.attributes,
            Shape::Text,
            Empty::LeaveOut,
        )?;
        if let Some(opening) = &definition.product_opening {
            out.extend_from_slice(opening);
            members.write(
                out,
                br#","products":["#,
                &definition.product,
                Shape::Product,
                Empty::Write,
            )?;
            out.extend_from_slice(b"]}");
        }
        out.extend_from_slice(b"}}]}");
        Ok(())
    }
}

/// The start of every batch, up to the value of its `source_request_id`.
fn batch_head(environment: Environment) -> &'static [u8] {
    match environment {
        Environment::Production => {
            br#"{"environment":"production","schema_version":2,"source_request_id":"#
        }
        Environment::Development => {
            br#"{"environment":"development","schema_version":2,"source_request_id":"#
        }
    }
}

/// `,"events":[{"event_type":…,"data":{` and the event's fixed members, each followed by
/// a comma: the part of a batch that depends only on its event definition.
fn event_opening(event_type: EventType, name: &str, custom_event_type: Option<&str>) -> Vec<u8> {
    let mut out = br#","events":[{"event_type":"#.to_vec();
    match event_type {
        EventType::Custom => {
            out.extend_from_slice(br#""custom_event","data":{"event_name":"#);
            write_str(&mut out, name);
            out.push(b',');
        }
        EventType::Commerce => out.extend_from_slice(br#""commerce_event","data":{"#),
    }
    if let Some(custom_type) = custom_event_type {
        out.extend_from_slice(br#""custom_event_type":"#);
        write_str(&mut out, custom_type);
        out.push(b',');
    }
    out
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

// ---------------------------------------------------------------------------------------
// Applying

/// What kinds of value a destination takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Text,
    /// user attributes may be lists of strings
    TextOrList,
    /// a product: `price`, `quantity` and `position` are numbers, the rest text
    Product,
}

/// What to do with an object none of whose assignments has a value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Empty {
    LeaveOut,
    Write,
}

/// Writes the objects of one batch, counting the values cut to mParticle's limit.
struct Members<'e, 'a> {
    event: &'e LoyaltyEvent<'a>,
    truncated: &'e mut u32,
    /// The event's member looked up last, by name: assignments in a row mostly start
    /// from the same one (`customer.…`, `data.…`), so most lookups skip the scan of the
    /// event's top level.
    last_member: Option<(&'e str, Option<&'e Json<'a>>)>,
}

impl<'e, 'a> Members<'e, 'a> {
    fn new(event: &'e LoyaltyEvent<'a>, truncated: &'e mut u32) -> Self {
        Members {
            event,
            truncated,
            last_member: None,
        }
    }

    /// Writes `prefix` and an object of the assignments that have a value, in file order.
    fn write(
        &mut self,
        out: &mut Vec<u8>,
        prefix: &[u8],
        assignments: &'e [Assignment],
        shape: Shape,
        empty: Empty,
    ) -> Result<(), MapError> {
        let mark = out.len();
        out.extend_from_slice(prefix);
        let open = out.len();
        for assignment in assignments {
            let Some(value) = self.resolve(assignment)? else {
                continue;
            };
            let number = match shape {
                Shape::Product if NUMERIC_PRODUCT_FIELDS.contains(&assignment.name.as_str()) => {
                    Some(product_number(assignment, &value)?)
                }
                _ => None,
            };
            out.extend_from_slice(assignment.member());
            match number {
                // Writing to a Vec cannot fail.
                Some(number) => {
                    let _ = serde_json::to_writer(&mut *out, &number);
                }
                None => self.value(out, value, shape),
            }
        }
        close_members(out, mark, open, empty);
        Ok(())
    }

    fn resolve(&mut self, assignment: &'e Assignment) -> Result<Option<Resolved<'e>>, MapError> {
        match &assignment.source {
            Source::Constant(text) => Ok(Some(Resolved::Constant(text))),
            Source::Path {
                dotted, segments, ..
            } => match self.lookup(segments) {
                Some(value) => Ok(Some(Resolved::Json(value))),
                None if assignment.required => Err(MapError::MissingRequired {
                    name: assignment.name.clone(),
                    path: dotted.clone(),
                }),
                None => Ok(None),
            },
        }
    }

    /// The value at `path` in the event; `None` when absent or null.
    fn lookup(&mut self, path: &'e [String]) -> Option<&'e Json<'a>> {
        let (first, rest) = path.split_first()?;
        let member = match self.last_member {
            Some((name, member)) if name == first => member,
            _ => {
                let member = self.event.body.get(first);
                self.last_member = Some((first, member));
                member
            }
        };
        descend(member?, rest)
    }

    fn value(&mut self, out: &mut Vec<u8>, value: Resolved<'_>, shape: Shape) {
        match value {
            Resolved::Constant(text) => write_str(out, text),
            Resolved::Json(Json::Array(items)) if shape == Shape::TextOrList => {
                out.push(b'[');
                for (i, item) in items.iter().filter(|v| !v.is_null()).enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(out, &truncate(scalar_text(item), self.truncated));
                }
                out.push(b']');
            }
            Resolved::Json(value) => write_str(out, &truncate(scalar_text(value), self.truncated)),
        }
    }
}

/// A numeric product field (`price`, `quantity`, `position`) as the number mParticle wants.
fn product_number(
    assignment: &Assignment,
    value: &Resolved<'_>,
) -> Result<serde_json::Number, MapError> {
    let number = match value {
        Resolved::Json(Json::Number(n)) => n.to_serde(),
        Resolved::Json(Json::String(s)) => s.trim().parse::<serde_json::Number>().ok(),
        Resolved::Constant(c) => c.trim().parse::<serde_json::Number>().ok(),
        Resolved::Json(_) => None,
    };
    number.ok_or_else(|| {
        let path = match &assignment.source {
            Source::Path { dotted, .. } => dotted.clone(),
            Source::Constant(c) => c.clone(),
        };
        MapError::NotANumber {
            name: assignment.name.clone(),
            path,
        }
    })
}

enum Resolved<'a> {
    Json(&'a Json<'a>),
    Constant(&'a str),
}

/// Numbers and booleans become their JSON text; objects and arrays their compact JSON.
fn scalar_text<'a>(value: &'a Json<'_>) -> Cow<'a, str> {
    match value {
        Json::String(s) => Cow::Borrowed(s),
        Json::Bool(true) => Cow::Borrowed("true"),
        Json::Bool(false) => Cow::Borrowed("false"),
        Json::Number(n) => n.text(),
        Json::Null => Cow::Borrowed(""),
        // Writing plain data to a String cannot fail.
        other => Cow::Owned(serde_json::to_string(other).unwrap_or_default()),
    }
}

fn truncate<'a>(text: Cow<'a, str>, truncated: &mut u32) -> Cow<'a, str> {
    // Byte length bounds character count from above, so most values skip the count.
    if text.len() <= MAX_VALUE_CHARS {
        return text;
    }
    match text.char_indices().nth(MAX_VALUE_CHARS) {
        None => text,
        Some((cut, _)) => {
            *truncated += 1;
            match text {
                Cow::Borrowed(s) => Cow::Borrowed(&s[..cut]),
                Cow::Owned(mut s) => {
                    s.truncate(cut);
                    Cow::Owned(s)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const EXAMPLE: &str = include_str!("../tests/data/field-assignments.toml");

    fn event(json: &str) -> LoyaltyEvent<'_> {
        LoyaltyEvent::decode(Some(json.as_bytes()), 1 << 20).unwrap()
    }

    fn mapped(assignments: &FieldAssignments, json: &str) -> Value {
        let batch = assignments
            .map(&event(json), Environment::Production, None)
            .unwrap();
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
        let err = assignments
            .map(
                &event(r#"{"id":"e1","action":"point_add","customer":{"id":"c1"},"data":{}}"#),
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
        let err = assignments
            .map(
                &event(r#"{"id":"e1","action":"tier_change","customer":{"id":"c1"}}"#),
                Environment::Production,
                None,
            )
            .unwrap_err();
        assert_eq!(err, MapError::Unmapped("tier_change".into()));
    }

    #[test]
    fn development_flag_and_fallback_timestamp() {
        let (assignments, _) = FieldAssignments::parse(EXAMPLE).unwrap();
        let e =
            event(r#"{"id":"e1","action":"point_add","customer":{"id":"c1"},"data":{"points":5}}"#);
        let batch = assignments
            .map(&e, Environment::Development, Some(42))
            .unwrap();
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
        let e = event(&json);
        let batch = assignments.map(&e, Environment::Production, None).unwrap();
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
