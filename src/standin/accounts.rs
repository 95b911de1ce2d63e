//! The stand-in's accounts: the default one (`StandInConfig::api_key`/`api_secret`) and any
//! others, each known by its credentials as mParticle knows an input by its key and
//! secret, each with its own rate limit, and each of which a test can revoke.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use base64::Engine;
use hyper::StatusCode;
use hyper::header::HeaderValue;

use super::RateLimit;

/// The default account's name.
pub const DEFAULT: &str = "default";

/// An account besides the default one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandInAccount {
    pub name: String,
    pub api_key: String,
    pub api_secret: String,
}

impl StandInAccount {
    pub fn new(name: &str, api_key: &str, api_secret: &str) -> StandInAccount {
        StandInAccount {
            name: name.into(),
            api_key: api_key.into(),
            api_secret: api_secret.into(),
        }
    }

    /// `name:key:secret`, as the binary's `--account` takes it.
    pub fn parse(text: &str) -> Option<StandInAccount> {
        let mut parts = text.splitn(3, ':');
        let (name, key, secret) = (parts.next()?, parts.next()?, parts.next()?);
        (!name.is_empty() && !key.is_empty() && !secret.is_empty())
            .then(|| StandInAccount::new(name, key, secret))
    }
}

/// Every account, by its place: 0 is the default one.
pub(super) struct Registry {
    accounts: Vec<StandInAccount>,
    revoked: Mutex<HashSet<usize>>,
    /// Limits of the accounts other than the default one (whose limit is the stand-in's).
    limits: Mutex<HashMap<usize, RateLimit>>,
}

impl Registry {
    pub fn new(default: StandInAccount, others: &[StandInAccount]) -> Registry {
        let mut accounts = vec![default];
        accounts.extend(others.iter().cloned());
        Registry {
            accounts,
            revoked: Mutex::new(HashSet::new()),
            limits: Mutex::new(HashMap::new()),
        }
    }

    pub fn name(&self, account: usize) -> &str {
        &self.accounts[account].name
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.accounts.iter().position(|a| a.name == name)
    }

    /// The credentials check: 401 without a Basic header, 403 with a key and secret no
    /// account has, or those of a revoked account; the account otherwise.
    pub fn check(&self, header: Option<&HeaderValue>) -> Result<usize, StatusCode> {
        let header = header
            .and_then(|h| h.to_str().ok())
            .ok_or(StatusCode::UNAUTHORIZED)?;
        let encoded = header
            .strip_prefix("Basic ")
            .ok_or(StatusCode::UNAUTHORIZED)?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| StatusCode::UNAUTHORIZED)?;
        let account = self
            .accounts
            .iter()
            .position(|a| decoded == format!("{}:{}", a.api_key, a.api_secret).as_bytes())
            .ok_or(StatusCode::FORBIDDEN)?;
        if super::lock(&self.revoked).contains(&account) {
            return Err(StatusCode::FORBIDDEN);
        }
        Ok(account)
    }

    /// Refuses (`true`) or accepts again the account's credentials.
    pub fn revoke(&self, account: usize, revoked: bool) {
        let mut set = super::lock(&self.revoked);
        if revoked {
            set.insert(account);
        } else {
            set.remove(&account);
        }
    }

    /// Sets the limit of an account other than the default one.
    pub fn set_limit(&self, account: usize, rate: Option<f64>) {
        let mut limits = super::lock(&self.limits);
        match rate {
            Some(rate) => {
                limits.insert(account, RateLimit::new(rate));
            }
            None => {
                limits.remove(&account);
            }
        }
    }

    /// Whether the account's own limit lets `batches` through now (`None`: it has none).
    pub fn take(&self, account: usize, batches: usize) -> Option<bool> {
        super::lock(&self.limits)
            .get_mut(&account)
            .map(|limit| limit.take(batches))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(key: &str, secret: &str) -> HeaderValue {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    #[test]
    fn each_account_is_known_by_its_credentials_and_can_be_revoked() {
        let registry = Registry::new(
            StandInAccount::new(DEFAULT, "k", "s"),
            &[StandInAccount::new("brand-b", "kb", "sb")],
        );
        assert_eq!(registry.check(Some(&basic("k", "s"))), Ok(0));
        assert_eq!(registry.check(Some(&basic("kb", "sb"))), Ok(1));
        assert_eq!(
            registry.check(Some(&basic("kb", "s"))),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(registry.check(None), Err(StatusCode::UNAUTHORIZED));
        registry.revoke(1, true);
        assert_eq!(
            registry.check(Some(&basic("kb", "sb"))),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(registry.check(Some(&basic("k", "s"))), Ok(0));
        registry.revoke(1, false);
        assert_eq!(registry.check(Some(&basic("kb", "sb"))), Ok(1));
        assert_eq!(
            StandInAccount::parse("brand-c:kc:s:c"),
            Some(StandInAccount::new("brand-c", "kc", "s:c"))
        );
    }
}
