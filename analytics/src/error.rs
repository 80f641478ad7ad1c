//! Analytics errors: start-up problems, and SQL errors classified for HTTP status codes.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("invalid analytics configuration: {0}")]
    Config(String),
    #[error("cannot read metric definitions in {path}: {source}")]
    MetricsDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metric definition `{name}` is invalid: {reason}")]
    MetricDefinition { name: String, reason: String },
    #[error("cannot read alarm rules in {path} (analytics.rules_dir): {source}")]
    RulesDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("alarm rule file {file}: {reason}")]
    AlertRule { file: String, reason: String },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Log(#[from] polis_broker::LogError),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error(
        "cannot start the query runtime of {threads} threads (analytics.query_threads): {source}"
    )]
    QueryRuntime {
        threads: usize,
        source: std::io::Error,
    },
}

/// A problem with the Parquet archive (`analytics.archive_dir`).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("archive file {path} is not valid Parquet: {source}")]
    Parquet {
        path: PathBuf,
        source: datafusion::parquet::errors::ParquetError,
    },
    #[error("{path} does not belong in the archive (analytics.archive_dir): {reason}")]
    Layout { path: PathBuf, reason: String },
}

impl ArchiveError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> ArchiveError {
        ArchiveError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The query is wrong: bad syntax, unknown table or column, …
    #[error("{0}")]
    Invalid(String),
    /// The statement would change something.
    #[error("{0} is refused: Polis SQL is read-only: use SELECT, WITH, SHOW or EXPLAIN")]
    ReadOnly(String),
    #[error(
        "the query ran longer than the limit of {0:?} (analytics.query_timeout) and was cancelled"
    )]
    Timeout(std::time::Duration),
    #[error("the query needs more memory than the limit of {0} (analytics.query_memory): {1}")]
    Memory(bytesize::ByteSize, String),
    #[error(
        "the result has more than {0} rows (analytics.max_result_rows): add a LIMIT or aggregate"
    )]
    TooManyRows(usize),
    #[error("internal error: {0}")]
    Internal(String),
}
