//! mParticle accounts: one brand's workspace each, with its own credentials, URL,
//! Development switch, rate cap and field assignments, and the rule that says which
//! account a record belongs to.
//!
//! Without `MPARTICLE_ACCOUNTS_FILE` there is one account, `default`, made of the
//! `MPARTICLE_*` variables and `FIELD_ASSIGNMENTS_FILE`, and every record is its. With the
//! file ([`file`]), each record is routed ([`routing`]) by a header or a path into the
//! event; the running side of an account (its client, pacer and gate) is [`live`].

mod file;
pub mod live;
pub mod routing;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::MparticleConfig;
use crate::mapping::{FieldAssignments, Finding};

pub use file::load;
pub use live::{Account, Accounts};
pub use routing::Routing;

/// An account's place in [`AccountsConfig::accounts`] (the file's names in order).
pub type AccountId = usize;

/// The name of the one account made of the environment when there is no accounts file.
pub const DEFAULT_ACCOUNT: &str = "default";

/// One account, checked.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    pub name: String,
    /// Its URL, credentials, Development switch and rate cap; the timeouts, request slots
    /// and bulk settings are the process's (`MPARTICLE_*`).
    pub mparticle: MparticleConfig,
    pub field_assignments_file: PathBuf,
    pub assignments: Arc<FieldAssignments>,
}

/// Every account and the routing rule, checked.
#[derive(Debug, Clone)]
pub struct AccountsConfig {
    pub accounts: Vec<AccountSettings>,
    pub routing: Routing,
    /// Where the accounts came from: the file, or `None` for the environment's one.
    pub file: Option<PathBuf>,
    /// What the field-assignments files warn about, by file.
    pub warnings: Vec<(PathBuf, Finding)>,
}

impl AccountsConfig {
    /// The one account of the environment (no accounts file).
    pub fn single(
        mparticle: MparticleConfig,
        field_assignments_file: PathBuf,
        assignments: FieldAssignments,
        warnings: Vec<Finding>,
    ) -> AccountsConfig {
        let warnings = warnings
            .into_iter()
            .map(|w| (field_assignments_file.clone(), w))
            .collect();
        AccountsConfig {
            accounts: vec![AccountSettings {
                name: DEFAULT_ACCOUNT.to_string(),
                mparticle,
                field_assignments_file,
                assignments: Arc::new(assignments),
            }],
            routing: Routing::Single,
            file: None,
            warnings,
        }
    }

    /// Whether records are routed among several accounts (an accounts file).
    pub fn is_routed(&self) -> bool {
        !matches!(self.routing, Routing::Single)
    }

    /// Every action some account's field assignments define.
    pub fn actions(&self) -> Vec<&str> {
        let mut actions: Vec<&str> = self
            .accounts
            .iter()
            .flat_map(|a| a.assignments.actions())
            .collect();
        actions.sort_unstable();
        actions.dedup();
        actions
    }
}
