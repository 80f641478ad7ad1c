//! Real Kafka clients against the broker over TCP: librdkafka, through the rdkafka crate,
//! produces with every compression codec and consumes back; placement agrees with murmur2; a
//! waiting consumer is woken by an append; data survives a broker restart.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{LIMIT, start};
use polis_broker::partitioner::partition_for_key;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

fn producer(addr: SocketAddr, codec: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("compression.type", codec)
        // librdkafka's default partitioner is CRC32-based; this one is Java's (and Polis's) murmur2.
        .set("partitioner", "murmur2_random")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap()
}

fn consumer(
    addr: SocketAddr,
    topic: &str,
    partitions: i32,
    extra: &[(&str, &str)],
) -> StreamConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", addr.to_string())
        .set("group.id", "polis-test")
        .set("enable.auto.commit", "false");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let consumer: StreamConsumer = config.create().unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    consumer
}

/// (partition, offset, key, value) of every record produced.
type Sent = Vec<(i32, i64, String, String)>;

async fn produce(producer: &FutureProducer, topic: &str, count: usize, tag: &str) -> Sent {
    let sends = (0..count).map(|i| {
        let key = format!("device-{}", i % 17);
        let value = format!("{tag}-{i}");
        async move {
            let delivered = producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&value),
                    Duration::from_secs(30),
                )
                .await;
            let delivery = delivered.map_err(|(e, _)| e).unwrap();
            (delivery.partition, delivery.offset, key, value)
        }
    });
    futures::future::join_all(sends).await
}

async fn consume(consumer: &StreamConsumer, count: usize) -> Sent {
    let mut got = Vec::with_capacity(count);
    let read = async {
        while got.len() < count {
            let m = consumer.recv().await.unwrap();
            let text = |b: Option<&[u8]>| String::from_utf8(b.unwrap().to_vec()).unwrap();
            got.push((m.partition(), m.offset(), text(m.key()), text(m.payload())));
        }
    };
    tokio::time::timeout(LIMIT, read)
        .await
        .expect("every record is consumed");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_codec_round_trips_and_keys_land_where_murmur2_says() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        broker.log.create_topic(&topic, 3).unwrap();
        let mut sent = produce(&producer(broker.addr, codec), &topic, 500, codec).await;
        for (partition, _, key, _) in &sent {
            assert_eq!(
                *partition,
                partition_for_key(key.as_bytes(), 3),
                "{codec}: {key}"
            );
        }
        let mut got = consume(&consumer(broker.addr, &topic, 3, &[]), sent.len()).await;
        sent.sort();
        got.sort();
        assert_eq!(got, sent, "{codec}");
        let per_partition: i64 = (0..3)
            .map(|p| broker.log.high_watermark(&topic, p).unwrap())
            .sum();
        assert_eq!(per_partition, 500, "{codec}: no record stored twice");
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_consumer_is_woken_by_the_append_not_by_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    broker.log.create_topic("wake", 1).unwrap();
    // The broker holds each empty fetch for up to 10 s; only a wake-up on append answers sooner.
    let consumer = consumer(broker.addr, "wake", 1, &[("fetch.wait.max.ms", "10000")]);
    let producer = producer(broker.addr, "none");
    produce(&producer, "wake", 1, "first").await;
    consume(&consumer, 1).await;
    let sent_at = Instant::now();
    produce(&producer, "wake", 1, "second").await;
    let got = consume(&consumer, 1).await;
    let waited = sent_at.elapsed();
    assert_eq!(got[0].3, "second-0");
    assert!(
        waited < Duration::from_secs(5),
        "the fetch waited {waited:?}: it was not woken by the append"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    broker.log.create_topic("durable", 2).unwrap();
    let mut sent = produce(&producer(broker.addr, "lz4"), "durable", 200, "kept").await;
    broker.stop().await;

    let broker = start(dir.path()).await;
    let mut got = consume(&consumer(broker.addr, "durable", 2, &[]), sent.len()).await;
    sent.sort();
    got.sort();
    assert_eq!(got, sent);
    broker.stop().await;
}
