//! Any bytes: the forwarder's JSON parser accepts exactly what serde_json accepts, and
//! what it reads is what serde_json reads.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mparticle_forwarder::json::Json;

fuzz_target!(|data: &[u8]| {
    let ours = Json::parse(data);
    let theirs = serde_json::from_slice::<serde_json::Value>(data);
    match (ours, theirs) {
        (Ok(ours), Ok(theirs)) => {
            let ours = serde_json::to_value(&ours).expect("the tree serialises");
            assert_eq!(ours, theirs, "different values");
        }
        (Err(_), Err(_)) => {}
        (ours, theirs) => panic!("ours {:?}, serde_json {theirs:?}", ours.map(|_| ())),
    }
});
