//! Random-signal helpers shared by the device models.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The independent random streams one seed feeds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    Traffic = 1,
    Energy = 2,
    Transport = 3,
    /// When each device publishes within the interval.
    Phase = 4,
    /// Reconnection jitter.
    Backoff = 5,
}

/// The random stream of item `index` of `stream`, reproducible from `seed`.
pub(crate) fn seeded_rng(seed: u64, stream: Stream, index: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ ((stream as u64) << 56) ^ index as u64)
}

/// A bounded, mean-reverting random walk around zero: slow variation such as a street that is
/// busier than usual today.
#[derive(Debug, Clone)]
pub(crate) struct Drift {
    value: f64,
    bound: f64,
    step: f64,
}

impl Drift {
    /// A walk that stays within `-bound..=bound` and moves at most `step` per advance.
    pub(crate) fn new(bound: f64, step: f64) -> Self {
        Drift {
            value: 0.0,
            bound,
            step,
        }
    }

    pub(crate) fn advance(&mut self, rng: &mut impl Rng) -> f64 {
        let next = 0.95 * self.value + jitter(rng, self.step);
        self.value = next.clamp(-self.bound, self.bound);
        self.value
    }
}

/// Uniform noise in `-amplitude..=amplitude`.
pub(crate) fn jitter(rng: &mut impl Rng, amplitude: f64) -> f64 {
    rng.random_range(-amplitude..=amplitude)
}

/// Rounds a non-negative expected count to a whole number whose mean is `x`: 2.3 becomes 3 with
/// probability 0.3 and 2 otherwise.
pub(crate) fn stochastic_round(rng: &mut impl Rng, x: f64) -> i64 {
    let floor = x.max(0.0).floor();
    let up = rng.random_bool((x.max(0.0) - floor).clamp(0.0, 1.0));
    floor as i64 + i64::from(up)
}

/// Rounds to `decimals` places, for payloads that read like a device's.
pub(crate) fn round_to(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_stays_within_its_bound() {
        let mut rng = seeded_rng(1, Stream::Traffic, 0);
        let mut drift = Drift::new(0.1, 0.05);
        assert!((0..10_000).all(|_| drift.advance(&mut rng).abs() <= 0.1));
    }

    #[test]
    fn stochastic_rounding_keeps_the_mean() {
        let mut rng = seeded_rng(2, Stream::Traffic, 0);
        let total: i64 = (0..10_000).map(|_| stochastic_round(&mut rng, 2.3)).sum();
        assert!((22_500..23_500).contains(&total), "{total}");
        assert_eq!(stochastic_round(&mut rng, -1.0), 0);
    }

    #[test]
    fn rounds_to_decimal_places() {
        assert_eq!(round_to(229.96, 1), 230.0);
        assert_eq!(round_to(0.12345, 3), 0.123);
    }

    #[test]
    fn streams_and_items_get_different_numbers() {
        let first = |stream, index| seeded_rng(7, stream, index).random::<u64>();
        assert_eq!(first(Stream::Energy, 3), first(Stream::Energy, 3));
        assert_ne!(first(Stream::Energy, 3), first(Stream::Energy, 4));
        assert_ne!(first(Stream::Energy, 3), first(Stream::Traffic, 3));
    }
}
