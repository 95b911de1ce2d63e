//! Any text as a field-assignments file: loading reports problems and never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mparticle_forwarder::mapping::FieldAssignments;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = FieldAssignments::parse(text);
    }
});
