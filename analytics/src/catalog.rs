//! What every query sees: the hot store's tables in database `polis`, schema `public`, plus
//! `information_schema` and PostgreSQL's `pg_catalog` (with its functions, and
//! `current_setting`), which psql and Grafana read to list tables and columns.

use std::fmt;
use std::sync::Arc;

use arrow::array::{AsArray, StringArray};
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{ColumnarValue, Expr, ScalarUDF, Volatility, create_udf};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::setup_pg_catalog;

use crate::store::HotStore;

/// The database name clients connect to and `current_database()` returns.
pub(crate) const DATABASE: &str = "polis";
/// The PostgreSQL version Polis answers as, for clients that adapt their queries to it.
pub(crate) const SERVER_VERSION: &str = "16.6";
const SERVER_VERSION_NUM: &str = "160006";

/// A session over every table, its plans split into `partitions` parallel parts.
pub(crate) fn context(
    store: Arc<HotStore>,
    partitions: usize,
) -> Result<SessionContext, DataFusionError> {
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema(DATABASE, "public")
        .with_target_partitions(partitions);
    let ctx = SessionContext::new_with_config(config);
    for name in store.table_names() {
        let table = HotTable {
            schema: store.schema(name),
            store: store.clone(),
            name,
        };
        ctx.register_table(name, Arc::new(table))?;
    }
    setup_pg_catalog(&ctx, DATABASE, EmptyContextProvider).map_err(|e| *e)?;
    ctx.register_udf(current_setting());
    Ok(ctx)
}

/// `current_setting(name)` for the settings clients read (Grafana asks for the server version).
fn current_setting() -> ScalarUDF {
    let setting = |name: &str| match name {
        "server_version" => Ok(SERVER_VERSION),
        "server_version_num" => Ok(SERVER_VERSION_NUM),
        "search_path" => Ok("\"$user\", public"),
        "default_transaction_read_only" | "transaction_read_only" => Ok("on"),
        other => Err(DataFusionError::Execution(format!(
            "unrecognized configuration parameter \"{other}\""
        ))),
    };
    create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let names = ColumnarValue::values_to_arrays(args)?;
            let values = names[0]
                .as_string::<i32>()
                .iter()
                .map(|name| name.map(setting).transpose())
                .collect::<Result<StringArray, DataFusionError>>()?;
            Ok(ColumnarValue::Array(Arc::new(values)))
        }),
    )
}

/// One hot store table; each scan reads the rows present when the query starts.
struct HotTable {
    store: Arc<HotStore>,
    name: &'static str,
    schema: SchemaRef,
}

impl fmt::Debug for HotTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HotTable")
            .field("name", &self.name)
            .finish()
    }
}

#[async_trait]
impl TableProvider for HotTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let batches = self.store.snapshot(self.name);
        let parts = state
            .config()
            .target_partitions()
            .clamp(1, batches.len().max(1));
        let mut partitions = vec![Vec::new(); parts];
        for (i, batch) in batches.into_iter().enumerate() {
            partitions[i % parts].push(batch);
        }
        let source =
            MemorySourceConfig::try_new(&partitions, self.schema.clone(), projection.cloned())?
                .with_limit(limit);
        Ok(DataSourceExec::from_data_source(source))
    }
}
