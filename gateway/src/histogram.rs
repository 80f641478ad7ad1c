//! A fixed-bucket latency histogram of atomics, shaped for Prometheus (cumulative on render).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds in seconds: 0.1 ms to 1 s.
pub const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

/// What [`Histogram::snapshot`] read.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations ≤ it)`, cumulative, ending with `+Inf`.
    pub cumulative: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Histogram {
    /// Records `times` observations of `latency`.
    pub fn observe(&self, latency: Duration, times: u64) {
        let seconds = latency.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket].fetch_add(times, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros
            .fetch_add(micros.saturating_mul(times), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let mut cumulative = Vec::with_capacity(BUCKETS.len() + 1);
        for (i, count) in self.counts.iter().enumerate() {
            total += count.load(Ordering::Relaxed);
            cumulative.push((BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), total));
        }
        HistogramSnapshot {
            cumulative,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50), 2);
        h.observe(Duration::from_millis(1), 1);
        h.observe(Duration::from_secs(3), 1);
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.cumulative[0], (0.0001, 2));
        assert_eq!(s.cumulative[3], (0.001, 3));
        assert_eq!(s.cumulative[13], (1.0, 3));
        assert_eq!(s.cumulative[14], (f64::INFINITY, 4));
        assert!((s.sum_seconds - 3.0011).abs() < 1e-9, "{}", s.sum_seconds);
    }
}
