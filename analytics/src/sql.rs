//! Read-only operator SQL over the hot store, with a time, memory and row limit per query.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytesize::ByteSize;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};

use crate::config::AnalyticsConfig;
use crate::error::SqlError;
use crate::store::HotStore;

/// Answers operators' queries. Cheap to clone.
#[derive(Clone)]
pub struct SqlService {
    store: Arc<HotStore>,
    timeout: Duration,
    memory: ByteSize,
    max_rows: usize,
}

/// A query's result.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl SqlService {
    pub fn new(store: Arc<HotStore>, config: &AnalyticsConfig) -> Self {
        SqlService {
            store,
            timeout: config.query_timeout,
            memory: config.query_memory,
            max_rows: config.max_result_rows,
        }
    }

    /// Runs one read-only statement over every table.
    pub async fn query(&self, sql: &str) -> Result<QueryResult, SqlError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(self.memory.as_u64() as usize, 1.0)
            .build_arc()
            .map_err(|e| SqlError::Internal(e.to_string()))?;
        let ctx = SessionContext::new_with_config_rt(
            SessionConfig::new().with_information_schema(true),
            runtime,
        );
        for table in self.store.table_names() {
            let provider =
                MemTable::try_new(self.store.schema(table), vec![self.store.snapshot(table)])
                    .map_err(|e| SqlError::Internal(e.to_string()))?;
            ctx.register_table(table, Arc::new(provider))
                .map_err(|e| SqlError::Internal(e.to_string()))?;
        }
        let read_only = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let run = async {
            let df = ctx.sql_with_options(sql, read_only).await?;
            let schema = df.schema().as_arrow().clone();
            let batches = df.limit(0, Some(self.max_rows + 1))?.collect().await?;
            Ok::<_, DataFusionError>(QueryResult {
                schema: Arc::new(schema),
                batches,
            })
        };
        let result = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| SqlError::Timeout(self.timeout))?
            .map_err(|e| self.classify(e))?;
        if result
            .batches
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>()
            > self.max_rows
        {
            return Err(SqlError::TooManyRows(self.max_rows));
        }
        Ok(result)
    }

    fn classify(&self, e: DataFusionError) -> SqlError {
        match e.find_root() {
            DataFusionError::ResourcesExhausted(msg) => SqlError::Memory(self.memory, msg.clone()),
            DataFusionError::Plan(msg) if msg.contains("not supported") => SqlError::Invalid(
                format!("{msg}; Polis SQL is read-only: use SELECT, WITH, SHOW or EXPLAIN"),
            ),
            DataFusionError::Internal(msg) => SqlError::Internal(msg.clone()),
            other => SqlError::Invalid(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::traffic_batch;

    fn service(config: AnalyticsConfig, rows: usize) -> SqlService {
        let store = Arc::new(HotStore::new(config.window, config.hot_retention, 1 << 30));
        let data: Vec<(i64, i64)> = (0..rows as i64).map(|i| (i * 10, i % 7)).collect();
        store.insert("traffic", traffic_batch(&data)).unwrap();
        SqlService::new(store, &config)
    }

    #[tokio::test]
    async fn answers_queries_over_the_hot_store() {
        let sql = service(AnalyticsConfig::default(), 100);
        let result = sql
            .query("SELECT count(*) AS n, sum(vehicles) AS v FROM traffic")
            .await
            .unwrap();
        let batch = &result.batches[0];
        let expected: i64 = (0..100).map(|i| i % 7).sum();
        let table = arrow::util::pretty::pretty_format_batches(std::slice::from_ref(batch))
            .unwrap()
            .to_string();
        assert_eq!(
            table.lines().nth(3).unwrap(),
            format!("| 100 | {expected} |")
        );
    }

    #[tokio::test]
    async fn writes_are_refused_with_a_clear_message() {
        let sql = service(AnalyticsConfig::default(), 1);
        for statement in [
            "CREATE TABLE x (a INT)",
            "INSERT INTO traffic SELECT * FROM traffic",
            "DROP TABLE traffic",
            "SET datafusion.execution.batch_size = 1",
        ] {
            let err = sql.query(statement).await.unwrap_err();
            assert!(matches!(err, SqlError::Invalid(_)), "{statement}: {err:?}");
            assert!(err.to_string().contains("read-only"), "{statement}: {err}");
        }
        let err = sql.query("SELECT nope FROM traffic").await.unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[tokio::test]
    async fn row_and_time_limits_cancel_a_query_while_others_still_run() {
        let config = AnalyticsConfig {
            max_result_rows: 10,
            query_timeout: Duration::from_millis(200),
            ..AnalyticsConfig::default()
        };
        let sql = service(config, 2_000);
        assert!(matches!(
            sql.query("SELECT * FROM traffic").await,
            Err(SqlError::TooManyRows(10))
        ));
        let slow = "SELECT count(*) FROM traffic a, traffic b, traffic c WHERE a.vehicles + b.vehicles + c.vehicles > 100";
        assert!(matches!(sql.query(slow).await, Err(SqlError::Timeout(_))));
        assert_eq!(
            sql.query("SELECT count(*) FROM traffic")
                .await
                .unwrap()
                .batches[0]
                .num_rows(),
            1
        );
    }
}
