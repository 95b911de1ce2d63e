//! Hostile records: too large to dead-letter whole, more retries than memory holds. Every
//! record's fate stays readable and the partitions move on.

use std::time::Duration;

use mparticle_forwarder::standin::Fault;

use crate::support::*;

/// The producers' default `message.max.bytes`: the original records fit just under it, and
/// the `forwarder-*` headers take their dead letters over it.
const NEAR_THE_LIMIT: usize = 999_800;

fn sha256_hex(bytes: &[u8]) -> String {
    openssl::sha::sha256(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_to_dead_letter_whole_is_dead_lettered_shortened_and_its_partition_moves_on()
 {
    let service = ServiceSpec::default().partitions(1).topics(1).spawn().await;
    let topic = &service.topics[0];
    let producer = producer();
    // A value over EVENT_MAX_BYTES, near the broker's limit: dead-lettered as too large.
    let huge_value = vec![b'x'; NEAR_THE_LIMIT];
    produce(&producer, topic, Some("c1"), &huge_value).await;
    // A record that is not JSON, with a header near the broker's limit.
    let huge_header = "h".repeat(NEAR_THE_LIMIT - 100);
    produce_with_headers(
        &producer,
        topic,
        0,
        "c2",
        b"not json",
        &[("trace".into(), "t-1".into()), ("huge".into(), huge_header)],
    )
    .await;
    let after = point_add("after-the-huge-ones", "c3", 1);
    produce(&producer, topic, Some("c3"), after.as_bytes()).await;

    assert!(
        eventually(Duration::from_secs(30), || service
            .standin
            .accepted_event_ids()
            == ["after-the-huge-ones"])
        .await,
        "the record after them is delivered"
    );
    assert!(
        service.wait_fully_committed(Duration::from_secs(20)).await,
        "the partition moved on"
    );
    let dead = read_all(&service.dlq_topic);
    assert_eq!(dead.len(), 2);
    // Dead letters are written concurrently: found by what they are, not by order.
    let by_key = |key: &[u8]| {
        dead.iter()
            .find(|r| r.key.as_deref() == Some(key))
            .expect("a dead letter of each")
    };
    let value = by_key(b"c1");
    assert_eq!(value.header("forwarder-error-kind"), Some("too_large"));
    assert_eq!(value.header("forwarder-original-truncated"), Some("value"));
    let size = NEAR_THE_LIMIT.to_string();
    assert_eq!(value.header("forwarder-original-value-bytes"), Some(&*size));
    let sha = sha256_hex(&huge_value);
    assert_eq!(value.header("forwarder-original-value-sha256"), Some(&*sha));
    assert_eq!(value.value.as_ref().map(Vec::len), Some(16 * 1024));
    assert_eq!(value.key.as_deref(), Some(&b"c1"[..]));

    let header = by_key(b"c2");
    assert_eq!(header.header("forwarder-error-kind"), Some("invalid_json"));
    assert_eq!(
        header.header("forwarder-original-truncated"),
        Some("headers")
    );
    assert_eq!(
        header.header("forwarder-original-headers-dropped"),
        Some("1")
    );
    assert_eq!(header.header("trace"), Some("t-1"));
    assert_eq!(header.header("huge"), None);
    assert_eq!(header.value.as_deref(), Some(&b"not json"[..]));
    assert_eq!(
        service.stop().await,
        mparticle_forwarder::shutdown::StopReason::Requested
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_failure_of_a_record_too_large_for_the_retry_topic_is_dead_lettered_at_once() {
    let service = ServiceSpec::default().partitions(1).topics(1).spawn().await;
    service
        .standin
        .add_fault(Fault::status(503).when_id("big-headers"));
    let topic = &service.topics[0];
    let value = point_add("big-headers", "c1", 1);
    let padding = "p".repeat(NEAR_THE_LIMIT - value.len() - 100);
    produce_with_headers(
        &producer(),
        topic,
        0,
        "c1",
        value.as_bytes(),
        &[("padding".into(), padding)],
    )
    .await;
    assert!(
        eventually(Duration::from_secs(30), || read_all(&service.dlq_topic)
            .len()
            == 1)
        .await
    );
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
    let dead = &read_all(&service.dlq_topic)[0];
    assert_eq!(dead.header("forwarder-error-kind"), Some("too_large"));
    let error = dead.header("forwarder-error").unwrap_or_default();
    assert!(
        error.contains("retry topic") && error.contains("http_5xx"),
        "{error}"
    );
    assert_eq!(dead.header("forwarder-original-truncated"), Some("headers"));
    assert_eq!(dead.value.as_deref(), Some(value.as_bytes()));
    assert!(read_all(&service.retry_topic).is_empty());
    assert_eq!(
        service.stop().await,
        mparticle_forwarder::shutdown::StopReason::Requested
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_retries_waiting_than_memory_holds_are_each_written_once_and_all_delivered() {
    // Room for 20 records in flight and 20 retries waiting; 100 retries due in 5 s.
    let service = ServiceSpec::default()
        .partitions(1)
        .topics(1)
        .env("MAX_IN_FLIGHT_RECORDS", "20")
        .env("RETRY_BACKOFF", "5s")
        // One request at a time, so that answers come back in the order the stand-in gave
        // them: nine failed requests in a row, then one answered, stay below the gate's
        // outage threshold (ten in a row). With requests in parallel, the answered one
        // could be counted after the next failures and open the gate.
        .env("MPARTICLE_MAX_IN_FLIGHT_REQUESTS", "1")
        .spawn()
        .await;
    for _ in 0..4 {
        service.standin.add_fault(Fault::status(503).times(9));
        service.standin.add_fault(Fault::delay(0).times(1));
    }
    let ids = produce_events(&service.topics, 200, "crowd").await;
    assert!(
        eventually(Duration::from_secs(60), || service
            .standin
            .accepted_event_ids()
            .len()
            == ids.len())
        .await,
        "every event delivered"
    );
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
    let failed: usize = service
        .standin
        .requests()
        .iter()
        .filter(|r| r.status == 503)
        .map(|r| r.ids.len())
        .sum();
    assert!(failed > 20, "more retries than room for them ({failed})");
    assert_eq!(
        read_all(&service.retry_topic).len(),
        failed,
        "each failed record written to the retry topic once"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_name_that_is_not_utf8_is_dead_lettered_byte_for_byte() {
    use mparticle_forwarder::kafka::ffi;
    use mparticle_forwarder::kafka::record::{HeaderList, HeaderName};
    let service = ServiceSpec::default().partitions(1).topics(1).spawn().await;
    let topic = &service.topics[0];
    let odd: HeaderList = vec![
        (
            HeaderName::from(vec![0xff, 0xfe, b'n']),
            Some(b"v".to_vec()),
        ),
        (HeaderName::from("trace"), Some(b"t-1".to_vec())),
    ];
    let record = rdkafka::producer::FutureRecord::<str, [u8]>::to(topic)
        .key("c1")
        .payload(b"not json")
        .headers(ffi::write_headers(&odd));
    producer()
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let after = point_add("after-the-odd-one", "c2", 1);
    produce(&producer(), topic, Some("c2"), after.as_bytes()).await;

    assert!(
        eventually(Duration::from_secs(30), || service
            .standin
            .accepted_event_ids()
            == ["after-the-odd-one"])
        .await
    );
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
    let dead = read_all(&service.dlq_topic);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("forwarder-error-kind"), Some("invalid_json"));
    assert_eq!(
        dead[0].raw_headers[..2],
        odd[..],
        "the original headers, as they were"
    );
    assert_eq!(
        service.stop().await,
        mparticle_forwarder::shutdown::StopReason::Requested
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_records_are_bounded_in_memory_by_bytes_not_only_by_count() {
    // Room for 1 MiB of records: ten of about 100 KB, well within the 3,000 records.
    let service = ServiceSpec::default()
        .partitions(1)
        .topics(1)
        .env("MAX_IN_FLIGHT_BYTES", "1048576")
        .spawn()
        .await;
    service.standin.add_fault(Fault::delay(200));
    let padding = "p".repeat(100_000);
    let producer = producer();
    let mut ids = Vec::new();
    for i in 0..120 {
        let id = format!("large-{i}");
        let customer = format!("c{i}");
        let value =
            point_add(&id, &customer, 1).replacen('{', &format!(r#"{{"padding":"{padding}","#), 1);
        produce(
            &producer,
            &service.topics[0],
            Some(&customer),
            value.as_bytes(),
        )
        .await;
        ids.push(id);
    }
    let (mut most_records, mut most_bytes) = (0.0f64, 0.0f64);
    let drained = eventually(Duration::from_secs(90), || {
        let metrics = scrape(service.admin);
        let gauge = |name: &str| metric_value(&metrics, name).unwrap_or(0.0);
        most_records = most_records.max(gauge("mparticle_forwarder_records_in_flight"));
        most_bytes = most_bytes.max(gauge("mparticle_forwarder_bytes_in_flight"));
        service.standin.accepted_event_ids().len() == ids.len()
    })
    .await;
    assert!(drained, "every large event delivered");
    assert!(
        most_records <= 10.0,
        "at most ten 100 KB records in flight, saw {most_records}"
    );
    assert!(
        most_bytes <= 1_048_576.0 && most_bytes > 0.0,
        "bytes in flight within the bound, saw {most_bytes}"
    );
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
    service.stop().await;
}
