//! OffsetCommit and OffsetFetch: committed positions of consumer groups, checked against group
//! membership and made durable before the answer.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    GroupId, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
};

use super::{NO_EPOCH, text, topic_name};
use crate::kafka::dispatch::{Context, unblock};
use crate::offsets::{CommittedOffset, GroupOffsets, OffsetsError};

/// Per topic, each partition with the error code found before storing, if any.
type Checked = Vec<(String, Vec<(i32, Option<i16>)>)>;

pub(crate) async fn commit(ctx: &Context, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let allowed = ctx.groups.check_commit(
        &group,
        &request.member_id,
        request.generation_id_or_member_epoch,
    );
    let max_metadata = ctx.config.offset_metadata_max_bytes.as_u64() as usize;
    let mut checked: Checked = Vec::new();
    let mut offsets = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let partitions = ctx.log.partition_count(&name).unwrap_or(0);
        let codes = topic
            .partitions
            .into_iter()
            .map(|p| {
                let metadata = p
                    .committed_metadata
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                let refused = match &allowed {
                    Err(e) => Some(e.code()),
                    Ok(()) if !(0..partitions).contains(&p.partition_index) => {
                        Some(ResponseError::UnknownTopicOrPartition.code())
                    }
                    Ok(()) if metadata.len() > max_metadata => {
                        Some(ResponseError::OffsetMetadataTooLarge.code())
                    }
                    Ok(()) => None,
                };
                if refused.is_none() {
                    let committed = CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata,
                    };
                    offsets.push((name.clone(), p.partition_index, committed));
                }
                (p.partition_index, refused)
            })
            .collect();
        checked.push((name, codes));
    }
    if let Err(e) = &allowed {
        tracing::debug!(group, error = %e, "OffsetCommit refused");
    }
    let stored = if offsets.is_empty() {
        Ok(())
    } else {
        let (groups, group) = (ctx.groups.clone(), group.clone());
        unblock(move || groups.offsets().commit(&group, offsets)).await
    };
    let stored_code = match stored {
        Ok(()) => 0,
        Err(e) => {
            tracing::warn!(group, error = %e, "offsets not committed");
            match e {
                OffsetsError::TooManyGroups { .. } => ResponseError::PolicyViolation.code(),
                OffsetsError::Storage(_) => ResponseError::NotCoordinator.code(),
            }
        }
    };
    let topics = checked
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(p, refused)| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p)
                        .with_error_code(refused.unwrap_or(stored_code))
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic_name(&name))
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// Topics and partitions asked for, or `None` for every committed one.
type Wanted = Option<Vec<(String, Vec<i32>)>>;

/// Per topic, each partition's committed offset (or none).
type Found = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

/// Before v8 one group is asked for; from v8 a batch of groups.
pub(crate) async fn fetch(
    ctx: &Context,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let wanted: Vec<(GroupId, Wanted)> = if version >= 8 {
        request
            .groups
            .into_iter()
            .map(|g| {
                (
                    g.group_id,
                    g.topics.map(|ts| {
                        ts.into_iter()
                            .map(|t| (t.name.0.to_string(), t.partition_indexes))
                            .collect()
                    }),
                )
            })
            .collect()
    } else {
        let topics = request.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes))
                .collect()
        });
        vec![(request.group_id, topics)]
    };
    let groups = ctx.groups.clone();
    let found: Vec<(GroupId, Found)> = unblock(move || {
        wanted
            .into_iter()
            .map(|(group, topics)| {
                let committed = groups.offsets().fetch(&group.0);
                (group, select(committed, topics))
            })
            .collect()
    })
    .await;
    if version >= 8 {
        let groups = found
            .into_iter()
            .map(|(group, topics)| {
                OffsetFetchResponseGroup::default()
                    .with_group_id(group)
                    .with_topics(grouped_topics(topics))
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = found
        .into_iter()
        .flat_map(|(_, topics)| topics)
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(p, committed)| {
                    let (offset, epoch, metadata) = parts(committed);
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(epoch)
                        .with_metadata(metadata)
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&name))
                .with_partitions(partitions)
        });
    OffsetFetchResponse::default().with_topics(topics.collect())
}

fn grouped_topics(topics: Found) -> Vec<OffsetFetchResponseTopics> {
    topics
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(p, committed)| {
                    let (offset, epoch, metadata) = parts(committed);
                    OffsetFetchResponsePartitions::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(epoch)
                        .with_metadata(metadata)
                })
                .collect();
            OffsetFetchResponseTopics::default()
                .with_name(topic_name(&name))
                .with_partitions(partitions)
        })
        .collect()
}

/// Offset, leader epoch and metadata as sent; offset -1 (the client applies
/// `auto.offset.reset`) when nothing was committed.
fn parts(
    committed: Option<CommittedOffset>,
) -> (i64, i32, Option<kafka_protocol::protocol::StrBytes>) {
    match committed {
        Some(c) => (c.offset, c.leader_epoch, text(c.metadata)),
        None => (-1, NO_EPOCH, text("")),
    }
}

/// The committed offsets of the wanted partitions, or of every committed partition.
fn select(committed: GroupOffsets, wanted: Wanted) -> Found {
    match wanted {
        Some(topics) => topics
            .into_iter()
            .map(|(topic, partitions)| {
                let found = partitions
                    .into_iter()
                    .map(|p| (p, committed.get(&(topic.clone(), p)).cloned()))
                    .collect();
                (topic, found)
            })
            .collect(),
        None => {
            let mut found: Found = Vec::new();
            for ((topic, partition), c) in committed {
                match found.last_mut() {
                    Some((last, partitions)) if *last == topic => {
                        partitions.push((partition, Some(c)))
                    }
                    _ => found.push((topic, vec![(partition, Some(c))])),
                }
            }
            found
        }
    }
}
