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
pub mod faults;

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};
use memchr::memmem::Finder;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;

pub use accounts::StandInAccount;
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

/// One request as the stand-in saw it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestLog {
    /// When the request arrived, unix ms.
    pub at_ms: i64,
    pub path: String,
    pub status: u16,
    /// `source_request_id` of every batch in the body that could be read.
    pub ids: Vec<String>,
    /// The `Content-Length` header, and the size of the body as read: a request sent
    /// without the header (chunked) shows `None`.
    pub content_length: Option<u64>,
    pub body_bytes: usize,
}

#[derive(Default)]
struct Recorded {
    batches: Vec<Value>,
    accepted_ids: Vec<String>,
    /// `source_message_id` of every event of every accepted batch.
    accepted_events: Vec<String>,
    requests: Vec<RequestLog>,
    request_count: u64,
    accepted_count: u64,
    accepted_event_count: u64,
    by_status: std::collections::BTreeMap<u16, u64>,
    /// The account each of `batches` was accepted for.
    batch_accounts: Vec<String>,
    /// Batches accepted, by account (both modes).
    by_account: std::collections::BTreeMap<String, u64>,
    /// Fast mode: hashes of accepted events' ids ([`id_hash`]), and latencies in ms.
    unique_hashes: HashSet<u64, BuildHasherDefault<AlreadyHashed>>,
    latencies_ms: Vec<i64>,
}

/// The account's limit: at most `rate` batches accepted in any second (a sliding window),
/// the same count its usage header reports, so that the header tells a sender how close
/// it is to a 429.
struct RateLimit {
    rate: f64,
    accepted: VecDeque<(std::time::Instant, usize)>,
    accepted_in_window: usize,
}

impl RateLimit {
    fn new(rate: f64) -> RateLimit {
        RateLimit {
            rate,
            accepted: VecDeque::new(),
            accepted_in_window: 0,
        }
    }

    fn take(&mut self, batches: usize) -> bool {
        let now = std::time::Instant::now();
        self.forget_before(now);
        if (self.accepted_in_window + batches) as f64 > self.rate {
            return false;
        }
        self.accepted.push_back((now, batches));
        self.accepted_in_window += batches;
        true
    }

    fn forget_before(&mut self, now: std::time::Instant) {
        while let Some(&(at, batches)) = self.accepted.front() {
            if now.duration_since(at) < Duration::from_secs(1) {
                break;
            }
            self.accepted.pop_front();
            self.accepted_in_window -= batches;
        }
    }

    /// The batches accepted in the last second as a percentage of the limit, 0–100.
    fn usage_percent(&mut self) -> u32 {
        self.forget_before(std::time::Instant::now());
        (100.0 * self.accepted_in_window as f64 / self.rate)
            .round()
            .min(100.0) as u32
    }

    /// A new limit applies to the second already under way.
    fn change(&mut self, rate: f64) {
        self.rate = rate;
    }
}

/// What the limit answers a request of `batches` batches: accepted, with the usage header's
/// value if one is sent, or refused, with the `Retry-After` seconds if any.
fn check_rate(state: &State, account: usize, batches: usize) -> Result<Option<u32>, Option<u32>> {
    if account != 0 {
        return match state.accounts.take(account, batches) {
            Some(false) => Err(lock(&state.rate_options).retry_after),
            _ => Ok(None),
        };
    }
    let mut limit = lock(&state.rate_limit);
    let Some(limit) = limit.as_mut() else {
        return Ok(None);
    };
    if !limit.take(batches) {
        return Err(lock(&state.rate_options).retry_after);
    }
    Ok(lock(&state.rate_options)
        .usage_header
        .then(|| limit.usage_percent()))
}

