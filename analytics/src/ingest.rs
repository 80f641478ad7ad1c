//! Following the log: at start, the derived topics into their tables and the newest checkpoint;
//! then telemetry through the window clocks ([`crate::continuous`]) and the derived topics as
//! they grow. A telemetry record that does not decode (one a Kafka client wrote past the gateway)
//! or comes too late for any window is dead-lettered once, never dropped.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use chrono::Utc;
use polis_broker::{ConsumedRecord, LogClient, Record, TopicReader};
use polis_telemetry::deadletter::{
    HEADER_DETAIL, HEADER_REASON, HEADER_RECEIVED_AT, HEADER_SOURCE,
};
use polis_telemetry::reading::format_time;
use polis_telemetry::{RejectReason, schema, topics};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::Checkpoint;
use crate::config::AnalyticsConfig;
use crate::continuous::{Continuous, window_groups};
use crate::decode::decode;
use crate::error::AnalyticsError;
use crate::metrics::{self, MetricDefinition};
use crate::store::HotStore;

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
    let mut checkpoint = Checkpoint::default();
    loop {
        let records = metrics_reader.poll(Duration::ZERO).await?;
        if records.is_empty() {
            break;
        }
        checkpoint.advance(&records);
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
    let alerts_reader = TopicReader::from_beginning(log.clone(), &[topics::ALERTS])?;
    tasks.spawn(follow(alerts_reader, store.clone(), shutdown.clone()));
    let continuous = Continuous {
        reader: TopicReader::from_beginning(log.clone(), &WINDOWED_TOPICS)?,
        groups: window_groups(config, definitions, &checkpoint)?,
        checkpoint,
        dead_lettered,
        log,
        store,
    };
    tasks.spawn(continuous.run(shutdown));
    Ok(tasks)
}

/// The next records, or `None` once shutdown is requested.
pub(crate) async fn next(
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
pub(crate) struct Inserted<'r> {
    pub batches: Vec<(&'static str, RecordBatch)>,
    pub undecodable: Vec<(&'r ConsumedRecord, String)>,
}

/// Decodes records into their tables.
pub(crate) fn insert<'r>(store: &HotStore, records: &'r [ConsumedRecord]) -> Inserted<'r> {
    let mut by_table: BTreeMap<&'static str, Vec<&ConsumedRecord>> = BTreeMap::new();
    for r in records {
        if let Some((table, _)) = schema::TABLES.iter().find(|(_, topic)| *topic == &*r.topic) {
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
                topic = &*r.topic,
                partition = r.partition,
                offset = r.offset,
                error,
                "skipping a record analytics wrote that does not decode"
            );
        }
    }
}

/// The dead letter of a record found on a telemetry topic that analytics cannot count: its key
/// and bytes as they were, with the reason, what was wrong, and where it was found (`source`).
pub(crate) fn dead_letter(
    r: &ConsumedRecord,
    source: &str,
    reason: RejectReason,
    detail: &str,
) -> Record {
    let mut record = Record::new(
        r.record.key.clone(),
        r.record.value.clone(),
        r.record.timestamp_ms,
    );
    record.headers = vec![
        (HEADER_REASON.to_string(), reason.as_str().into()),
        (HEADER_DETAIL.to_string(), detail.to_string().into()),
        (
            HEADER_RECEIVED_AT.to_string(),
            format_time(Utc::now()).into(),
        ),
        (HEADER_SOURCE.to_string(), source.to_string().into()),
    ];
    record
}

/// Runs `attempt` until it succeeds (`true`) or shutdown is requested (`false`), logging each
/// failure of `what` and waiting [`RETRY_DELAY`] between attempts.
pub(crate) async fn retrying<F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> bool
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
