//! The recent windows of every metric series, bounded in time, in windows and in series.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use polis_telemetry::MetricRecord;

/// Windows kept per series at most, whatever their length (half an hour of 1-second windows).
const MAX_WINDOWS_PER_SERIES: usize = 1800;
/// Series, i.e. distinct (metric, entity) pairs, kept at most; records that would start another
/// one are refused until old series expire.
const MAX_SERIES: usize = 10_000;

/// What [`MetricHistory::apply`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// A new window, or a higher revision of a stored one.
    Stored,
    /// The stored window already has this revision or a later one.
    Superseded,
    /// The window ended `history` or more before the newest window, or fell off a full series.
    Expired,
    /// The record would start a series beyond [`MAX_SERIES`].
    SeriesLimit,
}

/// One series: the windows of one metric for one entity, by window start.
type Windows = BTreeMap<DateTime<Utc>, MetricRecord>;

/// Per (metric, entity), the windows that ended within `history` of the newest window end, each
/// at its highest revision.
pub(crate) struct MetricHistory {
    span: TimeDelta,
    series: BTreeMap<(String, String), Windows>,
    newest_window_end: Option<DateTime<Utc>>,
}

impl MetricHistory {
    pub(crate) fn new(history: Duration) -> Self {
        MetricHistory {
            span: TimeDelta::from_std(history).unwrap_or(TimeDelta::MAX),
            series: BTreeMap::new(),
            newest_window_end: None,
        }
    }

    /// Keeps `record` unless a revision at least as high is stored for its window or its window
    /// is too old; a newer window end moves the horizon and forgets what fell behind it.
    pub(crate) fn apply(&mut self, record: MetricRecord) -> Applied {
        if self
            .cutoff()
            .is_some_and(|cutoff| record.window_end <= cutoff)
        {
            return Applied::Expired;
        }
        let key = (record.metric.clone(), record.entity.clone());
        if !self.series.contains_key(&key) && self.series.len() >= MAX_SERIES {
            return Applied::SeriesLimit;
        }
        let (window_start, window_end) = (record.window_start, record.window_end);
        let windows = self.series.entry(key).or_default();
        match windows.entry(window_start) {
            Entry::Occupied(stored) if stored.get().revision >= record.revision => {
                return Applied::Superseded;
            }
            Entry::Occupied(mut stored) => {
                stored.insert(record);
            }
            Entry::Vacant(slot) => {
                slot.insert(record);
            }
        }
        if windows.len() > MAX_WINDOWS_PER_SERIES
            && windows
                .pop_first()
                .is_some_and(|(dropped, _)| dropped == window_start)
        {
            return Applied::Expired;
        }
        if self
            .newest_window_end
            .is_none_or(|newest| window_end > newest)
        {
            self.newest_window_end = Some(window_end);
            self.forget_expired();
        }
        Applied::Stored
    }

    /// The end of the newest window seen, if any.
    pub(crate) fn newest_window_end(&self) -> Option<DateTime<Utc>> {
        self.newest_window_end
    }

