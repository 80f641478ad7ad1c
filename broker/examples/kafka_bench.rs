//! Broker benchmark: rdkafka produce (acks=all, batching, 100-byte records) and consume
//! throughput against the Kafka listener, next to the disk's own sequential write speed measured
//! in the same run as the physical limit.
//!
//!     cargo run --release -p polis-broker --example kafka_bench -- [RECORDS] [PARTITIONS]
//!
//! The broker runs in this process on 127.0.0.1 with a temporary data dir under the current
//! directory (so it is on the same disk as the disk measurement), `flush = "always"`.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use polis_broker::{BrokerConfig, Log};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const RECORD_BYTES: usize = 100;

struct Acks {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = if result.is_ok() {
            &self.ok
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// MB/s of writing `bytes` sequentially in 1 MiB writes followed by one fdatasync.
fn disk_write_speed(dir: &std::path::Path, bytes: usize) -> f64 {
    let path = dir.join("disk-probe");
    let chunk = vec![0xA5u8; 1 << 20];
    let start = Instant::now();
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    for _ in 0..bytes / chunk.len() {
        file.write_all(&chunk).unwrap();
    }
    file.sync_data().unwrap();
    let seconds = start.elapsed().as_secs_f64();
    std::fs::remove_file(path).unwrap();
    bytes as f64 / seconds / 1e6
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let records: u64 = args
        .get(1)
        .map_or(2_000_000, |a| a.parse().expect("RECORDS is a number"));
    let partitions: i32 = args
        .get(2)
        .map_or(6, |a| a.parse().expect("PARTITIONS is a number"));
    let dir = tempfile::tempdir_in(".").unwrap();
    let disk_mb_s = disk_write_speed(dir.path(), 1 << 30);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = BrokerConfig::default();
    let log = Log::open(dir.path(), config.clone()).unwrap();
    log.create_topic("bench", partitions).unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    runtime.spawn(polis_broker::kafka::serve(
        listener,
        log.clone(),
        config,
        stop.clone(),
    ));

    let producer: BaseProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(Acks {
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
        .unwrap();
    let payload = vec![b'x'; RECORD_BYTES];
    let start = Instant::now();
    let mut sent = 0;
    while sent < records {
        match producer.send(BaseRecord::<(), [u8]>::to("bench").payload(&payload)) {
            Ok(()) => sent += 1,
            Err((_, _)) => {
                producer.poll(Duration::from_millis(1));
            }
        }
        if sent % 10_000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    let produce_s = start.elapsed().as_secs_f64();
    let acks = producer.context();
    assert_eq!(acks.failed.load(Ordering::Relaxed), 0, "deliveries failed");
    assert_eq!(acks.ok.load(Ordering::Relaxed), records);

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("group.id", "bench")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset("bench", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let start = Instant::now();
    let mut consumed = 0u64;
    while consumed < records {
        if let Some(message) = consumer.poll(Duration::from_secs(10)) {
            message.unwrap();
            consumed += 1;
        }
    }
    let consume_s = start.elapsed().as_secs_f64();
    stop.cancel();

    let produce_rate = records as f64 / produce_s;
    let produce_mb_s = produce_rate * RECORD_BYTES as f64 / 1e6;
    println!("records={records} record_bytes={RECORD_BYTES} partitions={partitions} flush=always");
    println!("disk sequential write (1 GiB + fdatasync): {disk_mb_s:.0} MB/s");
    println!(
        "produce acks=all: {produce_rate:.0} records/s ({produce_mb_s:.1} MB/s of payload, {:.1}% of disk)",
        100.0 * produce_mb_s / disk_mb_s
    );
    println!("consume: {:.0} records/s", records as f64 / consume_s);
}
