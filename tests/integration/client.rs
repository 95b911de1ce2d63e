//! The Events API client against the stand-in: auth, endpoints, limits, and how each
//! answer is classified.

use std::time::Duration;

use mparticle_forwarder::config::{MparticleConfig, Secret};
use mparticle_forwarder::mparticle::body::RequestBody;
use mparticle_forwarder::mparticle::client::Client;
use mparticle_forwarder::mparticle::response::{LimitHit, Verdict};
use mparticle_forwarder::outcome::ErrorKind;
use mparticle_forwarder::standin::{Fault, StandIn, StandInConfig};

use crate::support::{API_KEY, API_SECRET, standin};

fn client(standin: &StandIn, key: &str, secret: &str) -> Client {
    let events_url = standin.events_url();
    Client::new(&MparticleConfig {
        bulk_url: events_url.replace("/events", "/bulkevents"),
        events_url,
        api_key: Secret::new(key),
        api_secret: Secret::new(secret),
        development: false,
        max_batches_per_second: None,
        timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        max_in_flight_requests: 4,
        bulk_linger: Duration::from_millis(1),
        max_events_per_batch: 1,
    })
    .unwrap()
}

fn batch(id: &str) -> Vec<u8> {
    let text = std::fs::read_to_string("tests/data/events/point_add.expected-batch.json").unwrap();
    text.replace("evt_01JD4T9F3M2K", id).into_bytes()
}

#[tokio::test]
async fn one_batch_goes_to_events_and_several_to_bulkevents() {
    let standin = standin().await;
    let c = client(&standin, API_KEY, API_SECRET);
    let one = batch("a1");
    assert_eq!(
        c.send(RequestBody::copied(&[&one])).await.verdict,
        Verdict::Delivered
    );
    let (b1, b2) = (batch("b1"), batch("b2"));
    let answer = c.send(RequestBody::copied(&[&b1, &b2])).await;
    assert_eq!(answer.verdict, Verdict::Delivered);
    assert_eq!(answer.status, Some(202));
    let requests = standin.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/s2s/v2/events", "/s2s/v2/bulkevents"]);
    assert_eq!(standin.accepted_ids(), ["a1", "b1", "b2"]);
    // Bodies go out in chunks, but with their length up front, never chunked.
    for request in &requests {
        assert_eq!(request.content_length, Some(request.body_bytes as u64));
    }
    assert_eq!(requests[1].body_bytes, b1.len() + b2.len() + 3);
}

#[tokio::test]
async fn wrong_credentials_are_an_auth_failure() {
    let standin = standin().await;
    let b = batch("x");
    let answer = client(&standin, API_KEY, "wrong")
        .send(RequestBody::copied(&[&b]))
        .await;
    assert_eq!(answer.status, Some(403));
    assert_eq!(answer.verdict, Verdict::AuthFailed);
    let answer = client(&standin, "", "")
        .send(RequestBody::copied(&[&b]))
        .await;
    assert_eq!(answer.verdict, Verdict::AuthFailed);
    assert!(standin.accepted_ids().is_empty());
}

#[tokio::test]
async fn a_malformed_batch_is_a_permanent_400_with_the_error_body() {
    let standin = standin().await;
    let c = client(&standin, API_KEY, API_SECRET);
    let bad = br#"{"environment":"production","events":[{"event_type":"custom_event","data":{"event_name":"x"}}]}"#;
    let answer = c.send(RequestBody::copied(&[bad])).await;
    assert_eq!(answer.status, Some(400));
    assert_eq!(answer.verdict, Verdict::Permanent(ErrorKind::Http4xx));
    assert!(answer.detail.contains("BAD_REQUEST"), "{}", answer.detail);
    assert!(
        answer.detail.contains("custom_event_type"),
        "{}",
        answer.detail
    );
}

