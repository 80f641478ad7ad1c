//! The alarm tasks: closed windows of `metrics` through the engine, telemetry event times through
//! the silence tracker, new records appended to `alerts`.
//!
//! The rows of one window are appended in one produce call but spread over partitions, so a
//! window counts as closed only once a row of a later window of the same domain has been read and
//! a later poll then read every partition to its end: everything appended before that later row,
//! which includes the whole window, has been read by then.

use std::collections::{BTreeMap, HashMap};

use polis_broker::TopicReader;
use polis_telemetry::{AlertRecord, DeviceKind, MetricRecord, topics};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::{AlertService, Book, Sighting, encode};
use crate::ingest::{next, retrying};

/// Follows `metrics` from the beginning and evaluates each window once it is closed.
pub(super) async fn metrics(
    mut reader: TopicReader,
    service: AlertService,
    shutdown: CancellationToken,
) {
    let mut open: BTreeMap<(i64, String, i64), Vec<MetricRecord>> = BTreeMap::new();
    let mut seen_before: HashMap<String, i64> = HashMap::new();
    while let Some(records) = next(&mut reader, &shutdown).await {
        let mut seen_now = seen_before.clone();
        for r in &records {
            match serde_json::from_slice::<MetricRecord>(&r.record.value) {
                Ok(m) if m.revision == 0 => {
                    let end = m.window_end.timestamp_millis();
                    let domain = m.domain().to_string();
                    let latest = seen_now.entry(domain.clone()).or_insert(end);
                    *latest = (*latest).max(end);
                    open.entry((end, domain, m.window_start.timestamp_millis()))
                        .or_default()
                        .push(m);
                }
                Ok(_) => {}
                Err(e) => tracing::error!(
                    partition = r.partition,
                    offset = r.offset,
                    error = %e,
                    "skipping a record on the metrics topic that is not a metric row"
                ),
            }
        }
        if reader.caught_up().all(|c| c) {
            let closed: Vec<_> = open
                .keys()
                .filter(|(end, domain, _)| seen_before.get(domain).is_some_and(|l| end < l))
                .cloned()
                .collect();
            if !closed.is_empty() {
                let mut book = service.book.lock().await;
                let mut changes = Vec::new();
                for key in closed {
                    let rows = open.remove(&key).expect("listed");
                    changes.extend(book.engine.window(&rows));
                }
                if !append(&service, &mut book, changes, &shutdown).await {
                    return;
                }
            }
        }
        seen_before = seen_now;
    }
}

#[derive(Deserialize)]
struct Seen {
    device_id: String,
    observed_at: chrono::DateTime<chrono::Utc>,
}

/// Follows the telemetry topics of the kinds silence rules watch.
pub(super) async fn sightings(
    mut reader: TopicReader,
    service: AlertService,
    shutdown: CancellationToken,
) {
    while let Some(records) = next(&mut reader, &shutdown).await {
        let sightings: Vec<Sighting> = records
            .iter()
            .filter_map(|r| {
                let kind = DeviceKind::ALL
                    .into_iter()
                    .find(|k| k.topic() == &*r.topic)?;
                let seen: Seen = serde_json::from_slice(&r.record.value).ok()?;
                Some(Sighting {
                    kind,
                    device_id: seen.device_id,
                    at: seen.observed_at,
                })
            })
            .collect();
        if sightings.is_empty() {
            continue;
        }
        let mut book = service.book.lock().await;
        let changes = book.silence.observe(&sightings);
        if !append(&service, &mut book, changes, &shutdown).await {
            return;
        }
    }
}

/// Appends the changes not yet on the topic; `false` once shutdown is requested.
async fn append(
    service: &AlertService,
    book: &mut Book,
    changes: Vec<AlertRecord>,
    shutdown: &CancellationToken,
) -> bool {
    let fresh = book.fresh(changes);
    if fresh.is_empty() {
        return true;
    }
    let records: Vec<_> = fresh.iter().map(encode).collect();
    let appended = retrying("appending alarm records", shutdown, || {
        let (log, records) = (service.log.clone(), records.clone());
        async move {
            log.produce(topics::ALERTS, records).await?;
            Ok(())
        }
    })
    .await;
    if appended {
        for r in fresh {
            tracing::info!(alert_id = r.alert_id, state = ?r.state, "alarm changed");
            book.note(r);
        }
    }
    appended
}
