//! Event-time bookkeeping: per-partition watermarks, which windows are ready to emit, which
//! emitted windows need a corrected revision, and which records came too late for any window.
//!
//! Each log partition's watermark is the highest event time read from it; the clock's watermark
//! is the lowest of those over the partitions that are not idle, minus the allowed lateness. A
//! partition is idle when it has been read to its end and gave no record for `idle_after` (wall
//! time), so a district whose devices are all quiet does not hold every window back. A partition
//! that has given no record yet holds the watermark back until it is idle, like any other: a
//! topic whose first records come a moment after another's does not find its windows closed.
//!
//! A window is first emitted (revision 0) once the watermark passes its end. It stays open for
//! corrections until the watermark passes its end plus the update horizon: a record for an open
//! window makes it emit again with the next revision. A record whose windows are all final is late:
//! the caller dead-letters it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A window definition: tumbling when `slide_ms == size_ms`, hopping when smaller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct WindowSpec {
    pub size_ms: i64,
    pub slide_ms: i64,
    pub lateness_ms: i64,
    pub horizon_ms: i64,
}

impl WindowSpec {
    /// Starts of the windows that contain `event_ms`, oldest first.
    fn starts_containing(&self, event_ms: i64) -> impl Iterator<Item = i64> + use<> {
        let (size, slide) = (self.size_ms, self.slide_ms);
        let last = event_ms.div_euclid(slide) * slide;
        let first = (event_ms - size).div_euclid(slide) * slide + slide;
        (first..=last).step_by(slide as usize)
    }

    /// A stable name, used to key checkpoints: `size/slide/lateness/horizon` in ms.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.size_ms, self.slide_ms, self.lateness_ms, self.horizon_ms
        )
    }
}

/// What became of one observed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// At least one window will count it.
    Counted,
    /// Every window that could count it is final.
    Late,
}

/// A window to compute: its start and the revision to emit it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Emission {
    pub start_ms: i64,
    pub revision: u32,
}

/// What a checkpoint keeps of a clock: everything but wall-clock liveness.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClockState {
    /// Highest event time read per partition, by `{topic}/{partition}`.
    partitions: BTreeMap<String, i64>,
    /// Windows ending at or before this are final.
    final_until: Option<i64>,
    /// Starts of windows with data, not emitted yet.
    pending: BTreeSet<i64>,
    /// Emitted windows still open for corrections, with their last revision.
    open: BTreeMap<i64, u32>,
    /// Open windows that received records since their last emission.
    dirty: BTreeSet<i64>,
}

#[derive(Debug, Clone, Copy)]
struct Liveness {
    last_record: Instant,
    caught_up: bool,
}

/// Tracks event times for one [`WindowSpec`] and releases windows and corrections.
#[derive(Debug)]
pub(crate) struct WindowClock {
    spec: WindowSpec,
    idle_after: Duration,
    state: ClockState,
    liveness: HashMap<String, Liveness>,
    late: u64,
}

impl WindowClock {
    pub fn new(spec: WindowSpec, idle_after: Duration, state: ClockState) -> Self {
        WindowClock {
            spec,
            idle_after,
            state,
            liveness: HashMap::new(),
            late: 0,
        }
    }

    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    pub fn state(&self) -> &ClockState {
        &self.state
    }

    /// Notes that records of `partition` (`{topic}/{partition}`) up to event time `newest_ms`
    /// were read at `now`; each record is then [`count`](Self::count)ed.
    pub fn note(&mut self, partition: &str, newest_ms: i64, now: Instant) {
        match self.state.partitions.get_mut(partition) {
            Some(high) => *high = (*high).max(newest_ms),
            None => {
                self.state
                    .partitions
                    .insert(partition.to_string(), newest_ms);
            }
        }
        match self.liveness.get_mut(partition) {
            Some(liveness) => liveness.last_record = now,
            None => {
                self.liveness.insert(
                    partition.to_string(),
                    Liveness {
                        last_record: now,
                        caught_up: false,
                    },
                );
            }
        }
    }

    /// Marks the windows containing one record's `event_ms` for emission, unless all are final.
    pub fn count(&mut self, event_ms: i64) -> Fate {
        let mut fate = Fate::Late;
        for start in self.spec.starts_containing(event_ms) {
            if self.state.open.contains_key(&start) {
                self.state.dirty.insert(start);
            } else if self
                .state
                .final_until
                .is_some_and(|f| start + self.spec.size_ms <= f)
            {
                continue;
            } else {
                self.state.pending.insert(start);
            }
            fate = Fate::Counted;
        }
        if fate == Fate::Late {
            self.late += 1;
        }
        fate
    }

    /// Notes whether `partition` has been read to its end (after each fetch).
    pub fn set_caught_up(&mut self, partition: &str, caught_up: bool, now: Instant) {
        self.liveness
            .entry(partition.to_string())
            .or_insert(Liveness {
                last_record: now,
                caught_up,
            })
            .caught_up = caught_up;
    }

