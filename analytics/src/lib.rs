//! The Polis analytics tier: telemetry in, metrics and answers out.
//!
//! Data enters by following the log's topics ([`ingest`]): each record is decoded into Arrow
//! ([`decode`]) and kept in a hot store of time buckets ([`store`]); hours past its retention
//! are rolled into Parquet files ([`archive`]), and each SQL table is the union of both. Continuous metrics are SQL
//! files ([`metrics`]) evaluated with DataFusion over each 10 s event-time window once the
//! watermark (highest event time − allowed lateness) passes its end ([`windows`]); their rows
//! leave on the `metrics` topic. Operators query every table ([`catalog`]) with read-only SQL
//! through [`SqlService`], which runs plans on a runtime of their own ([`cpu`]); it is served
//! over HTTP by [`http::router`] in several [`format`]s and over the PostgreSQL wire protocol by
//! [`pg::PgServer`].

pub mod alerts;
mod archive;
mod catalog;
mod checkpoint;
mod config;
mod continuous;
mod cpu;
mod decode;
mod duplicates;
mod error;
mod flat_json;
mod float_filter;
mod format;
pub mod heap;
pub mod http;
mod ingest;
pub mod metrics;
pub mod pg;
mod sql;
mod stop;
mod store;
mod windows;

use std::sync::Arc;

use polis_broker::LogClient;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::AnalyticsConfig;
pub use error::{AnalyticsError, ArchiveError, SqlError};
pub use sql::SqlService;
pub use store::HotStore;

/// A running analytics tier.
pub struct Analytics {
    sql: SqlService,
    alerts: alerts::AlertService,
    tasks: JoinSet<()>,
}

impl Analytics {
    /// Loads the metric definitions, catches up on the `metrics` topic (so no window is emitted
    /// twice) and starts following the log.
    pub async fn start(
        config: AnalyticsConfig,
        log: Arc<dyn LogClient>,
        shutdown: CancellationToken,
    ) -> Result<Analytics, AnalyticsError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(AnalyticsError::Config(problems.join("; ")));
        }
        let definitions = metrics::load(config.metrics_dir.as_deref())?;
        let rules = alerts::rules::load(config.rules_dir.as_deref())?;
        let mut store = HotStore::new(
            config.window,
            config.hot_retention,
            config.hot_memory.as_u64() as usize,
        );
        if config.archive_dir.is_some() {
            store = store.with_archive(store::ArchivePolicy {
                retention_ms: config.archive_retention.as_millis() as i64,
            });
        }
        let store = Arc::new(store);
        let archiver = match &config.archive_dir {
            Some(root) => Some(archive::open(root, store.clone(), &config)?),
            None => None,
        };
        let sql = SqlService::new(store.clone(), &config)?;
        let mut tasks =
            ingest::start(&config, definitions, log.clone(), store, shutdown.clone()).await?;
        if let Some(archiver) = archiver {
            tasks.spawn(archiver.run(shutdown.clone()));
        }
        let alerts = alerts::start(rules, log, &mut tasks, shutdown).await?;
        Ok(Analytics { sql, alerts, tasks })
    }

    pub fn sql(&self) -> SqlService {
        self.sql.clone()
    }

    /// The alarms, for [`alerts::router`].
    pub fn alerts(&self) -> alerts::AlertService {
        self.alerts.clone()
    }

    /// Waits for every task to stop (after shutdown).
    pub async fn join(mut self) {
        while let Some(result) = self.tasks.join_next().await {
            if let Err(e) = result {
                tracing::error!(error = %e, "an analytics task failed");
            }
        }
    }
}
