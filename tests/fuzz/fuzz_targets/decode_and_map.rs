//! Any bytes as a Kafka record value: decoding and mapping never panic, every batch that
//! comes out passes the Events API contract as the stand-in enforces it, and whatever the
//! single pass (`map_direct`) answers, the tree path (decode, then `map_into`) answers
//! the same, byte for byte.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mparticle_forwarder::event::LoyaltyEvent;
use mparticle_forwarder::mapping::{FieldAssignments, MapError};
use mparticle_forwarder::mparticle::Environment;
use mparticle_forwarder::standin::contract::check_batch;

/// The sample file, and a wider one with commerce, array indexes, lists and constants.
static ASSIGNMENTS: LazyLock<[FieldAssignments; 2]> = LazyLock::new(|| {
    [
        include_str!("../../data/field-assignments.toml"),
        include_str!("../../data/field-assignments-wide.toml"),
    ]
    .map(|text| {
        FieldAssignments::parse(text)
            .expect("the assignments load")
            .0
    })
});

fuzz_target!(|data: &[u8]| {
    for assignments in ASSIGNMENTS.iter() {
        let mut direct_out = Vec::new();
        let direct =
            assignments.map_direct(data, Environment::Production, Some(0), &mut direct_out);
        let Ok(event) = LoyaltyEvent::decode(Some(data), 128 * 1024) else {
            assert!(direct.is_none(), "the single pass read an invalid event");
            continue;
        };
        let mut tree_out = Vec::new();
        let mapped = assignments.map_into(&event, Environment::Production, Some(0), &mut tree_out);
        if let Some(direct) = direct {
            assert_eq!(&data[direct.id.clone()], event.id.as_bytes());
            assert_eq!(&data[direct.action.clone()], event.action.as_bytes());
            match &mapped {
                Ok(_) => assert!(
                    direct.defined.is_some() && direct_out == tree_out,
                    "the two paths differ"
                ),
                Err(MapError::Unmapped(_)) => assert!(direct.defined.is_none() && direct_out.is_empty()),
                Err(error) => panic!("the single pass mapped what the tree path refuses: {error}"),
            }
        }
        if mapped.is_ok() {
            let value: serde_json::Value =
                serde_json::from_slice(&tree_out).expect("a batch is JSON");
            if let Err(problem) = check_batch(&value) {
                panic!("a mapped batch breaks the contract: {problem}");
            }
        }
    }
});
