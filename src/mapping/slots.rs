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
    /// The children by name key ([`ChildTable`]); empty for a leaf, or when two children
    /// share a key and are found by walking the siblings instead.
    by_key: ChildTable,
}

/// A node's children placed by their name key, so that a member's name is matched with
/// one multiplication and one look, however many children there are: entry `h(key)` holds
/// the child's number plus one, 0 for none. Built only when every child gets an entry of
/// its own.
#[derive(Debug, Clone, Default)]
struct ChildTable {
    entries: Box<[u32]>,
    /// The table has `1 << bits` entries.
    bits: u32,
}

impl ChildTable {
    /// Fibonacci hashing: the key times 2^64 over the golden ratio, its top `bits` bits.
    const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

    fn place(key: u64, bits: u32) -> usize {
        (key.wrapping_mul(Self::MULTIPLIER) >> (64 - bits)) as usize
    }

    /// A table for `children` (number and key each) in the fewest bits from twice their
    /// count up to 1,024 entries where no two collide; `None` when there is none.
    fn new(children: &[(usize, u64)]) -> Option<ChildTable> {
        let least = (children.len() * 2)
            .next_power_of_two()
            .trailing_zeros()
            .max(1);
        (least..=10).find_map(|bits| {
            let mut entries = vec![0u32; 1 << bits].into_boxed_slice();
            for &(child, key) in children {
                let entry = &mut entries[Self::place(key, bits)];
                if *entry != 0 {
                    return None;
                }
                *entry = u32::try_from(child + 1).ok()?;
            }
            Some(ChildTable { entries, bits })
        })
    }

    /// The child whose key may be `key`; the caller compares the names.
    fn candidate(&self, key: u64) -> Option<usize> {
        match *self.entries.get(Self::place(key, self.bits))? {
            0 => None,
            entry => Some(entry as usize - 1),
        }
    }
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
            by_key: ChildTable::default(),
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
        if !root.flatten("", &mut nodes) {
            return None;
        }
        let mut tree = PathTree { nodes };
        for node in 0..tree.nodes.len() {
            let children: Vec<(usize, u64)> = tree
                .children(node)
                .map(|child| (child, tree.nodes[child].key))
                .collect();
            if !children.is_empty() {
                tree.nodes[node].by_key = ChildTable::new(&children).unwrap_or_default();
            }
        }
        Some(tree)
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
        let table = &self.nodes[node].by_key;
        if table.entries.is_empty() {
            return self
                .children(node)
                .find(|&child| self.is_named(child, name, key));
        }
        table
            .candidate(key)
            .filter(|&child| self.is_named(child, name, key))
    }

    fn is_named(&self, node: usize, name: &[u8], key: u64) -> bool {
        let candidate = &self.nodes[node];
        // Past the key, byte by byte: a call to `memcmp` for a few bytes showed.
        candidate.key == key
            && candidate.name.len() == name.len()
            && candidate.name[8.min(name.len())..]
                .iter()
                .zip(&name[8.min(name.len())..])
                .all(|(a, b)| a == b)
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
        depth: 0,
        tree,
        slots,
    };
    let at = skip_whitespace(text, 0);
    if text.get(at) != Some(&b'{') {
        return Err(GaveUp);
    }
    let end = reader.value(at, Some(0))?;
    if skip_whitespace(text, end) != text.len() {
        return Err(GaveUp);
    }
    Ok(())
}

/// The reader's position in the text is passed along and returned by every step rather
/// than kept in the reader: in a register, not in memory that each step would store to
/// and load from again (which `perf annotate` showed as most of the reading's time).
struct Reader<'t, 's> {
    bytes: &'t [u8],
    depth: usize,
    tree: &'t PathTree,
    slots: &'s mut [Slot],
}

/// Where the bytes after `at` stop being JSON whitespace.
#[inline(always)]
fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = bytes.get(at) {
        at += 1;
    }
    at
}

