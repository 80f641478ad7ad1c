//! One module per Kafka API: a request struct in, a response struct out.

pub(crate) mod fetch;
pub(crate) mod find_coordinator;
pub(crate) mod group_info;
pub(crate) mod init_producer_id;
pub(crate) mod list_offsets;
pub(crate) mod membership;
pub(crate) mod metadata;
pub(crate) mod offsets;
pub(crate) mod produce;
pub(crate) mod topics;

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

/// The one broker of this single-node cluster.
pub(crate) const NODE_ID: i32 = 0;
/// Leader epochs are not tracked; -1 tells clients to skip epoch validation.
pub(crate) const NO_EPOCH: i32 = -1;

pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub(crate) fn text(message: impl ToString) -> Option<StrBytes> {
    Some(StrBytes::from_string(message.to_string()))
}
