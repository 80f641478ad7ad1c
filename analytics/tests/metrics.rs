//! The shipped metric definitions over a fixed input (`tests/golden/metrics/input.ndjson`),
//! through the whole analytics tier on an embedded log. The input has late, out-of-order and
//! duplicate records and a meter that falls silent. The metric rows and dead letters it produces
//! must be exactly `expected.ndjson`. A run killed mid-stream and restarted on the same log must
//! produce exactly what the uninterrupted run produced.
//!
//! The input is produced in stages, each stage waiting until analytics has read and emitted
//! everything before it, so the outcome depends on event time alone. Every topic has one
//! partition, and each stage brings every topic to the same event time. Each stage's late records
//! come first in its topic. On a mismatch the rows produced are written to
//! `{CARGO_TARGET_TMPDIR}/golden-metrics.ndjson` for comparison.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use polis_analytics::{Analytics, AnalyticsConfig};
use polis_broker::{BrokerConfig, EmbeddedLog, Log, LogClient, Record, TopicReader};
use polis_telemetry::{MetricRecord, schema, topics};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use common::eventually;

const CHECKPOINT_HEADER: &str = "polis-checkpoint";
const TELEMETRY: [&str; 3] = [topics::TRAFFIC, topics::ENERGY, topics::TRANSPORT];

fn golden(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/metrics")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The input's stages: the readings of each topic, in file order.
fn stages() -> Vec<BTreeMap<&'static str, Vec<Value>>> {
    let mut stages: Vec<BTreeMap<&'static str, Vec<Value>>> = Vec::new();
    for line in golden("input.ndjson").lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        if line.get("stage").is_some() {
            stages.push(BTreeMap::new());
            continue;
        }
        let (kind, reading) = line.as_object().unwrap().iter().next().unwrap();
        let topic = TELEMETRY
            .into_iter()
            .find(|t| t.ends_with(kind.as_str()))
            .unwrap_or_else(|| panic!("unknown reading kind {kind}"));
        stages
            .last_mut()
            .expect("the input starts with a stage")
            .entry(topic)
            .or_default()
            .push(reading.clone());
    }
    stages
}

fn config() -> AnalyticsConfig {
    AnalyticsConfig {
        window: Duration::from_secs(10),
        allowed_lateness: Duration::from_secs(5),
        update_horizon: Duration::from_secs(20),
        ..AnalyticsConfig::default()
    }
}

/// The log and what has been produced to it so far.
struct Fixture {
    log: Arc<dyn LogClient>,
    /// The next offset of each telemetry topic's one partition.
    ends: BTreeMap<&'static str, i64>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), BrokerConfig::default()).unwrap();
        for (_, topic) in schema::TABLES {
            log.create_topic(topic, 1).unwrap();
        }
        Fixture {
            log: Arc::new(EmbeddedLog(log)),
            ends: TELEMETRY.into_iter().map(|t| (t, 0)).collect(),
            _dir: dir,
        }
    }

    async fn start(&self) -> Analytics {
        Analytics::start(config(), self.log.clone(), CancellationToken::new())
            .await
            .unwrap()
    }

    /// Appends `readings` to `topic` in one batch, keyed by device.
    async fn produce(&mut self, topic: &'static str, readings: &[Value]) {
        let records = readings
            .iter()
            .map(|r| {
                Record::new(
                    Some(r["device_id"].as_str().unwrap().to_string()),
                    serde_json::to_vec(r).unwrap(),
                    chrono::Utc::now().timestamp_millis(),
                )
            })
            .collect();
        let positions = self.log.produce(topic, records).await.unwrap();
        let last = positions.iter().map(|(_, offset)| offset).max().unwrap();
        self.ends.insert(topic, last + 1);
    }

    async fn produce_stage(&mut self, stage: &BTreeMap<&'static str, Vec<Value>>) {
        for topic in TELEMETRY {
            if let Some(readings) = stage.get(topic) {
                self.produce(topic, readings).await;
            }
        }
    }

    /// Every record of `topic`, oldest first.
    async fn read_all(&self, topic: &str) -> Vec<Record> {
        let mut reader = TopicReader::from_beginning(self.log.clone(), &[topic]).unwrap();
        let mut records = Vec::new();
        loop {
            let batch = reader.poll(Duration::ZERO).await.unwrap();
            if batch.is_empty() {
                return records;
            }
            records.extend(batch.into_iter().map(|r| r.record));
        }
    }

    /// Waits until the newest checkpoint on `metrics` has counted every telemetry record
    /// produced: analytics has read them all and emitted what they made ready.
    async fn caught_up(&self, what: &str) {
        eventually(what, || async {
            let newest = self
                .read_all(topics::METRICS)
                .await
                .iter()
                .filter_map(|r| r.header(CHECKPOINT_HEADER))
                .map(|h| serde_json::from_slice::<Value>(h).unwrap())
                .max_by_key(|c| c["seq"].as_u64().unwrap())?;
            self.ends
                .iter()
                .all(|(topic, end)| newest["offsets"][format!("{topic}/0")] == json!(end))
                .then_some(())
        })
        .await;
    }

    /// The metric rows emitted, without their wall-clock `emitted_at`, ordered by window,
    /// revision, metric and entity; then the dead letters, in order.
    async fn outcome(&self) -> String {
        let mut rows: Vec<MetricRecord> = self
            .read_all(topics::METRICS)
            .await
            .iter()
            .map(|r| serde_json::from_slice(&r.value).unwrap())
            .collect();
        rows.sort_by(|a, b| {
            (a.window_start, a.revision, &a.metric, &a.entity).cmp(&(
                b.window_start,
                b.revision,
                &b.metric,
                &b.entity,
            ))
        });
        let mut out = String::new();
        for row in rows {
            let mut value = serde_json::to_value(&row).unwrap();
            value.as_object_mut().unwrap().remove("emitted_at");
            out += &format!("{value}\n");
        }
        for letter in self.read_all(topics::DEADLETTER).await {
            let header = |name: &str| String::from_utf8(letter.header(name).unwrap().to_vec());
            let reading: Value = serde_json::from_slice(&letter.value).unwrap();
            out += &format!(
                "{}\n",
                json!({"dead_letter": {
                    "reason": header("reason").unwrap(),
                    "source": header("source").unwrap(),
                    "device_id": reading["device_id"],
                    "observed_at": reading["observed_at"],
                }})
            );
        }
        out
    }
}

