//! Checkpoints: where the window computation stood when it last emitted.
//!
//! A checkpoint rides as a header on the first record of each batch of metric rows, so it is
//! appended together with the rows it describes: after a crash, the newest checkpoint on the
//! `metrics` topic says which telemetry records every emitted window already counted (`offsets`)
//! and the state of each window clock. Records before those offsets are only loaded into the hot
//! store; the rest go through the clocks again, so no window is lost or counted twice.

use std::collections::BTreeMap;

use polis_broker::ConsumedRecord;
use serde::{Deserialize, Serialize};

use crate::windows::ClockState;

/// The record header that carries a checkpoint (JSON).
pub(crate) const HEADER: &str = "polis-checkpoint";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// Increases by one per checkpoint; the highest is the newest.
    pub seq: u64,
    /// The next telemetry offset to observe, by `{topic}/{partition}`.
    pub offsets: BTreeMap<String, i64>,
    /// Each window clock's state, by [`WindowSpec::key`](crate::windows::WindowSpec::key).
    pub clocks: BTreeMap<String, ClockState>,
}

impl Checkpoint {
    /// Keeps `records`' newest checkpoint if it is newer than this one.
    pub fn advance(&mut self, records: &[ConsumedRecord]) {
        for r in records {
            let Some(bytes) = r.record.header(HEADER) else {
                continue;
            };
            match serde_json::from_slice::<Checkpoint>(bytes) {
                Ok(found) if found.seq > self.seq => *self = found,
                Ok(_) => {}
                Err(e) => tracing::error!(
                    partition = r.partition,
                    offset = r.offset,
                    error = %e,
                    "ignoring a metrics checkpoint that does not decode"
                ),
            }
        }
    }

    /// The offset of `partition` below which every record was counted before this checkpoint.
    pub fn counted_below(&self, partition: &str) -> i64 {
        self.offsets.get(partition).copied().unwrap_or(i64::MIN)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("checkpoints serialize")
    }
}

#[cfg(test)]
mod tests {
    use polis_broker::Record;

    use super::*;

    fn carrying(checkpoint: &Checkpoint, offset: i64) -> ConsumedRecord {
        let mut record = Record::new(Some("k"), "{}", 0);
        record.headers = vec![(HEADER.to_string(), checkpoint.encode().into())];
        ConsumedRecord {
            topic: "metrics".into(),
            partition: 0,
            offset,
            record,
        }
    }

    #[test]
    fn the_newest_checkpoint_wins_whatever_order_it_is_read_in() {
        let older = Checkpoint {
            seq: 1,
            offsets: BTreeMap::from([("telemetry.energy/0".to_string(), 10)]),
            ..Checkpoint::default()
        };
        let newer = Checkpoint {
            seq: 2,
            offsets: BTreeMap::from([("telemetry.energy/0".to_string(), 25)]),
            ..Checkpoint::default()
        };
        let mut latest = Checkpoint::default();
        latest.advance(&[carrying(&newer, 7), carrying(&older, 3)]);
        assert_eq!(latest, newer);
        assert_eq!(latest.counted_below("telemetry.energy/0"), 25);
        assert_eq!(latest.counted_below("telemetry.energy/1"), i64::MIN);
    }
}
