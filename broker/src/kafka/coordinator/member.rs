//! A group member as the coordinator tracks it: its session, its protocols, its assignment and
//! the JoinGroup or SyncGroup answer it may be waiting for.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{GroupError, Joined, Protocol, Synced};

/// Where a waiting request's answer goes.
pub(super) type Answer<T> = oneshot::Sender<Result<T, GroupError>>;

pub(super) struct Member {
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<Protocol>,
    pub assignment: Bytes,
    pub awaiting_join: Option<Answer<Joined>>,
    pub awaiting_sync: Option<Answer<Synced>>,
    /// Removed at this instant unless it heartbeats (or waits in a join or sync) before.
    pub expires: Instant,
    /// Joining order: the longest-standing member becomes leader when the leader is gone.
    pub since: u64,
}

impl Member {
    pub fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }

    /// Its metadata for `protocol` (empty if it does not support it).
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    /// Waiting in a JoinGroup or SyncGroup: its session does not expire meanwhile.
    pub fn parked(&self) -> bool {
        self.awaiting_join.is_some() || self.awaiting_sync.is_some()
    }
}
