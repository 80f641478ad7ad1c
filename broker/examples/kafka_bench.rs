//! Broker benchmark: rdkafka produce (acks=all, batching, 100-byte records) and consume
//! throughput against the Kafka listener, next to the physical limits measured in the same run:
//! the disk's sequential write speed for produce, reading the stored log files for consume.
//!
//!     cargo run --release -p polis-broker --example kafka_bench -- [RECORDS] [PARTITIONS] [CONSUMERS]
//!
//! Consumers (default 2) each read their share of the partitions on a thread of their own, as
//! the members of a consumer group would; each is an rdkafka `BaseConsumer`.
//! The broker runs in this process on 127.0.0.1 with a temporary data dir under the current
//! directory (so it is on the same disk as the disk measurement), `flush = "always"`.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use polis_broker::{BrokerConfig, Log};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
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

/// Reads `partitions` of the bench topic from the beginning to their end with one rdkafka
/// consumer; returns the records read, the CPU seconds this thread used, and the consumer.
fn consume_all(addr: &str, partitions: &[i32]) -> (u64, f64, BaseConsumer) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "bench")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.max.bytes", "8388608")
        .set("max.partition.fetch.bytes", "1048576")
        // librdkafka pauses a partition's fetching for fetch.queue.backoff.ms (default 1 s) once
        // its local queue holds queued.min.messages: keep enough queued to never pause.
        .set("queued.min.messages", "1000000")
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in partitions {
        assignment
            .add_partition_offset("bench", *p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let (mut consumed, mut at_end) = (0u64, 0);
    while at_end < partitions.len() {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(_)) => consumed += 1,
            Some(Err(KafkaError::PartitionEOF(_))) => at_end += 1,
            Some(Err(e)) => panic!("consuming failed: {e}"),
            None => panic!("no record for 10 s before the end of the partitions"),
        }
    }
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    (consumed, cpu_seconds(&stat), consumer)
}

/// The user + system CPU seconds in a `/proc/…/stat` line.
fn cpu_seconds(stat: &str) -> f64 {
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

/// Bytes per second of reading every segment file under `dir` sequentially in 1 MiB reads (from
/// the page cache, as the broker serves a consumer that keeps up), and the bytes read.
fn log_read_speed(dir: &std::path::Path) -> (f64, usize) {
    let mut chunk = vec![0u8; 1 << 20];
    let mut bytes = 0usize;
    let start = Instant::now();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            for segment in std::fs::read_dir(&path).unwrap() {
                let segment = segment.unwrap().path();
                if segment.extension().is_some_and(|e| e == "log") {
                    let mut file = std::fs::File::open(segment).unwrap();
                    loop {
                        let n = file.read(&mut chunk).unwrap();
                        if n == 0 {
                            break;
                        }
                        bytes += n;
                    }
                }
            }
        }
    }
    (bytes as f64 / start.elapsed().as_secs_f64(), bytes)
}

/// CPU seconds used so far by this process's threads, summed by kind: the broker's tokio
/// workers, librdkafka's threads, and the main thread that runs the client loop.
fn thread_cpu() -> BTreeMap<&'static str, f64> {
    let mut by_kind = BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue;
        };
        let name = stat.split_once('(').unwrap().1.rsplit_once(") ").unwrap().0;
        let kind = match name {
            n if n.starts_with("tokio") => "broker",
            n if n.starts_with("rdk:") => "librdkafka",
            _ => "client loop",
        };
        *by_kind.entry(kind).or_insert(0.0) += cpu_seconds(&stat);
    }
    by_kind
}

/// The CPU each kind of thread used between two [`thread_cpu`] readings `seconds` apart, in
/// percent of one core.
fn cpu_shares(
    before: &BTreeMap<&'static str, f64>,
    after: BTreeMap<&'static str, f64>,
    seconds: f64,
) -> String {
    after
        .into_iter()
        .map(|(kind, used)| {
            let used = used - before.get(kind).copied().unwrap_or(0.0);
            format!("{kind} {:.0}%", 100.0 * used / seconds)
        })
        .collect::<Vec<_>>()
        .join(", ")
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
    let consumers: i32 = args
        .get(3)
        .map_or(2, |a| a.parse().expect("CONSUMERS is a number"));
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
    let cpu_before = thread_cpu();
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
    let produce_cpu = cpu_shares(&cpu_before, thread_cpu(), produce_s);
    let acks = producer.context();
    assert_eq!(acks.failed.load(Ordering::Relaxed), 0, "deliveries failed");
    assert_eq!(acks.ok.load(Ordering::Relaxed), records);

    let cpu_before = thread_cpu();
    let start = Instant::now();
    // Each reader returns its consumer, so librdkafka's threads are still there to be measured.
    let readers: Vec<(u64, f64, BaseConsumer)> = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..consumers)
            .map(|c| {
                let mine: Vec<i32> = (0..partitions).filter(|p| p % consumers == c).collect();
                let addr = addr.as_str();
                scope.spawn(move || consume_all(addr, &mine))
            })
            .collect();
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let consumed: u64 = readers.iter().map(|(n, _, _)| n).sum();
    assert_eq!(consumed, records, "every record produced is consumed");
    let consume_s = start.elapsed().as_secs_f64();
    let mut cpu_after = thread_cpu();
    *cpu_after.entry("client loop").or_insert(0.0) +=
        readers.iter().map(|(_, s, _)| s).sum::<f64>();
    drop(readers);
    let consume_cpu = cpu_shares(&cpu_before, cpu_after, consume_s);
    stop.cancel();
    let log_dir = dir.path().join("log");
    log_read_speed(&log_dir); // warms the page cache
    let (read_bytes_s, log_bytes) = log_read_speed(&log_dir);
    // The records a reader of the stored bytes could pass on per second at that speed.
    let read_limit = read_bytes_s / (log_bytes as f64 / records as f64);

    let produce_rate = records as f64 / produce_s;
    let produce_mb_s = produce_rate * RECORD_BYTES as f64 / 1e6;
    println!(
        "records={records} record_bytes={RECORD_BYTES} partitions={partitions} consumers={consumers} flush=always"
    );
    println!("disk sequential write (1 GiB + fdatasync): {disk_mb_s:.0} MB/s");
    println!(
        "produce acks=all: {produce_rate:.0} records/s ({produce_mb_s:.1} MB/s of payload, {:.1}% of disk)",
        100.0 * produce_mb_s / disk_mb_s
    );
    let consume_rate = records as f64 / consume_s;
    let consume_mb_s = consume_rate * RECORD_BYTES as f64 / 1e6;
    println!(
        "log files read sequentially (page cache): {:.0} MB/s = {read_limit:.0} records/s",
        read_bytes_s / 1e6
    );
    println!(
        "consume: {consume_rate:.0} records/s ({consume_mb_s:.1} MB/s of payload, {:.1}% of the log read limit)",
        100.0 * consume_rate / read_limit
    );
    println!("produce CPU (100% = one core): {produce_cpu}");
    println!("consume CPU (100% = one core): {consume_cpu}");
}
