//! JSON for the hot path, both ways. Reading: a borrowed tree for decoding loyalty
//! events. Strings point into the record's bytes unless they hold escapes, and an object
//! is its members in order (events have a handful per object), so decoding an event
//! allocates once per object or array instead of once per key and value as
//! `serde_json::Value` does. Parsing is still serde_json's: the same UTF-8 checks, the same
//! nesting limit, the same error messages. Writing: [`ObjectWriter`] and [`write_str`]
//! write compact JSON text straight into a buffer, copying strings that need no escape
//! as they are.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Number;

/// One JSON value, borrowing from the text it was parsed from where it can.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
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
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }
}

impl<'a> Json<'a> {
    /// Parses `bytes` as one JSON document.
    pub fn parse(bytes: &'a [u8]) -> Result<Json<'a>, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Json<'de>, E> {
        // JSON text has no NaN or infinity, so this is never Null in practice.
        Ok(Number::from_f64(n).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(Key(key)) = map.next_key()? {
            members.push((key, map.next_value()?));
        }
        Ok(Json::Object(Object(members)))
    }
}

/// An object key, borrowed when it has no escapes (serde's own `Cow` always copies).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
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

/// Writes `text` as a JSON string. Text without quotes, backslashes or control
/// characters (nearly all of it) is copied as it is; anything else goes through
/// serde_json's escaping.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    // No early exit, so that the check compiles to a vectorised scan.
    let needs_escape = text.bytes().fold(false, |found, b| {
        found | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if needs_escape {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(out, text);
    } else {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// Writes one JSON object member by member: `{"a":…,"b":…}`.
pub struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> ObjectWriter<'a> {
    pub fn open(out: &'a mut Vec<u8>) -> ObjectWriter<'a> {
        out.push(b'{');
        ObjectWriter { out, empty: true }
    }

    /// Writes the member's name; the caller writes its value into the buffer returned.
    pub fn key(&mut self, name: &str) -> &mut Vec<u8> {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        write_str(self.out, name);
        self.out.push(b':');
        self.out
    }

    pub fn close(self) {
        self.out.push(b'}');
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
        assert_eq!(object.get("n"), Some(&Json::Number((-3).into())));
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
    fn written_text_is_what_serde_json_writes() {
        for text in [
            "plain",
            "",
            "é and 😀",
            "quote \" back \\ slash",
            "ctl \u{1}\n\t",
            "\u{7f}",
        ] {
            let mut out = Vec::new();
            write_str(&mut out, text);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(text).unwrap()
            );
        }
        let mut out = Vec::new();
        let mut object = ObjectWriter::open(&mut out);
        write_str(object.key("a"), "x");
        object.key("b").extend_from_slice(b"2");
        object.close();
        assert_eq!(out, br#"{"a":"x","b":2}"#);
        let mut out = Vec::new();
        ObjectWriter::open(&mut out).close();
        assert_eq!(out, b"{}");
    }

    #[test]
    fn serde_json_limits_still_apply() {
        let deep = "[".repeat(300) + &"]".repeat(300);
        assert!(Json::parse(deep.as_bytes()).is_err());
        assert!(Json::parse(b"\"\xff\"").is_err());
        assert!(Json::parse(b"{} x").is_err());
    }
}
