//! Names interned for the life of the process: topic names and the actions the field
//! assignments define. A process meets few of them (the configured topics, the event
//! definitions), each is kept once, and a record names one by a copied pointer that is
//! compared and hashed by address, never by reading its bytes on another thread. Also
//! the hash the maps keyed by such names use.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

/// Every name interned so far.
static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

/// The one copy of `name` kept for the process (made on first use).
pub fn intern(name: &str) -> &'static str {
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(known) = names.iter().find(|known| **known == name) {
        return known;
    }
    let kept: &'static str = Box::leak(name.into());
    names.push(kept);
    kept
}

/// Hashing for maps keyed by names and by topic addresses and partitions: a word at a
/// time, multiply and rotate (rustc's `FxHasher`). The keys come from the configuration
/// or the process itself and such maps are built at start, so SipHash's resistance to
/// chosen keys buys nothing here, and it showed in profiles (the offset ledger's
/// partitions, the event definitions looked up for every record).
pub type NameHashing = BuildHasherDefault<NameHasher>;

#[derive(Default)]
pub struct NameHasher(u64);

impl NameHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.add(u64::from_le_bytes(word.try_into().expect("eight bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            self.add(rest.iter().rev().fold(0, |w, &b| w << 8 | u64::from(b)));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn write_usize(&mut self, word: usize) {
        self.add(word as u64);
    }

    fn write_i32(&mut self, word: i32) {
        self.add(u64::from(word as u32));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_kept_once() {
        let a = intern("names-test");
        let b = intern(&String::from("names-test"));
        assert!(std::ptr::eq(a, b), "one copy of the name");
        assert!(!std::ptr::eq(a, intern("names-test-other")));
    }

    #[test]
    fn names_that_differ_anywhere_hash_apart() {
        use std::hash::BuildHasher;
        let hash = |name: &str| NameHashing::default().hash_one(name);
        let names = [
            "point_add",
            "point_adds",
            "point_adD",
            "reward_claim",
            "",
            "a",
            "b",
        ];
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                assert_ne!(hash(a), hash(b), "{a:?} {b:?}");
            }
        }
        assert_eq!(hash("point_add"), hash(&String::from("point_add")));
    }
}
