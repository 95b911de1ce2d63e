//! Hostile answers: a redirect, and an error body that echoes the request's credentials.
//! Nothing is lost, nothing leaks.

use std::time::Duration;

use base64::Engine;
use mparticle_forwarder::standin::Fault;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_never_followed_nor_counted_as_delivered_and_delivery_resumes() {
    let service = ServiceSpec::default().partitions(1).topics(1).spawn().await;
    // Followed, the POST would come back as a GET of a page that answers 200.
    service
        .standin
        .add_fault(Fault::status(302).location("/_standin/stats"));
    let producer = producer();
    let value = point_add("moved", "c1", 3);
    produce(&producer, &service.topics[0], Some("c1"), value.as_bytes()).await;
    assert!(
        eventually(Duration::from_secs(20), || service
            .standin
            .requests()
            .iter()
            .any(|r| r.status == 302))
        .await
    );
    let (_, metrics) = service.admin_get("/metrics").await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"mparticle_forwarder_events_delivered_total{action="point_add"}"#
        ),
        Some(0.0),
        "a redirect is not a delivery"
    );
    assert_eq!(
        metric_value(&metrics, "mparticle_forwarder_mparticle_auth_failed"),
        Some(1.0),
        "a redirect stops delivery as refused credentials do"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        committed(&service.group, &service.topics[0]).is_empty(),
        "no offset moves"
    );
    assert!(
        read_all(&service.dlq_topic).is_empty(),
        "nothing dead-lettered"
    );
    assert!(read_all(&service.retry_topic).is_empty(), "no attempt used");

    service.standin.clear_faults();
    assert!(
        eventually(Duration::from_secs(40), || service.standin.accepted_ids()
            == ["moved"])
        .await
    );
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_body_echoing_the_credentials_reaches_no_retry_or_dead_letter_record() {
    let service = ServiceSpec::default()
        .partitions(1)
        .topics(1)
        .env("RETRY_MAX_ATTEMPTS", "2")
        .env("RETRY_BACKOFF", "1s")
        .spawn()
        .await;
    service
        .standin
        .add_fault(Fault::status(503).echo_headers().when_id("echoed"));
    let producer = producer();
    let value = point_add("echoed", "c1", 3);
    produce(&producer, &service.topics[0], Some("c1"), value.as_bytes()).await;
    assert!(
        eventually(Duration::from_secs(30), || !read_all(&service.dlq_topic)
            .is_empty())
        .await
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{API_KEY}:{API_SECRET}"));
    let written: Vec<ReadRecord> = read_all(&service.retry_topic)
        .into_iter()
        .chain(read_all(&service.dlq_topic))
        .collect();
    assert_eq!(written.len(), 2, "one retry, then the dead letter");
    for record in written {
        let body = record.header("forwarder-http-body").unwrap_or_default();
        assert!(body.contains("authorization: ****"), "{body}");
        for secret in [basic.as_str(), API_KEY, API_SECRET] {
            assert!(!body.contains(secret), "{secret} in {body}");
        }
    }
    service.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let standin = standin().await;
    let mut slow = tokio::net::TcpStream::connect(standin.addr())
        .await
        .unwrap();
    slow.write_all(b"GET /_standin/stats HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the server still holds a connection that sent half its headers 30 s ago"
    );
    standin.stop();
}
