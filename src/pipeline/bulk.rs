//! Bulk assembly: batches ready to send are gathered into requests of up to 100 batches
//! and under 256 KB. They arrive in pieces (the source reader sends up to a full request
//! at a time, the retry reader one by one). A request leaves when it is full, or when no
//! further batch arrives within `MPARTICLE_BULK_LINGER`; under load requests fill up
//! without waiting.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

use super::Context;
use super::delivery::{self, Outbound};
use crate::mparticle::client::array_size;
use crate::mparticle::{MAX_BATCHES_PER_BULK, MAX_REQUEST_BYTES};

/// Runs until `pieces` closes and every gathered batch has been handed to a delivery task.
pub(super) async fn assemble(ctx: Arc<Context>, mut pieces: mpsc::Receiver<Vec<Outbound>>) {
    let mut waiting: VecDeque<Outbound> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match pieces.recv().await {
                Some(piece) => waiting.extend(piece),
                None => return,
            }
            continue;
        }
        // Waiting for a request slot first lets the request fill while earlier ones run.
        let Ok(slot) = ctx.request_slots.clone().acquire_owned().await else {
            return;
        };
        let mut bulk = Vec::with_capacity(MAX_BATCHES_PER_BULK.min(waiting.len()));
        let mut size = array_size([]);
        let deadline = Instant::now() + ctx.bulk_linger;
        loop {
            if take_fitting(&mut waiting, &mut bulk, &mut size) {
                break;
            }
            match timeout_at(deadline, pieces.recv()).await {
                Ok(Some(piece)) => waiting.extend(piece),
                _ => break,
            }
        }
        tokio::spawn(delivery::deliver(ctx.clone(), bulk, Some(slot)));
    }
}

/// Moves batches from `waiting` into `bulk` while they fit; true once the bulk is full.
/// The first batch always goes in: intake keeps every batch under the request limit.
fn take_fitting(
    waiting: &mut VecDeque<Outbound>,
    bulk: &mut Vec<Outbound>,
    size: &mut usize,
) -> bool {
    while bulk.len() < MAX_BATCHES_PER_BULK {
        let Some(next) = waiting.front() else {
            return false;
        };
        let grown = *size + next.batch.len() + usize::from(!bulk.is_empty());
        if !bulk.is_empty() && grown >= MAX_REQUEST_BYTES {
            return true;
        }
        *size = grown;
        bulk.extend(waiting.pop_front());
    }
    true
}
