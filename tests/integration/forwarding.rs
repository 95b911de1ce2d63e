//! The whole service on a real Kafka broker, against the mParticle stand-in.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mparticle_forwarder::standin::Fault;
use serde_json::Value;

use crate::support::*;

fn expected_batch(name: &str) -> Value {
    serde_json::from_slice(
        &std::fs::read(format!("tests/data/events/{name}.expected-batch.json")).unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_events_arrive_as_exactly_the_expected_batches() {
    let service = ServiceSpec::default().spawn().await;
    let producer = producer();
    for (topic, name) in [
        (&service.topics[0], "point_add"),
        (&service.topics[1], "reward_claim"),
    ] {
        let value = std::fs::read(format!("tests/data/events/{name}.json")).unwrap();
        produce(&producer, topic, Some("cust-280e674c"), &value).await;
    }
    assert!(
        eventually(Duration::from_secs(30), || service
            .standin
            .accepted_event_count()
            >= 2)
        .await
    );
    let mut accepted = service.standin.accepted();
    accepted.sort_by_key(|b| {
        b["source_request_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    assert_eq!(
        accepted,
        vec![expected_batch("point_add"), expected_batch("reward_claim")]
    );
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
    let (status, metrics) = service.admin_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"mparticle_forwarder_events_delivered_total{action="point_add"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"mparticle_forwarder_events_delivered_total{action="reward_claim"} 1"#)
    );
    assert!(!metrics.contains(API_SECRET));
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_are_each_delivered_once_and_the_offsets_reach_the_end() {
    const COUNT: usize = 10_000;
    let service = ServiceSpec::default().partitions(3).spawn().await;
    let producer = producer();
    let mut deliveries = Vec::with_capacity(COUNT);
    for i in 0..COUNT {
        let customer = format!("cust-{}", i % 997);
        let (topic, value) = if i % 2 == 0 {
            (
                &service.topics[0],
                point_add(&format!("bulk-{i}"), &customer, (i % 500) as u32),
            )
        } else {
            (
                &service.topics[1],
                reward_claim(&format!("bulk-{i}"), &customer),
            )
        };
        let record = rdkafka::producer::FutureRecord::to(topic)
            .key(&customer)
            .payload(&value);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    assert!(
        eventually(Duration::from_secs(120), || service
            .standin
            .accepted_event_count()
            >= COUNT)
        .await,
        "only {} of {COUNT} delivered",
        service.standin.accepted_event_count()
    );
    let fully = service.wait_fully_committed(Duration::from_secs(30)).await;
    let progress: Vec<_> = service
        .topics
        .iter()
        .map(|t| (end_offsets(t), committed(&service.group, t)))
        .collect();
    let ids = service.standin.accepted_event_ids();
    let unique: HashSet<&String> = ids.iter().collect();
    if !fully {
        let (_, metrics) = service.admin_get("/metrics").await;
        let in_flight = metric_value(&metrics, "mparticle_forwarder_records_in_flight");
        panic!(
            "offsets did not reach the end: (end, committed) {progress:?}; {} distinct of {} \
             accepted events; records in flight: {in_flight:?}",
            unique.len(),
            ids.len()
        );
    }
    assert_eq!(unique.len(), COUNT, "every event delivered");
    assert_eq!(ids.len(), COUNT, "no event delivered twice");
    let bulk_requests = service
        .standin
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/bulkevents"))
        .count();
    assert!(bulk_requests > 0, "a backlog is sent in bulk requests");
    assert!(read_all(&service.dlq_topic).is_empty());
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_records_are_dead_lettered_with_their_kind_and_the_next_good_one_is_delivered() {
    let service = ServiceSpec::default().partitions(1).topics(1).spawn().await;
    let producer = producer();
    let topic = service.topics[0].clone();
    let bad: [(&[u8], &str); 3] = [
        (b"this is not json", "invalid_json"),
        (br#"{"id":"no-customer-id","action":"point_add","customer":{"email":"a@b.c"},"data":{"points":1}}"#, "invalid_event"),
        (br#"{"id":"no-points","action":"point_add","customer":{"id":"c1"},"data":{"reason":"x"}}"#, "mapping"),
    ];
    let mut offsets = Vec::new();
    for (value, _) in &bad {
        offsets.push(produce(&producer, &topic, Some("c1"), value).await.1);
    }
    produce(
        &producer,
        &topic,
        Some("c1"),
        point_add("good-after-bad", "c1", 5).as_bytes(),
    )
    .await;

    assert!(
        eventually(Duration::from_secs(30), || service
            .standin
            .accepted_event_ids()
            == ["good-after-bad"])
        .await
    );
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
    let dead = read_all(&service.dlq_topic);
    assert_eq!(dead.len(), 3, "{dead:?}");
    let by_offset: HashMap<String, &ReadRecord> = dead
        .iter()
        .map(|r| {
            (
                r.header("forwarder-original-offset").unwrap().to_string(),
                r,
            )
        })
        .collect();
    for ((value, kind), offset) in bad.iter().zip(&offsets) {
        let record = by_offset[&offset.to_string()];
        assert_eq!(record.header("forwarder-error-kind"), Some(*kind));
        assert_eq!(
            record.header("forwarder-original-topic"),
            Some(topic.as_str())
        );
        assert_eq!(record.header("forwarder-original-partition"), Some("0"));
        assert_eq!(record.header("forwarder-attempt"), Some("0"));
        assert!(!record.header("forwarder-error").unwrap().is_empty());
        assert_eq!(record.value.as_deref(), Some(*value), "the original bytes");
        assert_eq!(record.key.as_deref(), Some(&b"c1"[..]));
    }
    assert!(
        service
            .standin
            .requests()
            .iter()
            .all(|r| r.ids == ["good-after-bad"]),
        "invalid records are never sent"
    );
    assert!(
        read_all(&service.retry_topic).is_empty(),
        "invalid records are never retried"
    );
    let (_, metrics) = service.admin_get("/metrics").await;
    assert!(
        metrics.contains(
            r#"mparticle_forwarder_events_dead_lettered_total{action="point_add",kind="mapping"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"mparticle_forwarder_events_dead_lettered_total{action="other",kind="invalid_json"} 1"#
    ));
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_mparticle_answers_503_the_committed_offsets_do_not_pass_the_failed_record() {
    let service = ServiceSpec::default()
        .partitions(1)
        .topics(1)
        .env("RETRY_MAX_ATTEMPTS", "100")
        .env("RETRY_BACKOFF", "1s")
        .spawn()
        .await;
    let producer = producer();
    let topic = service.topics[0].clone();
    let retry_group = mparticle_forwarder::pipeline::retry_group(&service.group);
    service
        .standin
        .add_fault(Fault::status(503).when_id("failing"));

    // One at a time, so that each goes in a request of its own.
    let delivered = |id: &str| service.standin.accepted_event_ids().iter().any(|x| x == id);
    produce(
        &producer,
        &topic,
        Some("c1"),
        point_add("first", "c1", 1).as_bytes(),
    )
    .await;
    assert!(eventually(Duration::from_secs(20), || delivered("first")).await);
    produce(
        &producer,
        &topic,
        Some("c1"),
        point_add("failing", "c1", 2).as_bytes(),
    )
    .await;
    let seen = || {
        service
            .standin
            .requests()
            .iter()
            .any(|r| r.ids.contains(&"failing".to_string()))
    };
    assert!(eventually(Duration::from_secs(20), seen).await);
    // Another customer's: c1's later records wait behind its retry.
    produce(
        &producer,
        &topic,
        Some("c2"),
        point_add("after", "c2", 3).as_bytes(),
    )
    .await;
    assert!(eventually(Duration::from_secs(20), || delivered("after")).await);

    // The source offset moves past the failed record only once it is in the retry topic.
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
    assert!(!read_all(&service.retry_topic).is_empty());
    // In the retry topic, the record that is still failing holds the commit back.
    // (The commit is read before the end: both only grow, so this order cannot make a
    // correct commit look past the end.)
    for _ in 0..6 {
        let done = committed(&retry_group, &service.retry_topic)
            .get(&0)
            .copied()
            .unwrap_or(0);
        let end = end_offsets(&service.retry_topic)[&0];
        assert!(
            done < end,
            "retry commit {done} passed the pending retry (end {end})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let failed_attempts = service
        .standin
        .requests()
        .iter()
        .filter(|r| r.ids.contains(&"failing".to_string()) && r.status == 503)
        .count();
    assert!(
        failed_attempts >= 2,
        "it keeps retrying ({failed_attempts})"
    );

    service.standin.clear_faults();
    assert!(eventually(Duration::from_secs(20), || delivered("failing")).await);
    let retry_topic = service.retry_topic.clone();
    assert!(
        eventually(Duration::from_secs(20), || {
            committed(&retry_group, &retry_topic).get(&0) == end_offsets(&retry_topic).get(&0)
        })
        .await
    );
    assert!(read_all(&service.dlq_topic).is_empty());
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_refused_for_one_bad_batch_delivers_the_rest_and_dead_letters_that_one() {
    let service = ServiceSpec::default()
        .partitions(1)
        .topics(1)
        // A long linger so the 50 records leave as one bulk request.
        .env("MPARTICLE_BULK_LINGER", "500ms")
        .spawn()
        .await;
    service
        .standin
        .add_fault(Fault::status(400).when_id("bulk-bad"));
    let producer = producer();
    let topic = service.topics[0].clone();
    let mut pending = Vec::new();
    for i in 0..50 {
        let id = if i == 23 {
            "bulk-bad".to_string()
        } else {
            format!("bulk-ok-{i}")
        };
        let value = point_add(&id, "c1", i);
        let record = rdkafka::producer::FutureRecord::to(&topic)
            .key("c1")
            .payload(&value);
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for p in pending {
        p.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    assert!(
        eventually(Duration::from_secs(30), || service
            .standin
            .accepted_event_count()
            >= 49)
        .await
    );
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
    let ids: HashSet<String> = service.standin.accepted_event_ids().into_iter().collect();
    assert_eq!(ids.len(), 49);
    assert!(!ids.contains("bulk-bad"));
    let dead = read_all(&service.dlq_topic);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("forwarder-error-kind"), Some("http_4xx"));
    assert_eq!(dead[0].header("forwarder-http-status"), Some("400"));
    assert_eq!(dead[0].header("forwarder-attempt"), Some("1"));
    assert!(
        dead[0]
            .header("forwarder-http-body")
            .unwrap()
            .contains("BAD_REQUEST")
    );
    service.stop().await;
}

/// Source records are read in place from librdkafka's messages, and their headers only
/// when a copy is written: a failed record's copy still carries every header it came with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_and_dead_letter_copies_keep_the_headers_the_record_came_with() {
    let service = ServiceSpec::default().partitions(1).topics(1).spawn().await;
    service
        .standin
        .add_fault(Fault::status(503).when_id("retried").times(1));
    let producer = producer();
    let topic = service.topics[0].clone();
    let headers = [
        ("traceparent".to_string(), "00-abc-01".to_string()),
        ("tenant".to_string(), "acme".to_string()),
    ];
    let bad = br#"{"id":"bad","action":"point_add","customer":{}}"#;
    produce_with_headers(&producer, &topic, 0, "c1", bad, &headers).await;
    let retried = point_add("retried", "c1", 3);
    produce_with_headers(&producer, &topic, 0, "c2", retried.as_bytes(), &headers).await;

    assert!(
        eventually(Duration::from_secs(30), || service
            .standin
            .accepted_event_ids()
            == ["retried"])
        .await
    );
    let dead = read_all(&service.dlq_topic);
    let retries = read_all(&service.retry_topic);
    assert_eq!((dead.len(), retries.len()), (1, 1), "{dead:?} {retries:?}");
    for (copy, key, value) in [
        (&dead[0], "c1", &bad[..]),
        (&retries[0], "c2", retried.as_bytes()),
    ] {
        assert_eq!(copy.header("traceparent"), Some("00-abc-01"), "{copy:?}");
        assert_eq!(copy.header("tenant"), Some("acme"));
        assert_eq!(copy.key.as_deref(), Some(key.as_bytes()));
        assert_eq!(copy.value.as_deref(), Some(value));
    }
    assert_eq!(
        dead[0].header("forwarder-error-kind"),
        Some("invalid_event")
    );
    assert_eq!(retries[0].header("forwarder-error-kind"), Some("http_5xx"));
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmapped_action_is_skipped_and_counted() {
    let service = ServiceSpec::default().partitions(1).topics(1).spawn().await;
    let producer = producer();
    let topic = service.topics[0].clone();
    produce(
        &producer,
        &topic,
        None,
        br#"{"id":"tier-1","action":"tier_change","customer":{"id":"c1"}}"#,
    )
    .await;
    produce(
        &producer,
        &topic,
        None,
        point_add("after-skip", "c1", 1).as_bytes(),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(20), || service
            .standin
            .accepted_event_ids()
            == ["after-skip"])
        .await
    );
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
    let (_, metrics) = service.admin_get("/metrics").await;
    assert!(
        metrics.contains(r#"mparticle_forwarder_events_skipped_total{reason="unmapped_action"} 1"#),
        "{metrics}"
    );
    assert!(read_all(&service.dlq_topic).is_empty());
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_once_the_group_is_joined() {
    let service = ServiceSpec::default().partitions(1).topics(1).spawn().await;
    let admin = service.admin;
    let ready = async {
        for _ in 0..200 {
            let response = reqwest::get(format!("http://{admin}/readyz"))
                .await
                .unwrap();
            if response.status() == 200 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(ready.await);
    assert_eq!(service.admin_get("/healthz").await.0, 200);
    service.stop().await;
}
