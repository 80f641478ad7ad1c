//! The task that follows the `metrics` topic: parse, keep in the history, redraw the charts once
//! and publish the change to every viewer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use polis_broker::{ConsumedRecord, LogError, TopicReader};
use polis_telemetry::MetricRecord;
use tokio_util::sync::CancellationToken;

use super::history::{Applied, MetricHistory};
use crate::charts::Charts;
use crate::hub::{Frame, Hub};
use crate::messages;

/// Longest wait for new records in one poll; the token is watched meanwhile.
const POLL_WAIT: Duration = Duration::from_secs(1);
/// Pause before reading again after the log failed to answer.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Counts of what was read from the `metrics` topic.
#[derive(Debug, Default)]
pub(crate) struct FollowStats {
    read: AtomicU64,
    unparseable: AtomicU64,
}

impl FollowStats {
    /// Metric records parsed so far, stored or not.
    pub(crate) fn metrics_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}

/// Reads the `metrics` topic until `shutdown`, keeping `history` and publishing every change to
/// `hub`. Never gives up on a failing log, except when the log itself is closing.
pub(crate) async fn follow_metrics(
    mut reader: TopicReader,
    mut history: MetricHistory,
    hub: Arc<Hub>,
    stats: Arc<FollowStats>,
    shutdown: CancellationToken,
) {
    loop {
        let polled = tokio::select! {
            () = shutdown.cancelled() => return,
            polled = reader.poll(POLL_WAIT) => polled,
        };
        match polled {
            Ok(records) => {
                let stored = absorb(&mut history, records, &stats);
                if !stored.is_empty() {
                    publish(&history, &stored, &hub);
                }
            }
            Err(LogError::Closed) => {
                tracing::info!("the log is closing; the dashboard keeps showing its last state");
                return;
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    retry_after = ?RETRY_AFTER,
                    "the dashboard could not read the metrics topic"
                );
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RETRY_AFTER) => {}
                }
            }
        }
    }
}

/// Parses and stores `records`, returning the ones that changed the history.
fn absorb(
    history: &mut MetricHistory,
    records: Vec<ConsumedRecord>,
    stats: &FollowStats,
) -> Vec<MetricRecord> {
    let mut stored = Vec::new();
    for consumed in records {
        let metric = match serde_json::from_slice::<MetricRecord>(&consumed.record.value) {
            Ok(metric) => metric,
            Err(error) => {
                let unparseable = stats.unparseable.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    topic = %consumed.topic,
                    partition = consumed.partition,
                    offset = consumed.offset,
                    %error,
                    unparseable,
                    "skipped a metrics record that is not a MetricRecord"
                );
                continue;
            }
        };
        stats.read.fetch_add(1, Ordering::Relaxed);
        match history.apply(metric.clone()) {
            Applied::Stored => stored.push(metric),
            Applied::Superseded | Applied::Expired => {}
            Applied::SeriesLimit => tracing::warn!(
                metric = %metric.metric,
                entity = %metric.entity,
                "skipped a metric of a new series: the dashboard keeps its maximum of series"
            ),
        }
    }
    stored
}

/// Redraws the charts once and hands the change to every viewer.
fn publish(history: &MetricHistory, stored: &[MetricRecord], hub: &Hub) {
    let charts = Charts::render(history);
    let encoded = messages::snapshot(history, &charts)
        .and_then(|snapshot| Ok((snapshot, messages::update(stored, history, &charts)?)));
    match encoded {
        Ok((snapshot, update)) => hub.publish(Frame {
            snapshot,
            update,
            charts,
        }),
        Err(error) => {
            tracing::error!(%error, "could not encode a dashboard update; viewers miss this change")
        }
    }
}
