//! The Events API's endpoints: the credentials checked, a fault rule applied if one
//! matches, the contract and the account's limit enforced, and what was accepted recorded.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderValue, RETRY_AFTER};
use hyper::{Request, StatusCode};
use serde_json::Value;

use super::fast::fast_accept;
use super::rate_limit::{accepted, check_rate, rate_limited};
use super::recorded::{RequestLog, event_ids, ids_in, record_accepted};
use super::{State, contract, lock, read_body};
use crate::http_server::{self, HttpResponse};

pub(super) fn bad_request(message: &str) -> HttpResponse {
    let body = serde_json::json!({"errors": [{"code": "BAD_REQUEST", "message": message}]});
    http_server::json(StatusCode::BAD_REQUEST, body.to_string())
}

pub(super) async fn events(
    state: Arc<State>,
    request: Request<Incoming>,
    bulk: bool,
) -> HttpResponse {
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
