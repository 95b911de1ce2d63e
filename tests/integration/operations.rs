//! What SREs see: a real Prometheus server scraping the running service, and every metric
//! the alert rules and the dashboard use actually exposed.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mparticle_forwarder::standin::Fault;

use crate::support::*;

/// `mparticle_forwarder_*` names used in a file, histogram suffixes folded.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("mparticle_forwarder_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name)
            .to_string();
        names.insert(base);
    }
    names
}

/// A Prometheus server and its directory, removed when the server is stopped.
struct Prometheus(Child, std::path::PathBuf);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn start_prometheus(target: std::net::SocketAddr) -> (Prometheus, u16) {
    let dir = std::env::temp_dir().join(unique("prometheus"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: mparticle-forwarder\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is installed (apt-get install prometheus; scripts/test.sh does)");
    (Prometheus(child, dir), port)
}

/// A PromQL instant query's single value.
async fn query(port: u16, promql: &str) -> Option<f64> {
    let mut url = reqwest::Url::parse(&format!("http://127.0.0.1:{port}/api/v1/query")).ok()?;
    url.query_pairs_mut().append_pair("query", promql);
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    let body: serde_json::Value = serde_json::from_str(&text).ok()?;
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_delivered_count_during_a_run() {
    let service = ServiceSpec::default().partitions(3).topics(2).spawn().await;
    let (_prometheus, port) = start_prometheus(service.admin);
    // Something of every outcome, so that every labelled series exists.
    service
        .standin
        .add_fault(Fault::status(503).when_id("retried-once").times(1));
    let producer = producer();
    for i in 0..50 {
        produce(
            &producer,
            &service.topics[i % 2],
            Some("c1"),
            point_add(&format!("scraped-{i}"), "c1", 1).as_bytes(),
        )
        .await;
    }
    produce(
        &producer,
        &service.topics[0],
        Some("c1"),
        point_add("retried-once", "c1", 1).as_bytes(),
    )
    .await;
    produce(&producer, &service.topics[0], None, b"not json").await;
    produce(
        &producer,
        &service.topics[0],
        None,
        br#"{"id":"t","action":"tier_change","customer":{"id":"c"}}"#,
    )
    .await;
    assert!(
        eventually(Duration::from_secs(30), || service
            .standin
            .accepted_event_count()
            == 51)
        .await
    );

    let mut delivered = None;
    for _ in 0..60 {
        delivered = query(port, "sum(mparticle_forwarder_events_delivered_total)").await;
        if delivered == Some(51.0) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        delivered,
        Some(51.0),
        "Prometheus got the delivered count through PromQL"
    );
    assert_eq!(
        query(port, r#"up{job="mparticle-forwarder"}"#).await,
        Some(1.0)
    );

    // Lag comes from librdkafka's statistics, every 5 s.
    let admin = service.admin;
    assert!(
        eventually(Duration::from_secs(15), || scrape(admin)
            .contains("mparticle_forwarder_consumer_lag{"))
        .await
    );
    let exposed = metric_names(&scrape(admin));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/mparticle-forwarder.json",
    ] {
        let used = metric_names(&std::fs::read_to_string(root.join(file)).unwrap());
        let missing: Vec<&String> = used.difference(&exposed).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics the service does not expose: {missing:?}"
        );
    }
    for required in [
        "events_consumed_total",
        "events_delivered_total",
        "events_retried_total",
        "events_dead_lettered_total",
        "events_skipped_total",
        "http_requests_total",
        "http_request_duration_seconds",
        "delivery_latency_seconds",
        "retry_scheduled",
        "consumer_lag",
        "mparticle_auth_failed",
    ] {
        assert!(
            exposed.contains(&format!("mparticle_forwarder_{required}")),
            "contract metric {required}"
        );
    }
    service.stop().await;
}
