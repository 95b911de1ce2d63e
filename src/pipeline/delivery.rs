//! Delivery: one request to the Events API and what its answer means for each record in it
//! (the README's "Outcomes"). Delivered records finish. Retryable failures go to the retry
//! topic with the attempt counted, or to the dead-letter topic once the attempts are used
//! up. Permanent failures are dead-lettered; a bulk refused with 400 is split until only
//! the offending batches are left. A 429 is the account's business, not the records': the
//! [pacer](crate::pacer) learns from it and the same records go again once it allows, with
//! no attempt used. A 401 or 403 closes the [gate](crate::gate): the refused records wait
//! and are sent again as the probe, nothing is dead-lettered.
//!
//! What an answer means is decided in one place ([`judge`](super::judgement::judge), from
//! the answer and the retry policy) and acted on in another ([`settle`]).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::Context;
use super::holds::Customer;
use super::judgement::{Judgement, judge};
use super::outbound::{Outbound, members};
use super::written_on::Destination;
use crate::accounts::Account;
use crate::clock::unix_ms;
use crate::gate::{Change, Reason};
use crate::kafka::headers::Failure;
use crate::mparticle::body::RequestBody;
use crate::mparticle::client::Answer;
use crate::mparticle::response::{LimitHit, Verdict, status_label};
use crate::outcome::ErrorKind;
use crate::pacer::{Pacer, Signal};

/// A request slot of the account held and its gate passed: what a request needs before
/// its turn at the pacer ([`admit`]).
pub(super) struct Admitted(OwnedSemaphorePermit);

/// A request that may leave now: slot, gate and pacer passed ([`pass_pacer`]).
pub(super) struct Cleared(OwnedSemaphorePermit);

/// How far a request handed to [`deliver`] has come.
pub(super) enum Passed {
    Nothing,
    Admitted(Admitted),
    Cleared(Cleared),
}

/// Waits for a request slot of `account`, then for its gate; `None` at shutdown. (Waiting
/// for the slot first lets bulk assembly fill a request while earlier ones run.)
pub(super) async fn admit(account: &Account) -> Option<Admitted> {
    let slot = account.request_slots.clone().acquire_owned().await.ok()?;
    account.gate.admit().await;
    Some(Admitted(slot))
}

/// Waits for the turn of a request of `batches` batches at `pacer`; `None` at shutdown.
/// Bulk assembly passes the pacer before it hands a request on, so that requests leave in
/// the order they were composed and the limit is seen to bind by the next one composed.
pub(super) async fn pass_pacer(
    ctx: &Context,
    pacer: &Pacer,
    Admitted(slot): Admitted,
    batches: usize,
) -> Option<Cleared> {
    let waited = tokio::select! {
        _ = ctx.shutdown.wait() => return None,
        waited = pacer.acquire(batches) => waited,
    };
    ctx.metrics.pacing_held(waited);
    Some(Cleared(slot))
}

/// Sends `items` (records of one account) as one request, from where `passed` says it
/// has come, and carries each record to its outcome. Boxed, because a split bulk spawns
/// deliveries of its halves.
pub(super) fn deliver(
    ctx: Arc<Context>,
    items: Vec<Outbound>,
    passed: Passed,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(deliver_request(ctx, items, passed))
}

