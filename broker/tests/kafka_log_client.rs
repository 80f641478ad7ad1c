//! `KafkaLog`, the `LogClient` of an external cluster, against Polis's own broker over TCP: keyed
//! records with headers and timestamps round-trip exactly and land where murmur2 says; a fetch at
//! the high watermark waits for the next append; offsets inside a batch, before the log start and
//! past the end behave as on the embedded log; fetches stay within their byte budget; unknown
//! topics and an unreachable cluster are reported clearly; and `TopicReader` works over it.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytesize::ByteSize;
use common::{Broker, LIMIT, start, start_with};
use polis_broker::partitioner::partition_for_key;
use polis_broker::{
    BrokerConfig, FetchRequest, FetchedPartition, KafkaClientConfig, KafkaLog, LogClient, LogError,
    Record, StoredRecord, TopicReader,
};

fn client(broker: &Broker) -> KafkaLog {
    KafkaLog::new(KafkaClientConfig::new(broker.addr.to_string())).unwrap()
}

/// The `i`th reading of a city of 13 devices, with headers and its own timestamp.
fn reading(i: usize) -> Record {
    Record {
        key: Some(Bytes::from(format!("device-{}", i % 13))),
        value: Bytes::from(format!("reading-{i}")),
        timestamp_ms: 1_700_000_000_000 + i as i64,
        headers: vec![
            ("kind".to_string(), Bytes::from_static(b"traffic")),
            ("seq".to_string(), Bytes::from(i.to_string())),
        ],
    }
}

fn requests(topic: &str, partitions: i32, offset: i64) -> Vec<FetchRequest> {
    (0..partitions)
        .map(|partition| FetchRequest {
            topic: topic.to_string(),
            partition,
            offset,
        })
        .collect()
}

/// What repeated fetches read.
struct Read {
    /// By partition, in offset order.
    records: Vec<Vec<StoredRecord>>,
    /// The most records one fetch returned for one partition.
    largest_fetch: usize,
    /// As the last fetch reported them.
    high_watermarks: Vec<i64>,
}

