//! Fetching for [`KafkaLog`](super::KafkaLog), with the semantics of
//! [`EmbeddedLog`](crate::EmbeddedLog): consumers that join no group, each positioned where one
//! reader reads.
//!
//! A fetch checks out the idle consumer already positioned at its offsets, or opens one and
//! assigns them; polls it on the caller's blocking thread; and asks the cluster for the high
//! watermarks. Records polled beyond a partition's byte budget stay with the consumer for that
//! reader's next fetch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::{KafkaClientConfig, Shared, invalid_settings, unreachable};
use crate::client::{FetchRequest, FetchedPartition};
use crate::error::LogError;
use crate::record::{Record, StoredRecord};

/// Idle consumers kept for readers' next fetches; beyond it the least recently used is closed.
const MAX_IDLE_CONSUMERS: usize = 8;
/// Longest one wait for records lasts before checking whether the fetch was abandoned.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// Prefetched records one consumer may hold, in KiB (librdkafka's `queued.max.messages.kbytes`,
/// 64 MiB by default); `broker.external.extra` may change it.
const PREFETCH_KIB: &str = "16384";

/// Dropped with the future of a fetch, it tells the blocking read that nobody waits for it any
/// more, so that the read ends (and its consumer closes) within [`POLL_SLICE`].
pub(super) struct Abandon(pub(super) Arc<AtomicBool>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// [`LogError::Closed`] once the fetch was abandoned.
fn check(abandoned: &AtomicBool) -> Result<(), LogError> {
    if abandoned.load(Ordering::Relaxed) {
        Err(LogError::Closed)
    } else {
        Ok(())
    }
}

/// The consumers not fetching right now, least recently used first.
#[derive(Default)]
pub(super) struct Readers(Mutex<VecDeque<Reader>>);

impl Readers {
    /// The idle consumer positioned exactly at `requests`, if there is one.
    pub(super) fn checkout(&self, requests: &[FetchRequest]) -> Option<Reader> {
        let mut idle = self.0.lock().expect("readers lock");
        let found = idle.iter().position(|r| r.positioned_at(requests))?;
        idle.remove(found)
    }

    /// Keeps `reader` for its next fetch, closing the least recently used one beyond the limit.
    pub(super) fn give_back(&self, reader: Reader) {
        let oldest = {
            let mut idle = self.0.lock().expect("readers lock");
            idle.push_back(reader);
            if idle.len() > MAX_IDLE_CONSUMERS {
                idle.pop_front()
            } else {
                None
            }
        };
        // Closed outside the lock: closing a consumer waits for librdkafka.
        drop(oldest);
    }
}

/// One consumer and where it stands in each partition it was last asked for.
pub(super) struct Reader {
    consumer: BaseConsumer,
    parts: Vec<Part>,
    /// Bytes of the records in the parts' stashes.
    stashed: usize,
}

/// One assigned partition.
struct Part {
    topic: String,
    partition: i32,
    /// The offset the next fetch asks for: after the last record returned.
    next: i64,
    /// After the last record the consumer delivered; records before it are not taken again.
    delivered: i64,
    /// Records delivered but not returned yet (beyond a fetch's byte budget), from `next` on.
    stash: VecDeque<StoredRecord>,
}

/// What one fetch takes from one partition.
#[derive(Default)]
struct Taken {
    records: Vec<StoredRecord>,
    bytes: usize,
}

impl Taken {
    fn push(&mut self, record: StoredRecord) {
        self.bytes += record.record.approximate_size();
        self.records.push(record);
    }
}

impl Part {
    /// Stashed records, up to `max_bytes`.
    fn unstash(&mut self, max_bytes: usize) -> Taken {
        let mut taken = Taken::default();
        while taken.bytes < max_bytes
            && let Some(record) = self.stash.pop_front()
        {
            self.next = record.offset + 1;
            taken.push(record);
        }
        taken
    }
}

impl Reader {
    /// A consumer of the cluster with nothing assigned.
    pub(super) fn open(config: &KafkaClientConfig) -> Result<Reader, LogError> {
        let group = format!("{}-reader", config.client_id);
        let consumer = config
            .client_config(
                &[("queued.max.messages.kbytes", PREFETCH_KIB)],
                &[
                    // librdkafka assigns partitions only to a consumer with a group id; this one
                    // never joins its group nor commits offsets to it.
                    ("group.id", &group),
                    ("enable.auto.commit", "false"),
                    // An offset before the log start (deleted by retention) reads on from the
                    // oldest record kept.
                    ("auto.offset.reset", "earliest"),
                ],
            )
            .create()
            .map_err(invalid_settings)?;
        Ok(Reader {
            consumer,
            parts: Vec::new(),
            stashed: 0,
        })
    }

    fn positioned_at(&self, requests: &[FetchRequest]) -> bool {
        self.parts.len() == requests.len()
            && self.parts.iter().zip(requests).all(|(p, r)| {
                p.topic == r.topic && p.partition == r.partition && p.next == r.offset
            })
    }

    /// Reads every requested partition from its offset: the records there, or else the first to
    /// arrive within `max_wait`. When the cluster holds records the consumer has not delivered
    /// yet, waits for them up to `request_timeout` longer. Ends early once `abandoned`.
    pub(super) fn fetch(
        &mut self,
        shared: &Shared,
        requests: &[FetchRequest],
        max_bytes: usize,
        max_wait: Duration,
        abandoned: &AtomicBool,
    ) -> Result<Vec<FetchedPartition>, LogError> {
        let config = &shared.config;
        if !self.positioned_at(requests) {
            self.assign(shared, requests)?;
        }
        let start = Instant::now();
        let patience = start + max_wait + config.request_timeout;
        let mut until = start + max_wait;
        loop {
            let taken = self.poll(config, max_bytes, until, abandoned)?;
            check(abandoned)?;
            let ends = self.offsets(config, Offset::End)?;
            self.check_in_range(config, requests, &ends)?;
            let found = taken.iter().any(|t| !t.records.is_empty());
            if found || until >= patience || !self.behind(config, &ends)? {
                return Ok(self.answer(taken, &ends));
            }
            until = patience;
        }
    }

    /// Assigns the consumer exactly the requested partitions at the requested offsets.
    fn assign(&mut self, shared: &Shared, requests: &[FetchRequest]) -> Result<(), LogError> {
        let config = &shared.config;
        let mut assignment = TopicPartitionList::new();
        for r in requests {
            let partitions = shared.partition_count(&r.topic)?;
            if !(0..partitions).contains(&r.partition) {
                return Err(LogError::UnknownPartition {
                    topic: r.topic.clone(),
                    partition: r.partition,
                    partitions,
                });
            }
            assignment
                .add_partition_offset(&r.topic, r.partition, Offset::Offset(r.offset.max(0)))
                .map_err(|e| config.error("assign partitions", e))?;
        }
        self.consumer
            .assign(&assignment)
            .map_err(|e| config.error("assign partitions", e))?;
        self.parts = requests
            .iter()
            .map(|r| Part {
                topic: r.topic.clone(),
                partition: r.partition,
                next: r.offset,
                delivered: r.offset,
                stash: VecDeque::new(),
            })
            .collect();
        self.stashed = 0;
        Ok(())
    }

    /// Takes records, stashed ones first, until every partition has `max_bytes` or, once some
    /// are taken, until no more are waiting; with none yet, waits for the first until `until`.
    /// Records of partitions already full are stashed, up to as many bytes as one fetch returns
    /// at most, so that a busy partition does not hold back the others for long.
    fn poll(
        &mut self,
        config: &KafkaClientConfig,
        max_bytes: usize,
        until: Instant,
        abandoned: &AtomicBool,
    ) -> Result<Vec<Taken>, LogError> {
        let mut taken: Vec<Taken> = self
            .parts
            .iter_mut()
            .map(|p| p.unstash(max_bytes))
            .collect();
        self.stashed -= taken.iter().map(|t| t.bytes).sum::<usize>();
        let stash_limit = max_bytes.saturating_mul(self.parts.len());
        while self.stashed < stash_limit && taken.iter().any(|t| t.bytes < max_bytes) {
            check(abandoned)?;
            let found = taken.iter().any(|t| !t.records.is_empty());
            let wait = if found {
                Duration::ZERO
            } else {
                until
                    .saturating_duration_since(Instant::now())
                    .min(POLL_SLICE)
            };
            match self.poll_one(config, wait)? {
                Some((index, record)) => self.take(index, record, &mut taken[index], max_bytes),
                None if found || Instant::now() >= until => break,
                None => {}
            }
        }
        Ok(taken)
    }

    /// The next record of an assigned partition and the index of its part, or `None` when
    /// nothing arrived within `wait` (or only a lost connection, which librdkafka re-opens).
    fn poll_one(
        &self,
        config: &KafkaClientConfig,
        wait: Duration,
    ) -> Result<Option<(usize, StoredRecord)>, LogError> {
        match self.consumer.poll(wait) {
            Some(Ok(message)) => Ok(self
                .parts
                .iter()
                .position(|p| p.topic == message.topic() && p.partition == message.partition())
                .map(|index| (index, stored_record(&message)))),
            Some(Err(e)) if unreachable(&e) => {
                tracing::debug!(error = %e, "a Kafka consumer lost its connection; reconnecting");
                Ok(None)
            }
            Some(Err(e)) => Err(config.error("read records", e)),
            None => Ok(None),
        }
    }

    /// Returns `record` in this fetch or stashes it for the next.
    fn take(&mut self, index: usize, record: StoredRecord, taken: &mut Taken, max_bytes: usize) {
        let part = &mut self.parts[index];
        // A batch read from its middle, or from the log start after an offset out of range,
        // begins with records before the requested offset.
        if record.offset < part.delivered {
            return;
        }
        part.delivered = record.offset + 1;
        if part.stash.is_empty() && taken.bytes < max_bytes {
            part.next = record.offset + 1;
            taken.push(record);
        } else {
            self.stashed += record.record.approximate_size();
            part.stash.push_back(record);
        }
    }

    /// Each part's offset as the cluster reports it now: the high watermark for
    /// [`Offset::End`], the log start for [`Offset::Beginning`].
    fn offsets(&self, config: &KafkaClientConfig, which: Offset) -> Result<Vec<i64>, LogError> {
        let action = "look up offsets";
        let mut query = TopicPartitionList::new();
        for p in &self.parts {
            query
                .add_partition_offset(&p.topic, p.partition, which)
                .map_err(|e| config.error(action, e))?;
        }
        let found = self
            .consumer
            .offsets_for_times(query, config.request_timeout)
            .map_err(|e| config.error(action, e))?;
        self.parts
            .iter()
            .map(|p| {
                let answer = found
                    .find_partition(&p.topic, p.partition)
                    .expect("every queried partition is in the answer");
                answer.error().map_err(|e| config.error(action, e))?;
                match answer.offset() {
                    Offset::Offset(offset) => Ok(offset),
                    _ => {
                        Err(config
                            .error(action, KafkaError::OffsetFetch(RDKafkaErrorCode::NoOffset)))
                    }
                }
            })
            .collect()
    }

    /// Refuses a requested offset past its partition's high watermark, as the embedded log does.
    fn check_in_range(
        &self,
        config: &KafkaClientConfig,
        requests: &[FetchRequest],
        ends: &[i64],
    ) -> Result<(), LogError> {
        let Some((index, r)) = requests
            .iter()
            .enumerate()
            .find(|(i, r)| r.offset > ends[*i])
        else {
            return Ok(());
        };
        let starts = self.offsets(config, Offset::Beginning)?;
        Err(LogError::OffsetOutOfRange {
            topic: r.topic.clone(),
            partition: r.partition,
            offset: r.offset,
            start: starts[index],
            end: ends[index],
        })
    }

    /// Whether the cluster holds records from some part's position on that the consumer has not
    /// delivered yet.
    fn behind(&self, config: &KafkaClientConfig, ends: &[i64]) -> Result<bool, LogError> {
        if self.parts.iter().zip(ends).all(|(p, &end)| p.next >= end) {
            return Ok(false);
        }
        let starts = self.offsets(config, Offset::Beginning)?;
        Ok(self
            .parts
            .iter()
            .zip(ends.iter().zip(&starts))
            .any(|(p, (&end, &start))| p.next.max(start) < end))
    }

    fn answer(&self, taken: Vec<Taken>, ends: &[i64]) -> Vec<FetchedPartition> {
        self.parts
            .iter()
            .zip(taken)
            .zip(ends)
            .map(|((p, taken), &high_watermark)| FetchedPartition {
                topic: p.topic.clone(),
                partition: p.partition,
                high_watermark,
                records: taken.records,
            })
            .collect()
    }
}

fn stored_record(message: &BorrowedMessage<'_>) -> StoredRecord {
    let bytes = |b: &[u8]| Bytes::copy_from_slice(b);
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_string(), h.value.map_or_else(Bytes::new, bytes)))
                .collect()
        })
        .unwrap_or_default();
    StoredRecord {
        offset: message.offset(),
        record: Record {
            key: message.key().map(bytes),
            value: message.payload().map_or_else(Bytes::new, bytes),
            timestamp_ms: message.timestamp().to_millis().unwrap_or(-1),
            headers,
        },
    }
}
