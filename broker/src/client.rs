//! The `LogClient` seam: how tiers produce to and fetch from the log, wherever it runs.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::error::LogError;
use crate::log::Log;
use crate::record::{Record, StoredRecord};

/// Where to read one partition from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// What one partition returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    pub topic: String,
    pub partition: i32,
    pub high_watermark: i64,
    pub records: Vec<StoredRecord>,
}

/// Produce and fetch, the two things every tier does with the log.
pub trait LogClient: Send + Sync + 'static {
    /// Appends `records` to `topic`, placing each by Kafka's murmur2 hash of its key, and resolves
    /// once they are durable with each record's `(partition, offset)`.
    fn produce(
        &self,
        topic: &str,
        records: Vec<Record>,
    ) -> BoxFuture<'static, Result<Vec<(i32, i64)>, LogError>>;

    /// How many partitions `topic` has.
    fn partition_count(&self, topic: &str) -> Result<i32, LogError>;

    /// Reads every requested partition from its offset, waiting up to `max_wait` for the first
    /// record when none is available yet (Kafka's long-poll fetch with min_bytes = 1).
    fn fetch(
        &self,
        requests: Vec<FetchRequest>,
        max_bytes_per_partition: usize,
        max_wait: Duration,
    ) -> BoxFuture<'static, Result<Vec<FetchedPartition>, LogError>>;
}

/// The in-process client of an embedded [`Log`].
#[derive(Clone)]
pub struct EmbeddedLog(pub Arc<Log>);

impl LogClient for EmbeddedLog {
    fn produce(
        &self,
        topic: &str,
        records: Vec<Record>,
    ) -> BoxFuture<'static, Result<Vec<(i32, i64)>, LogError>> {
        let log = self.0.clone();
        let topic = topic.to_string();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || log.produce(&topic, records))
                .await
                .map_err(|_| LogError::Closed)?
        })
    }

    fn partition_count(&self, topic: &str) -> Result<i32, LogError> {
        self.0.partition_count(topic)
    }

    fn fetch(
        &self,
        requests: Vec<FetchRequest>,
        max_bytes_per_partition: usize,
        max_wait: Duration,
    ) -> BoxFuture<'static, Result<Vec<FetchedPartition>, LogError>> {
        let log = self.0.clone();
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + max_wait;
            let mut appends = log.subscribe_appends();
            loop {
                appends.borrow_and_update();
                let (reader, reqs) = (log.clone(), requests.clone());
                let fetched = tokio::task::spawn_blocking(move || {
                    read_all(&reader, &reqs, max_bytes_per_partition)
                })
                .await
                .map_err(|_| LogError::Closed)??;
                if fetched.iter().any(|f| !f.records.is_empty()) {
                    return Ok(fetched);
                }
                match tokio::time::timeout_at(deadline, appends.changed()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) => return Err(LogError::Closed),
                    Err(_) => return Ok(fetched),
                }
            }
        })
    }
}

fn read_all(
    log: &Log,
    requests: &[FetchRequest],
    max_bytes: usize,
) -> Result<Vec<FetchedPartition>, LogError> {
    requests
        .iter()
        .map(|r| {
            // Records before the log start were deleted by retention: read on from the oldest kept.
            let offset = r.offset.max(log.log_start_offset(&r.topic, r.partition)?);
            let (records, high_watermark) = log.read(&r.topic, r.partition, offset, max_bytes)?;
            Ok(FetchedPartition {
                topic: r.topic.clone(),
                partition: r.partition,
                high_watermark,
                records,
            })
        })
        .collect()
}
