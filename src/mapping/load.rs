//! Loading the field-assignments file: the TOML read, every assignment checked (with the
//! line it stands on), and the plan compiled once: each event definition's fixed JSON
//! rendered, each member's name rendered, each path split.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{
    ATTRIBUTE_PREFIX, Assignment, EventDefinition, EventType, FieldAssignments, Finding, LoadError,
    PathTree, Source,
};
use crate::json::write_str;
use crate::mparticle::{
    CUSTOM_EVENT_TYPES, IDENTITY_TYPES, MAX_NAME_CHARS, MAX_USER_ATTRIBUTES, MAX_VALUE_CHARS,
    PRODUCT_ACTIONS, PRODUCT_FIELDS,
};

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
    paths: PathTree,
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

    /// An error for each name of `section` that is not one of `known` (`what` says what
    /// they are).
    fn known_names(
        &mut self,
        section: &str,
        names: &BTreeMap<String, Spanned<toml::Value>>,
        known: &[&str],
        what: &str,
    ) {
        for (name, value) in names {
            if !known.contains(&name.as_str()) {
                let message = format!("{section}: {name:?} is not {what} ({})", known.join(", "));
                self.error(value.span().start, message);
            }
        }
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
        let mut member = vec![b','];
        write_str(&mut member, name);
        member.push(b':');
        Some(Assignment {
            name: name.to_string(),
            member,
            source,
            required,
        })
    }

    fn path(&mut self, section: &str, name: &str, path: &str, at: usize) -> Option<Source> {
        let segments: Vec<&str> = path.split('.').collect();
        if segments.iter().any(|s| s.is_empty()) {
            self.error(
                at,
                format!("{section}.{name}: {path:?} is not a dotted path such as customer.tier"),
            );
            return None;
        }
        Some(Source::Path {
            dotted: path.to_string(),
            node: self.paths.insert(&segments),
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
                self.known_names(
                    &format!("events.{action}.product"),
                    &raw.product,
                    PRODUCT_FIELDS,
                    "a product field",
                );
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
            paths: PathTree::default(),
        };
        checker.known_names(
            "identities",
            &raw.identities,
            IDENTITY_TYPES,
            "an mParticle identity type",
        );
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
                events.insert(definition.action, definition);
            }
        }
        if !checker.errors.is_empty() {
            return Err(checker.errors);
        }
        let assignments = FieldAssignments {
            identities,
            user_attributes,
            events,
            paths: checker.paths,
        };
        Ok((assignments, checker.warnings))
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
