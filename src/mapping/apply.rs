//! Applying the field assignments to a decoded loyalty event: the batch written straight
//! to JSON bytes, once, with mParticle's limits applied (names, values, counts).

use std::borrow::Cow;

use std::ops::Range;

use super::{
    Assignment, EventDefinition, FieldAssignments, MapError, MappedBatch, Source, UserAttributes,
    Written,
};
use crate::event::LoyaltyEvent;
use crate::json::{self, JsonValueTrait, Value, ValueRef, write_number, write_str};
use crate::mparticle::{Environment, MAX_BATCH_BYTES, MAX_VALUE_CHARS, NUMERIC_PRODUCT_FIELDS};

impl FieldAssignments {
    /// Makes the mParticle batch for one event. `fallback_timestamp_ms` (the Kafka record's
    /// timestamp) is used when the event has no `created_at`.
    pub fn map(
        &self,
        event: &LoyaltyEvent<'_>,
        environment: Environment,
        fallback_timestamp_ms: Option<i64>,
    ) -> Result<MappedBatch, MapError> {
        let mut json = Vec::new();
        let written = self.map_into(
            event,
            environment,
            fallback_timestamp_ms,
            UserAttributes::Write,
            &mut json,
        )?;
        Ok(MappedBatch {
            json,
            truncated_values: written.truncated_values,
        })
    }

    /// [`map`](Self::map), appending the batch to `out` (the pipeline writes the batches of
    /// one piece into one buffer). On an error `out` is left as it was.
    pub fn map_into(
        &self,
        event: &LoyaltyEvent<'_>,
        environment: Environment,
        fallback_timestamp_ms: Option<i64>,
        user_attributes: UserAttributes,
        out: &mut Vec<u8>,
    ) -> Result<Written, MapError> {
        let definition = self
            .events
            .get(event.action)
            .ok_or_else(|| MapError::Unmapped(event.action.to_string()))?;
        let start = out.len();
        let written = self.write_batch(
            out,
            definition,
            event,
            environment,
            fallback_timestamp_ms,
            user_attributes,
        );
        let size = out.len() - start;
        let result = match written {
            Ok(_) if size >= MAX_BATCH_BYTES => Err(MapError::TooLarge { size }),
            Ok((identities, truncated)) => Ok(Written {
                truncated_values: truncated,
                identities: identities.start - start..identities.end - start,
            }),
            Err(error) => Err(error),
        };
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Writes the batch by hand rather than through serde: this runs once per event, so
    /// the fixed parts are written as literals and member names were rendered at load.
    /// Members without a value are left out. Returns where the identities lie in `out`.
    fn write_batch(
        &self,
        out: &mut Vec<u8>,
        definition: &EventDefinition,
        event: &LoyaltyEvent<'_>,
        environment: Environment,
        fallback_timestamp_ms: Option<i64>,
        user_attributes: UserAttributes,
    ) -> Result<(Range<usize>, u32), MapError> {
        let mut truncated = 0u32;
        out.extend_from_slice(batch_head(environment));
        write_str(out, event.id);
        let mut members = Members {
            event,
            truncated: &mut truncated,
        };
        let identities = out.len();
        members.write(
            out,
            br#","user_identities":"#,
            &self.identities,
            Shape::Text,
            Empty::LeaveOut,
        )?;
        let identities = identities..out.len();
        if user_attributes == UserAttributes::Write {
            members.write(
                out,
                br#","user_attributes":"#,
                &self.user_attributes,
                Shape::TextOrList,
                Empty::LeaveOut,
            )?;
        }
        out.extend_from_slice(&definition.opening);
        if let Some(ms) = event.created_at_ms.or(fallback_timestamp_ms) {
            out.extend_from_slice(br#""timestamp_unixtime_ms":"#);
            write_number(out, ms);
            out.push(b',');
        }
        out.extend_from_slice(br#""source_message_id":"#);
        write_str(out, event.id);
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
        Ok((identities, truncated))
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
struct Members<'e, 'v> {
    event: &'e LoyaltyEvent<'v>,
    truncated: &'e mut u32,
}

impl<'e, 'v> Members<'e, 'v> {
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
            out.extend_from_slice(&assignment.member);
            match number {
                Some(number) => write_number(out, number),
                None => self.value(out, value, shape),
            }
        }
        close_members(out, mark, open, empty);
        Ok(())
    }

    fn resolve(&mut self, assignment: &'e Assignment) -> Result<Option<Resolved<'e>>, MapError> {
        match &assignment.source {
            Source::Constant(text) => Ok(Some(Resolved::Constant(text))),
            Source::Path { dotted, node } => match self.event.at(*node) {
                Some(value) => Ok(Some(Resolved::InEvent(value))),
                None if assignment.required => Err(MapError::MissingRequired {
                    name: assignment.name.clone(),
                    path: dotted.clone(),
                }),
                None => Ok(None),
            },
        }
    }

    fn value(&mut self, out: &mut Vec<u8>, value: Resolved<'_>, shape: Shape) {
        match value {
            Resolved::Constant(text) => write_str(out, text),
            Resolved::InEvent(value) => match value.as_ref() {
                ValueRef::Array(items) if shape == Shape::TextOrList => {
                    out.push(b'[');
                    for (i, item) in items.iter().filter(|v| !v.is_null()).enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        self.text(out, item.as_ref());
                    }
                    out.push(b']');
                }
                value => self.text(out, value),
            },
        }
    }

    /// Writes `value` as attribute text. A number's text is short and needs no escape,
    /// so it is written in place rather than made into a string first.
    fn text(&mut self, out: &mut Vec<u8>, value: ValueRef<'_>) {
        if let ValueRef::Number(n) = value {
            out.push(b'"');
            write_number(out, json::number(&n));
            out.push(b'"');
        } else {
            write_str(out, &truncate(json::text(value), self.truncated));
        }
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

/// A numeric product field (`price`, `quantity`, `position`) as the number mParticle wants.
fn product_number(
    assignment: &Assignment,
    value: &Resolved<'_>,
) -> Result<serde_json::Number, MapError> {
    let number = match value {
        Resolved::InEvent(value) => match value.as_ref() {
            ValueRef::Number(n) => Some(json::number(&n)),
            ValueRef::String(s) => s.trim().parse::<serde_json::Number>().ok(),
            _ => None,
        },
        Resolved::Constant(c) => c.trim().parse::<serde_json::Number>().ok(),
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
    InEvent(&'a Value),
    Constant(&'a str),
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
