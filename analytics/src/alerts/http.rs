//! The alarm API: `GET /api/alerts` lists the active alarms; `POST /api/alerts/ack` and
//! `POST /api/alerts/clear` with `{"alert_id": "…", "by": "…"}` acknowledge or clear one and
//! answer with the new record. Errors are `{"error": "…"}`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use polis_telemetry::AlertState;
use serde::Deserialize;

use super::{ActError, AlertService};

/// Routes of the alarm API, to merge into the HTTP server.
pub fn router(alerts: AlertService) -> Router {
    Router::new()
        .route("/api/alerts", get(list))
        .route("/api/alerts/ack", post(ack))
        .route("/api/alerts/clear", post(clear))
        .with_state(alerts)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Action {
    alert_id: String,
    by: String,
}

async fn list(State(alerts): State<AlertService>) -> Response {
    axum::Json(alerts.active().await).into_response()
}

async fn ack(State(alerts): State<AlertService>, body: Bytes) -> Response {
    act(alerts, AlertState::Acknowledged, &body).await
}

async fn clear(State(alerts): State<AlertService>, body: Bytes) -> Response {
    act(alerts, AlertState::Cleared, &body).await
}

async fn act(alerts: AlertService, state: AlertState, body: &[u8]) -> Response {
    let action = match serde_json::from_slice::<Action>(body) {
        Ok(a) if !a.alert_id.is_empty() && !a.by.trim().is_empty() => a,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                &expected("alert_id or by is empty"),
            );
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, &expected(&e.to_string())),
    };
    match alerts.act(&action.alert_id, state, action.by.trim()).await {
        Ok(record) => axum::Json(record).into_response(),
        Err(e) => {
            let status = match e {
                ActError::NotActive { .. } => StatusCode::NOT_FOUND,
                ActError::AlreadyAcknowledged { .. } => StatusCode::CONFLICT,
                ActError::Log(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            error(status, &e.to_string())
        }
    }
}

fn expected(problem: &str) -> String {
    format!(
        "the body must be JSON {{\"alert_id\": \"congestion/centre\", \"by\": \"your name\"}} with both non-empty: {problem}"
    )
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}
