//! Finding the bytes a JSON string cannot hold as they are: `"`, `\` and the control
//! characters below 0x20. Both the parser (where a plain string ends) and the writer
//! (whether a string can be copied unescaped) ask this of every string, eight bytes at a
//! time; the single pass also asks where text stops being ASCII, to check UTF-8 itself.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` that is `"`, `\` or below 0x20. Bytes above the
/// lowest flagged one may be flagged wrongly (a borrow carries upwards); the lowest is
/// always right, which is all [`first_special`] reads.
fn special_bytes(word: u64) -> u64 {
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    quote | backslash | control
}

fn is_special(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The index of the first `"`, `\` or control character in `bytes`.
pub fn first_special(bytes: &[u8]) -> Option<usize> {
    first_flagged(bytes, special_bytes, is_special)
}

/// The index of the first `"`, `\`, control character or byte over 0x7f in `bytes`: for
/// a reader that checks UTF-8 itself, where text is not ASCII.
pub fn first_special_or_non_ascii(bytes: &[u8]) -> Option<usize> {
    // A byte's high bit is exact, so the lowest flag stays right.
    first_flagged(
        bytes,
        |word| special_bytes(word) | word & HIGHS,
        |b| is_special(b) || !b.is_ascii(),
    )
}

/// The index of the first byte `flags` (eight at a time, the lowest flag right) or, in
/// the last few bytes, `is_flagged` marks.
#[inline(always)]
fn first_flagged(
    bytes: &[u8],
    flags: impl Fn(u64) -> u64,
    is_flagged: impl Fn(u8) -> bool,
) -> Option<usize> {
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of eight"));
        let flagged = flags(word);
        if flagged != 0 {
            return Some(offset + (flagged.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| is_flagged(b))
        .map(|i| offset + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_same_byte_as_a_plain_search() {
        // Every byte value at every position of a 19-byte window, over a background of
        // bytes that are all special, all plain, or mixed (including bytes over 0x80).
        let backgrounds: [&dyn Fn(usize) -> u8; 3] = [
            &|_| b'a',
            &|i| [0xC3, 0xA9, b'x', 0x7f, 0xff, 0x20][i % 6],
            &|i| [b'"', b'\\', 0x1f, 0x00][i % 4],
        ];
        for background in backgrounds {
            for at in 0..19 {
                for b in 0..=255u8 {
                    let mut bytes: Vec<u8> = (0..19).map(background).collect();
                    bytes[at] = b;
                    let expected = bytes.iter().position(|&b| is_special(b));
                    assert_eq!(first_special(&bytes), expected, "{bytes:?}");
                    let expected = bytes.iter().position(|&b| is_special(b) || b >= 0x80);
                    assert_eq!(first_special_or_non_ascii(&bytes), expected, "{bytes:?}");
                }
            }
        }
        assert_eq!(first_special(b""), None);
        assert_eq!(first_special_or_non_ascii(b""), None);
    }
}
