//! The hot store: recent rows of every table in memory, in event-time buckets.
//!
//! Buckets are as wide as the metric window, so one window's rows are one bucket. The store keeps
//! `hot_retention` of event time behind the newest bucket and evicts the oldest buckets when it
//! grows past its memory limit.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arrow::array::{Array, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use polis_telemetry::schema;

struct Table {
    schema: SchemaRef,
    time_column: usize,
    buckets: BTreeMap<i64, Vec<RecordBatch>>,
}

/// Recent rows of every SQL table.
pub struct HotStore {
    bucket_ms: i64,
    retention_ms: i64,
    memory_limit: usize,
    memory_used: AtomicUsize,
    evicted_rows: AtomicU64,
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
            tables,
        }
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

    /// Adds rows, each to the bucket of its event time.
    pub fn insert(&self, table: &str, batch: RecordBatch) -> Result<(), ArrowError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let mut t = self.table(table).write().expect("store lock");
        let mut rows_by_bucket: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (row, ms) in event_times(&batch, t.time_column).enumerate() {
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
            t.buckets.entry(bucket).or_default().push(part);
        }
        let newest = *t.buckets.keys().next_back().expect("just inserted");
        while t.buckets.len() > 1 {
            let oldest = *t.buckets.keys().next().expect("non-empty");
            let over_memory = self.memory_used.load(Ordering::Relaxed) > self.memory_limit;
            if oldest >= newest - self.retention_ms && !over_memory {
                break;
            }
            let evicted = t.buckets.remove(&oldest).expect("present");
            let (rows, bytes) = evicted.iter().fold((0, 0), |(r, b), x| {
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
        Ok(())
    }

    /// Every row of `table`.
    pub fn snapshot(&self, table: &str) -> Vec<RecordBatch> {
        self.table(table)
            .read()
            .expect("store lock")
            .buckets
            .values()
            .flatten()
            .cloned()
            .collect()
    }

    /// The rows of `table` whose event time is in `[start_ms, end_ms)`; both must be bucket bounds.
    pub fn range(&self, table: &str, start_ms: i64, end_ms: i64) -> Vec<RecordBatch> {
        self.table(table)
            .read()
            .expect("store lock")
            .buckets
            .range(start_ms..end_ms)
            .flat_map(|(_, b)| b.iter().cloned())
            .collect()
    }

    /// Rows dropped by retention or the memory limit so far.
    pub fn evicted_rows(&self) -> u64 {
        self.evicted_rows.load(Ordering::Relaxed)
    }
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
