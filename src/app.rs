//! The service as a whole: settings loaded and checked together, the admin endpoints and
//! the pipeline started, and a reason to stop turned into an exit code.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use prometheus::Registry;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::accounts::AccountsConfig;
use crate::admin::{self, Health};
use crate::config::{Config, ConfigProblems, FIELD_ASSIGNMENTS_FILE};
use crate::mapping::{FieldAssignments, LoadError};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::shutdown::{Shutdown, StopReason};

/// Exit code for bad configuration (EX_USAGE).
pub const EXIT_BAD_CONFIG: u8 = 64;
/// Exit code for an unrecoverable runtime error.
pub const EXIT_FATAL: u8 = 1;

/// Everything the service needs to start, checked.
pub struct Settings {
    pub config: Config,
    /// The mParticle accounts (one without an accounts file) and their field assignments.
    pub accounts: AccountsConfig,
}

impl Settings {
    /// Reads the environment, the accounts file if one is named, and the field-assignments
    /// files, reporting every problem of them all at once.
    pub fn load<I>(vars: I) -> Result<Settings, ConfigProblems>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: BTreeMap<String, String> = vars.into_iter().collect();
        let config = Config::from_vars(vars.clone());
        let path = Config::field_assignments_path_from_vars(vars.clone());
        let mut problems = ConfigProblems::default();
        let accounts = match &config {
            Ok(config) => match &config.accounts_file {
                Some(file) => {
                    crate::accounts::load(file, &config.mparticle, &path, &vars).map_err(|found| {
                        for problem in found {
                            problems.push(problem);
                        }
                    })
                }
                None => single(config, &path, &mut problems),
            },
            Err(found) => {
                problems.extend(found.clone());
                // The field assignments are still checked, so that every problem shows.
                if let Err(load_error) = FieldAssignments::load(&path) {
                    report(&mut problems, load_error);
                }
                Err(())
            }
        };
        match (config, accounts) {
            (Ok(config), Ok(accounts)) if problems.is_empty() => Ok(Settings { config, accounts }),
            _ => Err(problems),
        }
    }
}

/// The one account of the environment.
fn single(
    config: &Config,
    path: &Path,
    problems: &mut ConfigProblems,
) -> Result<AccountsConfig, ()> {
    match FieldAssignments::load(path) {
        Ok((assignments, warnings)) => Ok(AccountsConfig::single(
            config.mparticle.clone(),
            path.to_path_buf(),
            assignments,
            warnings,
        )),
        Err(load_error) => {
            report(problems, load_error);
            Err(())
        }
    }
}

fn report(problems: &mut ConfigProblems, load_error: LoadError) {
    for finding in load_error.errors {
        problems.push(format!(
            "{FIELD_ASSIGNMENTS_FILE} {}: {finding}",
            load_error.file
        ));
    }
}

/// The service, built and ready to run.
pub struct App {
    settings: Settings,
    metrics: Metrics,
    health: Arc<Health>,
    shutdown: Shutdown,
    admin_listener: TcpListener,
}

impl App {
    /// Registers the metrics and binds the admin address.
    pub async fn build(settings: Settings) -> anyhow::Result<App> {
        let metrics = Metrics::new(Registry::new(), settings.accounts.actions())?;
        let admin_listener = admin::bind(settings.config.admin_addr).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on ADMIN_ADDR {}: {e}",
                settings.config.admin_addr
            )
        })?;
        Ok(App {
            settings,
            metrics,
            health: Arc::new(Health::default()),
            shutdown: Shutdown::new(),
            admin_listener,
        })
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .unwrap_or(self.settings.config.admin_addr)
    }

    /// A handle that stops the service when triggered.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Runs until stopped; returns why it stopped.
    pub async fn run(self) -> StopReason {
        let App {
            settings,
            metrics,
            health,
            shutdown,
            admin_listener,
        } = self;
        for (file, warning) in &settings.accounts.warnings {
            warn!(file = %file.display(), "field assignments: {warning}");
        }
        let admin = tokio::spawn(admin::serve(
            admin_listener,
            metrics.clone(),
            health.clone(),
            shutdown.clone(),
        ));
        let grace = settings.config.shutdown_grace;
        match Pipeline::new(
            &settings.config,
            &settings.accounts,
            metrics,
            health,
            shutdown.clone(),
        ) {
            Ok(pipeline) => {
                for account in &settings.accounts.accounts {
                    if account.mparticle.credentials_in_clear() {
                        warn!(account = %account.name, "{}", crate::config::CLEAR_CREDENTIALS_WARNING);
                    }
                }
                let first = &settings.accounts.accounts[0];
                info!(
                    topics = ?settings.config.kafka.topics,
                    group = %settings.config.kafka.group_id,
                    mparticle = %crate::config::masked_url(&first.mparticle.events_url),
                    accounts = settings.accounts.accounts.len(),
                    "forwarding"
                );
                pipeline.run(grace).await;
            }
            Err(error) => shutdown.trigger(StopReason::Fatal(format!("cannot start: {error:#}"))),
        }
        shutdown.trigger(StopReason::Requested);
        let _ = admin.await;
        shutdown.reason().unwrap_or(StopReason::Requested)
    }
}

/// The process exit code for a stop reason.
pub fn exit_code(reason: &StopReason) -> u8 {
    match reason {
        StopReason::Signal(_) | StopReason::Requested => 0,
        StopReason::Fatal(_) => EXIT_FATAL,
    }
}