#[tokio::test]
async fn rate_limits_server_errors_and_slow_answers_are_told_apart() {
    let standin = standin().await;
    let c = client(&standin, API_KEY, API_SECRET);
    let b = batch("r");
    standin.add_fault(
        Fault::status(429)
            .retry_after(3)
            .limit_exceeded("acceleration")
            .times(1),
    );
    let answer = c.send(RequestBody::copied(&[&b])).await;
    assert_eq!(answer.verdict, Verdict::RateLimited);
    assert_eq!(answer.retry_after, Some(Duration::from_secs(3)));
    assert_eq!(answer.limit_hit, Some(LimitHit::Acceleration));
    standin.add_fault(Fault::status(503).times(1));
    assert_eq!(
        c.send(RequestBody::copied(&[&b])).await.verdict,
        Verdict::Retryable(ErrorKind::Http5xx)
    );
    standin.add_fault(Fault::delay(1_500).times(1));
    assert_eq!(
        c.send(RequestBody::copied(&[&b])).await.verdict,
        Verdict::Retryable(ErrorKind::Timeout)
    );
    standin.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn nothing_listening_is_a_retryable_connect_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let events_url = format!("http://{addr}/s2s/v2/events");
    let c = Client::new(&MparticleConfig {
        bulk_url: events_url.replace("/events", "/bulkevents"),
        events_url,
        api_key: Secret::new("k"),
        api_secret: Secret::new("s"),
        development: false,
        max_batches_per_second: None,
        timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        max_in_flight_requests: 1,
        bulk_linger: Duration::from_millis(1),
        max_events_per_batch: 1,
    })
    .unwrap();
    let answer = c.send(RequestBody::copied(&[b"{}"])).await;
    assert_eq!(answer.verdict, Verdict::Retryable(ErrorKind::Connect));
    assert_eq!(answer.status, None);
}

#[tokio::test]
async fn the_standin_refuses_a_bulk_of_over_100_batches() {
    let standin = standin().await;
    let c = client(&standin, API_KEY, API_SECRET);
    let batches: Vec<Vec<u8>> = (0..101).map(|i| batch(&format!("id{i}"))).collect();
    let refs: Vec<&[u8]> = batches.iter().map(Vec::as_slice).collect();
    let answer = c.send(RequestBody::copied(&refs)).await;
    assert_eq!(answer.status, Some(400));
    assert!(answer.detail.contains("at most 100"), "{}", answer.detail);
}

#[tokio::test]
async fn the_standins_account_limit_reports_its_usage_then_answers_429_naming_the_account() {
    let standin = StandIn::start_local(StandInConfig {
        api_key: API_KEY.into(),
        api_secret: API_SECRET.into(),
        rate_limit: Some(10.0),
        rate_limit_retry_after: None,
        ..StandInConfig::default()
    })
    .await
    .unwrap();
    let c = client(&standin, API_KEY, API_SECRET);
    let (b1, b2) = (batch("u1"), batch("u2"));
    let first = c.send(RequestBody::copied(&[&b1, &b2])).await;
    assert_eq!(first.verdict, Verdict::Delivered);
    assert_eq!(first.rate_limit_used_percent, Some(20));
    let bulk: Vec<Vec<u8>> = (0..8).map(|i| batch(&format!("v{i}"))).collect();
    let refs: Vec<&[u8]> = bulk.iter().map(Vec::as_slice).collect();
    let second = c.send(RequestBody::copied(&refs)).await;
    assert_eq!(second.rate_limit_used_percent, Some(100));
    let refused = c.send(RequestBody::copied(&[&b1])).await;
    assert_eq!(refused.verdict, Verdict::RateLimited);
    assert_eq!(refused.limit_hit, Some(LimitHit::Account));
    assert_eq!(refused.retry_after, None, "told to send no Retry-After");
    standin.set_rate_limit_answers(Some(2), true);
    assert_eq!(
        c.send(RequestBody::copied(&[&b1])).await.retry_after,
        Some(Duration::from_secs(2))
    );
    // Raised while running: the same second has room again.
    standin.set_rate_limit(Some(1_000.0));
    assert_eq!(
        c.send(RequestBody::copied(&[&b1])).await.verdict,
        Verdict::Delivered
    );
    standin.stop();
}