async fn deliver_request(ctx: Arc<Context>, mut items: Vec<Outbound>, mut passed: Passed) {
    let Some(account) = items.first().and_then(|o| o.item.account) else {
        return;
    };
    let account = ctx.accounts.get(account);
    loop {
        // A request never carries more batches than the pace lets through: the rest go as
        // requests of their own (assembled at a faster pace, or refused with 429).
        let most = account.pacer.batches_per_request();
        if items.len() > most {
            let rest = items.split_off(most);
            tokio::spawn(deliver(ctx.clone(), rest, Passed::Nothing));
        }
        // Records left unfinished at shutdown keep their offsets back: consumed again later.
        let admitted = match std::mem::replace(&mut passed, Passed::Nothing) {
            Passed::Cleared(cleared) => Ok(cleared),
            Passed::Admitted(admitted) => Err(Some(admitted)),
            Passed::Nothing => Err(None),
        };
        let Cleared(permit) = match admitted {
            Ok(cleared) => cleared,
            Err(admitted) => {
                let admitted = match admitted {
                    Some(admitted) => admitted,
                    None => {
                        let admitted = tokio::select! {
                            _ = ctx.shutdown.wait() => None,
                            admitted = admit(account) => admitted,
                        };
                        let Some(admitted) = admitted else {
                            return;
                        };
                        admitted
                    }
                };
                match pass_pacer(&ctx, &account.pacer, admitted, items.len()).await {
                    Some(cleared) => cleared,
                    None => return,
                }
            }
        };
        // Waiting for the pacer can outlast a rebalance: records whose partition moved
        // meanwhile are the new owner's, and sending them here too would spend the
        // account's limit twice.
        if items.iter().any(|o| o.records().any(|r| !ctx.owns(r))) {
            let (owned, moved): (Vec<Outbound>, Vec<Outbound>) =
                members(items).into_iter().partition(|o| ctx.owns(&o.item));
            debug!(
                records = moved.len(),
                "not sent: their partitions moved to another consumer"
            );
            ctx.finish(moved);
            items = owned;
            if items.is_empty() {
                return;
            }
        }
        let sent_at = Instant::now();
        let attempt_ms = unix_ms();
        for record in items.iter_mut().flat_map(Outbound::records_mut) {
            record.due = None;
            record.attempts += 1;
            record.first_attempt_ms.get_or_insert(attempt_ms);
        }
        let wire = tokio::select! {
            _ = ctx.shutdown.wait() => return,
            wire = ctx.accounts.wire().acquire_owned() => wire,
        };
        ctx.metrics.requests_in_flight_add(1);
        let answer = account
            .client
            .send(RequestBody::of(items.iter().map(Outbound::sent)))
            .await;
        ctx.metrics.requests_in_flight_add(-1);
        drop((permit, wire));
        let label = answer.status.map_or_else(
            || match answer.verdict {
                Verdict::Retryable(ErrorKind::Timeout) => "timeout",
                _ => "connect",
            },
            status_label,
        );
        ctx.metrics.http_request(label, answer.elapsed, items.len());
        ctx.metrics.accounts.http_request(account.name, label);
        // Backoff counts from the failure's answer, so the gap between two attempts is at
        // least the configured backoff.
        let answered_ms = unix_ms();
        if let Some(change) = account.gate.record(&answer.verdict) {
            gate_changed(&ctx, account, change, &answer);
        }
        pace(&ctx, account, sent_at, items.len(), &answer);
        let judgement = judge(items, &answer, &ctx.retry, attempt_ms, answered_ms);
        match settle(&ctx, account, judgement) {
            Some(again) => match park(account, &ctx, again) {
                Ok(parked) => {
                    settle(&ctx, account, parked);
                    return;
                }
                Err(again) => items = again,
            },
            None => return,
        }
    }
}

/// Acts on a judgement: the delivered finish, the failed go to the retry or dead-letter
/// topic, and of the groups to send again the first comes back to the caller's loop, the
/// others go as deliveries of their own.
fn settle(ctx: &Arc<Context>, account: &Account, judgement: Judgement) -> Option<Vec<Outbound>> {
    if !judgement.delivered.is_empty() {
        delivered(ctx, account, judgement.delivered);
    }
    // A customer's retries are written one after another, so that the retry topic holds
    // them in their order, and its dead letters after them, so that a dead letter names
    // them among the records that go on without it; customers are written side by side.
    let failed = judgement
        .retry_later
        .into_iter()
        .map(|(o, f)| (o, f, Destination::Retry))
        .chain(
            judgement
                .dead_letter
                .into_iter()
                .map(|(o, f)| (o, f, Destination::DeadLetter)),
        );
    for records in by_customer(failed) {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            for (o, f, to) in records {
                ctx.write_on(o.item, f, to).await;
            }
        });
    }
    let mut again = judgement
        .again
        .into_iter()
        .filter(|group| !group.is_empty());
    let first = again.next();
    for group in again {
        tokio::spawn(deliver(ctx.clone(), group, Passed::Nothing));
    }
    first
}

/// Records sent again once their account may send (refused credentials, a 429): parked
/// in the retry topic instead when memory is short ([`parking`](super::parking)).
fn park(
    account: &Account,
    ctx: &Context,
    again: Vec<Outbound>,
) -> Result<Judgement, Vec<Outbound>> {
    let origin = again[0].item.origin;
    let Some(parked) = super::parking::parks(ctx, account, origin) else {
        return Err(again);
    };
    let retry_later = members(again)
        .into_iter()
        .map(|o| {
            let failure = Failure::waiting(
                ErrorKind::AccountStopped,
                super::parking::reason(account, parked.why),
                o.item.attempts,
                o.item.first_attempt_ms,
                parked.due_ms,
            );
            (o, failure)
        })
        .collect();
    Ok(Judgement {
        retry_later,
        ..Judgement::default()
    })
}

/// A record that failed, with its failure and where it is written.
type Failed = (Outbound, Failure, Destination);

