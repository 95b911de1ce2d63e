//! Several mParticle accounts behind one forwarder (`MPARTICLE_ACCOUNTS_FILE`): records
//! routed by a header or by a field of the event, each account with its own credentials,
//! mapping and environment, and one account's refused key or rate limit leaving the
//! others flowing.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use mparticle_forwarder::standin::{StandIn, StandInAccount, StandInConfig};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde_json::Value;

use crate::support::*;

const HEADER: &str = "mparticle-account";
const ACCOUNTS: [(&str, &str, &str); 3] = [
    ("brand-a", "key-a", "secret-a-1"),
    ("brand-b", "key-b", "secret-b-2"),
    ("brand-c", "key-c", "secret-c-3"),
];

/// A stand-in serving the three accounts.
async fn three_account_standin() -> StandIn {
    let accounts = ACCOUNTS
        .iter()
        .map(|(name, key, secret)| StandInAccount::new(name, key, secret))
        .collect();
    StandIn::start_local(StandInConfig {
        api_key: API_KEY.into(),
        api_secret: API_SECRET.into(),
        accounts,
        ..StandInConfig::default()
    })
    .await
    .unwrap()
}

/// Writes the accounts file for `standin`: brand-a's credentials from variables, brand-b's
/// from files and with a mapping of its own, brand-c in development. Routed by the header
/// and then by `data.brand`, without a default.
fn accounts_file(standin: &StandIn) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("accounts"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("b-key"), "key-b\n").unwrap();
    std::fs::write(dir.join("b-secret"), "secret-b-2\n").unwrap();
    let mapping = std::fs::read_to_string("tests/data/field-assignments.toml")
        .unwrap()
        .replace(
            "[events.point_add.attributes]\n",
            "[events.point_add.attributes]\nantavo_brand = { value = \"brand-b\" }\n",
        );
    std::fs::write(dir.join("brand-b.toml"), mapping).unwrap();
    let url = standin.events_url();
    let file = dir.join("accounts.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[routing]
header = "{HEADER}"
path = "data.brand"

[accounts.brand-a]
api_url = "{url}"
api_key_env = "MPF_TEST_KEY_A"
api_secret_env = "MPF_TEST_SECRET_A"

[accounts.brand-b]
api_url = "{url}"
api_key_file = "{dir}/b-key"
api_secret_file = "{dir}/b-secret"
field_assignments_file = "{dir}/brand-b.toml"

[accounts.brand-c]
api_url = "{url}"
api_key_env = "MPF_TEST_KEY_C"
api_secret_env = "MPF_TEST_SECRET_C"
development = true
"#,
            dir = dir.display()
        ),
    )
    .unwrap();
    file
}

fn spec(file: &std::path::Path) -> ServiceSpec {
    ServiceSpec::default()
        .env("MPARTICLE_ACCOUNTS_FILE", file.to_str().unwrap())
        .env("MPF_TEST_KEY_A", "key-a")
        .env("MPF_TEST_SECRET_A", "secret-a-1")
        .env("MPF_TEST_KEY_C", "key-c")
        .env("MPF_TEST_SECRET_C", "secret-c-3")
}

