//! Following the log: telemetry into the hot store and through the window clock, metric rows out
//! to the `metrics` topic, and the derived topics into their tables. A telemetry record that does
//! not decode (one a Kafka client wrote past the gateway) is dead-lettered once, never dropped.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};
use polis_broker::{ConsumedRecord, LogClient, Record, TopicReader};
use polis_telemetry::deadletter::{
    HEADER_DETAIL, HEADER_REASON, HEADER_RECEIVED_AT, HEADER_SOURCE,
};
use polis_telemetry::reading::format_time;
use polis_telemetry::{MetricRecord, RejectReason, schema, topics};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::AnalyticsConfig;
use crate::decode::decode;
use crate::error::AnalyticsError;
use crate::metrics::{self, MetricDefinition};
use crate::store::{HotStore, event_times};
use crate::windows::WindowClock;

const POLL_WAIT: Duration = Duration::from_secs(1);
const RETRY_DELAY: Duration = Duration::from_secs(1);
const WINDOWED_TOPICS: [&str; 3] = [topics::TRAFFIC, topics::ENERGY, topics::TRANSPORT];

/// Catches up on `metrics` (the emitted horizon), checks the definitions and starts the tasks.
pub(crate) async fn start(
    config: &AnalyticsConfig,
    definitions: Vec<MetricDefinition>,
    log: Arc<dyn LogClient>,
    store: Arc<HotStore>,
    shutdown: CancellationToken,
) -> Result<JoinSet<()>, AnalyticsError> {
    metrics::check(&definitions, &store).await?;
    let mut metrics_reader = TopicReader::from_beginning(log.clone(), &[topics::METRICS])?;
    let mut emitted_until = i64::MIN;
    loop {
        let records = metrics_reader.poll(Duration::ZERO).await?;
        if records.is_empty() {
            break;
        }
        for r in &records {
            if let Ok(m) = serde_json::from_slice::<MetricRecord>(&r.record.value) {
                emitted_until = emitted_until.max(m.window_end.timestamp_millis());
            }
        }
        insert(&store, &records);
    }
    let mut dead_letter_reader = TopicReader::from_beginning(log.clone(), &[topics::DEADLETTER])?;
    let mut dead_lettered = HashSet::new();
    loop {
        let records = dead_letter_reader.poll(Duration::ZERO).await?;
        if records.is_empty() {
            break;
        }
        dead_lettered.extend(records.iter().filter_map(|r| {
            let source = r.record.header(HEADER_SOURCE)?;
            Some(String::from_utf8_lossy(source).into_owned())
        }));
        insert(&store, &records);
    }
    let mut tasks = JoinSet::new();
    tasks.spawn(follow(metrics_reader, store.clone(), shutdown.clone()));
    tasks.spawn(follow(dead_letter_reader, store.clone(), shutdown.clone()));
    let telemetry = TopicReader::from_beginning(log.clone(), &WINDOWED_TOPICS)?;
    let clock = WindowClock::new(
        config.window.as_millis() as i64,
        config.allowed_lateness.as_millis() as i64,
        emitted_until,
    );
    tasks.spawn(follow_telemetry(
        telemetry,
        clock,
        definitions,
        dead_lettered,
        log,
        store,
        shutdown,
    ));
    Ok(tasks)
}

/// The next records, or `None` once shutdown is requested.
async fn next(
    reader: &mut TopicReader,
    shutdown: &CancellationToken,
) -> Option<Vec<ConsumedRecord>> {
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = reader.poll(POLL_WAIT) => r,
        };
        match result {
            Ok(records) => return Some(records),
            Err(e) => {
                tracing::error!(error = %e, "reading the log failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(RETRY_DELAY) => {}
                }
            }
        }
    }
}

/// What [`insert`] made of some records: each table's decoded batch, and the records that do
/// not decode as rows of their table, with why.
struct Inserted<'r> {
    batches: Vec<(&'static str, RecordBatch)>,
    undecodable: Vec<(&'r ConsumedRecord, String)>,
}

/// Decodes records into their tables.
fn insert<'r>(store: &HotStore, records: &'r [ConsumedRecord]) -> Inserted<'r> {
    let mut by_table: BTreeMap<&'static str, Vec<&ConsumedRecord>> = BTreeMap::new();
    for r in records {
        if let Some((table, _)) = schema::TABLES.iter().find(|(_, topic)| *topic == r.topic) {
            by_table.entry(table).or_default().push(r);
        }
    }
    let mut inserted = Inserted {
        batches: Vec::new(),
        undecodable: Vec::new(),
    };
    for (table, records) in by_table {
        match decode(table, &records) {
            Ok(decoded) => {
                if let Err(e) = store.insert(table, decoded.batch.clone()) {
                    tracing::error!(table, error = %e, "cannot store decoded rows");
                }
                inserted.batches.push((table, decoded.batch));
                inserted.undecodable.extend(
                    decoded
                        .undecodable
                        .into_iter()
                        .map(|(r, e)| (r, format!("not a {table} reading: {e}"))),
                );
            }
            Err(e) => {
                tracing::error!(table, error = %e, records = records.len(), "cannot decode records")
            }
        }
    }
    inserted
}

