//! The archive: hot rows older than `analytics.hot_retention` rolled into Parquet files.
//!
//! Files live under `{archive_dir}/{table}/date=YYYY-MM-DD/hour=HH/`, one folder per hour of
//! event time, named `{first_offset}-{last_offset}.parquet` after the log offsets they hold.
//! Each file's footer records exactly which `{partition: offset ranges}` it holds
//! ([`Offsets`]), so after a restart the log is replayed into the hot store without the rows the
//! archive already has. The [`roll`] task writes the files, merges the many small files of an
//! hour (compaction) and deletes hours past `analytics.archive_retention`; [`table`] serves
//! each SQL table as the union of its hot rows and the files of the hours a query can match.

mod disk;
pub(crate) mod roll;
pub(crate) mod table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use chrono::{DateTime, Timelike};
use polis_telemetry::schema;
use serde::{Deserialize, Serialize};

use crate::config::AnalyticsConfig;
use crate::error::ArchiveError;
use crate::store::HotStore;

/// Finds the archive at `root` (creating it) and lists its files in `store`, before any row is
/// inserted, so replaying the log leaves out what the archive holds; returns the task that
/// keeps it.
pub(crate) fn open(
    root: &Path,
    store: Arc<HotStore>,
    config: &AnalyticsConfig,
) -> Result<roll::Archiver, ArchiveError> {
    std::fs::create_dir_all(root).map_err(|e| ArchiveError::io(root, e))?;
    // Queries name files by absolute path, whatever folder Polis was started in.
    let root = root.canonicalize().map_err(|e| ArchiveError::io(root, e))?;
    let tables: Vec<&'static str> = store.table_names().collect();
    for table in tables {
        let expired_before = disk::expired_before(&root, table)?;
        let files = disk::open(&root, table, expired_before)?;
        if !files.is_empty() {
            tracing::info!(table, files = files.len(), "found archived hours");
        }
        store.load_archived(table, files, expired_before);
    }
    Ok(roll::Archiver {
        root,
        store,
        compact_after: config.archive_compact_after,
        hot_retention_ms: config.hot_retention.as_millis() as i64,
        grace: config.query_timeout,
    })
}

/// An hour in milliseconds: the width of an archive folder.
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// The start of the hour `ms` falls in.
pub(crate) fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// The folder of one hour of a table, relative to the archive: `{table}/date=…/hour=…`.
pub(crate) fn hour_folder(table: &str, hour_ms: i64) -> PathBuf {
    let at = DateTime::from_timestamp_millis(hour_ms).unwrap_or_default();
    PathBuf::from(table)
        .join(format!("date={}", at.format("%Y-%m-%d")))
        .join(format!("hour={:02}", at.hour()))
}

/// Log positions held by one file: sorted, disjoint, inclusive offset ranges per partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Offsets(BTreeMap<i32, Vec<(i64, i64)>>);

impl Offsets {
    /// The positions of `batches`' rows, from their `_partition` and `_offset` columns.
    pub fn of(batches: &[RecordBatch]) -> Offsets {
        let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for batch in batches {
            let (Some(partitions), Some(offsets)) = (
                batch.column_by_name(schema::PARTITION_COLUMN),
                batch.column_by_name(schema::OFFSET_COLUMN),
            ) else {
                continue;
            };
            let partitions = partitions.as_primitive::<Int32Type>();
            let offsets = offsets.as_primitive::<Int64Type>();
            for (p, o) in partitions.values().iter().zip(offsets.values().iter()) {
                by_partition.entry(*p).or_default().push(*o);
            }
        }
        Offsets(
            by_partition
                .into_iter()
                .map(|(p, mut offsets)| {
                    offsets.sort_unstable();
                    let mut ranges: Vec<(i64, i64)> = Vec::new();
                    for o in offsets {
                        match ranges.last_mut() {
                            Some((_, end)) if o <= *end + 1 => *end = (*end).max(o),
                            _ => ranges.push((o, o)),
                        }
                    }
                    (p, ranges)
                })
                .collect(),
        )
    }

    /// Whether the record at `offset` of `partition` is held.
    pub fn contains(&self, partition: i32, offset: i64) -> bool {
        self.0.get(&partition).is_some_and(|ranges| {
            let i = ranges.partition_point(|(_, end)| *end < offset);
            ranges.get(i).is_some_and(|(start, _)| *start <= offset)
        })
    }

    /// The lowest and highest offset held, over every partition.
    pub fn bounds(&self) -> Option<(i64, i64)> {
        let first = self
            .0
            .values()
            .filter_map(|r| r.first())
            .map(|r| r.0)
            .min()?;
        let last = self
            .0
            .values()
            .filter_map(|r| r.last())
            .map(|r| r.1)
            .max()?;
        Some((first, last))
    }
}

/// One Parquet file of the archive.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ArchivedFile {
    pub path: PathBuf,
    /// The start of its hour of event time.
    pub hour_ms: i64,
    pub size: u64,
    /// Its row groups, in file order.
    pub row_groups: Vec<RowGroupSpan>,
    /// The highest event time among its rows.
    pub newest_ms: i64,
    pub offsets: Offsets,
    /// The names of the files this compacted file replaces.
    pub replaces: Vec<String>,
}

impl ArchivedFile {
    /// How many rows it holds.
    pub fn rows(&self) -> u64 {
        self.row_groups.iter().map(|g| g.rows).sum()
    }
}

/// One row group of an archived file, as its footer describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RowGroupSpan {
    pub rows: u64,
    /// The lowest and highest event time (ms) among its rows, where the footer has them.
    pub event_time_ms: Option<(i64, i64)>,
}

impl RowGroupSpan {
    /// Whether a row with an event time within the inclusive `bounds` can be in it.
    pub fn can_hold(&self, (from, to): (Option<i64>, Option<i64>)) -> bool {
        self.event_time_ms.is_none_or(|(lowest, highest)| {
            from.is_none_or(|from| highest >= from) && to.is_none_or(|to| lowest <= to)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::traffic_batch;

    #[test]
    fn offsets_merge_into_ranges_and_answer_membership() {
        let rows: Vec<(i64, i64)> = (0..8).map(|i| (0, i)).collect();
        let some = arrow::compute::take_record_batch(
            &traffic_batch(&rows),
            &arrow::array::UInt32Array::from(vec![7, 1, 2, 3, 5]),
        )
        .unwrap();
        let offsets = Offsets::of(&[some]);
        let (first, last) = offsets.bounds().unwrap();
        assert_eq!((first, last), (1, 7));
        let held: Vec<i64> = (0..9).filter(|o| offsets.contains(3, *o)).collect();
        assert_eq!(held, vec![1, 2, 3, 5, 7]);
        assert!(!offsets.contains(0, 1));
    }

    #[test]
    fn hour_folders_are_named_by_utc_date_and_hour() {
        let ms = DateTime::parse_from_rfc3339("2026-03-04T05:59:59.999Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(
            hour_folder("traffic", hour_of(ms)),
            PathBuf::from("traffic/date=2026-03-04/hour=05")
        );
    }
}
