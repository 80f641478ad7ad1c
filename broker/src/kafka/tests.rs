//! Request bytes in, response bytes out: the dispatcher tested without sockets, with requests
//! encoded and responses decoded by the kafka-protocol codecs a client would use.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use super::api::topic_name;
use super::dispatch::{Context, ProtocolError, handle};
use crate::batch;
use crate::config::BrokerConfig;
use crate::log::Log;
use crate::record::Record;

struct Harness {
    dir: tempfile::TempDir,
    ctx: Context,
}

/// Where the test requests come from.
const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50_000);

fn harness(config: BrokerConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config.clone()).unwrap();
    Harness {
        ctx: Context::open(log, config, ("127.0.0.1".into(), 9092)).unwrap(),
        dir,
    }
}

fn frame<Req: Encodable + HeaderVersion>(key: ApiKey, version: i16, request: &Req) -> Bytes {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(42)
        .with_client_id(Some(StrBytes::from_static_str("test")))
        .encode(&mut buf, Req::header_version(version))
        .unwrap();
    request.encode(&mut buf, version).unwrap();
    buf.freeze()
}

fn decode<Resp: Decodable + HeaderVersion>(response: Bytes, version: i16) -> Resp {
    let length = i32::from_be_bytes(response[..4].try_into().unwrap()) as usize;
    assert_eq!(length, response.len() - 4, "length prefix");
    let mut body = response.slice(4..);
    let header = ResponseHeader::decode(&mut body, Resp::header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 42);
    Resp::decode(&mut body, version).unwrap()
}

async fn call<Req: Encodable + HeaderVersion, Resp: Decodable + HeaderVersion>(
    h: &Harness,
    key: ApiKey,
    version: i16,
    request: &Req,
) -> Resp {
    let response = handle(&h.ctx, PEER, frame(key, version, request))
        .await
        .unwrap()
        .expect("a response");
    decode(response, version)
}

fn produce_request(topic: &str, partition: i32, records: &[Record], acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(1000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(batch::encode(0, records))),
                ]),
        ])
}

fn fetch_request(topic: &str, partition: i32, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}

fn values(records: Option<Bytes>) -> Vec<String> {
    let mut bytes = records.unwrap_or_default();
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let info = batch::check(&bytes).unwrap().unwrap();
        let one = bytes.split_to(info.size);
        out.extend(
            batch::decode(&one)
                .unwrap()
                .into_iter()
                .map(|r| String::from_utf8(r.record.value.to_vec()).unwrap()),
        );
    }
    out
}

#[tokio::test]
async fn api_versions_lists_what_is_implemented_and_answers_newer_clients_with_v0() {
    let h = harness(BrokerConfig::default());
    let response: ApiVersionsResponse =
        call(&h, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await;
    assert_eq!(response.error_code, 0);
    let fetch = response
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::Fetch as i16)
        .unwrap();
    assert_eq!((fetch.min_version, fetch.max_version), (4, 12));
    let too_new = handle(
        &h.ctx,
        PEER,
        frame(ApiKey::ApiVersions, 4, &ApiVersionsRequest::default()),
    )
    .await
    .unwrap()
    .unwrap();
    let response: ApiVersionsResponse = decode(too_new, 0);
    assert_eq!(response.error_code, 35, "UNSUPPORTED_VERSION");
    assert_eq!(response.api_keys.len(), super::versions::SUPPORTED.len());
}

#[tokio::test]
async fn unknown_apis_and_versions_close_the_connection_with_a_reason() {
    let h = harness(BrokerConfig::default());
    let mut unknown =
        BytesMut::from(&frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())[..]);
    unknown[0..2].copy_from_slice(&999i16.to_be_bytes());
    assert!(matches!(
        handle(&h.ctx, PEER, unknown.freeze()).await,
        Err(ProtocolError::UnknownApiKey(999))
    ));
    let mut old = BytesMut::from(&frame(ApiKey::Fetch, 4, &FetchRequest::default())[..]);
    old[2..4].copy_from_slice(&3i16.to_be_bytes());
    assert!(matches!(
        handle(&h.ctx, PEER, old.freeze()).await,
        Err(ProtocolError::UnsupportedVersion { version: 3, .. })
    ));
    assert!(matches!(
        handle(&h.ctx, PEER, Bytes::from_static(b"\0\x03")).await,
        Err(ProtocolError::Malformed(_))
    ));
}

