//! Idempotent producers: producer ids that are never handed out twice ([`ids`]), and per-partition
//! sequence numbers ([`sequences`]) that turn a retried batch into its original offset instead of
//! a second copy, and refuse a batch that skips ahead.
//!
//! Appends of idempotent batches hold their partitions' producer state from the sequence check
//! until the batch is durable and recorded, so a retry racing its original (from a second
//! connection) still sees it. Partitions are locked in ascending order, one topic at a time.
//! Producer state is kept in memory; after a restart, the first idempotent produce to a partition
//! rebuilds it from the partition's latest records (`broker.producer_state_recovery_records`).

mod ids;
mod sequences;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::BrokerConfig;
use crate::error::LogError;
use crate::log::Log;
use ids::ProducerIds;
use sequences::{PartitionProducers, ProducerBatch, Verdict};

/// Bytes read at a time while recovering producer state.
const RECOVERY_READ: usize = 1 << 20;

/// Why a producer's batch was not appended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppendError {
    #[error(
        "out of order: producer {producer_id} (epoch {epoch}) sent sequence {got} but the partition expects {expected}"
    )]
    OutOfOrder {
        producer_id: i64,
        epoch: i16,
        expected: i32,
        got: i32,
    },
    #[error(
        "producer {producer_id} sent epoch {got}, older than its current epoch {current}: it was fenced"
    )]
    StaleEpoch {
        producer_id: i64,
        got: i16,
        current: i16,
    },
    #[error(transparent)]
    Log(#[from] LogError),
}

type Shared = Arc<Mutex<PartitionProducers>>;

/// Producer ids and the sequence state of every partition.
pub(crate) struct Producers {
    ids: ProducerIds,
    partitions: Mutex<HashMap<(String, i32), Shared>>,
    max_per_partition: usize,
    recovery_records: i64,
}

impl Producers {
    /// Opens the producer-id file in `dir`.
    pub fn open(dir: &Path, config: &BrokerConfig) -> Result<Producers, LogError> {
        Ok(Producers {
            ids: ProducerIds::open(dir)?,
            partitions: Mutex::new(HashMap::new()),
            max_per_partition: config.max_producers_per_partition,
            recovery_records: config.producer_state_recovery_records,
        })
    }

    /// A new producer id (epoch 0). Blocks on disk I/O now and then.
    pub fn allocate_id(&self) -> Result<i64, LogError> {
        self.ids.allocate()
    }

    /// Appends one batch per partition of `topic` like [`Log::append_batches`], checking the
    /// sequence numbers of idempotent batches first: a retry is answered with its original base
    /// offset and not stored again.
    pub fn append(
        &self,
        log: &Log,
        topic: &str,
        batches: Vec<(i32, Vec<u8>)>,
    ) -> Result<Vec<Result<i64, AppendError>>, LogError> {
        let headers: Vec<Option<ProducerBatch>> = batches
            .iter()
            .map(|(_, bytes)| ProducerBatch::parse(bytes))
            .collect();
        let mut touched: Vec<i32> = batches
            .iter()
            .zip(&headers)
            .filter(|(_, h)| h.is_some())
            .map(|((p, _), _)| *p)
            .collect();
        touched.sort_unstable();
        touched.dedup();
        let shared: Vec<(i32, Shared)> = touched
            .into_iter()
            .map(|p| (p, self.shared(topic, p)))
            .collect();
        let mut states: HashMap<i32, MutexGuard<'_, PartitionProducers>> = HashMap::new();
        for (partition, state) in &shared {
            let mut guard = state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if !guard.recovered {
                self.recover(log, topic, *partition, &mut guard);
            }
            states.insert(*partition, guard);
        }

        let mut results: Vec<Option<Result<i64, AppendError>>> =
            (0..batches.len()).map(|_| None).collect();
        let mut appending = Vec::new();
        let mut appended_from = Vec::new();
        for (i, ((partition, bytes), header)) in batches.into_iter().zip(&headers).enumerate() {
            let verdict = match (header, states.get(&partition)) {
                (Some(batch), Some(state)) => state.check(batch),
                _ => Verdict::Append,
            };
            match (verdict, header) {
                (Verdict::Duplicate(offset), _) => results[i] = Some(Ok(offset)),
                (Verdict::OutOfOrder { expected }, Some(b)) => {
                    let refused = AppendError::OutOfOrder {
                        producer_id: b.producer_id,
                        epoch: b.epoch,
                        expected,
                        got: b.first_sequence,
                    };
                    results[i] = Some(Err(refused));
                }
                (Verdict::StaleEpoch { current }, Some(b)) => {
                    results[i] = Some(Err(AppendError::StaleEpoch {
                        producer_id: b.producer_id,
                        got: b.epoch,
                        current,
                    }));
                }
                _ => {
                    appending.push((partition, bytes));
                    appended_from.push(i);
                }
            }
        }
        let partitions: Vec<i32> = appending.iter().map(|(p, _)| *p).collect();
        let appended = log.append_batches(topic, appending)?;
        for ((i, partition), result) in appended_from.into_iter().zip(partitions).zip(appended) {
            if let (Ok(offset), Some(batch), Some(state)) =
                (&result, &headers[i], states.get_mut(&partition))
            {
                state.record(batch, *offset);
            }
            results[i] = Some(result.map_err(AppendError::from));
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every batch has a result"))
            .collect())
    }

    /// Forgets the producer state of a deleted topic.
    pub fn forget_topic(&self, topic: &str) {
        self.partitions().retain(|(t, _), _| t != topic);
    }

