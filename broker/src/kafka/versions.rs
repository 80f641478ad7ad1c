//! The APIs and versions this broker implements, and the ApiVersions answer built from them.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// Every implemented API with the versions handled. Produce stops at 9 and Fetch at 12, the
/// last versions that name topics instead of topic ids; ListOffsets stops before the
/// max-timestamp lookup of v7. JoinGroup stops at 4: v5 brings static membership
/// (`group.instance.id`), which this coordinator does not implement, so clients configured for it
/// are told so at version negotiation. The later versions of the other group APIs only carry a
/// `group_instance_id` that, with no static members, is answered as Kafka answers an unknown one.
/// OffsetFetch v8+ batches groups; FindCoordinator v4+ batches keys.
pub(crate) const SUPPORTED: [(ApiKey, i16, i16); 17] = [
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 4),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 4),
    (ApiKey::DeleteTopics, 1, 4),
    (ApiKey::InitProducerId, 0, 4),
];

/// The version range handled for `key`, if the API is implemented.
pub(crate) fn supported(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, min, max)| (*min, *max))
}

/// The ApiVersions response body listing every implemented API.
pub(crate) fn api_versions(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SUPPORTED
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Message;

    /// The versions the message codecs can encode and decode, per implemented API.
    fn codec_versions(key: ApiKey) -> (i16, i16) {
        let range = match key {
            ApiKey::Produce => ProduceRequest::VERSIONS,
            ApiKey::Fetch => FetchRequest::VERSIONS,
            ApiKey::ListOffsets => ListOffsetsRequest::VERSIONS,
            ApiKey::Metadata => MetadataRequest::VERSIONS,
            ApiKey::OffsetCommit => OffsetCommitRequest::VERSIONS,
            ApiKey::OffsetFetch => OffsetFetchRequest::VERSIONS,
            ApiKey::FindCoordinator => FindCoordinatorRequest::VERSIONS,
            ApiKey::JoinGroup => JoinGroupRequest::VERSIONS,
            ApiKey::Heartbeat => HeartbeatRequest::VERSIONS,
            ApiKey::LeaveGroup => LeaveGroupRequest::VERSIONS,
            ApiKey::SyncGroup => SyncGroupRequest::VERSIONS,
            ApiKey::DescribeGroups => DescribeGroupsRequest::VERSIONS,
            ApiKey::ListGroups => ListGroupsRequest::VERSIONS,
            ApiKey::ApiVersions => ApiVersionsRequest::VERSIONS,
            ApiKey::CreateTopics => CreateTopicsRequest::VERSIONS,
            ApiKey::DeleteTopics => DeleteTopicsRequest::VERSIONS,
            ApiKey::InitProducerId => InitProducerIdRequest::VERSIONS,
            other => panic!("{other:?} is not implemented"),
        };
        (range.min, range.max)
    }

    #[test]
    fn librdkafka_sees_the_classic_group_protocol_and_not_kip_848() {
        for key in [
            ApiKey::FindCoordinator,
            ApiKey::JoinGroup,
            ApiKey::SyncGroup,
            ApiKey::Heartbeat,
            ApiKey::LeaveGroup,
        ] {
            assert!(supported(key).is_some(), "{key:?}");
        }
        assert!(supported(ApiKey::OffsetCommit).is_some_and(|(_, max)| max >= 1));
        assert!(supported(ApiKey::OffsetFetch).is_some_and(|(_, max)| max >= 1));
        assert_eq!(supported(ApiKey::ConsumerGroupHeartbeat), None);
    }

    #[test]
    fn only_versions_the_codecs_know_are_advertised() {
        for (key, min, max) in SUPPORTED {
            let (codec_min, codec_max) = codec_versions(key);
            assert!(
                codec_min <= min && max <= codec_max,
                "{key:?} {min}..={max} outside {codec_min}..={codec_max}"
            );
        }
    }
}
