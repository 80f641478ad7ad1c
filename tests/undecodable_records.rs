//! A Kafka client writes straight to a telemetry topic, past the gateway, a record that is not a
//! canonical reading: analytics dead-letters it with its original bytes and where it was found —
//! and only once, even though a restart replays the topic from the beginning.

mod common;

use std::time::Duration;

use common::{LIMIT, count, eventually, sql, test_config};
use polis::Platform;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

async fn produce_raw(platform: &Platform, value: &str) -> (i32, i64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", platform.kafka_addr().to_string())
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    let delivery = producer
        .send(
            FutureRecord::to("telemetry.traffic")
                .key("rogue-1")
                .payload(value),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    (delivery.partition, delivery.offset)
}

async fn dead_letters_of(platform: &Platform, source: &str) -> i64 {
    count(
        platform.http_addr(),
        &format!("SELECT count(*) AS n FROM deadletter WHERE detail LIKE 'record {source} %'"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_does_not_decode_is_dead_lettered_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let platform = Platform::start(config.clone()).await.unwrap();
    let (partition, offset) = produce_raw(&platform, "{not a reading").await;
    let source = format!("telemetry.traffic/{partition}/{offset}");
    eventually("the dead letter", LIMIT, || async {
        (dead_letters_of(&platform, &source).await == 1).then_some(())
    })
    .await;
    let rows = sql(
        platform.http_addr(),
        "SELECT reason, device_id, payload_text, detail FROM deadletter",
    )
    .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["reason"], "undecodable_record");
    assert_eq!(rows[0]["device_id"], "rogue-1");
    assert_eq!(rows[0]["payload_text"], "{not a reading");
    let detail = rows[0]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!("record {source} is not a traffic reading: ")),
        "{detail}"
    );
    assert_eq!(
        count(platform.http_addr(), "SELECT count(*) AS n FROM traffic").await,
        0
    );
    platform.shutdown().await;

    // The restart replays telemetry.traffic; a second bad record in the same partition (same
    // key) is dead-lettered after the replayed first one was looked at again.
    let platform = Platform::start(config).await.unwrap();
    let (again, marker_offset) = produce_raw(&platform, "[]").await;
    assert_eq!(again, partition);
    let marker = format!("telemetry.traffic/{partition}/{marker_offset}");
    eventually("the second dead letter", LIMIT, || async {
        (dead_letters_of(&platform, &marker).await == 1).then_some(())
    })
    .await;
    assert_eq!(
        dead_letters_of(&platform, &source).await,
        1,
        "not dead-lettered twice"
    );
    assert_eq!(
        count(platform.http_addr(), "SELECT count(*) AS n FROM deadletter").await,
        2
    );
    platform.shutdown().await;
}
