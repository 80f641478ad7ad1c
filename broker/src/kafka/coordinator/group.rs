//! One consumer group under the classic rebalance protocol, as Kafka's group coordinator runs it:
//!
//! - **Empty**: no members. A join starts a rebalance.
//! - **PreparingRebalance**: members must (re)join. Their JoinGroup answers wait until every known
//!   member has rejoined (and, for a group that was empty, the initial delay has passed) or the
//!   rebalance timeout expires, when members that did not rejoin are removed.
//! - **CompletingRebalance**: the generation is bumped; the leader got every member's metadata and
//!   the followers' SyncGroup answers wait for the leader's assignment.
//! - **Stable**: everyone has an assignment. A new member, a leaving or expired one, or a changed
//!   subscription starts the next rebalance; existing members learn of it from their heartbeats.
//!
//! Members that stop heartbeating are removed after their session timeout (except while their own
//! JoinGroup or SyncGroup waits here). Waiting answers are sent on oneshot channels; time is passed
//! in, so every transition is testable without sockets or sleeps.

use std::collections::BTreeMap;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::member::Member;
use super::{GroupError, JoinRequest, Joined, Limits, Reply, SyncRequest, Synced};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    /// The name Kafka tools show.
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// What DescribeGroups shows of one member.
pub(crate) struct MemberDescription {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// What DescribeGroups shows of a group.
pub(crate) struct Description {
    pub state: State,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

pub(crate) struct Group {
    id: String,
    state: State,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, each until it joins or this instant passes.
    pending: BTreeMap<String, Instant>,
    /// When the current rebalance stops waiting for members to rejoin.
    rebalance_deadline: Option<Instant>,
    /// The first rebalance of an empty group does not complete before this (initial delay).
    join_not_before: Option<Instant>,
    joins: u64,
}

fn ready<T>(outcome: Result<T, GroupError>) -> Reply<T> {
    Reply::Ready(outcome)
}

impl Group {
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_string(),
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            rebalance_deadline: None,
            join_not_before: None,
            joins: 0,
        }
    }

    /// No members, none about to join: the group can be dropped.
    pub fn is_unused(&self) -> bool {
        self.state == State::Empty && self.members.is_empty() && self.pending.is_empty()
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn protocol_type(&self) -> &str {
        self.protocol_type.as_deref().unwrap_or("")
    }

    /// Members and member ids handed out but not yet joined.
    pub fn size(&self) -> usize {
        self.members.len() + self.pending.len()
    }

    fn unknown(&self, member: &str) -> GroupError {
        GroupError::UnknownMember {
            group: self.id.clone(),
            member: member.to_string(),
        }
    }

    fn rebalancing(&self) -> GroupError {
        GroupError::RebalanceInProgress {
            group: self.id.clone(),
        }
    }

    pub fn join(&mut self, request: JoinRequest, limits: &Limits, now: Instant) -> Reply<Joined> {
        if !self.accepts(&request) {
            return ready(Err(GroupError::InconsistentGroupProtocol {
                group: self.id.clone(),
            }));
        }
        if request.member_id.is_empty() {
            if self.size() >= limits.max_members {
                return ready(Err(GroupError::GroupFull {
                    group: self.id.clone(),
                    max: limits.max_members,
                }));
            }
            let member = format!("{}-{}", request.client_id, uuid::Uuid::new_v4());
            if request.require_known_member_id {
                self.pending
                    .insert(member.clone(), now + request.session_timeout);
                return ready(Err(GroupError::MemberIdRequired { member }));
            }
            return self.add_member(member, request, limits, now);
        }
        if self.pending.remove(&request.member_id).is_some() {
            let member = request.member_id.clone();
            return self.add_member(member, request, limits, now);
        }
        let is_leader = self.leader.as_deref() == Some(request.member_id.as_str());
        let Some(member) = self.members.get_mut(&request.member_id) else {
            return ready(Err(self.unknown(&request.member_id)));
        };
        let unchanged = member.protocols == request.protocols;
        let current = match self.state {
            State::CompletingRebalance => unchanged,
            // The leader rejoining forces a rebalance: it may have seen a metadata change.
            State::Stable => unchanged && !is_leader,
            State::Empty | State::PreparingRebalance => false,
        };
        if current {
            member.expires = now + member.session_timeout;
            return ready(Ok(self.joined(&request.member_id)));
        }
        let (answer, reply) = oneshot::channel();
        member.session_timeout = request.session_timeout;
        member.rebalance_timeout = request.rebalance_timeout;
        member.protocols = request.protocols;
        if let Some(replaced) = member.awaiting_join.replace(answer) {
            let _ = replaced.send(Err(GroupError::RebalanceInProgress {
                group: self.id.clone(),
            }));
        }
        if self.state != State::PreparingRebalance {
            self.prepare_rebalance(limits, now);
        }
        self.maybe_complete_join(now);
        Reply::Waiting(reply)
    }

    /// Whether `request`'s protocols fit the group: the first member sets the protocol type, and
    /// every member must share at least one protocol with all the others.
    fn accepts(&self, request: &JoinRequest) -> bool {
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return false;
        }
        let mut others = self
            .members
            .iter()
            .filter(|(id, _)| **id != request.member_id)
            .map(|(_, m)| m)
            .peekable();
        if others.peek().is_none() {
            return true;
        }
        let others: Vec<&Member> = others.collect();
        self.protocol_type.as_deref() == Some(request.protocol_type.as_str())
            && request
                .protocols
                .iter()
                .any(|p| others.iter().all(|m| m.supports(&p.name)))
    }

