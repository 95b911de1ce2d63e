//! The service as a whole: settings loaded and checked together, the admin endpoints and
//! the pipeline started, and a reason to stop turned into an exit code.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::Registry;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::admin::{self, Health};
use crate::config::{Config, ConfigProblems, FIELD_ASSIGNMENTS_FILE};
use crate::mapping::{FieldAssignments, Finding};
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
    pub assignments: FieldAssignments,
    pub warnings: Vec<Finding>,
}

impl Settings {
    /// Reads the environment and the field-assignments file, reporting every problem of
    /// both at once.
    pub fn load<I>(vars: I) -> Result<Settings, ConfigProblems>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let config = Config::from_vars(vars.clone());
        let path = Config::field_assignments_path_from_vars(vars);
        let assignments = FieldAssignments::load(&path);
        match (config, assignments) {
            (Ok(config), Ok((assignments, warnings))) => Ok(Settings {
                config,
                assignments,
                warnings,
            }),
            (config, assignments) => {
                let mut problems = config.err().unwrap_or_default();
                if let Err(load_error) = assignments {
                    for finding in load_error.errors {
                        problems.push(format!(
                            "{FIELD_ASSIGNMENTS_FILE} {}: {finding}",
                            load_error.file
                        ));
                    }
                }
                Err(problems)
            }
        }
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
        let metrics = Metrics::new(Registry::new(), settings.assignments.actions())?;
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
        for warning in &settings.warnings {
            warn!(file = %settings.config.field_assignments_file.display(), "field assignments: {warning}");
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
            settings.assignments,
            metrics,
            health,
            shutdown.clone(),
        ) {
            Ok(pipeline) => {
                if settings.config.mparticle.credentials_in_clear() {
                    warn!("{}", crate::config::CLEAR_CREDENTIALS_WARNING);
                }
                info!(
                    topics = ?settings.config.kafka.topics,
                    group = %settings.config.kafka.group_id,
                    mparticle = %crate::config::masked_url(&settings.config.mparticle.events_url),
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
