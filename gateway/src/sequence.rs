//! Per-device sequence numbers: which messages are duplicates, how many went missing.
//!
//! A device may number its messages with `seq` (0, 1, 2, …). Per device the tracker keeps the
//! highest number seen, `H`, and which of the [`WINDOW`] numbers `H-63..=H` arrived. A message
//! with number `s` is:
//! - **new** when `s > H`; the `s - H - 1` numbers skipped are counted as a gap (missing messages);
//! - **late** when `H - 63 <= s < H` and `s` has not been seen: accepted (reordered), the gap
//!   already counted stays counted;
//! - a **duplicate** when `s` is in the window and was seen: dead-lettered as `duplicate`;
//! - a **restart** when `s = 0` (a device starts numbering at 0 after boot) or `s < H - 63`
//!   (too far back to be a redelivery): accepted, and tracking starts again from `s`.
//!
//! The first message of a device not tracked yet is new. At most `capacity` devices are
//! tracked; the least recently seen is forgotten first (its next message counts as its first).
//! A batch's changes are provisional ([`SequenceTracker::begin`]) until the batch is durable:
//! [`SequenceTracker::rollback`] undoes them when the append failed, so that the redelivery of
//! those messages is not taken for duplicates.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// How many of the most recent sequence numbers per device are remembered.
pub const WINDOW: u64 = 64;

/// What one sequence number means for its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Higher than any before; `gap` numbers were skipped.
    New { gap: u64 },
    /// Within the window and not seen before.
    Late,
    /// Within the window and seen before.
    Duplicate { highest: u64 },
    /// Numbering started again (0, or far below the highest).
    Restart { highest: u64 },
}

#[derive(Debug, Clone)]
struct Tracked {
    /// `None` until the device sends a `seq`.
    highest: Option<u64>,
    /// Bit `i` set: `highest - i` was seen.
    seen: u64,
    duplicates: u64,
    gaps: u64,
    restarts: u64,
    last_seen: DateTime<Utc>,
    tick: u64,
}

/// One device's line in `GET /api/devices/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceStatus {
    pub device_id: String,
    /// The highest sequence number seen since the last restart; `null` when it sends none.
    pub last_sequence: Option<u64>,
    pub duplicates: u64,
    pub gaps: u64,
    pub restarts: u64,
    #[serde(with = "polis_time")]
    pub last_seen: DateTime<Utc>,
}

mod polis_time {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&polis_telemetry::reading::format_time(*t))
    }
}

/// The tracked devices, least recently seen evicted first.
#[derive(Debug)]
pub struct SequenceTracker {
    capacity: usize,
    devices: HashMap<String, Tracked>,
    /// `tick` → device id, oldest first.
    order: BTreeMap<u64, String>,
    tick: u64,
    /// The state before the open batch of each device it changed (`None`: was not tracked).
    undo: HashMap<String, Option<Tracked>>,
}

