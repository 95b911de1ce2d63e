//! Reading an event once for exactly the paths that are used. The paths the field
//! assignments and the event's checks name are compiled, when the file loads, into a
//! [`PathTree`] whose nodes are numbered in pre-order; [`read`] goes over a record's bytes
//! once, checking all of it as JSON, and notes in one [`Slot`] per node where that node's
//! value stands and what kind it is. Nothing is built for the rest of the text.
//!
//! It accepts a subset of what [`Json::parse`](crate::json::Json::parse) accepts and
//! gives up ([`GaveUp`]) on the rest: member names with escapes on a used path, and
//! anything the tree parser would refuse. The caller then takes the tree path, which
//! gives the same answer or the exact error. Giving up is never wrong, only slower.

use crate::json::parse::MAX_DEPTH;
use crate::json::scan::first_special_or_non_ascii;
use crate::json::{Number, is_short_integer_text};

/// One node of the tree: a path segment below its parent.
#[derive(Debug, Clone)]
struct Node {
    name: Box<[u8]>,
    /// The name's first eight bytes ([`name_key`]): most names differ there, so most
    /// children are passed over with one comparison.
    key: u64,
    /// The segment as an array index, read as [`descend`](crate::event::descend) reads it.
    index: Option<usize>,
    /// One past the last node of this node's subtree.
    end: usize,
}

/// The used paths as a tree in pre-order: node 0 is the event itself, a node's subtree is
/// the nodes up to its `end`, and a node's number is its slot.
#[derive(Debug, Clone)]
pub(super) struct PathTree {
    nodes: Vec<Node>,
}

/// A tree under construction.
#[derive(Default)]
struct Branch {
    children: Vec<(String, Branch)>,
}

impl Branch {
    fn insert(&mut self, segments: &[String]) {
        let Some((first, rest)) = segments.split_first() else {
            return;
        };
        let child = match self.children.iter().position(|(name, _)| name == first) {
            Some(at) => &mut self.children[at].1,
            None => {
                self.children.push((first.clone(), Branch::default()));
                &mut self.children.last_mut().expect("just pushed").1
            }
        };
        child.insert(rest);
    }

    /// Appends this branch in pre-order; false when two children would take the same
    /// array item (`0` and `00`), which one slot per node cannot hold.
    fn flatten(&self, name: &str, nodes: &mut Vec<Node>) -> bool {
        let at = nodes.len();
        nodes.push(Node {
            name: name.as_bytes().into(),
            key: name_key(name.as_bytes(), 0, name.len()),
            index: name.parse::<usize>().ok(),
            end: 0,
        });
        let mut indexes: Vec<usize> = self
            .children
            .iter()
            .filter_map(|(name, _)| name.parse().ok())
            .collect();
        indexes.sort_unstable();
        if indexes.windows(2).any(|pair| pair[0] == pair[1]) {
            return false;
        }
        for (name, child) in &self.children {
            if !child.flatten(name, nodes) {
                return false;
            }
        }
        nodes[at].end = nodes.len();
        true
    }
}

impl PathTree {
    /// The tree of `paths` (each split into segments); `None` when it cannot be read in
    /// one pass (see [`Branch::flatten`]).
    pub(super) fn new<'p>(paths: impl IntoIterator<Item = &'p [String]>) -> Option<PathTree> {
        let mut root = Branch::default();
        for path in paths {
            root.insert(path);
        }
        let mut nodes = Vec::new();
        root.flatten("", &mut nodes).then_some(PathTree { nodes })
    }

    /// The slot of `path`, which must have been one of the paths the tree was built from.
    pub(super) fn slot(&self, path: &[String]) -> usize {
        path.iter().fold(0, |node, segment| {
            self.children(node)
                .find(|&child| *self.nodes[child].name == *segment.as_bytes())
                .expect("the tree holds every path it was built from")
        })
    }

    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    fn children(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        let end = self.nodes[node].end;
        let mut next = node + 1;
        std::iter::from_fn(move || {
            let child = next;
            next = self.nodes.get(child).filter(|_| child < end)?.end;
            Some(child)
        })
    }

    fn has_children(&self, node: usize) -> bool {
        self.nodes[node].end > node + 1
    }

    /// The child called `name`, whose [`name_key`] is `key`.
    fn child_named(&self, node: usize, name: &[u8], key: u64) -> Option<usize> {
        self.children(node).find(|&child| {
            let candidate = &self.nodes[child];
            // Past the key, byte by byte: a call to `memcmp` for a few bytes showed.
            candidate.key == key
                && candidate.name.len() == name.len()
                && candidate.name[8.min(name.len())..]
                    .iter()
                    .zip(&name[8.min(name.len())..])
                    .all(|(a, b)| a == b)
        })
    }

    fn child_at(&self, node: usize, index: usize) -> Option<usize> {
        self.children(node)
            .find(|&child| self.nodes[child].index == Some(index))
    }
}

