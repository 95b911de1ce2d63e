//! What the stand-in keeps of what it saw: every request, every accepted batch with its
//! account, the ids of batches and events, and counts by status and by account.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use std::io::Write;

use serde::Serialize;
use serde_json::Value;

use super::fast::AlreadyHashed;
use super::{State, lock};

/// One request as the stand-in saw it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestLog {
    /// When the request arrived, unix ms.
    pub at_ms: i64,
    pub path: String,
    pub status: u16,
    /// `source_request_id` of every batch in the body that could be read.
    pub ids: Vec<String>,
    /// The `Content-Length` header, and the size of the body as read: a request sent
    /// without the header (chunked) shows `None`.
    pub content_length: Option<u64>,
    pub body_bytes: usize,
}

#[derive(Default)]
pub(super) struct Recorded {
    pub(super) batches: Vec<Value>,
    pub(super) accepted_ids: Vec<String>,
    /// `source_message_id` of every event of every accepted batch.
    pub(super) accepted_events: Vec<String>,
    pub(super) requests: Vec<RequestLog>,
    pub(super) request_count: u64,
    pub(super) accepted_count: u64,
    pub(super) accepted_event_count: u64,
    pub(super) by_status: std::collections::BTreeMap<u16, u64>,
    /// The account each of `batches` was accepted for.
    pub(super) batch_accounts: Vec<String>,
    /// Batches accepted, by account (both modes).
    pub(super) by_account: std::collections::BTreeMap<String, u64>,
    /// Fast mode: hashes of accepted events' ids ([`id_hash`]), and latencies in ms.
    pub(super) unique_hashes: HashSet<u64, BuildHasherDefault<AlreadyHashed>>,
    pub(super) latencies_ms: Vec<i64>,
}

/// Pulls out of a body, without judging it, each batch's `source_request_id` and each
/// event's `source_message_id`.
pub(super) fn ids_in(body: &[u8]) -> (Vec<String>, Vec<String>) {
    let batches = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(batches)) => batches,
        Ok(batch) => vec![batch],
        Err(_) => Vec::new(),
    };
    let ids = batches
        .iter()
        .filter_map(|b| b.get("source_request_id")?.as_str().map(str::to_string))
        .collect();
    let events = batches
        .iter()
        .flat_map(event_ids)
        .map(str::to_string)
        .collect();
    (ids, events)
}

/// The `source_message_id` of each event of a batch.
pub(super) fn event_ids(batch: &Value) -> impl Iterator<Item = &str> {
    let events = batch.get("events").and_then(Value::as_array);
    events
        .into_iter()
        .flatten()
        .filter_map(|e| e.pointer("/data/source_message_id")?.as_str())
}

pub(super) fn record_accepted(state: &State, account: usize, batches: Vec<Value>) {
    if let Some(file) = lock(&state.file).as_mut() {
        for batch in &batches {
            let _ = serde_json::to_writer(&mut *file, batch);
            let _ = file.write_all(b"\n");
        }
        let _ = file.flush();
    }
    let mut recorded = lock(&state.recorded);
    recorded.accepted_count += batches.len() as u64;
    let name = state.accounts.name(account);
    *recorded.by_account.entry(name.to_string()).or_default() += batches.len() as u64;
    for batch in batches {
        recorded.batch_accounts.push(name.to_string());
        let id = batch.get("source_request_id").and_then(Value::as_str);
        recorded
            .accepted_ids
            .push(id.unwrap_or_default().to_string());
        let events: Vec<String> = event_ids(&batch).map(str::to_string).collect();
        recorded.accepted_event_count += events.len() as u64;
        recorded.accepted_events.extend(events);
        recorded.batches.push(batch);
    }
}
