//! The consumer-group coordinator: this single node coordinates every group with Kafka's classic
//! rebalance protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) and validates offset commits
//! against group membership.
//!
//! [`Coordinator`] is a state machine over the groups ([`group`] holds one group's), driven by
//! requests and by the time passed to it, with no I/O: a JoinGroup or SyncGroup that must wait is
//! answered later on a oneshot channel ([`Reply::Waiting`]). [`Groups`] ([`service`]) puts it
//! behind a lock with the real clock, a timer task for session and rebalance timeouts, and the
//! durable committed offsets. Group membership lives in memory only: after a restart members get
//! UNKNOWN_MEMBER_ID or ILLEGAL_GENERATION and rejoin, while committed offsets survive.

mod error;
mod group;
mod member;
mod service;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::BrokerConfig;
pub(crate) use error::GroupError;
use group::Group;
pub(crate) use group::{Description, State};
pub(crate) use service::Groups;

/// The bounds of the coordinator, from the `[broker]` configuration.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    pub initial_rebalance_delay: Duration,
    pub max_groups: usize,
    pub max_members: usize,
}

impl Limits {
    pub fn from_config(config: &BrokerConfig) -> Limits {
        Limits {
            min_session_timeout: config.group_min_session_timeout,
            max_session_timeout: config.group_max_session_timeout,
            initial_rebalance_delay: config.group_initial_rebalance_delay,
            max_groups: config.max_groups,
            max_members: config.max_group_members,
        }
    }
}

/// One assignment protocol a member supports (e.g. `range`) with its opaque metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

pub(crate) struct JoinRequest {
    pub group_id: String,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+: a new member first gets an id with MEMBER_ID_REQUIRED, then joins with it.
    pub require_known_member_id: bool,
}

pub(crate) struct SyncRequest {
    pub group_id: String,
    pub member_id: String,
    pub generation: i32,
    /// SyncGroup v5+: checked against the group's when given.
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    /// The leader's assignment per member; empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

/// A JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Joined {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol, for the leader only.
    pub members: Vec<(String, Bytes)>,
}

/// A SyncGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Synced {
    pub protocol_type: String,
    pub protocol: String,
    pub assignment: Bytes,
}

/// An answer now, or one that comes when the group moves on.
pub(crate) enum Reply<T> {
    Ready(Result<T, GroupError>),
    Waiting(oneshot::Receiver<Result<T, GroupError>>),
}

impl<T> Reply<T> {
    pub async fn outcome(self) -> Result<T, GroupError> {
        match self {
            Reply::Ready(outcome) => outcome,
            Reply::Waiting(answer) => answer.await.unwrap_or(Err(GroupError::NotCoordinator)),
        }
    }
}

/// What ListGroups shows of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: State,
}

/// Every group with members (or member ids handed out), by id.
pub(crate) struct Coordinator {
    groups: HashMap<String, Group>,
    limits: Limits,
    closed: bool,
}

impl Coordinator {
    pub fn new(limits: Limits) -> Coordinator {
        Coordinator {
            groups: HashMap::new(),
            limits,
            closed: false,
        }
    }

    pub fn join(&mut self, request: JoinRequest, now: Instant) -> Reply<Joined> {
        match self.admit(&request) {
            Err(e) => Reply::Ready(Err(e)),
            Ok(()) => {
                let id = request.group_id.clone();
                let group = self
                    .groups
                    .entry(id.clone())
                    .or_insert_with(|| Group::new(&id));
                let reply = group.join(request, &self.limits, now);
                self.drop_if_unused(&id);
                reply
            }
        }
    }

    /// Checks a JoinGroup against the broker's limits before any group is touched.
    fn admit(&self, request: &JoinRequest) -> Result<(), GroupError> {
        if self.closed {
            return Err(GroupError::NotCoordinator);
        }
        if request.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let (min, max) = (
            self.limits.min_session_timeout,
            self.limits.max_session_timeout,
        );
        if !(min..=max).contains(&request.session_timeout) {
            return Err(GroupError::InvalidSessionTimeout {
                requested: request.session_timeout,
                min,
                max,
            });
        }
        if !self.groups.contains_key(&request.group_id) {
            if !request.member_id.is_empty() {
                return Err(GroupError::UnknownMember {
                    group: request.group_id.clone(),
                    member: request.member_id.clone(),
                });
            }
            if self.groups.len() >= self.limits.max_groups {
                return Err(GroupError::TooManyGroups {
                    group: request.group_id.clone(),
                    max: self.limits.max_groups,
                });
            }
        }
        Ok(())
    }

    pub fn sync(&mut self, request: SyncRequest, now: Instant) -> Reply<Synced> {
        if self.closed {
            return Reply::Ready(Err(GroupError::NotCoordinator));
        }
        match self.groups.get_mut(&request.group_id) {
            Some(group) => group.sync(request, now),
            None => Reply::Ready(Err(GroupError::UnknownMember {
                group: request.group_id,
                member: request.member_id,
            })),
        }
    }

    pub fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        self.group(group_id, member_id)?
            .heartbeat(member_id, generation, now)
    }

    pub fn leave(
        &mut self,
        group_id: &str,
        member_id: &str,
        now: Instant,
    ) -> Result<(), GroupError> {
        let limits = self.limits.clone();
        let left = self
            .group(group_id, member_id)?
            .leave(member_id, &limits, now);
        self.drop_if_unused(group_id);
        left
    }

    /// Whether an OffsetCommit of `member_id` at `generation` is allowed now.
    pub fn check_commit(
        &mut self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        if self.closed {
            return Err(GroupError::NotCoordinator);
        }
        match self.groups.get_mut(group_id) {
            Some(group) => group.check_commit(member_id, generation, now),
            // Offsets stored outside group management (assign() rather than subscribe()).
            None if generation < 0 => Ok(()),
            None => Err(GroupError::IllegalGeneration {
                group: group_id.to_string(),
                generation,
            }),
        }
    }

    fn group(&mut self, group_id: &str, member_id: &str) -> Result<&mut Group, GroupError> {
        if self.closed {
            return Err(GroupError::NotCoordinator);
        }
        self.groups
            .get_mut(group_id)
            .ok_or_else(|| GroupError::UnknownMember {
                group: group_id.to_string(),
                member: member_id.to_string(),
            })
    }

    fn drop_if_unused(&mut self, group_id: &str) {
        if self.groups.get(group_id).is_some_and(Group::is_unused) {
            self.groups.remove(group_id);
        }
    }

    pub fn describe(&self, group_id: &str) -> Option<Description> {
        self.groups.get(group_id).map(Group::describe)
    }

    pub fn list(&self) -> Vec<Listing> {
        let mut listed: Vec<Listing> = self
            .groups
            .iter()
            .map(|(id, g)| Listing {
                group_id: id.clone(),
                protocol_type: g.protocol_type().to_string(),
                state: g.state(),
            })
            .collect();
        listed.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        listed
    }

    /// Applies every session and rebalance timeout that has passed by `now`.
    pub fn tick(&mut self, now: Instant) {
        for group in self.groups.values_mut() {
            group.tick(&self.limits, now);
        }
        self.groups.retain(|_, group| !group.is_unused());
    }

    /// When [`Coordinator::tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.groups.values().filter_map(Group::next_deadline).min()
    }

    /// Stops coordinating: every waiting JoinGroup and SyncGroup, and every later request, is
    /// answered NOT_COORDINATOR, so clients look for the coordinator again.
    pub fn close(&mut self) {
        self.closed = true;
        for group in self.groups.values_mut() {
            group.abandon(&GroupError::NotCoordinator);
        }
    }
}