/// How the limiter answers, changeable while running.
#[derive(Debug, Clone, Copy)]
struct RateOptions {
    retry_after: Option<u32>,
    usage_header: bool,
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

/// `POST /_standin/rate-limit`: `{"batches_per_second": 100}` (`null`: no limit), and
/// optionally `"retry_after"` (seconds; 0: none) and `"usage_header"`.
#[derive(serde::Deserialize)]
struct RateLimitChange {
    batches_per_second: Option<f64>,
    #[serde(default)]
    retry_after: Option<u32>,
    #[serde(default)]
    usage_header: Option<bool>,
}

fn set_rate_limit(state: &State, batches_per_second: Option<f64>) {
    let mut limit = lock(&state.rate_limit);
    match (limit.as_mut(), batches_per_second) {
        (Some(current), Some(rate)) => current.change(rate),
        (_, rate) => *limit = rate.map(RateLimit::new),
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

fn bad_request(message: &str) -> HttpResponse {
    let body = serde_json::json!({"errors": [{"code": "BAD_REQUEST", "message": message}]});
    http_server::json(StatusCode::BAD_REQUEST, body.to_string())
}

/// Pulls out of a body, without judging it, each batch's `source_request_id` and each
/// event's `source_message_id`.
fn ids_in(body: &[u8]) -> (Vec<String>, Vec<String>) {
    let batches = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(batches)) => batches,
        Ok(batch) => vec![batch],
        Err(_) => Vec::new(),
    };
    let ids = batches
        .iter()
        .filter_map(|b| b.get("source_request_id")?.as_str().map(str::to_string))
        .collect();
    let events = batches
        .iter()
        .flat_map(event_ids)
        .map(str::to_string)
        .collect();
    (ids, events)
}

/// The `source_message_id` of each event of a batch.
fn event_ids(batch: &Value) -> impl Iterator<Item = &str> {
    let events = batch.get("events").and_then(Value::as_array);
    events
        .into_iter()
        .flatten()
        .filter_map(|e| e.pointer("/data/source_message_id")?.as_str())
}

/// An event's id and timestamp, as fast mode finds them.
type ScannedEvent<'b> = (&'b [u8], Option<i64>);

/// Fast mode's view of a body: how many batches it holds, and each event's
/// `source_message_id` and `timestamp_unixtime_ms`, found by scanning the forwarder's
/// compact JSON (which writes an event's timestamp before its id). The scan uses `memchr`'s
/// vectorised substring search: the sink shares the benchmark's two cores with the
/// forwarder, and a byte-by-byte search made it burn most of a core at full speed
/// (docs/benchmarks-history.md).
fn scan_events(body: &[u8]) -> (usize, Vec<ScannedEvent<'_>>) {
    static BATCH: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(b"\"source_request_id\":\""));
    static EVENT: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(b"\"source_message_id\":\""));
    static TS: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(b"\"timestamp_unixtime_ms\":"));
    let batches = BATCH.find_iter(body).count();
    let mut events = Vec::new();
    let mut from = 0;
    for at in EVENT.find_iter(body) {
        // The event's timestamp lies between the previous event's id and its own.
        let timestamp = TS.find(&body[from..at]).and_then(|t| {
            let digits = &body[from + t + TS.needle().len()..];
            let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
            std::str::from_utf8(&digits[..len]).ok()?.parse().ok()
        });
        let start = at + EVENT.needle().len();
        let len = memchr::memchr(b'"', &body[start..]).unwrap_or(body.len() - start);
        events.push((&body[start..start + len], timestamp));
        from = start + len;
    }
    (batches, events)
}

fn fast_accept(state: &State, account: usize, body: &[u8]) -> HttpResponse {
    let (batches, events) = scan_events(body);
    let usage = match check_rate(state, account, batches) {
        Ok(usage) => usage,
        Err(retry_after) => return rate_limited(retry_after),
    };
    let now = crate::clock::unix_ms();
    let mut recorded = lock(&state.recorded);
    recorded.accepted_count += batches as u64;
    *recorded
        .by_account
        .entry(state.accounts.name(account).to_string())
        .or_default() += batches as u64;
    recorded.accepted_event_count += events.len() as u64;
    for (id, timestamp) in events {
        recorded.unique_hashes.insert(id_hash(id));
        if let Some(ts) = timestamp {
            recorded.latencies_ms.push(now - ts);
        }
    }
    accepted(usage)
}

/// 202, with the usage header when the limiter gives one.
fn accepted(usage_percent: Option<u32>) -> HttpResponse {
    let mut response = http_server::json(StatusCode::ACCEPTED, "{}");
    if let Some(usage) = usage_percent {
        response
            .headers_mut()
            .insert("x-mp-rate-limit-percentage-used", HeaderValue::from(usage));
    }
    response
}

/// An accepted id's hash for the unique count: FNV-1a over its bytes, then MurmurHash3's
/// finaliser, so that every bit of the result depends on every byte and the set can take
/// it as its own hash ([`AlreadyHashed`]). The ids are the forwarder's, not an
/// adversary's: SipHash, once for the id and once more in the set, was a tenth of the
/// sink's time in a drain.
fn id_hash(id: &[u8]) -> u64 {
    let mut hash = id.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ hash >> 33
}

/// The hasher of a set of values that are hashes already: a value is its own hash.
#[derive(Default)]
struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64s are hashed here; anything else still gets a hash.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

