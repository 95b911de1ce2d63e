//! A local stand-in for mParticle's Events API, for development, tests and benchmarks.
//!
//! It enforces the documented contract (401 without credentials, 403 with wrong ones, 400
//! with mParticle's error body for a malformed batch or an oversized bulk request), answers
//! 202, records what it accepted (in memory, in an optional JSON-lines file, and at
//! `GET /_standin/accepted`), and can be told to misbehave ([`Fault`]) over HTTP
//! (`POST /_standin/faults`) or from a test.
//!
//! Routes: `POST /s2s/v2/events`, `/s2s/v2/bulkevents`, `/v2/events`, `/v2/bulkevents`;
//! `GET /_standin/accepted` (JSON lines), `GET /_standin/requests` (JSON lines),
//! `GET /_standin/stats`, `POST /_standin/faults`, `DELETE /_standin/faults`,
//! `POST /_standin/reset`.

pub mod contract;
pub mod faults;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;

pub use faults::Fault;
use faults::FaultScript;

use crate::http_server::{self, HttpResponse};
use crate::shutdown::{Shutdown, StopReason};

/// Largest body read at all; anything between the API's limit and this gets a 400.
const READ_LIMIT: usize = 8 * 1024 * 1024;

/// How the stand-in is set up.
#[derive(Debug, Clone)]
pub struct StandInConfig {
    pub api_key: String,
    pub api_secret: String,
    /// Append every accepted batch to this file as one JSON line.
    pub record_file: Option<PathBuf>,
    /// Keep accepted batches and the request log in memory (off for benchmarks: then only
    /// counts and ids are kept).
    pub keep_batches: bool,
}

