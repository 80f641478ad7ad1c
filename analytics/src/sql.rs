//! Read-only operator SQL over every table, with a time, memory and row limit per query.
//!
//! Statements arrive as text (HTTP) or already parsed (the PostgreSQL listener, whose parser
//! understands Postgres-only syntax); both take the same path: refuse anything but a read,
//! plan, then run on the query runtime ([`crate::cpu`]) under the limits. The time limit stops
//! the running plan ([`crate::stop`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use bytesize::ByteSize;
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::collect;
use datafusion::prelude::{SQLOptions, SessionContext};
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast;
use tokio_util::sync::CancellationToken;

use crate::catalog;
use crate::config::AnalyticsConfig;
use crate::cpu::CpuRuntime;
use crate::error::{AnalyticsError, SqlError};
use crate::stop;
use crate::store::HotStore;

/// Answers operators' queries. Cheap to clone.
#[derive(Clone)]
pub struct SqlService {
    catalog: SessionContext,
    cpu: Arc<CpuRuntime>,
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

/// What a statement returns and the types of its parameters (`$1`, `$2`, …), known before it runs.
#[derive(Debug, Clone)]
pub(crate) struct Description {
    pub schema: SchemaRef,
    pub parameters: Vec<Option<DataType>>,
}

/// A statement as text or as parsed by a client protocol.
enum Input {
    Text(String),
    Parsed(Box<ast::Statement>),
}

impl SqlService {
    /// Starts the query runtime (`analytics.query_threads`) and builds the catalog.
    pub fn new(store: Arc<HotStore>, config: &AnalyticsConfig) -> Result<Self, AnalyticsError> {
        let cpu = CpuRuntime::new(config.query_threads).map_err(|source| {
            AnalyticsError::QueryRuntime {
                threads: config.query_threads,
                source,
            }
        })?;
        Ok(SqlService {
            catalog: catalog::context(store, config.query_threads)?,
            cpu: Arc::new(cpu),
            timeout: config.query_timeout,
            memory: config.query_memory,
            max_rows: config.max_result_rows,
        })
    }

    /// Runs one read-only statement over every table.
    pub async fn query(&self, sql: &str) -> Result<QueryResult, SqlError> {
        self.run(Input::Text(sql.to_string()), None).await
    }

    /// Runs one parsed read-only statement with values for its parameters.
    pub(crate) async fn query_parsed(
        &self,
        statement: ast::Statement,
        parameters: Option<ParamValues>,
    ) -> Result<QueryResult, SqlError> {
        self.run(Input::Parsed(Box::new(statement)), parameters)
            .await
    }

    /// Plans one parsed read-only statement without running it.
    pub(crate) async fn describe(
        &self,
        statement: ast::Statement,
    ) -> Result<Description, SqlError> {
        let this = self.clone();
        self.on_cpu(|_| async move {
            let (_, plan) = this.plan(Input::Parsed(Box::new(statement))).await?;
            let mut parameters: Vec<(usize, Option<DataType>)> = plan
                .get_parameter_types()
                .map_err(|e| this.classify(e))?
                .into_iter()
                .map(|(id, data_type)| (parameter_position(&id), data_type))
                .collect();
            parameters.sort_by_key(|(position, _)| *position);
            Ok(Description {
                schema: Arc::new(plan.schema().as_arrow().clone()),
                parameters: parameters.into_iter().map(|(_, t)| t).collect(),
            })
        })
        .await
    }

    async fn run(
        &self,
        input: Input,
        parameters: Option<ParamValues>,
    ) -> Result<QueryResult, SqlError> {
        let this = self.clone();
        let result = self
            .on_cpu(|stop| async move {
                let (ctx, plan) = this.plan(input).await?;
                let execute = async {
                    let mut df = ctx.execute_logical_plan(plan).await?;
                    if let Some(parameters) = parameters {
                        df = df.with_param_values(parameters)?;
                    }
                    let schema = Arc::new(df.schema().as_arrow().clone());
                    let explains = matches!(
                        df.logical_plan(),
                        LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)
                    );
                    if !explains {
                        df = df.limit(0, Some(this.max_rows + 1))?;
                    }
                    let task = Arc::new(df.task_ctx());
                    let plan = stop::stoppable(df.create_physical_plan().await?, &stop)?;
                    let batches = collect(plan, task).await?;
                    Ok::<_, DataFusionError>(QueryResult { schema, batches })
                };
                execute.await.map_err(|e| this.classify(e))
            })
            .await?;
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