    fn add_member(
        &mut self,
        id: String,
        request: JoinRequest,
        limits: &Limits,
        now: Instant,
    ) -> Reply<Joined> {
        let (answer, reply) = oneshot::channel();
        self.joins += 1;
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        self.members.insert(
            id,
            Member {
                client_id: request.client_id,
                client_host: request.client_host,
                session_timeout: request.session_timeout,
                rebalance_timeout: request.rebalance_timeout,
                protocols: request.protocols,
                assignment: Bytes::new(),
                awaiting_join: Some(answer),
                awaiting_sync: None,
                expires: now + request.session_timeout,
                since: self.joins,
            },
        );
        match self.state {
            State::PreparingRebalance => {
                // A member joining during the initial delay extends it, up to the rebalance timeout.
                if let (Some(_), Some(deadline)) = (self.join_not_before, self.rebalance_deadline) {
                    self.join_not_before =
                        Some((now + limits.initial_rebalance_delay).min(deadline));
                }
            }
            _ => self.prepare_rebalance(limits, now),
        }
        self.maybe_complete_join(now);
        Reply::Waiting(reply)
    }

    fn prepare_rebalance(&mut self, limits: &Limits, now: Instant) {
        if self.state == State::CompletingRebalance {
            let error = self.rebalancing();
            for member in self.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(answer) = member.awaiting_sync.take() {
                    let _ = answer.send(Err(error.clone()));
                }
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        let deadline = now + timeout;
        self.join_not_before = (self.state == State::Empty
            && !limits.initial_rebalance_delay.is_zero())
        .then(|| (now + limits.initial_rebalance_delay).min(deadline));
        self.rebalance_deadline = Some(deadline);
        self.state = State::PreparingRebalance;
    }

    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance {
            return;
        }
        if self.join_not_before.is_some_and(|at| at <= now) {
            self.join_not_before = None;
        }
        let all_joined =
            self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some());
        if all_joined && self.join_not_before.is_none() {
            self.complete_join(now);
        }
    }

    /// Ends the rebalance: members that did not rejoin are removed, the generation is bumped, and
    /// every waiting join is answered (the leader with all members' metadata).
    fn complete_join(&mut self, now: Instant) {
        let left: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.awaiting_join.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in &left {
            tracing::info!(
                group = self.id,
                member = id,
                "member removed: it did not rejoin before the rebalance timeout"
            );
            self.members.remove(id);
        }
        self.rebalance_deadline = None;
        self.join_not_before = None;
        self.generation += 1;
        if self.members.is_empty() {
            (self.state, self.protocol, self.protocol_type, self.leader) =
                (State::Empty, None, None, None);
            return;
        }
        self.protocol = Some(self.select_protocol());
        if !self
            .leader
            .as_ref()
            .is_some_and(|leader| self.members.contains_key(leader))
        {
            self.leader = self
                .members
                .iter()
                .min_by_key(|(_, m)| m.since)
                .map(|(id, _)| id.clone());
        }
        self.state = State::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let joined = self.joined(&id);
            let member = self.members.get_mut(&id).expect("listed above");
            member.expires = now + member.session_timeout;
            if let Some(answer) = member.awaiting_join.take() {
                let _ = answer.send(Ok(joined));
            }
        }
        tracing::info!(
            group = self.id,
            generation = self.generation,
            members = self.members.len(),
            "rebalance completed"
        );
    }

    /// The protocol all members support that most members prefer.
    fn select_protocol(&self) -> String {
        let first = self.members.values().next().expect("a group with members");
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| self.members.values().all(|m| m.supports(name)))
            .collect();
        let preferred = |m: &Member| {
            m.protocols
                .iter()
                .position(|p| candidates.contains(&p.name.as_str()))
                .map(|i| m.protocols[i].name.clone())
        };
        let mut best: Option<(&str, usize)> = None;
        for candidate in &candidates {
            let votes = self
                .members
                .values()
                .filter(|m| preferred(m).as_deref() == Some(*candidate))
                .count();
            if best.is_none_or(|(_, most)| votes > most) {
                best = Some((candidate, votes));
            }
        }
        best.map_or_else(
            || first.protocols[0].name.clone(),
            |(name, _)| name.to_string(),
        )
    }

    /// The JoinGroup answer of `member` for the current generation.
    fn joined(&self, member: &str) -> Joined {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member {
            self.members
                .iter()
                .map(|(id, m)| (id.clone(), m.metadata(&protocol)))
                .collect()
        } else {
            Vec::new()
        };
        Joined {
            generation: self.generation,
            protocol_type: self.protocol_type().to_string(),
            protocol,
            leader,
            member_id: member.to_string(),
            members,
        }
    }

    pub fn sync(&mut self, request: SyncRequest, now: Instant) -> Reply<Synced> {
        if !self.members.contains_key(&request.member_id) {
            return ready(Err(self.unknown(&request.member_id)));
        }
        if request.generation != self.generation {
            return ready(Err(self.illegal_generation(request.generation)));
        }
        let type_differs = request
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != self.protocol_type.as_ref());
        let protocol_differs = request
            .protocol
            .as_ref()
            .is_some_and(|p| Some(p) != self.protocol.as_ref());
        if type_differs || protocol_differs {
            return ready(Err(GroupError::InconsistentGroupProtocol {
                group: self.id.clone(),
            }));
        }
        let rebalancing = self.rebalancing();
        let synced = self.synced(Bytes::new());
        let member = self
            .members
            .get_mut(&request.member_id)
            .expect("checked above");
        member.expires = now + member.session_timeout;
        match self.state {
            State::Empty | State::PreparingRebalance => ready(Err(rebalancing)),
            State::Stable => ready(Ok(Synced {
                assignment: member.assignment.clone(),
                ..synced
            })),
            State::CompletingRebalance => {
                let (answer, reply) = oneshot::channel();
                if let Some(replaced) = member.awaiting_sync.replace(answer) {
                    let _ = replaced.send(Err(rebalancing));
                }
                if self.leader.as_deref() == Some(request.member_id.as_str()) {
                    let mut assignments: BTreeMap<String, Bytes> =
                        request.assignments.into_iter().collect();
                    self.state = State::Stable;
                    for (id, member) in self.members.iter_mut() {
                        member.assignment = assignments.remove(id).unwrap_or_default();
                    }
                    self.answer_syncs(now);
                }
                Reply::Waiting(reply)
            }
        }
    }

    /// The leader's assignment arrived: every waiting SyncGroup gets its member's part.
    fn answer_syncs(&mut self, now: Instant) {
        let synced = self.synced(Bytes::new());
        for member in self.members.values_mut() {
            member.expires = now + member.session_timeout;
            if let Some(answer) = member.awaiting_sync.take() {
                let _ = answer.send(Ok(Synced {
                    assignment: member.assignment.clone(),
                    ..synced.clone()
                }));
            }
        }
        tracing::info!(
            group = self.id,
            generation = self.generation,
            "assignment distributed"
        );
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        let error = self.unknown(member_id);
        let current = self.generation;
        let illegal = self.illegal_generation(generation);
        let rebalancing = self.rebalancing();
        let member = self.members.get_mut(member_id).ok_or(error)?;
        if generation != current {
            return Err(illegal);
        }
        member.expires = now + member.session_timeout;
        match self.state {
            State::PreparingRebalance => Err(rebalancing),
            State::Empty | State::CompletingRebalance | State::Stable => Ok(()),
        }
    }

    /// A member leaves (or an id handed out with MEMBER_ID_REQUIRED is given back).
    pub fn leave(
        &mut self,
        member_id: &str,
        limits: &Limits,
        now: Instant,
    ) -> Result<(), GroupError> {
        if self.pending.remove(member_id).is_some() {
            self.maybe_complete_join(now);
            return Ok(());
        }
        if !self.members.contains_key(member_id) {
            return Err(self.unknown(member_id));
        }
        self.remove_member(member_id, limits, now);
        Ok(())
    }

    /// Removes a member; the others rebalance without it.
    fn remove_member(&mut self, member_id: &str, limits: &Limits, now: Instant) {
        let Some(member) = self.members.remove(member_id) else {
            return;
        };
        let gone = self.unknown(member_id);
        if let Some(answer) = member.awaiting_join {
            let _ = answer.send(Err(gone.clone()));
        }
        if let Some(answer) = member.awaiting_sync {
            let _ = answer.send(Err(gone));
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        match self.state {
            State::Stable | State::CompletingRebalance => self.prepare_rebalance(limits, now),
            State::Empty | State::PreparingRebalance => {}
        }
        self.maybe_complete_join(now);
    }

    /// Whether `member_id` of `generation` may commit offsets now. A commit outside group
    /// management (generation < 0, no member id) is allowed while the group has no members.
    pub fn check_commit(
        &mut self,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        if generation < 0 && member_id.is_empty() && self.members.is_empty() {
            return Ok(());
        }
        let error = self.unknown(member_id);
        let illegal = self.illegal_generation(generation);
        let (current, state, rebalancing) = (self.generation, self.state, self.rebalancing());
        let member = self.members.get_mut(member_id).ok_or(error)?;
        if generation != current {
            return Err(illegal);
        }
        if state == State::CompletingRebalance {
            return Err(rebalancing);
        }
        member.expires = now + member.session_timeout;
        Ok(())
    }

    /// Applies every timeout that has passed by `now`.
    pub fn tick(&mut self, limits: &Limits, now: Instant) {
        self.pending.retain(|_, expires| *expires > now);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.parked() && m.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            tracing::info!(
                group = self.id,
                member = id,
                "member removed: no heartbeat within its session timeout"
            );
            self.remove_member(id, limits, now);
        }
        if self.state == State::PreparingRebalance
            && self
                .rebalance_deadline
                .is_some_and(|deadline| deadline <= now)
        {
            self.complete_join(now);
        } else {
            self.maybe_complete_join(now);
        }
    }

    /// The next instant at which [`Group::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let sessions = self
            .members
            .values()
            .filter(|m| !m.parked())
            .map(|m| m.expires);
        let rebalance = [self.rebalance_deadline, self.join_not_before]
            .into_iter()
            .flatten();
        sessions
            .chain(self.pending.values().copied())
            .chain(rebalance)
            .min()
    }

    /// Answers every waiting JoinGroup and SyncGroup with `error` (the broker is stopping).
    pub fn abandon(&mut self, error: &GroupError) {
        for member in self.members.values_mut() {
            if let Some(answer) = member.awaiting_join.take() {
                let _ = answer.send(Err(error.clone()));
            }
            if let Some(answer) = member.awaiting_sync.take() {
                let _ = answer.send(Err(error.clone()));
            }
        }
    }

    pub fn describe(&self) -> Description {
        let stable = self.state == State::Stable;
        let protocol = if stable {
            self.protocol.clone().unwrap_or_default()
        } else {
            String::new()
        };
        let members = self
            .members
            .iter()
            .map(|(id, m)| MemberDescription {
                member_id: id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable {
                    m.metadata(&protocol)
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        Description {
            state: self.state,
            protocol_type: self.protocol_type().to_string(),
            protocol,
            members,
        }
    }

    fn illegal_generation(&self, generation: i32) -> GroupError {
        GroupError::IllegalGeneration {
            group: self.id.clone(),
            generation,
        }
    }

    fn synced(&self, assignment: Bytes) -> Synced {
        Synced {
            protocol_type: self.protocol_type().to_string(),
            protocol: self.protocol.clone().unwrap_or_default(),
            assignment,
        }
    }
}
