//! DescribeGroups and ListGroups: what Kafka tools (`kafka-consumer-groups.sh`, admin clients)
//! show of the groups.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DescribeGroupsRequest, DescribeGroupsResponse, GroupId, ListGroupsRequest, ListGroupsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::dispatch::{Context, unblock};

/// The only group type here: the classic rebalance protocol.
const GROUP_TYPE: &str = "classic";

/// A group with neither members nor committed offsets is reported `Dead`, as Kafka does.
pub(crate) async fn describe(
    ctx: &Context,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let groups = ctx.groups.clone();
    let described = unblock(move || {
        request
            .groups
            .into_iter()
            .map(|id| {
                let d = groups.describe(&id.0);
                (id, d)
            })
            .collect::<Vec<_>>()
    })
    .await;
    let groups = described
        .into_iter()
        .map(|(id, description)| {
            let group = DescribedGroup::default().with_group_id(id);
            let Some(d) = description else {
                return group.with_group_state(StrBytes::from_static_str("Dead"));
            };
            let members = d
                .members
                .into_iter()
                .map(|m| {
                    DescribedGroupMember::default()
                        .with_member_id(StrBytes::from_string(m.member_id))
                        .with_client_id(StrBytes::from_string(m.client_id))
                        .with_client_host(StrBytes::from_string(m.client_host))
                        .with_member_metadata(m.metadata)
                        .with_member_assignment(m.assignment)
                })
                .collect();
            group
                .with_group_state(StrBytes::from_static_str(d.state.name()))
                .with_protocol_type(StrBytes::from_string(d.protocol_type))
                .with_protocol_data(StrBytes::from_string(d.protocol))
                .with_members(members)
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

/// Every group with members or committed offsets, filtered by state (v4+) and type (v5+).
pub(crate) async fn list(ctx: &Context, request: ListGroupsRequest) -> ListGroupsResponse {
    let groups = ctx.groups.clone();
    let listed = unblock(move || groups.list()).await;
    let typed = request.types_filter.is_empty()
        || request
            .types_filter
            .iter()
            .any(|t| t.eq_ignore_ascii_case(GROUP_TYPE));
    let groups = listed
        .into_iter()
        .filter(|g| {
            typed
                && (request.states_filter.is_empty()
                    || request
                        .states_filter
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state.name())))
        })
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.group_id)))
                .with_protocol_type(StrBytes::from_string(g.protocol_type))
                .with_group_state(StrBytes::from_static_str(g.state.name()))
                .with_group_type(StrBytes::from_static_str(GROUP_TYPE))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
