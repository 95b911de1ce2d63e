//! Writing compact JSON text straight into a buffer: [`ObjectWriter`] member by member,
//! [`write_str`] copying strings that need no escape as they are.

use super::scan::first_special;

/// Writes `text` as a JSON string. Text without quotes, backslashes or control
/// characters (nearly all of it) is copied as it is; anything else goes through
/// serde_json's escaping.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    if first_special(text.as_bytes()).is_some() {
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
    fn written_text_is_what_serde_json_writes() {
        for text in [
            "plain",
            "",
            "é and 😀",
            "quote \" back \\ slash",
            "ctl \u{1}\n\t",
            "\u{7f}",
            "a longer plain string, past one word",
            "a longer string with a \"quote\" past one word",
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
}
