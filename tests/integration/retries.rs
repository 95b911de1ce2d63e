//! Failures never lose an event: the delayed retry topic, the attempts, the dead-letter
//! topic, rate limits and refused credentials. Short backoffs (`1s,2s`).

use std::collections::HashSet;
use std::time::Duration;

use mparticle_forwarder::standin::{Fault, RequestLog};

use crate::support::*;

fn requests_for(service: &TestService, id: &str) -> Vec<RequestLog> {
    service
        .standin
        .requests()
        .into_iter()
        .filter(|r| r.ids.iter().any(|x| x == id))
        .collect()
}

/// Produces the point-add events `{prefix}-0` to `{prefix}-{count - 1}` of `customer`, one
/// at a time, each acknowledged before the next.
async fn produce_point_adds(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    customer: &str,
    prefix: &str,
    count: usize,
) {
    for i in 0..count {
        let value = point_add(&format!("{prefix}-{i}"), customer, 1);
        produce(producer, topic, Some(customer), value.as_bytes()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_answered_503_twice_is_delivered_on_the_third_attempt() {
    let service = ServiceSpec::default().partitions(1).topics(1).spawn().await;
    service
        .standin
        .add_fault(Fault::status(503).when_id("flaky").times(2));
    let producer = producer();
    produce(
        &producer,
        &service.topics[0],
        Some("c1"),
        point_add("flaky", "c1", 7).as_bytes(),
    )
    .await;

    assert!(
        eventually(Duration::from_secs(30), || service
            .standin
            .accepted_event_ids()
            == ["flaky"])
        .await
    );
    let attempts = requests_for(&service, "flaky");
    let statuses: Vec<u16> = attempts.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 202]);
    assert!(
        attempts[1].at_ms - attempts[0].at_ms >= 1_000,
        "backoff before attempt 2 is 1 s: {attempts:?}"
    );
    assert!(
        attempts[2].at_ms - attempts[1].at_ms >= 2_000,
        "backoff before attempt 3 is 2 s: {attempts:?}"
    );

    let retries = read_all(&service.retry_topic);
    let counts: Vec<&str> = retries
        .iter()
        .filter_map(|r| r.header("forwarder-attempt"))
        .collect();
    assert_eq!(counts, ["1", "2"]);
    for r in &retries {
        assert_eq!(r.header("forwarder-error-kind"), Some("http_5xx"));
        assert_eq!(r.header("forwarder-http-status"), Some("503"));
        assert_eq!(
            r.header("forwarder-original-topic"),
            Some(service.topics[0].as_str())
        );
        assert_eq!(r.header("forwarder-original-offset"), Some("0"));
        assert_eq!(r.key.as_deref(), Some(&b"c1"[..]));
    }
    assert!(read_all(&service.dlq_topic).is_empty());
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_always_answered_503_reaches_mparticle_five_times_then_is_dead_lettered() {
    let service = ServiceSpec::default().partitions(1).topics(1).spawn().await;
    service
        .standin
        .add_fault(Fault::status(503).when_id("doomed"));
    let producer = producer();
    produce(
        &producer,
        &service.topics[0],
        Some("c1"),
        point_add("doomed", "c1", 7).as_bytes(),
    )
    .await;

    assert!(
        eventually(Duration::from_secs(40), || !read_all(&service.dlq_topic)
            .is_empty())
        .await
    );
    assert_eq!(requests_for(&service, "doomed").len(), 5);
    let dead = read_all(&service.dlq_topic);
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].header("forwarder-error-kind"),
        Some("attempts_exhausted")
    );
    assert_eq!(dead[0].header("forwarder-attempt"), Some("5"));
    assert_eq!(dead[0].header("forwarder-http-status"), Some("503"));
    assert_eq!(dead[0].header("forwarder-original-offset"), Some("0"));
    assert!(dead[0].header("forwarder-first-attempt-ms").is_some());
    assert!(dead[0].header("forwarder-last-attempt-ms").is_some());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        requests_for(&service, "doomed").len(),
        5,
        "no sixth attempt"
    );
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
    let (_, metrics) = service.admin_get("/metrics").await;
    assert!(
        metrics.contains(r#"events_retried_total{action="point_add",kind="http_5xx"} 4"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"events_dead_lettered_total{action="point_add",kind="attempts_exhausted"} 1"#
        )
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_3_holds_every_request_for_3_seconds() {
    let service = ServiceSpec::default().partitions(1).topics(1).spawn().await;
    service.standin.add_fault(
        Fault::status(429)
            .retry_after(3)
            .when_id("limited")
            .times(1),
    );
    let producer = producer();
    produce(
        &producer,
        &service.topics[0],
        Some("c1"),
        point_add("limited", "c1", 1).as_bytes(),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(20), || !requests_for(
            &service, "limited"
        )
        .is_empty())
        .await
    );
    let limited_at = requests_for(&service, "limited")[0].at_ms;
    produce_point_adds(&producer, &service.topics[0], "c2", "other", 5).await;
    assert!(
        eventually(Duration::from_secs(30), || service
            .standin
            .accepted_event_count()
            == 6)
        .await
    );
    let requests = service.standin.requests();
    assert!(requests.len() >= 2);
    for r in &requests[1..] {
        assert!(
            r.at_ms >= limited_at + 3_000,
            "a request {} ms after the 429",
            r.at_ms - limited_at
        );
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_due_in_30_s_does_not_delay_one_due_in_1_s_behind_it() {
    let service = ServiceSpec::default().partitions(1).topics(1).spawn().await;
    let producer = producer();
    let now = mparticle_forwarder::clock::unix_ms();
    // Two customers': one customer's later record waits behind its earlier one whatever
    // their due times (ordering.rs).
    let retry_record = |id: &str, customer: &str, due_ms: i64| {
        (
            point_add(id, customer, 1),
            vec![
                ("forwarder-attempt".to_string(), "1".to_string()),
                ("forwarder-not-before-ms".to_string(), due_ms.to_string()),
                (
                    "forwarder-original-topic".to_string(),
                    service.topics[0].clone(),
                ),
            ],
        )
    };
    for (id, customer, due) in [
        ("due-in-30s", "c1", now + 30_000),
        ("due-in-1s", "c2", now + 1_000),
    ] {
        let (value, headers) = retry_record(id, customer, due);
        produce_with_headers(
            &producer,
            &service.retry_topic,
            0,
            customer,
            value.as_bytes(),
            &headers,
        )
        .await;
    }
    assert!(
        eventually(Duration::from_secs(15), || service
            .standin
            .accepted_event_ids()
            == ["due-in-1s"])
        .await
    );
    let first = requests_for(&service, "due-in-1s")[0].at_ms;
    assert!(first >= now + 1_000, "not before its time");
    assert!(first < now + 10_000, "not held back by the later one");
    assert!(
        eventually(Duration::from_secs(45), || service
            .standin
            .accepted_event_count()
            == 2)
        .await
    );
    assert!(requests_for(&service, "due-in-30s")[0].at_ms >= now + 30_000);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_dead_lettered_after_exactly_one_attempt() {
    let service = ServiceSpec::default().partitions(1).topics(1).spawn().await;
    service
        .standin
        .add_fault(Fault::status(400).when_id("malformed"));
    let producer = producer();
    produce(
        &producer,
        &service.topics[0],
        Some("c1"),
        point_add("malformed", "c1", 1).as_bytes(),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(20), || read_all(&service.dlq_topic)
            .len()
            == 1)
        .await
    );
    assert_eq!(requests_for(&service, "malformed").len(), 1);
    let dead = read_all(&service.dlq_topic);
    assert_eq!(dead[0].header("forwarder-error-kind"), Some("http_4xx"));
    assert_eq!(dead[0].header("forwarder-attempt"), Some("1"));
    assert!(read_all(&service.retry_topic).is_empty());
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_stop_consumption_without_dead_letters_until_they_work_again() {
    let service = ServiceSpec::default().partitions(1).topics(1).spawn().await;
    service.standin.add_fault(Fault::status(401));
    let producer = producer();
    produce_point_adds(&producer, &service.topics[0], "c1", "auth", 5).await;
    assert!(
        eventually(Duration::from_secs(20), || service
            .standin
            .requests()
            .iter()
            .any(|r| r.status == 401))
        .await
    );
    let admin = service.admin;
    let not_ready = eventually(Duration::from_secs(5), || {
        std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://{admin}/readyz"),
            ])
            .output()
            .map(|o| o.stdout == b"503")
            .unwrap_or(false)
    })
    .await;
    assert!(
        not_ready,
        "/readyz answers 503 while credentials are refused"
    );
    let (_, metrics) = service.admin_get("/metrics").await;
    assert_eq!(
        metric_value(&metrics, "mparticle_forwarder_mparticle_auth_failed"),
        Some(1.0)
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
    assert!(
        read_all(&service.retry_topic).is_empty(),
        "no attempt burnt"
    );

    service.standin.clear_faults();
    assert!(
        eventually(Duration::from_secs(40), || service
            .standin
            .accepted_event_count()
            == 5)
        .await
    );
    let ids: HashSet<String> = service.standin.accepted_event_ids().into_iter().collect();
    assert_eq!(ids.len(), 5);
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
    assert_eq!(service.admin_get("/readyz").await.0, 200);
    let (_, metrics) = service.admin_get("/metrics").await;
    assert_eq!(
        metric_value(&metrics, "mparticle_forwarder_mparticle_auth_failed"),
        Some(0.0)
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_pauses_consumption_instead_of_burning_every_attempt() {
    let service = ServiceSpec::default()
        .partitions(1)
        .topics(1)
        // Five attempts 1 s apart: without the pause, every record would be dead-lettered
        // within the 8 s watched below.
        .env("RETRY_MAX_ATTEMPTS", "5")
        .env("RETRY_BACKOFF", "1s")
        .env("MPARTICLE_BULK_LINGER", "1ms")
        // One record per request however busy the machine: ten records make ten requests.
        .env("MAX_IN_FLIGHT_RECORDS", "1")
        .spawn()
        .await;
    service.standin.add_fault(Fault::status(503));
    let producer = producer();
    // Twelve customers: one customer's later records would wait behind its first retry
    // and never make ten requests.
    for i in 0..12 {
        let customer = format!("c{i}");
        produce(
            &producer,
            &service.topics[0],
            Some(&customer),
            point_add(&format!("outage-{i}"), &customer, 1).as_bytes(),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let admin = service.admin;
    let open = eventually(Duration::from_secs(20), || {
        metric_value(&scrape(admin), "mparticle_forwarder_mparticle_outage") == Some(1.0)
    })
    .await;
    assert!(open, "ten failed requests in a row pause delivery");
    let before = service.standin.requests().len();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let during = service.standin.requests().len() - before;
    assert!(
        during <= 2,
        "only probes while paused ({during} requests in 8 s): {:?}",
        service.standin.requests()
    );
    assert!(
        read_all(&service.dlq_topic).is_empty(),
        "no record burnt its attempts during the outage"
    );

    service.standin.clear_faults();
    assert!(
        eventually(Duration::from_secs(30), || service
            .standin
            .accepted_event_count()
            >= 12)
        .await
    );
    let ids: HashSet<String> = service.standin.accepted_event_ids().into_iter().collect();
    assert_eq!(ids.len(), 12);
    assert!(read_all(&service.dlq_topic).is_empty());
    let (_, metrics) = service.admin_get("/metrics").await;
    assert_eq!(
        metric_value(&metrics, "mparticle_forwarder_mparticle_outage"),
        Some(0.0)
    );
    assert!(metrics.contains(r#"mparticle_forwarder_delivery_paused_total{reason="outage"}"#));
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_dlq_sends_dead_letters_back_and_stops_a_record_from_looping() {
    let service = ServiceSpec::default().partitions(1).topics(1).spawn().await;
    service
        .standin
        .add_fault(Fault::status(400).when_id("refused-once"));
    let producer = producer();
    produce(
        &producer,
        &service.topics[0],
        Some("c1"),
        point_add("refused-once", "c1", 1).as_bytes(),
    )
    .await;
    produce(&producer, &service.topics[0], Some("c1"), b"not json").await;
    assert!(
        eventually(Duration::from_secs(20), || read_all(&service.dlq_topic)
            .len()
            == 2)
        .await
    );

    let replay = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_mparticle-forwarder"))
            .arg("replay-dlq")
            .args(args)
            .env_clear()
            .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap())
            .env("KAFKA_GROUP_ID", &service.group)
            .env("KAFKA_TOPICS", &service.topics[0])
            .env("KAFKA_RETRY_TOPIC", &service.retry_topic)
            .env("KAFKA_DLQ_TOPIC", &service.dlq_topic)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let dry = replay(&["--kind", "http_4xx", "--dry-run"]);
    assert!(dry.contains("would replay 1 of 2 dead letters"), "{dry}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        service.standin.accepted_event_ids().is_empty(),
        "a dry run writes nothing"
    );

    // Replayed while mParticle still refuses it: dead-lettered again, now counted.
    let out = replay(&["--kind", "http_4xx", "--max-replays", "1"]);
    assert!(out.contains("replayed 1 of 2 dead letters"), "{out}");
    let dlq = service.dlq_topic.clone();
    assert!(eventually(Duration::from_secs(20), || read_all(&dlq).len() == 3).await);
    let dead = read_all(&service.dlq_topic);
    assert_eq!(
        dead.iter()
            .filter(|r| r.header("forwarder-replay-count") == Some("1"))
            .count(),
        1
    );

    // With the cause fixed, the original dead letter is replayed; the one already replayed
    // once is left where it is.
    service.standin.clear_faults();
    let out = replay(&["--kind", "http_4xx", "--max-replays", "1"]);
    assert!(out.contains("replayed 1 of 3 dead letters"), "{out}");
    assert!(out.contains("1 left after 1 replays"), "{out}");
    assert!(
        eventually(Duration::from_secs(20), || service
            .standin
            .accepted_event_ids()
            == ["refused-once"])
        .await
    );
    // Replayed, it goes without its user attributes (newer records of the customer may
    // have set them since), which a record consumed afresh carries.
    produce(
        &producer,
        &service.topics[0],
        Some("c1"),
        point_add("fresh", "c1", 1).as_bytes(),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(20), || service.standin.accepted().len()
            == 2)
        .await
    );
    let batches = service.standin.accepted();
    assert!(
        batches[0].get("user_attributes").is_none(),
        "{}",
        batches[0]
    );
    assert!(batches[1]["user_attributes"].is_object(), "{}", batches[1]);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_room_longer_than_the_max_poll_interval_keeps_the_consumer_in_its_group() {
    // Five record slots, all held by a request waiting at the gate while mParticle refuses
    // the credentials for about 15 s: twice the max.poll.interval.ms set here. A consumer
    // that stopped polling meanwhile would be taken out of its group and consume its five
    // records again.
    let service = ServiceSpec::default()
        .partitions(1)
        .topics(1)
        .env("MAX_IN_FLIGHT_RECORDS", "5")
        .env("KAFKA_PROPERTY_SESSION_TIMEOUT_MS", "6000")
        .env("KAFKA_PROPERTY_MAX_POLL_INTERVAL_MS", "7000")
        .spawn()
        .await;
    service.standin.add_fault(Fault::status(401).times(2));
    let producer = producer();
    produce_point_adds(&producer, &service.topics[0], "c1", "room", 30).await;
    let all = eventually(Duration::from_secs(60), || {
        service.standin.accepted_event_count() >= 30
    })
    .await;
    assert!(
        all,
        "{} of 30 delivered",
        service.standin.accepted_event_count()
    );
    let ids = service.standin.accepted_event_ids();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 30);
    assert_eq!(ids.len(), 30, "no record consumed twice");
    let (_, metrics) = service.admin_get("/metrics").await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"mparticle_forwarder_rebalances_total{kind="revoke"}"#
        ),
        None,
        "no partition was taken away"
    );
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_dlq_waits_for_room_in_a_full_local_queue_and_replays_everything() {
    let (origin, dlq) = (unique("origin"), unique("dlq"));
    create_topics(&[&origin, &dlq], 2).await;
    let producer = producer();
    let mut pending = Vec::new();
    for i in 0..2_000 {
        let value = point_add(&format!("replayed-{i}"), "c1", 1);
        let record = rdkafka::producer::FutureRecord::to(&dlq)
            .key("c1")
            .payload(&value)
            .headers(
                rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                    key: "forwarder-original-topic",
                    value: Some(origin.as_bytes()),
                }),
            );
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for p in pending {
        p.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    let shortened = [
        ("forwarder-original-topic".to_string(), origin.clone()),
        (
            "forwarder-original-truncated".to_string(),
            "value".to_string(),
        ),
    ];
    produce_with_headers(&producer, &dlq, 0, "c1", b"{\"id\":", &shortened).await;

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mparticle-forwarder"))
        .arg("replay-dlq")
        .env_clear()
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap())
        .env("KAFKA_GROUP_ID", unique("group"))
        .env("KAFKA_TOPICS", &origin)
        .env("KAFKA_RETRY_TOPIC", unique("retry"))
        .env("KAFKA_DLQ_TOPIC", &dlq)
        // Room for five records in librdkafka's local queue.
        .env("KAFKA_PROPERTY_QUEUE_BUFFERING_MAX_MESSAGES", "5")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("replayed 2000 of 2001 dead letters"),
        "{stdout}"
    );
    assert!(stdout.contains("1 shortened (not replayable)"), "{stdout}");
    let replayed = read_all(&origin);
    assert_eq!(replayed.len(), 2_000);
    assert!(
        replayed
            .iter()
            .all(|r| r.header("forwarder-replay-count") == Some("1"))
    );
}