impl Reader<'_, '_> {
    /// One value starting at `at`; noted in `node`'s slot when it is on a used path.
    /// Returns where the value ends.
    fn value(&mut self, at: usize, node: Option<usize>) -> Result<usize, GaveUp> {
        let parent = node.filter(|&node| self.tree.has_children(node));
        if let Some(node) = parent.filter(|&node| self.slots[node].kind != Kind::Absent) {
            // A repeated name counts last: what an earlier value filled in below is gone.
            // (The first time, nothing below is filled in yet.)
            self.slots[node + 1..self.tree.nodes[node].end].fill(Slot::ABSENT);
        }
        let (kind, end) = match *self.bytes.get(at).ok_or(GaveUp)? {
            b'{' => (Kind::Object, self.object(at, parent)?),
            b'[' => (Kind::Array, self.array(at, parent)?),
            b'"' => {
                let (end, plain) = self.string(at + 1)?;
                self.note(node, plain_or_escaped(plain), at + 1, end - 1);
                return Ok(end);
            }
            b't' => (Kind::True, self.literal(at, b"true")?),
            b'f' => (Kind::False, self.literal(at, b"false")?),
            b'n' => (Kind::Null, self.literal(at, b"null")?),
            b'-' | b'0'..=b'9' => self.number(at)?,
            _ => return Err(GaveUp),
        };
        self.note(node, kind, at, end);
        Ok(end)
    }

    fn note(&mut self, node: Option<usize>, kind: Kind, start: usize, end: usize) {
        if let Some(node) = node {
            self.slots[node] = Slot {
                kind,
                start: start as u32,
                end: end as u32,
            };
        }
    }

    fn literal(&self, at: usize, word: &[u8]) -> Result<usize, GaveUp> {
        if !self.bytes[at..].starts_with(word) {
            return Err(GaveUp);
        }
        Ok(at + word.len())
    }

    /// Past the opening bracket at `at` and the whitespace after it, one level deeper.
    fn enter(&mut self, at: usize) -> Result<usize, GaveUp> {
        if self.depth == MAX_DEPTH {
            return Err(GaveUp);
        }
        self.depth += 1;
        Ok(skip_whitespace(self.bytes, at + 1))
    }

    /// After a member or item ending at `at`: where the next one starts and false after
    /// a comma, or where the container ends and true after `close`.
    #[inline(always)]
    fn next_or_close(&self, at: usize, close: u8) -> Result<(usize, bool), GaveUp> {
        let at = skip_whitespace(self.bytes, at);
        match self.bytes.get(at) {
            Some(&byte) if byte == close => Ok((at + 1, true)),
            Some(b',') => Ok((skip_whitespace(self.bytes, at + 1), false)),
            _ => Err(GaveUp),
        }
    }

    /// The object whose `{` is at `at`; its members are matched against `parent`'s
    /// children when it has any. Returns where it ends.
    fn object(&mut self, at: usize, parent: Option<usize>) -> Result<usize, GaveUp> {
        let mut at = self.enter(at)?;
        if self.bytes.get(at) == Some(&b'}') {
            self.depth -= 1;
            return Ok(at + 1);
        }
        loop {
            if self.bytes.get(at) != Some(&b'"') {
                return Err(GaveUp);
            }
            let start = at + 1;
            let (end, plain) = self.string(start)?;
            let child = match parent {
                // An escaped name could still match once decoded.
                Some(_) if !plain => return Err(GaveUp),
                Some(node) => {
                    let name = &self.bytes[start..end - 1];
                    let key = name_key(self.bytes, start, name.len());
                    self.tree.child_named(node, name, key)
                }
                None => None,
            };
            at = skip_whitespace(self.bytes, end);
            if self.bytes.get(at) != Some(&b':') {
                return Err(GaveUp);
            }
            at = skip_whitespace(self.bytes, at + 1);
            at = self.value(at, child)?;
            let (next, closed) = self.next_or_close(at, b'}')?;
            at = next;
            if closed {
                break;
            }
        }
        self.depth -= 1;
        Ok(at)
    }

