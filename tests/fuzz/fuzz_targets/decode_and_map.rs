//! Any bytes as a Kafka record value: decoding and mapping never panic, and every batch
//! that comes out passes the Events API contract as the stand-in enforces it.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mparticle_forwarder::event::LoyaltyEvent;
use mparticle_forwarder::mapping::FieldAssignments;
use mparticle_forwarder::mparticle::Environment;
use mparticle_forwarder::standin::contract::check_batch;

static ASSIGNMENTS: LazyLock<FieldAssignments> = LazyLock::new(|| {
    FieldAssignments::parse(include_str!("../../data/field-assignments.toml"))
        .expect("the example field assignments load")
        .0
});

fuzz_target!(|data: &[u8]| {
    let Ok(event) = LoyaltyEvent::decode(Some(data), 128 * 1024) else {
        return;
    };
    if let Ok(batch) = ASSIGNMENTS.map(&event, Environment::Production, Some(0)) {
        let value: serde_json::Value = serde_json::from_slice(&batch.json).expect("a batch is JSON");
        if let Err(problem) = check_batch(&value) {
            panic!("a mapped batch breaks the contract: {problem}");
        }
    }
});
