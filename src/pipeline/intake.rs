//! The first step for every consumed record, from either reader: decode it, map it, and
//! decide whether it is sent, skipped by configuration, or dead-lettered at once
//! ([`prepare`], pure: the batch is appended to a buffer the caller owns), then act on that
//! (`take_in`).

use std::ops::Range;
use std::sync::Arc;

use super::{Context, InFlight};
use crate::accounts::{AccountId, Routing};
use crate::config::UnmappedAction;
use crate::event::LoyaltyEvent;
use crate::kafka::headers::{Failure, REPLAY_ATTRIBUTES, REPLAY_COUNT};
use crate::kafka::record::SourceRecord;

use crate::mapping::{FieldAssignments, MapError, UserAttributes};
use crate::mparticle::Environment;
use crate::outcome::ErrorKind;

/// What to do with a consumed record.
#[derive(Debug)]
pub enum Prepared {
    /// Send the batch at `batch` of the caller's buffer to mParticle, on `account`.
    Send {
        account: AccountId,
        event_id: EventText,
        action: EventText,
        batch: Range<usize>,
        /// Its `user_identities` member, from the batch's start.
        identities: Range<usize>,
        /// Attribute values cut to mParticle's limit.
        truncated_values: u32,
    },
    /// Skipped by configuration (`UNMAPPED_ACTION=skip`), counted under `reason`.
    Skip {
        account: AccountId,
        event_id: EventText,
        action: EventText,
        reason: &'static str,
    },
    /// Never sendable: to the dead-letter topic with this failure (the record's account,
    /// when it was routed to one).
    Reject {
        account: Option<AccountId>,
        event_id: EventText,
        action: EventText,
        failure: Failure,
    },
}

/// A text field of a record's event (its id or its action), kept for logs and metric
/// labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EventText {
    /// Not known: the record is not a valid event.
    #[default]
    Unknown,
    Owned(Box<str>),
    /// An action with an event definition, as the field assignments keep its name: a sent
    /// record's action, compared where the record finishes without a copy per record.
    Defined(&'static str),
}

impl EventText {
    pub fn get(&self) -> Option<&str> {
        match self {
            EventText::Unknown => None,
            EventText::Owned(text) => Some(text),
            EventText::Defined(name) => Some(name),
        }
    }
}

/// What an account maps with: its field assignments and its environment.
#[derive(Clone, Copy)]
pub struct AccountRules<'a> {
    pub assignments: &'a FieldAssignments,
    pub environment: Environment,
}

/// The rules intake applies.
pub struct IntakeRules<'a> {
    pub routing: &'a Routing,
    /// Each account's, by [`AccountId`].
    pub accounts: &'a dyn Fn(AccountId) -> AccountRules<'a>,
    pub event_max_bytes: usize,
    pub unmapped_action: UnmappedAction,
}

/// Decides what becomes of `record`; a batch to send is appended to `out`.
pub fn prepare(record: &SourceRecord, rules: &IntakeRules<'_>, out: &mut Vec<u8>) -> Prepared {
    let document = LoyaltyEvent::parse(record.value(), rules.event_max_bytes);
    let account = match rules.routing.route(record, document.as_ref().ok()) {
        Ok(account) => account,
        Err(why) => {
            return Prepared::Reject {
                account: None,
                event_id: EventText::Unknown,
                action: EventText::Unknown,
                failure: never_sent(ErrorKind::UnknownAccount, why),
            };
        }
    };
    let AccountRules {
        assignments,
        environment,
    } = (rules.accounts)(account);
    let read = LoyaltyEvent::decode(&document, assignments.paths());
    let event = match read {
        Ok(event) => event,
        Err(invalid) => {
            return Prepared::Reject {
                account: Some(account),
                event_id: EventText::Unknown,
                action: EventText::Unknown,
                failure: never_sent(invalid.kind(), invalid.to_string()),
            };
        }
    };
    let start = out.len();
    let mapped = assignments.map_into(
        &event,
        environment,
        record.timestamp_ms,
        user_attributes(record),
        out,
    );
    let action = match assignments.defined_action(event.action) {
        Some(name) => EventText::Defined(name),
        None => EventText::Owned(event.action.into()),
    };
    let event_id = EventText::Owned(event.id.into());
    match mapped {
        Ok(written) => Prepared::Send {
            account,
            event_id,
            action,
            batch: start..out.len(),
            identities: written.identities,
            truncated_values: written.truncated_values,
        },
        Err(MapError::Unmapped(_)) if rules.unmapped_action == UnmappedAction::Skip => {
            Prepared::Skip {
                account,
                event_id,
                action,
                reason: "unmapped_action",
            }
        }
        Err(error) => Prepared::Reject {
            account: Some(account),
            event_id,
            action,
            failure: never_sent(error.kind(), error.to_string()),
        },
    }
}

