//! Event-time bookkeeping: the watermark, and which tumbling windows are ready to emit.

use std::collections::BTreeSet;

/// Tracks event times and releases each window once the watermark passes its end.
///
/// Watermark = highest event time seen − allowed lateness. A window is emitted once; windows that
/// ended at or before `emitted_until` (from the `metrics` topic) are never emitted again.
#[derive(Debug)]
pub(crate) struct WindowClock {
    size_ms: i64,
    lateness_ms: i64,
    max_event_ms: Option<i64>,
    emitted_until: i64,
    pending: BTreeSet<i64>,
    after_close: u64,
}

impl WindowClock {
    pub fn new(size_ms: i64, lateness_ms: i64, emitted_until: i64) -> Self {
        WindowClock {
            size_ms,
            lateness_ms,
            max_event_ms: None,
            emitted_until,
            pending: BTreeSet::new(),
            after_close: 0,
        }
    }

    pub fn size_ms(&self) -> i64 {
        self.size_ms
    }

    /// Notes one record's event time.
    pub fn observe(&mut self, event_ms: i64) {
        self.max_event_ms = Some(self.max_event_ms.map_or(event_ms, |m| m.max(event_ms)));
        let start = event_ms.div_euclid(self.size_ms) * self.size_ms;
        if start < self.emitted_until {
            self.after_close += 1;
        } else {
            self.pending.insert(start);
        }
    }

    pub fn watermark(&self) -> Option<i64> {
        self.max_event_ms.map(|m| m - self.lateness_ms)
    }

    /// Starts of the windows that are complete, oldest first; each is returned once.
    pub fn ready(&mut self) -> Vec<i64> {
        let Some(watermark) = self.watermark() else {
            return Vec::new();
        };
        let mut ready = Vec::new();
        while let Some(&start) = self.pending.first() {
            if start + self.size_ms > watermark {
                break;
            }
            self.pending.pop_first();
            self.emitted_until = start + self.size_ms;
            ready.push(start);
        }
        ready
    }

    /// Records that arrived for windows already emitted (or emitted before a restart).
    pub fn records_after_close(&self) -> u64 {
        self.after_close
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_closes_when_the_watermark_passes_its_end() {
        let mut clock = WindowClock::new(10_000, 5_000, i64::MIN);
        clock.observe(1_000);
        clock.observe(12_000);
        assert_eq!(
            clock.ready(),
            Vec::<i64>::new(),
            "watermark 7s is inside window 0"
        );
        clock.observe(15_000);
        assert_eq!(clock.ready(), vec![0], "watermark 10s closes window 0");
        clock.observe(24_999);
        assert_eq!(clock.ready(), Vec::<i64>::new());
        clock.observe(26_000);
        assert_eq!(
            clock.ready(),
            vec![10_000],
            "watermark 21s closes window 10s but not 20s"
        );
    }

    #[test]
    fn windows_without_data_are_skipped_and_late_records_counted() {
        let mut clock = WindowClock::new(10_000, 0, i64::MIN);
        clock.observe(5_000);
        clock.observe(95_000);
        assert_eq!(clock.ready(), vec![0]);
        clock.observe(3_000);
        assert_eq!(clock.records_after_close(), 1);
        assert_eq!(clock.ready(), Vec::<i64>::new());
    }

    #[test]
    fn nothing_before_the_emitted_horizon_is_emitted_again() {
        let mut clock = WindowClock::new(10_000, 0, 20_000);
        clock.observe(5_000);
        clock.observe(15_000);
        clock.observe(25_000);
        clock.observe(40_000);
        assert_eq!(clock.ready(), vec![20_000]);
        assert_eq!(clock.records_after_close(), 2);
    }
}
