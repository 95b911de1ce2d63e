//! Delivery: one request to the Events API and what its answer means for each record in
//! it. Delivered records finish; permanent failures are dead-lettered (a bulk refused with
//! 400 is split until only the offending batches are left); retryable failures wait out
//! their backoff (or `Retry-After`, whichever is later) and go again until the attempts
//! are used up; a 401 or 403 stops consuming and probes with backoff until the credentials
//! work again.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::{Context, InFlight};
use crate::clock::unix_ms;
use crate::kafka::headers::Failure;
use crate::mparticle::client::Answer;
use crate::mparticle::response::{Verdict, status_label};
use crate::outcome::ErrorKind;

/// First wait before probing mParticle again after a 401 or 403; doubles up to the max.
const AUTH_PROBE_FIRST: Duration = Duration::from_secs(5);
const AUTH_PROBE_MAX: Duration = Duration::from_secs(60);

/// A record with its batch, on its way to mParticle.
pub(crate) struct Outbound {
    pub item: InFlight,
    pub batch: Vec<u8>,
    /// Attempts made so far.
    pub attempts: u32,
    pub first_attempt_ms: Option<i64>,
}

impl Outbound {
    pub fn new(item: InFlight, batch: Vec<u8>) -> Outbound {
        Outbound {
            item,
            batch,
            attempts: 0,
            first_attempt_ms: None,
        }
    }

    fn failure(&self, kind: ErrorKind, answer: &Answer, last_attempt_ms: i64) -> Failure {
        let error = match answer.status {
            Some(status) => format!("mParticle answered HTTP {status}"),
            None => format!("request failed: {}", answer.detail),
        };
        Failure {
            kind,
            error,
            http_status: answer.status,
            http_body: answer.status.map(|_| answer.detail.clone()),
            attempt: self.attempts,
            first_attempt_ms: self.first_attempt_ms,
            last_attempt_ms: Some(last_attempt_ms),
            not_before_ms: None,
        }
    }
}

/// Sends `items` as one request and carries each record to its outcome. Boxed, because a
/// split bulk spawns deliveries of its halves.
pub(super) fn deliver(
    ctx: Arc<Context>,
    items: Vec<Outbound>,
    slot: Option<OwnedSemaphorePermit>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(deliver_request(ctx, items, slot))
}

