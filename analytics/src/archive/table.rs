//! One SQL table: the union of its hot rows and its archived files, pruned by event time.
//!
//! Filters on the table's event-time column bound the scan ([`time_bounds`]): only the hot
//! buckets and archived hours that can hold a matching row are read, the rest never opened.
//! Every filter is also handed to the Parquet reader for row-group pruning; DataFusion still
//! applies all of them to the rows (`Inexact`), so the pruning only ever skips non-matching data.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::{DFSchema, ScalarValue, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{
    FileGroup, FileGroupPartitioner, FileScanConfigBuilder, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
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
        if files.is_empty() {
            return Ok(hot);
        }
        let mut source = ParquetSource::new(self.schema.clone());
        if let Some(predicate) = conjunction(filters.iter().cloned()) {
            let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
            source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
        }
        let mut scanned = Vec::with_capacity(files.len());
        for file in &files {
            let location = StorePath::from_absolute_path(&file.path)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let mut partitioned = PartitionedFile::new(location.to_string(), file.size);
            partitioned.object_meta.location = location;
            scanned.push(partitioned);
        }
        let groups = spread(scanned, target, state);
        let archived =
            FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
                .with_file_groups(groups)
                .with_statistics(archived_statistics(&self.schema, &files))
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
        UnionExec::try_new(vec![hot, DataSourceExec::from_data_source(archived)])
    }
}

/// `files` in `target` groups of about equal bytes, big files split by byte range (each part
/// reads the row groups that start in it), so one large hour is scanned on every query thread;
/// files too small to be worth splitting are dealt round the groups whole.
fn spread(files: Vec<PartitionedFile>, target: usize, state: &dyn Session) -> Vec<FileGroup> {
    let min_size = state.config().options().optimizer.repartition_file_min_size;
    let all = FileGroup::new(files);
    FileGroupPartitioner::new()
        .with_target_partitions(target)
        .with_repartition_file_min_size(min_size)
        .repartition_file_groups(std::slice::from_ref(&all))
        .unwrap_or_else(|| all.split_files(target))
}

/// What the archive knows exactly of `files` without opening them: how many rows they hold,
/// from their footers, so `count(*)` over the table is answered without a scan.
fn archived_statistics(schema: &SchemaRef, files: &[Arc<ArchivedFile>]) -> Statistics {
    let mut statistics = Statistics::new_unknown(schema);
    statistics.num_rows = Precision::Exact(files.iter().map(|f| f.rows as usize).sum());
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
    use datafusion::prelude::{col, lit};

    use super::*;

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
