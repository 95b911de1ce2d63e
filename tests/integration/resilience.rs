//! The service as a process: killed with SIGKILL mid-run and restarted, two replicas with
//! one killed, and a flood of malformed records. Nothing may go missing.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mparticle_forwarder::standin::{Fault, StandIn};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_mparticle-forwarder");

pub(crate) struct Topics {
    pub sources: Vec<String>,
    pub retry: String,
    pub dlq: String,
    pub group: String,
}

pub(crate) async fn topics(partitions: i32) -> Topics {
    let t = Topics {
        sources: vec![unique("src0"), unique("src1")],
        retry: unique("retry"),
        dlq: unique("dlq"),
        group: unique("group"),
    };
    let mut all: Vec<&str> = t.sources.iter().map(String::as_str).collect();
    all.push(&t.dlq);
    create_topics(&all, partitions).await;
    create_topics(&[&t.retry], partitions * t.sources.len() as i32).await;
    t
}

/// A forwarder process, killed when dropped: a test that fails midway leaves none behind.
pub(crate) struct Forwarder(Child);

impl std::ops::Deref for Forwarder {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Forwarder {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn spawn_forwarder(standin: &StandIn, t: &Topics, extra: &[(&str, &str)]) -> Forwarder {
    Forwarder(
        forwarder_command(standin, t, extra)
            .spawn()
            .expect("start the forwarder"),
    )
}

fn forwarder_command(standin: &StandIn, t: &Topics, extra: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("MPARTICLE_API_URL", standin.events_url())
        .env("MPARTICLE_API_KEY", API_KEY)
        .env("MPARTICLE_API_SECRET", API_SECRET)
        .env("MPARTICLE_TIMEOUT", "1s")
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap())
        .env("KAFKA_GROUP_ID", &t.group)
        .env("KAFKA_TOPICS", t.sources.join(","))
        .env("KAFKA_RETRY_TOPIC", &t.retry)
        .env("KAFKA_DLQ_TOPIC", &t.dlq)
        .env("RETRY_BACKOFF", "1s,2s")
        .env(
            "FIELD_ASSIGNMENTS_FILE",
            "tests/data/field-assignments.toml",
        )
        .env("ADMIN_ADDR", "127.0.0.1:0")
        .env("KAFKA_PROPERTY_AUTO_COMMIT_INTERVAL_MS", "200")
        // A killed replica's partitions move after 6 s instead of 45 s.
        .env("KAFKA_PROPERTY_SESSION_TIMEOUT_MS", "6000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in extra {
        command.env(k, v);
    }
    command
}

fn dead_letter_ids(topic: &str) -> HashSet<String> {
    read_all(topic)
        .into_iter()
        .filter_map(|r| {
            let v: serde_json::Value = serde_json::from_slice(r.value.as_deref()?).ok()?;
            Some(v["id"].as_str()?.to_string())
        })
        .collect()
}

pub(crate) async fn wait_all_accounted_for(
    standin: &StandIn,
    t: &Topics,
    ids: &HashSet<String>,
    timeout: Duration,
) -> (usize, usize) {
    let deadline = std::time::Instant::now() + timeout;
    let mut missing: Vec<String>;
    loop {
        let delivered: HashSet<String> = standin.accepted_event_ids().into_iter().collect();
        missing = ids
            .iter()
            .filter(|id| !delivered.contains(*id))
            .cloned()
            .collect();
        // Reading the dead-letter topic is slow; only once few are left.
        if missing.len() < 1_000 {
            let dead = dead_letter_ids(&t.dlq);
            missing.retain(|id| !dead.contains(id));
        }
        if missing.is_empty() || std::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        missing.is_empty(),
        "{} missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let delivered: HashSet<String> = standin.accepted_event_ids().into_iter().collect();
    let strangers = delivered.iter().filter(|id| !ids.contains(*id)).count();
    assert_eq!(strangers, 0, "only produced ids arrive");
    (delivered.len(), dead_letter_ids(&t.dlq).len())
}

/// Starts a forwarder and kills it (SIGKILL) once 5,000 events were accepted.
pub(crate) async fn kill_after_5000(standin: &StandIn, t: &Topics, extra: &[(&str, &str)]) {
    let mut first = spawn_forwarder(standin, t, extra);
    let started = eventually(Duration::from_secs(60), || {
        standin.accepted_event_count() >= 5_000
    })
    .await;
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    assert!(
        started,
        "the first run delivered {}",
        standin.accepted_event_count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_run_and_restarted_every_event_is_delivered_or_dead_lettered() {
    let standin = standin().await;
    standin.add_fault(Fault::status(503).probability(0.10));
    standin.add_fault(Fault {
        probability: Some(0.02),
        ..Fault::delay(1_500)
    });
    let t = topics(3).await;
    let ids = produce_events(&t.sources, 20_000, "kill").await;

    kill_after_5000(&standin, &t, &[]).await;
    let at_kill = standin.accepted_event_count();

    let mut second = spawn_forwarder(&standin, &t, &[]);
    let (delivered, dead) =
        wait_all_accounted_for(&standin, &t, &ids, Duration::from_secs(240)).await;
    second.kill().unwrap();
    second.wait().unwrap();
    let accepted = standin.accepted_event_ids();
    eprintln!(
        "killed after {at_kill} accepted; {delivered} delivered, {dead} dead-lettered, {} duplicates by redelivery",
        accepted.len() - delivered
    );
    standin.stop();
}

/// The member ids of `group`, as the broker reports them.
fn members(group: &str) -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let list = consumer
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .unwrap();
    list.groups()
        .iter()
        .flat_map(|g| g.members().iter().map(|m| m.id().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_killed_and_restarted_takes_its_place_back_and_loses_nothing() {
    let standin = standin().await;
    standin.add_fault(Fault::status(503).probability(0.05));
    let t = topics(3).await;
    let ids = produce_events(&t.sources, 20_000, "static").await;
    let pod = [("KAFKA_GROUP_INSTANCE_ID", "forwarder-pod-0")];
    kill_after_5000(&standin, &t, &pod).await;

    let mut second = spawn_forwarder(&standin, &t, &pod);
    wait_all_accounted_for(&standin, &t, &ids, Duration::from_secs(240)).await;
    // The restarted process took the killed one's place: one member in each group, named
    // by the instance id, not a second member waiting for the first one's session to end.
    let source = members(&t.group);
    assert_eq!(source.len(), 1, "{source:?}");
    assert!(source[0].starts_with("forwarder-pod-0-"), "{source:?}");
    // The retry partitions follow the source partitions: the retry group only keeps
    // offsets and has no members.
    let retry = members(&format!("{}.retry", t.group));
    assert!(retry.is_empty(), "{retry:?}");
    second.kill().unwrap();
    second.wait().unwrap();
    standin.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_one_of_two_replicas_dies_the_other_takes_its_partitions() {
    let standin = standin().await;
    // Slow enough that the run is still going when one replica dies.
    standin.add_fault(Fault::delay(20));
    let t = topics(3).await;
    let mut a = spawn_forwarder(&standin, &t, &[("MPARTICLE_MAX_IN_FLIGHT_REQUESTS", "2")]);
    let mut b = spawn_forwarder(&standin, &t, &[("MPARTICLE_MAX_IN_FLIGHT_REQUESTS", "2")]);
    let ids = produce_events(&t.sources, 20_000, "replica").await;
    let midway = eventually(Duration::from_secs(60), || {
        standin.accepted_event_count() >= 4_000
    })
    .await;
    a.kill().unwrap();
    a.wait().unwrap();
    assert!(midway);
    assert!(
        standin.accepted_event_count() < 20_000,
        "the kill came mid-run"
    );
    wait_all_accounted_for(&standin, &t, &ids, Duration::from_secs(180)).await;
    b.kill().unwrap();
    b.wait().unwrap();
    standin.stop();
}

/// A small deterministic generator, so a failure can be reproduced.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn malformed(rng: &mut Lcg, i: usize) -> Vec<u8> {
    match i % 8 {
        0 => (0..(rng.next() % 200 + 1)).map(|_| rng.next() as u8).collect(),
        1 => b"{\"id\":\"\xff\xfe\",\"action\":\"point_add\"}".to_vec(),
        2 => format!("{}{}", "[".repeat(300), "]".repeat(300)).into_bytes(),
        3 => format!(r#"{{"id":"huge-{i}","action":"point_add","customer":{{"id":"c"}},"data":{{"reason":"{}"}}}}"#, "x".repeat(140_000)).into_bytes(),
        4 => format!(r#"{{"id":{i},"action":"point_add","customer":{{"id":"c"}}}}"#).into_bytes(),
        5 => format!(r#"{{"id":"m-{i}","action":"point_add","customer":"c"}}"#).into_bytes(),
        6 => format!(r#"{{"id":"m-{i}","action":"point_add","customer":{{"id":"c"}},"created_at":true,"data":{{"points":1}}}}"#).into_bytes(),
        _ => format!(r#"{{"id":"m-{i}","action":"point_add","customer":{{"id":"c"}},"data":[1,2]}}"#).into_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_malformed_records_are_each_dead_lettered_and_every_good_one_delivered() {
    let service = ServiceSpec::default().partitions(3).topics(1).spawn().await;
    let producer = producer();
    let mut rng = Lcg(42);
    let mut good = HashSet::new();
    let mut pending = Vec::new();
    for i in 0..1_000 {
        let bad = malformed(&mut rng, i);
        let id = format!("good-{i}");
        let ok = point_add(&id, "c1", 1).into_bytes();
        good.insert(id);
        for value in [bad, ok] {
            let record = rdkafka::producer::FutureRecord::<str, [u8]>::to(&service.topics[0])
                .payload(&value);
            pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        }
    }
    for p in pending {
        p.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    let all_accepted = eventually(Duration::from_secs(60), || {
        service.standin.accepted_event_count() >= 1_000
    })
    .await;
    assert!(
        all_accepted,
        "accepted {} of 1,000 good events",
        service.standin.accepted_event_count()
    );
    let dlq = service.dlq_topic.clone();
    let all_dead = eventually(Duration::from_secs(30), || read_all(&dlq).len() >= 1_000).await;
    assert!(all_dead, "{} of 1,000 dead letters", read_all(&dlq).len());
    let delivered: HashSet<String> = service.standin.accepted_event_ids().into_iter().collect();
    assert_eq!(delivered, good);
    let dead = read_all(&service.dlq_topic);
    assert_eq!(dead.len(), 1_000);
    for record in &dead {
        let kind = record.header("forwarder-error-kind").unwrap();
        assert!(
            ["invalid_json", "invalid_event", "too_large"].contains(&kind),
            "{kind}"
        );
        assert!(!record.header("forwarder-error").unwrap().is_empty());
    }
    assert!(service.wait_fully_committed(Duration::from_secs(20)).await);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_commits_and_exits_0_and_a_restart_finishes_the_rest() {
    let standin = standin().await;
    let t = topics(3).await;
    let grace = [("SHUTDOWN_GRACE", "10s")];
    let first_ids = produce_events(&t.sources, 500, "term-a").await;
    let mut forwarder = spawn_forwarder(&standin, &t, &grace);
    assert!(
        eventually(Duration::from_secs(60), || standin.accepted_event_count()
            >= 500)
        .await
    );

    // Everything done: a clean stop commits every offset.
    let stopped_at = std::time::Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &forwarder.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = forwarder.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
    assert!(
        stopped_at.elapsed() < Duration::from_secs(10),
        "within the grace period"
    );
    for topic in &t.sources {
        let ends = end_offsets(topic);
        let done = committed(&t.group, topic);
        for (p, end) in ends {
            assert_eq!(
                done.get(&p).copied().unwrap_or(0),
                end,
                "{topic}/{p} committed to the end"
            );
        }
    }

    // Stopped in the middle of a run: nothing is lost across the restart.
    let second_ids = produce_events(&t.sources, 3_000, "term-b").await;
    let mut forwarder = spawn_forwarder(&standin, &t, &grace);
    eventually(Duration::from_secs(30), || {
        standin.accepted_event_count() >= 1_000
    })
    .await;
    Command::new("kill")
        .args(["-TERM", &forwarder.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(forwarder.wait().unwrap().code(), Some(0));
    let mut forwarder = spawn_forwarder(&standin, &t, &grace);
    let all: HashSet<String> = first_ids.union(&second_ids).cloned().collect();
    wait_all_accounted_for(&standin, &t, &all, Duration::from_secs(60)).await;
    forwarder.kill().unwrap();
    forwarder.wait().unwrap();
    standin.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_name_each_dead_letter_and_retry_and_never_the_secret() {
    let standin = standin().await;
    standin.add_fault(Fault::status(503).when_id("log-retried").times(1));
    let t = topics(1).await;
    let log = std::env::temp_dir().join(format!("{}.log", unique("forwarder")));
    let mut forwarder = forwarder_command(
        &standin,
        &t,
        &[("LOG_FORMAT", "json"), ("RUST_LOG", "info")],
    )
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    let producer = producer();
    produce(
        &producer,
        &t.sources[0],
        Some("c1"),
        point_add("log-retried", "c1", 1).as_bytes(),
    )
    .await;
    produce(
        &producer,
        &t.sources[0],
        Some("c1"),
        br#"{"id":"log-dead","action":"point_add","customer":{"id":"c1"}}"#,
    )
    .await;
    assert!(
        eventually(Duration::from_secs(30), || standin.accepted_event_ids()
            == ["log-retried"])
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    Command::new("kill")
        .args(["-TERM", &forwarder.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(forwarder.wait().unwrap().code(), Some(0));

    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(
        !text.contains(API_SECRET) && !text.contains(API_KEY),
        "no credentials in the logs"
    );
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let find = |message: &str, id: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message && l["event_id"] == id)
            .unwrap_or_else(|| panic!("no {message:?} line for {id}: {text}"))
            .clone()
    };
    let dead = find("dead-lettered", "log-dead");
    assert_eq!(dead["level"], "WARN");
    assert_eq!(dead["kind"], "mapping");
    assert_eq!(dead["topic"], t.sources[0].as_str());
    assert!(dead["partition"].is_number() && dead["offset"].is_number());
    assert!(dead["reason"].as_str().unwrap().contains("data.points"));
    let retried = find(
        "delivery failed; scheduled for another attempt",
        "log-retried",
    );
    assert_eq!(retried["kind"], "http_5xx");
    assert!(!text.contains("\"antavo_"), "no payloads at info level");
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "signal received; draining" && l["signal"] == "SIGTERM")
    );
    standin.stop();
}