    /// The lowest event time of the partitions that are not idle — or, when every partition is
    /// idle, the highest (nothing more is coming) — minus the allowed lateness; `None` while a
    /// partition that is not idle has not given a record yet.
    pub fn watermark(&self, now: Instant) -> Option<i64> {
        let mut lowest_active: Option<i64> = None;
        for (partition, liveness) in &self.liveness {
            let idle =
                liveness.caught_up && now.duration_since(liveness.last_record) >= self.idle_after;
            if idle {
                continue;
            }
            match self.state.partitions.get(partition) {
                Some(&high) => lowest_active = Some(lowest_active.map_or(high, |l| l.min(high))),
                None => return None,
            }
        }
        lowest_active
            .or_else(|| self.state.partitions.values().copied().max())
            .map(|l| l - self.spec.lateness_ms)
    }

    /// The windows to compute now, oldest first: first emissions of windows the watermark has
    /// passed, and corrections of open windows that received records. Windows the watermark has
    /// passed by the update horizon become final.
    pub fn ready(&mut self, now: Instant) -> Vec<Emission> {
        let Some(watermark) = self.watermark(now) else {
            return Vec::new();
        };
        let size = self.spec.size_ms;
        let mut ready: Vec<Emission> = std::mem::take(&mut self.state.dirty)
            .into_iter()
            .map(|start| {
                let revision = self
                    .state
                    .open
                    .get_mut(&start)
                    .expect("dirty windows are open");
                *revision += 1;
                Emission {
                    start_ms: start,
                    revision: *revision,
                }
            })
            .collect();
        while let Some(&start) = self.state.pending.first() {
            if start + size > watermark {
                break;
            }
            self.state.pending.pop_first();
            self.state.open.insert(start, 0);
            ready.push(Emission {
                start_ms: start,
                revision: 0,
            });
        }
        ready.sort_by_key(|e| (e.start_ms, e.revision));
        let final_until = watermark - self.spec.horizon_ms;
        if self.state.final_until.is_none_or(|f| f < final_until) {
            self.state.final_until = Some(final_until);
        }
        self.state
            .open
            .retain(|start, _| start + size > final_until);
        ready
    }

