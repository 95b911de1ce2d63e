//! A record that could not be delivered now, written on: to the retry topic for a later
//! attempt (holding its customer until it comes back) or to the dead-letter topic (naming
//! the customer's records that go on without it), then finished. A write that fails stops
//! the service with the record's offset where it was.

use tracing::{debug, error, warn};

use super::{Context, InFlight, holds};
use crate::kafka::headers::Failure;
use crate::kafka::producer::PublishError;
use crate::shutdown::StopReason;

impl Context {
    /// A write to the retry or dead-letter topic failed: the service stops (exit 1) and
    /// the record's offset stays where it is, so it is consumed again after restart.
    fn fatal(&self, item: InFlight, publish_error: PublishError) {
        error!(
            error = %publish_error,
            topic = %item.record.topic,
            partition = item.record.partition,
            offset = item.record.offset,
            "cannot write the record on; stopping without moving its offset"
        );
        self.metrics.records_in_flight_add(-1);
        self.uncount(item.account.into_iter());
        self.shutdown
            .trigger(StopReason::Fatal(publish_error.to_string()));
    }

    /// Writes a record to the dead-letter topic, then finishes it.
    pub async fn dead_letter(&self, item: InFlight, failure: Failure) {
        self.write_on(item, failure, Destination::DeadLetter).await;
    }

    /// Writes a record to the retry topic for a later attempt, then finishes it.
    pub async fn retry_later(&self, item: InFlight, failure: Failure) {
        self.write_on(item, failure, Destination::Retry).await;
    }

    /// Writes a record to the retry or the dead-letter topic, then finishes it.
    pub(super) async fn write_on(&self, item: InFlight, mut failure: Failure, mut to: Destination) {
        // A retry holds its customer from before it is written (it may be read back at
        // once) until it comes back; the customer's later records wait behind it.
        // A dead letter names the customer's records that go on without it.
        // A customer is its key within its account; a record of no account (dead-lettered
        // as unknown_account) holds nobody.
        let customer = item
            .account
            .zip(holds::customer_of(&item.record))
            .map(|(account, key)| (self.holds(account), key));
        let first_seen = holds::FirstSeen::of(&item.record);
        // A retry goes to the retry partition of its source partition; one held behind
        // its customer's retry goes where that one is, to come back behind it.
        let retry_partition = match to {
            Destination::DeadLetter => None,
            Destination::Retry => customer
                .filter(|_| {
                    use crate::outcome::ErrorKind::{AccountStopped, HeldBehind};
                    matches!(failure.kind, HeldBehind | AccountStopped)
                })
                .and_then(|(holds, customer)| holds.retry_partition(customer))
                .or_else(|| {
                    let (topic, partition) = (first_seen.topic(), first_seen.partition());
                    self.retry_partitions.of(topic, partition)
                }),
        };
        if let Some((holds, customer)) = customer {
            match to {
                Destination::Retry => {
                    let due_ms = failure.not_before_ms.unwrap_or(0);
                    let first_seen = first_seen.clone();
                    holds.add(customer, first_seen, due_ms, retry_partition);
                }
                Destination::DeadLetter => {
                    let others = holds.others(customer, &first_seen);
                    failure.later_records = others.iter().map(ToString::to_string).collect();
                }
            }
        }
        let mut written = match to {
            Destination::DeadLetter => self.publisher.dead_letter(&item.record, &failure).await,
            Destination::Retry => {
                self.publisher
                    .retry(&item.record, &failure, retry_partition)
                    .await
            }
        };
        if let (Destination::Retry, Err(error)) = (to, &written) {
            if error.is_too_large() {
                // With the retry headers the record is over the retry topic's limit, and
                // will be at every attempt: its fate has to be readable now.
                failure = too_large_to_retry(failure);
                to = Destination::DeadLetter;
                if let Some((holds, customer)) = customer {
                    holds.release(customer, &first_seen);
                }
                written = self.publisher.dead_letter(&item.record, &failure).await;
            }
        }
        if let Err(publish_error) = written {
            return self.fatal(item, publish_error);
        }
        let event_id = item.event_id().unwrap_or("-");
        let (topic, partition, offset) = (
            &item.record.topic,
            item.record.partition,
            item.record.offset,
        );
        let (kind, attempt, reason) = (failure.kind.as_str(), failure.attempt, &failure.error);
        match to {
            Destination::DeadLetter => {
                let account = item.account.map(|id| self.accounts.get(id).name);
                warn!(event_id, %topic, partition, offset, account, kind, attempt, %reason, "dead-lettered");
                self.metrics
                    .event_dead_lettered(item.action_or_unknown(), failure.kind);
                if let Some(account) = account {
                    self.metrics.accounts.dead_lettered(account, failure.kind);
                }
            }
            Destination::Retry => {
                let not_before_ms = failure.not_before_ms;
                let account = item.account.map(|id| self.accounts.get(id).name);
                if failure.kind == crate::outcome::ErrorKind::HeldBehind {
                    debug!(event_id, %topic, partition, offset, not_before_ms, "held behind the customer's retry");
                } else if failure.kind == crate::outcome::ErrorKind::AccountStopped {
                    debug!(event_id, %topic, partition, offset, account, not_before_ms, "parked while its account cannot send");
                } else {
                    warn!(
                        event_id, %topic, partition, offset, account, kind, attempt, not_before_ms,
                        %reason, "delivery failed; scheduled for another attempt"
                    );
                }
                self.metrics
                    .event_retried(item.action_or_unknown(), failure.kind);
                if let Some(account) = account {
                    self.metrics.accounts.retried(account, failure.kind);
                }
            }
        }
        self.finish(vec![item]);
    }
}

/// The failure of a record that should have been retried but is too large for the retry
/// topic.
fn too_large_to_retry(failure: Failure) -> Failure {
    Failure {
        kind: crate::outcome::ErrorKind::TooLarge,
        error: format!(
            "too large for the retry topic with its retry headers; dead-lettered instead of \
             retried after {}: {}",
            failure.kind.as_str(),
            failure.error
        ),
        not_before_ms: None,
        ..failure
    }
}

/// Where a failed record is written.
#[derive(Clone, Copy)]
pub(super) enum Destination {
    Retry,
    DeadLetter,
}
