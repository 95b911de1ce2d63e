//! A customer's records that wait together (here behind a rate limit of 5 batches/s)
//! leave in one batch: the events in order, the latest attributes winning, one customer
//! a batch; a merged batch refused for one bad record delivers the others.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mparticle_forwarder::standin::Fault;
use serde_json::Value;

use crate::support::*;

const CUSTOMERS: usize = 4;
const EACH: usize = 10;

/// A point add of `customer` whose spendable balance is `spendable`.
fn balance(id: &str, customer: &str, spendable: usize) -> String {
    format!(
        r#"{{"id":"{id}","action":"point_add","customer":{{"id":"{customer}","tier":"gold","spendable":{spendable}}},"data":{{"points":1}}}}"#
    )
}

/// A service held to 5 batches/s (its stand-in with `fault`, if any), and the customers'
/// events produced interleaved (`c0-0, c1-0, …, c0-1, …`), keyed by customer, each with a
/// higher balance than the last.
async fn interleaved_backlog(fault: Option<Fault>) -> (TestService, HashSet<String>) {
    let service = ServiceSpec::default()
        .partitions(1)
        .topics(1)
        .env("MPARTICLE_MAX_BATCHES_PER_SECOND", "5")
        .spawn()
        .await;
    if let Some(fault) = fault {
        service.standin.add_fault(fault);
    }
    let producer = producer();
    let mut ids = HashSet::new();
    for i in 0..EACH {
        for c in 0..CUSTOMERS {
            let (id, customer) = (format!("c{c}-{i}"), format!("c{c}"));
            let value = balance(&id, &customer, i * 10);
            produce(
                &producer,
                &service.topics[0],
                Some(&customer),
                value.as_bytes(),
            )
            .await;
            ids.insert(id);
        }
    }
    (service, ids)
}

fn event_ids(batch: &Value) -> Vec<String> {
    batch["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["source_message_id"].as_str().unwrap().to_string())
        .collect()
}

/// The number in an event id `c{customer}-{n}`.
fn nth(id: &str) -> usize {
    id.rsplit('-').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_waiting_records_leave_in_one_batch_in_order_with_the_latest_attributes() {
    let (service, ids) = interleaved_backlog(None).await;
    assert!(
        eventually(Duration::from_secs(60), || service
            .standin
            .accepted_event_count()
            >= ids.len())
        .await
    );
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
    let mut delivered = service.standin.accepted_event_ids();
    delivered.sort();
    let mut expected: Vec<String> = ids.into_iter().collect();
    expected.sort();
    assert_eq!(delivered, expected, "each event once");

    let batches = service.standin.accepted();
    let merged = batches.iter().filter(|b| event_ids(b).len() > 1).count();
    assert!(
        batches.len() < CUSTOMERS * EACH / 2 && merged > 0,
        "{} batches for {} events, {merged} of several: {:?}",
        batches.len(),
        CUSTOMERS * EACH,
        batches.iter().map(event_ids).collect::<Vec<_>>()
    );
    // Where each customer's last event went: its batch carries the latest balance.
    let mut last_balance: HashMap<String, String> = HashMap::new();
    for batch in &batches {
        let ids = event_ids(batch);
        let customer = batch["user_identities"]["customer_id"].as_str().unwrap();
        assert!(
            ids.iter().all(|id| id.starts_with(&format!("{customer}-"))),
            "one customer a batch: {ids:?}"
        );
        let numbers: Vec<usize> = ids.iter().map(|id| nth(id)).collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "in order: {ids:?}");
        let spendable = batch["user_attributes"]["antavo_spendable"]
            .as_str()
            .unwrap();
        assert_eq!(
            spendable,
            (numbers.last().unwrap() * 10).to_string(),
            "the latest record's balance: {ids:?}"
        );
        if numbers.contains(&(EACH - 1)) {
            last_balance.insert(customer.to_string(), spendable.to_string());
        }
        let id = batch["source_request_id"].as_str().unwrap();
        if ids.len() > 1 {
            assert!(id.starts_with("merged-"), "{id}");
        } else {
            assert_eq!(id, ids[0]);
        }
    }
    assert_eq!(last_balance.len(), CUSTOMERS);
    assert!(last_balance.values().all(|b| b == "90"));

    let metrics = scrape(service.admin);
    let value = |series: &str| metric_value(&metrics, series).unwrap_or(-1.0);
    assert_eq!(
        value("mparticle_forwarder_events_per_batch_count"),
        batches.len() as f64
    );
    assert_eq!(
        value("mparticle_forwarder_events_per_batch_sum"),
        (CUSTOMERS * EACH) as f64
    );
    assert!(read_all(&service.retry_topic).is_empty());
    assert!(read_all(&service.dlq_topic).is_empty());
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_batch_refused_for_one_record_delivers_the_others_and_dead_letters_that_one() {
    let (service, mut ids) = interleaved_backlog(Some(Fault::status(400).when_id("c1-3"))).await;
    ids.remove("c1-3");
    assert!(
        eventually(Duration::from_secs(60), || {
            let delivered: HashSet<String> =
                service.standin.accepted_event_ids().into_iter().collect();
            ids.iter().all(|id| delivered.contains(id))
        })
        .await
    );
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
    let delivered = service.standin.accepted_event_ids();
    assert_eq!(
        delivered.len(),
        ids.len(),
        "each event once, c1-3 not at all"
    );
    let merged = service
        .standin
        .accepted()
        .iter()
        .filter(|b| event_ids(b).len() > 1)
        .count();
    assert!(merged > 0, "batches were merged");
    let dead = read_all(&service.dlq_topic);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        String::from_utf8_lossy(dead[0].value.as_deref().unwrap_or_default()).contains("\"c1-3\"")
    );
    assert_eq!(dead[0].header("forwarder-error-kind"), Some("http_4xx"));
    assert_eq!(dead[0].header("forwarder-http-status"), Some("400"));
    assert_eq!(dead[0].header("forwarder-attempt"), Some("1"));
    assert!(read_all(&service.retry_topic).is_empty());
    service.stop().await;
}