/// Fetches from `requests` on until `count` records have arrived, each fetch up to `max_bytes`
/// per partition.
async fn read(
    client: &KafkaLog,
    mut requests: Vec<FetchRequest>,
    count: usize,
    max_bytes: usize,
) -> Read {
    let deadline = Instant::now() + LIMIT;
    let mut read = Read {
        records: vec![Vec::new(); requests.len()],
        largest_fetch: 0,
        high_watermarks: Vec::new(),
    };
    while read.records.iter().map(Vec::len).sum::<usize>() < count {
        assert!(
            Instant::now() < deadline,
            "timed out reading {count} records"
        );
        let fetched = client
            .fetch(requests.clone(), max_bytes, Duration::from_secs(5))
            .await
            .unwrap();
        read.high_watermarks = fetched.iter().map(|f| f.high_watermark).collect();
        for ((request, part), records) in requests.iter_mut().zip(fetched).zip(&mut read.records) {
            read.largest_fetch = read.largest_fetch.max(part.records.len());
            if let Some(last) = part.records.last() {
                request.offset = last.offset + 1;
            }
            records.extend(part.records);
        }
    }
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_round_trip_exactly_and_land_where_murmur2_says() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    broker.log.create_topic("city", 5).unwrap();
    let client = client(&broker);
    let sent: Vec<Record> = (0..120).map(reading).collect();

    let placed = client.produce("city", sent.clone()).await.unwrap();
    let mut expected: Vec<Vec<StoredRecord>> = vec![Vec::new(); 5];
    for (record, &(partition, offset)) in sent.iter().zip(&placed) {
        let key = record.key.as_ref().unwrap();
        assert_eq!(partition, partition_for_key(key, 5), "{key:?}");
        expected[partition as usize].push(StoredRecord {
            offset,
            record: record.clone(),
        });
    }
    for (partition, records) in expected.iter().enumerate() {
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        let dense: Vec<i64> = (0..records.len() as i64).collect();
        assert_eq!(
            offsets, dense,
            "partition {partition}: offsets in input order, no gaps"
        );
    }

    let read = read(&client, requests("city", 5, 0), sent.len(), 1 << 20).await;
    assert_eq!(read.records, expected);
    let ends: Vec<i64> = expected.iter().map(|r| r.len() as i64).collect();
    assert_eq!(read.high_watermarks, ends);
    for (partition, records) in expected.iter().enumerate() {
        let (stored, _) = broker
            .log
            .read("city", partition as i32, 0, 1 << 20)
            .unwrap();
        assert_eq!(&stored, records, "the broker stored what was produced");
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_at_the_high_watermark_waits_for_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    broker.log.create_topic("tail", 1).unwrap();
    let (reader, writer) = (client(&broker), client(&broker));
    writer.produce("tail", vec![reading(0)]).await.unwrap();
    let at_end = requests("tail", 1, 1);

    let empty = reader
        .fetch(at_end.clone(), 1 << 20, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(
        empty,
        vec![FetchedPartition {
            topic: "tail".into(),
            partition: 0,
            high_watermark: 1,
            records: Vec::new(),
        }]
    );

    let max_wait = Duration::from_secs(30);
    let mut waiting = tokio::spawn(async move { reader.fetch(at_end, 1 << 20, max_wait).await });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut waiting)
            .await
            .is_err(),
        "a fetch at the high watermark returned before anything was appended"
    );
    let appended_at = Instant::now();
    writer.produce("tail", vec![reading(1)]).await.unwrap();
    let fetched = tokio::time::timeout(LIMIT, waiting)
        .await
        .expect("the fetch returns")
        .unwrap()
        .unwrap();
    let waited = appended_at.elapsed();
    assert_eq!(
        fetched,
        vec![FetchedPartition {
            topic: "tail".into(),
            partition: 0,
            high_watermark: 2,
            records: vec![StoredRecord {
                offset: 1,
                record: reading(1),
            }],
        }]
    );
    assert!(
        waited < max_wait / 3,
        "the fetch returned {waited:?} after the append: woken by its time-out, not the append"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_inside_a_batch_returns_only_the_requested_offset_on() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    broker.log.create_topic("batch", 1).unwrap();
    let sent: Vec<Record> = (0..10).map(reading).collect();
    broker.log.produce("batch", sent.clone()).unwrap();
    let stored = broker.log.read_batches("batch", 0, 0, 1 << 20).unwrap();
    assert_eq!(stored.batches.len(), 1, "the ten records are one batch");

    let read = read(&client(&broker), requests("batch", 1, 4), 6, 1 << 20).await;
    let expected: Vec<StoredRecord> = (4..10)
        .map(|i| StoredRecord {
            offset: i as i64,
            record: sent[i].clone(),
        })
        .collect();
    assert_eq!(read.records, vec![expected]);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_before_the_log_start_read_the_oldest_kept_and_past_the_end_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        segment_size: ByteSize::kib(4),
        ..BrokerConfig::default()
    };
    let broker = start_with(dir.path(), config).await;
    broker.log.create_topic("old", 1).unwrap();
    // Three batches of about 5 KiB each fill three segments; all records are from 1970.
    let old = |i: i64| Record::new(Some("meter"), vec![b'x'; 1000], i);
    for batch in 0..3 {
        broker
            .log
            .produce("old", (0..5).map(|i| old(batch * 5 + i)).collect())
            .unwrap();
    }
    let now_ms = 1_800_000_000_000;
    assert_eq!(broker.log.enforce_retention(now_ms).unwrap(), 10);
    assert_eq!(broker.log.log_start_offset("old", 0).unwrap(), 10);
    let client = client(&broker);

    let read = read(&client, requests("old", 1, 0), 5, 1 << 20).await;
    let offsets: Vec<i64> = read.records[0].iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![10, 11, 12, 13, 14]);
    assert_eq!(read.records[0][0].record, old(10));
    assert_eq!(read.high_watermarks, vec![15]);

    let refused = client
        .fetch(requests("old", 1, 16), 1 << 20, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            LogError::OffsetOutOfRange {
                offset: 16,
                start: 10,
                end: 15,
                ..
            }
        ),
        "{refused}"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_stay_within_their_byte_budget_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    broker.log.create_topic("bulk", 2).unwrap();
    // One meter per partition; each record counts 1,023 bytes against the budget, so 10,000
    // bytes hold at most ten.
    for partition in 0..2 {
        let meter = (0..)
            .map(|i| format!("meter-{i}"))
            .find(|k| partition_for_key(k.as_bytes(), 2) == partition)
            .unwrap();
        let records = (0..100)
            .map(|i| Record::new(Some(meter.clone()), vec![b'x'; 1000], i))
            .collect();
        broker.log.produce("bulk", records).unwrap();
    }

    let read = read(&client(&broker), requests("bulk", 2, 0), 200, 10_000).await;
    assert!(
        (1..=10).contains(&read.largest_fetch),
        "one fetch returned {} records of one partition",
        read.largest_fetch
    );
    for (partition, records) in read.records.iter().enumerate() {
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(
            offsets,
            (0..100).collect::<Vec<i64>>(),
            "partition {partition}"
        );
    }
    assert_eq!(read.high_watermarks, vec![100, 100]);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topics_and_partitions_are_refused_and_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    broker.log.create_topic("known", 2).unwrap();
    let client = Arc::new(client(&broker));

    let counted = {
        let client = client.clone();
        tokio::task::spawn_blocking(move || client.partition_count("nowhere"))
            .await
            .unwrap()
    };
    assert!(
        matches!(&counted, Err(LogError::UnknownTopic(t)) if t == "nowhere"),
        "{counted:?}"
    );
    let produced = client.produce("nowhere", vec![reading(0)]).await;
    assert!(
        matches!(&produced, Err(LogError::UnknownTopic(t)) if t == "nowhere"),
        "{produced:?}"
    );
    let fetched = client
        .fetch(requests("nowhere", 1, 0), 1 << 20, Duration::ZERO)
        .await;
    assert!(
        matches!(&fetched, Err(LogError::UnknownTopic(t)) if t == "nowhere"),
        "{fetched:?}"
    );
    assert!(
        broker.log.partition_count("nowhere").is_err(),
        "asking about a topic must not create it"
    );

    let beyond = client
        .fetch(requests("known", 3, 0), 1 << 20, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(
        beyond.to_string(),
        "topic `known` has 2 partitions; partition 2 does not exist"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topics_are_created_and_existing_ones_checked() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    broker.log.create_topic("kept", 2).unwrap();
    let client = client(&broker);

    client
        .ensure_topics(&[("kept", 2), ("fresh", 3)])
        .await
        .unwrap();
    assert_eq!(broker.log.partition_count("fresh").unwrap(), 3);
    assert_eq!(broker.log.partition_count("kept").unwrap(), 2);
    client.ensure_topics(&[("fresh", 3)]).await.unwrap();

    let mismatch = client.ensure_topics(&[("kept", 4)]).await.unwrap_err();
    assert_eq!(
        mismatch.to_string(),
        "topic `kept` already exists with 2 partitions; it cannot be re-created with 4"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_reported_within_the_request_timeout() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let servers = closed.local_addr().unwrap().to_string();
    drop(closed);
    let mut config = KafkaClientConfig::new(servers.clone());
    config.request_timeout = Duration::from_secs(2);
    let client = Arc::new(KafkaLog::new(config).unwrap());
    let assert_unreachable = |started: Instant, error: LogError, what: &str| {
        let message = error.to_string();
        assert!(
            matches!(error, LogError::KafkaUnreachable { .. }),
            "{what}: {message}"
        );
        assert!(
            message.starts_with(&format!("cannot reach Kafka at {servers} within 2s (")),
            "{what}: {message}"
        );
        assert!(
            message
                .ends_with("): check broker.external.bootstrap_servers and that the cluster is up"),
            "{what}: {message}"
        );
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "{what} failed only after {took:?}"
        );
    };

    let started = Instant::now();
    let counted = {
        let client = client.clone();
        tokio::task::spawn_blocking(move || client.partition_count("telemetry.traffic"))
            .await
            .unwrap()
    };
    assert_unreachable(started, counted.unwrap_err(), "metadata");
    let started = Instant::now();
    let produced = client.produce("telemetry.traffic", vec![reading(0)]).await;
    assert_unreachable(started, produced.unwrap_err(), "produce");
    let started = Instant::now();
    let created = client.ensure_topics(&[("telemetry.traffic", 4)]).await;
    assert_unreachable(started, created.unwrap_err(), "topic creation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_reader_follows_topics_over_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    broker.log.create_topic("north", 3).unwrap();
    broker.log.create_topic("south", 2).unwrap();
    let writer = client(&broker);
    writer
        .produce("north", (0..20).map(reading).collect())
        .await
        .unwrap();
    writer
        .produce("south", (20..30).map(reading).collect())
        .await
        .unwrap();
    let log: Arc<dyn LogClient> = Arc::new(client(&broker));
    let mut reader = TopicReader::from_beginning(log, &["north", "south"]).unwrap();

    let deadline = Instant::now() + LIMIT;
    let mut got: BTreeMap<String, Vec<Record>> = BTreeMap::new();
    while got.values().map(Vec::len).sum::<usize>() < 30 {
        assert!(Instant::now() < deadline, "timed out: read {got:?}");
        for consumed in reader.poll(Duration::from_secs(5)).await.unwrap() {
            got.entry(consumed.topic.to_string())
                .or_default()
                .push(consumed.record);
        }
    }
    let by_seq = |records: &mut Vec<Record>| records.sort_by_key(|r| r.timestamp_ms);
    by_seq(got.get_mut("north").unwrap());
    by_seq(got.get_mut("south").unwrap());
    assert_eq!(got["north"], (0..20).map(reading).collect::<Vec<_>>());
    assert_eq!(got["south"], (20..30).map(reading).collect::<Vec<_>>());

    let waiting = tokio::spawn(async move { reader.poll(Duration::from_secs(30)).await });
    writer.produce("south", vec![reading(30)]).await.unwrap();
    let next = tokio::time::timeout(LIMIT, waiting)
        .await
        .expect("the reader wakes")
        .unwrap()
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!((&*next[0].topic, &next[0].record), ("south", &reading(30)));
    broker.stop().await;
}
