//! The log: named topics of partitions, produce with group commit, reads, and append wake-ups.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::{BrokerConfig, TopicSpec};
use crate::error::LogError;
use crate::partition::Partition;
use crate::partitioner::partition_for_key;
use crate::record::{Record, StoredRecord};

const TOPICS_FILE: &str = "topics.json";

struct Topic {
    partitions: Vec<Partition>,
    /// Spreads records without a key over the partitions.
    round_robin: AtomicU32,
}

#[derive(Serialize, Deserialize, Default)]
struct TopicsFile {
    topics: Vec<TopicSpec>,
}

/// The embedded, durable, partitioned log.
pub struct Log {
    dir: PathBuf,
    config: BrokerConfig,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Bumped after every durable append, to wake long-polling readers.
    appends: watch::Sender<u64>,
}

impl Log {
    /// Opens the log under `{data_dir}/log`, recovering every partition.
    pub fn open(data_dir: &Path, config: BrokerConfig) -> Result<Arc<Log>, LogError> {
        let dir = data_dir.join("log");
        fs::create_dir_all(&dir).map_err(LogError::io(&dir))?;
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
        };
        for spec in specs {
            let topic = log.open_topic(&spec)?;
            log.topics
                .write()
                .expect("topics lock")
                .insert(spec.name, Arc::new(topic));
        }
        Ok(Arc::new(log))
    }

    fn open_topic(&self, spec: &TopicSpec) -> Result<Topic, LogError> {
        let partitions = (0..spec.partitions)
            .map(|p| {
                Partition::open(
                    &self.dir.join(format!("{}-{p}", spec.name)),
                    self.config.segment_size.as_u64(),
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Topic {
            partitions,
            round_robin: AtomicU32::new(0),
        })
    }

    /// Creates `name` with `partitions` partitions, or checks that it already exists with as many.
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), LogError> {
        if name.is_empty()
            || name.len() > 249
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(LogError::InvalidTopicName(name.to_string()));
        }
        let mut topics = self.topics.write().expect("topics lock");
        if let Some(existing) = topics.get(name) {
            let existing = existing.partitions.len() as i32;
            return if existing == partitions {
                Ok(())
            } else {
                Err(LogError::PartitionCountMismatch {
                    topic: name.to_string(),
                    existing,
                    requested: partitions,
                })
            };
        }
        let spec = TopicSpec {
            name: name.to_string(),
            partitions,
        };
        let topic = self.open_topic(&spec)?;
        topics.insert(name.to_string(), Arc::new(topic));
        let mut specs: Vec<TopicSpec> = topics
            .iter()
            .map(|(name, t)| TopicSpec {
                name: name.clone(),
                partitions: t.partitions.len() as i32,
            })
            .collect();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        self.write_topics_file(&TopicsFile { topics: specs })
    }

    fn write_topics_file(&self, file: &TopicsFile) -> Result<(), LogError> {
        let path = self.dir.join(TOPICS_FILE);
        let tmp = self.dir.join(format!("{TOPICS_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(file).expect("topic specs serialize");
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

    /// Topic names and partition counts.
    pub fn topics(&self) -> Vec<TopicSpec> {
        let topics = self.topics.read().expect("topics lock");
        let mut specs: Vec<TopicSpec> = topics
            .iter()
            .map(|(name, t)| TopicSpec {
                name: name.clone(),
                partitions: t.partitions.len() as i32,
            })
            .collect();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        specs
    }

    pub fn partition_count(&self, topic: &str) -> Result<i32, LogError> {
        Ok(self.topic(topic)?.partitions.len() as i32)
    }

    /// Appends `records` durably, each to the partition of its key (murmur2) or round-robin when it
    /// has none. Returns each record's `(partition, offset)`, in input order. One fsync per touched
    /// segment covers the whole call (group commit). Blocks on disk I/O.
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
            pending.push((p, append));
        }
        if self.config.fsync {
            for (p, append) in &pending {
                let path = self.dir.join(format!("{topic_name}-{p}"));
                append.file.sync_data().map_err(LogError::io(path))?;
            }
        }
        for (p, append) in &pending {
            topic.partitions[*p].commit(append.end_offset);
        }
        self.appends.send_modify(|n| *n += 1);
        placed.sort_unstable_by_key(|(i, _, _)| *i);
        Ok(placed.into_iter().map(|(_, p, o)| (p, o)).collect())
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
        let (start, end) = (p.log_start_offset(), p.high_watermark());
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange {
                topic: topic_name.to_string(),
                partition,
                offset,
                start,
                end,
            });
        }
        Ok((p.read(offset, max_bytes)?, end))
    }

    /// The offset the next durable record of the partition will get.
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Result<i64, LogError> {
        let t = self.topic(topic)?;
        Ok(Self::partition(&t, topic, partition)?.high_watermark())
    }

    /// A receiver that changes after every durable append.
    pub fn subscribe_appends(&self) -> watch::Receiver<u64> {
        self.appends.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitioner::partition_for_key;

    #[test]
    fn topics_and_records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = Log::open(dir.path(), BrokerConfig::default()).unwrap();
            log.create_topic("telemetry.traffic", 4).unwrap();
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
        assert_eq!(
            log.topics(),
            vec![TopicSpec {
                name: "telemetry.traffic".into(),
                partitions: 4
            }]
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
}
