//! `MPARTICLE_ACCOUNTS_FILE`: the accounts file read and checked, every problem at once.
//!
//! ```toml
//! [routing]
//! header = "mparticle-account"   # the record header naming the account, and/or
//! path = "data.brand"            # a path into the event naming it
//! default = "brand-a"            # for a record that names none (absent: dead-lettered)
//!
//! [accounts.brand-a]
//! api_url = "https://s2s.us2.mparticle.com/v2/events"   # default: MPARTICLE_API_URL
//! api_key_env = "BRAND_A_MPARTICLE_KEY"                  # or api_key_file = "/secrets/…"
//! api_secret_env = "BRAND_A_MPARTICLE_SECRET"            # or api_secret_file
//! development = false
//! max_batches_per_second = 100                           # optional cap
//! field_assignments_file = "config/brand-a.toml"         # default: FIELD_ASSIGNMENTS_FILE
//! ```
//!
//! The file names where the key and secret are, never the values, so that Kubernetes
//! Secrets can be mounted as variables or files.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::routing::{Route, Routing};
use super::{AccountSettings, AccountsConfig};
use crate::config::{MPARTICLE_ACCOUNTS_FILE, MparticleConfig, Secret, api_urls};
use crate::mapping::FieldAssignments;

/// Longest account name: it is a metric label and a header value.
const NAME_MAX_CHARS: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    routing: RawRouting,
    #[serde(default)]
    accounts: BTreeMap<String, RawAccount>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    header: Option<String>,
    path: Option<String>,
    default: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    api_url: Option<String>,
    api_key_env: Option<String>,
    api_key_file: Option<PathBuf>,
    api_secret_env: Option<String>,
    api_secret_file: Option<PathBuf>,
    development: Option<bool>,
    max_batches_per_second: Option<f64>,
    field_assignments_file: Option<PathBuf>,
}

/// Reads the accounts file at `path`. `base` gives what the file leaves out (the URL, the
/// timeouts and request settings), `default_assignments` the field-assignments file of an
/// account that names none, and `vars` the environment its `*_env` entries name.
pub fn load(
    path: &Path,
    base: &MparticleConfig,
    default_assignments: &Path,
    vars: &BTreeMap<String, String>,
) -> Result<AccountsConfig, Vec<String>> {
    let shown = path.display();
    let problem = |text: String| format!("{MPARTICLE_ACCOUNTS_FILE} {shown}: {text}");
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![problem(format!("cannot read it: {e}"))])?;
    let raw: RawFile = toml::from_str(&text).map_err(|e| vec![problem(e.message().to_string())])?;
    let mut problems = Vec::new();
    if raw.accounts.is_empty() {
        problems.push(problem("it names no account ([accounts.<name>])".into()));
    }
    let mut loaded: HashMap<PathBuf, Arc<FieldAssignments>> = HashMap::new();
    let mut warnings = Vec::new();
    let mut accounts = Vec::new();
    for (name, account) in &raw.accounts {
        let mut local = Vec::new();
        if !valid_name(name) {
            local.push(format!(
                "the name {name:?} must be 1 to {NAME_MAX_CHARS} of the characters a-z A-Z 0-9 . _ -"
            ));
        }
        let mut mparticle = base.clone();
        if let Some(url) = &account.api_url {
            let (events, bulk, wrong) = api_urls("api_url", url.trim());
            local.extend(wrong);
            (mparticle.events_url, mparticle.bulk_url) = (events, bulk);
        }
        mparticle.api_key = secret(
            "api_key",
            &account.api_key_env,
            &account.api_key_file,
            vars,
            &mut local,
        );
        mparticle.api_secret = secret(
            "api_secret",
            &account.api_secret_env,
            &account.api_secret_file,
            vars,
            &mut local,
        );
        mparticle.development = account.development.unwrap_or(base.development);
        mparticle.max_batches_per_second = match account.max_batches_per_second {
            Some(rate) if !(rate.is_finite() && rate > 0.0) => {
                local.push(format!(
                    "max_batches_per_second is {rate}; it must be a positive number"
                ));
                None
            }
            Some(rate) => Some(rate),
            None => base.max_batches_per_second,
        };
        let assignments_file = account
            .field_assignments_file
            .clone()
            .unwrap_or_else(|| default_assignments.to_path_buf());
        let assignments = match loaded.get(&assignments_file) {
            Some(assignments) => Some(assignments.clone()),
            None => match FieldAssignments::load(&assignments_file) {
                Ok((assignments, found)) => {
                    let assignments = Arc::new(assignments);
                    loaded.insert(assignments_file.clone(), assignments.clone());
                    warnings.extend(found.into_iter().map(|w| (assignments_file.clone(), w)));
                    Some(assignments)
                }
                Err(error) => {
                    local.extend(
                        error
                            .errors
                            .iter()
                            .map(|finding| format!("field assignments {}: {finding}", error.file)),
                    );
                    None
                }
            },
        };
        problems.extend(
            local
                .into_iter()
                .map(|p| problem(format!("account {name}: {p}"))),
        );
        if let Some(assignments) = assignments {
            accounts.push(AccountSettings {
                name: name.clone(),
                mparticle,
                field_assignments_file: assignments_file,
                assignments,
            });
        }
    }
    let routing = routing(&raw.routing, &raw.accounts, &mut |p| {
        problems.push(problem(p))
    });
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(AccountsConfig {
        accounts,
        routing,
        file: Some(path.to_path_buf()),
        warnings,
    })
}

