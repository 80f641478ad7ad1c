//! The SQL endpoint: `POST /api/sql` with the statement as the body, answered in the format
//! chosen by `?format=json|csv|ndjson|arrow` or the `Accept` header ([`crate::format`]); JSON by
//! default, an array of row objects with every column present and nulls as `null`. Errors are
//! always `{"error": "…"}`.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;

use crate::error::SqlError;
use crate::format::{Format, FormatError};
use crate::sql::SqlService;

/// Routes of the SQL API, to merge into the HTTP server.
pub fn router(sql: SqlService) -> Router {
    Router::new()
        .route("/api/sql", post(run_sql))
        .with_state(sql)
}

#[derive(Deserialize)]
struct Params {
    format: Option<String>,
}

async fn run_sql(
    State(sql): State<SqlService>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = match Format::choose(params.format.as_deref(), accept) {
        Ok(format) => format,
        Err(e) => {
            let status = match e {
                FormatError::UnknownName(_) => StatusCode::BAD_REQUEST,
                FormatError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            };
            return error(status, &e.to_string());
        }
    };
    if body.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "the request body must be one SQL statement, e.g. SELECT count(*) FROM traffic",
        );
    }
    match sql.query(&body).await {
        Ok(result) => match format.encode(&result) {
            Ok(bytes) => ([(header::CONTENT_TYPE, format.media_type())], bytes).into_response(),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode the result as {}: {e}", format.name()),
            ),
        },
        Err(e) => {
            let status = match e {
                SqlError::Invalid(_) | SqlError::ReadOnly(_) | SqlError::TooManyRows(_) => {
                    StatusCode::BAD_REQUEST
                }
                SqlError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                SqlError::Memory(..) => StatusCode::INSUFFICIENT_STORAGE,
                SqlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, &e.to_string())
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}