impl Default for StandInConfig {
    fn default() -> Self {
        StandInConfig {
            api_key: "local-key".into(),
            api_secret: "local-secret".into(),
            record_file: None,
            keep_batches: true,
        }
    }
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestLog {
    /// When the request arrived, unix ms.
    pub at_ms: i64,
    pub path: String,
    pub status: u16,
    /// `source_request_id` of every batch in the body that could be read.
    pub ids: Vec<String>,
}

#[derive(Default)]
struct Recorded {
    batches: Vec<Value>,
    accepted_ids: Vec<String>,
    requests: Vec<RequestLog>,
    request_count: u64,
    by_status: std::collections::BTreeMap<u16, u64>,
}

struct State {
    config: StandInConfig,
    faults: Mutex<FaultScript>,
    recorded: Mutex<Recorded>,
    file: Mutex<Option<BufWriter<File>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running stand-in.
#[derive(Clone)]
pub struct StandIn {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Shutdown,
}

impl StandIn {
    /// Starts serving on `listener` in the background.
    pub fn start(listener: TcpListener, config: StandInConfig) -> std::io::Result<StandIn> {
        let addr = listener.local_addr()?;
        let file = match &config.record_file {
            Some(path) => Some(BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
            None => None,
        };
        let state = Arc::new(State {
            config,
            faults: Mutex::new(FaultScript::default()),
            recorded: Mutex::new(Recorded::default()),
            file: Mutex::new(file),
        });
        let shutdown = Shutdown::new();
        let handler_state = state.clone();
        let handler = move |request: Request<Incoming>| handle(handler_state.clone(), request);
        let stop = shutdown.clone();
        tokio::spawn(http_server::serve(listener, handler, async move {
            stop.wait().await
        }));
        Ok(StandIn {
            addr,
            state,
            shutdown,
        })
    }

    /// Binds 127.0.0.1 on a free port and starts.
    pub async fn start_local(config: StandInConfig) -> std::io::Result<StandIn> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        StandIn::start(listener, config)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to give the forwarder as `MPARTICLE_API_URL`.
    pub fn events_url(&self) -> String {
        format!("http://{}/s2s/v2/events", self.addr)
    }

    /// Adds a misbehaviour rule.
    pub fn add_fault(&self, fault: Fault) {
        lock(&self.state.faults).push(fault);
    }

    pub fn clear_faults(&self) {
        lock(&self.state.faults).clear();
    }

    /// Every accepted batch, in order of acceptance.
    pub fn accepted(&self) -> Vec<Value> {
        lock(&self.state.recorded).batches.clone()
    }

    /// `source_request_id` of every accepted batch, in order, duplicates included.
    pub fn accepted_ids(&self) -> Vec<String> {
        lock(&self.state.recorded).accepted_ids.clone()
    }

    pub fn accepted_count(&self) -> usize {
        lock(&self.state.recorded).accepted_ids.len()
    }

    /// Every request seen, in order.
    pub fn requests(&self) -> Vec<RequestLog> {
        lock(&self.state.recorded).requests.clone()
    }

    /// Stops serving.
    pub fn stop(&self) {
        self.shutdown.trigger(StopReason::Requested);
    }
}

async fn handle(state: Arc<State>, request: Request<Incoming>) -> HttpResponse {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    match (method, path.as_str()) {
        (Method::POST, "/s2s/v2/events" | "/v2/events") => events(state, request, false).await,
        (Method::POST, "/s2s/v2/bulkevents" | "/v2/bulkevents") => {
            events(state, request, true).await
        }
        (Method::GET, "/_standin/accepted") => {
            let recorded = lock(&state.recorded);
            json_lines(recorded.batches.iter())
        }
        (Method::GET, "/_standin/requests") => {
            let recorded = lock(&state.recorded);
            json_lines(recorded.requests.iter())
        }
        (Method::GET, "/_standin/stats") => {
            let recorded = lock(&state.recorded);
            let body = serde_json::json!({
                "requests": recorded.request_count,
                "accepted_batches": recorded.accepted_ids.len(),
                "by_status": recorded.by_status,
            });
            http_server::json(StatusCode::OK, body.to_string())
        }
        (Method::POST, "/_standin/faults") => match read_body(request).await {
            Ok(body) => match serde_json::from_slice::<Fault>(&body) {
                Ok(fault) => {
                    lock(&state.faults).push(fault);
                    http_server::text(StatusCode::OK, "fault added\n")
                }
                Err(e) => http_server::text(StatusCode::BAD_REQUEST, format!("bad fault: {e}\n")),
            },
            Err(e) => http_server::text(StatusCode::BAD_REQUEST, e),
        },
        (Method::DELETE, "/_standin/faults") => {
            lock(&state.faults).clear();
            http_server::text(StatusCode::OK, "faults cleared\n")
        }
        (Method::POST, "/_standin/reset") => {
            lock(&state.faults).clear();
            *lock(&state.recorded) = Recorded::default();
            http_server::text(StatusCode::OK, "reset\n")
        }
        _ => http_server::text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn json_lines<'a, T: Serialize + 'a>(items: impl Iterator<Item = &'a T>) -> HttpResponse {
    let mut out = Vec::new();
    for item in items {
        let _ = serde_json::to_writer(&mut out, item);
        out.push(b'\n');
    }
    http_server::respond(StatusCode::OK, "application/x-ndjson", out)
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, String> {
    Limited::new(request.into_body(), READ_LIMIT)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| format!("cannot read the body: {e}\n"))
}

/// The credentials check: 401 without a Basic header, 403 with the wrong key or secret.
fn check_auth(state: &State, header: Option<&HeaderValue>) -> Result<(), StatusCode> {
    let header = header
        .and_then(|h| h.to_str().ok())
        .ok_or(StatusCode::UNAUTHORIZED)?;
    let encoded = header
        .strip_prefix("Basic ")
        .ok_or(StatusCode::UNAUTHORIZED)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| StatusCode::UNAUTHORIZED)?;
    let expected = format!("{}:{}", state.config.api_key, state.config.api_secret);
    if decoded == expected.as_bytes() {
        Ok(())
    } else {
        Err(StatusCode::FORBIDDEN)
    }
}

fn bad_request(message: &str) -> HttpResponse {
    let body = serde_json::json!({"errors": [{"code": "BAD_REQUEST", "message": message}]});
    http_server::json(StatusCode::BAD_REQUEST, body.to_string())
}

/// Pulls `source_request_id`s out of a body without judging it.
fn ids_in(body: &[u8]) -> Vec<String> {
    let id = |v: &Value| {
        v.get("source_request_id")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(batches)) => batches.iter().filter_map(id).collect(),
        Ok(batch) => id(&batch).into_iter().collect(),
        Err(_) => Vec::new(),
    }
}

async fn events(state: Arc<State>, request: Request<Incoming>, bulk: bool) -> HttpResponse {
    let at_ms = crate::clock::unix_ms();
    let path = request.uri().path().to_string();
    let auth = check_auth(&state, request.headers().get(AUTHORIZATION));
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(e) => return bad_request(&e),
    };
    let ids = ids_in(&body);
    let fault = lock(&state.faults).take(&ids);
    if let Some(fault) = &fault {
        if fault.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
        }
    }
    let response = match (auth, fault.as_ref().and_then(|f| f.status.map(|s| (s, f)))) {
        (Err(status), _) => http_server::text(status, ""),
        (Ok(()), Some((status, fault))) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = match (&fault.body, status) {
                (Some(body), _) => http_server::json(status, body.clone()),
                (None, StatusCode::BAD_REQUEST) => bad_request("rejected by a stand-in fault rule"),
                (None, _) => http_server::text(status, ""),
            };
            if let Some(seconds) = fault.retry_after {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
        (Ok(()), None) => match contract::check_request(&body, bulk) {
            Err(message) => bad_request(&message),
            Ok(batches) => {
                record_accepted(&state, batches);
                http_server::json(StatusCode::ACCEPTED, "{}")
            }
        },
    };
    let status = response.status().as_u16();
    let mut recorded = lock(&state.recorded);
    recorded.request_count += 1;
    *recorded.by_status.entry(status).or_default() += 1;
    if state.config.keep_batches {
        recorded.requests.push(RequestLog {
            at_ms,
            path,
            status,
            ids,
        });
    }
    response
}

fn record_accepted(state: &State, batches: Vec<Value>) {
    if let Some(file) = lock(&state.file).as_mut() {
        for batch in &batches {
            let _ = serde_json::to_writer(&mut *file, batch);
            let _ = file.write_all(b"\n");
        }
        let _ = file.flush();
    }
    let mut recorded = lock(&state.recorded);
    for batch in batches {
        let id = batch
            .get("source_request_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        recorded.accepted_ids.push(id);
        if state.config.keep_batches {
            recorded.batches.push(batch);
        }
    }
}