    /// Runs `work` on the query runtime within the time limit. Past it, or when the caller
    /// goes away, the token given to `work` is cancelled and its task dropped, which ends the
    /// work at its next batch.
    async fn on_cpu<T, F, W>(&self, work: W) -> Result<T, SqlError>
    where
        W: FnOnce(CancellationToken) -> F,
        F: Future<Output = Result<T, SqlError>> + Send + 'static,
        T: Send + 'static,
    {
        let stop = CancellationToken::new();
        let task = self.cpu.spawn(work(stop.clone()));
        let _stop_on_return = stop.drop_guard();
        match tokio::time::timeout(self.timeout, task).await {
            Err(_) => Err(SqlError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(SqlError::Internal(format!("the query task failed: {e}"))),
            Ok(Ok(result)) => result,
        }
    }

    /// A session with this query's limits, and the statement's plan, if it only reads.
    async fn plan(&self, input: Input) -> Result<(SessionContext, LogicalPlan), SqlError> {
        let ctx = self
            .session()
            .map_err(|e| SqlError::Internal(e.to_string()))?;
        let state = ctx.state();
        let statement = match input {
            Input::Text(sql) => {
                let dialect = state.config().options().sql_parser.dialect;
                state
                    .sql_to_statement(&sql, &dialect)
                    .map_err(|e| self.classify(e))?
            }
            Input::Parsed(statement) => Statement::Statement(statement),
        };
        let command = command(&statement);
        if !reads_only(&statement) {
            return Err(SqlError::ReadOnly(command));
        }
        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(|e| self.classify(e))?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|_| SqlError::ReadOnly(command))?;
        Ok((ctx, plan))
    }

    /// The catalog with a memory pool of `analytics.query_memory` and no spilling to disk, so
    /// the limit holds.
    fn session(&self) -> Result<SessionContext, DataFusionError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(self.memory.as_u64() as usize, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        let state = SessionStateBuilder::new_from_existing(self.catalog.state())
            .with_runtime_env(runtime)
            .build();
        Ok(SessionContext::new_with_state(state))
    }

