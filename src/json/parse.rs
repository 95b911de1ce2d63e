//! The parser behind [`Json::parse`]: one pass over the record's bytes into the borrowed
//! tree. It accepts exactly what serde_json accepts (RFC 8259, at most 127 levels of
//! nesting, numbers within f64's range, paired surrogates in `\u` escapes), which a
//! differential fuzz target (`tests/fuzz`, `json_parse`) and the tests below check; it is here
//! because serde_json's visitor plumbing was the largest cost per event
//! (docs/benchmarks-history.md). The text is checked as UTF-8 once, up front; strings without
//! escapes are slices of it, and an object of up to eight members is allocated once.

use std::borrow::Cow;
use std::fmt;

use super::scan::first_special;
use super::{Json, Number, Object};

/// Containers nested deeper than this are refused, as serde_json refuses them.
pub const MAX_DEPTH: usize = 127;

/// Why a text is not JSON, and the byte offset where that became clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub problem: &'static str,
    pub at: usize,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.problem, self.at)
    }
}

impl std::error::Error for ParseError {}

pub(super) fn parse(bytes: &[u8]) -> Result<Json<'_>, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ParseError {
        problem: "invalid UTF-8",
        at: e.valid_up_to(),
    })?;
    let mut parser = Parser {
        text,
        pos: 0,
        depth: 0,
    };
    parser.skip_whitespace();
    let value = parser.value()?;
    parser.skip_whitespace();
    if parser.pos != bytes.len() {
        return Err(parser.error("trailing characters after the JSON value"));
    }
    Ok(value)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
}

/// Room for the members of most event objects, so that one allocation holds them.
const MEMBERS_CAPACITY: usize = 8;