#[tokio::test]
async fn metadata_creates_requested_topics_and_describes_them() {
    let h = harness(BrokerConfig {
        default_partitions: 3,
        ..BrokerConfig::default()
    });
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name("city.events"))),
        ]))
        .with_allow_auto_topic_creation(true);
    let response: MetadataResponse = call(&h, ApiKey::Metadata, 12, &request).await;
    assert_eq!(response.brokers[0].host.as_str(), "127.0.0.1");
    assert_eq!(response.brokers[0].port, 9092);
    let topic = &response.topics[0];
    assert_eq!((topic.error_code, topic.partitions.len()), (0, 3));
    assert_eq!(
        topic.topic_id,
        h.ctx.log.topic_spec("city.events").unwrap().id
    );
    assert_eq!(topic.partitions[2].leader_id.0, 0);

    let refused = request.clone().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic_name("other"))),
    ]));
    let response: MetadataResponse = call(
        &h,
        ApiKey::Metadata,
        12,
        &refused.with_allow_auto_topic_creation(false),
    )
    .await;
    assert_eq!(
        response.topics[0].error_code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    let all: MetadataResponse = call(
        &h,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(None),
    )
    .await;
    assert_eq!(all.topics.len(), 1);
}

#[tokio::test]
async fn produced_batches_are_fetched_back_and_acks_zero_gets_no_answer() {
    let h = harness(BrokerConfig::default());
    h.ctx.log.create_topic("t", 2).unwrap();
    let records = [
        Record::new(Some("k"), "one", 1_000),
        Record::new(Some("k"), "two", 2_000),
    ];
    let response: ProduceResponse = call(
        &h,
        ApiKey::Produce,
        9,
        &produce_request("t", 1, &records, -1),
    )
    .await;
    let partition = &response.responses[0].partition_responses[0];
    assert_eq!((partition.error_code, partition.base_offset), (0, 0));
    assert!(
        handle(
            &h.ctx,
            PEER,
            frame(
                ApiKey::Produce,
                9,
                &produce_request("t", 1, &records[..1], 0)
            )
        )
        .await
        .unwrap()
        .is_none()
    );

    let response: FetchResponse = call(&h, ApiKey::Fetch, 12, &fetch_request("t", 1, 1, 0)).await;
    let data = &response.responses[0].partitions[0];
    assert_eq!(
        (
            data.error_code,
            data.high_watermark,
            data.last_stable_offset,
            data.log_start_offset
        ),
        (0, 3, 3, 0)
    );
    assert_eq!(
        values(data.records.clone()),
        vec!["one", "two", "one"],
        "whole batches, even from inside one"
    );

    let response: FetchResponse = call(&h, ApiKey::Fetch, 12, &fetch_request("t", 1, 9, 0)).await;
    assert_eq!(
        response.responses[0].partitions[0].error_code, 1,
        "OFFSET_OUT_OF_RANGE"
    );
    let response: ProduceResponse = call(
        &h,
        ApiKey::Produce,
        9,
        &produce_request("t", 5, &records, 1),
    )
    .await;
    assert_eq!(response.responses[0].partition_responses[0].error_code, 3);
}