/// The first eight bytes of the name at `start..start + len` of `text` as a number
/// (little-endian, zero past the name's end). Read as one word where the text goes on
/// for eight bytes, as it nearly always does after a member's name.
fn name_key(text: &[u8], start: usize, len: usize) -> u64 {
    let kept = len.min(8);
    match text.get(start..start + 8) {
        Some(word) => {
            let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            match kept {
                8 => word,
                _ => word & ((1u64 << (8 * kept)) - 1),
            }
        }
        None => text[start..start + kept]
            .iter()
            .rev()
            .fold(0, |key, &byte| key << 8 | u64::from(byte)),
    }
}

/// What a slot's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Not in the event (or under a parent that is not an object or array).
    Absent,
    Null,
    False,
    True,
    /// An integer of up to 18 digits: it reads back as it was written.
    ShortInteger,
    /// Any other number.
    Number,
    /// A string without escapes: its bytes are its text.
    Text,
    /// A string with escapes.
    Escaped,
    Object,
    Array,
}

/// Where a used value stands in the record's text: for strings the bytes between the
/// quotes, for the rest the whole value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot {
    pub kind: Kind,
    pub start: u32,
    pub end: u32,
}

impl Slot {
    pub const ABSENT: Slot = Slot {
        kind: Kind::Absent,
        start: 0,
        end: 0,
    };
}

/// The text is not one the single pass reads; the tree parser decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct GaveUp;

/// Reads `text` (one JSON object) into `slots` (one per node of `tree`, all
/// [`Slot::ABSENT`] on entry), checking the whole of it as JSON, UTF-8 included: when it
/// returns `Ok`, `text` is UTF-8 (outside strings the grammar takes only ASCII, and
/// inside them every run of other bytes is checked).
pub(super) fn read(text: &[u8], tree: &PathTree, slots: &mut [Slot]) -> Result<(), GaveUp> {
    if text.len() > u32::MAX as usize {
        return Err(GaveUp);
    }
    let mut reader = Reader {
        bytes: text,
        pos: 0,
        depth: 0,
        tree,
        slots,
    };
    reader.skip_whitespace();
    if reader.peek() != Some(b'{') {
        return Err(GaveUp);
    }
    reader.value(Some(0))?;
    reader.skip_whitespace();
    if reader.pos != reader.bytes.len() {
        return Err(GaveUp);
    }
    Ok(())
}

struct Reader<'t, 's> {
    bytes: &'t [u8],
    pos: usize,
    depth: usize,
    tree: &'t PathTree,
    slots: &'s mut [Slot],
}