    fn partitions(&self) -> MutexGuard<'_, HashMap<(String, i32), Shared>> {
        self.partitions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn shared(&self, topic: &str, partition: i32) -> Shared {
        self.partitions()
            .entry((topic.to_string(), partition))
            .or_insert_with(|| {
                Arc::new(Mutex::new(PartitionProducers::new(self.max_per_partition)))
            })
            .clone()
    }

    /// Rebuilds a partition's producer state from the batches of its latest records.
    fn recover(&self, log: &Log, topic: &str, partition: i32, state: &mut PartitionProducers) {
        state.recovered = true;
        let (Ok(start), Ok(end)) = (
            log.log_start_offset(topic, partition),
            log.high_watermark(topic, partition),
        ) else {
            return;
        };
        let mut offset = end.saturating_sub(self.recovery_records).max(start);
        while offset < end {
            let Ok(read) = log.read_batches(topic, partition, offset, RECOVERY_READ) else {
                return;
            };
            let Some(last) = read.batches.last() else {
                return;
            };
            for batch in &read.batches {
                if let Some(producer) = ProducerBatch::parse(batch) {
                    state.record(
                        &producer,
                        i64::from_be_bytes(
                            batch[..8].try_into().expect("a stored batch has a header"),
                        ),
                    );
                }
            }
            let base =
                i64::from_be_bytes(last[..8].try_into().expect("a stored batch has a header"));
            let delta = i32::from_be_bytes(
                last[23..27]
                    .try_into()
                    .expect("a stored batch has a header"),
            );
            offset = base + i64::from(delta) + 1;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::batch;
    use crate::record::Record;

    /// An idempotent producer's batch of `count` records from sequence `first`.
    pub(crate) fn idempotent_batch(
        producer_id: i64,
        epoch: i16,
        first: i32,
        count: usize,
    ) -> Vec<u8> {
        let records: Vec<Record> = (0..count)
            .map(|i| Record::new(Some("k"), format!("v{first}-{i}"), 1))
            .collect();
        let mut bytes = batch::encode(0, &records).to_vec();
        bytes[43..51].copy_from_slice(&producer_id.to_be_bytes());
        bytes[51..53].copy_from_slice(&epoch.to_be_bytes());
        bytes[53..57].copy_from_slice(&first.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    fn offsets(results: Vec<Result<i64, AppendError>>) -> Vec<Result<i64, String>> {
        results
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }

    #[test]
    fn retries_are_answered_with_the_original_offset_even_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig::default();
        {
            let log = Log::open(dir.path(), config.clone()).unwrap();
            log.create_topic("t", 2).unwrap();
            let producers = Producers::open(dir.path(), &config).unwrap();
            let first = producers
                .append(
                    &log,
                    "t",
                    vec![
                        (0, idempotent_batch(7, 0, 0, 3)),
                        (1, idempotent_batch(7, 0, 0, 1)),
                    ],
                )
                .unwrap();
            assert_eq!(offsets(first), vec![Ok(0), Ok(0)]);
            let retry = producers
                .append(&log, "t", vec![(0, idempotent_batch(7, 0, 0, 3))])
                .unwrap();
            assert_eq!(offsets(retry), vec![Ok(0)]);
            let plain = batch::encode(0, &[Record::new(Some("k"), "plain", 1)]).to_vec();
            let mixed = producers
                .append(
                    &log,
                    "t",
                    vec![(0, idempotent_batch(7, 0, 3, 2)), (1, plain)],
                )
                .unwrap();
            assert_eq!(offsets(mixed), vec![Ok(3), Ok(1)]);
            assert_eq!(
                log.high_watermark("t", 0).unwrap(),
                5,
                "the retry was not stored twice"
            );
        }
        let log = Log::open(dir.path(), config.clone()).unwrap();
        let producers = Producers::open(dir.path(), &config).unwrap();
        let retry = producers
            .append(&log, "t", vec![(0, idempotent_batch(7, 0, 3, 2))])
            .unwrap();
        assert_eq!(
            offsets(retry),
            vec![Ok(3)],
            "recovered from the partition's tail"
        );
        let gap = producers
            .append(&log, "t", vec![(0, idempotent_batch(7, 0, 9, 1))])
            .unwrap();
        assert!(matches!(
            gap[0],
            Err(AppendError::OutOfOrder {
                expected: 5,
                got: 9,
                ..
            })
        ));
        let fenced = producers
            .append(
                &log,
                "t",
                vec![
                    (1, idempotent_batch(7, 1, 0, 1)),
                    (0, idempotent_batch(7, 0, 5, 1)),
                ],
            )
            .unwrap();
        assert_eq!(offsets(fenced), vec![Ok(2), Ok(5)]);
        let stale = producers
            .append(&log, "t", vec![(1, idempotent_batch(7, 0, 1, 1))])
            .unwrap();
        assert!(matches!(
            stale[0],
            Err(AppendError::StaleEpoch {
                got: 0,
                current: 1,
                ..
            })
        ));
        assert_eq!(log.high_watermark("t", 0).unwrap(), 6);
    }

    #[test]
    fn producer_ids_are_allocated_from_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig::default();
        let first = Producers::open(dir.path(), &config)
            .unwrap()
            .allocate_id()
            .unwrap();
        let second = Producers::open(dir.path(), &config)
            .unwrap()
            .allocate_id()
            .unwrap();
        assert!(second > first);
    }
}
