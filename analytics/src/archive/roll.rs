//! The archiver: rolls due hours out of the hot store, compacts hours of many files and deletes
//! hours past retention.
//!
//! It wakes when an insert makes an hour due and once a [`TICK`]. A roll writes the hour's rows
//! to a file first and only then swaps them for it in the store ([`HotStore::commit_roll`]), so
//! a row is always in exactly one of the two; when writing fails the rows stay hot and the roll
//! is tried again. Files a compaction or retention takes out of the store are deleted only once
//! every query that could still be reading them has ended (`analytics.query_timeout`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{ArchivedFile, HOUR_MS, disk};
use crate::error::ArchiveError;
use crate::store::HotStore;

/// How often the archiver looks for work nobody woke it for (compaction, retention, deletions).
const TICK: Duration = Duration::from_secs(1);

/// What the archiver does, from `[analytics]`.
pub(crate) struct Archiver {
    pub root: PathBuf,
    pub store: Arc<HotStore>,
    /// An hour with more files than this, and no longer hot, is merged into one.
    pub compact_after: usize,
    pub hot_retention_ms: i64,
    /// How long a file taken out of the store is kept for the queries still reading it.
    pub grace: Duration,
}

impl Archiver {
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let mut doomed: Vec<(Instant, Vec<PathBuf>)> = Vec::new();
        loop {
            let worker = this.clone();
            match tokio::task::spawn_blocking(move || worker.pass()).await {
                Ok(retired) if !retired.is_empty() => {
                    doomed.push((Instant::now() + this.grace, retired))
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "an archive pass failed"),
            }
            let now = Instant::now();
            doomed.retain(|(at, paths)| {
                let due = *at <= now;
                if due {
                    disk::delete(paths);
                }
                !due
            });
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = this.store.wait_due() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Rolls, compacts and expires every table; returns the files taken out of the store.
    fn pass(&self) -> Vec<PathBuf> {
        let mut retired = Vec::new();
        let tables: Vec<&'static str> = self.store.table_names().collect();
        for table in tables {
            while let Some(roll) = self.store.due(table) {
                let present = self.files_of(table, roll.hour_ms);
                let schema = self.store.schema(table);
                match disk::write(
                    &self.root,
                    table,
                    roll.hour_ms,
                    &schema,
                    &roll.batches,
                    &present,
                    &[],
                ) {
                    Ok(file) => {
                        tracing::debug!(table, path = %file.path.display(), rows = file.rows(), "archived an hour");
                        self.store.commit_roll(table, &roll, Arc::new(file));
                    }
                    Err(e) => {
                        tracing::error!(table, error = %e, "cannot archive an hour; its rows stay in memory and it is retried");
                        break;
                    }
                }
            }
            self.expire(table, &mut retired);
            if let Err(e) = self.compact(table, &mut retired) {
                tracing::error!(table, error = %e, "cannot compact archive files; retried later");
            }
        }
        retired
    }

    fn files_of(&self, table: &str, hour_ms: i64) -> Vec<Arc<ArchivedFile>> {
        let (hours, _) = self.store.archived(table);
        hours
            .into_iter()
            .find(|(h, _)| *h == hour_ms)
            .map(|(_, files)| files)
            .unwrap_or_default()
    }

    /// Merges the files of each hour that has more than `compact_after` and is no longer hot.
    fn compact(&self, table: &str, retired: &mut Vec<PathBuf>) -> Result<(), ArchiveError> {
        let (hours, newest) = self.store.archived(table);
        let Some(newest) = newest else {
            return Ok(());
        };
        let schema = self.store.schema(table);
        for (hour_ms, files) in hours {
            let closed = hour_ms + HOUR_MS <= newest - self.hot_retention_ms;
            if !closed || files.len() <= self.compact_after {
                continue;
            }
            let mut batches = Vec::new();
            for file in &files {
                batches.extend(disk::read(file)?);
            }
            let merged = disk::write(
                &self.root, table, hour_ms, &schema, &batches, &files, &files,
            )?;
            tracing::info!(table, files = files.len(), into = %merged.path.display(), "compacted an archive hour");
            self.store
                .replace_archived(table, hour_ms, &files, Some(Arc::new(merged)));
            retired.extend(files.iter().map(|f| f.path.clone()));
        }
        Ok(())
    }

    /// Takes the hours wholly older than `retention_ms` behind the newest row out of the store,
    /// once the archive records that they are gone for good.
    fn expire(&self, table: &str, retired: &mut Vec<PathBuf>) {
        let Some(before_ms) = self.store.expiry_due(table) else {
            return;
        };
        if let Err(e) = disk::set_expired_before(&self.root, table, before_ms) {
            tracing::error!(table, error = %e, "cannot record archive retention; its hours are kept and it is retried");
            return;
        }
        let files = self.store.expire(table, before_ms);
        if !files.is_empty() {
            tracing::info!(
                table,
                files = files.len(),
                before_ms,
                "deleting archive hours past analytics.archive_retention"
            );
        }
        retired.extend(files.iter().map(|f| f.path.clone()));
    }
}