#[tokio::test]
async fn a_corrupt_batch_is_refused_with_its_reason() {
    let h = harness(BrokerConfig::default());
    h.ctx.log.create_topic("t", 1).unwrap();
    let mut corrupt = batch::encode(0, &[Record::new(Some("k"), "v", 1)]).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xFF;
    let mut request = produce_request("t", 0, &[Record::new(Some("k"), "v", 1)], -1);
    request.topic_data[0].partition_data[0].records = Some(Bytes::from(corrupt));
    let response: ProduceResponse = call(&h, ApiKey::Produce, 9, &request).await;
    let partition = &response.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, 2, "CORRUPT_MESSAGE");
    assert!(partition.error_message.as_ref().unwrap().contains("CRC"));
    assert_eq!(h.ctx.log.high_watermark("t", 0).unwrap(), 0);
}

#[tokio::test]
async fn a_waiting_fetch_returns_as_soon_as_a_record_is_appended() {
    let h = Arc::new(harness(BrokerConfig::default()));
    h.ctx.log.create_topic("t", 1).unwrap();
    let waiting = tokio::spawn({
        let h = h.clone();
        async move {
            let response: FetchResponse =
                call(&h, ApiKey::Fetch, 12, &fetch_request("t", 0, 0, 60_000)).await;
            response
        }
    });
    h.ctx
        .log
        .produce("t", vec![Record::new(Some("k"), "woken", 5)])
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("woken well before max_wait")
        .unwrap();
    assert_eq!(
        values(response.responses[0].partitions[0].records.clone()),
        vec!["woken"]
    );
}

#[tokio::test]
async fn list_offsets_finds_earliest_latest_and_by_timestamp() {
    let h = harness(BrokerConfig::default());
    h.ctx.log.create_topic("t", 1).unwrap();
    for ts in [100, 200, 300] {
        h.ctx
            .log
            .produce("t", vec![Record::new(None::<Bytes>, "x", ts)])
            .unwrap();
    }
    let request = ListOffsetsRequest::default().with_topics(vec![
        ListOffsetsTopic::default()
            .with_name(topic_name("t"))
            .with_partitions(
                [-2, -1, 150, 400]
                    .into_iter()
                    .map(|ts| {
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(ts)
                    })
                    .collect(),
            ),
    ]);
    let response: ListOffsetsResponse = call(&h, ApiKey::ListOffsets, 6, &request).await;
    let found: Vec<(i64, i64)> = response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.offset, p.timestamp))
        .collect();
    assert_eq!(found, vec![(0, -1), (3, -1), (1, 200), (-1, -1)]);
}

#[tokio::test]
async fn topics_are_created_and_deleted_with_kafka_errors_for_refusals() {
    let h = harness(BrokerConfig::default());
    let topic = |name: &str, partitions, replication| {
        CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(replication)
    };
    let request = CreateTopicsRequest::default().with_topics(vec![
        topic("a", 4, 1),
        topic("b", -1, -1),
        topic("c", 1, 3),
        topic("a", 4, 1),
    ]);
    let response: CreateTopicsResponse = call(&h, ApiKey::CreateTopics, 4, &request).await;
    let codes: Vec<i16> = response.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(codes, vec![0, 0, 38, 36]);
    assert_eq!(h.ctx.log.partition_count("a").unwrap(), 4);
    assert_eq!(h.ctx.log.partition_count("b").unwrap(), 1);

    let request =
        DeleteTopicsRequest::default().with_topic_names(vec![topic_name("a"), topic_name("zzz")]);
    let response: DeleteTopicsResponse = call(&h, ApiKey::DeleteTopics, 4, &request).await;
    assert_eq!(
        response
            .responses
            .iter()
            .map(|r| r.error_code)
            .collect::<Vec<_>>(),
        vec![0, 3]
    );
    assert!(h.ctx.log.partition_count("a").is_err());
}

fn group_config() -> BrokerConfig {
    BrokerConfig {
        group_initial_rebalance_delay: Duration::ZERO,
        ..BrokerConfig::default()
    }
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn group_id(s: &str) -> GroupId {
    GroupId(text(s))
}

fn join_request(group: &str, member: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group_id(group))
        .with_member_id(text(member))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(30_000)
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![
            join_group_request::JoinGroupRequestProtocol::default()
                .with_name(text("range"))
                .with_metadata(Bytes::from_static(b"meta")),
        ])
}

