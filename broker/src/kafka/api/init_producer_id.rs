//! InitProducerId: a fresh producer id (epoch 0) for an idempotent producer. Transactional
//! producers are refused: this broker has no transactions.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::kafka::dispatch::{Context, error_code, unblock};

pub(crate) async fn handle(
    ctx: &Context,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let refused = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(transactional_id) = request.transactional_id {
        tracing::debug!(transactional_id = %transactional_id.0, "InitProducerId refused: transactions are not supported");
        return refused.with_error_code(ResponseError::InvalidRequest.code());
    }
    let producers = ctx.producers.clone();
    match unblock(move || producers.allocate_id()).await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e, "cannot allocate a producer id");
            refused.with_error_code(error_code(&e))
        }
    }
}
