//! Any bytes as a Kafka record value: decoding and mapping never panic, every batch that
//! comes out passes the Events API contract as the stand-in enforces it, and the engine
//! answers what the oracle (`tests/mapping/oracle.rs`: serde_json and plain TOML) answers:
//! the same batch, or a refusal of the same kind.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mparticle_forwarder::event::LoyaltyEvent;
use mparticle_forwarder::mapping::{FieldAssignments, UserAttributes};
use mparticle_forwarder::mparticle::Environment;
use mparticle_forwarder::standin::contract::check_batch;

#[path = "../../mapping/oracle.rs"]
mod oracle;

use oracle::{Expected, expected, normalized};

/// The sample file, and a wider one with commerce, array indexes, lists and constants:
/// as the service loads them, and as plain TOML for the oracle.
static FILES: LazyLock<Vec<(FieldAssignments, toml::Table)>> = LazyLock::new(|| {
    [
        include_str!("../../data/field-assignments.toml"),
        include_str!("../../data/field-assignments-wide.toml"),
    ]
    .map(|text| {
        let (assignments, _) = FieldAssignments::parse(text).expect("the assignments load");
        (assignments, toml::from_str(text).expect("the file is TOML"))
    })
    .into()
});

fuzz_target!(|data: &[u8]| {
    for (assignments, file) in FILES.iter() {
        let document = LoyaltyEvent::parse(Some(data), 128 * 1024);
        let read = LoyaltyEvent::decode(&document, assignments.paths());
        let ours = match read {
            Err(invalid) => Expected::Refused(invalid.kind().as_str()),
            Ok(event) => {
                let mut out = Vec::new();
                match assignments.map_into(
                    &event,
                    Environment::Development,
                    Some(7),
                    UserAttributes::Write,
                    &mut out,
                ) {
                    Err(error) => Expected::Refused(error.kind().as_str()),
                    Ok(_) => {
                        let value: serde_json::Value =
                            serde_json::from_slice(&out).expect("a batch is JSON");
                        if let Err(problem) = check_batch(&value) {
                            panic!("a mapped batch breaks the contract: {problem}");
                        }
                        Expected::Batch(normalized(&value))
                    }
                }
            }
        };
        let theirs = match expected(file, data, 7) {
            Expected::Batch(batch) => Expected::Batch(normalized(&batch)),
            refused => refused,
        };
        assert_eq!(ours, theirs, "the engine and the oracle differ");
    }
});
