//! The admin endpoints: `/metrics` (Prometheus text), `/healthz` (the reader loops keep
//! polling Kafka), `/readyz` (joined the group, and some account's credentials accepted)
//! and `/accounts` (each mParticle account's state, as JSON).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use tokio::net::TcpListener;

use crate::http_server::{self, HttpResponse};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// A reader loop polling Kafka leaves no longer than this between polls (it polls at
/// least every second, also while paused); past it `/healthz` fails and the orchestrator
/// restarts the process.
pub const LIVENESS_STALL: Duration = Duration::from_secs(60);

/// Counts a loop's rounds (a consumer's polls); one relaxed add each.
#[derive(Debug, Default)]
pub struct Heartbeat(AtomicU64);

impl Heartbeat {
    pub fn beat(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A watched loop: its heartbeat, and the count last seen with when it last changed.
struct Watched {
    name: &'static str,
    heartbeat: Arc<Heartbeat>,
    seen: (u64, Instant),
}

/// What `/healthz` and `/readyz` report, set by the pipeline.
#[derive(Default)]
pub struct Health {
    /// The consumer has joined its group.
    pub joined: AtomicBool,
    /// mParticle refused the credentials of every account; consuming is stopped.
    pub auth_failed: AtomicBool,
    /// Each account's state, a JSON array refreshed by the pipeline every second.
    accounts: Mutex<String>,
    /// Shutting down: no longer taking records.
    pub draining: AtomicBool,
    watched: Mutex<Vec<Watched>>,
}

impl Health {
    /// Makes `/healthz` fail once `heartbeat` has not moved for [`LIVENESS_STALL`].
    pub fn watch(&self, name: &'static str, heartbeat: Arc<Heartbeat>) {
        let seen = (heartbeat.count(), Instant::now());
        self.lock_watched().push(Watched {
            name,
            heartbeat,
            seen,
        });
    }

    /// The first watched loop whose heartbeat has not moved for `stall` by `now`, and for
    /// how long. Judged when asked (a probe every few seconds), so nothing runs meanwhile.
    pub fn stuck(&self, now: Instant, stall: Duration) -> Option<(&'static str, Duration)> {
        let mut watched = self.lock_watched();
        let mut stuck = None;
        for loop_ in watched.iter_mut() {
            let count = loop_.heartbeat.count();
            if count != loop_.seen.0 {
                loop_.seen = (count, now);
            }
            let silent = now.saturating_duration_since(loop_.seen.1);
            if silent >= stall && stuck.is_none() {
                stuck = Some((loop_.name, silent));
            }
        }
        stuck
    }

    fn lock_watched(&self) -> std::sync::MutexGuard<'_, Vec<Watched>> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Each account's state, as `/accounts` shows it.
    pub fn set_accounts(&self, report: String) {
        *self.accounts.lock().unwrap_or_else(|p| p.into_inner()) = report;
    }

    fn accounts(&self) -> String {
        let report = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        if report.is_empty() {
            "[]".to_string()
        } else {
            report.clone()
        }
    }

    pub fn ready(&self) -> bool {
        self.joined.load(Ordering::SeqCst)
            && !self.auth_failed.load(Ordering::SeqCst)
            && !self.draining.load(Ordering::SeqCst)
    }
}

/// Binds the admin address; the listener is served by [`serve`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the admin endpoints until shutdown.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    health: Arc<Health>,
    shutdown: Shutdown,
) {
    let handler = move |request: hyper::Request<hyper::body::Incoming>| {
        let response = route(request.method(), request.uri().path(), &metrics, &health);
        async move { response }
    };
    http_server::serve(listener, handler, async move { shutdown.wait().await }).await;
}

fn route(method: &Method, path: &str, metrics: &Metrics, health: &Health) -> HttpResponse {
    if method != Method::GET {
        return http_server::text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match path {
        "/metrics" => http_server::respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "/healthz" => match health.stuck(Instant::now(), LIVENESS_STALL) {
            None => http_server::text(StatusCode::OK, "ok\n"),
            Some((name, silent)) => http_server::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "stuck: the {name} has not polled Kafka for {} s\n",
                    silent.as_secs()
                ),
            ),
        },
        "/accounts" => http_server::json(StatusCode::OK, health.accounts()),
        "/readyz" if health.ready() => http_server::text(StatusCode::OK, "ready\n"),
        "/readyz" => {
            let why = if health.draining.load(Ordering::SeqCst) {
                "draining"
            } else if health.auth_failed.load(Ordering::SeqCst) {
                "stopped: mParticle refused the API key or secret (of every account)"
            } else {
                "not yet joined the consumer group"
            };
            http_server::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            )
        }
        _ => http_server::text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /readyz, /accounts\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stops_beating_is_reported_stuck_after_the_stall() {
        let health = Health::default();
        let source = Arc::new(Heartbeat::default());
        health.watch("source reader", source.clone());
        let start = Instant::now();
        source.beat();
        assert_eq!(
            health.stuck(start + Duration::from_secs(30), LIVENESS_STALL),
            None
        );
        // Beating meanwhile: alive however long it runs.
        source.beat();
        assert_eq!(
            health.stuck(start + Duration::from_secs(80), LIVENESS_STALL),
            None
        );
        // Silent since the last look at 80 s.
        assert_eq!(
            health.stuck(start + Duration::from_secs(150), LIVENESS_STALL),
            Some(("source reader", Duration::from_secs(70)))
        );
    }
}
