//! What every query sees: every table, its hot rows and its archive, in database `polis`,
//! schema `public`, plus `information_schema` and PostgreSQL's `pg_catalog` (with its functions,
//! and `current_setting`), which psql and Grafana read to list tables and columns.

use std::sync::Arc;

use arrow::array::{AsArray, StringArray};
use arrow::datatypes::DataType;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::setup_pg_catalog;

use crate::archive::table::PolisTable;
use crate::float_filter::DirectFloatFilters;
use crate::store::HotStore;

/// The database name clients connect to and `current_database()` returns.
pub(crate) const DATABASE: &str = "polis";
/// The PostgreSQL version Polis answers as, for clients that adapt their queries to it.
pub(crate) const SERVER_VERSION: &str = "16.6";
const SERVER_VERSION_NUM: &str = "160006";
/// Rows per batch a query passes between operators, 4× DataFusion's default: grouping by
/// device over 10M archived rows took 39 % less time (BENCHMARKS.md, 2026-12-08), and 64 Ki
/// rows gained nothing more.
const BATCH_ROWS: usize = 32 * 1024;

/// A session over every table, its plans split into `partitions` parallel parts.
pub(crate) fn context(
    store: Arc<HotStore>,
    partitions: usize,
) -> Result<SessionContext, DataFusionError> {
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema(DATABASE, "public")
        .with_target_partitions(partitions)
        .with_batch_size(BATCH_ROWS);
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(DirectFloatFilters))
        .build();
    let ctx = SessionContext::new_with_state(state);
    for name in store.table_names() {
        ctx.register_table(name, Arc::new(PolisTable::new(store.clone(), name)))?;
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
