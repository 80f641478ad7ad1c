//! How long a device waits before it connects again: exponential, capped, with jitter so that a
//! fleet cut off at once does not come back at once.

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;

/// Wait after the first failure.
const FIRST: Duration = Duration::from_millis(250);
/// Longest wait between two attempts.
const CAP: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(crate) struct Backoff {
    ceiling: Duration,
    rng: StdRng,
}

impl Backoff {
    pub(crate) fn new(rng: StdRng) -> Self {
        Backoff {
            ceiling: FIRST,
            rng,
        }
    }

    /// The wait before the next attempt: between half and all of a ceiling that doubles with
    /// each consecutive failure, up to 30 s.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.ceiling.mul_f64(self.rng.random_range(0.5..=1.0));
        self.ceiling = (self.ceiling * 2).min(CAP);
        wait
    }

    /// Called once connected: the next failure starts from the first wait again.
    pub(crate) fn reset(&mut self) {
        self.ceiling = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Stream, seeded_rng};

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(seeded_rng(1, Stream::Backoff, 0));
        let waits: Vec<_> = (0..12).map(|_| backoff.next_wait()).collect();
        assert!((FIRST / 2..=FIRST).contains(&waits[0]));
        assert!((FIRST..=FIRST * 2).contains(&waits[1]));
        assert!(waits.iter().all(|w| *w <= CAP));
        assert!(waits[11] >= CAP / 2);
        backoff.reset();
        assert!(backoff.next_wait() <= FIRST);
    }
}