/// A replayed dead letter's user attributes are older than what the customer's later
/// records set meanwhile: they are left out, unless the replay asked to keep them.
fn user_attributes(record: &SourceRecord) -> UserAttributes {
    let replayed = record.header_text(REPLAY_COUNT).is_some();
    if replayed && record.header_text(REPLAY_ATTRIBUTES).map(str::trim) != Some("keep") {
        UserAttributes::LeaveOut
    } else {
        UserAttributes::Write
    }
}

fn never_sent(kind: ErrorKind, error: String) -> Failure {
    Failure {
        kind,
        error,
        http_status: None,
        http_body: None,
        attempt: 0,
        first_attempt_ms: None,
        last_attempt_ms: None,
        not_before_ms: None,
        later_records: Vec::new(),
    }
}

/// A record to send, its batch at `batch` of the buffer intake wrote it to.
pub(super) struct Taken {
    pub item: InFlight,
    pub batch: Range<usize>,
    /// Its `user_identities` member, from the batch's start.
    pub identities: Range<usize>,
}

/// Intake: a record to send comes back, its batch appended to `out`; one skipped or
/// rejected is finished here and leaves `out` as it was.
pub(super) fn take_in(ctx: &Arc<Context>, mut item: InFlight, out: &mut Vec<u8>) -> Option<Taken> {
    let accounts = |id: AccountId| {
        let account = ctx.accounts.get(id);
        AccountRules {
            assignments: &account.assignments,
            environment: account.environment,
        }
    };
    let rules = IntakeRules {
        routing: ctx.accounts.routing(),
        accounts: &accounts,
        event_max_bytes: ctx.event_max_bytes,
        unmapped_action: ctx.unmapped_action,
    };
    let prepared = prepare(&item.record, &rules, out);
    let account = match &prepared {
        Prepared::Send { account, .. } | Prepared::Skip { account, .. } => Some(*account),
        Prepared::Reject { account, .. } => *account,
    };
    if let Some(id) = account {
        ctx.accounts.get(id).records_add(1);
        item.account = Some(id);
    }
    match prepared {
        Prepared::Send {
            event_id,
            action,
            batch,
            identities,
            truncated_values,
            ..
        } => {
            ctx.metrics.values_truncated(truncated_values);
            item.event_id = event_id;
            item.action = action;
            Some(Taken {
                item,
                batch,
                identities,
            })
        }
        Prepared::Skip {
            event_id,
            action,
            reason,
            ..
        } => {
            item.event_id = event_id;
            item.action = action;
            ctx.metrics.event_skipped(reason);
            ctx.finish(vec![item]);
            None
        }
        Prepared::Reject {
            event_id,
            action,
            mut failure,
            ..
        } => {
            item.event_id = event_id;
            item.action = action;
            failure.attempt = item.attempts;
            failure.first_attempt_ms = item.first_attempt_ms;
            let ctx = ctx.clone();
            tokio::spawn(async move { ctx.dead_letter(item, failure).await });
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::topic::Topic;

    fn record(value: &[u8]) -> SourceRecord {
        SourceRecord::new(
            Topic::named("loyalty.point-add"),
            0,
            0,
            Some(5),
            None,
            Some(value.to_vec()),
            vec![],
        )
    }

    fn with_rules<T>(unmapped: UnmappedAction, f: impl FnOnce(&IntakeRules<'_>) -> T) -> T {
        let (assignments, _) =
            FieldAssignments::parse(include_str!("../../tests/data/field-assignments.toml"))
                .unwrap();
        let accounts = |_| AccountRules {
            assignments: &assignments,
            environment: Environment::Production,
        };
        f(&IntakeRules {
            routing: &Routing::Single,
            accounts: &accounts,
            event_max_bytes: 1024,
            unmapped_action: unmapped,
        })
    }

    #[test]
    fn a_replayed_record_keeps_its_user_attributes_only_when_asked() {
        let with = |headers: &[(&str, &str)]| {
            let headers = headers
                .iter()
                .map(|(k, v)| ((*k).into(), Some(v.as_bytes().to_vec())))
                .collect();
            let record = SourceRecord::new(Topic::named("t"), 0, 0, None, None, None, headers);
            user_attributes(&record)
        };
        assert_eq!(with(&[]), UserAttributes::Write);
        assert_eq!(with(&[(REPLAY_COUNT, "1")]), UserAttributes::LeaveOut);
        assert_eq!(
            with(&[(REPLAY_COUNT, "1"), (REPLAY_ATTRIBUTES, "keep")]),
            UserAttributes::Write
        );
    }

    #[test]
    fn a_good_event_is_appended_to_the_buffer() {
        let mut out = b"[{}".to_vec();
        let value =
            br#"{"id":"e1","action":"point_add","customer":{"id":"c"},"data":{"points":1}}"#;
        let prepared = with_rules(UnmappedAction::Skip, |rules| {
            prepare(&record(value), rules, &mut out)
        });
        let Prepared::Send {
            event_id,
            action,
            batch,
            ..
        } = prepared
        else {
            panic!("{prepared:?}");
        };
        assert_eq!(event_id.get(), Some("e1"));
        let EventText::Defined(name) = action else {
            panic!("{action:?}");
        };
        assert_eq!(name, "point_add");
        assert!(
            std::ptr::eq(name, crate::names::intern("point_add")),
            "the field assignments' own copy"
        );
        assert_eq!(action.get(), Some("point_add"));
        assert_eq!(EventText::Unknown.get(), None);
        assert_eq!(batch, 3..out.len());
        let sent: serde_json::Value = serde_json::from_slice(&out[batch]).unwrap();
        assert_eq!(sent["source_request_id"], "e1");
    }

    #[test]
    fn escaped_text_is_kept_decoded() {
        let value =
            br#"{"id":"e\u0031","action":"point_add","customer":{"id":"c"},"data":{"points":1}}"#;
        let prepared = with_rules(UnmappedAction::Skip, |rules| {
            prepare(&record(value), rules, &mut Vec::new())
        });
        let Prepared::Send { event_id, .. } = prepared else {
            panic!("{prepared:?}");
        };
        assert_eq!(event_id, EventText::Owned("e1".into()));
    }

    #[test]
    fn unmapped_actions_follow_the_setting() {
        let value = br#"{"id":"e1","action":"tier_change","customer":{"id":"c"}}"#;
        let skipped = with_rules(UnmappedAction::Skip, |rules| {
            prepare(&record(value), rules, &mut Vec::new())
        });
        assert!(matches!(
            skipped,
            Prepared::Skip {
                reason: "unmapped_action",
                ..
            }
        ));
        let rejected = with_rules(UnmappedAction::DeadLetter, |rules| {
            prepare(&record(value), rules, &mut Vec::new())
        });
        assert!(
            matches!(rejected, Prepared::Reject { ref failure, .. } if failure.kind == ErrorKind::Unmapped)
        );
    }

    #[test]
    fn bad_records_are_rejected_with_their_kind() {
        let cases: &[(&[u8], ErrorKind)] = &[
            (b"{nope", ErrorKind::InvalidJson),
            (
                br#"{"id":"e","action":"point_add","customer":{}}"#,
                ErrorKind::InvalidEvent,
            ),
            (
                br#"{"id":"e","action":"point_add","customer":{"id":"c"}}"#,
                ErrorKind::Mapping,
            ),
            (&[b' '; 2000], ErrorKind::TooLarge),
        ];
        for (value, kind) in cases {
            let mut out = b"kept".to_vec();
            let prepared = with_rules(UnmappedAction::Skip, |rules| {
                prepare(&record(value), rules, &mut out)
            });
            assert_eq!(out, b"kept", "a refused record leaves the buffer as it was");
            match prepared {
                Prepared::Reject { failure, .. } => {
                    assert_eq!(failure.kind, *kind);
                    assert_eq!(failure.attempt, 0);
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