    /// Each entity of `metric` with its windows, oldest first; entities in name order.
    pub(crate) fn series_of<'a>(
        &'a self,
        metric: &'a str,
    ) -> impl Iterator<Item = (&'a str, impl Iterator<Item = &'a MetricRecord>)> + 'a {
        self.series
            .range((metric.to_string(), String::new())..)
            .take_while(move |((m, _), _)| m == metric)
            .map(|((_, entity), windows)| (entity.as_str(), windows.values()))
    }

    /// The entities whose newest record of some series is of `entity_kind`, in name order.
    pub(crate) fn entities_of_kind(&self, entity_kind: &str) -> BTreeSet<&str> {
        self.series
            .iter()
            .filter(|(_, windows)| {
                windows
                    .values()
                    .next_back()
                    .is_some_and(|record| record.entity_kind == entity_kind)
            })
            .map(|((_, entity), _)| entity.as_str())
            .collect()
    }

    /// The newest window of `metric` for `entity`.
    pub(crate) fn latest(&self, metric: &str, entity: &str) -> Option<&MetricRecord> {
        self.series
            .get(&(metric.to_string(), entity.to_string()))?
            .values()
            .next_back()
    }

    /// The last `windows` windows of every series, by metric, entity and window.
    pub(crate) fn recent(&self, windows: usize) -> Vec<&MetricRecord> {
        self.series
            .values()
            .flat_map(|series| series.values().skip(series.len().saturating_sub(windows)))
            .collect()
    }

    /// Windows that end at or before this instant are forgotten.
    fn cutoff(&self) -> Option<DateTime<Utc>> {
        self.newest_window_end
            .and_then(|newest| newest.checked_sub_signed(self.span))
    }

    fn forget_expired(&mut self) {
        let Some(cutoff) = self.cutoff() else { return };
        for windows in self.series.values_mut() {
            windows.retain(|_, record| record.window_end > cutoff);
        }
        self.series.retain(|_, windows| !windows.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn record(metric: &str, entity: &str, window: i64, value: f64, revision: u32) -> MetricRecord {
        MetricRecord {
            metric: metric.to_string(),
            entity_kind: "district".to_string(),
            entity: entity.to_string(),
            window_start: at(window * 10),
            window_end: at(window * 10 + 10),
            value,
            revision,
            emitted_at: at(window * 10 + 12),
        }
    }

    fn values(history: &MetricHistory, metric: &str, entity: &str) -> Vec<(f64, u32)> {
        history
            .series_of(metric)
            .filter(|(e, _)| *e == entity)
            .flat_map(|(_, windows)| windows.map(|r| (r.value, r.revision)))
            .collect()
    }

    #[test]
    fn a_higher_revision_replaces_the_window_and_a_lower_one_does_not() {
        let mut history = MetricHistory::new(Duration::from_secs(1800));
        assert_eq!(
            history.apply(record("traffic.vehicles", "north", 0, 10.0, 0)),
            Applied::Stored
        );
        assert_eq!(
            history.apply(record("traffic.vehicles", "north", 0, 12.0, 2)),
            Applied::Stored
        );
        assert_eq!(
            history.apply(record("traffic.vehicles", "north", 0, 11.0, 1)),
            Applied::Superseded
        );
        assert_eq!(
            history.apply(record("traffic.vehicles", "north", 0, 13.0, 2)),
            Applied::Superseded
        );
        assert_eq!(
            values(&history, "traffic.vehicles", "north"),
            vec![(12.0, 2)]
        );
    }

    #[test]
    fn windows_older_than_the_history_are_forgotten_and_refused() {
        let mut history = MetricHistory::new(Duration::from_secs(60));
        for window in 0..10 {
            history.apply(record("energy.load_kw", "port", window, window as f64, 0));
        }
        // Newest window ends at 100 s; a 60 s history keeps the windows ending after 40 s.
        assert_eq!(history.newest_window_end(), Some(at(100)));
        assert_eq!(
            values(&history, "energy.load_kw", "port"),
            vec![(4.0, 0), (5.0, 0), (6.0, 0), (7.0, 0), (8.0, 0), (9.0, 0)]
        );
        assert_eq!(
            history.apply(record("energy.load_kw", "port", 3, 3.0, 5)),
            Applied::Expired
        );
        assert_eq!(
            history.apply(record("energy.load_kw", "old", 2, 1.0, 0)),
            Applied::Expired
        );
    }

    #[test]
    fn a_series_that_stops_reporting_disappears_with_its_last_window() {
        let mut history = MetricHistory::new(Duration::from_secs(30));
        history.apply(record("traffic.vehicles", "quiet", 0, 1.0, 0));
        for window in 0..10 {
            history.apply(record("traffic.vehicles", "busy", window, 2.0, 0));
        }
        let entities: Vec<&str> = history
            .series_of("traffic.vehicles")
            .map(|(entity, _)| entity)
            .collect();
        assert_eq!(entities, vec!["busy"]);
    }

    #[test]
    fn a_series_holds_at_most_its_window_limit() {
        let mut history = MetricHistory::new(Duration::from_secs(24 * 3600));
        let windows = MAX_WINDOWS_PER_SERIES as i64 + 5;
        for window in 0..windows {
            history.apply(record(
                "traffic.vehicles",
                "north",
                window,
                window as f64,
                0,
            ));
        }
        let kept = values(&history, "traffic.vehicles", "north");
        assert_eq!(kept.len(), MAX_WINDOWS_PER_SERIES);
        assert_eq!(kept[0].0, 5.0);
        assert_eq!(
            history.apply(record("traffic.vehicles", "north", 1, 1.0, 0)),
            Applied::Expired
        );
    }

    #[test]
    fn recent_gives_the_last_windows_of_every_series_in_order() {
        let mut history = MetricHistory::new(Duration::from_secs(1800));
        for window in 0..5 {
            history.apply(record(
                "traffic.vehicles",
                "north",
                window,
                window as f64,
                0,
            ));
            history.apply(record(
                "energy.load_kw",
                "south",
                window,
                100.0 + window as f64,
                0,
            ));
        }
        let recent: Vec<(&str, f64)> = history
            .recent(2)
            .into_iter()
            .map(|r| (r.metric.as_str(), r.value))
            .collect();
        assert_eq!(
            recent,
            vec![
                ("energy.load_kw", 103.0),
                ("energy.load_kw", 104.0),
                ("traffic.vehicles", 3.0),
                ("traffic.vehicles", 4.0)
            ]
        );
    }
}