fn rate_limited(retry_after: Option<u32>) -> HttpResponse {
    let mut response = http_server::text(StatusCode::TOO_MANY_REQUESTS, "");
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response.headers_mut().insert(
        "x-mp-rate-limit-exceeded",
        HeaderValue::from_static("account"),
    );
    response
}

async fn events(state: Arc<State>, request: Request<Incoming>, bulk: bool) -> HttpResponse {
    let at_ms = crate::clock::unix_ms();
    let path = request.uri().path().to_string();
    let auth = state.accounts.check(request.headers().get(AUTHORIZATION));
    let account = auth.unwrap_or_default();
    let account_name = state.accounts.name(account).to_string();
    let headers = request.headers().clone();
    let content_length = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(e) => return bad_request(&e),
    };
    if state.config.fast {
        // Faults in fast mode (a benchmark's failing customer) answer with their status
        // only; the body is read for ids only while a rule is in force.
        let refused = || {
            let mut faults = lock(&state.faults);
            if faults.is_empty() {
                return None;
            }
            let (ids, events) = ids_in(&body);
            faults
                .take(&[ids.as_slice(), &events].concat(), &account_name)?
                .status
        };
        let response = match (auth, refused()) {
            (Err(status), _) => http_server::text(status, ""),
            (Ok(_), Some(status)) => http_server::text(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "",
            ),
            (Ok(account), None) => fast_accept(&state, account, &body),
        };
        let mut recorded = lock(&state.recorded);
        recorded.request_count += 1;
        *recorded
            .by_status
            .entry(response.status().as_u16())
            .or_default() += 1;
        return response;
    }
    let (ids, events) = ids_in(&body);
    let fault = lock(&state.faults).take(&[ids.as_slice(), &events].concat(), &account_name);
    if let Some(fault) = &fault {
        if fault.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
        }
    }
    let response = match (auth, fault.as_ref().and_then(|f| f.status.map(|s| (s, f)))) {
        (Err(status), _) => http_server::text(status, ""),
        (Ok(_), Some((status, fault))) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = match (&fault.body, status) {
                _ if fault.echo_headers => {
                    let echoed: String = headers
                        .iter()
                        .map(|(name, value)| {
                            format!("{name}: {}; ", String::from_utf8_lossy(value.as_bytes()))
                        })
                        .collect();
                    http_server::text(status, format!("the request's headers: {echoed}"))
                }
                (Some(body), _) => http_server::json(status, body.clone()),
                (None, StatusCode::BAD_REQUEST) => bad_request("rejected by a stand-in fault rule"),
                (None, _) => http_server::text(status, ""),
            };
            if let Some(seconds) = fault.retry_after {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(seconds));
            }
            let texts = [
                ("location", &fault.location),
                ("x-mp-rate-limit-exceeded", &fault.limit_exceeded),
            ];
            for (name, text) in texts {
                if let Some(value) = text.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
                    response.headers_mut().insert(name, value);
                }
            }
            response
        }
        (Ok(account), None) if fault.as_ref().is_some_and(|f| f.partial) => {
            let refused = fault.as_ref().and_then(|f| f.when_id.as_deref());
            partly_accepted(&state, account, &body, bulk, refused.unwrap_or_default())
        }
        (Ok(account), None) => match contract::check_request(&body, bulk) {
            Err(message) => bad_request(&message),
            Ok(batches) => match check_rate(&state, account, batches.len()) {
                Ok(usage) => {
                    record_accepted(&state, account, batches);
                    accepted(usage)
                }
                Err(retry_after) => rate_limited(retry_after),
            },
        },
    };
    let status = response.status().as_u16();
    let mut recorded = lock(&state.recorded);
    recorded.request_count += 1;
    *recorded.by_status.entry(status).or_default() += 1;
    recorded.requests.push(RequestLog {
        at_ms,
        path,
        status,
        ids,
        content_length,
        body_bytes: body.len(),
    });
    response
}

