//! Topic names as records and tickets carry them: interned, so that naming a record's
//! topic is copying a pointer. A shared, counted name (`Arc<str>`) was taken and let go
//! about ten times per record, by the reader thread and the delivery threads in turn, all
//! on one counter.

use std::fmt;
use std::ops::Deref;
use std::sync::Mutex;

/// A topic name. The names a process meets are few (the configured topics), and each is
/// kept once for the life of the process.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(&'static str);

/// Every name interned so far.
static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

impl Topic {
    /// The topic called `name`.
    pub fn named(name: &str) -> Topic {
        let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = names.iter().find(|known| **known == name) {
            return Topic(known);
        }
        let kept: &'static str = Box::leak(name.into());
        names.push(kept);
        Topic(kept)
    }

    pub fn as_str(&self) -> &'static str {
        self.0
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