    /// The array whose `[` is at `at`; its items are matched against `parent`'s children
    /// by index. Returns where it ends.
    fn array(&mut self, at: usize, parent: Option<usize>) -> Result<usize, GaveUp> {
        let mut at = self.enter(at)?;
        if self.bytes.get(at) == Some(&b']') {
            self.depth -= 1;
            return Ok(at + 1);
        }
        let mut index = 0;
        loop {
            let child = parent.and_then(|node| self.tree.child_at(node, index));
            at = self.value(at, child)?;
            index += 1;
            let (next, closed) = self.next_or_close(at, b']')?;
            at = next;
            if closed {
                break;
            }
        }
        self.depth -= 1;
        Ok(at)
    }

    /// The rest of a string from `at`, just past its opening quote: where it ends (past
    /// the closing quote), and true when it has no escapes. Escapes are checked as the
    /// tree parser checks them.
    #[inline(always)]
    fn string(&self, mut at: usize) -> Result<(usize, bool), GaveUp> {
        let mut plain = true;
        loop {
            at += first_special_or_non_ascii(&self.bytes[at..]).ok_or(GaveUp)?;
            match self.bytes[at] {
                b'"' => return Ok((at + 1, plain)),
                b'\\' => {
                    plain = false;
                    at = self.escape(at + 1)?;
                }
                byte if !byte.is_ascii() => at = self.utf8(at)?,
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

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` from `at`, within
    /// serde_json's range: its kind and where it ends.
    fn number(&self, start: usize) -> Result<(Kind, usize), GaveUp> {
        let bytes = self.bytes;
        let mut at = start + usize::from(bytes.get(start) == Some(&b'-'));
        if bytes.get(at) == Some(&b'0') {
            at += 1;
        } else {
            at = digits(bytes, at).ok_or(GaveUp)?;
        }
        if bytes.get(at) == Some(&b'.') {
            at = digits(bytes, at + 1).ok_or(GaveUp)?;
        }
        if let Some(b'e' | b'E') = bytes.get(at) {
            at += 1;
            if let Some(b'+' | b'-') = bytes.get(at) {
                at += 1;
            }
            at = digits(bytes, at).ok_or(GaveUp)?;
        }
        let text = &bytes[start..at];
        if is_short_integer_text(text) {
            return Ok((Kind::ShortInteger, at));
        }
        // The bytes are ASCII digits and signs, so this cannot fail.
        let text = std::str::from_utf8(text).map_err(|_| GaveUp)?;
        if Number::from_checked_text(text).in_range() {
            Ok((Kind::Number, at))
        } else {
            Err(GaveUp)
        }
    }
}

/// Where a run of one or more digits from `at` ends; `None` when there is none.
fn digits(bytes: &[u8], at: usize) -> Option<usize> {
    let run = bytes
        .get(at..)?
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    (run > 0).then_some(at + run)
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
        // Two children with one key: no table, the siblings are walked.
        assert!(tree.nodes[0].by_key.entries.is_empty());
    }

    #[test]
    fn children_are_found_by_their_table_and_others_are_not() {
        let names: Vec<String> = (0..40).map(|i| format!("field_{i}")).collect();
        let list: Vec<Vec<String>> = names.iter().map(|n| vec![n.clone()]).collect();
        let tree = PathTree::new(list.iter().map(Vec::as_slice)).unwrap();
        assert!(!tree.nodes[0].by_key.entries.is_empty());
        for (path, name) in list.iter().zip(&names) {
            let name = name.as_bytes();
            let found = tree.child_named(0, name, name_key(name, 0, name.len()));
            assert_eq!(found, Some(tree.slot(path)), "{path:?}");
        }
        // Names of no child: some land on an empty entry, some on another child's.
        for i in 40..400 {
            let name = format!("field_{i}");
            let name = name.as_bytes();
            assert_eq!(
                tree.child_named(0, name, name_key(name, 0, name.len())),
                None
            );
        }
        // A leaf has no table; the root of a one-path tree has one of two entries.
        let single = paths(&["id"]);
        let tree = PathTree::new(single.iter().map(Vec::as_slice)).unwrap();
        assert!(tree.nodes[1].by_key.entries.is_empty());
        assert_eq!(tree.nodes[0].by_key.entries.len(), 2);
    }
}
