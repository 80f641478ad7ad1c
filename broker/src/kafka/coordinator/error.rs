//! Why the coordinator refused a group request, each with its Kafka error code.

use std::time::Duration;

use kafka_protocol::ResponseError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum GroupError {
    #[error("a group id must not be empty")]
    InvalidGroupId,
    #[error(
        "member `{member}` is not in group `{group}` (it left, its session timed out, or the broker restarted): rejoin"
    )]
    UnknownMember { group: String, member: String },
    #[error("generation {generation} is not the current generation of group `{group}`: rejoin")]
    IllegalGeneration { group: String, generation: i32 },
    #[error("group `{group}` is rebalancing: rejoin")]
    RebalanceInProgress { group: String },
    #[error("the protocol type or protocols do not match those of group `{group}`'s members")]
    InconsistentGroupProtocol { group: String },
    #[error(
        "session timeout {requested:?} is outside broker.group_min_session_timeout..=broker.group_max_session_timeout ({min:?}..={max:?})"
    )]
    InvalidSessionTimeout {
        requested: Duration,
        min: Duration,
        max: Duration,
    },
    #[error("join again with the member id `{member}` assigned to you")]
    MemberIdRequired { member: String },
    #[error("group `{group}` already has broker.max_group_members = {max} members")]
    GroupFull { group: String, max: usize },
    #[error("group `{group}` would be one more than broker.max_groups = {max} groups with members")]
    TooManyGroups { group: String, max: usize },
    #[error("the broker is shutting down: find the coordinator again")]
    NotCoordinator,
}

impl GroupError {
    pub fn code(&self) -> i16 {
        let error = match self {
            GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
            GroupError::UnknownMember { .. } => ResponseError::UnknownMemberId,
            GroupError::IllegalGeneration { .. } => ResponseError::IllegalGeneration,
            GroupError::RebalanceInProgress { .. } => ResponseError::RebalanceInProgress,
            GroupError::InconsistentGroupProtocol { .. } => {
                ResponseError::InconsistentGroupProtocol
            }
            GroupError::InvalidSessionTimeout { .. } => ResponseError::InvalidSessionTimeout,
            GroupError::MemberIdRequired { .. } => ResponseError::MemberIdRequired,
            GroupError::GroupFull { .. } => ResponseError::GroupMaxSizeReached,
            GroupError::TooManyGroups { .. } => ResponseError::PolicyViolation,
            GroupError::NotCoordinator => ResponseError::NotCoordinator,
        };
        error.code()
    }
}
