//! The per-event work of the source reader, alone and in one thread (not a test):
//! parsing the record value (sonic-rs), reading it at the plan's paths as a loyalty
//! event, and mapping that into an mParticle batch, each timed over 1,000,000 events of the end-to-end
//! benchmark's two shapes; serde_json parsing the same values into a `Value` is printed
//! for comparison.
//! The end-to-end figures are `benches/pipeline.rs`; this one shows where a change to
//! the hot path moves the cost, without the broker's noise.
//!
//! `cargo bench --bench intake`

use std::hint::black_box;
use std::time::Instant;

use mparticle_forwarder::event::LoyaltyEvent;
use mparticle_forwarder::mapping::{FieldAssignments, UserAttributes};
use mparticle_forwarder::mparticle::Environment;

#[path = "support/events.rs"]
mod events;

/// Events per step; `MPF_INTAKE_EVENTS` sets fewer, for a run under callgrind (whose
/// instruction counts repeat where this machine's timings drift).
fn events() -> usize {
    std::env::var("MPF_INTAKE_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000)
}

/// Runs `step` over the events in turn and prints its time per event.
/// `MPF_INTAKE_ONLY=<name>` runs only the steps whose names start with it (for profiling).
fn time(name: &str, values: &[String], mut step: impl FnMut(&[u8])) {
    if std::env::var("MPF_INTAKE_ONLY").is_ok_and(|only| !name.starts_with(&only)) {
        return;
    }
    let events = events();
    let started = Instant::now();
    for i in 0..events {
        step(values[i % values.len()].as_bytes());
    }
    let per_event = started.elapsed().as_nanos() as f64 / events as f64;
    println!("{name:<28} {per_event:>7.0} ns per event");
}

fn main() {
    let text = std::fs::read_to_string("tests/data/field-assignments.toml")
        .expect("run from the crate's root");
    let (assignments, _) = FieldAssignments::parse(&text).expect("the sample assignments load");
    let paths = assignments.paths();
    let values: Vec<String> = (0..1000).map(|i| events::event(i, true)).collect();
    let documents: Vec<_> = values
        .iter()
        .map(|v| LoyaltyEvent::parse(Some(v.as_bytes()), 128 * 1024).expect("a bench event"))
        .collect();
    let decoded: Vec<LoyaltyEvent<'_>> = documents
        .iter()
        .map(|d| LoyaltyEvent::read(d, paths).expect("a bench event"))
        .collect();
    println!(
        "{} events, {} bytes on average",
        events(),
        values.iter().map(String::len).sum::<usize>() / values.len()
    );
    time("serde_json::Value (compare)", &values, |v| {
        black_box(serde_json::from_slice::<serde_json::Value>(v).expect("JSON"));
    });
    time("parse", &values, |v| {
        black_box(LoyaltyEvent::parse(Some(v), 128 * 1024).expect("JSON"));
    });
    time("parse + read", &values, |v| {
        let document = LoyaltyEvent::parse(Some(v), 128 * 1024).expect("JSON");
        black_box(LoyaltyEvent::read(&document, paths).expect("an event"));
    });
    let mut out = Vec::with_capacity(1 << 20);
    let mut next = 0;
    time("map (into one buffer)", &values, |_| {
        if out.len() > (1 << 20) - 200_000 {
            out.clear();
        }
        let event = &decoded[next % decoded.len()];
        next += 1;
        black_box(
            assignments
                .map_into(
                    event,
                    Environment::Production,
                    Some(0),
                    UserAttributes::Write,
                    &mut out,
                )
                .expect("a batch"),
        );
    });
    let mut out = Vec::with_capacity(1 << 20);
    time("parse + read + map (all)", &values, |v| {
        if out.len() > (1 << 20) - 200_000 {
            out.clear();
        }
        let document = LoyaltyEvent::parse(Some(v), 128 * 1024).expect("JSON");
        let event = LoyaltyEvent::read(&document, paths).expect("an event");
        black_box(
            assignments
                .map_into(
                    &event,
                    Environment::Production,
                    Some(0),
                    UserAttributes::Write,
                    &mut out,
                )
                .expect("a batch"),
        );
    });
}
