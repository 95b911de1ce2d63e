//! A customer's records reach mParticle in order through retries: while one of them waits
//! for another attempt, the customer's later records wait behind it (written to the retry
//! topic after it, with no attempt used), and other customers flow meanwhile; a record
//! dead-lettered at last releases those behind it, and its dead letter names them.

use std::collections::HashSet;
use std::time::Duration;

use mparticle_forwarder::standin::{Fault, StandIn};
use serde_json::Value;

use crate::resilience::{spawn_forwarder, topics};
use crate::support::*;

/// A point add of `customer` whose spendable balance is `spendable`.
fn balance(id: &str, customer: &str, spendable: usize) -> String {
    format!(
        r#"{{"id":"{id}","action":"point_add","customer":{{"id":"{customer}","tier":"gold","spendable":{spendable}}},"data":{{"points":1}}}}"#
    )
}

/// The event ids of `customer` in the order mParticle accepted them, and the spendable
/// balance of the last batch that carried one.
fn accepted_of(batches: &[Value], customer: &str) -> (Vec<String>, Option<String>) {
    let mut ids = Vec::new();
    let mut latest = None;
    for batch in batches {
        if batch["user_identities"]["customer_id"].as_str() != Some(customer) {
            continue;
        }
        for event in batch["events"].as_array().unwrap() {
            ids.push(
                event["data"]["source_message_id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        latest = batch["user_attributes"]["antavo_spendable"]
            .as_str()
            .map(str::to_string);
    }
    (ids, latest)
}

/// Waits until `standin` has accepted `events` events and `service`'s group has committed
/// every source record.
async fn delivered_and_committed(service: &TestService, standin: &StandIn, events: usize) {
    assert!(
        eventually(Duration::from_secs(60), || standin.accepted_event_count()
            >= events)
        .await,
        "{events} events delivered"
    );
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
}

/// Produces `r1` of customer "member", waits until the stand-in has answered it once,
/// then produces `others` events of other customers and `r2`, `r3` of "member", each
/// with a higher balance.
async fn r1_then_the_rest(service: &TestService, others: usize) {
    let producer = producer();
    let topic = &service.topics[0];
    let r1 = balance("r1", "member", 100);
    produce(&producer, topic, Some("member"), r1.as_bytes()).await;
    assert!(
        eventually(Duration::from_secs(30), || service
            .standin
            .requests()
            .iter()
            .any(|r| r.ids.iter().any(|id| id == "r1")))
        .await,
        "r1 reached the stand-in"
    );
    if others > 0 {
        produce_events(&service.topics, others, "other").await;
    }
    for (id, spendable) in [("r2", 150), ("r3", 200)] {
        let value = balance(id, "member", spendable);
        produce(&producer, topic, Some("member"), value.as_bytes()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_later_records_wait_behind_its_retry_and_arrive_in_order() {
    let service = ServiceSpec::default()
        .partitions(1)
        .topics(1)
        .env("RETRY_BACKOFF", "2s")
        .spawn()
        .await;
    service
        .standin
        .add_fault(Fault::status(429).when_id("r1").times(1));
    service
        .standin
        .add_fault(Fault::status(503).when_id("r1").times(1));
    r1_then_the_rest(&service, 1_000).await;
    delivered_and_committed(&service, &service.standin, 1_003).await;
    assert_eq!(service.standin.accepted_event_count(), 1_003, "each once");

    let (order, latest) = accepted_of(&service.standin.accepted(), "member");
    assert_eq!(order, ["r1", "r2", "r3"]);
    assert_eq!(
        latest.as_deref(),
        Some("200"),
        "r3's balance is the last word"
    );

    // Only the member's records went through the retry topic: r1 on its failure, r2 and r3
    // behind it, in that order, with no attempt used.
    let retried = read_all(&service.retry_topic);
    let seen: Vec<(String, String, String)> = retried
        .iter()
        .map(|r| {
            let value: Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
            (
                value["id"].as_str().unwrap().to_string(),
                r.header("forwarder-error-kind").unwrap().to_string(),
                r.header("forwarder-attempt").unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        ("r1", "http_5xx", "1"),
        ("r2", "held_behind", "0"),
        ("r3", "held_behind", "0"),
    ]
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()));
    assert_eq!(seen, expected);
    assert!(
        retried
            .iter()
            .all(|r| r.key.as_deref() == Some(b"member".as_slice()))
    );

    let metrics = scrape(service.admin);
    let value = |series: &str| metric_value(&metrics, series).unwrap_or(-1.0);
    assert_eq!(
        value(r#"mparticle_forwarder_events_retried_total{action="point_add",kind="held_behind"}"#),
        2.0
    );
    assert_eq!(
        value("mparticle_forwarder_customers_held_behind_retry"),
        0.0
    );
    assert_eq!(value("mparticle_forwarder_records_held_behind_retry"), 0.0);
    assert!(read_all(&service.dlq_topic).is_empty());
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_dead_lettered_at_last_releases_the_records_behind_it_in_order() {
    let service = ServiceSpec::default()
        .partitions(1)
        .topics(1)
        .env("RETRY_BACKOFF", "1s")
        .env("RETRY_MAX_ATTEMPTS", "2")
        .spawn()
        .await;
    service.standin.add_fault(Fault::status(503).when_id("r1"));
    r1_then_the_rest(&service, 0).await;
    delivered_and_committed(&service, &service.standin, 2).await;
    let (order, latest) = accepted_of(&service.standin.accepted(), "member");
    assert_eq!(order, ["r2", "r3"]);
    assert_eq!(latest.as_deref(), Some("200"));
    // Nothing of the member was accepted before r1's last attempt failed.
    let statuses: Vec<u16> = service
        .standin
        .requests()
        .iter()
        .map(|r| r.status)
        .collect();
    let last_failure = statuses.iter().rposition(|s| *s == 503).unwrap();
    let first_success = statuses.iter().position(|s| *s == 202).unwrap();
    assert!(last_failure < first_success, "{statuses:?}");
    let dead = read_all(&service.dlq_topic);
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].header("forwarder-error-kind"),
        Some("attempts_exhausted")
    );
    // It names the customer's records that go on without it (where each was consumed).
    let topic = &service.topics[0];
    assert_eq!(
        dead[0].header("forwarder-later-records"),
        Some(format!("{topic}/0/1,{topic}/0/2").as_str())
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_record_of_another_topic_waits_behind_its_retry_once() {
    // Two source topics: the member's records in them have two source partitions, and
    // so two retry partitions of their own.
    let service = ServiceSpec::default()
        .partitions(1)
        .topics(2)
        .env("RETRY_BACKOFF", "2s")
        .spawn()
        .await;
    service
        .standin
        .add_fault(Fault::status(503).when_id("r1").times(1));
    let producer = producer();
    let r1 = balance("r1", "member", 100);
    produce(&producer, &service.topics[0], Some("member"), r1.as_bytes()).await;
    assert!(
        eventually(Duration::from_secs(30), || !read_all(&service.retry_topic)
            .is_empty())
        .await,
        "r1 in the retry topic"
    );
    let r2 = balance("r2", "member", 150);
    produce(&producer, &service.topics[1], Some("member"), r2.as_bytes()).await;
    delivered_and_committed(&service, &service.standin, 2).await;
    let (order, latest) = accepted_of(&service.standin.accepted(), "member");
    assert_eq!(order, ["r1", "r2"]);
    assert_eq!(latest.as_deref(), Some("150"));
    // r2 went behind r1 on r1's retry partition and came back behind it, once: on a
    // partition of its own it would come back before r1 and go round again.
    let metrics = scrape(service.admin);
    assert_eq!(
        metric_value(
            &metrics,
            r#"mparticle_forwarder_events_retried_total{action="point_add",kind="held_behind"}"#
        ),
        Some(1.0)
    );
    let partitions: Vec<i32> = read_all(&service.retry_topic)
        .iter()
        .map(|r| r.partition)
        .collect();
    assert_eq!(partitions.len(), 2);
    assert_eq!(partitions[0], partitions[1], "one retry partition");
    service.stop().await;
}

/// Two replicas of one group on four partitions, each having taken its share.
async fn two_replicas(standin: &StandIn) -> (TestService, TestService) {
    let spec = || {
        ServiceSpec::default()
            .partitions(4)
            .topics(1)
            .env("RETRY_BACKOFF", "2s")
    };
    let first = spec().spawn_with(standin.clone()).await;
    let second = spec().replica_of(&first, standin.clone()).await;
    // Settled once both have taken partitions (the retry partitions follow), and a moment
    // for the first to give up what it may have had before.
    let assigned = |s: &TestService| {
        metric_value(
            &scrape(s.admin),
            r#"mparticle_forwarder_rebalances_total{kind="assign"}"#,
        )
        .unwrap_or(0.0)
    };
    assert!(
        eventually(Duration::from_secs(60), || assigned(&first) >= 1.0
            && assigned(&second) >= 1.0)
        .await,
        "both replicas took partitions"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    (first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_a_customers_records_still_arrive_in_order_through_retries() {
    let standin = standin().await;
    standin.add_fault(Fault::status(429).when_id("r1").times(1));
    standin.add_fault(Fault::status(503).when_id("r1").times(1));
    let (first, second) = two_replicas(&standin).await;
    r1_then_the_rest(&first, 1_000).await;
    delivered_and_committed(&first, &standin, 1_003).await;
    assert_eq!(standin.accepted_event_count(), 1_003, "each once");
    let (order, latest) = accepted_of(&standin.accepted(), "member");
    assert_eq!(order, ["r1", "r2", "r3"]);
    assert_eq!(latest.as_deref(), Some("200"));
    let kinds: Vec<String> = read_all(&first.retry_topic)
        .iter()
        .map(|r| r.header("forwarder-error-kind").unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["http_5xx", "held_behind", "held_behind"]);
    first.stop().await;
    second.stop().await;
}

/// The source partitions of `topic` that the forwarder serving metrics at `admin` reports
/// a lag for: those it consumes.
fn lagging_partitions(admin: &str, topic: &str) -> Vec<i32> {
    let metrics = scrape(admin.parse().unwrap());
    metrics
        .lines()
        .filter(|l| l.starts_with("mparticle_forwarder_consumer_lag{"))
        .filter(|l| l.contains(&format!(r#"topic="{topic}""#)))
        .filter_map(|l| {
            let rest = &l[l.find(r#"partition=""#)? + 11..];
            rest[..rest.find('"')?].parse().ok()
        })
        .collect()
}

/// A port nobody listens on now, for a forwarder's admin server.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_records_stay_in_order_when_the_replica_holding_its_retry_is_killed() {
    let standin = standin().await;
    standin.add_fault(Fault::status(429).when_id("r1").times(1));
    standin.add_fault(Fault::status(503).when_id("r1").times(1));
    let t = topics(3).await;
    let admins = [free_port(), free_port()].map(|port| format!("127.0.0.1:{port}"));
    let spawn = |admin: &str| {
        let env = [
            ("RETRY_BACKOFF", "3s"),
            ("ADMIN_ADDR", admin),
            ("KAFKA_PROPERTY_STATISTICS_INTERVAL_MS", "500"),
        ];
        spawn_forwarder(&standin, &t, &env)
    };
    let mut replicas = [spawn(&admins[0]), spawn(&admins[1])];
    // Both in the group, each with its share of the six source partitions (a second
    // member's share comes a rebalance after it joins).
    let assigned = |admin: &str| {
        let metrics = scrape(admin.parse().unwrap());
        metric_value(
            &metrics,
            r#"mparticle_forwarder_rebalances_total{kind="assign"}"#,
        )
        .unwrap_or(0.0)
    };
    assert!(
        eventually(Duration::from_secs(60), || admins
            .iter()
            .all(|a| assigned(a) >= 1.0))
        .await,
        "both replicas in the group"
    );
    tokio::time::sleep(Duration::from_secs(8)).await;

    let producer = producer();
    let topic = &t.sources[0];
    let r1 = balance("r1", "member", 100);
    let (partition, _) = produce(&producer, topic, Some("member"), r1.as_bytes()).await;
    // r1 was answered 429 and written to the retry topic by the replica that owns its
    // partition; that one is killed.
    let retried = || {
        read_all(&t.retry)
            .iter()
            .any(|r| r.key.as_deref() == Some(b"member".as_slice()))
    };
    assert!(
        eventually(Duration::from_secs(30), retried).await,
        "r1 in the retry topic"
    );
    let mut owner = None;
    let found = eventually(Duration::from_secs(15), || {
        owner = (0..2).find(|i| lagging_partitions(&admins[*i], topic).contains(&partition));
        owner.is_some()
    })
    .await;
    assert!(found, "one replica reports {topic}/{partition}");
    let owner = owner.unwrap();
    replicas[owner].kill().unwrap(); // SIGKILL
    replicas[owner].wait().unwrap();

    // Meanwhile: the member's r2 and r3, and 1,000 events of other customers. The survivor
    // takes the partition over once the group has noticed (6 s).
    let others = produce_events(&t.sources, 1_000, "other").await;
    for (id, spendable) in [("r2", 150), ("r3", 200)] {
        let value = balance(id, "member", spendable);
        let (p, _) = produce(&producer, topic, Some("member"), value.as_bytes()).await;
        assert_eq!(p, partition);
    }
    let everything_delivered = || {
        let accepted: HashSet<String> = standin.accepted_event_ids().into_iter().collect();
        others.iter().all(|id| accepted.contains(id))
            && ["r1", "r2", "r3"].iter().all(|id| accepted.contains(*id))
    };
    assert!(
        eventually(Duration::from_secs(90), everything_delivered).await,
        "every event delivered"
    );
    // A record the killed replica had not committed may arrive twice; what counts is the
    // order in which each first arrived, and the last word.
    let (order, latest) = accepted_of(&standin.accepted(), "member");
    let mut first_arrivals: Vec<String> = Vec::new();
    for id in &order {
        if !first_arrivals.contains(id) {
            first_arrivals.push(id.clone());
        }
    }
    assert_eq!(first_arrivals, ["r1", "r2", "r3"], "arrivals: {order:?}");
    assert_eq!(
        order.last().map(String::as_str),
        Some("r3"),
        "arrivals: {order:?}"
    );
    assert_eq!(latest.as_deref(), Some("200"));
    assert!(read_all(&t.dlq).is_empty(), "nothing dead-lettered");
    let survivor = &mut replicas[1 - owner];
    survivor.kill().unwrap();
    survivor.wait().unwrap();
    standin.stop();
}
