//! ListOffsets: the earliest (-2) or latest (-1) offset of a partition, or the first offset at or
//! after a timestamp.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{NO_EPOCH, topic_name};
use crate::kafka::dispatch::{Context, error_code};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub(crate) async fn handle(ctx: &Context, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let wanted: Vec<(String, Vec<(i32, i64)>)> = request
        .topics
        .into_iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions
                    .into_iter()
                    .map(|p| (p.partition_index, p.timestamp))
                    .collect(),
            )
        })
        .collect();
    let topics = ctx
        .blocking(move |log| {
            wanted
                .into_iter()
                .map(|(topic, partitions)| {
                    let partitions = partitions
                        .into_iter()
                        .map(|(partition, timestamp)| {
                            let response = ListOffsetsPartitionResponse::default()
                                .with_partition_index(partition)
                                .with_leader_epoch(NO_EPOCH);
                            let found = match timestamp {
                                LATEST => log.high_watermark(&topic, partition).map(|o| (o, -1)),
                                EARLIEST => {
                                    log.log_start_offset(&topic, partition).map(|o| (o, -1))
                                }
                                ts => log
                                    .offset_for_timestamp(&topic, partition, ts)
                                    .map(|found| found.unwrap_or((-1, -1))),
                            };
                            match found {
                                Ok((offset, timestamp)) => {
                                    response.with_offset(offset).with_timestamp(timestamp)
                                }
                                Err(e) => response
                                    .with_error_code(error_code(&e))
                                    .with_offset(-1)
                                    .with_timestamp(-1),
                            }
                        })
                        .collect();
                    ListOffsetsTopicResponse::default()
                        .with_name(topic_name(&topic))
                        .with_partitions(partitions)
                })
                .collect()
        })
        .await;
    ListOffsetsResponse::default().with_topics(topics)
}