    fn classify(&self, e: DataFusionError) -> SqlError {
        match e.find_root() {
            DataFusionError::ResourcesExhausted(msg) => SqlError::Memory(self.memory, msg.clone()),
            DataFusionError::Internal(msg) => SqlError::Internal(msg.clone()),
            other => SqlError::Invalid(other.to_string()),
        }
    }
}

/// Whether the statement can only read: a query, EXPLAIN, SHOW or DESCRIBE.
fn reads_only(statement: &Statement) -> bool {
    match statement {
        Statement::Statement(s) => matches!(
            **s,
            ast::Statement::Query(_)
                | ast::Statement::Explain { .. }
                | ast::Statement::ExplainTable { .. }
                | ast::Statement::ShowVariable { .. }
                | ast::Statement::ShowTables { .. }
                | ast::Statement::ShowColumns { .. }
                | ast::Statement::ShowFunctions { .. }
        ),
        Statement::Explain(_) => true,
        _ => false,
    }
}

/// The command a statement starts with, e.g. `INSERT` or `CREATE TABLE`.
fn command(statement: &Statement) -> String {
    let text = statement.to_string().to_uppercase();
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or_default();
    match words.next() {
        Some(
            object @ ("TABLE" | "VIEW" | "SCHEMA" | "DATABASE" | "INDEX" | "FUNCTION" | "EXTERNAL"),
        ) => {
            format!("{first} {object}")
        }
        _ => first.to_string(),
    }
}

/// `$3` → 3; anything else sorts last.
fn parameter_position(id: &str) -> usize {
    id.trim_start_matches('$').parse().unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::traffic_batch;

    fn service(config: AnalyticsConfig, rows: usize) -> SqlService {
        let store = Arc::new(HotStore::new(config.window, config.hot_retention, 1 << 30));
        let data: Vec<(i64, i64)> = (0..rows as i64).map(|i| (i * 10, i % 7)).collect();
        store.insert("traffic", traffic_batch(&data)).unwrap();
        SqlService::new(store, &config).unwrap()
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
    async fn every_kind_of_read_is_answered() {
        let sql = service(AnalyticsConfig::default(), 3);
        for statement in [
            "WITH t AS (SELECT vehicles FROM traffic) SELECT max(vehicles) FROM t",
            "SHOW TABLES",
            "DESCRIBE traffic",
            "EXPLAIN SELECT * FROM traffic",
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
            "SELECT relname FROM pg_catalog.pg_class WHERE relkind = 'r'",
        ] {
            let result = sql.query(statement).await;
            let rows: usize = result
                .unwrap_or_else(|e| panic!("{statement}: {e}"))
                .batches
                .iter()
                .map(RecordBatch::num_rows)
                .sum();
            assert!(rows > 0, "{statement}");
        }
    }

    #[tokio::test]
    async fn writes_are_refused_with_a_clear_message() {
        let sql = service(AnalyticsConfig::default(), 1);
        for statement in [
            "CREATE TABLE x (a INT)",
            "INSERT INTO traffic SELECT * FROM traffic",
            "DROP TABLE traffic",
            "SET datafusion.execution.batch_size = 1",
            "EXPLAIN ANALYZE INSERT INTO traffic SELECT * FROM traffic",
        ] {
            let err = sql.query(statement).await.unwrap_err();
            assert!(matches!(err, SqlError::ReadOnly(_)), "{statement}: {err:?}");
            assert!(err.to_string().contains("read-only"), "{statement}: {err}");
        }
        assert_eq!(
            sql.query("create table x (a int)")
                .await
                .unwrap_err()
                .to_string(),
            "CREATE TABLE is refused: Polis SQL is read-only: use SELECT, WITH, SHOW or EXPLAIN"
        );
        let err = sql.query("SELECT nope FROM traffic").await.unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[tokio::test]
    async fn the_row_limit_refuses_big_results() {
        let config = AnalyticsConfig {
            max_result_rows: 10,
            ..AnalyticsConfig::default()
        };
        let sql = service(config, 2_000);
        assert!(matches!(
            sql.query("SELECT * FROM traffic").await,
            Err(SqlError::TooManyRows(10))
        ));
        let ten = sql.query("SELECT * FROM traffic LIMIT 10").await.unwrap();
        assert_eq!(
            ten.batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
            10
        );
    }

    #[tokio::test]
    async fn the_time_limit_stops_the_work_itself_and_the_next_query_runs() {
        let config = AnalyticsConfig {
            query_timeout: Duration::from_secs(1),
            ..AnalyticsConfig::default()
        };
        let sql = service(config, 2_000);
        let slow = "SELECT count(*) FROM traffic a, traffic b, traffic c WHERE a.vehicles + b.vehicles + c.vehicles > 100";
        let err = sql.query(slow).await.unwrap_err();
        assert!(matches!(err, SqlError::Timeout(_)), "{err:?}");
        assert!(err.to_string().contains("analytics.query_timeout"), "{err}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while sql.cpu.alive_tasks() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} query tasks still run after the time limit",
                sql.cpu.alive_tasks()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let count = sql.query("SELECT count(*) FROM traffic").await.unwrap();
        assert_eq!(count.batches[0].num_rows(), 1);
    }

    #[tokio::test]
    async fn the_memory_limit_fails_a_big_query_but_not_a_small_one() {
        let config = AnalyticsConfig {
            query_memory: ByteSize::mib(1),
            ..AnalyticsConfig::default()
        };
        let sql = service(config, 50_000);
        let big =
            "SELECT device_id, count(*) AS n FROM traffic GROUP BY device_id ORDER BY n LIMIT 1";
        match sql.query(big).await {
            Err(err @ SqlError::Memory(..)) => {
                assert!(err.to_string().contains("analytics.query_memory"), "{err}")
            }
            other => panic!("expected the memory limit, got {other:?}"),
        }
        let small = sql
            .query("SELECT count(*) AS n FROM traffic")
            .await
            .unwrap();
        assert_eq!(small.batches[0].num_rows(), 1);
    }

    #[tokio::test]
    async fn statements_are_described_before_they_run() {
        let sql = service(AnalyticsConfig::default(), 10);
        let statement = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            "SELECT device_id, vehicles FROM traffic WHERE vehicles > $2 AND device_id <> $1",
        )
        .unwrap()
        .remove(0);
        let description = sql.describe(statement.clone()).await.unwrap();
        let columns: Vec<_> = description
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(columns, ["device_id", "vehicles"]);
        assert_eq!(
            description.parameters,
            [Some(DataType::Utf8View), Some(DataType::Int64)]
        );
        let result = sql
            .query_parsed(
                statement,
                Some(ParamValues::from(vec![
                    datafusion::scalar::ScalarValue::from("tc-5"),
                    datafusion::scalar::ScalarValue::from(3i64),
                ])),
            )
            .await
            .unwrap();
        let rows: usize = result.batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(
            rows, 2,
            "tc-4 and tc-6: vehicles = i % 7 > 3 for i in 0..10, except tc-5"
        );
    }
}
