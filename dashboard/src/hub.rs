//! Fan-out to viewers: the current snapshot, and one bounded queue of updates per viewer.
//!
//! Publishing never waits for a viewer. When a viewer's queue is full its pending updates are
//! worthless: the viewer is marked as lagging, and the next time it takes a message it drops its
//! queue and gets the current snapshot instead (coalescing).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::charts::Charts;

/// What viewers are sent after one change of state, each message serialized once for all.
pub(crate) struct Frame {
    /// The whole state, for viewers that join or lag.
    pub(crate) snapshot: Arc<str>,
    /// Just the change, for viewers that keep up.
    pub(crate) update: Arc<str>,
    pub(crate) charts: Charts,
}

/// Refusal of a viewer beyond the configured maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ViewerLimit(pub(crate) usize);

/// The publisher's end of every viewer's queue.
pub(crate) struct Hub {
    queue_capacity: usize,
    max_viewers: usize,
    shared: Mutex<Shared>,
    /// Viewers disconnected for accepting nothing within `dashboard.viewer_send_timeout`.
    stalled: AtomicU64,
}

struct Shared {
    snapshot: Arc<str>,
    charts: Charts,
    viewers: HashMap<u64, ViewerSlot>,
    next_viewer: u64,
}

struct ViewerSlot {
    queue: mpsc::Sender<Arc<str>>,
    lagging: Arc<AtomicBool>,
}

impl Hub {
    pub(crate) fn new(
        queue_capacity: usize,
        max_viewers: usize,
        snapshot: Arc<str>,
        charts: Charts,
    ) -> Self {
        Hub {
            queue_capacity,
            max_viewers,
            shared: Mutex::new(Shared {
                snapshot,
                charts,
                viewers: HashMap::new(),
                next_viewer: 0,
            }),
            stalled: AtomicU64::new(0),
        }
    }

    /// Makes `frame` the current state and queues its update for every viewer, marking those
    /// whose queue is full as lagging.
    pub(crate) fn publish(&self, frame: Frame) {
        let mut shared = self.lock();
        shared.snapshot = frame.snapshot;
        shared.charts = frame.charts;
        for viewer in shared.viewers.values() {
            if let Err(TrySendError::Full(_)) = viewer.queue.try_send(frame.update.clone()) {
                viewer.lagging.store(true, Ordering::Release);
            }
        }
    }

    /// Registers a viewer and gives it the snapshot to start from; every later change reaches it
    /// through [`Viewer::next_message`].
    pub(crate) fn join(self: &Arc<Self>) -> Result<(Viewer, Arc<str>), ViewerLimit> {
        let mut shared = self.lock();
        if shared.viewers.len() >= self.max_viewers {
            return Err(ViewerLimit(self.max_viewers));
        }
        let (sender, queue) = mpsc::channel(self.queue_capacity);
        let lagging = Arc::new(AtomicBool::new(false));
        let id = shared.next_viewer;
        shared.next_viewer += 1;
        shared.viewers.insert(
            id,
            ViewerSlot {
                queue: sender,
                lagging: lagging.clone(),
            },
        );
        let viewer = Viewer {
            id,
            hub: self.clone(),
            queue,
            lagging,
        };
        Ok((viewer, shared.snapshot.clone()))
    }

    /// Viewers connected now.
    pub(crate) fn viewers(&self) -> usize {
        self.lock().viewers.len()
    }

    /// Counts a viewer disconnected for accepting nothing in time.
    pub(crate) fn count_stalled(&self) {
        self.stalled.fetch_add(1, Ordering::Relaxed);
    }

    /// Viewers disconnected for accepting nothing in time, since start.
    pub(crate) fn stalled(&self) -> u64 {
        self.stalled.load(Ordering::Relaxed)
    }

    /// The charts of the current update.
    pub(crate) fn charts(&self) -> Charts {
        self.lock().charts.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One viewer's end of the fan-out; leaving the hub when dropped.
pub(crate) struct Viewer {
    id: u64,
    hub: Arc<Hub>,
    queue: mpsc::Receiver<Arc<str>>,
    lagging: Arc<AtomicBool>,
}

impl Viewer {
    /// The next message to send: the next update, or, when this viewer fell behind, the current
    /// snapshot in place of everything it missed. Waits for the next change; cancel-safe.
    pub(crate) async fn next_message(&mut self) -> Option<Arc<str>> {
        let update = self.queue.recv().await?;
        if !self.lagging.load(Ordering::Acquire) {
            return Some(update);
        }
        let shared = self.hub.lock();
        self.lagging.store(false, Ordering::Release);
        while self.queue.try_recv().is_ok() {}
        Some(shared.snapshot.clone())
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.hub.lock().viewers.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::state::MetricHistory;

    fn hub(queue_capacity: usize, max_viewers: usize) -> Arc<Hub> {
        let charts = Charts::render(&MetricHistory::new(Duration::from_secs(60)));
        Arc::new(Hub::new(
            queue_capacity,
            max_viewers,
            "snapshot-0".into(),
            charts,
        ))
    }

    fn publish(hub: &Hub, n: usize) {
        let charts = hub.lock().charts.clone();
        hub.publish(Frame {
            snapshot: format!("snapshot-{n}").into(),
            update: format!("update-{n}").into(),
            charts,
        });
    }

    async fn next(viewer: &mut Viewer) -> String {
        viewer.next_message().await.unwrap().to_string()
    }

    #[tokio::test]
    async fn a_viewer_starts_from_the_snapshot_and_then_gets_every_update() {
        let hub = hub(4, 10);
        let (mut viewer, snapshot) = hub.join().unwrap();
        assert_eq!(&*snapshot, "snapshot-0");
        publish(&hub, 1);
        publish(&hub, 2);
        assert_eq!(next(&mut viewer).await, "update-1");
        assert_eq!(next(&mut viewer).await, "update-2");
    }

    #[tokio::test]
    async fn a_viewer_with_a_full_queue_gets_one_fresh_snapshot_instead_of_its_backlog() {
        let hub = hub(2, 10);
        let (mut slow, _) = hub.join().unwrap();
        let (mut fast, _) = hub.join().unwrap();
        for n in 1..=5 {
            publish(&hub, n);
            assert_eq!(next(&mut fast).await, format!("update-{n}"));
        }
        assert_eq!(next(&mut slow).await, "snapshot-5");
        publish(&hub, 6);
        assert_eq!(next(&mut slow).await, "update-6");
    }

    #[tokio::test]
    async fn viewers_beyond_the_limit_are_refused_until_one_leaves() {
        let hub = hub(2, 2);
        let first = hub.join().unwrap();
        let _second = hub.join().unwrap();
        assert_eq!(hub.join().err(), Some(ViewerLimit(2)));
        assert_eq!(hub.viewers(), 2);
        drop(first);
        assert_eq!(hub.viewers(), 1);
        assert!(hub.join().is_ok());
    }
}
