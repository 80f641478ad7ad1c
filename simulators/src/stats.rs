//! What the load generator did, counted lock-free by every device task.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Totals of one simulation run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimulationStats {
    /// Readings the broker accepted: acknowledged (QoS 1) or written to the connection (QoS 0).
    pub published: u64,
    /// Failed connection attempts, lost connections, and readings the client could not queue.
    pub errors: u64,
    /// Devices connected when the run was asked to stop.
    pub connected: usize,
}

/// The live counters behind [`SimulationStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    published: AtomicU64,
    errors: AtomicU64,
    connected: AtomicUsize,
}

impl Counters {
    pub(crate) fn published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connected(&self) {
        self.connected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn disconnected(&self) {
        self.connected.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> SimulationStats {
        SimulationStats {
            published: self.published.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
        }
    }
}
