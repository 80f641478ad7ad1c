//! Analytics configuration: the `[analytics]` section of the Polis config file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Size of the tumbling event-time windows metrics are computed over, unless a metric file's
    /// `-- window:` line says otherwise (its size and slide must be multiples of this), and the
    /// width of the hot store's time buckets.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long after a window's end late records are still waited for before its first
    /// emission: the watermark is the lowest per-partition highest event time minus this.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// How long after its first emission a window still takes late records, each correction
    /// emitted with the next revision; records later than this are dead-lettered `late_record`.
    #[serde(with = "humantime_serde")]
    pub update_horizon: Duration,
    /// A partition read to its end that gives no record for this long is idle and no longer
    /// holds the watermark back.
    #[serde(with = "humantime_serde")]
    pub idle_partition_timeout: Duration,
    /// How much event time the in-memory hot store keeps; with an archive, each hour wholly
    /// older than this behind a table's newest row is rolled into it.
    #[serde(with = "humantime_serde")]
    pub hot_retention: Duration,
    /// Memory the hot store may use. With an archive, the oldest hours are rolled into it once
    /// the store passes three quarters of this; past all of it, and always without an archive,
    /// the oldest buckets are evicted.
    pub hot_memory: ByteSize,
    /// Where hot rows are archived as Parquet, `{archive_dir}/{table}/date=…/hour=…/`.
    /// `polis` sets it to `{data_dir}/archive` unless given; unset, there is no archive.
    pub archive_dir: Option<PathBuf>,
    /// How much event time the archive keeps behind a table's newest row: older hours are
    /// deleted whole.
    #[serde(with = "humantime_serde")]
    pub archive_retention: Duration,
    /// An archived hour of more files than this (late rows add files) is merged into one once
    /// it is older than `hot_retention`.
    pub archive_compact_after: usize,
    /// A folder of extra metric definitions (`*.sql`) added to the shipped ones.
    pub metrics_dir: Option<PathBuf>,
    /// A folder of extra alarm rule files (`*.toml`) added to the shipped ones; one with a
    /// shipped file's name (`traffic.toml`, `energy.toml`, `transport.toml`) replaces it.
    pub rules_dir: Option<PathBuf>,
    /// Longest an operator query may run.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Memory one operator query may use.
    pub query_memory: ByteSize,
    /// Most rows one query may return.
    pub max_result_rows: usize,
    /// Threads of the runtime that runs queries, kept apart from the network I/O runtime so a
    /// heavy query cannot starve connections.
    pub query_threads: usize,
    /// Where the PostgreSQL wire protocol listens (psql, Grafana); database and user `polis`.
    pub pg_listen: SocketAddr,
    /// The password PostgreSQL clients from other hosts must give (sent in cleartext: use a
    /// trusted network). Loopback clients are let in without one. Unset: only loopback clients.
    pub pg_password: Option<String>,
    /// Most PostgreSQL connections open at once; more are refused with an error.
    pub pg_max_connections: usize,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            window: Duration::from_secs(10),
            allowed_lateness: Duration::from_secs(5),
            update_horizon: Duration::from_secs(60),
            idle_partition_timeout: Duration::from_secs(30),
            hot_retention: Duration::from_secs(3600),
            hot_memory: ByteSize::gib(2),
            archive_dir: None,
            archive_retention: Duration::from_secs(30 * 24 * 3600),
            archive_compact_after: 8,
            metrics_dir: None,
            rules_dir: None,
            query_timeout: Duration::from_secs(30),
            query_memory: ByteSize::mib(512),
            max_result_rows: 100_000,
            query_threads: 2,
            pg_listen: SocketAddr::from(([127, 0, 0, 1], 5433)),
            pg_password: None,
            pg_max_connections: 64,
        }
    }
}

