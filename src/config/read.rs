//! Reading variables one at a time: the environment by name, and a parser for each kind
//! of value that collects every problem instead of stopping at the first.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;

/// The environment by name. Names match whatever their case, as they always have.
pub(super) struct Env(BTreeMap<String, String>);

impl Env {
    pub(super) fn new(vars: &BTreeMap<String, String>) -> Env {
        Env(vars
            .iter()
            .map(|(name, value)| (name.to_ascii_uppercase(), value.clone()))
            .collect())
    }

    pub(super) fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

/// Parses one variable at a time, collecting problems instead of stopping at the first.
pub(super) struct Parser<'a> {
    pub(super) problems: &'a mut ConfigProblems,
}

impl Parser<'_> {
    pub(super) fn text(&mut self, value: Option<String>, default: &str) -> String {
        match value.map(|v| v.trim().to_string()) {
            Some(v) if !v.is_empty() => v,
            _ => default.to_string(),
        }
    }

    pub(super) fn required_secret(&mut self, name: &str, value: Option<String>) -> Secret {
        match value {
            Some(v) if !v.trim().is_empty() => Secret::new(v.trim()),
            _ => {
                self.problems
                    .push(format!("{name} is not set; it is required"));
                Secret::new("")
            }
        }
    }

    pub(super) fn boolean(&mut self, name: &str, value: Option<String>, default: bool) -> bool {
        match value.as_deref().map(|v| v.trim().to_ascii_lowercase()) {
            None => default,
            Some(v) if v.is_empty() => default,
            Some(v) if ["true", "1", "yes"].contains(&v.as_str()) => true,
            Some(v) if ["false", "0", "no"].contains(&v.as_str()) => false,
            Some(v) => {
                self.problems
                    .push(format!("{name} is {v:?}; it must be true or false"));
                default
            }
        }
    }

    pub(super) fn optional_rate(&mut self, name: &str, value: Option<String>) -> Option<f64> {
        let v = value?.trim().to_string();
        if v.is_empty() {
            return None;
        }
        match v.parse::<f64>() {
            Ok(rate) if rate.is_finite() && rate > 0.0 => Some(rate),
            _ => {
                self.problems.push(format!(
                    "{name} is {v:?}; it must be a positive number of batches per second"
                ));
                None
            }
        }
    }

    pub(super) fn duration(
        &mut self,
        name: &str,
        value: Option<String>,
        default: Duration,
    ) -> Duration {
        match value.as_deref().map(str::trim) {
            None | Some("") => default,
            Some(v) => match parse_duration(v) {
                Some(d) if !d.is_zero() => d,
                _ => {
                    self.problems.push(format!(
                        "{name} is {v:?}; it must be a duration such as 500ms, 10s, 2m or 1h"
                    ));
                    default
                }
            },
        }
    }

    pub(super) fn count(
        &mut self,
        name: &str,
        value: Option<String>,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
    ) -> usize {
        match value.as_deref().map(str::trim) {
            None | Some("") => default,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if range.contains(&n) => n,
                _ => {
                    self.problems.push(format!(
                        "{name} is {v:?}; it must be a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ));
                    default
                }
            },
        }
    }

    pub(super) fn socket_addr(
        &mut self,
        name: &str,
        value: Option<String>,
        default: &str,
    ) -> SocketAddr {
        let v = self.text(value, default);
        match v.parse() {
            Ok(addr) => addr,
            Err(_) => {
                self.problems.push(format!(
                    "{name} is {v:?}; it must be an address and port such as 0.0.0.0:9090"
                ));
                SocketAddr::from(([0, 0, 0, 0], 9090))
            }
        }
    }

    pub(super) fn api_urls(&mut self, url: &str) -> (String, String) {
        let (events, bulk, problem) = api_urls(MPARTICLE_API_URL, url);
        if let Some(problem) = problem {
            self.problems.push(problem);
        }
        (events, bulk)
    }

    pub(super) fn topic(&mut self, name: &str, value: Option<String>, default: &str) -> String {
        let topic = self.text(value, default);
        if !valid_topic_name(&topic) {
            self.problems.push(format!(
                "{name} is {topic:?}; a topic name is 1 to 249 of the characters a-z A-Z 0-9 . _ -"
            ));
        }
        topic
    }

    pub(super) fn topic_list(&mut self, name: &str, value: Option<String>) -> Vec<String> {
        let text = self.text(value, DEFAULT_TOPICS);
        let topics: Vec<String> = text
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if topics.is_empty() {
            self.problems
                .push(format!("{name} names no topic; give at least one"));
        }
        for topic in &topics {
            if !valid_topic_name(topic) {
                self.problems.push(format!(
                    "{name} contains {topic:?}; a topic name is 1 to 249 of the characters \
                     a-z A-Z 0-9 . _ -"
                ));
            }
        }
        topics
    }

    pub(super) fn backoff(&mut self, name: &str, value: Option<String>) -> Vec<Duration> {
        let text = self.text(value, DEFAULT_BACKOFF);
        let mut delays = Vec::new();
        for part in text.split(',').map(str::trim) {
            match parse_duration(part) {
                Some(d) => delays.push(d),
                None => {
                    self.problems.push(format!(
                        "{name} is {text:?}; it must be a comma-separated list of durations \
                         such as 10s,30s,2m,10m"
                    ));
                    return parse_backoff_default();
                }
            }
        }
        delays
    }
}

fn parse_backoff_default() -> Vec<Duration> {
    DEFAULT_BACKOFF
        .split(',')
        .filter_map(parse_duration)
        .collect()
}

pub(super) fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Parses `500ms`, `10s`, `2m`, `1h` (a whole number and a unit; a bare number is seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let millis = match unit.trim() {
        "ms" => number,
        "" | "s" => number.checked_mul(1_000)?,
        "m" => number.checked_mul(60_000)?,
        "h" => number.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(millis))
}

/// The events and bulk URLs of an Events API URL given as `name`, and what is wrong with
/// it, if anything.
pub(crate) fn api_urls(name: &str, url: &str) -> (String, String, Option<String>) {
    let parsed = reqwest::Url::parse(url);
    let shown = masked_url(url);
    let valid_scheme = matches!(&parsed, Ok(u) if u.scheme() == "https" || u.scheme() == "http");
    let path_ok = matches!(&parsed, Ok(u) if u.path().ends_with("/events"));
    let problem = if !valid_scheme {
        Some(format!(
            "{name} is {shown:?}; it must be an http or https URL"
        ))
    } else if !path_ok {
        Some(format!(
            "{name} is {shown:?}; its path must end in /events (the bulk URL is derived by \
             replacing it with /bulkevents)"
        ))
    } else {
        None
    };
    let events = url.trim_end_matches('/').to_string();
    let bulk = match events.strip_suffix("/events") {
        Some(base) => format!("{base}/bulkevents"),
        None => events.clone(),
    };
    (events, bulk, problem)
}