/// A bulk request with the batch `refused` in it: the others accepted, 202 with an
/// `errors` body naming the refused batch by position; the batch alone: 400.
fn partly_accepted(
    state: &State,
    account: usize,
    body: &[u8],
    bulk: bool,
    refused: &str,
) -> HttpResponse {
    let batches = match contract::check_request(body, bulk) {
        Ok(batches) => batches,
        Err(message) => return bad_request(&message),
    };
    let is_refused = |b: &Value| {
        b.get("source_request_id").and_then(Value::as_str) == Some(refused)
            || event_ids(b).any(|id| id == refused)
    };
    if !bulk {
        return bad_request("user_identities: the batch was refused (stand-in fault)");
    }
    let position = batches.iter().position(is_refused);
    let kept: Vec<Value> = batches.into_iter().filter(|b| !is_refused(b)).collect();
    record_accepted(state, account, kept);
    let errors: Vec<Value> = position
        .map(|i| {
            serde_json::json!({
                "code": "BAD_REQUEST",
                "message": format!("[{i}].user_identities: the batch was refused (stand-in fault)"),
            })
        })
        .into_iter()
        .collect();
    http_server::json(
        StatusCode::ACCEPTED,
        serde_json::json!({ "errors": errors }).to_string(),
    )
}

fn record_accepted(state: &State, account: usize, batches: Vec<Value>) {
    if let Some(file) = lock(&state.file).as_mut() {
        for batch in &batches {
            let _ = serde_json::to_writer(&mut *file, batch);
            let _ = file.write_all(b"\n");
        }
        let _ = file.flush();
    }
    let mut recorded = lock(&state.recorded);
    recorded.accepted_count += batches.len() as u64;
    let name = state.accounts.name(account);
    *recorded.by_account.entry(name.to_string()).or_default() += batches.len() as u64;
    for batch in batches {
        recorded.batch_accounts.push(name.to_string());
        let id = batch.get("source_request_id").and_then(Value::as_str);
        recorded
            .accepted_ids
            .push(id.unwrap_or_default().to_string());
        let events: Vec<String> = event_ids(&batch).map(str::to_string).collect();
        recorded.accepted_event_count += events.len() as u64;
        recorded.accepted_events.extend(events);
        recorded.batches.push(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_mode_scans_events_and_their_timestamps() {
        let body = br#"[{"environment":"production","schema_version":2,"source_request_id":"a1","events":[{"event_type":"custom_event","data":{"timestamp_unixtime_ms":1000,"source_message_id":"a1"}}]},{"source_request_id":"m","events":[{"data":{"source_message_id":"b2"}},{"data":{"timestamp_unixtime_ms":7,"source_message_id":"b3"}}]}]"#;
        let (batches, events) = scan_events(body);
        assert_eq!(batches, 2);
        // An event without a timestamp does not take the next event's.
        assert_eq!(
            events,
            vec![
                (&b"a1"[..], Some(1000)),
                (&b"b2"[..], None),
                (&b"b3"[..], Some(7))
            ]
        );
        assert_eq!(scan_events(b"[]"), (0, vec![]));
    }

    #[test]
    fn fast_mode_counts_repeated_ids_once() {
        let config = StandInConfig {
            fast: true,
            ..StandInConfig::default()
        };
        let state = State::new(config, None);
        let body = |ids: &[&str]| {
            let batches: Vec<String> = ids
                .iter()
                .map(|id| {
                    format!(
                        r#"{{"source_request_id":"{id}","events":[{{"data":{{"source_message_id":"{id}"}}}}]}}"#
                    )
                })
                .collect();
            format!("[{}]", batches.join(","))
        };
        let first: Vec<String> = (0..1000).map(|i| format!("bench-{i:09}")).collect();
        let first: Vec<&str> = first.iter().map(String::as_str).collect();
        fast_accept(&state, 0, body(&first).as_bytes());
        fast_accept(
            &state,
            0,
            body(&["bench-000000007", "other", "bench-000000999"]).as_bytes(),
        );
        let recorded = lock(&state.recorded);
        assert_eq!(recorded.accepted_count, 1003);
        assert_eq!(recorded.unique_hashes.len(), 1001);
        // The set takes the hashes as they are, so their low bits (its bucket) and high
        // bits (its tag) must spread even for ids that differ in one digit.
        let spread = |bits: fn(u64) -> u64| {
            let values: HashSet<u64> = first
                .iter()
                .map(|id| bits(id_hash(id.as_bytes())))
                .collect();
            values.len()
        };
        assert!(spread(|h| h & 1023) > 550, "low bits");
        assert!(spread(|h| h >> 54) > 550, "high bits");
    }

    #[test]
    fn the_rate_limit_counts_the_last_second_and_reports_its_usage() {
        let mut limit = RateLimit::new(100.0);
        assert!(limit.take(40));
        assert_eq!(limit.usage_percent(), 40);
        assert!(limit.take(60));
        assert!(!limit.take(10));
        assert_eq!(limit.usage_percent(), 100);
        limit.change(20.0);
        assert!(
            !limit.take(1),
            "a lowered limit holds no more than its own second"
        );
    }
}
