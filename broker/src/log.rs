//! The log: named topics of partitions, produce with group commit, reads, and append wake-ups.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::{BrokerConfig, FlushPolicy, TopicSpec};
use crate::error::LogError;
use crate::partition::{Partition, PendingAppend, Rolling};
use crate::partitioner::partition_for_key;
use crate::record::{Record, StoredRecord};

const TOPICS_FILE: &str = "topics.json";
/// Present only between a clean [`Log::close`] and the next [`Log::open`].
const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
/// How often retention is enforced.
const RETENTION_CHECK: std::time::Duration = std::time::Duration::from_secs(30);

struct Topic {
    id: Uuid,
    partitions: Vec<Partition>,
    /// Spreads records without a key over the partitions.
    round_robin: AtomicU32,
}

#[derive(Serialize, Deserialize, Default)]
struct TopicsFile {
    topics: Vec<TopicSpec>,
}

/// Stored batches read from one partition, with its offsets at the time of the read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRead {
    /// Whole RecordBatch v2 batches, byte for byte as stored.
    pub batches: Vec<Bytes>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// The embedded, durable, partitioned log.
pub struct Log {
    dir: PathBuf,
    config: BrokerConfig,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Bumped after every durable append, to wake long-polling readers.
    appends: watch::Sender<u64>,
    /// Stops the background jobs (flushing, retention) when dropped.
    background: std::sync::Mutex<Vec<std::sync::mpsc::Sender<()>>>,
}

impl Log {
    /// Opens the log under `{data_dir}/log`, recovering every partition (see [`Partition::open`]
    /// for what is validated after a clean and after an unclean stop).
    pub fn open(data_dir: &Path, config: BrokerConfig) -> Result<Arc<Log>, LogError> {
        let dir = data_dir.join("log");
        fs::create_dir_all(&dir).map_err(LogError::io(&dir))?;
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean_shutdown = marker.exists();
        let topics_path = dir.join(TOPICS_FILE);
        let specs = match fs::read(&topics_path) {
            Ok(bytes) => {
                serde_json::from_slice::<TopicsFile>(&bytes)
                    .map_err(|source| LogError::Metadata {
                        path: topics_path.clone(),
                        source,
                    })?
                    .topics
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(LogError::Io {
                    path: topics_path,
                    source: e,
                });
            }
        };
        let log = Log {
            dir,
            config,
            topics: RwLock::new(HashMap::new()),
            appends: watch::Sender::new(0),
            background: std::sync::Mutex::new(Vec::new()),
        };
        {
            let mut topics = log.topics.write().expect("topics lock");
            for spec in specs {
                let topic = log.open_topic(&spec, clean_shutdown)?;
                topics.insert(spec.name, Arc::new(topic));
            }
        }
        if clean_shutdown {
            fs::remove_file(&marker).map_err(LogError::io(&marker))?;
            File::open(&log.dir)
                .and_then(|d| d.sync_all())
                .map_err(LogError::io(&log.dir))?;
        }
        let log = Arc::new(log);
        if let FlushPolicy::Every(interval) = log.config.flush {
            log.every(interval, "log-flusher", Log::flush)?;
        }
        if log.config.retention.is_some() || log.config.retention_bytes.is_some() {
            log.every(RETENTION_CHECK, "log-retention", |log| {
                log.enforce_retention(now_ms()).map(drop)
            })?;
        }
        Ok(log)
    }

    fn open_topic(&self, spec: &TopicSpec, clean_shutdown: bool) -> Result<Topic, LogError> {
        let partitions = (0..spec.partitions)
            .map(|p| {
                Partition::open(
                    &self.partition_dir(&spec.name, p),
                    self.rolling(),
                    clean_shutdown,
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Topic {
            id: spec.id,
            partitions,
            round_robin: AtomicU32::new(0),
        })
    }

    fn rolling(&self) -> Rolling {
        Rolling {
            size: self.config.segment_size.as_u64(),
            age: self.config.segment_age,
        }
    }

    /// Runs `job` every `interval` on its own thread until the log is closed or dropped.
    fn every(
        self: &Arc<Self>,
        interval: std::time::Duration,
        name: &str,
        job: fn(&Log) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let log = Arc::downgrade(self);
        let thread_name = name.to_string();
        std::thread::Builder::new()
            .name(thread_name.clone())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(interval)
                {
                    let Some(log) = log.upgrade() else { return };
                    if let Err(e) = job(&log) {
                        tracing::error!(job = thread_name, error = %e, "background log job failed");
                    }
                }
            })
            .map_err(LogError::io(&self.dir))?;
        self.background.lock().expect("background lock").push(stop);
        Ok(())
    }

