//! JSON for the hot path, both ways. Reading ([`parse`]): a borrowed tree for decoding
//! loyalty events. Strings point into the record's bytes unless they hold escapes,
//! numbers stay the text they were written as until asked for, and an object is its
//! members in order (events have a handful per object), so decoding an event allocates
//! once per object or array. Writing ([`write`](mod@write)): JSON strings straight into a buffer.

pub mod parse;
pub(crate) mod scan;
pub mod write;

use std::borrow::Cow;

use serde::ser::{Serialize, SerializeMap, Serializer};

pub use parse::ParseError;
pub use write::{write_i64, write_str};

/// One JSON value, borrowing from the text it was parsed from where it can.
///
/// The tag is a full word (`repr(u64)`) so that a value moves as aligned words: with the
/// default layout every value returned up the parser's recursion was copied with
/// misaligned loads that stalled on the stores just made, and parsing took twice as long.
#[derive(Debug, Clone, PartialEq)]
#[repr(u64)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number<'a>),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Object<'a>),
}

/// A JSON object: its members in the order they came.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object<'a>(Vec<(Cow<'a, str>, Json<'a>)>);

impl<'a> Object<'a> {
    /// The member named `name`; of repeated names the last counts, as in serde_json.
    pub fn get(&self, name: &str) -> Option<&Json<'a>> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| same_name(key, name))
            .map(|(_, value)| value)
    }
}

/// Names are short: comparing them byte by byte in place beats a call to `memcmp` for
/// each member looked at, which was 5% of the source thread's time in a profile.
fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

/// A JSON number as it was written; the parser has checked its grammar and range.
/// Read it the way serde_json reads it: an integer when it is one and fits, a float
/// otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Number<'a>(&'a str);

/// [`Number::is_short_integer`] on a number's checked text as bytes, for a reader that
/// has not made a [`Number`] of it.
pub(crate) fn is_short_integer_text(text: &[u8]) -> bool {
    text.len() <= 18
        && !text.starts_with(b"-0")
        && !text.iter().any(|b| matches!(b, b'.' | b'e' | b'E'))
}

impl<'a> Number<'a> {
    /// A number whose text a parser has checked against JSON's grammar.
    pub(crate) fn from_checked_text(text: &'a str) -> Number<'a> {
        Number(text)
    }

    /// Integers of up to 18 digits fit in an i64 and read back as they were written, so
    /// they need no conversion. (`-0` reads as a float in serde_json.)
    pub(crate) fn is_short_integer(&self) -> bool {
        is_short_integer_text(self.0.as_bytes())
    }

    /// The number as serde_json would have read it; `None` when out of f64's range.
    pub fn to_serde(&self) -> Option<serde_json::Number> {
        if self.is_short_integer() {
            return self.0.parse::<i64>().ok().map(serde_json::Number::from);
        }
        serde_json::from_str(self.0).ok()
    }

    /// Whether serde_json would read the number (f64's range bounds the rest).
    pub(crate) fn in_range(&self) -> bool {
        self.is_short_integer() || self.to_serde().is_some()
    }

    pub fn as_i64(&self) -> Option<i64> {
        if self.is_short_integer() {
            return self.0.parse().ok();
        }
        self.to_serde()?.as_i64()
    }

    /// The number's text as serde_json writes it (`1.50` becomes `1.5`).
    pub fn text(&self) -> Cow<'a, str> {
        if self.is_short_integer() {
            return Cow::Borrowed(self.0);
        }
        Cow::Owned(self.to_serde().map(|n| n.to_string()).unwrap_or_default())
    }
}

impl<'a> Json<'a> {
    /// Parses `bytes` as one JSON document.
    pub fn parse(bytes: &'a [u8]) -> Result<Json<'a>, ParseError> {
        parse::parse(bytes)
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }
}

impl Serialize for Number<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.to_serde() {
            Some(n) => n.serialize(s),
            None => s.serialize_unit(),
        }
    }
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Number(n) => n.serialize(s),
            Json::String(text) => s.serialize_str(text),
            Json::Array(items) => items.serialize(s),
            Json::Object(Object(members)) => {
                let mut map = s.serialize_map(Some(members.len()))?;
                for (key, value) in members {
                    map.serialize_entry(key.as_ref(), value)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_strings_borrow_and_escaped_ones_are_decoded() {
        let text = br#"{"plain":"gold","escaped":"a\"b\u00e9","n":-3,"f":1.5,"list":[true,null]}"#;
        let Json::Object(object) = Json::parse(text).unwrap() else {
            panic!("not an object");
        };
        assert!(matches!(
            object.get("plain"),
            Some(Json::String(Cow::Borrowed("gold")))
        ));
        assert_eq!(
            object.get("escaped"),
            Some(&Json::String(Cow::Owned("a\"bé".into())))
        );
        assert_eq!(object.get("n"), Some(&Json::Number(Number("-3"))));
        assert_eq!(
            object.get("list"),
            Some(&Json::Array(vec![Json::Bool(true), Json::Null]))
        );
        assert_eq!(object.get("missing"), None);
    }

    #[test]
    fn the_last_of_repeated_names_counts_and_serialising_round_trips() {
        let text = br#"{"a":1,"a":{"b":[1,"x\n"]}}"#;
        let Json::Object(object) = Json::parse(text).unwrap() else {
            panic!("not an object");
        };
        let last = object.get("a").unwrap();
        assert_eq!(serde_json::to_string(last).unwrap(), r#"{"b":[1,"x\n"]}"#);
    }

    #[test]
    fn numbers_read_as_serde_json_reads_them() {
        for text in [
            "0",
            "7",
            "-3",
            "-0",
            "1.50",
            "1e3",
            "123456789012345678",
            "1234567890123456789",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "2.5E-3",
        ] {
            let theirs: serde_json::Number = serde_json::from_str(text).unwrap();
            let ours = Number(text);
            assert_eq!(ours.to_serde(), Some(theirs.clone()), "{text}");
            assert_eq!(ours.as_i64(), theirs.as_i64(), "{text}");
            assert_eq!(ours.text(), theirs.to_string(), "{text}");
        }
    }

    #[test]
    fn serde_json_limits_still_apply() {
        let deep = "[".repeat(300) + &"]".repeat(300);
        assert!(Json::parse(deep.as_bytes()).is_err());
        assert!(Json::parse(b"\"\xff\"").is_err());
        assert!(Json::parse(b"{} x").is_err());
        assert!(Json::parse(b"1e400").is_err());
    }
}
