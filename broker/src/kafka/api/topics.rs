//! CreateTopics and DeleteTopics (which also drops the topic's committed offsets and producer
//! state).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
};

use super::{text, topic_name};
use crate::kafka::dispatch::{Context, error_code};

pub(crate) async fn create(ctx: &Context, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let default_partitions = ctx.config.default_partitions;
    let validate_only = request.validate_only;
    let wanted: Vec<(String, i32, i16, bool)> = request
        .topics
        .into_iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.num_partitions,
                t.replication_factor,
                !t.assignments.is_empty(),
            )
        })
        .collect();
    let topics = ctx
        .blocking(move |log| {
            wanted
                .into_iter()
                .map(|(name, partitions, replication, assigned)| {
                    let partitions = if partitions == -1 { default_partitions } else { partitions };
                    let result = CreatableTopicResult::default().with_name(topic_name(&name));
                    let refusal = if replication > 1 {
                        Some((ResponseError::InvalidReplicationFactor.code(), format!("replication factor {replication}: this broker is a single node; use 1 or -1")))
                    } else if assigned {
                        Some((ResponseError::InvalidReplicaAssignment.code(), "manual replica assignment is not supported by a single node".to_string()))
                    } else if validate_only {
                        None
                    } else {
                        log.create_new_topic(&name, partitions).err().map(|e| (error_code(&e), e.to_string()))
                    };
                    match refusal {
                        Some((code, message)) => result.with_error_code(code).with_error_message(text(message)),
                        None => result.with_num_partitions(partitions).with_replication_factor(1),
                    }
                })
                .collect()
        })
        .await;
    CreateTopicsResponse::default().with_topics(topics)
}

pub(crate) async fn delete(ctx: &Context, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let names: Vec<String> = request
        .topic_names
        .into_iter()
        .map(|n| n.0.to_string())
        .collect();
    let (groups, producers) = (ctx.groups.clone(), ctx.producers.clone());
    let responses = ctx
        .blocking(move |log| {
            names
                .into_iter()
                .map(|name| {
                    let result = DeletableTopicResult::default().with_name(Some(topic_name(&name)));
                    // Committed offsets and producer state of the deleted topic go with it.
                    let deleted = log.delete_topic(&name).and_then(|()| {
                        producers.forget_topic(&name);
                        groups.offsets().forget_topic(&name)
                    });
                    match deleted {
                        Ok(()) => result,
                        Err(e) => result
                            .with_error_code(error_code(&e))
                            .with_error_message(text(e)),
                    }
                })
                .collect()
        })
        .await;
    DeleteTopicsResponse::default().with_responses(responses)
}
