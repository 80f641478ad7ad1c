//! Analytics benchmark: ingest throughput, then operator queries over an archive, in one run.
//! `scripts/bench-analytics.sh` runs it and times DuckDB on the same files beside it.
//!
//!     cargo run --release -p polis-analytics --example analytics_bench -- EVENTS DIR QUERIES
//!
//! 1. Produces EVENTS canonical traffic readings, as the gateway writes them, to an embedded log in
//!    `DIR/log`. There are 100,000 detectors in 8 districts, each reading once a second of event
//!    time from 2026-11-01 00:00 UTC. That is 100,000 events per second, the gateway's design load,
//!    so 10 million readings span 100 s. A last reading two hours after the rest makes every
//!    earlier hour old enough to archive. `DIR/sample.ndjson` gets the first million readings, for
//!    DuckDB's decode.
//! 2. **Ingest**: starts analytics (shipped metrics, archive in `DIR/archive`) on that log. It
//!    measures wall and CPU time (this process, all threads) until the newest checkpoint on
//!    `metrics` has counted every reading. That is every reading fetched from the log, decoded to
//!    Arrow, stored, put through the window clocks, and every window's metrics computed and
//!    appended. Prints events/s and events per CPU-second.
//! 3. Waits until the archive's Parquet files hold all EVENTS rows, then stops.
//! 4. **Queries**: starts analytics on an empty log over the same archive, so each table holds
//!    exactly the archived rows. It runs each `;`-terminated statement of the QUERIES file five
//!    times and prints one JSON line per statement: `{"sql", "rows", "runs_ms", "median_ms"}`.
//!
//! With `queries` in place of EVENTS it runs only step 4, over the archive a previous run left.
//!
//! Like `polis`, it first sets the heap to keep freed memory ([`polis_analytics::heap`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use polis_analytics::{Analytics, AnalyticsConfig};
use polis_broker::{BrokerConfig, EmbeddedLog, Log, LogClient, Record, TopicReader};
use polis_telemetry::{TrafficReading, schema, topics};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const DEVICES: usize = 100_000;
const DISTRICTS: usize = 8;
const READING_EVERY_S: i64 = 1;
const PRODUCE_BATCH: usize = 10_000;
const SAMPLE: usize = 1_000_000;
const RUNS: usize = 5;
const CHECKPOINT_HEADER: &str = "polis-checkpoint";

fn start_of_data() -> DateTime<Utc> {
    "2026-11-01T00:00:00Z".parse().unwrap()
}

/// Reading `i`: detector `i % DEVICES` at round `i / DEVICES`, values varying with both.
fn reading(i: usize) -> TrafficReading {
    let device = i % DEVICES;
    let round = (i / DEVICES) as i64;
    let at = start_of_data() + TimeDelta::seconds(round * READING_EVERY_S);
    let wave = ((device * 7 + i / DEVICES) % 100) as f64 / 100.0;
    TrafficReading {
        device_id: format!("tc-{device:04}"),
        district: format!("district-{}", device % DISTRICTS),
        observed_at: at,
        ingested_at: at,
        lane_id: Some((device % 4) as i64),
        vehicles: (device % 13) as i64 + (round % 7),
        occupancy_ratio: wave,
        average_speed_kmh: 15.0 + 45.0 * (1.0 - wave),
        congested: None,
        sequence: Some(round),
    }
}

/// CPU time this process has used, user and system, from `/proc/self/stat` (in USER_HZ = 100).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat (Linux)");
    let after_name = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // Fields 14 and 15 of the line; the slice starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn open_log(dir: &Path) -> Arc<dyn LogClient> {
    let log = Log::open(dir, BrokerConfig::default()).unwrap();
    for (_, topic) in schema::TABLES {
        log.create_topic(topic, 1).unwrap();
    }
    Arc::new(EmbeddedLog(log))
}

/// The defaults, with the archive in `archive` and the empty energy and transport topics idle
/// after a second instead of 30 (they hold the watermark back until then).
fn config(archive: &Path) -> AnalyticsConfig {
    AnalyticsConfig {
        archive_dir: Some(archive.to_path_buf()),
        idle_partition_timeout: Duration::from_secs(1),
        ..AnalyticsConfig::default()
    }
}

async fn produce(log: &Arc<dyn LogClient>, events: usize, sample: &Path) {
    let mut sample_lines = Vec::new();
    let mut batch = Vec::with_capacity(PRODUCE_BATCH);
    let last = reading(events - 1).observed_at + TimeDelta::hours(2);
    let marker = TrafficReading {
        device_id: "tc-marker".into(),
        observed_at: last,
        ingested_at: last,
        ..reading(0)
    };
    for i in 0..=events {
        let r = if i < events {
            reading(i)
        } else {
            marker.clone()
        };
        let value = serde_json::to_vec(&r).unwrap();
        if i < SAMPLE.min(events) {
            sample_lines.extend_from_slice(&value);
            sample_lines.push(b'\n');
        }
        let now = Utc::now().timestamp_millis();
        batch.push(Record::new(Some(r.device_id.clone()), value, now));
        if batch.len() == PRODUCE_BATCH || i == events {
            log.produce(topics::TRAFFIC, std::mem::take(&mut batch))
                .await
                .unwrap();
        }
    }
    std::fs::write(sample, sample_lines).unwrap();
}

