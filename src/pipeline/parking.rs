//! Parking: when several accounts share the process, the records of one that cannot keep
//! up (its gate is not closed, or it is behind its pace: [`Account::stuck`]) wait in
//! memory, holding their partitions' offsets back, only while memory is not short. Once
//! less than a quarter of the records in memory (or of their bytes) is free, such an
//! account's records beyond the few it keeps as probes go to the retry topic without
//! using an attempt (`account_stopped`), due when the account may send again, so that
//! the other accounts' records can still be read. With one account nothing parks: its
//! records wait in memory and the readers stop, as they always have.

use std::ops::RangeInclusive;
use std::time::Duration;

use super::{Context, Origin};
use crate::accounts::Account;
use crate::accounts::live::Stuck;
use crate::clock::unix_ms;

/// A parked record comes back no sooner than this, however soon its account may send,
/// and no later, to look again.
const PARKED_FOR: RangeInclusive<Duration> = Duration::from_secs(5)..=Duration::from_secs(60);

/// A stuck account keeps this share of `MAX_IN_FLIGHT_RECORDS` (at least one record) in
/// memory: its gate's probe, and the first request once it may send again.
const KEPT_SHARE: usize = 20;

/// Why and until when a record is parked.
#[derive(Debug, Clone, Copy)]
pub(super) struct Parked {
    pub due_ms: i64,
    pub why: Stuck,
}

/// Whether a record of `account` from `origin` parks now.
pub(super) fn parks(ctx: &Context, account: &Account, origin: Origin) -> Option<Parked> {
    if !ctx.accounts.are_shared() {
        return None;
    }
    let kept = (ctx.max_in_flight_records / KEPT_SHARE).max(1);
    if account.records() <= kept as i64 {
        return None;
    }
    let (why, wait) = account.stuck()?;
    let (slots, bytes) = match origin {
        Origin::Source => (&ctx.record_slots, &ctx.record_bytes),
        Origin::Retries => (&ctx.retry_slots, &ctx.retry_bytes),
    };
    let scarce = |free: usize, all: usize| free.saturating_mul(4) < all;
    let short = scarce(slots.available_permits(), ctx.max_in_flight_records)
        || scarce(bytes.available_permits(), ctx.max_in_flight_bytes as usize);
    short.then(|| Parked {
        due_ms: unix_ms()
            + wait
                .clamp(*PARKED_FOR.start(), *PARKED_FOR.end())
                .as_millis() as i64,
        why,
    })
}

/// The error a parked record carries.
pub(super) fn reason(account: &Account, why: Stuck) -> String {
    format!(
        "waiting for its account {}, which cannot send now ({}), with memory short",
        account.name,
        why.as_str()
    )
}
