//! The task that follows one topic (`metrics`, `alerts` or `devices`): parse each record, apply
//! it to the shared [`City`], redraw the charts and the map once when metrics changed, and publish
//! the change to every viewer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use polis_broker::{ConsumedRecord, LogError, TopicReader};
use polis_telemetry::{AlertRecord, MetricRecord, PresenceRecord, topics};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::history::Applied;
use super::{AlarmApplied, Change, City, PresenceApplied};
use crate::hub::{Frame, Hub};
use crate::messages;

/// Longest wait for new records in one poll; the token is watched meanwhile.
const POLL_WAIT: Duration = Duration::from_secs(1);
/// Pause before reading again after the log failed to answer.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Counts of what was read from the followed topics.
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

/// Reads `reader` until `shutdown`, keeping `city` and publishing every change to `hub`. Never
/// gives up on a failing log, except when the log itself is closing.
pub(crate) async fn follow(
    mut reader: TopicReader,
    city: Arc<Mutex<City>>,
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
            Ok(records) if records.is_empty() => {}
            Ok(records) => {
                let mut city = city.lock().unwrap_or_else(PoisonError::into_inner);
                let change = absorb(&mut city, records, &stats);
                if !change.is_empty() {
                    publish(&mut city, &change, &hub);
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
                    "the dashboard could not read the log"
                );
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RETRY_AFTER) => {}
                }
            }
        }
    }
}

/// Parses and applies `records`, returning what changed.
fn absorb(city: &mut City, records: Vec<ConsumedRecord>, stats: &FollowStats) -> Change {
    let mut change = Change::default();
    for consumed in records {
        match &*consumed.topic {
            topics::METRICS => {
                let Some(metric) = parse::<MetricRecord>(&consumed, stats) else {
                    continue;
                };
                stats.read.fetch_add(1, Ordering::Relaxed);
                match city.history.apply(metric.clone()) {
                    Applied::Stored => change.metrics.push(metric),
                    Applied::Superseded | Applied::Expired => {}
                    Applied::SeriesLimit => tracing::warn!(
                        metric = %metric.metric,
                        entity = %metric.entity,
                        "skipped a metric of a new series: the dashboard keeps its maximum of series"
                    ),
                }
            }
            topics::ALERTS => {
                let Some(alarm) = parse::<AlertRecord>(&consumed, stats) else {
                    continue;
                };
                match city.alarms.apply(alarm.clone()) {
                    AlarmApplied::Changed => change.alarms.push(alarm),
                    AlarmApplied::Unknown => {}
                    AlarmApplied::Limit => tracing::warn!(
                        alert_id = %alarm.alert_id,
                        "skipped a new alarm: the dashboard keeps its maximum of active alarms"
                    ),
                }
            }
            topics::DEVICES => {
                let Some(event) = parse::<PresenceRecord>(&consumed, stats) else {
                    continue;
                };
                match city.presence.apply(event.clone()) {
                    PresenceApplied::Changed => change.devices.push(event),
                    PresenceApplied::Older => {}
                    PresenceApplied::Limit => tracing::warn!(
                        device_id = %event.device_id,
                        "skipped a new device: the dashboard keeps its maximum of devices"
                    ),
                }
            }
            other => tracing::warn!(topic = other, "skipped a record of a topic not followed"),
        }
    }
    change
}

/// The record as a `T`, or `None` (counted and logged) when it is not one.
fn parse<T: DeserializeOwned>(consumed: &ConsumedRecord, stats: &FollowStats) -> Option<T> {
    match serde_json::from_slice::<T>(&consumed.record.value) {
        Ok(parsed) => Some(parsed),
        Err(error) => {
            let unparseable = stats.unparseable.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                topic = %consumed.topic,
                partition = consumed.partition,
                offset = consumed.offset,
                %error,
                unparseable,
                "skipped a record that is not of its topic's shape"
            );
            None
        }
    }
}

/// Redraws the charts and the map once if metrics changed and hands the change to every viewer.
/// Called with the city locked, so frames reach the hub in the order the state changed.
fn publish(city: &mut City, change: &Change, hub: &Hub) {
    if !change.metrics.is_empty() {
        city.redraw();
    }
    let encoded = messages::snapshot(city)
        .and_then(|snapshot| Ok((snapshot, messages::update(change, city)?)));
    match encoded {
        Ok((snapshot, update)) => hub.publish(Frame {
            snapshot,
            update,
            charts: city.charts.clone(),
        }),
        Err(error) => {
            tracing::error!(%error, "could not encode a dashboard update; viewers miss this change")
        }
    }
}
