//! The hot store: recent rows of every table in memory, in event-time buckets.
//!
//! Buckets are as wide as the metric window, so one window's rows are one bucket. Without an
//! archive the store keeps `hot_retention` of event time behind the newest bucket and evicts the
//! oldest buckets when it grows past its memory limit. With one ([`HotStore::with_archive`]) the
//! archiver rolls whole hours out instead ([`HotStore::due`], [`HotStore::commit_roll`]): the
//! store also holds each table's list of archived files, under the same lock as its buckets, so a
//! query ([`HotStore::scan`]) sees every row exactly once, hot or archived. Rows an archived file
//! already holds, or of an hour past the archive's retention, are not taken in again when the log
//! is replayed after a restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arrow::array::{
    Array, AsArray, BooleanArray, RecordBatch, TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::{filter_record_batch, take_record_batch};
use arrow::datatypes::{Int32Type, Int64Type, SchemaRef};
use arrow::error::ArrowError;
use polis_telemetry::schema;
use tokio::sync::Notify;

use crate::archive::{ArchivedFile, HOUR_MS, hour_of};

/// An archived hour (its start in milliseconds) and its files.
pub(crate) type ArchivedHour = (i64, Vec<Arc<ArchivedFile>>);

struct Table {
    schema: SchemaRef,
    time_column: usize,
    /// Each bucket's batches, tagged with the store-wide sequence number of their insertion.
    buckets: BTreeMap<i64, Vec<(u64, RecordBatch)>>,
    /// The highest event time ever inserted or archived.
    newest_ms: Option<i64>,
    /// Archived files by the start of their hour.
    archived: BTreeMap<i64, Vec<Arc<ArchivedFile>>>,
    /// The hour before which retention deleted every row.
    expired_before: Option<i64>,
}

/// How the store hands old rows to the archive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ArchivePolicy {
    /// Event time behind the newest row after which whole hours are dropped altogether.
    pub retention_ms: i64,
}

/// An hour of one table's hot rows on its way to the archive.
pub(crate) struct Roll {
    pub hour_ms: i64,
    pub batches: Vec<RecordBatch>,
    /// The highest sequence number among `batches`: later insertions stay hot.
    last_seq: u64,
}

/// Recent rows of every SQL table.
pub struct HotStore {
    bucket_ms: i64,
    retention_ms: i64,
    memory_limit: usize,
    memory_used: AtomicUsize,
    evicted_rows: AtomicU64,
    next_seq: AtomicU64,
    archive: Option<ArchivePolicy>,
    /// Woken when an hour is due for the archive.
    due: Notify,
    tables: HashMap<&'static str, RwLock<Table>>,
}

impl HotStore {
    /// A store with buckets `bucket` wide, keeping `retention` of event time within `memory_limit` bytes.
    pub fn new(bucket: Duration, retention: Duration, memory_limit: usize) -> HotStore {
        let tables = schema::TABLES
            .iter()
            .map(|(name, _)| {
                let schema = schema::table_schema(name).expect("every listed table has a schema");
                let time_column = schema
                    .index_of(schema::event_time_column(name))
                    .expect("event time column exists");
                (
                    *name,
                    RwLock::new(Table {
                        schema,
                        time_column,
                        buckets: BTreeMap::new(),
                        newest_ms: None,
                        archived: BTreeMap::new(),
                        expired_before: None,
                    }),
                )
            })
            .collect();
        HotStore {
            bucket_ms: bucket.as_millis() as i64,
            retention_ms: retention.as_millis() as i64,
            memory_limit,
            memory_used: AtomicUsize::new(0),
            evicted_rows: AtomicU64::new(0),
            next_seq: AtomicU64::new(0),
            archive: None,
            due: Notify::new(),
            tables,
        }
    }

    /// The same store, its old rows rolled into an archive rather than evicted.
    pub(crate) fn with_archive(mut self, policy: ArchivePolicy) -> HotStore {
        self.archive = Some(policy);
        self
    }

    fn table(&self, name: &str) -> &RwLock<Table> {
        self.tables
            .get(name)
            .unwrap_or_else(|| panic!("`{name}` is not a hot store table"))
    }

