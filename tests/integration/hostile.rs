//! Hostile answers: a redirect, an error body that echoes the request's credentials, a 202
//! that refuses some of its batches. Nothing is lost, nothing leaks.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine;
use mparticle_forwarder::standin::{Fault, RequestLog};

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
        eventually(Duration::from_secs(40), || service
            .standin
            .accepted_event_ids()
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

/// A service started on `count` events already waiting, so that its first requests are
/// bulks of several batches, against a stand-in with `fault`.
async fn service_on_a_backlog(
    count: usize,
    prefix: &str,
    fault: Fault,
) -> (TestService, Vec<String>) {
    let (topic, retry, dlq) = (unique("src"), unique("retry"), unique("dlq"));
    create_topics(&[&topic, &retry, &dlq], 1).await;
    let topics = vec![topic];
    let producer = producer();
    let mut ids = Vec::new();
    for i in 0..count {
        let id = format!("{prefix}-{i}");
        let customer = format!("c{i}");
        let value = point_add(&id, &customer, 1);
        produce(&producer, &topics[0], Some(&customer), value.as_bytes()).await;
        ids.push(id);
    }
    let standin = standin().await;
    standin.add_fault(fault);
    let service = ServiceSpec::default()
        .start(standin, topics, retry, dlq, unique("group"))
        .await;
    (service, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_answered_202_with_one_batch_refused_delivers_the_others_and_dead_letters_it() {
    let (service, ids) =
        service_on_a_backlog(30, "partial", Fault::refuse_in_bulk("partial-4")).await;
    assert!(
        eventually(Duration::from_secs(30), || read_all(&service.dlq_topic)
            .len()
            == 1)
        .await
    );
    assert!(
        eventually(Duration::from_secs(30), || service
            .standin
            .accepted_event_ids()
            .len()
            == 29)
        .await
    );
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
    let accepted: HashSet<String> = service.standin.accepted_event_ids().into_iter().collect();
    assert_eq!(accepted.len(), 29, "each of the others once");
    assert!(!accepted.contains("partial-4"));
    assert!(
        ids.iter()
            .filter(|id| *id != "partial-4")
            .all(|id| accepted.contains(id))
    );
    let requests = service.standin.requests();
    let holding = |r: &&RequestLog| r.ids.iter().any(|id| id == "partial-4");
    let tries: Vec<&RequestLog> = requests.iter().filter(holding).collect();
    assert_eq!(tries.len(), 2, "the bulk, then the batch alone: {tries:?}");
    assert!(tries[0].status == 202 && tries[0].ids.len() > 1);
    assert!(tries[1].status == 400 && tries[1].ids.len() == 1);
    let dead = &read_all(&service.dlq_topic)[0];
    assert_eq!(dead.header("forwarder-error-kind"), Some("http_4xx"));
    let body = dead.header("forwarder-http-body").unwrap_or_default();
    assert!(body.contains("refused (stand-in fault)"), "{body}");
    assert!(read_all(&service.retry_topic).is_empty());
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_202_whose_errors_name_no_batch_sends_each_batch_of_it_again_alone() {
    let unreadable = r#"{"errors":[{"code":"BAD_REQUEST","message":"some batches failed"}]}"#;
    let fault = Fault::status(202).body(unreadable).times(1);
    let (service, ids) = service_on_a_backlog(30, "doubt", fault).await;
    assert!(
        eventually(Duration::from_secs(30), || service
            .standin
            .accepted_event_ids()
            .len()
            == 30)
        .await
    );
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
    let accepted: HashSet<String> = service.standin.accepted_event_ids().into_iter().collect();
    assert_eq!(accepted, ids.iter().cloned().collect::<HashSet<_>>());
    let requests = service.standin.requests();
    let doubted = requests
        .iter()
        .find(|r| r.status == 202 && r.ids.len() > 1)
        .expect("the bulk answered with errors");
    for id in &doubted.ids {
        assert!(
            requests
                .iter()
                .any(|r| r.status == 202 && r.ids == [id.clone()]),
            "{id} sent again alone"
        );
    }
    assert!(read_all(&service.dlq_topic).is_empty());
    service.stop().await;
}