/// A new member joins `group` the v4 way: first a member id, then the join itself.
async fn join_new(h: &Harness, group: &str) -> JoinGroupResponse {
    let first: JoinGroupResponse = call(h, ApiKey::JoinGroup, 4, &join_request(group, "")).await;
    assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
    assert!(!first.member_id.is_empty());
    call(
        h,
        ApiKey::JoinGroup,
        4,
        &join_request(group, &first.member_id),
    )
    .await
}

fn sync_request(
    group: &str,
    member: &str,
    generation: i32,
    assignments: &[(&str, &str)],
) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(group_id(group))
        .with_member_id(text(member))
        .with_generation_id(generation)
        .with_protocol_type(Some(text("consumer")))
        .with_protocol_name(Some(text("range")))
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(text(m))
                        .with_assignment(Bytes::copy_from_slice(a.as_bytes()))
                })
                .collect(),
        )
}

fn heartbeat(group: &str, member: &str, generation: i32) -> HeartbeatRequest {
    HeartbeatRequest::default()
        .with_group_id(group_id(group))
        .with_member_id(text(member))
        .with_generation_id(generation)
}

fn commit_request(
    group: &str,
    member: &str,
    generation: i32,
    offsets: &[(i32, i64, &str)],
) -> OffsetCommitRequest {
    use offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    let partitions = offsets
        .iter()
        .map(|(p, o, m)| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(*p)
                .with_committed_offset(*o)
                .with_committed_metadata(Some(text(m)))
        })
        .collect();
    OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_member_id(text(member))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(topic_name("t"))
                .with_partitions(partitions),
        ])
}

fn fetch_offsets_v9(group: &str, partitions: Option<Vec<i32>>) -> OffsetFetchRequest {
    use offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopics};
    let topics = partitions.map(|ps| {
        vec![
            OffsetFetchRequestTopics::default()
                .with_name(topic_name("t"))
                .with_partition_indexes(ps),
        ]
    });
    OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(group_id(group))
            .with_topics(topics),
    ])
}

