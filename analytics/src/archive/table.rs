//! One SQL table: the union of its hot rows and its archived files, pruned by event time.
//!
//! Filters on the table's event-time column bound the scan ([`time_bounds`]): only the hot
//! buckets, archived hours and row groups that can hold a matching row are read, the rest never
//! opened. DataFusion's filter pushdown hands every filter to the Parquet reader as well, for
//! row-group and page pruning by statistics, and still applies them all to the rows
//! (`Inexact`), so the pruning only ever skips non-matching data.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::{ScalarValue, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::ParquetAccessPlan;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::object_store::path::Path as StorePath;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use polis_telemetry::schema;

use crate::archive::ArchivedFile;
use crate::store::HotStore;

/// One table of the store, hot and archived; each scan reads the rows present when it is planned.
pub(crate) struct PolisTable {
    store: Arc<HotStore>,
    name: &'static str,
    schema: SchemaRef,
}

impl PolisTable {
    pub fn new(store: Arc<HotStore>, name: &'static str) -> PolisTable {
        PolisTable {
            schema: store.schema(name),
            store,
            name,
        }
    }
}

impl fmt::Debug for PolisTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolisTable")
            .field("name", &self.name)
            .finish()
    }
}

#[async_trait]
impl TableProvider for PolisTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>, DataFusionError> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let (from, to) = time_bounds(filters, schema::event_time_column(self.name));
        let (batches, files) = self.store.scan(self.name, from, to);
        let target = state.config().target_partitions().max(1);
        let parts = target.clamp(1, batches.len().max(1));
        let mut partitions = vec![Vec::new(); parts];
        for (i, batch) in batches.into_iter().enumerate() {
            partitions[i % parts].push(batch);
        }
        let hot =
            MemorySourceConfig::try_new(&partitions, self.schema.clone(), projection.cloned())?
                .with_limit(limit);
        let hot = DataSourceExec::from_data_source(hot);
        let (groups, rows) = schedule(&files, (from, to), target)?;
        if groups.is_empty() {
            return Ok(hot);
        }
        let source = ParquetSource::new(self.schema.clone());
        let statistics = archived_statistics(&self.schema, &files, rows, filters.is_empty());
        let archived =
            FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
                .with_file_groups(groups)
                .with_statistics(statistics)
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
        UnionExec::try_new(vec![hot, DataSourceExec::from_data_source(archived)])
    }
}

/// The row groups of `files` that can hold an event time within `bounds`, in at most `target`
/// groups of about equal rows, each a run of row groups in file order, so that even a short
/// time range inside one big file is read on every query thread; and how many rows they hold.
fn schedule(
    files: &[Arc<ArchivedFile>],
    bounds: (Option<i64>, Option<i64>),
    target: usize,
) -> Result<(Vec<FileGroup>, u64), DataFusionError> {
    let chosen: Vec<(usize, usize, u64)> = files
        .iter()
        .enumerate()
        .flat_map(|(f, file)| {
            let groups = file.row_groups.iter().enumerate();
            groups
                .filter(|(_, span)| span.rows > 0 && span.can_hold(bounds))
                .map(move |(g, span)| (f, g, span.rows))
        })
        .collect();
    let total: u64 = chosen.iter().map(|(_, _, rows)| rows).sum();
    let mut shares: Vec<Vec<(usize, usize)>> = vec![Vec::new(); target];
    let mut before = 0;
    for (f, g, rows) in chosen {
        // Each row group goes to the share its middle row falls in.
        let middle = before + rows / 2;
        shares[(middle * target as u64 / total.max(1)) as usize].push((f, g));
        before += rows;
    }
    let groups = shares
        .into_iter()
        .filter(|share| !share.is_empty())
        .map(|share| file_group(files, &share))
        .collect::<Result<_, _>>()?;
    Ok((groups, total))
}

/// One scan group reading the row groups `(file, group)` of `share`, in order: each file once,
/// told by an access plan which of its row groups to read.
fn file_group(
    files: &[Arc<ArchivedFile>],
    share: &[(usize, usize)],
) -> Result<FileGroup, DataFusionError> {
    let mut scanned = Vec::new();
    for run in share.chunk_by(|a, b| a.0 == b.0) {
        let file = &files[run[0].0];
        let mut plan = ParquetAccessPlan::new_none(file.row_groups.len());
        for (_, group) in run {
            plan.scan(*group);
        }
        let location = StorePath::from_absolute_path(&file.path)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let mut partitioned = PartitionedFile::new(location.to_string(), file.size);
        partitioned.object_meta.location = location;
        scanned.push(partitioned.with_extension(plan));
    }
    Ok(FileGroup::new(scanned))
}

/// What the archive knows of `files` without opening them: the `rows` of the row groups a
/// scan reads, from their footers, exact when no filter can drop any, so `count(*)` over the
/// table is answered without a scan.
fn archived_statistics(
    schema: &SchemaRef,
    files: &[Arc<ArchivedFile>],
    rows: u64,
    exact: bool,
) -> Statistics {
    let mut statistics = Statistics::new_unknown(schema);
    statistics.num_rows = if exact {
        Precision::Exact(rows as usize)
    } else {
        Precision::Inexact(rows as usize)
    };
    statistics.total_byte_size = Precision::Inexact(files.iter().map(|f| f.size as usize).sum());
    statistics
}

/// The inclusive event-time bounds (ms) `filters` put on `column`, where they put any.
pub(crate) fn time_bounds(filters: &[Expr], column: &str) -> (Option<i64>, Option<i64>) {
    let mut bounds = (None, None);
    for filter in filters {
        narrow(filter, column, &mut bounds);
    }
    bounds
}

