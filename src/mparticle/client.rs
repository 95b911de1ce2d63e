//! The Events API client: one pooled HTTP client, Basic auth, `/events` for one batch and
//! `/bulkevents` for several, and every answer reduced to an [`Answer`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};

use super::body::RequestBody;
use super::refusals::{Refusals, refusals_in};
use super::response::{LimitHit, Verdict, parse_retry_after};
use crate::config::{MparticleConfig, Secret};
use crate::outcome::ErrorKind;

/// Bytes of a response body kept for the dead-letter record and the logs.
pub const MAX_BODY_BYTES: usize = 1024;
/// Bytes of a 2xx body read for the batches it says were refused (a bulk of 100 failing
/// batches, each named with a message).
const MAX_REFUSALS_BYTES: usize = 64 * 1024;

/// Credentials shorter than this are not searched for in answers.
const MIN_REDACTED_LEN: usize = 4;

/// mParticle's early warning before it starts answering 429.
const RATE_LIMIT_USED_HEADER: &str = "x-mp-rate-limit-percentage-used";
/// On a 429: which limit was hit.
const RATE_LIMIT_EXCEEDED_HEADER: &str = "x-mp-rate-limit-exceeded";

/// The HTTP client and its connection pool, with `config`'s timeouts, keeping up to
/// `idle` connections per host.
pub fn http_client(config: &MparticleConfig, idle: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .user_agent(concat!("mparticle-forwarder/", env!("CARGO_PKG_VERSION")))
        .timeout(config.timeout)
        .connect_timeout(config.connect_timeout)
        .pool_max_idle_per_host(idle)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        // A redirected POST comes back as a GET without its body, and its 200 would
        // count as delivered: a 3xx is the URL's problem, answered as such.
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// What one request came back with.
#[derive(Debug, Clone)]
pub struct Answer {
    pub verdict: Verdict,
    /// The HTTP status, when there was an answer at all.
    pub status: Option<u16>,
    /// Up to 1 KiB of the body (or the transport error), for dead letters and logs.
    pub detail: String,
    pub retry_after: Option<Duration>,
    /// `X-mp-rate-limit-percentage-used`, 0–100.
    pub rate_limit_used_percent: Option<u8>,
    /// On a 429, `X-mp-rate-limit-exceeded`.
    pub limit_hit: Option<LimitHit>,
    /// On a 2xx, the batches its body says were refused (credentials redacted).
    pub refusals: Option<Refusals>,
    pub elapsed: Duration,
}

/// The Events API client. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Parsed once: parsing them for every request showed in profiles.
    events_url: Url,
    bulk_url: Url,
    /// `Basic` and the key and secret, encoded once (reqwest's `basic_auth` formats and
    /// encodes them for every request) and marked sensitive, so that it never prints.
    authorization: HeaderValue,
    /// The key, the secret, their Basic form and a password in the URL: an answer that
    /// echoes them (a proxy's error page, say) must not carry them into dead letters and
    /// logs.
    redactions: Arc<[String]>,
}

impl Client {
    pub fn new(config: &MparticleConfig) -> anyhow::Result<Client> {
        Client::sharing(config, http_client(config, config.max_in_flight_requests)?)
    }

    /// A client of `config`'s account over `http`, a connection pool other accounts'
    /// clients share (accounts often share a pod's URL; a pool each cost 100 accounts
    /// 1,600 connections and 180 MiB).
    pub fn sharing(config: &MparticleConfig, http: reqwest::Client) -> anyhow::Result<Client> {
        let authorization = basic_authorization(&config.api_key, &config.api_secret)?;
        let basic = authorization.to_str().unwrap_or_default().to_string();
        let encoded = basic.trim_start_matches("Basic ").to_string();
        let events_url = Url::parse(&config.events_url)?;
        // A transport error names the URL, with a proxy's password if it holds one.
        let url_password = events_url.password().unwrap_or_default().to_string();
        let redactions = [
            basic,
            encoded,
            config.api_key.expose().to_string(),
            config.api_secret.expose().to_string(),
            url_password,
        ]
        .into_iter()
        // A secret of a few characters would blank out ordinary words of the body; the
        // configuration refuses none, so they are left as they are.
        .filter(|text| text.len() >= MIN_REDACTED_LEN)
        .collect();
        Ok(Client {
            http,
            events_url,
            bulk_url: Url::parse(&config.bulk_url)?,
            authorization,
            redactions,
        })
    }