async fn committed_v9(h: &Harness, group: &str, partitions: Vec<i32>) -> Vec<(i32, i64, String)> {
    let response: OffsetFetchResponse = call(
        h,
        ApiKey::OffsetFetch,
        9,
        &fetch_offsets_v9(group, Some(partitions)),
    )
    .await;
    let group = &response.groups[0];
    assert_eq!(group.error_code, 0);
    group.topics[0]
        .partitions
        .iter()
        .map(|p| {
            (
                p.partition_index,
                p.committed_offset,
                p.metadata
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn find_coordinator_names_this_broker_for_groups_and_refuses_transactions() {
    let h = harness(BrokerConfig::default());
    let batch = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_coordinator_keys(vec![text("a"), text("b")]);
    let response: FindCoordinatorResponse = call(&h, ApiKey::FindCoordinator, 4, &batch).await;
    let found: Vec<(&str, i32, &str, i32, i16)> = response
        .coordinators
        .iter()
        .map(|c| {
            (
                c.key.as_str(),
                c.node_id.0,
                c.host.as_str(),
                c.port,
                c.error_code,
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            ("a", 0, "127.0.0.1", 9092, 0),
            ("b", 0, "127.0.0.1", 9092, 0)
        ]
    );
    let response: FindCoordinatorResponse = call(
        &h,
        ApiKey::FindCoordinator,
        0,
        &FindCoordinatorRequest::default().with_key(text("a")),
    )
    .await;
    assert_eq!(
        (response.error_code, response.node_id.0, response.port),
        (0, 0, 9092)
    );
    let transactional = FindCoordinatorRequest::default()
        .with_key(text("tx"))
        .with_key_type(1);
    let response: FindCoordinatorResponse =
        call(&h, ApiKey::FindCoordinator, 3, &transactional).await;
    assert_eq!(response.error_code, 42, "INVALID_REQUEST");
    assert!(
        response
            .error_message
            .unwrap()
            .contains("transactions are not supported")
    );
}

#[tokio::test]
async fn a_group_joins_syncs_commits_and_its_offsets_survive_a_restart() {
    let h = harness(group_config());
    h.ctx.log.create_topic("t", 3).unwrap();
    let joined = join_new(&h, "g").await;
    assert_eq!((joined.error_code, joined.generation_id), (0, 1));
    assert_eq!(joined.leader, joined.member_id);
    assert_eq!(joined.members.len(), 1);
    let me = joined.member_id.to_string();
    let synced: SyncGroupResponse = call(
        &h,
        ApiKey::SyncGroup,
        5,
        &sync_request("g", &me, 1, &[(me.as_str(), "t:0,1,2")]),
    )
    .await;
    assert_eq!(
        (synced.error_code, &synced.assignment[..]),
        (0, &b"t:0,1,2"[..])
    );
    assert_eq!(synced.protocol_name.unwrap().as_str(), "range");
    let beat: HeartbeatResponse = call(&h, ApiKey::Heartbeat, 4, &heartbeat("g", &me, 1)).await;
    assert_eq!(beat.error_code, 0);

    let long = "m".repeat(5000);
    let commit = commit_request(
        "g",
        &me,
        1,
        &[
            (0, 5, "first"),
            (1, 7, ""),
            (9, 1, ""),
            (2, 1, long.as_str()),
        ],
    );
    let response: OffsetCommitResponse = call(&h, ApiKey::OffsetCommit, 9, &commit).await;
    let codes: Vec<(i32, i16)> = response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.error_code))
        .collect();
    assert_eq!(
        codes,
        vec![(0, 0), (1, 0), (9, 3), (2, 12)],
        "unknown partitions and oversized metadata are refused"
    );
    let stale: OffsetCommitResponse = call(
        &h,
        ApiKey::OffsetCommit,
        2,
        &commit_request("g", &me, 0, &[(0, 99, "")]),
    )
    .await;
    assert_eq!(
        stale.topics[0].partitions[0].error_code, 22,
        "ILLEGAL_GENERATION"
    );
    assert_eq!(
        committed_v9(&h, "g", vec![0, 1, 2]).await,
        vec![
            (0, 5, "first".to_string()),
            (1, 7, String::new()),
            (2, -1, String::new())
        ]
    );

    let old_form = OffsetFetchRequest::default()
        .with_group_id(group_id("g"))
        .with_topics(None);
    let response: OffsetFetchResponse = call(&h, ApiKey::OffsetFetch, 7, &old_form).await;
    let all: Vec<(i32, i64)> = response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset))
        .collect();
    assert_eq!(
        all,
        vec![(0, 5), (1, 7)],
        "v7 and older: one group, every committed partition"
    );

    let described: DescribeGroupsResponse = call(
        &h,
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![group_id("g"), group_id("none")]),
    )
    .await;
    let g = &described.groups[0];
    assert_eq!(
        (
            g.group_state.as_str(),
            g.protocol_type.as_str(),
            g.protocol_data.as_str()
        ),
        ("Stable", "consumer", "range")
    );
    assert_eq!(
        (
            g.members[0].client_id.as_str(),
            g.members[0].client_host.as_str()
        ),
        ("test", "/127.0.0.1")
    );
    assert_eq!(&g.members[0].member_assignment[..], b"t:0,1,2");
    assert_eq!(described.groups[1].group_state.as_str(), "Dead");
    let listed: ListGroupsResponse =
        call(&h, ApiKey::ListGroups, 5, &ListGroupsRequest::default()).await;
    assert_eq!(
        listed
            .groups
            .iter()
            .map(|g| (
                g.group_id.0.as_str(),
                g.group_state.as_str(),
                g.group_type.as_str()
            ))
            .collect::<Vec<_>>(),
        vec![("g", "Stable", "classic")]
    );
    let empty_only: ListGroupsResponse = call(
        &h,
        ApiKey::ListGroups,
        4,
        &ListGroupsRequest::default().with_states_filter(vec![text("Empty")]),
    )
    .await;
    assert!(empty_only.groups.is_empty());

    let leave = LeaveGroupRequest::default()
        .with_group_id(group_id("g"))
        .with_members(vec![
            leave_group_request::MemberIdentity::default().with_member_id(text(&me)),
        ]);
    let left: LeaveGroupResponse = call(&h, ApiKey::LeaveGroup, 5, &leave).await;
    assert_eq!((left.error_code, left.members[0].error_code), (0, 0));
    let listed: ListGroupsResponse = call(
        &h,
        ApiKey::ListGroups,
        4,
        &ListGroupsRequest::default().with_states_filter(vec![text("empty")]),
    )
    .await;
    assert_eq!(
        listed.groups[0].group_id.0.as_str(),
        "g",
        "a group without members is still listed while it has offsets"
    );

    let reopened = Harness {
        ctx: Context::open(h.ctx.log.clone(), group_config(), h.ctx.advertised.clone()).unwrap(),
        dir: h.dir,
    };
    assert_eq!(
        committed_v9(&reopened, "g", vec![0, 1]).await,
        vec![(0, 5, "first".to_string()), (1, 7, String::new())]
    );
    let after: HeartbeatResponse =
        call(&reopened, ApiKey::Heartbeat, 0, &heartbeat("g", &me, 1)).await;
    assert_eq!(
        after.error_code, 25,
        "membership does not survive a restart: UNKNOWN_MEMBER_ID, rejoin"
    );
}