fn narrow(expr: &Expr, column: &str, bounds: &mut (Option<i64>, Option<i64>)) {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            if *op == Operator::And {
                narrow(left, column, bounds);
                narrow(right, column, bounds);
                return;
            }
            let (op, value) = match (is_column(left, column), is_column(right, column)) {
                (true, false) => (*op, millis(right)),
                (false, true) => match op.swap() {
                    Some(op) => (op, millis(left)),
                    None => return,
                },
                _ => return,
            };
            let Some((floor, ceil)) = value else { return };
            match op {
                Operator::Gt | Operator::GtEq => at_least(bounds, floor),
                Operator::Lt | Operator::LtEq => at_most(bounds, ceil),
                Operator::Eq => {
                    at_least(bounds, floor);
                    at_most(bounds, ceil);
                }
                _ => {}
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_column(expr, column) => {
            if let Some((floor, _)) = millis(low) {
                at_least(bounds, floor);
            }
            if let Some((_, ceil)) = millis(high) {
                at_most(bounds, ceil);
            }
        }
        _ => {}
    }
}

fn at_least(bounds: &mut (Option<i64>, Option<i64>), ms: i64) {
    bounds.0 = Some(bounds.0.map_or(ms, |b| b.max(ms)));
}

fn at_most(bounds: &mut (Option<i64>, Option<i64>), ms: i64) {
    bounds.1 = Some(bounds.1.map_or(ms, |b| b.min(ms)));
}

fn is_column(expr: &Expr, column: &str) -> bool {
    matches!(expr, Expr::Column(c) if c.name == column)
}

/// A timestamp literal in milliseconds, rounded down and up.
fn millis(expr: &Expr) -> Option<(i64, i64)> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    let scaled = |v: i64, per_ms: i64| (v.div_euclid(per_ms), (v + per_ms - 1).div_euclid(per_ms));
    match value {
        ScalarValue::TimestampSecond(Some(s), _) => Some((s * 1000, s * 1000)),
        ScalarValue::TimestampMillisecond(Some(ms), _) => Some((*ms, *ms)),
        ScalarValue::TimestampMicrosecond(Some(us), _) => Some(scaled(*us, 1_000)),
        ScalarValue::TimestampNanosecond(Some(ns), _) => Some(scaled(*ns, 1_000_000)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use datafusion::prelude::{col, lit};

    use super::*;
    use crate::archive::{Offsets, RowGroupSpan};

    /// A file of row groups of `rows` rows each, the n-th holding event times [10n, 10n + 9].
    fn file(name: &str, groups: &[u64]) -> Arc<ArchivedFile> {
        let row_groups: Vec<RowGroupSpan> = (0..groups.len() as i64)
            .map(|n| RowGroupSpan {
                rows: groups[n as usize],
                event_time_ms: Some((10 * n, 10 * n + 9)),
            })
            .collect();
        Arc::new(ArchivedFile {
            path: PathBuf::from(format!("/archive/{name}.parquet")),
            hour_ms: 0,
            size: 1_000,
            row_groups,
            newest_ms: 10 * groups.len() as i64,
            offsets: Offsets::default(),
            replaces: Vec::new(),
        })
    }

    /// Each scan group as `(file name, row groups read)` per file it opens.
    fn read(groups: &[FileGroup]) -> Vec<Vec<(String, Vec<usize>)>> {
        groups
            .iter()
            .map(|group| {
                group
                    .iter()
                    .map(|f| {
                        let plan = f.extension::<ParquetAccessPlan>().expect("an access plan");
                        let name = f.object_meta.location.filename().unwrap_or_default();
                        (name.to_string(), plan.row_group_indexes())
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn only_row_groups_within_the_time_range_are_read_split_evenly_over_the_threads() {
        let files = [
            file("a", &[100, 100, 100, 100, 100]),
            file("b", &[100, 0, 100]),
        ];
        let (groups, rows) = schedule(&files, (Some(15), Some(41)), 2).unwrap();
        assert_eq!(rows, 500);
        let a = |groups: Vec<usize>| ("a.parquet".to_string(), groups);
        let b = |groups: Vec<usize>| ("b.parquet".to_string(), groups);
        assert_eq!(
            read(&groups),
            vec![vec![a(vec![1, 2])], vec![a(vec![3, 4]), b(vec![2])]]
        );
        let (groups, rows) = schedule(&files, (None, None), 2).unwrap();
        assert_eq!(rows, 700);
        assert_eq!(
            read(&groups),
            vec![vec![a(vec![0, 1, 2])], vec![a(vec![3, 4]), b(vec![0, 2])]]
        );
        let (groups, rows) = schedule(&files, (Some(1_000), None), 2).unwrap();
        assert_eq!((groups.len(), rows), (0, 0));
    }

    fn ts(ms: i64) -> Expr {
        lit(ScalarValue::TimestampMillisecond(
            Some(ms),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn bounds_come_from_comparisons_on_the_event_time_column_only() {
        let filters = [
            col("observed_at")
                .gt_eq(ts(1_000))
                .and(col("vehicles").gt(lit(3))),
            ts(5_000).gt(col("observed_at")),
            col("ingested_at").lt(ts(2_000)),
        ];
        assert_eq!(
            time_bounds(&filters, "observed_at"),
            (Some(1_000), Some(5_000))
        );
        let between = [col("observed_at").between(ts(10), ts(20))];
        assert_eq!(time_bounds(&between, "observed_at"), (Some(10), Some(20)));
        let either = [col("observed_at")
            .lt(ts(1))
            .or(col("observed_at").gt(ts(9)))];
        assert_eq!(time_bounds(&either, "observed_at"), (None, None));
    }
}
