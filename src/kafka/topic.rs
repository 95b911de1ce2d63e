//! Topic names as records and tickets carry them: interned ([`crate::names`]), so that
//! naming a record's topic is copying a pointer, and comparing or hashing one (the offset
//! ledger does both for every record) reads the pointer, not the name. A shared, counted
//! name (`Arc<str>`) was taken and let go about ten times per record, by the reader thread
//! and the delivery threads in turn, all on one counter.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// A topic name, kept once for the life of the process.
#[derive(Clone, Copy)]
pub struct Topic(&'static str);

impl Topic {
    /// The topic called `name`.
    pub fn named(name: &str) -> Topic {
        Topic(crate::names::intern(name))
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

/// One copy per name: the same name is the same address.
impl PartialEq for Topic {
    fn eq(&self, other: &Topic) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Topic {}

impl Hash for Topic {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.0.as_ptr() as usize);
    }
}

/// By name, so that sorted lists read alphabetically.
impl Ord for Topic {
    fn cmp(&self, other: &Topic) -> std::cmp::Ordering {
        self.0.cmp(other.0)
    }
}

impl PartialOrd for Topic {
    fn partial_cmp(&self, other: &Topic) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Deref for Topic {
    type Target = str;

    fn deref(&self) -> &str {
        self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_kept_once() {
        let a = Topic::named("loyalty.topic-test");
        let b = Topic::named(&String::from("loyalty.topic-test"));
        assert_eq!(a, b);
        assert!(std::ptr::eq(a.as_str(), b.as_str()), "one copy of the name");
        assert_ne!(a, Topic::named("loyalty.other-topic-test"));
        assert_eq!(a.to_string(), "loyalty.topic-test");
    }
}
