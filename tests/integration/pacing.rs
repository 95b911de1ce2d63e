//! Rate limits never cost an event: a backlog against the stand-in's account limit (shared
//! by every connection, like mParticle's), with and without `Retry-After`, one replica and
//! two, the rate configured or learnt; a stand-in that refuses everything for a minute; a
//! limit of 20 batches/s. Every event is delivered, none is written to the retry or the
//! dead-letter topic. Rates and 429 shares are printed, not asserted: the benchmark
//! measures them (BENCHMARKS.md).

use std::collections::HashSet;
use std::time::Duration;

use mparticle_forwarder::standin::{Fault, StandIn, StandInConfig};

use crate::support::*;

/// A stand-in enforcing `limit` batches/s over all connections.
async fn limited_standin(limit: f64, retry_after: Option<u32>) -> StandIn {
    StandIn::start_local(StandInConfig {
        api_key: API_KEY.into(),
        api_secret: API_SECRET.into(),
        rate_limit: Some(limit),
        rate_limit_retry_after: retry_after,
        ..StandInConfig::default()
    })
    .await
    .unwrap()
}

/// Starts `replicas` services on the same topics and group, each with `env`.
async fn replicas(standin: &StandIn, count: usize, env: &[(&str, &str)]) -> Vec<TestService> {
    let spec = |env: &[(&str, &str)]| {
        env.iter()
            .fold(ServiceSpec::default().partitions(4), |spec, (k, v)| {
                spec.env(k, v)
            })
    };
    let first = spec(env).spawn_with(standin.clone()).await;
    let mut all = Vec::new();
    for _ in 1..count {
        let next = spec(env).replica_of(&first, standin.clone()).await;
        all.push(next);
    }
    all.insert(0, first);
    all
}

/// Waits until every id is accepted; then checks that nothing went to the retry or the
/// dead-letter topic and every offset is committed, and prints the rate and 429 share.
async fn assert_all_delivered_without_retries(
    services: Vec<TestService>,
    ids: &HashSet<String>,
    limit: f64,
    timeout: Duration,
) {
    let standin = services[0].standin.clone();
    let delivered = eventually(timeout, || {
        let accepted: HashSet<String> = standin.accepted_event_ids().into_iter().collect();
        ids.iter().all(|id| accepted.contains(id))
    })
    .await;
    let requests = standin.requests();
    let refused = requests.iter().filter(|r| r.status == 429).count();
    let accepted: Vec<_> = requests.iter().filter(|r| r.status == 202).collect();
    let span_ms = match (accepted.first(), accepted.last()) {
        (Some(first), Some(last)) => (last.at_ms - first.at_ms).max(1),
        _ => 1,
    };
    let batches: usize = accepted.iter().map(|r| r.ids.len()).sum();
    let rate = batches as f64 * 1000.0 / span_ms as f64;
    println!(
        "{} replica(s): {batches} batches in {span_ms} ms, {rate:.0}/s ({:.0}% of {limit}); {refused} of {} requests answered 429",
        services.len(),
        100.0 * rate / limit,
        requests.len()
    );
    assert!(
        delivered,
        "{} of {} delivered",
        standin.accepted_event_ids().len(),
        ids.len()
    );
    let first = &services[0];
    assert!(read_all(&first.retry_topic).is_empty(), "nothing retried");
    assert!(
        read_all(&first.dlq_topic).is_empty(),
        "nothing dead-lettered"
    );
    assert!(first.wait_fully_committed(Duration::from_secs(30)).await);
    for service in services {
        service.stop().await;
    }
}