/// `failed` in groups of one customer's records each, in order; a record without a
/// customer is a group of its own.
fn by_customer(failed: impl Iterator<Item = Failed>) -> Vec<Vec<Failed>> {
    let mut groups: Vec<Vec<Failed>> = Vec::new();
    let mut index: HashMap<Customer, usize> = HashMap::new();
    for failed in failed {
        match failed.0.customer() {
            Some(customer) => match index.entry(customer) {
                Entry::Occupied(at) => groups[*at.get()].push(failed),
                Entry::Vacant(slot) => {
                    slot.insert(groups.len());
                    groups.push(vec![failed]);
                }
            },
            None => groups.push(vec![failed]),
        }
    }
    groups
}

/// What an answer tells the pacer: the account's room, and a `Retry-After` that holds the
/// whole sender, not only these records.
fn pace(ctx: &Context, account: &Account, sent_at: Instant, batches: usize, answer: &Answer) {
    let signal = match answer.verdict {
        Verdict::Delivered => Some(Signal::Accepted {
            batches,
            usage_percent: answer.rate_limit_used_percent.map(f64::from),
        }),
        Verdict::RateLimited => {
            let limit = answer.limit_hit.unwrap_or(LimitHit::Unnamed);
            ctx.metrics.rate_limited(limit);
            ctx.metrics.accounts.rate_limited(account.name, limit);
            debug!(account = account.name, limit = limit.as_str(), retry_after = ?answer.retry_after, "mParticle answered 429");
            Some(Signal::Refused(limit))
        }
        _ => None,
    };
    if let Some(signal) = signal {
        account.pacer.observe(sent_at, signal);
    }
    if let (Some(wait), Verdict::RateLimited | Verdict::Retryable(_)) =
        (answer.retry_after, &answer.verdict)
    {
        ctx.metrics.pacing_held(account.pacer.hold(wait));
    }
}

fn gate_changed(ctx: &Context, account: &Account, change: Change, answer: &Answer) {
    // The process is not ready when no account can deliver; the gauge shows any account
    // stopped (the account's own gauge says which).
    let auth_failed = ctx.accounts.auth_failed_everywhere();
    ctx.health.auth_failed.store(auth_failed, Ordering::SeqCst);
    ctx.metrics
        .set_auth_failed(ctx.accounts.auth_failed_anywhere());
    let name = account.name;
    match change {
        Change::Opened(Reason::Auth) if answer.status.is_some_and(|s| (300..400).contains(&s)) => {
            error!(
                account = name,
                status = answer.status,
                "mParticle's URL answered a redirect (never followed): check MPARTICLE_API_URL; \
                 consumption stopped until it answers"
            )
        }
        Change::Opened(Reason::Auth) => error!(
            account = name,
            status = answer.status,
            "mParticle refused the API key or secret; the account's records wait until it accepts them"
        ),
        Change::Opened(Reason::Outage) => warn!(
            account = name,
            status = answer.status,
            detail = %answer.detail,
            "every recent request to mParticle failed; the account's records wait, probing"
        ),
        Change::Closed(reason) => info!(
            account = name,
            ?reason,
            "mParticle answers again; the account's records go on"
        ),
    }
    let outage = ctx
        .accounts
        .iter()
        .any(|a| a.gate.stopped().is_some_and(|(r, _)| r == Reason::Outage));
    ctx.metrics.gate_changed(change, outage);
}

fn delivered(ctx: &Context, account: &Account, items: Vec<Outbound>) {
    ctx.metrics
        .batches_delivered(items.iter().map(Outbound::events));
    let items = members(items);
    ctx.metrics
        .accounts
        .delivered(account.name, items.len() as u64);
    let now = unix_ms();
    // A request holds one or two actions: a short list beats hashing every record's. A
    // sent record's action is the field assignments' own copy of the name
    // (`EventText::Defined`), so the same action is the same pointer, and the record's
    // bytes, read on another thread, are not touched again.
    let mut per_action: Vec<(&str, u64)> = Vec::new();
    for o in &items {
        let action = o.item.action_or_unknown();
        let same = |(a, _): &&mut (&str, u64)| std::ptr::eq(*a, action) || *a == action;
        match per_action.iter_mut().find(same) {
            Some((_, count)) => *count += 1,
            None => per_action.push((action, 1)),
        }
    }
    ctx.metrics.delivery_latencies(items.iter().filter_map(|o| {
        let ts = o.item.record.timestamp_ms?;
        Some(Duration::from_millis(now.saturating_sub(ts).max(0) as u64))
    }));
    for (action, count) in per_action {
        ctx.metrics.events_delivered(action, count);
    }
    ctx.finish(items);
}
