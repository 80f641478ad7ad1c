//! Metric rows: one metric value for one entity over one event-time window.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A metric value computed by analytics, as stored on the `metrics` topic (JSON, keyed by
/// `{metric}/{entity}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRecord {
    /// Dotted name, `{domain}.{measure}`, e.g. `traffic.vehicles`.
    pub metric: String,
    /// What the metric is grouped by: `district`, `route` or `city`.
    pub entity_kind: String,
    /// The group, e.g. the district name.
    pub entity: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub value: f64,
    /// 0 for the first emission of a window; higher for corrections.
    pub revision: u32,
    pub emitted_at: DateTime<Utc>,
}

impl MetricRecord {
    /// The record key: every revision of one metric for one entity lands in one partition.
    pub fn key(&self) -> String {
        format!("{}/{}", self.metric, self.entity)
    }

    /// The domain part of the metric name (`traffic` for `traffic.vehicles`).
    pub fn domain(&self) -> &str {
        self.metric.split('.').next().unwrap_or(&self.metric)
    }
}
