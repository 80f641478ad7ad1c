//! The coordinator as the request handlers use it: behind a lock, on the real clock, with a timer
//! task for session and rebalance timeouts, next to the durable committed offsets.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    Coordinator, Description, GroupError, JoinRequest, Joined, Limits, Listing, State, SyncRequest,
    Synced,
};
use crate::config::BrokerConfig;
use crate::error::LogError;
use crate::offsets::OffsetStore;

pub(crate) struct Groups {
    coordinator: Mutex<Coordinator>,
    offsets: OffsetStore,
    /// Woken when a request may have brought the next timeout closer.
    deadlines: Notify,
}

impl Groups {
    /// Opens the committed offsets kept in `dir`.
    pub fn open(dir: &Path, config: &BrokerConfig) -> Result<Groups, LogError> {
        Ok(Groups {
            coordinator: Mutex::new(Coordinator::new(Limits::from_config(config))),
            offsets: OffsetStore::open(dir, config.max_groups)?,
            deadlines: Notify::new(),
        })
    }

    fn coordinator(&self) -> MutexGuard<'_, Coordinator> {
        self.coordinator
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn offsets(&self) -> &OffsetStore {
        &self.offsets
    }

    /// Joins a group; waits while the group rebalances.
    pub async fn join(&self, request: JoinRequest) -> Result<Joined, GroupError> {
        let reply = self.coordinator().join(request, Instant::now());
        self.deadlines.notify_one();
        reply.outcome().await
    }

    /// Gets (or, from the leader, distributes) assignments; a follower waits for the leader's.
    pub async fn sync(&self, request: SyncRequest) -> Result<Synced, GroupError> {
        let reply = self.coordinator().sync(request, Instant::now());
        self.deadlines.notify_one();
        reply.outcome().await
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<(), GroupError> {
        self.coordinator()
            .heartbeat(group_id, member_id, generation, Instant::now())
    }

    pub fn leave(&self, group_id: &str, member_id: &str) -> Result<(), GroupError> {
        let left = self
            .coordinator()
            .leave(group_id, member_id, Instant::now());
        self.deadlines.notify_one();
        left
    }

    pub fn check_commit(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<(), GroupError> {
        self.coordinator()
            .check_commit(group_id, member_id, generation, Instant::now())
    }

    /// A group's state and members; `None` when it has neither members nor committed offsets.
    /// Blocks while a commit is being written.
    pub fn describe(&self, group_id: &str) -> Option<Description> {
        let described = self.coordinator().describe(group_id);
        described.or_else(|| {
            let stored = !self.offsets.fetch(group_id).is_empty();
            stored.then(|| Description {
                state: State::Empty,
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            })
        })
    }

    /// Every group with members or committed offsets. Blocks while a commit is being written.
    pub fn list(&self) -> Vec<Listing> {
        let mut listed = self.coordinator().list();
        let stored: Vec<Listing> = self
            .offsets
            .groups()
            .into_iter()
            .filter(|id| !listed.iter().any(|l| &l.group_id == id))
            .map(|group_id| Listing {
                group_id,
                protocol_type: String::new(),
                state: State::Empty,
            })
            .collect();
        listed.extend(stored);
        listed.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        listed
    }

    /// Applies session and rebalance timeouts as they fall due, until `shutdown`; then answers
    /// every waiting request so connections can close.
    pub async fn run_timers(&self, shutdown: CancellationToken) {
        loop {
            let changed = self.deadlines.notified();
            let next = self.coordinator().next_deadline();
            let due = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = changed => {}
                _ = due => self.coordinator().tick(Instant::now()),
            }
        }
        self.coordinator().close();
    }
}
