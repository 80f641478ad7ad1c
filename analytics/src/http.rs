//! The SQL endpoint: `POST /api/sql` with the statement as the body, answered with a JSON array
//! of row objects (every column present, nulls as `null`) or `{"error": "…"}`.

use arrow::array::RecordBatch;
use arrow::json::writer::{JsonArray, WriterBuilder};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::error::SqlError;
use crate::sql::SqlService;

/// Routes of the SQL API, to merge into the HTTP server.
pub fn router(sql: SqlService) -> Router {
    Router::new()
        .route("/api/sql", post(run_sql))
        .with_state(sql)
}

async fn run_sql(State(sql): State<SqlService>, body: String) -> Response {
    if body.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "the request body must be one SQL statement, e.g. SELECT count(*) FROM traffic",
        );
    }
    match sql.query(&body).await {
        Ok(result) => match to_json(&result.batches) {
            Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode the result as JSON: {e}"),
            ),
        },
        Err(e) => {
            let status = match e {
                SqlError::Invalid(_) | SqlError::TooManyRows(_) => StatusCode::BAD_REQUEST,
                SqlError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                SqlError::Memory(..) => StatusCode::INSUFFICIENT_STORAGE,
                SqlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, &e.to_string())
        }
    }
}

fn to_json(batches: &[RecordBatch]) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let batches: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
    if batches.is_empty() {
        return Ok(b"[]".to_vec());
    }
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, JsonArray>(Vec::new());
    writer.write_batches(&batches)?;
    writer.finish()?;
    Ok(writer.into_inner())
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}