#[tokio::test]
async fn a_waiting_join_holds_up_only_its_own_request() {
    let h = harness(group_config());
    let a = join_new(&h, "g").await.member_id.to_string();
    let _: SyncGroupResponse = call(&h, ApiKey::SyncGroup, 3, &sync_request("g", &a, 1, &[])).await;
    let first: JoinGroupResponse = call(&h, ApiKey::JoinGroup, 4, &join_request("g", "")).await;
    let b_request = join_request("g", &first.member_id);
    let b_joins = call::<_, JoinGroupResponse>(&h, ApiKey::JoinGroup, 4, &b_request);
    tokio::pin!(b_joins);
    assert!(
        futures::poll!(&mut b_joins).is_pending(),
        "b's join waits for a to rejoin"
    );
    let beat: HeartbeatResponse = call(&h, ApiKey::Heartbeat, 4, &heartbeat("g", &a, 1)).await;
    assert_eq!(
        beat.error_code, 27,
        "answered while b's join waits: REBALANCE_IN_PROGRESS, a must rejoin"
    );
    let a_rejoined: JoinGroupResponse =
        call(&h, ApiKey::JoinGroup, 4, &join_request("g", &a)).await;
    let b_joined = tokio::time::timeout(Duration::from_secs(10), b_joins)
        .await
        .expect("b's join is answered once a rejoined");
    assert_eq!((a_rejoined.generation_id, b_joined.generation_id), (2, 2));
    assert_eq!((a_rejoined.members.len(), b_joined.members.len()), (2, 0));
}