    /// Records observed since start whose windows were all final.
    pub fn late_records(&self) -> u64 {
        self.late
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P0: &str = "telemetry.traffic/0";
    const P1: &str = "telemetry.traffic/1";

    /// One record, as the caller feeds it: noted, then counted.
    fn observe(clock: &mut WindowClock, partition: &str, event_ms: i64, now: Instant) -> Fate {
        clock.note(partition, event_ms, now);
        clock.count(event_ms)
    }

    fn tumbling(size_ms: i64, lateness_ms: i64, horizon_ms: i64) -> WindowSpec {
        WindowSpec {
            size_ms,
            slide_ms: size_ms,
            lateness_ms,
            horizon_ms,
        }
    }

    fn clock(spec: WindowSpec) -> WindowClock {
        WindowClock::new(spec, Duration::from_secs(30), ClockState::default())
    }

    fn first(start_ms: i64) -> Emission {
        Emission {
            start_ms,
            revision: 0,
        }
    }

    #[test]
    fn a_window_closes_when_the_watermark_passes_its_end() {
        let now = Instant::now();
        let mut clock = clock(tumbling(10_000, 5_000, 0));
        observe(&mut clock, P0, 1_000, now);
        observe(&mut clock, P0, 12_000, now);
        assert_eq!(clock.ready(now), vec![], "watermark 7s is inside window 0");
        observe(&mut clock, P0, 15_000, now);
        assert_eq!(
            clock.ready(now),
            vec![first(0)],
            "watermark 10s closes window 0"
        );
        observe(&mut clock, P0, 24_999, now);
        assert_eq!(clock.ready(now), vec![]);
        observe(&mut clock, P0, 26_000, now);
        assert_eq!(
            clock.ready(now),
            vec![first(10_000)],
            "watermark 21s closes window 10s but not 20s"
        );
    }

    #[test]
    fn the_slowest_active_partition_holds_the_watermark_until_it_goes_idle() {
        let start = Instant::now();
        let mut clock = clock(tumbling(10_000, 0, 0));
        observe(&mut clock, P0, 35_000, start);
        observe(&mut clock, P1, 5_000, start);
        clock.set_caught_up(P0, true, start);
        clock.set_caught_up(P1, true, start);
        assert_eq!(clock.watermark(start), Some(5_000));
        assert_eq!(clock.ready(start), vec![], "partition 1 is only at 5s");
        let later = start + Duration::from_secs(29);
        observe(&mut clock, P0, 36_000, later);
        assert_eq!(
            clock.ready(later),
            vec![],
            "partition 1 is quiet but not idle yet"
        );
        let idle = start + Duration::from_secs(30);
        assert_eq!(clock.watermark(idle), Some(36_000));
        assert_eq!(
            clock.watermark(idle + Duration::from_secs(30)),
            Some(36_000),
            "with every partition idle, the highest holds"
        );
        assert_eq!(
            clock.ready(idle),
            vec![first(0)],
            "partition 1 idle: partition 0 alone closes window 0s, not 30s"
        );
    }

    #[test]
    fn a_partition_without_records_blocks_the_watermark_until_it_goes_idle() {
        let now = Instant::now();
        let mut clock = clock(tumbling(10_000, 0, 0));
        clock.set_caught_up(P1, false, now);
        observe(&mut clock, P0, 50_000, now);
        assert_eq!(clock.watermark(now), None, "partition 1 has unread records");
        clock.set_caught_up(P1, true, now);
        let quiet = now + Duration::from_secs(29);
        assert_eq!(
            clock.watermark(quiet),
            None,
            "read to its end but not idle yet: its first records may be on their way"
        );
        clock.set_caught_up(P0, true, quiet);
        assert_eq!(
            clock.watermark(now + Duration::from_secs(30)),
            Some(50_000),
            "an empty partition that is idle does not count"
        );
    }

    #[test]
    fn late_records_revise_open_windows_and_are_late_past_the_horizon() {
        let now = Instant::now();
        let mut clock = clock(tumbling(10_000, 0, 20_000));
        observe(&mut clock, P0, 5_000, now);
        observe(&mut clock, P0, 12_000, now);
        assert_eq!(clock.ready(now), vec![first(0)]);
        assert_eq!(observe(&mut clock, P0, 3_000, now), Fate::Counted);
        assert_eq!(observe(&mut clock, P0, 4_000, now), Fate::Counted);
        assert_eq!(
            clock.ready(now),
            vec![Emission {
                start_ms: 0,
                revision: 1
            }],
            "two late records, one correction"
        );
        observe(&mut clock, P0, 29_000, now);
        assert_eq!(clock.ready(now), vec![first(10_000)]);
        observe(&mut clock, P0, 30_000, now);
        assert_eq!(
            clock.ready(now),
            vec![first(20_000)],
            "and window 0 is final: 10s + 20s ≤ 30s"
        );
        assert_eq!(observe(&mut clock, P0, 9_000, now), Fate::Late);
        assert_eq!(observe(&mut clock, P0, 15_000, now), Fate::Counted);
        assert_eq!(clock.late_records(), 1);
        assert_eq!(
            clock.ready(now),
            vec![Emission {
                start_ms: 10_000,
                revision: 1
            }]
        );
    }

    #[test]
    fn a_late_record_for_a_window_never_emitted_opens_it_at_revision_zero() {
        let now = Instant::now();
        let mut clock = clock(tumbling(10_000, 0, 60_000));
        observe(&mut clock, P0, 5_000, now);
        observe(&mut clock, P0, 95_000, now);
        assert_eq!(clock.ready(now), vec![first(0)]);
        observe(&mut clock, P0, 41_000, now);
        assert_eq!(clock.ready(now), vec![first(40_000)]);
    }

    #[test]
    fn hopping_windows_count_a_record_in_every_window_containing_it() {
        let spec = WindowSpec {
            size_ms: 30_000,
            slide_ms: 10_000,
            lateness_ms: 0,
            horizon_ms: 0,
        };
        assert_eq!(
            spec.starts_containing(25_000).collect::<Vec<_>>(),
            vec![0, 10_000, 20_000]
        );
        assert_eq!(
            spec.starts_containing(30_000).collect::<Vec<_>>(),
            vec![10_000, 20_000, 30_000]
        );
        assert_eq!(
            spec.starts_containing(-1).collect::<Vec<_>>(),
            vec![-30_000, -20_000, -10_000]
        );
        let now = Instant::now();
        let mut clock = clock(spec);
        observe(&mut clock, P0, 25_000, now);
        observe(&mut clock, P0, 50_000, now);
        assert_eq!(
            clock.ready(now),
            vec![first(0), first(10_000), first(20_000)]
        );
    }

    #[test]
    fn a_restored_state_continues_where_the_checkpoint_left_off() {
        let now = Instant::now();
        let mut before = clock(tumbling(10_000, 0, 20_000));
        observe(&mut before, P0, 5_000, now);
        observe(&mut before, P0, 15_000, now);
        assert_eq!(before.ready(now), vec![first(0)]);
        let saved: ClockState =
            serde_json::from_str(&serde_json::to_string(before.state()).unwrap()).unwrap();
        let mut after = WindowClock::new(before.spec(), Duration::from_secs(30), saved);
        observe(&mut after, P0, 1_000, now);
        observe(&mut after, P0, 21_000, now);
        assert_eq!(
            after.ready(now),
            vec![
                Emission {
                    start_ms: 0,
                    revision: 1
                },
                first(10_000)
            ]
        );
    }
}