    /// Sends one batch to `/events`, or several to `/bulkevents` as a JSON array. The
    /// caller keeps the request under mParticle's limits.
    pub async fn send(&self, body: RequestBody) -> Answer {
        let url = if body.is_bulk() {
            &self.bulk_url
        } else {
            &self.events_url
        };
        let batches = body.batches();
        let started = Instant::now();
        let result = self
            .http
            .post(url.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(reqwest::Body::wrap(body))
            .send()
            .await;
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                let mut failure = transport_failure(&error, started.elapsed());
                failure.detail = one_line(&self.redact(failure.detail), MAX_BODY_BYTES);
                return failure;
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers();
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let rate_limit_used_percent = headers
            .get(RATE_LIMIT_USED_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|p| p.clamp(0.0, 100.0) as u8);
        let verdict = Verdict::of_status(status);
        let limit_hit = (verdict == Verdict::RateLimited).then(|| {
            LimitHit::parse(
                headers
                    .get(RATE_LIMIT_EXCEEDED_HEADER)
                    .and_then(|v| v.to_str().ok()),
            )
        });
        // The status is known; a body cut off by the timeout changes nothing about it.
        // Read past the cut by the longest credential, so that none is cut in two by it.
        let wanted = match verdict {
            Verdict::Delivered => MAX_REFUSALS_BYTES,
            _ => MAX_BODY_BYTES,
        };
        let keep = wanted + self.redactions.iter().map(String::len).max().unwrap_or(0);
        let body = self.redact(read_body_prefix(response, keep).await.unwrap_or_default());
        let refusals = match verdict {
            Verdict::Delivered => refusals_in(&body, batches),
            _ => None,
        };
        Answer {
            verdict,
            status: Some(status),
            detail: one_line(&body, MAX_BODY_BYTES),
            retry_after,
            rate_limit_used_percent,
            limit_hit,
            refusals,
            elapsed: started.elapsed(),
        }
    }
}

impl Client {
    /// `text` with every credential in it replaced by `****`.
    fn redact(&self, mut text: String) -> String {
        for secret in self.redactions.iter() {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "****");
            }
        }
        text
    }
}

/// HTTP Basic credentials as mParticle takes them: `Basic base64(key:secret)`.
fn basic_authorization(key: &Secret, secret: &Secret) -> anyhow::Result<HeaderValue> {
    let credentials = format!("{}:{}", key.expose(), secret.expose());
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    // Base64 is always a valid header value; the error names no part of the secret.
    let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
        .map_err(|_| anyhow::anyhow!("the API key and secret cannot form a header"))?;
    value.set_sensitive(true);
    Ok(value)
}

fn transport_failure(error: &reqwest::Error, elapsed: Duration) -> Answer {
    let kind = if error.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Connect
    };
    Answer {
        verdict: Verdict::Retryable(kind),
        status: None,
        detail: error_chain(error),
        retry_after: None,
        rate_limit_used_percent: None,
        limit_hit: None,
        refusals: None,
        elapsed,
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn read_body_prefix(
    mut response: reqwest::Response,
    keep: usize,
) -> Result<String, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = keep.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        // Keep reading past the cap so the connection can be reused, but keep nothing more.
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Collapses text to one line of at most `max` bytes, cut on a character boundary.
pub fn one_line(text: &str, max: usize) -> String {
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() > max {
        let mut cut = max;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    line.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_basic_auth_and_never_print() {
        let value = basic_authorization(&Secret::new("key"), &Secret::new("s3cr3t")).unwrap();
        // base64("key:s3cr3t")
        assert_eq!(value.to_str().unwrap(), "Basic a2V5OnMzY3IzdA==");
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("a2V5"));
    }

    #[test]
    fn one_line_cuts_on_a_character_boundary() {
        assert_eq!(one_line("a\nb", 10), "a b");
        assert_eq!(one_line("ééé", 3), "é");
    }
}