impl<'a> Parser<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    fn error(&self, problem: &'static str) -> ParseError {
        self.error_at(self.pos, problem)
    }

    fn error_at(&self, at: usize, problem: &'static str) -> ParseError {
        ParseError { problem, at }
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    /// Takes `byte` if it comes next.
    fn eat(&mut self, byte: u8) -> bool {
        let next = self.peek() == Some(byte);
        self.pos += usize::from(next);
        next
    }

    fn value(&mut self) -> Result<Json<'a>, ParseError> {
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => {
                self.pos += 1;
                self.string().map(Json::String)
            }
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number().map(Json::Number),
            Some(_) => Err(self.error("expected a value")),
            None => Err(self.error("unexpected end of the text, expected a value")),
        }
    }

    fn literal(&mut self, word: &'static str, value: Json<'a>) -> Result<Json<'a>, ParseError> {
        if self.bytes()[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("expected a value"))
        }
    }

    /// Steps into an object or array past its opening bracket.
    fn enter(&mut self) -> Result<(), ParseError> {
        if self.depth == MAX_DEPTH {
            return Err(self.error("nested more than 127 levels deep"));
        }
        self.depth += 1;
        self.pos += 1;
        self.skip_whitespace();
        Ok(())
    }

    fn object(&mut self) -> Result<Json<'a>, ParseError> {
        self.enter()?;
        let mut members = Vec::with_capacity(MEMBERS_CAPACITY);
        if !self.eat(b'}') {
            loop {
                if !self.eat(b'"') {
                    return Err(self.error("expected a member name in double quotes"));
                }
                let name = self.string()?;
                self.skip_whitespace();
                if !self.eat(b':') {
                    return Err(self.error("expected `:` after a member name"));
                }
                self.skip_whitespace();
                let value = self.value()?;
                members.push((name, value));
                if self.closes(b'}', "expected `,` or `}` after an object member")? {
                    break;
                }
            }
        }
        self.depth -= 1;
        Ok(Json::Object(Object(members)))
    }

    fn array(&mut self) -> Result<Json<'a>, ParseError> {
        self.enter()?;
        let mut items = Vec::new();
        if !self.eat(b']') {
            loop {
                let item = self.value()?;
                items.push(item);
                if self.closes(b']', "expected `,` or `]` after an array item")? {
                    break;
                }
            }
        }
        self.depth -= 1;
        Ok(Json::Array(items))
    }

    /// After a member or item: true when `close` ends the container, false after the
    /// comma before the next one, `problem` for anything else.
    fn closes(&mut self, close: u8, problem: &'static str) -> Result<bool, ParseError> {
        self.skip_whitespace();
        if self.eat(close) {
            return Ok(true);
        }
        if !self.eat(b',') {
            return Err(self.error(problem));
        }
        self.skip_whitespace();
        Ok(false)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, kept as written.
    fn number(&mut self) -> Result<Number<'a>, ParseError> {
        let start = self.pos;
        self.eat(b'-');
        if !self.eat(b'0') && self.digits() == 0 {
            return Err(self.error("expected a digit"));
        }
        if self.eat(b'.') && self.digits() == 0 {
            return Err(self.error("expected a digit after the decimal point"));
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return Err(self.error("expected a digit in the exponent"));
            }
        }
        let number = Number(&self.text[start..self.pos]);
        if !number.in_range() {
            return Err(self.error_at(start, "number out of range"));
        }
        Ok(number)
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// The rest of a string whose opening quote is taken.
    fn string(&mut self) -> Result<Cow<'a, str>, ParseError> {
        let start = self.pos;
        let end = self.next_special(start)?;
        if self.bytes()[end] == b'"' {
            self.pos = end + 1;
            return Ok(Cow::Borrowed(&self.text[start..end]));
        }
        let mut text = String::with_capacity(end - start + 16);
        let mut at = end;
        let mut plain_from = start;
        loop {
            text.push_str(&self.text[plain_from..at]);
            match self.bytes()[at] {
                b'"' => {
                    self.pos = at + 1;
                    return Ok(Cow::Owned(text));
                }
                b'\\' => plain_from = self.escape(at + 1, &mut text)?,
                _ => return Err(self.error_at(at, "control character in a string")),
            }
            at = self.next_special(plain_from)?;
        }
    }

    /// The next `"`, `\` or control character from `from`.
    fn next_special(&self, from: usize) -> Result<usize, ParseError> {
        match first_special(&self.bytes()[from..]) {
            Some(offset) => Ok(from + offset),
            None => Err(self.error_at(self.bytes().len(), "unterminated string")),
        }
    }

    /// Decodes the escape after the backslash at `at - 1`; returns where the string goes on.
    fn escape(&self, at: usize, text: &mut String) -> Result<usize, ParseError> {
        let decoded = match self.bytes().get(at) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => return self.unicode_escape(at + 1, text),
            _ => return Err(self.error_at(at, "invalid escape")),
        };
        text.push(decoded);
        Ok(at + 1)
    }

    /// `\uXXXX`, or a surrogate pair `\uD8xx\uDCxx`, from the first hex digit at `at`.
    fn unicode_escape(&self, at: usize, text: &mut String) -> Result<usize, ParseError> {
        let first = self.hex4(at)?;
        let (code, end) = match first {
            0xD800..=0xDBFF => {
                let low_at = at + 4;
                if self.bytes().get(low_at..low_at + 2) != Some(b"\\u") {
                    return Err(self.error_at(low_at, "unpaired surrogate in a \\u escape"));
                }
                let second = self.hex4(low_at + 2)?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error_at(low_at, "unpaired surrogate in a \\u escape"));
                }
                (
                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00),
                    low_at + 6,
                )
            }
            0xDC00..=0xDFFF => {
                return Err(self.error_at(at, "unpaired surrogate in a \\u escape"));
            }
            _ => (first, at + 4),
        };
        let decoded =
            char::from_u32(code).ok_or_else(|| self.error_at(at, "invalid \\u escape"))?;
        text.push(decoded);
        Ok(end)
    }

    fn hex4(&self, at: usize) -> Result<u32, ParseError> {
        let digits = self
            .bytes()
            .get(at..at + 4)
            .ok_or_else(|| self.error_at(at, "unterminated \\u escape"))?;
        digits.iter().try_fold(0u32, |code, &b| {
            let digit = char::from(b)
                .to_digit(16)
                .ok_or_else(|| self.error_at(at, "invalid \\u escape"))?;
            Ok(code << 4 | digit)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The tree as serde_json's `Value`, to compare with what serde_json parses.
    fn to_value(json: &Json<'_>) -> Value {
        serde_json::to_value(json).expect("the tree serialises")
    }

    fn agrees_with_serde_json(text: &[u8]) {
        let ours = parse(text);
        let theirs = serde_json::from_slice::<Value>(text);
        match (&ours, &theirs) {
            (Ok(ours), Ok(theirs)) => assert_eq!(&to_value(ours), theirs, "{text:?}"),
            (Err(_), Err(_)) => {}
            _ => panic!(
                "{:?}: ours {:?}, serde_json {:?}",
                String::from_utf8_lossy(text),
                ours.map(|j| to_value(&j)),
                theirs
            ),
        }
    }

    #[test]
    fn accepts_and_refuses_what_serde_json_does() {
        let cases: &[&str] = &[
            r#"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#,
            " \t\r\n{ \"a\" : [ 1 , 2 ] } \n",
            "{}",
            "[]",
            "[{},[],{\"a\":{}}]",
            "0",
            "-0",
            "-0.0",
            "1.5e3",
            "1E+2",
            "2e-3",
            "123456789012345678",
            "1234567890123456789",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "1e308",
            "1e309",
            "-1e400",
            "1e-400",
            "01",
            "-",
            "1.",
            ".5",
            "+1",
            "1e",
            "1e+",
            "0x10",
            "\"plain\"",
            r#""esc \" \\ \/ \b \f \n \r \t""#,
            r#""\u00e9\u0041""#,
            r#""\ud83d\ude00""#,
            r#""\ud83d""#,
            r#""\ud83dx""#,
            r#""\ud83d\u0041""#,
            r#""\ude00""#,
            r#""\u12""#,
            r#""\u12g4""#,
            r#""\x""#,
            "\"tab\tinside\"",
            "\"new\nline\"",
            "\"del \u{7f} ok\"",
            "\"unterminated",
            "\"é 😀\"",
            "tru",
            "true",
            "nul",
            "nullx",
            "{\"a\":1,}",
            "[1,]",
            "[1 2]",
            "{\"a\" 1}",
            "{1:2}",
            "{\"a\":1}}",
            "",
            "   ",
            "{\"a\":1} x",
            r#"{"a":1,"a":2}"#,
        ];
        for case in cases {
            agrees_with_serde_json(case.as_bytes());
        }
        for bytes in [
            &b"\"\xff\""[..],
            b"\"\xc3\"",
            b"\xef\xbb\xbf{}",
            b"{\"a\":\"\x00\"}",
        ] {
            agrees_with_serde_json(bytes);
        }
    }

    #[test]
    fn nesting_stops_where_serde_json_stops() {
        for depth in [126, 127, 128, 129] {
            let arrays = "[".repeat(depth) + &"]".repeat(depth);
            agrees_with_serde_json(arrays.as_bytes());
            let objects = "{\"a\":".repeat(depth) + "1" + &"}".repeat(depth);
            agrees_with_serde_json(objects.as_bytes());
        }
        assert!(parse(("[".repeat(127) + &"]".repeat(127)).as_bytes()).is_ok());
    }

    #[test]
    fn errors_say_what_and_where() {
        let error = parse(br#"{"a" 1}"#).unwrap_err();
        assert_eq!(
            error.to_string(),
            "expected `:` after a member name at byte 5"
        );
        assert_eq!(
            parse(b"\"a\xffb\"").unwrap_err().to_string(),
            "invalid UTF-8 at byte 2"
        );
    }

    #[test]
    fn plain_strings_borrow_and_containers_keep_their_order() {
        let Json::Object(object) = parse(br#"{"b":"x","a":["y","z\n"]}"#).unwrap() else {
            panic!("not an object");
        };
        let names: Vec<&str> = object.0.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(names, ["b", "a"]);
        assert!(matches!(
            object.get("b"),
            Some(Json::String(Cow::Borrowed("x")))
        ));
        let Some(Json::Array(items)) = object.get("a") else {
            panic!("not an array");
        };
        assert!(matches!(items[1], Json::String(Cow::Owned(ref s)) if s == "z\n"));
    }
}
