//! The JSON messages viewers receive over the WebSocket, each serialized once for all viewers.
//!
//! ```text
//! {"type": "snapshot",
//!  "metrics": [MetricRecord, …],        the last windows of every (metric, entity)
//!  "charts": {"traffic": "<svg…", "energy": "<svg…", "transport": "<svg…"},
//!  "latest_window_end": "2024-05-01T12:00:10Z"}   (null before the first record)
//! {"type": "update",
//!  "metrics": [MetricRecord, …],        the records this batch stored
//!  "charts": {…}, "latest_window_end": "…"}
//! ```

use std::sync::Arc;

use chrono::{DateTime, Utc};
use polis_telemetry::MetricRecord;
use serde::Serialize;

use crate::charts::Charts;
use crate::state::MetricHistory;

/// Windows per series a snapshot carries: enough for the page to tell the latest complete window
/// from one still arriving, and to show the latest values. Older windows are in the charts.
pub(crate) const SNAPSHOT_WINDOWS_PER_SERIES: usize = 6;

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ViewerMessage<'a> {
    Snapshot {
        metrics: Vec<&'a MetricRecord>,
        charts: ChartMarkup<'a>,
        latest_window_end: Option<DateTime<Utc>>,
    },
    Update {
        metrics: &'a [MetricRecord],
        charts: ChartMarkup<'a>,
        latest_window_end: Option<DateTime<Utc>>,
    },
}

#[derive(Serialize)]
struct ChartMarkup<'a> {
    traffic: &'a str,
    energy: &'a str,
    transport: &'a str,
}

impl<'a> From<&'a Charts> for ChartMarkup<'a> {
    fn from(charts: &'a Charts) -> Self {
        ChartMarkup {
            traffic: &charts.traffic,
            energy: &charts.energy,
            transport: &charts.transport,
        }
    }
}

/// The whole state: the recent windows of every series, the charts and the newest window end.
pub(crate) fn snapshot(
    history: &MetricHistory,
    charts: &Charts,
) -> Result<Arc<str>, serde_json::Error> {
    encode(&ViewerMessage::Snapshot {
        metrics: history.recent(SNAPSHOT_WINDOWS_PER_SERIES),
        charts: charts.into(),
        latest_window_end: history.newest_window_end(),
    })
}

/// A change: the records just stored and the charts redrawn with them.
pub(crate) fn update(
    records: &[MetricRecord],
    history: &MetricHistory,
    charts: &Charts,
) -> Result<Arc<str>, serde_json::Error> {
    encode(&ViewerMessage::Update {
        metrics: records,
        charts: charts.into(),
        latest_window_end: history.newest_window_end(),
    })
}

fn encode(message: &ViewerMessage<'_>) -> Result<Arc<str>, serde_json::Error> {
    serde_json::to_string(message).map(Arc::from)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Value;

    use super::*;

    #[test]
    fn an_empty_snapshot_has_every_field_the_page_reads() {
        let history = MetricHistory::new(Duration::from_secs(60));
        let charts = Charts::render(&history);
        let message: Value = serde_json::from_str(&snapshot(&history, &charts).unwrap()).unwrap();
        assert_eq!(message["type"], "snapshot");
        assert_eq!(message["metrics"], Value::Array(Vec::new()));
        assert_eq!(message["latest_window_end"], Value::Null);
        for domain in ["traffic", "energy", "transport"] {
            assert!(
                message["charts"][domain]
                    .as_str()
                    .unwrap()
                    .starts_with("<svg")
            );
        }
    }

    #[test]
    fn an_update_carries_the_records_it_was_given() {
        let mut history = MetricHistory::new(Duration::from_secs(60));
        let start = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let record = MetricRecord {
            metric: "energy.load_kw".to_string(),
            entity_kind: "district".to_string(),
            entity: "port".to_string(),
            window_start: start,
            window_end: start + chrono::TimeDelta::seconds(10),
            value: 1234.5,
            revision: 1,
            emitted_at: start + chrono::TimeDelta::seconds(11),
        };
        history.apply(record.clone());
        let charts = Charts::render(&history);
        let message: Value = serde_json::from_str(
            &update(std::slice::from_ref(&record), &history, &charts).unwrap(),
        )
        .unwrap();
        assert_eq!(message["type"], "update");
        let metrics: Vec<MetricRecord> =
            serde_json::from_value(message["metrics"].clone()).unwrap();
        assert_eq!(metrics, vec![record.clone()]);
        assert_eq!(
            message["latest_window_end"],
            serde_json::to_value(record.window_end).unwrap()
        );
    }
}