    /// The names of the tables, as SQL sees them.
    pub fn table_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.tables.keys().copied()
    }

    pub fn schema(&self, table: &str) -> SchemaRef {
        self.table(table).read().expect("store lock").schema.clone()
    }

    /// Adds rows, each to the bucket of its event time; with an archive, rows it already holds
    /// or of an hour past its retention are left out.
    pub fn insert(&self, table: &str, batch: RecordBatch) -> Result<(), ArrowError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let mut t = self.table(table).write().expect("store lock");
        let batch = match self.archive {
            Some(policy) => {
                let batch = not_archived(&t, &batch, policy)?;
                if batch.num_rows() == 0 {
                    return Ok(());
                }
                batch
            }
            None => batch,
        };
        let mut rows_by_bucket: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (row, ms) in event_times(&batch, t.time_column).enumerate() {
            t.newest_ms = Some(t.newest_ms.map_or(ms, |n| n.max(ms)));
            rows_by_bucket
                .entry(ms.div_euclid(self.bucket_ms) * self.bucket_ms)
                .or_default()
                .push(row as u32);
        }
        let single = rows_by_bucket.len() == 1;
        for (bucket, rows) in rows_by_bucket {
            let part = if single {
                batch.clone()
            } else {
                take_record_batch(&batch, &UInt32Array::from(rows))?
            };
            self.memory_used
                .fetch_add(part.get_array_memory_size(), Ordering::Relaxed);
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            t.buckets.entry(bucket).or_default().push((seq, part));
        }
        if self.archive.is_some() {
            if self.roll_due(&t).is_some() {
                self.due.notify_one();
            }
            self.evict(table, &mut t, |_, _| false);
        } else {
            let newest = *t.buckets.keys().next_back().expect("just inserted");
            let retention_ms = self.retention_ms;
            self.evict(table, &mut t, |oldest, _| oldest < newest - retention_ms);
        }
        Ok(())
    }

    /// Drops the oldest buckets while `expired` says so or the store is over its memory limit.
    fn evict(&self, table: &str, t: &mut Table, expired: impl Fn(i64, &Table) -> bool) {
        while t.buckets.len() > 1 {
            let oldest = *t.buckets.keys().next().expect("non-empty");
            let over_memory = self.memory_used.load(Ordering::Relaxed) > self.memory_limit;
            if !expired(oldest, t) && !over_memory {
                break;
            }
            let evicted = t.buckets.remove(&oldest).expect("present");
            let (rows, bytes) = evicted.iter().fold((0, 0), |(r, b), (_, x)| {
                (r + x.num_rows(), b + x.get_array_memory_size())
            });
            self.memory_used.fetch_sub(bytes, Ordering::Relaxed);
            self.evicted_rows.fetch_add(rows as u64, Ordering::Relaxed);
            if over_memory {
                tracing::warn!(
                    table,
                    rows,
                    "hot store over analytics.hot_memory: evicted the oldest bucket"
                );
            }
        }
    }

    /// The hour of `t` the archive should take now: the oldest, once all of it is
    /// `hot_retention` behind the newest row, or whatever its age when the store is past three
    /// quarters of its memory limit.
    fn roll_due(&self, t: &Table) -> Option<i64> {
        let oldest = *t.buckets.keys().next()?;
        let hour = hour_of(oldest);
        let newest = t.newest_ms?;
        let aged = hour + HOUR_MS <= newest - self.retention_ms;
        let crowded = self.memory_used.load(Ordering::Relaxed) > self.memory_limit / 4 * 3;
        (aged || crowded).then_some(hour)
    }

    /// Waits until some hour may be due for the archive.
    pub(crate) async fn wait_due(&self) {
        self.due.notified().await
    }

    /// The rows of the hour of `table` due for the archive, if one is.
    pub(crate) fn due(&self, table: &str) -> Option<Roll> {
        let t = self.table(table).read().expect("store lock");
        let hour_ms = self.roll_due(&t)?;
        let mut batches = Vec::new();
        let mut last_seq = 0;
        for (seq, batch) in t
            .buckets
            .range(hour_ms..hour_ms + HOUR_MS)
            .flat_map(|(_, b)| b)
        {
            last_seq = last_seq.max(*seq);
            batches.push(batch.clone());
        }
        Some(Roll {
            hour_ms,
            batches,
            last_seq,
        })
    }

    /// Swaps the rows of `roll` for `file`, which now holds them durably, in one step.
    pub(crate) fn commit_roll(&self, table: &str, roll: &Roll, file: Arc<ArchivedFile>) {
        let mut t = self.table(table).write().expect("store lock");
        let mut freed = 0;
        let hour = roll.hour_ms..roll.hour_ms + HOUR_MS;
        let buckets: Vec<i64> = t.buckets.range(hour).map(|(b, _)| *b).collect();
        for bucket in buckets {
            let batches = t.buckets.get_mut(&bucket).expect("listed");
            batches.retain(|(seq, batch)| {
                let rolled = *seq <= roll.last_seq;
                if rolled {
                    freed += batch.get_array_memory_size();
                }
                !rolled
            });
            if batches.is_empty() {
                t.buckets.remove(&bucket);
            }
        }
        self.memory_used.fetch_sub(freed, Ordering::Relaxed);
        t.archived.entry(roll.hour_ms).or_default().push(file);
    }

    /// Adds files found in the archive at start, and the hour before which it deleted
    /// everything, before any row is inserted.
    pub(crate) fn load_archived(
        &self,
        table: &str,
        files: Vec<ArchivedFile>,
        expired_before: Option<i64>,
    ) {
        let mut t = self.table(table).write().expect("store lock");
        t.expired_before = expired_before;
        for file in files {
            t.newest_ms = Some(
                t.newest_ms
                    .map_or(file.newest_ms, |n| n.max(file.newest_ms)),
            );
            t.archived
                .entry(file.hour_ms)
                .or_default()
                .push(Arc::new(file));
        }
    }

    /// The hour before which rows of `table` are past retention, if it moved since the last
    /// [`HotStore::expire`].
    pub(crate) fn expiry_due(&self, table: &str) -> Option<i64> {
        let policy = self.archive?;
        let t = self.table(table).read().expect("store lock");
        let before = hour_of(t.newest_ms? - policy.retention_ms);
        t.expired_before
            .is_none_or(|b| b < before)
            .then_some(before)
    }

    /// Drops every row of `table` of an hour before `before_ms`, hot or archived, and keeps out
    /// any that arrives later; returns the archived files it held.
    pub(crate) fn expire(&self, table: &str, before_ms: i64) -> Vec<Arc<ArchivedFile>> {
        let mut t = self.table(table).write().expect("store lock");
        t.expired_before = Some(t.expired_before.map_or(before_ms, |b| b.max(before_ms)));
        let kept_hot = t.buckets.split_off(&before_ms);
        let dropped = std::mem::replace(&mut t.buckets, kept_hot);
        let (rows, bytes) = dropped.values().flatten().fold((0, 0), |(r, b), (_, x)| {
            (r + x.num_rows(), b + x.get_array_memory_size())
        });
        self.memory_used.fetch_sub(bytes, Ordering::Relaxed);
        self.evicted_rows.fetch_add(rows as u64, Ordering::Relaxed);
        let kept = t.archived.split_off(&before_ms);
        std::mem::replace(&mut t.archived, kept)
            .into_values()
            .flatten()
            .collect()
    }

    /// Every archived hour of `table` with its files, oldest first, and the newest event time.
    pub(crate) fn archived(&self, table: &str) -> (Vec<ArchivedHour>, Option<i64>) {
        let t = self.table(table).read().expect("store lock");
        let hours = t.archived.iter().map(|(h, f)| (*h, f.clone())).collect();
        (hours, t.newest_ms)
    }

    /// Replaces archived files `old` of the hour `hour_ms` with `new` (none: the hour is gone).
    pub(crate) fn replace_archived(
        &self,
        table: &str,
        hour_ms: i64,
        old: &[Arc<ArchivedFile>],
        new: Option<Arc<ArchivedFile>>,
    ) {
        let mut t = self.table(table).write().expect("store lock");
        let files = t.archived.entry(hour_ms).or_default();
        files.retain(|f| !old.iter().any(|o| Arc::ptr_eq(o, f)));
        files.extend(new);
        if files.is_empty() {
            t.archived.remove(&hour_ms);
        }
    }

    /// The hot rows and archived files of `table` that may hold event times in
    /// `[from_ms, to_ms]` (unbounded where `None`), as one consistent view.
    pub(crate) fn scan(
        &self,
        table: &str,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> (Vec<RecordBatch>, Vec<Arc<ArchivedFile>>) {
        let t = self.table(table).read().expect("store lock");
        let overlaps = |start: i64, width: i64| {
            from_ms.is_none_or(|from| start + width > from) && to_ms.is_none_or(|to| start <= to)
        };
        let hot = t
            .buckets
            .iter()
            .filter(|(b, _)| overlaps(**b, self.bucket_ms))
            .flat_map(|(_, b)| b.iter().map(|(_, batch)| batch.clone()))
            .collect();
        let archived = t
            .archived
            .iter()
            .filter(|(h, _)| overlaps(**h, HOUR_MS))
            .flat_map(|(_, files)| files.iter().cloned())
            .collect();
        (hot, archived)
    }

    /// Every hot row of `table`.
    pub fn snapshot(&self, table: &str) -> Vec<RecordBatch> {
        self.scan(table, None, None).0
    }

    /// The rows of `table` whose event time is in `[start_ms, end_ms)`; both must be bucket bounds.
    pub fn range(&self, table: &str, start_ms: i64, end_ms: i64) -> Vec<RecordBatch> {
        self.table(table)
            .read()
            .expect("store lock")
            .buckets
            .range(start_ms..end_ms)
            .flat_map(|(_, b)| b.iter().map(|(_, batch)| batch.clone()))
            .collect()
    }

    /// Rows dropped by retention or the memory limit so far.
    pub fn evicted_rows(&self) -> u64 {
        self.evicted_rows.load(Ordering::Relaxed)
    }
}