impl AnalyticsConfig {
    /// Every problem with the configuration, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.window < Duration::from_secs(1) || self.window.subsec_nanos() != 0 {
            problems.push(format!(
                "analytics.window = {:?}: use a whole number of seconds, at least 1s",
                self.window
            ));
        }
        if self.idle_partition_timeout.is_zero() {
            problems.push(
                "analytics.idle_partition_timeout = 0s would ignore every partition: use e.g. 30s"
                    .to_string(),
            );
        }
        if self.hot_retention < self.window + self.allowed_lateness + self.update_horizon {
            problems.push("analytics.hot_retention is shorter than analytics.window + allowed_lateness + update_horizon: corrections need the window's rows".to_string());
        }
        if self.hot_memory < ByteSize::mib(16) {
            problems.push(format!(
                "analytics.hot_memory = {} is too small: use at least 16 MiB",
                self.hot_memory
            ));
        }
        if self.archive_dir.is_some() {
            let window = self.window.as_secs().max(1);
            if 3600 % window != 0 {
                problems.push(format!(
                    "analytics.window = {:?} does not divide an hour, the archive's unit: use e.g. 10s, 15s or 1m",
                    self.window
                ));
            }
            if self.archive_retention < self.hot_retention + Duration::from_secs(3600) {
                problems.push(format!(
                    "analytics.archive_retention = {:?} is shorter than analytics.hot_retention + 1h: archived hours would be deleted as soon as they are written; use e.g. 30d",
                    self.archive_retention
                ));
            }
            if self.archive_compact_after < 2 {
                problems.push(format!(
                    "analytics.archive_compact_after = {}: use at least 2, e.g. 8",
                    self.archive_compact_after
                ));
            }
        }
        if self
            .archive_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            problems.push(
                "analytics.archive_dir is empty: give a folder such as \"polis-data/archive\" or remove the key"
                    .to_string(),
            );
        }
        if self.query_timeout.is_zero() {
            problems.push(
                "analytics.query_timeout = 0s would cancel every query: use e.g. 30s".to_string(),
            );
        }
        if self.query_memory < ByteSize::mib(1) {
            problems.push(format!(
                "analytics.query_memory = {} is too small: use at least 1 MiB",
                self.query_memory
            ));
        }
        if self.max_result_rows == 0 {
            problems.push("analytics.max_result_rows = 0: use at least 1".to_string());
        }
        if self.query_threads == 0 {
            problems.push("analytics.query_threads = 0: use at least 1, e.g. 2".to_string());
        }
        if self.pg_max_connections == 0 {
            problems.push(
                "analytics.pg_max_connections = 0 would refuse every client: use e.g. 64"
                    .to_string(),
            );
        }
        if self.pg_password.as_deref() == Some("") {
            problems.push(
                "analytics.pg_password is empty: give a password or remove the key".to_string(),
            );
        }
        if !self.pg_listen.ip().is_loopback() && self.pg_password.is_none() {
            problems.push(format!(
                "analytics.pg_listen = {} accepts other hosts, who need a password: set analytics.pg_password",
                self.pg_listen
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_run_and_bad_sql_settings_name_their_keys() {
        assert!(AnalyticsConfig::default().problems().is_empty());
        let bad = AnalyticsConfig {
            query_threads: 0,
            pg_max_connections: 0,
            pg_listen: SocketAddr::from(([0, 0, 0, 0], 5433)),
            ..AnalyticsConfig::default()
        };
        let problems = bad.problems().join("\n");
        for key in [
            "analytics.query_threads",
            "analytics.pg_max_connections",
            "analytics.pg_listen = 0.0.0.0:5433 accepts other hosts",
        ] {
            assert!(problems.contains(key), "{key} missing from:\n{problems}");
        }
        let remote_with_password = AnalyticsConfig {
            pg_password: Some("s3cret".into()),
            ..bad.clone()
        };
        assert!(
            !remote_with_password
                .problems()
                .join("\n")
                .contains("pg_listen")
        );
        let archived = AnalyticsConfig {
            archive_dir: Some(PathBuf::from("archive")),
            ..AnalyticsConfig::default()
        };
        assert!(archived.problems().is_empty());
        let bad_archive = AnalyticsConfig {
            window: Duration::from_secs(7),
            archive_retention: Duration::from_secs(3600),
            archive_compact_after: 1,
            ..archived
        };
        let problems = bad_archive.problems().join("\n");
        for key in [
            "analytics.window = 7s does not divide an hour",
            "analytics.archive_retention = 3600s is shorter",
            "analytics.archive_compact_after = 1",
        ] {
            assert!(problems.contains(key), "{key} missing from:\n{problems}");
        }
        let empty_password = AnalyticsConfig {
            pg_password: Some(String::new()),
            ..AnalyticsConfig::default()
        };
        assert!(empty_password.problems()[0].contains("analytics.pg_password is empty"));
    }
}