impl SequenceTracker {
    pub fn new(capacity: usize) -> SequenceTracker {
        SequenceTracker {
            capacity: capacity.max(1),
            devices: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            undo: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Opens a batch: changes from here on can be undone until [`Self::commit`].
    pub fn begin(&mut self) {
        self.undo.clear();
    }

    /// The batch is durable: keep its changes.
    pub fn commit(&mut self) {
        self.undo.clear();
    }

    /// The batch was not stored: forget what it changed.
    pub fn rollback(&mut self) {
        for (device, before) in std::mem::take(&mut self.undo) {
            if let Some(now) = self.devices.remove(&device) {
                self.order.remove(&now.tick);
            }
            if let Some(before) = before {
                self.order.insert(before.tick, device.clone());
                self.devices.insert(device, before);
            }
        }
    }

    /// Notes a message of `device` at `now`, numbered `seq` if it carries one.
    pub fn observe(&mut self, device: &str, seq: Option<u64>, now: DateTime<Utc>) -> Verdict {
        self.tick += 1;
        let tick = self.tick;
        let tracked = match self.devices.get_mut(device) {
            Some(tracked) => {
                if !self.undo.contains_key(device) {
                    self.undo.insert(device.to_string(), Some(tracked.clone()));
                }
                self.order.remove(&tracked.tick);
                tracked
            }
            None => {
                if self.devices.len() >= self.capacity {
                    self.evict_oldest();
                }
                self.undo.entry(device.to_string()).or_insert(None);
                self.devices.entry(device.to_string()).or_insert(Tracked {
                    highest: None,
                    seen: 0,
                    duplicates: 0,
                    gaps: 0,
                    restarts: 0,
                    last_seen: now,
                    tick,
                })
            }
        };
        self.order.insert(tick, device.to_string());
        tracked.tick = tick;
        tracked.last_seen = now;
        let Some(seq) = seq else {
            return Verdict::New { gap: 0 };
        };
        let verdict = match tracked.highest {
            None => Verdict::New { gap: 0 },
            Some(highest) if seq > highest => Verdict::New {
                gap: seq - highest - 1,
            },
            Some(highest) if seq == 0 || highest - seq >= WINDOW => Verdict::Restart { highest },
            Some(highest) if tracked.seen & (1 << (highest - seq)) != 0 => {
                Verdict::Duplicate { highest }
            }
            Some(_) => Verdict::Late,
        };
        match verdict {
            Verdict::New { gap } => {
                let shift = tracked.highest.map_or(WINDOW, |h| seq - h);
                tracked.seen = if shift >= WINDOW {
                    1
                } else {
                    (tracked.seen << shift) | 1
                };
                tracked.highest = Some(seq);
                tracked.gaps += gap;
            }
            Verdict::Late => {
                let highest = tracked.highest.expect("late only after a first number");
                tracked.seen |= 1 << (highest - seq);
            }
            Verdict::Duplicate { .. } => tracked.duplicates += 1,
            Verdict::Restart { .. } => {
                tracked.highest = Some(seq);
                tracked.seen = 1;
                tracked.restarts += 1;
            }
        }
        verdict
    }

    fn evict_oldest(&mut self) {
        if let Some((_, device)) = self.order.pop_first()
            && let Some(evicted) = self.devices.remove(&device)
        {
            self.undo.entry(device).or_insert(Some(evicted));
        }
    }

    /// Every tracked device, by id.
    pub fn status(&self) -> Vec<DeviceStatus> {
        self.status_page(None, usize::MAX)
    }

    /// Up to `limit` tracked devices whose ids sort after `after`, by id.
    pub fn status_page(&self, after: Option<&str>, limit: usize) -> Vec<DeviceStatus> {
        let mut page: Vec<(&String, &Tracked)> = self
            .devices
            .iter()
            .filter(|(id, _)| after.is_none_or(|after| id.as_str() > after))
            .collect();
        page.sort_unstable_by(|a, b| a.0.cmp(b.0));
        page.truncate(limit);
        page.into_iter()
            .map(|(device_id, t)| DeviceStatus {
                device_id: device_id.clone(),
                last_sequence: t.highest,
                duplicates: t.duplicates,
                gaps: t.gaps,
                restarts: t.restarts,
                last_seen: t.last_seen,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn run(tracker: &mut SequenceTracker, device: &str, seqs: &[u64]) -> Vec<Verdict> {
        seqs.iter()
            .map(|s| tracker.observe(device, Some(*s), at(0)))
            .collect()
    }

    #[test]
    fn numbers_are_new_late_duplicate_or_a_restart() {
        let mut t = SequenceTracker::new(10);
        assert_eq!(
            run(&mut t, "d", &[5, 6, 6, 9, 7, 7, 100, 36, 37, 0, 1, 1]),
            [
                Verdict::New { gap: 0 },
                Verdict::New { gap: 0 },
                Verdict::Duplicate { highest: 6 },
                Verdict::New { gap: 2 },
                Verdict::Late,
                Verdict::Duplicate { highest: 9 },
                Verdict::New { gap: 90 },
                Verdict::Restart { highest: 100 },
                Verdict::New { gap: 0 },
                Verdict::Restart { highest: 37 },
                Verdict::New { gap: 0 },
                Verdict::Duplicate { highest: 1 },
            ]
        );
        let status = &t.status()[0];
        assert_eq!(
            (
                status.last_sequence,
                status.duplicates,
                status.gaps,
                status.restarts
            ),
            (Some(1), 3, 92, 2)
        );
    }

    #[test]
    fn the_window_reaches_back_63_numbers() {
        let mut t = SequenceTracker::new(10);
        run(&mut t, "d", &[1000]);
        assert_eq!(run(&mut t, "d", &[937]), [Verdict::Late]);
        assert_eq!(
            run(&mut t, "d", &[936]),
            [Verdict::Restart { highest: 1000 }]
        );
    }

    #[test]
    fn the_least_recently_seen_device_is_forgotten_first() {
        let mut t = SequenceTracker::new(2);
        t.observe("a", Some(1), at(0));
        t.observe("b", Some(1), at(1));
        t.observe("a", Some(2), at(2));
        t.observe("c", None, at(3));
        let ids: Vec<_> = t.status().into_iter().map(|s| s.device_id).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(t.status()[1].last_sequence, None);
        assert_eq!(run(&mut t, "b", &[1]), [Verdict::New { gap: 0 }]);
        let page: Vec<_> = t
            .status_page(Some("a"), 1)
            .into_iter()
            .map(|s| s.device_id)
            .collect();
        assert_eq!(page, ["b"]);
    }

    #[test]
    fn a_rolled_back_batch_leaves_no_trace() {
        let mut t = SequenceTracker::new(2);
        t.begin();
        run(&mut t, "a", &[1, 2]);
        run(&mut t, "b", &[1]);
        t.commit();
        let before = t.status();
        t.begin();
        run(&mut t, "a", &[3, 3]);
        run(&mut t, "c", &[7]);
        t.rollback();
        assert_eq!(t.status(), before);
        assert_eq!(run(&mut t, "a", &[3]), [Verdict::New { gap: 0 }]);
    }
}