async fn backlog_against_a_shared_limit(
    replica_count: usize,
    env: &[(&str, &str)],
    retry_after: Option<u32>,
) {
    const BACKLOG: usize = 6_000;
    const LIMIT: f64 = 300.0;
    let standin = limited_standin(LIMIT, retry_after).await;
    let services = replicas(&standin, replica_count, env).await;
    let ids = produce_events(&services[0].topics, BACKLOG, "backlog").await;
    // 20 s at the limit; a minute leaves room for a slow machine.
    assert_all_delivered_without_retries(services, &ids, LIMIT, Duration::from_secs(90)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_against_a_limit_it_was_not_told_is_delivered_without_a_retry() {
    backlog_against_a_shared_limit(1, &[], Some(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_backlog_when_429s_carry_no_retry_after() {
    backlog_against_a_shared_limit(1, &[], None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_find_the_limit_they_share_without_being_told() {
    backlog_against_a_shared_limit(2, &[], Some(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_each_configured_to_the_whole_limit_share_it() {
    backlog_against_a_shared_limit(2, &[("MPARTICLE_MAX_BATCHES_PER_SECOND", "300")], Some(1))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_429s_to_everything_uses_no_attempt_and_delivery_resumes_by_itself() {
    let standin = standin().await;
    standin.add_fault(Fault::status(429).limit_exceeded("account"));
    let services = replicas(&standin, 1, &[("MAX_IN_FLIGHT_RECORDS", "100")]).await;
    let ids = produce_events(&services[0].topics, 300, "refused").await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(standin.accepted_event_count(), 0);
    let service = &services[0];
    let (_, metrics) = service.admin_get("/metrics").await;
    let consumed: f64 = service
        .topics
        .iter()
        .filter_map(|t| {
            metric_value(
                &metrics,
                &format!(r#"mparticle_forwarder_events_consumed_total{{topic="{t}"}}"#),
            )
        })
        .sum();
    assert!(
        consumed <= 100.0,
        "the consumer stops pulling once the waiting records fill the bound: {consumed}"
    );
    let refused = metric_value(
        &metrics,
        r#"mparticle_forwarder_rate_limited_total{limit="account"}"#,
    )
    .unwrap_or(0.0);
    assert!(refused > 0.0, "the 429s are counted by the limit they name");
    assert!(read_all(&service.retry_topic).is_empty(), "no attempt used");
    assert!(
        read_all(&service.dlq_topic).is_empty(),
        "nothing dead-lettered"
    );
    standin.clear_faults();
    // From the floor of one batch a second, the rate doubles about every second.
    assert_all_delivered_without_retries(services, &ids, f64::INFINITY, Duration::from_secs(60))
        .await;
}

async fn a_limit_of_20_per_second(env: &[(&str, &str)]) -> Vec<usize> {
    const LIMIT: f64 = 20.0;
    let standin = limited_standin(LIMIT, None).await;
    let services = replicas(&standin, 1, env).await;
    let ids = produce_events(&services[0].topics, 400, "small").await;
    // 20 s at the limit.
    assert_all_delivered_without_retries(services, &ids, LIMIT, Duration::from_secs(90)).await;
    standin
        .requests()
        .iter()
        .filter(|r| r.status == 202)
        .map(|r| r.ids.len())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_to_a_limit_of_20_per_second_it_drains_in_requests_that_fit_it() {
    let sizes = a_limit_of_20_per_second(&[("MPARTICLE_MAX_BATCHES_PER_SECOND", "20")]).await;
    // A fortieth of a second's worth at 20/s.
    assert!(sizes.iter().all(|&n| n == 1), "{sizes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_told_of_a_limit_of_20_per_second_it_finds_it_and_drains() {
    a_limit_of_20_per_second(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_retry_after_keeps_the_consumer_in_its_group() {
    // The group drops a member that has not polled for 7 s; mParticle asks for 20 s.
    let service = ServiceSpec::default()
        .partitions(1)
        .topics(1)
        .env("MPARTICLE_MAX_IN_FLIGHT_REQUESTS", "1")
        .env("KAFKA_PROPERTY_SESSION_TIMEOUT_MS", "6000")
        .env("KAFKA_PROPERTY_MAX_POLL_INTERVAL_MS", "7000")
        .spawn()
        .await;
    // The source consumer is the one in a group (the retry one follows it).
    let joined = || scrape(service.admin).contains(r#"rebalances_total{kind="assign"} 1"#);
    assert!(
        eventually(Duration::from_secs(30), joined).await,
        "the consumer joined its group"
    );
    service
        .standin
        .add_fault(Fault::status(429).retry_after(20).times(1));
    // One record at a time, so that each is a piece of its own and assembly, which waits
    // for the held request, has no room left for them.
    let producer = producer();
    for i in 0..150 {
        let value = point_add(&format!("held-{i}"), "c1", 1);
        produce(&producer, &service.topics[0], Some("c1"), value.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        eventually(Duration::from_secs(60), || service
            .standin
            .accepted_event_ids()
            .len()
            >= 150)
        .await
    );
    let accepted = service.standin.accepted_event_ids();
    assert_eq!(accepted.len(), 150, "each event once");
    let metrics = scrape(service.admin);
    assert_eq!(
        metric_value(
            &metrics,
            r#"mparticle_forwarder_rebalances_total{kind="revoke"}"#
        ),
        None,
        "the consumer was never dropped from its group"
    );
    service.stop().await;
}
