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
//! `POST /_standin/rate-limit`, `POST /_standin/reset`.

mod accounts;
pub mod contract;
mod events_api;
mod fast;
pub mod faults;
mod rate_limit;
mod recorded;

use std::fs::File;
use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;

pub use accounts::StandInAccount;
pub use faults::Fault;
use faults::FaultScript;
use rate_limit::{RateLimit, RateLimitChange, RateOptions, set_rate_limit};
use recorded::Recorded;
pub use recorded::RequestLog;

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
    /// Fast mode, for benchmarks: after the credentials check, no contract checks and
    /// nothing kept but counts, a hash of each `source_request_id` (for the unique count)
    /// and each batch's latency (acceptance time minus `timestamp_unixtime_ms`). It reads
    /// the forwarder's compact JSON by scanning, not parsing.
    pub fast: bool,
    /// Answer 429 above this many batches per second, over every connection together (in
    /// any second, a sliding window), as mParticle's per-account limit does.
    /// [`StandIn::set_rate_limit`] changes it while running.
    pub rate_limit: Option<f64>,
    /// `Retry-After` seconds on those 429s; `None` sends none (mParticle *may* send it).
    pub rate_limit_retry_after: Option<u32>,
    /// Send `X-mp-rate-limit-percentage-used` on 2xx answers while a limit is set: the
    /// batches accepted in the last second, as a share of the limit.
    pub rate_limit_usage_header: bool,
    /// Accounts besides the default one (`api_key`, `api_secret`), each known by its own
    /// credentials.
    pub accounts: Vec<StandInAccount>,
}

impl Default for StandInConfig {
    fn default() -> Self {
        StandInConfig {
            api_key: "local-key".into(),
            api_secret: "local-secret".into(),
            record_file: None,
            fast: false,
            rate_limit: None,
            rate_limit_retry_after: Some(1),
            rate_limit_usage_header: true,
            accounts: Vec::new(),
        }
    }
}

struct State {
    config: StandInConfig,
    accounts: accounts::Registry,
    faults: Mutex<FaultScript>,
    recorded: Mutex<Recorded>,
    file: Mutex<Option<BufWriter<File>>>,
    rate_limit: Mutex<Option<RateLimit>>,
    rate_options: Mutex<RateOptions>,
}

impl State {
    fn new(config: StandInConfig, file: Option<BufWriter<File>>) -> State {
        State {
            rate_limit: Mutex::new(config.rate_limit.map(RateLimit::new)),
            rate_options: Mutex::new(RateOptions {
                retry_after: config.rate_limit_retry_after,
                usage_header: config.rate_limit_usage_header,
            }),
            accounts: accounts::Registry::new(
                StandInAccount::new(accounts::DEFAULT, &config.api_key, &config.api_secret),
                &config.accounts,
            ),
            config,
            faults: Mutex::new(FaultScript::default()),
            recorded: Mutex::new(Recorded::default()),
            file: Mutex::new(file),
        }
    }
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
        let state = Arc::new(State::new(config, file));
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

    /// Sets the account's limit in batches per second (`None`: no limit), as mParticle
    /// lowering or raising it, or another sender taking a share.
    pub fn set_rate_limit(&self, batches_per_second: Option<f64>) {
        set_rate_limit(&self.state, batches_per_second);
    }

    /// Whether the limit's 429s carry `Retry-After` (seconds), and 2xx the usage header.
    pub fn set_rate_limit_answers(&self, retry_after: Option<u32>, usage_header: bool) {
        *lock(&self.state.rate_options) = RateOptions {
            retry_after,
            usage_header,
        };
    }

    /// Refuses the credentials of the account `name` (403), as a revoked key is, or
    /// (`revoked: false`) accepts them again.
    pub fn revoke(&self, name: &str, revoked: bool) {
        if let Some(account) = self.state.accounts.find(name) {
            self.state.accounts.revoke(account, revoked);
        }
    }

    /// Sets the limit of the account `name` (the default account's is
    /// [`set_rate_limit`](Self::set_rate_limit)'s).
    pub fn set_account_rate_limit(&self, name: &str, batches_per_second: Option<f64>) {
        match self.state.accounts.find(name) {
            Some(0) => set_rate_limit(&self.state, batches_per_second),
            Some(account) => self.state.accounts.set_limit(account, batches_per_second),
            None => {}
        }
    }

    /// Every batch accepted for the account `name`, in order of acceptance.
    pub fn accepted_for(&self, name: &str) -> Vec<Value> {
        let recorded = lock(&self.state.recorded);
        let accounts = recorded.batch_accounts.iter();
        accounts
            .zip(&recorded.batches)
            .filter(|(account, _)| *account == name)
            .map(|(_, batch)| batch.clone())
            .collect()
    }

    /// Batches accepted, by account (both modes).
    pub fn accepted_by_account(&self) -> std::collections::BTreeMap<String, u64> {
        lock(&self.state.recorded).by_account.clone()
    }

    /// Every accepted batch, in order of acceptance.
    pub fn accepted(&self) -> Vec<Value> {
        lock(&self.state.recorded).batches.clone()
    }

    /// `source_request_id` of every accepted batch, in order, duplicates included.
    pub fn accepted_ids(&self) -> Vec<String> {
        lock(&self.state.recorded).accepted_ids.clone()
    }

    /// Batches accepted, duplicates included (both modes).
    pub fn accepted_count(&self) -> usize {
        lock(&self.state.recorded).accepted_count as usize
    }

    /// `source_message_id` of every event of every accepted batch, in order, duplicates
    /// included: one per batch, unless the forwarder merged a customer's events.
    pub fn accepted_event_ids(&self) -> Vec<String> {
        lock(&self.state.recorded).accepted_events.clone()
    }

    /// Events accepted, duplicates included (both modes).
    pub fn accepted_event_count(&self) -> usize {
        lock(&self.state.recorded).accepted_event_count as usize
    }

    /// Fast mode: distinct events (`source_message_id`s) accepted.
    pub fn unique_accepted(&self) -> usize {
        lock(&self.state.recorded).unique_hashes.len()
    }

    /// Fast mode: each accepted batch's acceptance time minus its `timestamp_unixtime_ms`.
    pub fn latencies_ms(&self) -> Vec<i64> {
        lock(&self.state.recorded).latencies_ms.clone()
    }

    /// Answers given, by status.
    pub fn status_counts(&self) -> std::collections::BTreeMap<u16, u64> {
        lock(&self.state.recorded).by_status.clone()
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
        (Method::POST, "/s2s/v2/events" | "/v2/events") => {
            events_api::events(state, request, false).await
        }
        (Method::POST, "/s2s/v2/bulkevents" | "/v2/bulkevents") => {
            events_api::events(state, request, true).await
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
        (Method::POST, "/_standin/rate-limit") => match read_body(request).await {
            Ok(body) => match serde_json::from_slice::<RateLimitChange>(&body) {
                Ok(change) => {
                    set_rate_limit(&state, change.batches_per_second);
                    let mut options = lock(&state.rate_options);
                    if let Some(retry_after) = change.retry_after {
                        options.retry_after = (retry_after > 0).then_some(retry_after);
                    }
                    if let Some(usage_header) = change.usage_header {
                        options.usage_header = usage_header;
                    }
                    http_server::text(StatusCode::OK, "rate limit set\n")
                }
                Err(e) => http_server::text(StatusCode::BAD_REQUEST, format!("bad limit: {e}\n")),
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