#[tokio::test]
async fn idempotent_retries_are_stored_once_and_gaps_are_refused() {
    let h = harness(BrokerConfig::default());
    h.ctx.log.create_topic("t", 1).unwrap();
    let idempotent = InitProducerIdRequest::default().with_transactional_id(None);
    let init: InitProducerIdResponse = call(&h, ApiKey::InitProducerId, 4, &idempotent).await;
    assert_eq!((init.error_code, init.producer_epoch), (0, 0));
    let id = init.producer_id.0;
    let again: InitProducerIdResponse = call(&h, ApiKey::InitProducerId, 0, &idempotent).await;
    assert_ne!(again.producer_id.0, id);

    let produce = |batch: Vec<u8>| {
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(topic_name("t"))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(Bytes::from(batch))),
                    ]),
            ])
    };
    let batch = crate::producers::tests::idempotent_batch(id, 0, 0, 3);
    for attempt in ["original", "retry"] {
        let response: ProduceResponse = call(&h, ApiKey::Produce, 9, &produce(batch.clone())).await;
        let p = &response.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, 0), "{attempt}");
    }
    assert_eq!(
        h.ctx.log.high_watermark("t", 0).unwrap(),
        3,
        "the retry was not stored twice"
    );
    let gap: ProduceResponse = call(
        &h,
        ApiKey::Produce,
        9,
        &produce(crate::producers::tests::idempotent_batch(id, 0, 5, 1)),
    )
    .await;
    let p = &gap.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER");
    assert!(
        p.error_message.as_ref().unwrap().contains("expects 3"),
        "{:?}",
        p.error_message
    );
    let next: ProduceResponse = call(
        &h,
        ApiKey::Produce,
        9,
        &produce(crate::producers::tests::idempotent_batch(id, 0, 3, 1)),
    )
    .await;
    assert_eq!(next.responses[0].partition_responses[0].base_offset, 3);

    let transactional = idempotent
        .clone()
        .with_transactional_id(Some(TransactionalId(text("tx"))));
    let refused: InitProducerIdResponse = call(&h, ApiKey::InitProducerId, 4, &transactional).await;
    assert_eq!(refused.error_code, 42);
    let reopened = Harness {
        ctx: Context::open(
            h.ctx.log.clone(),
            BrokerConfig::default(),
            h.ctx.advertised.clone(),
        )
        .unwrap(),
        dir: h.dir,
    };
    let after: InitProducerIdResponse =
        call(&reopened, ApiKey::InitProducerId, 4, &idempotent).await;
    assert!(
        after.producer_id.0 > again.producer_id.0,
        "producer ids are not reused after a restart"
    );
}

#[tokio::test]
async fn every_group_and_producer_api_answers_in_every_advertised_version() {
    let h = harness(group_config());
    for (key, min, max) in super::versions::SUPPORTED {
        for v in min..=max {
            match key {
                ApiKey::FindCoordinator => {
                    let _: FindCoordinatorResponse =
                        call(&h, key, v, &FindCoordinatorRequest::default()).await;
                }
                ApiKey::JoinGroup => {
                    let _: JoinGroupResponse = call(&h, key, v, &JoinGroupRequest::default()).await;
                }
                ApiKey::SyncGroup => {
                    let _: SyncGroupResponse = call(&h, key, v, &SyncGroupRequest::default()).await;
                }
                ApiKey::Heartbeat => {
                    let _: HeartbeatResponse = call(&h, key, v, &HeartbeatRequest::default()).await;
                }
                ApiKey::LeaveGroup => {
                    let _: LeaveGroupResponse =
                        call(&h, key, v, &LeaveGroupRequest::default()).await;
                }
                ApiKey::OffsetCommit => {
                    let _: OffsetCommitResponse =
                        call(&h, key, v, &OffsetCommitRequest::default()).await;
                }
                ApiKey::OffsetFetch if v < 8 => {
                    let request = OffsetFetchRequest::default().with_topics(Some(vec![]));
                    let _: OffsetFetchResponse = call(&h, key, v, &request).await;
                }
                ApiKey::OffsetFetch => {
                    let _: OffsetFetchResponse =
                        call(&h, key, v, &fetch_offsets_v9("g", None)).await;
                }
                ApiKey::DescribeGroups => {
                    let _: DescribeGroupsResponse =
                        call(&h, key, v, &DescribeGroupsRequest::default()).await;
                }
                ApiKey::ListGroups => {
                    let _: ListGroupsResponse =
                        call(&h, key, v, &ListGroupsRequest::default()).await;
                }
                ApiKey::InitProducerId => {
                    let _: InitProducerIdResponse =
                        call(&h, key, v, &InitProducerIdRequest::default()).await;
                }
                _ => {}
            }
        }
    }
}
