//! Following the log: telemetry into the hot store and through the window clock, metric rows out
//! to the `metrics` topic, and the derived topics into their tables.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use polis_broker::{ConsumedRecord, LogClient, Record, TopicReader};
use polis_telemetry::{MetricRecord, schema, topics};
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
    let mut tasks = JoinSet::new();
    tasks.spawn(follow(metrics_reader, store.clone(), shutdown.clone()));
    let dead_letters = TopicReader::from_beginning(log.clone(), &[topics::DEADLETTER])?;
    tasks.spawn(follow(dead_letters, store.clone(), shutdown.clone()));
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

/// Decodes records into their tables; returns each table's decoded batch.
fn insert(
    store: &HotStore,
    records: &[ConsumedRecord],
) -> Vec<(&'static str, arrow::array::RecordBatch)> {
    let mut by_table: BTreeMap<&'static str, Vec<&ConsumedRecord>> = BTreeMap::new();
    for r in records {
        if let Some((table, _)) = schema::TABLES.iter().find(|(_, topic)| *topic == r.topic) {
            by_table.entry(table).or_default().push(r);
        }
    }
    let mut inserted = Vec::new();
    for (table, records) in by_table {
        match decode(table, &records) {
            Ok(batch) => {
                if let Err(e) = store.insert(table, batch.clone()) {
                    tracing::error!(table, error = %e, "cannot store decoded rows");
                }
                inserted.push((table, batch));
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
        insert(&store, &records);
    }
}

async fn follow_telemetry(
    mut reader: TopicReader,
    mut clock: WindowClock,
    definitions: Vec<MetricDefinition>,
    log: Arc<dyn LogClient>,
    store: Arc<HotStore>,
    shutdown: CancellationToken,
) {
    let size = chrono::Duration::milliseconds(clock.size_ms());
    while let Some(records) = next(&mut reader, &shutdown).await {
        for (table, batch) in insert(&store, &records) {
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
    loop {
        let result = async {
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
            Ok::<_, AnalyticsError>(())
        }
        .await;
        match result {
            Ok(()) => return true,
            Err(e) => {
                tracing::error!(window_start = %start, error = %e, "emitting a window failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(RETRY_DELAY) => {}
                }
            }
        }
    }
}