/// Waits until a checkpoint on `metrics` has counted `end` records of traffic partition 0.
async fn counted(log: &Arc<dyn LogClient>, end: i64) {
    let mut reader = TopicReader::from_beginning(log.clone(), &[topics::METRICS]).unwrap();
    let key = format!("{}/0", topics::TRAFFIC);
    loop {
        for r in reader.poll(Duration::from_millis(200)).await.unwrap() {
            if let Some(header) = r.record.header(CHECKPOINT_HEADER) {
                let checkpoint: Value = serde_json::from_slice(header).unwrap();
                // Everything but the marker, whose window the watermark never passes.
                if checkpoint["offsets"][&key].as_i64().unwrap_or(0) >= end {
                    return;
                }
            }
        }
    }
}

fn parquet_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            parquet_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            found.push(path);
        }
    }
}

fn archived_rows(table_dir: &Path) -> i64 {
    let mut files = Vec::new();
    parquet_files(table_dir, &mut files);
    files
        .iter()
        .filter_map(|f| SerializedFileReader::new(std::fs::File::open(f).ok()?).ok())
        .map(|r| r.metadata().file_metadata().num_rows())
        .sum()
}

/// The `;`-terminated statements of `file`, without its `--` comment lines.
fn statements(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let code: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect();
    code.join("\n")
        .split(';')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Phases 1 to 3: produces `events` readings to `dir/log`, times their ingest and waits until
/// `archive` holds them all.
async fn ingest(events: usize, dir: &Path, archive: &Path) {
    for stale in [dir.join("log"), archive.to_path_buf()] {
        std::fs::remove_dir_all(&stale).ok();
    }
    std::fs::create_dir_all(dir).unwrap();

    let log = open_log(&dir.join("log"));
    let started = Instant::now();
    produce(&log, events, &dir.join("sample.ndjson")).await;
    eprintln!(
        "produced {events} readings in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let (cpu, wall) = (cpu_time(), Instant::now());
    let shutdown = CancellationToken::new();
    let analytics = Analytics::start(config(archive), log.clone(), shutdown.clone())
        .await
        .unwrap();
    counted(&log, events as i64).await;
    let (cpu, wall) = (cpu_time() - cpu, wall.elapsed());
    println!(
        "{}",
        json!({
            "ingest": {
                "events": events,
                "wall_s": wall.as_secs_f64(),
                "cpu_s": cpu.as_secs_f64(),
                "events_per_s": events as f64 / wall.as_secs_f64(),
                "events_per_cpu_s": events as f64 / cpu.as_secs_f64(),
            }
        })
    );

    let table_dir = archive.join("traffic");
    let deadline = Instant::now() + Duration::from_secs(600);
    while archived_rows(&table_dir) < events as i64 {
        assert!(
            Instant::now() < deadline,
            "the archive did not fill in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    shutdown.cancel();
    analytics.join().await;
    eprintln!("archived {events} rows");
}

#[tokio::main]
async fn main() {
    eprintln!("heap: {:?}", polis_analytics::heap::keep_freed_memory());
    let mut args = std::env::args().skip(1);
    let events = args.next().expect("EVENTS or `queries`");
    let dir = PathBuf::from(args.next().expect("DIR"));
    let queries = PathBuf::from(args.next().expect("QUERIES"));
    let archive = dir.join("archive");
    if events != "queries" {
        ingest(events.parse().expect("EVENTS"), &dir, &archive).await;
    }
    std::fs::remove_dir_all(dir.join("empty")).ok();
    let empty = open_log(&dir.join("empty"));
    let shutdown = CancellationToken::new();
    let analytics = Analytics::start(config(&archive), empty, shutdown.clone())
        .await
        .unwrap();
    let sql = analytics.sql();
    for statement in statements(&queries) {
        let mut runs = Vec::with_capacity(RUNS);
        let mut rows = 0;
        for _ in 0..RUNS {
            let t = Instant::now();
            let result = sql
                .query(&statement)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
            runs.push(t.elapsed().as_secs_f64() * 1000.0);
            rows = result.batches.iter().map(|b| b.num_rows()).sum::<usize>();
        }
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "{}",
            json!({"sql": statement, "rows": rows, "runs_ms": runs, "median_ms": sorted[RUNS / 2]})
        );
    }
    shutdown.cancel();
    analytics.join().await;
}
