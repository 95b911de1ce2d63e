//! JSON on the libraries: record values are parsed by sonic-rs (the fastest of the
//! candidates measured in BENCHMARKS.md) into its tree; numbers and strings are written
//! by serde_json, so that a value reads and writes as serde_json would have it.

use std::borrow::Cow;

use sonic_rs::JsonNumberTrait;

pub use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value, ValueRef};

/// Containers nested deeper than this are refused, as serde_json refuses them.
pub const MAX_DEPTH: usize = 127;

/// Parses one JSON document. The nesting limit is serde_json's: sonic-rs has none, and
/// both its parser and its tree's drop recurse, so a record of a hundred thousand `[`
/// would end the process. A text with at most [`MAX_DEPTH`] brackets cannot nest deeper;
/// one with more (rare in events) is first read by serde_json, whose error it gets.
/// (Into its tree: serde_json skips an `IgnoredAny` without counting the depth.)
pub fn parse(bytes: &[u8]) -> Result<Value, String> {
    // Counted up to the limit only: an event has a handful.
    let brackets = memchr::memchr2_iter(b'[', b'{', bytes)
        .take(MAX_DEPTH + 1)
        .count();
    if brackets > MAX_DEPTH {
        serde_json::from_slice::<serde_json::Value>(bytes).map_err(|e| e.to_string())?;
    }
    // sonic-rs words an error on its first line and quotes the text after it.
    sonic_rs::from_slice(bytes).map_err(|e| {
        let text = e.to_string();
        text.lines().next().unwrap_or_default().to_string()
    })
}

/// A number as serde_json holds it: an integer when it is one and fits, a float
/// otherwise. (sonic-rs reads `-0` as the float 0.0, serde_json as -0.0.)
pub fn number(value: &sonic_rs::Number) -> serde_json::Number {
    if let Some(n) = value.as_u64() {
        serde_json::Number::from(n)
    } else if let Some(n) = value.as_i64() {
        serde_json::Number::from(n)
    } else {
        // A parsed number is finite, which is all `from_f64` asks.
        value
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .unwrap_or_else(|| serde_json::Number::from(0))
    }
}

/// A value as attribute text: strings as they are, numbers and booleans as their JSON
/// text, objects and arrays as their compact JSON, null as nothing. (It takes the value's
/// `as_ref`, which costs a few dozen instructions: callers make it once a value.)
pub fn text(value: ValueRef<'_>) -> Cow<'_, str> {
    // Writing a parsed tree to a String cannot fail.
    match value {
        ValueRef::String(s) => Cow::Borrowed(s),
        ValueRef::Bool(true) => Cow::Borrowed("true"),
        ValueRef::Bool(false) => Cow::Borrowed("false"),
        ValueRef::Null => Cow::Borrowed(""),
        ValueRef::Number(n) => Cow::Owned(number(&n).to_string()),
        ValueRef::Array(items) => Cow::Owned(serde_json::to_string(items).unwrap_or_default()),
        ValueRef::Object(members) => Cow::Owned(serde_json::to_string(members).unwrap_or_default()),
    }
}

/// Writes `text` as a JSON string: copied as it is when nothing in it needs an escape
/// (nearly all text), else by serde_json.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    if text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(out, text);
    } else {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// Writes a number (an integer, or a [`number`]) as serde_json writes it.
pub fn write_number(out: &mut Vec<u8>, n: impl serde::Serialize) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(out, &n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_become_their_compact_json() {
        let input = r#" { "c" : [ 1 , "x\n" , 1E300, 2.50 ] } "#;
        let theirs: serde_json::Value = serde_json::from_str(input).unwrap();
        assert_eq!(
            text(parse(input.as_bytes()).unwrap().as_ref()),
            theirs.to_string()
        );
    }

    #[test]
    fn numbers_read_and_write_as_serde_json_has_them() {
        for text_ in [
            "0",
            "7",
            "-3",
            "1.50",
            "1e3",
            "123456789012345678",
            "1234567890123456789",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "2.5E-3",
            "1E300",
            "1E-320",
        ] {
            let theirs: serde_json::Number = serde_json::from_str(text_).unwrap();
            let ours = parse(text_.as_bytes()).unwrap();
            let ValueRef::Number(n) = ours.as_ref() else {
                panic!("{text_} is not a number");
            };
            assert_eq!(number(&n), theirs, "{text_}");
            assert_eq!(text(ours.as_ref()), theirs.to_string(), "{text_}");
        }
        // The one difference found: the sign of a negative zero.
        assert_eq!(text(parse(b"-0").unwrap().as_ref()), "0.0");
    }

    #[test]
    fn serde_json_limits_still_apply() {
        let deep = "[".repeat(300) + &"]".repeat(300);
        assert!(
            parse(deep.as_bytes())
                .unwrap_err()
                .contains("recursion limit")
        );
        let wide = "[".to_string() + &"[],".repeat(300) + "[]]";
        assert!(parse(wide.as_bytes()).is_ok(), "many brackets, shallow");
        let error = parse(b"\"\xff\"").unwrap_err();
        assert!(!error.contains('\n'), "{error}");
        assert!(parse(b"{} x").is_err());
        assert!(parse(b"1e400").is_err());
        assert!(parse(br#""\ud800""#).is_err());
    }

    #[test]
    fn written_text_is_what_serde_json_writes() {
        let mut out = Vec::new();
        write_str(&mut out, "quote \" é \u{1}");
        write_number(&mut out, -42);
        assert_eq!(String::from_utf8(out).unwrap(), r#""quote \" é \u0001"-42"#);
    }
}
