//! FindCoordinator: this node coordinates every consumer group. Transactions are not supported,
//! so a transaction coordinator is never found.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{NODE_ID, text};
use crate::kafka::dispatch::Context;

/// Key type of a consumer group (1 is a transactional id).
const GROUP: i8 = 0;

pub(crate) fn handle(
    ctx: &Context,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| coordinator(ctx, key, request.key_type))
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let found = coordinator(ctx, request.key, request.key_type);
    FindCoordinatorResponse::default()
        .with_error_code(found.error_code)
        .with_error_message(found.error_message)
        .with_node_id(found.node_id)
        .with_host(found.host)
        .with_port(found.port)
}

fn coordinator(ctx: &Context, key: StrBytes, key_type: i8) -> Coordinator {
    let found = Coordinator::default().with_key(key);
    if key_type != GROUP {
        return found
            .with_node_id(BrokerId(-1))
            .with_port(-1)
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_error_message(text("this broker coordinates consumer groups only (key type 0); transactions are not supported"));
    }
    let (host, port) = &ctx.advertised;
    found
        .with_node_id(BrokerId(NODE_ID))
        .with_host(StrBytes::from_string(host.clone()))
        .with_port(i32::from(*port))
}
