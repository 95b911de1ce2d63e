//! A minimal HTTP/1.1 server loop over hyper, shared by the admin endpoints and the
//! mParticle stand-in: accept, serve each connection on its own task, stop on a signal.
//! Bounded against slow or many clients: a connection has [`HEADER_READ_TIMEOUT`] to
//! send its request's headers, at most [`MAX_CONNECTIONS`] are served at once, and a
//! failing accept (out of file descriptors, say) is retried after a pause, not at once.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::debug;

/// How long a connection may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 256;
/// The pause after a failed accept.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// A response with a full body.
pub type HttpResponse = Response<Full<Bytes>>;

/// Serves `handler` on `listener` until `stop` resolves.
pub async fn serve<H, F>(listener: TcpListener, handler: H, stop: impl Future<Output = ()>)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    tokio::pin!(stop);
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = &mut stop => return,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let (stream, _) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    debug!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let response = handler(request);
                async move { Ok::<_, Infallible>(response.await) }
            });
            if let Err(error) = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%error, "connection ended with an error");
            }
        });
    }
}

/// A response with `status`, a content type and `body`.
pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> HttpResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> HttpResponse {
    respond(status, "text/plain; charset=utf-8", body)
}

/// A JSON response.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> HttpResponse {
    respond(status, "application/json", body)
}
