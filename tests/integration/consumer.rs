//! The source consumer on its own against the real broker: records finished out of order
//! and on many threads at once still move the committed offset to the end.

use std::sync::Arc;
use std::time::Duration;

use mparticle_forwarder::admin::Health;
use mparticle_forwarder::config::{KafkaConfig, KafkaPropertyValue};
use mparticle_forwarder::kafka::consumer::SourceConsumer;
use mparticle_forwarder::metrics::Metrics;
use prometheus::Registry;

use crate::support::*;

const RECORDS: usize = 4_000;
const THREADS: usize = 8;
/// Records finished together, as one delivered request finishes its bulk.
const CHUNK: usize = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_finished_on_many_threads_at_once_commit_to_the_end() {
    let topic = unique("offsets");
    create_topics(&[&topic], 2).await;
    let producer = producer();
    let mut pending = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let value = point_add(&format!("o-{i}"), "c1", 1);
        // Both partitions get records: left to the producer, keyless records stick to one
        // partition for a while, and a run once put all 4,000 in one (the other then has
        // nothing to commit, and the comparison below failed).
        let record = rdkafka::producer::FutureRecord::<str, str>::to(&topic)
            .payload(&value)
            .partition((i % 2) as i32);
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for p in pending {
        p.await.unwrap().map_err(|(e, _)| e).unwrap();
    }

    let group = unique("offsets-group");
    let kafka = KafkaConfig {
        bootstrap_servers: bootstrap(),
        group_id: group.clone(),
        group_instance_id: None,
        topics: vec![topic.clone()],
        retry_topic: "unused".into(),
        dlq_topic: "unused".into(),
        properties: vec![(
            "auto.commit.interval.ms".into(),
            KafkaPropertyValue::Plain("100".into()),
        )],
    };
    let metrics = Metrics::new(Registry::new(), []).unwrap();
    let consumer = Arc::new(
        SourceConsumer::subscribe(
            &kafka,
            &group,
            std::slice::from_ref(&topic),
            metrics,
            Arc::new(Health::default()),
        )
        .unwrap(),
    );
    let reader = consumer.clone();
    let tickets = tokio::task::spawn_blocking(move || {
        let mut tickets = Vec::with_capacity(RECORDS);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while tickets.len() < RECORDS && std::time::Instant::now() < deadline {
            if let Some(Ok((_, ticket))) = reader.poll(Duration::from_millis(100)) {
                tickets.push(ticket);
            }
        }
        tickets
    })
    .await
    .unwrap();
    assert_eq!(tickets.len(), RECORDS, "every record consumed");

    // Thread k finishes chunks k, k + THREADS, ...: neighbouring chunks of a partition
    // finish on different threads at the same moment, as deliveries do.
    let chunks: Vec<Vec<_>> = tickets.chunks(CHUNK).map(<[_]>::to_vec).collect();
    let chunks = Arc::new(chunks);
    let workers: Vec<_> = (0..THREADS)
        .map(|k| {
            let consumer = consumer.clone();
            let chunks = chunks.clone();
            std::thread::spawn(move || {
                for chunk in chunks.iter().skip(k).step_by(THREADS) {
                    consumer.complete(chunk);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }

    let ends = end_offsets(&topic);
    let reached = eventually(Duration::from_secs(20), || {
        committed(&group, &topic) == ends
    })
    .await;
    assert!(
        reached,
        "committed {:?}, ends {ends:?}",
        committed(&group, &topic)
    );
    let closer = consumer.clone();
    tokio::task::spawn_blocking(move || closer.close(Duration::from_secs(10)))
        .await
        .unwrap();
}
