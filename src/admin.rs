//! The admin endpoints: `/metrics` (Prometheus text), `/healthz` (the loops run) and
//! `/readyz` (joined the group and not stopped by an auth failure).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::{Method, StatusCode};
use tokio::net::TcpListener;

use crate::http_server::{self, HttpResponse};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// What `/healthz` and `/readyz` report, set by the pipeline.
#[derive(Default)]
pub struct Health {
    /// The consumer has joined its group.
    pub joined: AtomicBool,
    /// mParticle refused the credentials; consuming is stopped.
    pub auth_failed: AtomicBool,
    /// Shutting down: no longer taking records.
    pub draining: AtomicBool,
}

impl Health {
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
        "/healthz" => http_server::text(StatusCode::OK, "ok\n"),
        "/readyz" if health.ready() => http_server::text(StatusCode::OK, "ready\n"),
        "/readyz" => {
            let why = if health.draining.load(Ordering::SeqCst) {
                "draining"
            } else if health.auth_failed.load(Ordering::SeqCst) {
                "stopped: mParticle refused the API key or secret"
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
            "not found: try /metrics, /healthz, /readyz\n",
        ),
    }
}
