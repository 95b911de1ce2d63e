//! Bulk assembly: batches ready to send are gathered into requests of up to 100 batches
//! and under 256 KB. A request leaves when it is full, or when no further batch arrives
//! within `MPARTICLE_BULK_LINGER`; under load requests fill up without waiting.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

use super::Context;
use super::delivery::{self, Outbound};
use crate::mparticle::client::array_size;
use crate::mparticle::{MAX_BATCHES_PER_BULK, MAX_REQUEST_BYTES};

/// Runs until `outbound` closes and every gathered batch has been handed to a delivery task.
pub(super) async fn assemble(ctx: Arc<Context>, mut outbound: mpsc::Receiver<Outbound>) {
    let mut carried: Option<Outbound> = None;
    loop {
        let first = match carried.take() {
            Some(item) => item,
            None => match outbound.recv().await {
                Some(item) => item,
                None => return,
            },
        };
        // Waiting for a request slot first lets the request fill while earlier ones run.
        let Ok(slot) = ctx.request_slots.clone().acquire_owned().await else {
            return;
        };
        let mut size = array_size([first.batch.len()]);
        let mut bulk = vec![first];
        let deadline = Instant::now() + ctx.bulk_linger;
        while bulk.len() < MAX_BATCHES_PER_BULK {
            let Ok(Some(next)) = timeout_at(deadline, outbound.recv()).await else {
                break;
            };
            if size + next.batch.len() + 1 >= MAX_REQUEST_BYTES {
                carried = Some(next);
                break;
            }
            size += next.batch.len() + 1;
            bulk.push(next);
        }
        tokio::spawn(delivery::deliver(ctx.clone(), bulk, Some(slot)));
    }
}