/// The rows of `batch` that no archived file of `t` holds and whose hour is within `policy`'s
/// retention.
fn not_archived(
    t: &Table,
    batch: &RecordBatch,
    policy: ArchivePolicy,
) -> Result<RecordBatch, ArrowError> {
    // Hours before this are past retention, as [`HotStore::expire`] counts them.
    let cutoff = t
        .newest_ms
        .map(|n| hour_of(n - policy.retention_ms))
        .max(t.expired_before);
    if t.archived.is_empty() && cutoff.is_none() {
        return Ok(batch.clone());
    }
    let column = |name| {
        batch
            .column_by_name(name)
            .ok_or_else(|| ArrowError::SchemaError(format!("no `{name}` column")))
    };
    let partitions = column(schema::PARTITION_COLUMN)?
        .as_primitive::<Int32Type>()
        .clone();
    let offsets = column(schema::OFFSET_COLUMN)?
        .as_primitive::<Int64Type>()
        .clone();
    let keep: BooleanArray = event_times(batch, t.time_column)
        .enumerate()
        .map(|(row, ms)| {
            let expired = cutoff.is_some_and(|c| hour_of(ms) < c);
            let archived = t.archived.get(&hour_of(ms)).is_some_and(|files| {
                files.iter().any(|f| {
                    f.offsets
                        .contains(partitions.value(row), offsets.value(row))
                })
            });
            Some(!expired && !archived)
        })
        .collect();
    filter_record_batch(batch, &keep)
}

