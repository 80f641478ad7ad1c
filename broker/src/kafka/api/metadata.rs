//! Metadata: the broker, and each topic's partitions (creating requested topics when allowed).

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::protocol::StrBytes;

use super::{NO_EPOCH, NODE_ID, topic_name};
use crate::config::TopicSpec;
use crate::error::LogError;
use crate::kafka::dispatch::{Context, error_code};

/// The cluster id reported to clients.
const CLUSTER_ID: &str = "polis";

pub(crate) async fn handle(
    ctx: &Context,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let requested: Option<Vec<String>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .filter_map(|t| t.name.map(|n| n.0.to_string()))
            .collect()
    });
    // Before v4 a metadata request always creates missing topics (when the broker allows it).
    let create =
        ctx.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    let partitions = ctx.config.default_partitions;
    let topics = ctx
        .blocking(move |log| match requested {
            None => log.topics().into_iter().map(Ok).collect::<Vec<_>>(),
            Some(names) => names
                .into_iter()
                .map(|name| match log.topic_spec(&name) {
                    Err(LogError::UnknownTopic(_)) if create => log
                        .create_topic(&name, partitions)
                        .and_then(|_| log.topic_spec(&name))
                        .map_err(|e| (name, e)),
                    other => other.map_err(|e| (name, e)),
                })
                .collect(),
        })
        .await;
    let (host, port) = &ctx.advertised;
    MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(NODE_ID))
                .with_host(StrBytes::from_string(host.clone()))
                .with_port(i32::from(*port)),
        ])
        .with_cluster_id(Some(StrBytes::from_static_str(CLUSTER_ID)))
        .with_controller_id(BrokerId(NODE_ID))
        .with_topics(topics.into_iter().map(describe).collect())
}

fn describe(topic: Result<TopicSpec, (String, LogError)>) -> MetadataResponseTopic {
    match topic {
        Ok(spec) => MetadataResponseTopic::default()
            .with_name(Some(topic_name(&spec.name)))
            .with_topic_id(spec.id)
            .with_partitions(
                (0..spec.partitions)
                    .map(|p| {
                        MetadataResponsePartition::default()
                            .with_partition_index(p)
                            .with_leader_id(BrokerId(NODE_ID))
                            .with_leader_epoch(NO_EPOCH)
                            .with_replica_nodes(vec![BrokerId(NODE_ID)])
                            .with_isr_nodes(vec![BrokerId(NODE_ID)])
                    })
                    .collect(),
            ),
        Err((name, e)) => MetadataResponseTopic::default()
            .with_name(Some(topic_name(&name)))
            .with_error_code(error_code(&e)),
    }
}