fn valid_name(name: &str) -> bool {
    (1..=NAME_MAX_CHARS).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A key or secret from the variable or the file the account names (exactly one of them).
fn secret(
    what: &str,
    env: &Option<String>,
    file: &Option<PathBuf>,
    vars: &BTreeMap<String, String>,
    problems: &mut Vec<String>,
) -> Secret {
    let value = match (env, file) {
        (Some(_), Some(_)) => Err(format!("give {what}_env or {what}_file, not both")),
        (None, None) => Err(format!("{what}_env or {what}_file is required")),
        (Some(name), None) => vars
            .get(name.trim())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{what}_env names {name}, which is not set")),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|v| v.trim().to_string())
            .map_err(|e| format!("{what}_file {}: {e}", path.display()))
            .and_then(|v| {
                if v.is_empty() {
                    Err(format!("{what}_file {} is empty", path.display()))
                } else {
                    Ok(v)
                }
            }),
    };
    match value {
        Ok(value) => Secret::new(value),
        Err(problem) => {
            problems.push(problem);
            Secret::new("")
        }
    }
}

/// The routing rule: a header and/or a path, and a default account that must exist.
fn routing(
    raw: &RawRouting,
    accounts: &BTreeMap<String, RawAccount>,
    problem: &mut dyn FnMut(String),
) -> Routing {
    let id_of = |name: &str| accounts.keys().position(|n| n == name);
    let header = raw
        .header
        .as_deref()
        .map(str::trim)
        .filter(|h| !h.is_empty());
    let path: Option<Vec<String>> = raw.path.as_deref().map(|path| {
        let segments: Vec<String> = path.trim().split('.').map(str::to_string).collect();
        if segments.iter().any(String::is_empty) {
            problem(format!(
                "routing path {path:?} must be dotted names, such as \"data.brand\""
            ));
        }
        segments
    });
    let default = raw.default.as_deref().map(str::trim).and_then(|name| {
        let id = id_of(name);
        if id.is_none() {
            problem(format!(
                "routing default {name:?} is not one of the accounts"
            ));
        }
        id
    });
    if header.is_none() && path.is_none() && raw.default.is_none() {
        problem(
            "[routing] needs a header, a path or a default: which account is a record's?".into(),
        );
    }
    let mut routes = Vec::new();
    if let Some(header) = header {
        routes.push(Route::Header(header.to_string()));
    }
    if let Some(path) = path {
        routes.push(Route::Path(path));
    }
    Routing::Rule {
        routes,
        names: accounts.keys().cloned().collect(),
        default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const ASSIGNMENTS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/field-assignments.toml"
    );

    fn base() -> MparticleConfig {
        let vars = [("MPARTICLE_API_KEY", "k"), ("MPARTICLE_API_SECRET", "s")];
        Config::from_vars(vars.map(|(k, v)| (k.to_string(), v.to_string())))
            .unwrap()
            .mparticle
    }

    fn written(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mpf-accounts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn accounts_take_their_credentials_from_variables_or_files() {
        let secret_file = written("b-secret", "secret-of-b\n");
        let file = written(
            "good.toml",
            &format!(
                r#"
[routing]
header = "mparticle-account"
path = "data.brand"
default = "brand-a"

[accounts.brand-b]
api_url = "https://s2s.us2.mparticle.com/v2/events"
api_key_env = "B_KEY"
api_secret_file = "{}"
development = true
max_batches_per_second = 50

[accounts.brand-a]
api_key_env = "A_KEY"
api_secret_env = "A_SECRET"
"#,
                secret_file.display()
            ),
        );
        let env = vars(&[
            ("A_KEY", "key-a"),
            ("A_SECRET", "secret-a"),
            ("B_KEY", "key-b"),
        ]);
        let config = load(&file, &base(), Path::new(ASSIGNMENTS), &env).unwrap();
        let names: Vec<&str> = config.accounts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["brand-a", "brand-b"], "in name order");
        let (a, b) = (&config.accounts[0].mparticle, &config.accounts[1].mparticle);
        assert_eq!(a.api_key.expose(), "key-a");
        assert_eq!(a.events_url, crate::config::DEFAULT_API_URL);
        assert!(!a.development);
        assert_eq!(b.api_secret.expose(), "secret-of-b");
        assert_eq!(b.bulk_url, "https://s2s.us2.mparticle.com/v2/bulkevents");
        assert!(b.development);
        assert_eq!(b.max_batches_per_second, Some(50.0));
        assert!(
            Arc::ptr_eq(
                &config.accounts[0].assignments,
                &config.accounts[1].assignments
            ),
            "one file is loaded once"
        );
        assert_eq!(
            config.routing,
            Routing::Rule {
                routes: vec![
                    Route::Header("mparticle-account".into()),
                    Route::Path(vec!["data".into(), "brand".into()]),
                ],
                names: vec!["brand-a".into(), "brand-b".into()],
                default: Some(0),
            }
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_and_no_secret_is_shown() {
        let file = written(
            "bad.toml",
            r#"
[routing]
default = "brand-z"

[accounts."brand a"]
api_key_env = "A_KEY"
api_key_file = "/nowhere"
api_secret_env = "A_SECRET"

[accounts.brand-b]
api_url = "ftp://example.com/events"
api_key_env = "MISSING"
api_secret_env = "A_SECRET"
max_batches_per_second = -1
field_assignments_file = "/nowhere/field-assignments.toml"
"#,
        );
        let env = vars(&[("A_KEY", "key-a"), ("A_SECRET", "very-secret-value")]);
        let problems = load(&file, &base(), Path::new(ASSIGNMENTS), &env).unwrap_err();
        let text = problems.join("\n");
        for expected in [
            "account brand a: the name \"brand a\" must be",
            "account brand a: give api_key_env or api_key_file, not both",
            "account brand-b: api_url is \"ftp://example.com/events\"",
            "account brand-b: api_key_env names MISSING, which is not set",
            "account brand-b: max_batches_per_second is -1",
            "account brand-b: field assignments /nowhere/field-assignments.toml",
            "routing default \"brand-z\" is not one of the accounts",
        ] {
            assert!(text.contains(expected), "{expected:?} in:\n{text}");
        }
        assert!(!text.contains("very-secret-value") && !text.contains("key-a"));
        assert!(
            problems
                .iter()
                .all(|p| p.starts_with("MPARTICLE_ACCOUNTS_FILE "))
        );
    }

    #[test]
    fn a_file_without_accounts_or_rule_is_refused() {
        let file = written("empty.toml", "[routing]\n");
        let problems = load(&file, &base(), Path::new(ASSIGNMENTS), &vars(&[])).unwrap_err();
        let text = problems.join("\n");
        assert!(text.contains("names no account"), "{text}");
        assert!(
            text.contains("needs a header, a path or a default"),
            "{text}"
        );
        let unknown = written("unknown.toml", "[accounts.a]\napi_key = \"inline\"\n");
        let problems = load(&unknown, &base(), Path::new(ASSIGNMENTS), &vars(&[])).unwrap_err();
        assert!(problems[0].contains("unknown field"), "{problems:?}");
    }
}