    /// Applies `broker.retention` and `broker.retention_bytes` to every partition; returns the
    /// records deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<i64, LogError> {
        let retention_bytes = self.config.retention_bytes.map(|b| b.as_u64());
        let topics = self.all_topics();
        let mut deleted = 0;
        for partition in topics.iter().flat_map(|t| t.partitions.iter()) {
            deleted +=
                partition.enforce_retention(now_ms, self.config.retention, retention_bytes)?;
        }
        Ok(deleted)
    }

    /// Every open topic, without holding the topics lock while they are used.
    fn all_topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .expect("topics lock")
            .values()
            .cloned()
            .collect()
    }

    /// Fsyncs the active segment of every partition.
    pub fn flush(&self) -> Result<(), LogError> {
        let topics = self.all_topics();
        topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .try_for_each(Partition::flush)
    }

    /// Flushes everything and marks the shutdown clean, so the next open skips batch validation.
    /// Call it once nothing appends any more.
    pub fn close(&self) -> Result<(), LogError> {
        self.background.lock().expect("background lock").clear();
        let topics = self.all_topics();
        topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .try_for_each(Partition::close)?;
        let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
        File::create(&marker)
            .and_then(|f| f.sync_all())
            .map_err(LogError::io(&marker))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(LogError::io(&self.dir))
    }

    fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.dir.join(format!("{topic}-{partition}"))
    }

    /// Creates `name` with `partitions` partitions, or checks that it already exists with as many.
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), LogError> {
        match self.create_new_topic(name, partitions) {
            Err(LogError::TopicExists { existing, .. }) if existing == partitions => Ok(()),
            Err(LogError::TopicExists { existing, .. }) => Err(LogError::PartitionCountMismatch {
                topic: name.to_string(),
                existing,
                requested: partitions,
            }),
            other => other,
        }
    }

    /// Creates `name`, failing with [`LogError::TopicExists`] if it exists.
    pub fn create_new_topic(&self, name: &str, partitions: i32) -> Result<(), LogError> {
        if name.is_empty()
            || name.len() > 249
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(LogError::InvalidTopicName(name.to_string()));
        }
        if !(1..=self.config.max_partitions).contains(&partitions) {
            return Err(LogError::InvalidPartitionCount {
                requested: partitions,
                max: self.config.max_partitions,
            });
        }
        let mut topics = self.topics.write().expect("topics lock");
        if let Some(existing) = topics.get(name) {
            return Err(LogError::TopicExists {
                topic: name.to_string(),
                existing: existing.partitions.len() as i32,
            });
        }
        let spec = TopicSpec {
            name: name.to_string(),
            partitions,
            id: Uuid::new_v4(),
        };
        let topic = self.open_topic(&spec, false)?;
        topics.insert(name.to_string(), Arc::new(topic));
        self.write_topics_file(&topics)
    }

    /// Deletes `name` and all its data.
    pub fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        let mut topics = self.topics.write().expect("topics lock");
        let topic = topics
            .remove(name)
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        self.write_topics_file(&topics)?;
        for p in 0..topic.partitions.len() as i32 {
            let dir = self.partition_dir(name, p);
            fs::remove_dir_all(&dir).map_err(LogError::io(&dir))?;
        }
        Ok(())
    }

    fn write_topics_file(&self, topics: &HashMap<String, Arc<Topic>>) -> Result<(), LogError> {
        let specs = sorted_specs(topics);
        let path = self.dir.join(TOPICS_FILE);
        let tmp = self.dir.join(format!("{TOPICS_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(&TopicsFile { topics: specs })
            .expect("topic specs serialize");
        let mut f = File::create(&tmp).map_err(LogError::io(&tmp))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(LogError::io(&tmp))?;
        fs::rename(&tmp, &path).map_err(LogError::io(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(LogError::io(&self.dir))
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, LogError> {
        self.topics
            .read()
            .expect("topics lock")
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))
    }

    fn partition<'t>(
        topic: &'t Topic,
        name: &str,
        partition: i32,
    ) -> Result<&'t Partition, LogError> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| topic.partitions.get(p))
            .ok_or_else(|| LogError::UnknownPartition {
                topic: name.to_string(),
                partition,
                partitions: topic.partitions.len() as i32,
            })
    }

    /// Every topic, by name.
    pub fn topics(&self) -> Vec<TopicSpec> {
        sorted_specs(&self.topics.read().expect("topics lock"))
    }

    /// One topic's description.
    pub fn topic_spec(&self, name: &str) -> Result<TopicSpec, LogError> {
        Ok(spec(name, self.topic(name)?.as_ref()))
    }

    pub fn partition_count(&self, topic: &str) -> Result<i32, LogError> {
        Ok(self.topic(topic)?.partitions.len() as i32)
    }

    /// Appends `records` durably, each to the partition of its key (murmur2) or round-robin when it
    /// has none. Returns each record's `(partition, offset)`, in input order. Blocks on disk I/O.
    pub fn produce(
        &self,
        topic_name: &str,
        records: Vec<Record>,
    ) -> Result<Vec<(i32, i64)>, LogError> {
        let topic = self.topic(topic_name)?;
        let count = topic.partitions.len() as i32;
        let mut by_partition: Vec<Vec<(usize, Record)>> = (0..count).map(|_| Vec::new()).collect();
        for (i, record) in records.into_iter().enumerate() {
            let p = match &record.key {
                Some(key) => partition_for_key(key, count),
                None => (topic.round_robin.fetch_add(1, Ordering::Relaxed) % count as u32) as i32,
            };
            by_partition[p as usize].push((i, record));
        }
        let mut placed = Vec::new();
        let mut pending = Vec::new();
        for (p, items) in by_partition.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            let (indexes, batch): (Vec<usize>, Vec<Record>) = items.into_iter().unzip();
            let append = topic.partitions[p].append(&batch)?;
            placed.extend(
                indexes
                    .into_iter()
                    .enumerate()
                    .map(|(n, i)| (i, p as i32, append.base_offset + n as i64)),
            );
            pending.push((p as i32, append));
        }
        self.make_durable(&topic, &pending)?;
        placed.sort_unstable_by_key(|(i, _, _)| *i);
        Ok(placed.into_iter().map(|(_, p, o)| (p, o)).collect())
    }

    /// Appends producers' record batches (one per partition, as the Kafka protocol sends them)
    /// and returns, per input, the base offset assigned or why the batch was refused. One fsync
    /// per touched partition covers the whole call (group commit).
    pub fn append_batches(
        &self,
        topic_name: &str,
        batches: Vec<(i32, Vec<u8>)>,
    ) -> Result<Vec<Result<i64, LogError>>, LogError> {
        let topic = self.topic(topic_name)?;
        let mut pending = Vec::new();
        let mut results = Vec::with_capacity(batches.len());
        for (partition, bytes) in batches {
            let appended =
                Self::partition(&topic, topic_name, partition).and_then(|p| p.append_batch(bytes));
            results.push(appended.map(|append| {
                let base = append.base_offset;
                pending.push((partition, append));
                base
            }));
        }
        self.make_durable(&topic, &pending)?;
        Ok(results)
    }

    /// Fsyncs what `pending` wrote (when configured), then makes it readable and wakes readers.
    fn make_durable(
        &self,
        topic: &Topic,
        pending: &[(i32, PendingAppend)],
    ) -> Result<(), LogError> {
        if pending.is_empty() {
            return Ok(());
        }
        if self.config.flush == FlushPolicy::Always {
            for (_, append) in pending {
                append.sync()?;
            }
        }
        for (p, append) in pending {
            topic.partitions[*p as usize].commit(append.end_offset);
        }
        self.appends.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Records of `topic`/`partition` from `offset` on, up to about `max_bytes` (at least one
    /// batch), and the partition's high watermark.
    pub fn read(
        &self,
        topic_name: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<(Vec<StoredRecord>, i64), LogError> {
        let topic = self.topic(topic_name)?;
        let p = Self::partition(&topic, topic_name, partition)?;
        let end = Self::check_offset(p, topic_name, partition, offset)?;
        Ok((p.read(offset, max_bytes)?, end))
    }

    /// Whole stored batches from the one holding `offset` on, up to about `max_bytes` (at least one
    /// batch when there is one).
    pub fn read_batches(
        &self,
        topic_name: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<PartitionRead, LogError> {
        let topic = self.topic(topic_name)?;
        let p = Self::partition(&topic, topic_name, partition)?;
        let high_watermark = Self::check_offset(p, topic_name, partition, offset)?;
        Ok(PartitionRead {
            batches: p.read_batches(offset, max_bytes)?,
            high_watermark,
            log_start_offset: p.log_start_offset(),
        })
    }

    /// The high watermark, after checking `offset` is within the partition.
    fn check_offset(
        p: &Partition,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<i64, LogError> {
        let (start, end) = (p.log_start_offset(), p.high_watermark());
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange {
                topic: topic.to_string(),
                partition,
                offset,
                start,
                end,
            });
        }
        Ok(end)
    }

    /// The offset the next durable record of the partition will get.
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Result<i64, LogError> {
        let t = self.topic(topic)?;
        Ok(Self::partition(&t, topic, partition)?.high_watermark())
    }

    /// The first offset still in the partition.
    pub fn log_start_offset(&self, topic: &str, partition: i32) -> Result<i64, LogError> {
        let t = self.topic(topic)?;
        Ok(Self::partition(&t, topic, partition)?.log_start_offset())
    }

    /// The first `(offset, timestamp)` at or after `timestamp_ms`, or `None`.
    pub fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: i32,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        let t = self.topic(topic)?;
        Self::partition(&t, topic, partition)?.offset_for_timestamp(timestamp_ms)
    }

    /// A receiver that changes after every durable append.
    pub fn subscribe_appends(&self) -> watch::Receiver<u64> {
        self.appends.subscribe()
    }

    /// The data directory the log was opened in (the parent of `{data_dir}/log`), for state kept
    /// beside the log such as committed consumer-group offsets.
    pub fn data_dir(&self) -> &Path {
        self.dir.parent().unwrap_or(&self.dir)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Every topic's description, by name.
fn sorted_specs(topics: &HashMap<String, Arc<Topic>>) -> Vec<TopicSpec> {
    let mut specs: Vec<TopicSpec> = topics.iter().map(|(name, t)| spec(name, t)).collect();
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    specs
}

fn spec(name: &str, topic: &Topic) -> TopicSpec {
    TopicSpec {
        name: name.to_string(),
        partitions: topic.partitions.len() as i32,
        id: topic.id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitioner::partition_for_key;

    #[test]
    fn topics_and_records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let id_before;
        {
            let log = Log::open(dir.path(), BrokerConfig::default()).unwrap();
            log.create_topic("telemetry.traffic", 4).unwrap();
            id_before = log.topic_spec("telemetry.traffic").unwrap().id;
            let placed = log
                .produce(
                    "telemetry.traffic",
                    (0..20)
                        .map(|i| Record::new(Some(format!("dev-{}", i % 5)), format!("v{i}"), i))
                        .collect(),
                )
                .unwrap();
            assert_eq!(placed.len(), 20);
            for (i, (p, _)) in placed.iter().enumerate() {
                assert_eq!(
                    *p,
                    partition_for_key(format!("dev-{}", i % 5).as_bytes(), 4)
                );
            }
        }
        let log = Log::open(dir.path(), BrokerConfig::default()).unwrap();
        let topics = log.topics();
        assert_eq!(topics.len(), 1);
        assert_eq!(
            (topics[0].name.as_str(), topics[0].partitions),
            ("telemetry.traffic", 4)
        );
        assert_eq!(
            topics[0].id, id_before,
            "topic ids are stable across restarts"
        );
        let total: usize = (0..4)
            .map(|p| {
                log.read("telemetry.traffic", p, 0, usize::MAX)
                    .unwrap()
                    .0
                    .len()
            })
            .sum();
        assert_eq!(total, 20);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), BrokerConfig::default()).unwrap();
        log.create_topic("t", 2).unwrap();
        assert!(matches!(
            log.create_topic("t", 3),
            Err(LogError::PartitionCountMismatch { existing: 2, .. })
        ));
        assert!(matches!(
            log.create_topic("bad/name", 1),
            Err(LogError::InvalidTopicName(_))
        ));
        assert!(matches!(
            log.create_new_topic("t", 2),
            Err(LogError::TopicExists { existing: 2, .. })
        ));
        assert!(matches!(
            log.create_topic("u", 0),
            Err(LogError::InvalidPartitionCount { .. })
        ));
        assert!(matches!(
            log.produce("nope", vec![]),
            Err(LogError::UnknownTopic(_))
        ));
        assert!(matches!(
            log.read("t", 5, 0, 10),
            Err(LogError::UnknownPartition { .. })
        ));
        assert!(matches!(
            log.read("t", 0, 1, 10),
            Err(LogError::OffsetOutOfRange { end: 0, .. })
        ));
    }

    #[test]
    fn producer_batches_get_offsets_and_are_stored_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), BrokerConfig::default()).unwrap();
        log.create_topic("t", 2).unwrap();
        log.produce("t", vec![Record::new(None::<Bytes>, "first", 10)])
            .unwrap();
        let first_partition = log
            .read_batches("t", 0, 0, usize::MAX)
            .unwrap()
            .high_watermark;
        let produced = crate::batch::encode(
            999,
            &[
                Record::new(Some("k"), "a", 100),
                Record::new(Some("k"), "b", 200),
            ],
        );
        let results = log
            .append_batches("t", vec![(0, produced.to_vec()), (7, produced.to_vec())])
            .unwrap();
        assert_eq!(results[0].as_ref().unwrap(), &first_partition);
        assert!(matches!(results[1], Err(LogError::UnknownPartition { .. })));
        let read = log
            .read_batches("t", 0, first_partition, usize::MAX)
            .unwrap();
        assert_eq!(read.high_watermark, first_partition + 2);
        assert_eq!(
            &read.batches[0][8..],
            &produced[8..],
            "everything but the base offset is kept"
        );
        assert_eq!(
            i64::from_be_bytes(read.batches[0][0..8].try_into().unwrap()),
            first_partition
        );
        let mut torn = produced.to_vec();
        torn.truncate(torn.len() - 1);
        assert!(matches!(
            log.append_batches("t", vec![(0, torn)]).unwrap()[0],
            Err(LogError::CorruptBatch(_))
        ));
    }

    #[test]
    fn offsets_are_found_by_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), BrokerConfig::default()).unwrap();
        log.create_topic("t", 1).unwrap();
        for ts in [100, 200, 300] {
            log.produce(
                "t",
                vec![
                    Record::new(None::<Bytes>, "x", ts),
                    Record::new(None::<Bytes>, "y", ts + 50),
                ],
            )
            .unwrap();
        }
        assert_eq!(log.offset_for_timestamp("t", 0, 0).unwrap(), Some((0, 100)));
        assert_eq!(
            log.offset_for_timestamp("t", 0, 240).unwrap(),
            Some((3, 250))
        );
        assert_eq!(
            log.offset_for_timestamp("t", 0, 251).unwrap(),
            Some((4, 300))
        );
        assert_eq!(log.offset_for_timestamp("t", 0, 351).unwrap(), None);
    }

    #[test]
    fn deleted_topics_are_gone_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = Log::open(dir.path(), BrokerConfig::default()).unwrap();
            log.create_topic("t", 2).unwrap();
            log.create_topic("keep", 1).unwrap();
            log.delete_topic("t").unwrap();
            assert!(matches!(
                log.delete_topic("t"),
                Err(LogError::UnknownTopic(_))
            ));
        }
        let log = Log::open(dir.path(), BrokerConfig::default()).unwrap();
        assert_eq!(
            log.topics()
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            vec!["keep"]
        );
        assert!(!dir.path().join("log/t-0").exists());
    }

    #[test]
    fn a_clean_close_is_remembered_until_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("log").join(CLEAN_SHUTDOWN_FILE);
        {
            let log = Log::open(dir.path(), BrokerConfig::default()).unwrap();
            log.create_topic("t", 1).unwrap();
            log.produce("t", vec![Record::new(Some("k"), "v", 1)])
                .unwrap();
            log.close().unwrap();
            assert!(marker.exists());
        }
        let log = Log::open(dir.path(), BrokerConfig::default()).unwrap();
        assert!(
            !marker.exists(),
            "a crash after this open must count as unclean"
        );
        assert_eq!(log.high_watermark("t", 0).unwrap(), 1);
    }

    #[test]
    fn interval_flushing_is_configured_as_documented_and_acknowledges_at_once() {
        let config: BrokerConfig = serde_json::from_str(r#"{"flush": {"every": "20ms"}}"#).unwrap();
        assert_eq!(
            config.flush,
            FlushPolicy::Every(std::time::Duration::from_millis(20))
        );
        let always: BrokerConfig = serde_json::from_str(r#"{"flush": "always"}"#).unwrap();
        assert_eq!(always.flush, FlushPolicy::Always);
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), config).unwrap();
        log.create_topic("t", 1).unwrap();
        log.produce("t", vec![Record::new(Some("k"), "v", 1)])
            .unwrap();
        assert_eq!(log.read("t", 0, 0, usize::MAX).unwrap().0.len(), 1);
        log.close().unwrap();
    }
}