impl Reader<'_, '_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let next = self.peek() == Some(byte);
        self.pos += usize::from(next);
        next
    }

    fn expect(&mut self, byte: u8) -> Result<(), GaveUp> {
        if self.eat(byte) { Ok(()) } else { Err(GaveUp) }
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    /// One value; noted in `node`'s slot when it is on a used path.
    fn value(&mut self, node: Option<usize>) -> Result<(), GaveUp> {
        let parent = node.filter(|&node| self.tree.has_children(node));
        if let Some(node) = parent.filter(|&node| self.slots[node].kind != Kind::Absent) {
            // A repeated name counts last: what an earlier value filled in below is gone.
            // (The first time, nothing below is filled in yet.)
            self.slots[node + 1..self.tree.nodes[node].end].fill(Slot::ABSENT);
        }
        let mut start = self.pos;
        let kind = match self.peek().ok_or(GaveUp)? {
            b'{' => {
                self.object(parent)?;
                Kind::Object
            }
            b'[' => {
                self.array(parent)?;
                Kind::Array
            }
            b'"' => {
                self.pos += 1;
                start = self.pos;
                let plain = self.string()?;
                return self.note(node, plain_or_escaped(plain), start, self.pos - 1);
            }
            b't' => self.literal(b"true", Kind::True)?,
            b'f' => self.literal(b"false", Kind::False)?,
            b'n' => self.literal(b"null", Kind::Null)?,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return Err(GaveUp),
        };
        self.note(node, kind, start, self.pos)
    }

    fn note(
        &mut self,
        node: Option<usize>,
        kind: Kind,
        start: usize,
        end: usize,
    ) -> Result<(), GaveUp> {
        if let Some(node) = node {
            self.slots[node] = Slot {
                kind,
                start: start as u32,
                end: end as u32,
            };
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8], kind: Kind) -> Result<Kind, GaveUp> {
        if !self.bytes[self.pos..].starts_with(word) {
            return Err(GaveUp);
        }
        self.pos += word.len();
        Ok(kind)
    }

    fn enter(&mut self) -> Result<(), GaveUp> {
        if self.depth == MAX_DEPTH {
            return Err(GaveUp);
        }
        self.depth += 1;
        self.pos += 1;
        self.skip_whitespace();
        Ok(())
    }

    /// After a member or item: true at `close`, false after a comma.
    fn closes(&mut self, close: u8) -> Result<bool, GaveUp> {
        self.skip_whitespace();
        if self.eat(close) {
            return Ok(true);
        }
        self.expect(b',')?;
        self.skip_whitespace();
        Ok(false)
    }

    /// An object; its members are matched against `parent`'s children when it has any.
    fn object(&mut self, parent: Option<usize>) -> Result<(), GaveUp> {
        self.enter()?;
        if !self.eat(b'}') {
            loop {
                self.expect(b'"')?;
                let start = self.pos;
                let plain = self.string()?;
                let child = match parent {
                    // An escaped name could still match once decoded.
                    Some(_) if !plain => return Err(GaveUp),
                    Some(node) => {
                        let len = self.pos - 1 - start;
                        let key = name_key(self.bytes, start, len);
                        self.tree
                            .child_named(node, &self.bytes[start..self.pos - 1], key)
                    }
                    None => None,
                };
                self.skip_whitespace();
                self.expect(b':')?;
                self.skip_whitespace();
                self.value(child)?;
                if self.closes(b'}')? {
                    break;
                }
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// An array; its items are matched against `parent`'s children by index.
    fn array(&mut self, parent: Option<usize>) -> Result<(), GaveUp> {
        self.enter()?;
        if !self.eat(b']') {
            let mut index = 0;
            loop {
                let child = parent.and_then(|node| self.tree.child_at(node, index));
                self.value(child)?;
                index += 1;
                if self.closes(b']')? {
                    break;
                }
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// The rest of a string whose opening quote is taken; true when it has no escapes.
    /// Escapes are checked as the tree parser checks them.
    #[inline(always)]
    fn string(&mut self) -> Result<bool, GaveUp> {
        let mut plain = true;
        loop {
            let rest = &self.bytes[self.pos..];
            let at = self.pos + first_special_or_non_ascii(rest).ok_or(GaveUp)?;
            match self.bytes[at] {
                b'"' => {
                    self.pos = at + 1;
                    return Ok(plain);
                }
                b'\\' => {
                    plain = false;
                    self.pos = self.escape(at + 1)?;
                }
                byte if !byte.is_ascii() => self.pos = self.utf8(at)?,
                _ => return Err(GaveUp),
            }
        }
    }

    /// Checks the run of bytes over 0x7f from `at` as UTF-8; returns where it ends. A run
    /// of whole characters is UTF-8 exactly when the whole text is, as an ASCII byte
    /// never stands inside a character.
    fn utf8(&self, at: usize) -> Result<usize, GaveUp> {
        let run = self.bytes[at..]
            .iter()
            .take_while(|b| !b.is_ascii())
            .count();
        match std::str::from_utf8(&self.bytes[at..at + run]) {
            Ok(_) => Ok(at + run),
            Err(_) => Err(GaveUp),
        }
    }

    /// Checks the escape after the backslash at `at - 1`; returns where the string goes on.
    fn escape(&self, at: usize) -> Result<usize, GaveUp> {
        match self.bytes.get(at).ok_or(GaveUp)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(at + 1),
            b'u' => match self.hex4(at + 1)? {
                0xD800..=0xDBFF => {
                    let low = at + 5;
                    if self.bytes.get(low..low + 2) != Some(b"\\u") {
                        return Err(GaveUp);
                    }
                    match self.hex4(low + 2)? {
                        0xDC00..=0xDFFF => Ok(low + 6),
                        _ => Err(GaveUp),
                    }
                }
                0xDC00..=0xDFFF => Err(GaveUp),
                _ => Ok(at + 5),
            },
            _ => Err(GaveUp),
        }
    }

    fn hex4(&self, at: usize) -> Result<u32, GaveUp> {
        let digits = self.bytes.get(at..at + 4).ok_or(GaveUp)?;
        digits.iter().try_fold(0u32, |code, &digit| {
            let value = (digit as char).to_digit(16).ok_or(GaveUp)?;
            Ok(code * 16 + value)
        })
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, within serde_json's range.
    fn number(&mut self) -> Result<Kind, GaveUp> {
        let start = self.pos;
        self.eat(b'-');
        if !self.eat(b'0') && self.digits() == 0 {
            return Err(GaveUp);
        }
        if self.eat(b'.') && self.digits() == 0 {
            return Err(GaveUp);
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return Err(GaveUp);
            }
        }
        let text = &self.bytes[start..self.pos];
        if is_short_integer_text(text) {
            return Ok(Kind::ShortInteger);
        }
        // The bytes are ASCII digits and signs, so this cannot fail.
        let text = std::str::from_utf8(text).map_err(|_| GaveUp)?;
        if Number::from_checked_text(text).in_range() {
            Ok(Kind::Number)
        } else {
            Err(GaveUp)
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }
}

fn plain_or_escaped(plain: bool) -> Kind {
    if plain { Kind::Text } else { Kind::Escaped }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(list: &[&str]) -> Vec<Vec<String>> {
        list.iter()
            .map(|p| p.split('.').map(String::from).collect())
            .collect()
    }

    #[test]
    fn name_keys_read_as_a_word_or_byte_by_byte_agree() {
        let text = b"\"customer_identity\":1}";
        for len in 0..=17 {
            let byte_by_byte = text[1..1 + len.min(8)]
                .iter()
                .rev()
                .fold(0u64, |key, &byte| key << 8 | u64::from(byte));
            assert_eq!(name_key(text, 1, len), byte_by_byte, "length {len}");
        }
        // At the end of the text there is no word to read.
        assert_eq!(
            name_key(b"ab", 0, 2),
            u64::from_le_bytes(*b"ab\0\0\0\0\0\0")
        );
    }

    #[test]
    fn children_sharing_eight_bytes_are_told_apart() {
        let list = paths(&["customer.id", "customer_id", "customer_ix", "customerX"]);
        let tree = PathTree::new(list.iter().map(Vec::as_slice)).unwrap();
        for path in &list {
            let node = tree.slot(&path[..1]);
            let name = path[0].as_bytes();
            assert_eq!(
                tree.child_named(0, name, name_key(name, 0, name.len())),
                Some(node),
                "{path:?}"
            );
        }
        let other = b"customer_iy";
        assert_eq!(
            tree.child_named(0, other, name_key(other, 0, other.len())),
            None
        );
    }
}
