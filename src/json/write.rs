//! Writing JSON strings straight into a buffer, copying those that need no escape as
//! they are. The batch around them is written by [`mapping`](crate::mapping).

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

/// Writes `n` in decimal, as `write!` would, without the formatting machinery (this runs
/// once per event, and `core::fmt` showed in profiles).
pub fn write_i64(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_written_as_write_writes_them() {
        for n in [0, 7, -7, 10, 1_764_000_000_123, -1_000, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            write_i64(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
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
    }
}
