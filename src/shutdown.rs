//! Stopping: one signal shared by every loop, saying why the service stops. SIGTERM and
//! SIGINT start a graceful drain; a fatal error (the dead-letter topic cannot be written)
//! stops it with exit code 1.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::{info, warn};

/// Why the service is stopping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// SIGTERM or SIGINT, by name.
    Signal(&'static str),
    /// Asked to stop by its owner (tests, embedding).
    Requested,
    /// An error the service cannot carry on after.
    Fatal(String),
}

/// A cloneable stop signal.
#[derive(Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<Option<StopReason>>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let (tx, _) = watch::channel(None);
        Shutdown { tx: Arc::new(tx) }
    }

    /// Starts stopping; the first reason given is kept.
    pub fn trigger(&self, reason: StopReason) {
        self.tx.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }

    pub fn reason(&self) -> Option<StopReason> {
        self.tx.borrow().clone()
    }

    pub fn is_triggered(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// Resolves once stopping has started.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in self, so the channel cannot close under us.
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// Triggers on SIGTERM or SIGINT, logging which one arrived.
    pub fn listen_for_signals(&self) {
        let shutdown = self.clone();
        tokio::spawn(async move {
            let name = wait_for_signal().await;
            info!(signal = name, "signal received; draining");
            shutdown.trigger(StopReason::Signal(name));
        });
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            warn!("cannot install signal handlers; only Ctrl-C stops the service");
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "SIGINT"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_is_kept() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.is_triggered());
        shutdown.trigger(StopReason::Fatal("dlq".into()));
        shutdown.trigger(StopReason::Signal("SIGTERM"));
        shutdown.wait().await;
        assert_eq!(shutdown.reason(), Some(StopReason::Fatal("dlq".into())));
    }
}
