//! Which account a record belongs to: the first of the rule's routes that finds a name
//! (a record header, then a path into the event), else the default account. A name that
//! is not one of the accounts, or no name and no default, is the record's dead letter
//! (`unknown_account`).

use super::AccountId;
use crate::json::{JsonValueTrait, Value};
use crate::kafka::record::SourceRecord;

/// Where a record names its account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A record header, its value the account's name.
    Header(String),
    /// A dotted path into the event (a number selects an array item), its value (a
    /// string or an integer) the account's name.
    Path(Vec<String>),
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Header(header) => write!(f, "header {header}"),
            Route::Path(path) => write!(f, "event field {}", path.join(".")),
        }
    }
}

/// How records are routed among the accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    /// One account (no accounts file): every record is its.
    Single,
    Rule {
        routes: Vec<Route>,
        /// The accounts' names, sorted: an [`AccountId`] is a place in it.
        names: Vec<String>,
        default: Option<AccountId>,
    },
}

/// The rule in words, for `check-config`.
impl std::fmt::Display for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Routing::Rule {
            routes,
            names,
            default,
        } = self
        else {
            return f.write_str("every record to the one account");
        };
        for (i, route) in routes.iter().enumerate() {
            let between = if i + 1 < routes.len() {
                ", then "
            } else {
                ", "
            };
            write!(f, "{route}{between}")?;
        }
        match default {
            Some(id) if routes.is_empty() => write!(f, "every record to {}", names[*id]),
            Some(id) => write!(f, "else {}", names[*id]),
            None => f.write_str("else dead-lettered (unknown_account)"),
        }
    }
}

impl Routing {
    /// Whether routing reads the event (a path route), so needs it parsed first.
    pub fn reads_event(&self) -> bool {
        matches!(self, Routing::Rule { routes, .. } if routes.iter().any(|r| matches!(r, Route::Path(_))))
    }

    /// The account of `record`, whose value parsed is `event` (when it parses); the error
    /// says why it has none.
    pub fn route(&self, record: &SourceRecord, event: Option<&Value>) -> Result<AccountId, String> {
        let Routing::Rule {
            routes,
            names,
            default,
        } = self
        else {
            return Ok(0);
        };
        for route in routes {
            let (named, place) = match route {
                Route::Header(header) => {
                    let named = record.header_text(header).map(str::trim);
                    (named.map(str::to_string), format!("header {header}"))
                }
                Route::Path(path) => (
                    event.and_then(|e| at(e, path)).and_then(name_in),
                    format!("event field {}", path.join(".")),
                ),
            };
            let Some(named) = named.filter(|n| !n.is_empty()) else {
                continue;
            };
            return names.binary_search(&named).map_err(|_| {
                format!("{place} names account {named:?}, which is not in the accounts file")
            });
        }
        default.ok_or_else(|| {
            let places: Vec<String> = routes
                .iter()
                .map(|route| match route {
                    Route::Header(header) => format!("header {header}"),
                    Route::Path(path) => format!("event field {}", path.join(".")),
                })
                .collect();
            format!(
                "the record names no account ({}) and the accounts file has no default",
                places.join(", ")
            )
        })
    }
}

fn at<'v>(event: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut value = event;
    for segment in path {
        value = match segment.parse::<usize>() {
            Ok(index) if value.is_array() => value.get(index)?,
            _ => value.get(segment.as_str())?,
        };
    }
    Some(value)
}

/// An account's name as an event field holds it: a string, or an integer's digits.
fn name_in(value: &Value) -> Option<String> {
    if let Some(text) = value.as_str() {
        return Some(text.trim().to_string());
    }
    value
        .as_i64()
        .map(|n| n.to_string())
        .or_else(|| value.as_u64().map(|n| n.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::topic::Topic;

    fn record(headers: &[(&str, &str)]) -> SourceRecord {
        let headers = headers
            .iter()
            .map(|(k, v)| ((*k).into(), Some(v.as_bytes().to_vec())))
            .collect();
        SourceRecord::new(Topic::named("t"), 0, 0, None, None, None, headers)
    }

    fn rule(routes: Vec<Route>, default: Option<AccountId>) -> Routing {
        Routing::Rule {
            routes,
            names: vec!["brand-a".into(), "brand-b".into(), "brand-c".into()],
            default,
        }
    }

    fn event(text: &str) -> Value {
        crate::json::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn a_header_names_the_account_before_the_event_does() {
        let routing = rule(
            vec![
                Route::Header("mparticle-account".into()),
                Route::Path(vec!["data".into(), "brand".into()]),
            ],
            None,
        );
        let by_event = event(r#"{"data":{"brand":"brand-c"}}"#);
        let headed = record(&[("mparticle-account", "brand-b")]);
        assert_eq!(routing.route(&headed, Some(&by_event)), Ok(1));
        assert_eq!(routing.route(&record(&[]), Some(&by_event)), Ok(2));
        assert!(routing.reads_event());
    }

    #[test]
    fn a_path_may_select_an_array_item_and_an_integer_is_a_name() {
        let routing = Routing::Rule {
            routes: vec![Route::Path(vec!["brands".into(), "1".into()])],
            names: vec!["17".into(), "42".into()],
            default: None,
        };
        let value = event(r#"{"brands":[17,42]}"#);
        assert_eq!(routing.route(&record(&[]), Some(&value)), Ok(1));
    }

    #[test]
    fn no_name_goes_to_the_default_and_an_unknown_name_nowhere() {
        let routing = rule(vec![Route::Header("mparticle-account".into())], Some(0));
        assert_eq!(routing.route(&record(&[]), None), Ok(0));
        let unknown = routing
            .route(&record(&[("mparticle-account", "brand-z")]), None)
            .unwrap_err();
        assert!(unknown.contains("\"brand-z\""), "{unknown}");
        let without = rule(vec![Route::Header("mparticle-account".into())], None);
        let none = without.route(&record(&[]), None).unwrap_err();
        assert!(none.contains("no default"), "{none}");
        assert!(!without.reads_event());
    }

    #[test]
    fn one_account_takes_every_record() {
        assert_eq!(Routing::Single.route(&record(&[]), None), Ok(0));
    }

    #[test]
    fn the_rule_reads_in_words() {
        let both = rule(
            vec![
                Route::Header("h".into()),
                Route::Path(vec!["data".into(), "brand".into()]),
            ],
            None,
        );
        assert_eq!(
            both.to_string(),
            "header h, then event field data.brand, else dead-lettered (unknown_account)"
        );
        assert_eq!(rule(vec![], Some(1)).to_string(), "every record to brand-b");
        assert_eq!(
            rule(vec![Route::Header("h".into())], Some(0)).to_string(),
            "header h, else brand-a"
        );
    }
}
