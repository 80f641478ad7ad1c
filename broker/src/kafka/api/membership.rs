//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup: group membership through the coordinator.
//! A JoinGroup or SyncGroup may wait for the rest of the group; only its own connection waits.

use std::time::Duration;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::text;
use crate::kafka::coordinator::{GroupError, JoinRequest, Protocol, SyncRequest};
use crate::kafka::dispatch::{Client, Context};

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn code(result: Result<(), GroupError>) -> i16 {
    result.err().map_or(0, |e| e.code())
}

pub(crate) async fn join(
    ctx: &Context,
    client: &Client,
    request: JoinGroupRequest,
    version: i16,
) -> JoinGroupResponse {
    let session_timeout = millis(request.session_timeout_ms);
    let member_id = request.member_id.clone();
    let join = JoinRequest {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        client_id: client.id.clone(),
        client_host: client.host.clone(),
        session_timeout,
        // Before v1 the session timeout doubled as the rebalance timeout.
        rebalance_timeout: if version >= 1 {
            millis(request.rebalance_timeout_ms)
        } else {
            session_timeout
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| Protocol {
                name: p.name.to_string(),
                metadata: p.metadata,
            })
            .collect(),
        require_known_member_id: version >= 4,
    };
    match ctx.groups.join(join).await {
        Ok(joined) => JoinGroupResponse::default()
            .with_generation_id(joined.generation)
            .with_protocol_type(text(joined.protocol_type))
            .with_protocol_name(text(joined.protocol))
            .with_leader(StrBytes::from_string(joined.leader))
            .with_member_id(StrBytes::from_string(joined.member_id))
            .with_members(
                joined
                    .members
                    .into_iter()
                    .map(|(id, metadata)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(StrBytes::from_string(id))
                            .with_metadata(metadata)
                    })
                    .collect(),
            ),
        Err(e) => {
            tracing::debug!(group = %request.group_id.0, error = %e, "JoinGroup refused");
            let member_id = match &e {
                GroupError::MemberIdRequired { member } => StrBytes::from_string(member.clone()),
                _ => member_id,
            };
            // The protocol name is nullable from v7; before, an empty string stands for none.
            let protocol_name = if version >= 7 { None } else { text("") };
            JoinGroupResponse::default()
                .with_error_code(e.code())
                .with_generation_id(-1)
                .with_protocol_name(protocol_name)
                .with_member_id(member_id)
        }
    }
}

pub(crate) async fn sync(ctx: &Context, request: SyncGroupRequest) -> SyncGroupResponse {
    let sync = SyncRequest {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        generation: request.generation_id,
        protocol_type: request.protocol_type.map(|t| t.to_string()),
        protocol: request.protocol_name.map(|p| p.to_string()),
        assignments: request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    match ctx.groups.sync(sync).await {
        Ok(synced) => SyncGroupResponse::default()
            .with_protocol_type(text(synced.protocol_type))
            .with_protocol_name(text(synced.protocol))
            .with_assignment(synced.assignment),
        Err(e) => {
            tracing::debug!(group = %request.group_id.0, error = %e, "SyncGroup refused");
            SyncGroupResponse::default().with_error_code(e.code())
        }
    }
}

pub(crate) fn heartbeat(ctx: &Context, request: HeartbeatRequest) -> HeartbeatResponse {
    let beat = ctx.groups.heartbeat(
        &request.group_id.0,
        &request.member_id,
        request.generation_id,
    );
    HeartbeatResponse::default().with_error_code(code(beat))
}

/// Before v3 one member leaves; from v3 a batch of members, each answered on its own.
pub(crate) fn leave(ctx: &Context, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let group = request.group_id.0.to_string();
    if version < 3 {
        return LeaveGroupResponse::default()
            .with_error_code(code(ctx.groups.leave(&group, &request.member_id)));
    }
    let members = request
        .members
        .into_iter()
        .map(|m| {
            let left = ctx.groups.leave(&group, &m.member_id);
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(code(left))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