async fn follow(mut reader: TopicReader, store: Arc<HotStore>, shutdown: CancellationToken) {
    while let Some(records) = next(&mut reader, &shutdown).await {
        for (r, error) in insert(&store, &records).undecodable {
            tracing::error!(
                topic = r.topic,
                partition = r.partition,
                offset = r.offset,
                error,
                "skipping a record analytics wrote that does not decode"
            );
        }
    }
}

/// The dead letter of a record found on a telemetry topic that does not decode: its key and
/// bytes as they were, with the reason, what was wrong, and where it was found.
fn dead_letter(r: &ConsumedRecord, source: &str, error: &str) -> Record {
    let mut record = Record::new(
        r.record.key.clone(),
        r.record.value.clone(),
        r.record.timestamp_ms,
    );
    let detail = format!(
        "record {source} is {error}; telemetry topics hold the gateway's canonical readings, so publish over MQTT or produce records of the table's columns"
    );
    record.headers = vec![
        (
            HEADER_REASON.to_string(),
            RejectReason::UndecodableRecord.as_str().into(),
        ),
        (HEADER_DETAIL.to_string(), detail.into()),
        (
            HEADER_RECEIVED_AT.to_string(),
            format_time(Utc::now()).into(),
        ),
        (HEADER_SOURCE.to_string(), source.to_string().into()),
    ];
    record
}

/// Follows the telemetry topics: rows into the store and the window clock, windows out as they
/// close, and records that do not decode into `telemetry.deadletter` — unless `dead_lettered`
/// (their `{topic}/{partition}/{offset}`) says an earlier run already put them there.
async fn follow_telemetry(
    mut reader: TopicReader,
    mut clock: WindowClock,
    definitions: Vec<MetricDefinition>,
    mut dead_lettered: HashSet<String>,
    log: Arc<dyn LogClient>,
    store: Arc<HotStore>,
    shutdown: CancellationToken,
) {
    let size = chrono::Duration::milliseconds(clock.size_ms());
    while let Some(records) = next(&mut reader, &shutdown).await {
        let inserted = insert(&store, &records);
        let letters: Vec<(String, Record)> = inserted
            .undecodable
            .iter()
            .filter_map(|(r, error)| {
                let source = format!("{}/{}/{}", r.topic, r.partition, r.offset);
                let letter = dead_letter(r, &source, error);
                (!dead_lettered.contains(&source)).then_some((source, letter))
            })
            .collect();
        if !letters.is_empty() {
            tracing::warn!(
                records = letters.len(),
                "dead-lettering telemetry records that do not decode"
            );
            let records: Vec<Record> = letters.iter().map(|(_, r)| r.clone()).collect();
            let produced = retrying("dead-lettering undecodable records", &shutdown, || {
                let records = records.clone();
                let log = log.clone();
                async move {
                    log.produce(topics::DEADLETTER, records).await?;
                    Ok(())
                }
            })
            .await;
            if !produced {
                return;
            }
            dead_lettered.extend(letters.into_iter().map(|(source, _)| source));
        }
        for (table, batch) in inserted.batches {
            let time_column = batch
                .schema()
                .index_of(schema::event_time_column(table))
                .expect("event time column");
            event_times(&batch, time_column).for_each(|ms| clock.observe(ms));
        }
        for start_ms in clock.ready() {
            let start =
                DateTime::<Utc>::from_timestamp_millis(start_ms).expect("window start in range");
            if !emit_window(
                &definitions,
                &store,
                log.as_ref(),
                start,
                start + size,
                &shutdown,
            )
            .await
            {
                return;
            }
        }
    }
    tracing::info!(
        records_after_close = clock.records_after_close(),
        "analytics stopped following telemetry"
    );
}

/// Computes one window's metrics and appends them, retrying until it succeeds or shutdown.
async fn emit_window(
    definitions: &[MetricDefinition],
    store: &HotStore,
    log: &dyn LogClient,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    shutdown: &CancellationToken,
) -> bool {
    retrying(
        &format!("emitting the window at {start}"),
        shutdown,
        || async {
            let rows = metrics::evaluate(definitions, store, start, end, Utc::now()).await?;
            let records: Vec<Record> = rows
                .iter()
                .map(|m| {
                    Record::new(
                        Some(m.key()),
                        serde_json::to_vec(m).expect("metric rows serialize"),
                        end.timestamp_millis(),
                    )
                })
                .collect();
            if !records.is_empty() {
                log.produce(topics::METRICS, records).await?;
            }
            tracing::debug!(window_start = %start, rows = rows.len(), "emitted window");
            Ok(())
        },
    )
    .await
}

/// Runs `attempt` until it succeeds (`true`) or shutdown is requested (`false`), logging each
/// failure of `what` and waiting [`RETRY_DELAY`] between attempts.
async fn retrying<F, Fut>(what: &str, shutdown: &CancellationToken, mut attempt: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), AnalyticsError>>,
{
    loop {
        match attempt().await {
            Ok(()) => return true,
            Err(e) => {
                tracing::error!(error = %e, "{what} failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(RETRY_DELAY) => {}
                }
            }
        }
    }
}