async fn deliver_request(
    ctx: Arc<Context>,
    mut items: Vec<Outbound>,
    mut slot: Option<OwnedSemaphorePermit>,
) {
    let mut auth_wait = AUTH_PROBE_FIRST;
    loop {
        let permit = match slot.take() {
            Some(permit) => permit,
            None => match ctx.request_slots.clone().acquire_owned().await {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        ctx.pacer.acquire(items.len()).await;
        let attempt_ms = unix_ms();
        for item in &mut items {
            item.attempts += 1;
            item.first_attempt_ms.get_or_insert(attempt_ms);
        }
        ctx.metrics.requests_in_flight_add(1);
        let bodies: Vec<&[u8]> = items.iter().map(|o| o.batch.as_slice()).collect();
        let answer = ctx.client.send(&bodies).await;
        ctx.metrics.requests_in_flight_add(-1);
        drop(permit);
        let label = answer.status.map_or_else(
            || match answer.verdict {
                Verdict::Retryable(ErrorKind::Timeout) => "timeout",
                _ => "connect",
            },
            status_label,
        );
        ctx.metrics.http_request(label, answer.elapsed, items.len());
        if answer.verdict != Verdict::AuthFailed && *ctx.auth_failed.borrow() {
            info!("mParticle accepts the credentials again; resuming");
            ctx.auth_failed.send_replace(false);
            ctx.health
                .auth_failed
                .store(false, std::sync::atomic::Ordering::SeqCst);
            ctx.metrics.set_auth_failed(false);
        }
        match answer.verdict.clone() {
            Verdict::Delivered => {
                delivered(&ctx, items);
                return;
            }
            Verdict::AuthFailed => {
                if !ctx.auth_failed.send_replace(true) {
                    error!(
                        status = answer.status,
                        "mParticle refused the API key or secret; consumption stopped until it accepts them"
                    );
                }
                ctx.health
                    .auth_failed
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                ctx.metrics.set_auth_failed(true);
                // The same records are the probe; they keep their attempt count.
                for item in &mut items {
                    item.attempts -= 1;
                }
                if !wait_or_stop(&ctx, auth_wait).await {
                    return;
                }
                auth_wait = (auth_wait * 2).min(AUTH_PROBE_MAX);
            }
            Verdict::Permanent(kind) => {
                if answer.status == Some(400) && items.len() > 1 {
                    // A bulk is refused whole for one malformed batch: split it until the
                    // malformed ones stand alone. A refused bulk is no record's attempt.
                    for item in &mut items {
                        item.attempts -= 1;
                    }
                    let (left, right) = split_halves(std::mem::take(&mut items));
                    tokio::spawn(deliver(ctx.clone(), right, None));
                    items = left;
                    continue;
                }
                for item in items {
                    let failure = item.failure(kind, &answer, attempt_ms);
                    spawn_dead_letter(&ctx, item.item, failure);
                }
                return;
            }
            Verdict::Retryable(kind) => {
                if let Some(retry_after) = answer.retry_after {
                    // Slow the whole sender, not only these records.
                    ctx.pacer.hold(Instant::now() + retry_after);
                }
                let mut again = Vec::with_capacity(items.len());
                for item in items {
                    if item.attempts >= ctx.retry.max_attempts {
                        let mut failure =
                            item.failure(ErrorKind::AttemptsExhausted, &answer, attempt_ms);
                        failure.error = format!(
                            "{} attempts failed; last: {} ({kind})",
                            item.attempts, failure.error
                        );
                        spawn_dead_letter(&ctx, item.item, failure);
                    } else {
                        ctx.metrics
                            .event_retried(item.item.action_or_unknown(), kind);
                        warn!(
                            event_id = item.item.event_id.as_deref().unwrap_or("-"),
                            topic = %item.item.record.topic,
                            partition = item.item.record.partition,
                            offset = item.item.record.offset,
                            attempt = item.attempts,
                            kind = kind.as_str(),
                            status = answer.status,
                            "delivery failed; retrying"
                        );
                        again.push(item);
                    }
                }
                if again.is_empty() {
                    return;
                }
                let backoff = ctx.retry.backoff_before(again[0].attempts + 1);
                let wait = answer.retry_after.map_or(backoff, |ra| ra.max(backoff));
                ctx.metrics.retry_scheduled_add(again.len() as i64);
                let waited = wait_or_stop(&ctx, wait).await;
                ctx.metrics.retry_scheduled_add(-(again.len() as i64));
                if !waited {
                    return;
                }
                items = again;
            }
        }
    }
}

/// Dead-letters one record on its own task, so that a request's records are written
/// together rather than one acknowledgement after another.
fn spawn_dead_letter(ctx: &Arc<Context>, item: InFlight, failure: Failure) {
    let ctx = ctx.clone();
    tokio::spawn(async move { ctx.dead_letter(item, failure).await });
}

/// Splits a list in two halves, the first at least as long as the second.
fn split_halves<T>(mut items: Vec<T>) -> (Vec<T>, Vec<T>) {
    let right = items.split_off(items.len().div_ceil(2));
    (items, right)
}

fn delivered(ctx: &Context, items: Vec<Outbound>) {
    let now = unix_ms();
    let mut per_action: HashMap<&str, u64> = HashMap::new();
    for item in &items {
        *per_action.entry(item.item.action_or_unknown()).or_default() += 1;
        if let Some(ts) = item.item.record.timestamp_ms {
            ctx.metrics
                .delivery_latency(Duration::from_millis(now.saturating_sub(ts).max(0) as u64));
        }
    }
    for (action, count) in per_action {
        ctx.metrics.events_delivered(action, count);
    }
    ctx.finish(items.into_iter().map(|o| o.item).collect());
}

/// Sleeps for `wait`; false when shutdown came first (the records stay unfinished, so
/// their offsets do not move and they are consumed again after restart).
async fn wait_or_stop(ctx: &Context, wait: Duration) -> bool {
    tokio::select! {
        _ = ctx.shutdown.wait() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}
