//! Produce: each partition's record batch is checked, given offsets and made durable before the
//! answer (one fsync per partition for the whole request). acks=0 gets no answer at all. Batches of
//! idempotent producers are checked against their sequence numbers first: a retry is answered with
//! the original offset, a gap with OUT_OF_ORDER_SEQUENCE_NUMBER.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{text, topic_name};
use crate::error::LogError;
use crate::kafka::dispatch::{Context, error_code};
use crate::producers::AppendError;

pub(crate) async fn handle(
    ctx: &Context,
    request: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    let acks = request.acks;
    let transactional = request.transactional_id.is_some();
    let mut responses = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let partitions: Vec<(i32, Option<Vec<u8>>)> = topic
            .partition_data
            .into_iter()
            .map(|p| (p.index, p.records.map(|r| r.to_vec())))
            .collect();
        let results = if transactional {
            let refused = (
                ResponseError::InvalidRequest.code(),
                "transactions are not supported by this broker".to_string(),
            );
            partitions
                .iter()
                .map(|(p, _)| (*p, Err(refused.clone())))
                .collect()
        } else {
            append(ctx, name.clone(), partitions).await
        };
        let log_start = |p| ctx.log.log_start_offset(&name, p).unwrap_or(-1);
        let partition_responses = results
            .into_iter()
            .map(|(p, result)| {
                let response = PartitionProduceResponse::default()
                    .with_index(p)
                    .with_log_append_time_ms(-1);
                match result {
                    Ok(base_offset) => response
                        .with_base_offset(base_offset)
                        .with_log_start_offset(log_start(p)),
                    Err((code, message)) => {
                        tracing::debug!(
                            topic = name,
                            partition = p,
                            code,
                            message,
                            "produce refused"
                        );
                        let response = response
                            .with_error_code(code)
                            .with_base_offset(-1)
                            .with_log_start_offset(-1);
                        if version >= 8 {
                            response.with_error_message(text(message))
                        } else {
                            response
                        }
                    }
                }
            })
            .collect();
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_name(&name))
                .with_partition_responses(partition_responses),
        );
    }
    (acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}

/// A partition's base offset, or why its batch was refused: error code and message.
type Outcome = Result<i64, (i16, String)>;

/// Appends every partition's batch, deduplicating idempotent producers' retries; per partition
/// the base offset or an error code and message.
async fn append(
    ctx: &Context,
    topic: String,
    partitions: Vec<(i32, Option<Vec<u8>>)>,
) -> Vec<(i32, Outcome)> {
    let producers = ctx.producers.clone();
    ctx.blocking(move |log| {
        let (with_records, missing): (Vec<_>, Vec<_>) =
            partitions.into_iter().partition(|(_, r)| r.is_some());
        let batches: Vec<(i32, Vec<u8>)> = with_records
            .into_iter()
            .map(|(p, r)| (p, r.expect("partitioned on is_some")))
            .collect();
        let indexes: Vec<i32> = batches.iter().map(|(p, _)| *p).collect();
        let mut results: Vec<(i32, Outcome)> = match producers.append(log, &topic, batches) {
            Ok(results) => indexes
                .into_iter()
                .zip(results)
                .map(|(p, r)| (p, r.map_err(|e| (append_error_code(&e), e.to_string()))))
                .collect(),
            Err(e) => indexes
                .into_iter()
                .map(|p| (p, Err((error_code(&e), e.to_string()))))
                .collect(),
        };
        let no_records = LogError::CorruptBatch("the partition's records are null".into());
        results.extend(
            missing
                .into_iter()
                .map(|(p, _)| (p, Err((error_code(&no_records), no_records.to_string())))),
        );
        results
    })
    .await
}

fn append_error_code(e: &AppendError) -> i16 {
    match e {
        AppendError::OutOfOrder { .. } => ResponseError::OutOfOrderSequenceNumber.code(),
        AppendError::StaleEpoch { .. } => ResponseError::InvalidProducerEpoch.code(),
        AppendError::Log(e) => error_code(e),
    }
}
