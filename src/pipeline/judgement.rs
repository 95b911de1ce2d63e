//! What an answer means for each record of its request, decided from the answer and the
//! retry policy alone ([`judge`]): delivered, sent again with no attempt used, retried
//! later, or dead-lettered. Delivery acts on the judgement.

use tracing::warn;

use super::InFlight;
use super::outbound::{Outbound, members};
use crate::config::RetryConfig;
use crate::kafka::headers::Failure;
use crate::mparticle::client::Answer;
use crate::mparticle::refusals::Refusals;
use crate::mparticle::response::Verdict;
use crate::outcome::ErrorKind;
use crate::retry::{NextStep, next_step};

fn failure(item: &InFlight, kind: ErrorKind, answer: &Answer, attempt_ms: i64) -> Failure {
    let error = match answer.status {
        Some(status) => format!("mParticle answered HTTP {status}"),
        None => format!("request failed: {}", answer.detail),
    };
    Failure {
        kind,
        error,
        http_status: answer.status,
        http_body: answer.status.map(|_| answer.detail.clone()),
        attempt: item.attempts,
        first_attempt_ms: item.first_attempt_ms,
        last_attempt_ms: Some(attempt_ms),
        not_before_ms: None,
        later_records: Vec::new(),
    }
}

/// What an answer means for each record of its request, decided from the answer and the
/// retry policy alone; [`settle`] acts on it. Only `delivered` and `again` may hold merged
/// batches; the failed are each a record with its own batch.
#[derive(Default)]
pub(super) struct Judgement {
    pub(super) delivered: Vec<Outbound>,
    /// Sent again, each group as a request of its own, with no attempt used.
    pub(super) again: Vec<Vec<Outbound>>,
    pub(super) retry_later: Vec<(Outbound, Failure)>,
    pub(super) dead_letter: Vec<(Outbound, Failure)>,
}

pub(super) fn judge(
    mut items: Vec<Outbound>,
    answer: &Answer,
    retry: &RetryConfig,
    attempt_ms: i64,
    answered_ms: i64,
) -> Judgement {
    let mut judgement = Judgement::default();
    let uncounted = |items: &mut Vec<Outbound>| {
        for record in items.iter_mut().flat_map(Outbound::records_mut) {
            record.attempts -= 1;
        }
    };
    match answer.verdict {
        Verdict::Delivered => match answer.refusals.clone() {
            None => judgement.delivered = items,
            Some(refusals) => {
                return partly_delivered(items, refusals, answer, attempt_ms);
            }
        },
        Verdict::AuthFailed | Verdict::RateLimited => {
            // No record is at fault: the same records go again, as the gate's probe or
            // once the pacer allows.
            uncounted(&mut items);
            judgement.again.push(items);
        }
        Verdict::Permanent(kind) => {
            if answer.status == Some(400) && items.len() > 1 {
                // A bulk is refused whole for one malformed batch: split it until the
                // malformed ones stand alone. A refused bulk is no record's attempt.
                uncounted(&mut items);
                let (left, right) = split_halves(items);
                judgement.again = vec![left, right];
            } else if answer.status == Some(400) && items[0].events() > 1 {
                // So is a merged batch: its records go again as a bulk of their own
                // batches, which splits in turn.
                uncounted(&mut items);
                judgement.again = vec![members(items)];
            } else {
                judgement.dead_letter = members(items)
                    .into_iter()
                    .map(|o| {
                        let f = failure(&o.item, kind, answer, attempt_ms);
                        (o, f)
                    })
                    .collect();
            }
        }
        Verdict::Retryable(kind) => {
            for o in members(items) {
                let mut f = failure(&o.item, kind, answer, attempt_ms);
                match next_step(retry, o.item.attempts, answer.retry_after, answered_ms) {
                    NextStep::RetryAt { not_before_ms } => {
                        f.not_before_ms = Some(not_before_ms);
                        judgement.retry_later.push((o, f));
                    }
                    NextStep::Exhausted => {
                        f.error = format!(
                            "{} attempts failed; the last: {} ({kind})",
                            o.item.attempts, f.error
                        );
                        f.kind = ErrorKind::AttemptsExhausted;
                        judgement.dead_letter.push((o, f));
                    }
                }
            }
        }
    }
    judgement
}

/// A 2xx whose body names refused batches: the others are delivered, and each refused one
/// goes again alone, once (a refused bulk is no record's attempt); a refused batch that was
/// alone already is dead-lettered with mParticle's message. Errors that name no batch send
/// every batch of the bulk again alone.
fn partly_delivered(
    mut items: Vec<Outbound>,
    refusals: Refusals,
    answer: &Answer,
    attempt_ms: i64,
) -> Judgement {
    let mut judgement = Judgement::default();
    if items.len() == 1 && items[0].events() > 1 {
        items[0].records_mut().for_each(|r| r.attempts -= 1);
        judgement.again.push(members(items));
        return judgement;
    }
    if items.len() == 1 {
        let message = match refusals {
            Refusals::Named(named) => named.into_iter().next().map(|(_, m)| m),
            Refusals::Unreadable(message) => Some(message),
        };
        let o = items.remove(0);
        let mut f = failure(&o.item, ErrorKind::Http4xx, answer, attempt_ms);
        f.error = format!(
            "mParticle accepted the request but refused its batch: {}",
            message.unwrap_or_default()
        );
        judgement.dead_letter.push((o, f));
        return judgement;
    }
    let refused: Vec<usize> = match &refusals {
        Refusals::Named(named) => named.iter().map(|(position, _)| *position).collect(),
        Refusals::Unreadable(_) => (0..items.len()).collect(),
    };
    warn!(
        refused = refused.len(),
        batches = items.len(),
        detail = %answer.detail,
        "mParticle accepted a bulk request but refused some of its batches; sending those again alone"
    );
    for (position, mut o) in items.into_iter().enumerate() {
        if refused.binary_search(&position).is_ok() {
            o.records_mut().for_each(|r| r.attempts -= 1);
            judgement.again.push(o.into_members());
        } else {
            judgement.delivered.push(o);
        }
    }
    judgement
}

/// Splits a list in two halves, the first at least as long as the second.
fn split_halves<T>(mut items: Vec<T>) -> (Vec<T>, Vec<T>) {
    let right = items.split_off(items.len().div_ceil(2));
    (items, right)
}