/// The whole input through one analytics that runs throughout.
async fn uninterrupted() -> (Fixture, Analytics) {
    let mut fixture = Fixture::new();
    let analytics = fixture.start().await;
    for (i, stage) in stages().iter().enumerate() {
        fixture.produce_stage(stage).await;
        fixture.caught_up(&format!("stage {}", i + 1)).await;
    }
    (fixture, analytics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_metrics_over_the_golden_input_give_exactly_the_expected_rows() {
    let (fixture, analytics) = uninterrupted().await;
    let outcome = fixture.outcome().await;
    if outcome != golden("expected.ndjson") {
        let actual = Path::new(env!("CARGO_TARGET_TMPDIR")).join("golden-metrics.ndjson");
        std::fs::write(&actual, &outcome).unwrap();
        panic!(
            "the metric rows differ from tests/golden/metrics/expected.ndjson; they are in {}",
            actual.display()
        );
    }

    // Nothing is lost: the duplicate and the record too late for any window are stored.
    let readings = golden("input.ndjson")
        .lines()
        .filter(|l| l.starts_with(r#"{"traffic""#))
        .count();
    let result = analytics
        .sql()
        .query("SELECT count(*) AS n FROM traffic")
        .await
        .unwrap();
    let n = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(
        result.batches[0].column(0),
    )
    .value(0);
    assert_eq!(n as usize, readings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_stream_and_restarted_emits_exactly_what_an_uninterrupted_run_does() {
    let (reference, _analytics) = uninterrupted().await;
    let expected = reference.outcome().await;

    let stages = stages();
    let mut fixture = Fixture::new();
    let analytics = fixture.start().await;
    fixture.produce_stage(&stages[0]).await;
    fixture.caught_up("stage 1").await;
    // Stage 2's traffic only: its late record revises a window, while windows with traffic
    // from this stage wait for energy and transport.
    fixture
        .produce(topics::TRAFFIC, &stages[1][topics::TRAFFIC])
        .await;
    fixture.caught_up("stage 2's traffic").await;
    // Killed: its tasks are aborted wherever they are, nothing is flushed or handed over.
    drop(analytics);

    let _restarted = fixture.start().await;
    for topic in [topics::ENERGY, topics::TRANSPORT] {
        fixture.produce(topic, &stages[1][topic]).await;
    }
    fixture.caught_up("the rest of stage 2").await;
    fixture.produce_stage(&stages[2]).await;
    fixture.caught_up("stage 3").await;
    assert_eq!(fixture.outcome().await, expected);
}