/// Produces `records` (key, value, account header) to `topic`, all in flight at once.
async fn produce_all(topic: &str, records: &[(String, String, Option<&str>)]) {
    let producer = producer();
    let mut pending = Vec::new();
    for (key, value, account) in records {
        let mut record: FutureRecord<'_, str, str> = FutureRecord::to(topic)
            .key(key.as_str())
            .payload(value.as_str());
        if let Some(account) = account {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: HEADER,
                value: Some(account.as_bytes()),
            }));
        }
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for p in pending {
        p.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

/// Event ids accepted for `account`, in order of arrival.
fn arrived(standin: &StandIn, account: &str) -> Vec<String> {
    standin
        .accepted_for(account)
        .iter()
        .flat_map(|batch| batch["events"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["data"]["source_message_id"].as_str().map(str::to_string))
        .collect()
}

/// `count` point adds of account `name` (by header), over 10 customers of its own, each
/// customer's in order: ids `{name}-{customer}-{n}`.
fn events_of(name: &'static str, count: usize) -> Vec<(String, String, Option<&'static str>)> {
    (0..count)
        .map(|i| {
            let customer = format!("{name}-cust-{}", i % 10);
            let id = format!("{name}-{}-{:04}", i % 10, i / 10);
            (customer.clone(), point_add(&id, &customer, 1), Some(name))
        })
        .collect()
}

/// `count` point adds of account `name` (by header) over the keys `cust-0` to `cust-9`,
/// which every account's records share: ids `{name}-{customer}-{n}`.
fn events_with_shared_keys(
    name: &'static str,
    count: usize,
) -> Vec<(String, String, Option<&'static str>)> {
    events_of(name, count)
        .into_iter()
        .enumerate()
        .map(|(i, (_, value, account))| (format!("cust-{}", i % 10), value, account))
        .collect()
}

/// Each customer's events arrived in the order they were produced (first arrivals).
fn in_order(ids: &[String]) -> bool {
    let mut last: HashMap<String, String> = HashMap::new();
    let mut seen = HashSet::new();
    for id in ids {
        if !seen.insert(id.clone()) {
            continue;
        }
        let (customer, n) = id.rsplit_once('-').unwrap();
        if let Some(before) = last.insert(customer.to_string(), n.to_string()) {
            if before.as_str() > n {
                return false;
            }
        }
    }
    true
}

/// Once `account` may send again: all its `count` events arrive, each customer's in order,
/// nothing is dead-lettered, and every offset is committed; then the service stops.
async fn all_arrive_in_order(service: TestService, account: &str, count: usize) {
    let standin = service.standin.clone();
    let done = eventually(Duration::from_secs(120), || {
        unique_count(&arrived(&standin, account)) == count
    })
    .await;
    let ids = arrived(&standin, account);
    assert!(
        done,
        "{account} delivered {} of {count}",
        unique_count(&ids)
    );
    assert!(in_order(&ids), "each customer's records in order: {ids:?}");
    assert!(
        read_all(&service.dlq_topic).is_empty(),
        "nothing dead-lettered"
    );
    assert!(service.wait_fully_committed(Duration::from_secs(30)).await);
    service.stop().await;
}

fn unique_count(ids: &[String]) -> usize {
    ids.iter().collect::<HashSet<_>>().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_their_own_account_by_header_or_event_field_with_its_mapping_and_environment()
{
    let standin = three_account_standin().await;
    let file = accounts_file(&standin);
    let service = spec(&file).topics(1).spawn_with(standin.clone()).await;
    let topic = &service.topics[0];
    let by_field = |id: &str, brand: &str| {
        format!(
            r#"{{"id":"{id}","action":"point_add","customer":{{"id":"c-{id}"}},"data":{{"points":3,"brand":"{brand}"}}}}"#
        )
    };
    let records = vec![
        (
            "c-a1".to_string(),
            point_add("a1", "c-a1", 1),
            Some("brand-a"),
        ),
        ("c-b1".to_string(), by_field("b1", "brand-b"), None),
        (
            "c-c1".to_string(),
            point_add("c1", "c-c1", 1),
            Some("brand-c"),
        ),
        // The header wins over the event's field.
        (
            "c-c2".to_string(),
            by_field("c2", "brand-a"),
            Some("brand-c"),
        ),
        (
            "c-z1".to_string(),
            point_add("z1", "c-z1", 1),
            Some("brand-z"),
        ),
        ("c-n1".to_string(), point_add("n1", "c-n1", 1), None),
    ];
    produce_all(topic, &records).await;
    let all_there = eventually(Duration::from_secs(30), || {
        standin.accepted_count() >= 4 && read_all(&service.dlq_topic).len() >= 2
    })
    .await;
    assert!(all_there, "accepted {:?}", standin.accepted_by_account());
    let mut a = arrived(&standin, "brand-a");
    let mut b = arrived(&standin, "brand-b");
    let mut c = arrived(&standin, "brand-c");
    c.sort();
    a.sort();
    b.sort();
    assert_eq!(
        (a, b, c),
        (
            vec!["a1".to_string()],
            vec!["b1".to_string()],
            vec!["c1".to_string(), "c2".to_string()]
        )
    );
    assert!(
        arrived(&standin, "default").is_empty(),
        "no record used the environment's key"
    );
    // Each account's own mapping and environment.
    let batch_of = |account: &str| standin.accepted_for(account)[0].clone();
    let b_batch = batch_of("brand-b");
    assert_eq!(
        b_batch["events"][0]["data"]["custom_attributes"]["antavo_brand"],
        "brand-b"
    );
    let a_batch = batch_of("brand-a");
    assert_eq!(
        a_batch["events"][0]["data"]["custom_attributes"].get("antavo_brand"),
        None
    );
    assert_eq!(a_batch["environment"], "production");
    assert_eq!(b_batch["environment"], "production");
    for batch in standin.accepted_for("brand-c") {
        assert_eq!(batch["environment"], "development");
    }
    // Unknown account, and no account without a default: dead letters saying why.
    let dead: HashMap<String, (String, String)> = read_all(&service.dlq_topic)
        .into_iter()
        .map(|r| {
            let value: Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
            let kind = r
                .header("forwarder-error-kind")
                .unwrap_or_default()
                .to_string();
            let error = r.header("forwarder-error").unwrap_or_default().to_string();
            (value["id"].as_str().unwrap().to_string(), (kind, error))
        })
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    let (kind, error) = &dead["z1"];
    assert_eq!(kind, "unknown_account");
    assert!(error.contains("\"brand-z\""), "{error}");
    let (kind, error) = &dead["n1"];
    assert_eq!(kind, "unknown_account");
    assert!(error.contains("no default"), "{error}");
    let metrics = scrape(service.admin);
    for (account, delivered) in [("brand-a", 1.0), ("brand-b", 1.0), ("brand-c", 2.0)] {
        let series =
            format!(r#"mparticle_forwarder_account_events_delivered_total{{account="{account}"}}"#);
        assert_eq!(metric_value(&metrics, &series), Some(delivered), "{series}");
    }
    assert_eq!(
        metric_value(
            &metrics,
            r#"mparticle_forwarder_events_dead_lettered_total{action="other",kind="unknown_account"}"#
        ),
        Some(2.0)
    );
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
    service.stop().await;
}

/// The three accounts with brand-a's key revoked, and a forwarder with little memory, so
/// that brand-a's records go beyond it and wait in the retry topic.
async fn brand_a_revoked() -> (StandIn, TestService) {
    let standin = three_account_standin().await;
    standin.revoke("brand-a", true);
    let file = accounts_file(&standin);
    let service = spec(&file)
        .env("MAX_IN_FLIGHT_RECORDS", "60")
        .spawn_with(standin.clone())
        .await;
    (standin, service)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stops_only_its_account_whose_records_wait_and_then_arrive_in_order() {
    let (standin, service) = brand_a_revoked().await;
    let topic = &service.topics[0];
    let mut records = events_of("brand-a", 300);
    records.extend(events_of("brand-b", 200));
    records.extend(events_of("brand-c", 200));
    produce_all(topic, &records).await;
    let others = eventually(Duration::from_secs(60), || {
        unique_count(&arrived(&standin, "brand-b")) == 200
            && unique_count(&arrived(&standin, "brand-c")) == 200
    })
    .await;
    assert!(
        others,
        "delivered meanwhile: {:?}",
        standin.accepted_by_account()
    );
    assert!(arrived(&standin, "brand-a").is_empty());
    let metrics = scrape(service.admin);
    assert_eq!(
        metric_value(
            &metrics,
            r#"mparticle_forwarder_account_auth_failed{account="brand-a"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"mparticle_forwarder_account_auth_failed{account="brand-b"}"#
        ),
        Some(0.0)
    );
    let parked = metric_value(
        &metrics,
        r#"mparticle_forwarder_account_events_retried_total{account="brand-a",kind="account_stopped"}"#,
    )
    .unwrap_or(0.0);
    assert!(
        parked > 0.0,
        "brand-a's records beyond memory wait in the retry topic"
    );
    // The process stays in service for the other accounts; /accounts says which is stopped.
    let (status, _) = service.admin_get("/readyz").await;
    assert_eq!(status, 200);
    let (_, report) = service.admin_get("/accounts").await;
    let report: Value = serde_json::from_str(&report).unwrap();
    let state_of = |name: &str| {
        report
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["account"] == name)
            .map(|a| a["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state_of("brand-a").as_deref(), Some("auth_failed"));
    assert_eq!(state_of("brand-b").as_deref(), Some("sending"));

    standin.revoke("brand-a", false);
    all_arrive_in_order(service, "brand-a", 300).await;
}

/// A customer is its key within its account: brand-a's records waiting behind its revoked
/// key (held, and parked in the retry topic) hold back none of brand-b's records with the
/// same keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_in_two_accounts_is_two_customers() {
    let (standin, service) = brand_a_revoked().await;
    let topic = &service.topics[0];
    let mut records = events_with_shared_keys("brand-a", 300);
    records.extend(events_with_shared_keys("brand-b", 200));
    produce_all(topic, &records).await;
    let delivered = eventually(Duration::from_secs(60), || {
        unique_count(&arrived(&standin, "brand-b")) == 200
    })
    .await;
    let ids = arrived(&standin, "brand-b");
    assert!(delivered, "brand-b delivered {} of 200", unique_count(&ids));
    assert!(in_order(&ids), "each customer's records in order: {ids:?}");
    let metrics = scrape(service.admin);
    let retried = |account: &str, kind: &str| {
        metric_value(
            &metrics,
            &format!(
                r#"mparticle_forwarder_account_events_retried_total{{account="{account}",kind="{kind}"}}"#
            ),
        )
        .unwrap_or(0.0)
    };
    assert!(
        retried("brand-a", "account_stopped") > 0.0,
        "brand-a's records beyond memory wait in the retry topic"
    );
    for kind in ["held_behind", "account_stopped"] {
        assert_eq!(
            retried("brand-b", kind),
            0.0,
            "none of brand-b's records went to the retry topic ({kind})"
        );
    }

    standin.revoke("brand-a", false);
    all_arrive_in_order(service, "brand-a", 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_rate_limited_hard_leaves_the_others_unaffected() {
    let standin = three_account_standin().await;
    standin.set_account_rate_limit("brand-b", Some(2.0));
    let file = accounts_file(&standin);
    let service = spec(&file)
        .env("MAX_IN_FLIGHT_RECORDS", "100")
        .spawn_with(standin.clone())
        .await;
    let topic = &service.topics[0];
    let mut records = events_of("brand-b", 300);
    records.extend(events_of("brand-a", 300));
    records.extend(events_of("brand-c", 300));
    produce_all(topic, &records).await;
    let others = eventually(Duration::from_secs(60), || {
        unique_count(&arrived(&standin, "brand-a")) == 300
            && unique_count(&arrived(&standin, "brand-c")) == 300
    })
    .await;
    let b_then = unique_count(&arrived(&standin, "brand-b"));
    assert!(others, "delivered: {:?}", standin.accepted_by_account());
    assert!(
        b_then < 300,
        "brand-b is still held to its limit ({b_then} delivered)"
    );
    let metrics = scrape(service.admin);
    let refused = |account: &str| {
        metric_value(
            &metrics,
            &format!(r#"mparticle_forwarder_account_http_requests_total{{account="{account}",status="429"}}"#),
        )
        .unwrap_or(0.0)
    };
    assert!(refused("brand-b") > 0.0);
    assert_eq!((refused("brand-a"), refused("brand-c")), (0.0, 0.0));
    let parked = metric_value(
        &metrics,
        r#"mparticle_forwarder_account_events_retried_total{account="brand-b",kind="account_stopped"}"#,
    )
    .unwrap_or(0.0);
    assert!(
        parked > 0.0,
        "brand-b's records beyond memory waited in the retry topic"
    );

    standin.set_account_rate_limit("brand-b", None);
    all_arrive_in_order(service, "brand-b", 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_run_across_three_accounts_every_event_is_delivered_or_dead_lettered() {
    use crate::resilience::{kill_after_5000, spawn_forwarder, topics, wait_all_accounted_for};
    use mparticle_forwarder::standin::Fault;
    let standin = three_account_standin().await;
    standin.add_fault(Fault::status(503).probability(0.10));
    let t = topics(3).await;
    let file = accounts_file(&standin);
    let names = ["brand-a", "brand-b", "brand-c"];
    let mut records = Vec::new();
    let mut ids = HashSet::new();
    for i in 0..20_000 {
        let customer = format!("cust-{}", i % 1013);
        let id = format!("chaos-{i}");
        records.push((
            customer.clone(),
            point_add(&id, &customer, 1),
            Some(names[i % 1013 % 3]),
        ));
        ids.insert(id);
    }
    for (i, chunk) in records.chunks(10_000).enumerate() {
        produce_all(&t.sources[i % 2], chunk).await;
    }
    let env = [
        ("MPARTICLE_ACCOUNTS_FILE", file.to_str().unwrap()),
        ("MPF_TEST_KEY_A", "key-a"),
        ("MPF_TEST_SECRET_A", "secret-a-1"),
        ("MPF_TEST_KEY_C", "key-c"),
        ("MPF_TEST_SECRET_C", "secret-c-3"),
    ];
    kill_after_5000(&standin, &t, &env).await;
    let _second = spawn_forwarder(&standin, &t, &env);
    wait_all_accounted_for(&standin, &t, &ids, Duration::from_secs(240)).await;
    // Each event reached the account its header named, and no other.
    for name in names {
        let wrong = arrived(&standin, name)
            .iter()
            .filter(|id| {
                let i: usize = id.trim_start_matches("chaos-").parse().unwrap();
                names[i % 1013 % 3] != name
            })
            .count();
        assert_eq!(wrong, 0, "{name}");
    }
    standin.stop();
}
