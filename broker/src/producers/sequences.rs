//! The sequence numbers of one partition's idempotent producers: which batch may be appended next,
//! and the offsets of each producer's last five batches, so a retry is answered, not stored again.

use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer: Kafka clients keep at most five requests in flight.
const REMEMBERED: usize = 5;

/// What an idempotent producer's batch header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_sequence: i32,
    pub last_sequence: i32,
}

impl ProducerBatch {
    /// Reads the producer fields of a RecordBatch v2 header; `None` for a batch without a
    /// producer id (not idempotent) or too short to have one.
    pub fn parse(batch: &[u8]) -> Option<ProducerBatch> {
        let field = |at: usize, len: usize| batch.get(at..at + len);
        let producer_id = i64::from_be_bytes(field(43, 8)?.try_into().ok()?);
        if producer_id < 0 {
            return None;
        }
        let last_offset_delta = i32::from_be_bytes(field(23, 4)?.try_into().ok()?);
        let first_sequence = i32::from_be_bytes(field(53, 4)?.try_into().ok()?);
        Some(ProducerBatch {
            producer_id,
            epoch: i16::from_be_bytes(field(51, 2)?.try_into().ok()?),
            first_sequence,
            last_sequence: add_sequence(first_sequence, last_offset_delta),
        })
    }
}

/// Sequence numbers wrap from `i32::MAX` to 0.
fn add_sequence(sequence: i32, delta: i32) -> i32 {
    ((i64::from(sequence) + i64::from(delta)) % (i64::from(i32::MAX) + 1)) as i32
}

/// What to do with a producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Append,
    /// A retry of a batch already stored at this base offset.
    Duplicate(i64),
    OutOfOrder {
        expected: i32,
    },
    StaleEpoch {
        current: i16,
    },
}

struct Producer {
    epoch: i16,
    /// (first sequence, last sequence, base offset) of the latest batches, oldest first.
    batches: VecDeque<(i32, i32, i64)>,
    /// When it last appended, in appends to this partition: the least recent is forgotten first.
    used: u64,
}

/// The producers of one partition.
pub(crate) struct PartitionProducers {
    producers: HashMap<i64, Producer>,
    max_producers: usize,
    appends: u64,
    /// Whether the state was rebuilt from the partition's tail since the broker started.
    pub recovered: bool,
}

impl PartitionProducers {
    pub fn new(max_producers: usize) -> PartitionProducers {
        PartitionProducers {
            producers: HashMap::new(),
            max_producers,
            appends: 0,
            recovered: false,
        }
    }

    pub fn check(&self, batch: &ProducerBatch) -> Verdict {
        let Some(producer) = self.producers.get(&batch.producer_id) else {
            // Unknown (new, or forgotten): any sequence is accepted, as Kafka does.
            return Verdict::Append;
        };
        if batch.epoch < producer.epoch {
            return Verdict::StaleEpoch {
                current: producer.epoch,
            };
        }
        if batch.epoch > producer.epoch {
            return if batch.first_sequence == 0 {
                Verdict::Append
            } else {
                Verdict::OutOfOrder { expected: 0 }
            };
        }
        if let Some((_, _, offset)) = producer
            .batches
            .iter()
            .find(|(first, last, _)| *first == batch.first_sequence && *last == batch.last_sequence)
        {
            return Verdict::Duplicate(*offset);
        }
        let expected = producer
            .batches
            .back()
            .map_or(0, |(_, last, _)| add_sequence(*last, 1));
        if producer.batches.is_empty() || batch.first_sequence == expected {
            Verdict::Append
        } else {
            Verdict::OutOfOrder { expected }
        }
    }

