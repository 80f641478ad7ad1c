//! Fetch: whole stored batches from each requested offset, waiting (woken by appends, not by
//! polling) until `min_bytes` are available or `max_wait_ms` has passed.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};

use super::topic_name;
use crate::kafka::dispatch::{Context, error_code};
use crate::log::Log;

/// One partition to read: topic, partition, offset, byte budget.
type Wanted = (String, i32, i64, usize);

pub(crate) async fn handle(ctx: &Context, request: FetchRequest) -> FetchResponse {
    let wanted: Vec<Wanted> = request
        .topics
        .iter()
        .flat_map(|t| {
            let name = t.topic.0.to_string();
            t.partitions.iter().map(move |p| {
                (
                    name.clone(),
                    p.partition,
                    p.fetch_offset,
                    p.partition_max_bytes.max(0) as usize,
                )
            })
        })
        .collect();
    let max_bytes = usize::try_from(request.max_bytes).unwrap_or(usize::MAX);
    let min_bytes = request.min_bytes.max(0) as usize;
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let mut appends = ctx.log.subscribe_appends();
    loop {
        appends.borrow_and_update();
        let reading = wanted.clone();
        let (partitions, bytes) = ctx
            .blocking(move |log| read(log, &reading, max_bytes))
            .await;
        if bytes >= min_bytes || tokio::time::Instant::now() >= deadline {
            return response(partitions);
        }
        // Nothing appended before the deadline means the last read is still the answer.
        if !matches!(
            tokio::time::timeout_at(deadline, appends.changed()).await,
            Ok(Ok(()))
        ) {
            return response(partitions);
        }
    }
}

/// Reads every wanted partition within the response budget; returns the partitions by topic and
/// the record bytes found. Once the budget is spent, later partitions are answered empty.
fn read(log: &Log, wanted: &[Wanted], max_bytes: usize) -> (Vec<(String, PartitionData)>, usize) {
    let mut total = 0usize;
    let mut out = Vec::with_capacity(wanted.len());
    for (topic, partition, offset, partition_max) in wanted {
        let data = PartitionData::default().with_partition_index(*partition);
        let budget = (*partition_max).min(max_bytes.saturating_sub(total));
        let data = if total > 0 && budget == 0 {
            data.with_high_watermark(log.high_watermark(topic, *partition).unwrap_or(-1))
        } else {
            match log.read_batches(topic, *partition, *offset, budget) {
                Ok(read) => {
                    let records: Bytes = read
                        .batches
                        .iter()
                        .fold(BytesMut::new(), |mut b, batch| {
                            b.extend_from_slice(batch);
                            b
                        })
                        .freeze();
                    total += records.len();
                    data.with_high_watermark(read.high_watermark)
                        .with_last_stable_offset(read.high_watermark)
                        .with_log_start_offset(read.log_start_offset)
                        .with_records(Some(records))
                }
                Err(e) => data
                    .with_error_code(error_code(&e))
                    .with_high_watermark(log.high_watermark(topic, *partition).unwrap_or(-1))
                    .with_log_start_offset(log.log_start_offset(topic, *partition).unwrap_or(-1)),
            }
        };
        out.push((topic.clone(), data));
    }
    (out, total)
}

fn response(partitions: Vec<(String, PartitionData)>) -> FetchResponse {
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    for (topic, data) in partitions {
        match topics.last_mut() {
            Some(last) if last.topic.0.as_str() == topic => last.partitions.push(data),
            _ => topics.push(
                FetchableTopicResponse::default()
                    .with_topic(topic_name(&topic))
                    .with_partitions(vec![data]),
            ),
        }
    }
    FetchResponse::default().with_responses(topics)
}
