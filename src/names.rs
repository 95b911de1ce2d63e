//! Names interned for the life of the process: topic names and the actions the field
//! assignments define. A process meets few of them (the configured topics, the event
//! definitions), each is kept once, and a record names one by a copied pointer that is
//! compared and hashed by address, never by reading its bytes on another thread.

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
}