    /// Remembers a batch stored at `base_offset`, forgetting the least recently active producer
    /// when there are too many.
    pub fn record(&mut self, batch: &ProducerBatch, base_offset: i64) {
        self.appends += 1;
        if !self.producers.contains_key(&batch.producer_id)
            && self.producers.len() >= self.max_producers
        {
            let least_recent = self
                .producers
                .iter()
                .min_by_key(|(_, p)| p.used)
                .map(|(id, _)| *id);
            if let Some(id) = least_recent {
                self.producers.remove(&id);
            }
        }
        let producer = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| Producer {
                epoch: batch.epoch,
                batches: VecDeque::new(),
                used: 0,
            });
        if producer.epoch != batch.epoch {
            producer.epoch = batch.epoch;
            producer.batches.clear();
        }
        producer
            .batches
            .push_back((batch.first_sequence, batch.last_sequence, base_offset));
        if producer.batches.len() > REMEMBERED {
            producer.batches.pop_front();
        }
        producer.used = self.appends;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(producer_id: i64, epoch: i16, first: i32, count: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id,
            epoch,
            first_sequence: first,
            last_sequence: add_sequence(first, count - 1),
        }
    }

    #[test]
    fn sequences_continue_retries_are_found_and_gaps_refused() {
        let mut state = PartitionProducers::new(10);
        assert_eq!(state.check(&batch(1, 0, 0, 3)), Verdict::Append);
        state.record(&batch(1, 0, 0, 3), 100);
        assert_eq!(state.check(&batch(1, 0, 0, 3)), Verdict::Duplicate(100));
        assert_eq!(
            state.check(&batch(1, 0, 4, 1)),
            Verdict::OutOfOrder { expected: 3 }
        );
        assert_eq!(state.check(&batch(1, 0, 3, 2)), Verdict::Append);
        for (i, first) in [3, 5, 7, 9, 11].into_iter().enumerate() {
            state.record(&batch(1, 0, first, 2), 200 + i as i64);
        }
        assert_eq!(
            state.check(&batch(1, 0, 3, 2)),
            Verdict::Duplicate(200),
            "five batches are remembered"
        );
        assert_eq!(
            state.check(&batch(1, 0, 0, 3)),
            Verdict::OutOfOrder { expected: 13 },
            "older ones are not"
        );
    }

    #[test]
    fn epochs_fence_older_batches_and_restart_sequences() {
        let mut state = PartitionProducers::new(10);
        state.record(&batch(1, 2, 0, 1), 0);
        assert_eq!(
            state.check(&batch(1, 1, 1, 1)),
            Verdict::StaleEpoch { current: 2 }
        );
        assert_eq!(
            state.check(&batch(1, 3, 5, 1)),
            Verdict::OutOfOrder { expected: 0 }
        );
        assert_eq!(state.check(&batch(1, 3, 0, 1)), Verdict::Append);
        state.record(&batch(1, 3, 0, 1), 1);
        assert_eq!(
            state.check(&batch(1, 2, 1, 1)),
            Verdict::StaleEpoch { current: 3 }
        );
    }

    #[test]
    fn sequences_wrap_and_headers_are_read_where_kafka_puts_them() {
        let mut state = PartitionProducers::new(10);
        state.record(&batch(1, 0, i32::MAX - 1, 2), 0);
        assert_eq!(state.check(&batch(1, 0, 0, 1)), Verdict::Append);
        let mut header = vec![0u8; 61];
        header[23..27].copy_from_slice(&4i32.to_be_bytes());
        header[43..51].copy_from_slice(&7i64.to_be_bytes());
        header[51..53].copy_from_slice(&2i16.to_be_bytes());
        header[53..57].copy_from_slice(&10i32.to_be_bytes());
        assert_eq!(ProducerBatch::parse(&header), Some(batch(7, 2, 10, 5)));
        header[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        assert_eq!(
            ProducerBatch::parse(&header),
            None,
            "no producer id: not idempotent"
        );
        assert_eq!(ProducerBatch::parse(&header[..50]), None);
    }

    #[test]
    fn the_least_recently_active_producer_is_forgotten_first() {
        let mut state = PartitionProducers::new(2);
        state.record(&batch(1, 0, 0, 1), 0);
        state.record(&batch(2, 0, 0, 1), 1);
        state.record(&batch(1, 0, 1, 1), 2);
        state.record(&batch(3, 0, 0, 1), 3);
        assert_eq!(
            state.check(&batch(2, 0, 0, 1)),
            Verdict::Append,
            "producer 2 was forgotten"
        );
        assert_eq!(state.check(&batch(1, 0, 1, 1)), Verdict::Duplicate(2));
        assert_eq!(state.check(&batch(3, 0, 0, 1)), Verdict::Duplicate(3));
    }
}