/// The event times (ms) of a batch's rows, from its timestamp column.
pub(crate) fn event_times(
    batch: &RecordBatch,
    time_column: usize,
) -> impl Iterator<Item = i64> + '_ {
    let times = batch
        .column(time_column)
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .expect("event time columns are millisecond timestamps");
    (0..times.len()).map(move |i| times.value(i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::traffic_batch;

    #[test]
    fn rows_land_in_the_bucket_of_their_event_time() {
        let store = HotStore::new(Duration::from_secs(10), Duration::from_secs(3600), 1 << 30);
        store
            .insert(
                "traffic",
                traffic_batch(&[(1_000, 1), (9_999, 2), (10_000, 3), (25_000, 4)]),
            )
            .unwrap();
        let rows = |s, e| {
            store
                .range("traffic", s, e)
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>()
        };
        assert_eq!(rows(0, 10_000), 2);
        assert_eq!(rows(10_000, 20_000), 1);
        assert_eq!(rows(20_000, 30_000), 1);
        assert_eq!(
            store
                .snapshot("traffic")
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>(),
            4
        );
    }

    #[test]
    fn retention_drops_old_buckets() {
        let store = HotStore::new(Duration::from_secs(10), Duration::from_secs(60), 1 << 30);
        store
            .insert("traffic", traffic_batch(&[(0, 1), (50_000, 2)]))
            .unwrap();
        store
            .insert("traffic", traffic_batch(&[(70_000, 3)]))
            .unwrap();
        assert_eq!(
            store
                .snapshot("traffic")
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>(),
            2
        );
        assert_eq!(store.evicted_rows(), 1);
    }
}
