//! Scripted misbehaviour: rules that make the stand-in answer as mParticle does when it is
//! unwell (429 with `Retry-After`, 5xx, slow answers, refused credentials, a 400 for one
//! particular batch). The first rule that matches a request applies.

use serde::{Deserialize, Serialize};

use crate::random::Xorshift;

/// One rule. JSON form: `{"status": 503, "times": 2}`, `{"status": 429, "retry_after": 3}`,
/// `{"delay_ms": 15000}`, `{"status": 400, "when_id": "evt-7"}`, `{"status": 503,
/// "probability": 0.1}`, `{"partial": true, "when_id": "evt-7"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// The status to answer; absent: answer as usual, after `delay_ms`.
    #[serde(default)]
    pub status: Option<u16>,
    /// How many requests the rule applies to; absent: until cleared.
    #[serde(default)]
    pub times: Option<u32>,
    /// Wait this long before answering.
    #[serde(default)]
    pub delay_ms: u64,
    /// `Retry-After` seconds to send with the answer.
    #[serde(default)]
    pub retry_after: Option<u32>,
    /// Apply to this share of matching requests (0–1); absent: all.
    #[serde(default)]
    pub probability: Option<f64>,
    /// Apply only to requests holding a batch with this `source_request_id`, or an event
    /// with this `source_message_id` (in a batch of several events).
    #[serde(default)]
    pub when_id: Option<String>,
    /// The body to answer with; absent: mParticle's error body for 400, empty otherwise.
    #[serde(default)]
    pub body: Option<String>,
    /// `X-mp-rate-limit-exceeded` to send with the answer (`account`, `acceleration`, …).
    #[serde(default)]
    pub limit_exceeded: Option<String>,
    /// A `Location` to send with the answer (a redirect).
    #[serde(default)]
    pub location: Option<String>,
    /// Answer with a body that echoes the request's headers, as some proxies' error pages
    /// do (the `Authorization` header among them).
    #[serde(default)]
    pub echo_headers: bool,
    /// With `when_id`: refuse only that batch, as mParticle answers a bulk request in which
    /// some batches fail: 202, the others accepted, and an `errors` body naming the refused
    /// one by its position (`[2].user_identities: ...`). A request of that batch alone is
    /// answered 400.
    #[serde(default)]
    pub partial: bool,
    /// Apply only to requests of this account (the stand-in's account names); absent:
    /// every account's.
    #[serde(default)]
    pub account: Option<String>,
}

impl Fault {
    /// A rule answering `status` to every request until cleared.
    pub fn status(status: u16) -> Fault {
        Fault {
            status: Some(status),
            times: None,
            delay_ms: 0,
            retry_after: None,
            probability: None,
            when_id: None,
            body: None,
            limit_exceeded: None,
            location: None,
            echo_headers: false,
            partial: false,
            account: None,
        }
    }

    /// Refuses the batch `id` inside a bulk request and accepts the rest ([`Fault::partial`]).
    pub fn refuse_in_bulk(id: impl Into<String>) -> Fault {
        Fault {
            status: None,
            partial: true,
            ..Fault::status(0)
        }
        .when_id(id)
    }

    pub fn body(mut self, body: impl Into<String>) -> Fault {
        self.body = Some(body.into());
        self
    }

    pub fn location(mut self, location: impl Into<String>) -> Fault {
        self.location = Some(location.into());
        self
    }

    pub fn echo_headers(mut self) -> Fault {
        self.echo_headers = true;
        self
    }

    pub fn times(mut self, times: u32) -> Fault {
        self.times = Some(times);
        self
    }

    pub fn retry_after(mut self, seconds: u32) -> Fault {
        self.retry_after = Some(seconds);
        self
    }

    pub fn limit_exceeded(mut self, limit: impl Into<String>) -> Fault {
        self.limit_exceeded = Some(limit.into());
        self
    }

    /// Applies only to requests of the account `name`.
    pub fn for_account(mut self, name: impl Into<String>) -> Fault {
        self.account = Some(name.into());
        self
    }

    pub fn when_id(mut self, id: impl Into<String>) -> Fault {
        self.when_id = Some(id.into());
        self
    }

    pub fn probability(mut self, p: f64) -> Fault {
        self.probability = Some(p);
        self
    }

    /// A rule that answers as usual but only after `delay_ms`.
    pub fn delay(delay_ms: u64) -> Fault {
        Fault {
            status: None,
            delay_ms,
            ..Fault::status(0)
        }
    }
}

/// The rules in force, in order.
#[derive(Debug, Default)]
pub struct FaultScript {
    rules: Vec<Fault>,
    random: Option<Xorshift>,
}

impl FaultScript {
    pub fn push(&mut self, fault: Fault) {
        self.rules.push(fault);
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// The rule for a request holding batches or events with `ids`, if any; counts it down.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn take(&mut self, ids: &[String], account: &str) -> Option<Fault> {
        for i in 0..self.rules.len() {
            let rule = &self.rules[i];
            if rule.account.as_deref().is_some_and(|a| a != account) {
                continue;
            }
            if let Some(id) = &rule.when_id {
                if !ids.iter().any(|x| x == id) {
                    continue;
                }
            }
            if let Some(p) = rule.probability {
                if self.next_unit() >= p {
                    continue;
                }
            }
            let rule = self.rules[i].clone();
            if let Some(times) = self.rules[i].times.as_mut() {
                *times -= 1;
                if *times == 0 {
                    self.rules.remove(i);
                }
            }
            return Some(rule);
        }
        None
    }

    /// A uniform number in [0, 1), seeded once from the clock.
    fn next_unit(&mut self) -> f64 {
        self.random
            .get_or_insert_with(|| Xorshift::seeded(crate::clock::unix_ms() as u64))
            .next_unit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_rules_run_out() {
        let mut script = FaultScript::default();
        script.push(Fault::status(503).times(2));
        assert_eq!(script.take(&[], "default").unwrap().status, Some(503));
        assert_eq!(script.take(&[], "default").unwrap().status, Some(503));
        assert_eq!(script.take(&[], "default"), None);
    }

    #[test]
    fn id_rules_match_only_their_batch() {
        let mut script = FaultScript::default();
        script.push(Fault::status(400).when_id("evt-7"));
        assert_eq!(script.take(&["evt-1".into()], "default"), None);
        assert_eq!(
            script
                .take(&["evt-1".into(), "evt-7".into()], "default")
                .unwrap()
                .status,
            Some(400)
        );
    }

    #[test]
    fn probability_spreads_roughly() {
        let mut script = FaultScript::default();
        script.push(Fault::status(503).probability(0.1));
        let hits = (0..10_000)
            .filter(|_| script.take(&[], "default").is_some())
            .count();
        assert!((700..1300).contains(&hits), "{hits}");
    }

    #[test]
    fn rules_parse_from_json() {
        let fault: Fault = serde_json::from_str(r#"{"status":429,"retry_after":3}"#).unwrap();
        assert_eq!(fault, Fault::status(429).retry_after(3));
        assert_eq!(Fault::delay(50).status, None);
    }
}
