//! The HTTP routes: the operator page, the WebSocket, the chart images and health.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::Access;
use crate::hub::{Hub, ViewerLimit};
use crate::state::FollowStats;
use crate::websocket::{Ended, serve_viewer};

const PAGE: &str = include_str!("../assets/index.html");
const STYLE: &str = include_str!("../assets/style.css");
const SCRIPT: &str = include_str!("../assets/app.js");
/// Largest message accepted from a viewer; viewers have nothing to say beyond Close and Ping.
const MAX_VIEWER_MESSAGE: usize = 4096;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) hub: Arc<Hub>,
    pub(crate) stats: Arc<FollowStats>,
    pub(crate) access: Arc<Access>,
    /// Viewer tasks, so shutdown can wait for their close handshakes.
    pub(crate) viewers: TaskTracker,
    /// `dashboard.viewer_send_timeout`.
    pub(crate) send_timeout: Duration,
    pub(crate) shutdown: CancellationToken,
}

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page))
        .route(
            "/assets/style.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
        .route(
            "/assets/app.js",
            get(|| asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route("/ws", get(websocket))
        .route("/api/charts/:file", get(chart))
        .route("/api/health", get(health))
        .with_state(state)
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn websocket(State(app): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    match app.hub.join() {
        Ok((viewer, snapshot)) => {
            let AppState {
                hub,
                viewers,
                send_timeout,
                shutdown,
                ..
            } = app;
            upgrade
                .max_message_size(MAX_VIEWER_MESSAGE)
                .on_upgrade(move |socket| {
                    viewers.track_future(async move {
                        let ended =
                            serve_viewer(socket, viewer, snapshot, send_timeout, shutdown).await;
                        if ended == Ended::Stalled {
                            hub.count_stalled();
                        }
                    })
                })
        }
        Err(ViewerLimit(max)) => {
            tracing::warn!(
                max_viewers = max,
                "refused a dashboard viewer beyond the limit"
            );
            refuse_viewer(max)
        }
    }
}

fn refuse_viewer(max: usize) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the dashboard already serves {max} viewers, its limit (dashboard.max_viewers); \
             close another dashboard tab or try again later"
        ),
    )
        .into_response()
}

async fn chart(State(app): State<AppState>, Path(file): Path<String>) -> Response {
    let charts = app.hub.charts();
    if let Some(svg) = file
        .strip_suffix(".svg")
        .and_then(|domain| charts.of_domain(domain))
    {
        return (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            svg.to_string(),
        )
            .into_response();
    }
    let Some(domain) = file.strip_suffix(".png").map(str::to_string) else {
        return no_chart(&file);
    };
    // Drawing a bitmap takes milliseconds of CPU: keep it off the async workers.
    let drawn =
        tokio::task::spawn_blocking(move || charts.png(&domain).map(|png| (domain, png))).await;
    match drawn {
        Ok(Some((domain, Ok(png)))) => {
            let name = format!(
                "attachment; filename=\"polis-{domain}-{}.png\"",
                png.drawn_at.format("%Y%m%dT%H%M%SZ")
            );
            (
                [
                    (header::CONTENT_TYPE, "image/png".to_string()),
                    (header::CACHE_CONTROL, "no-cache".to_string()),
                    (header::CONTENT_DISPOSITION, name),
                ],
                axum::body::Bytes::from_owner(png.bytes),
            )
                .into_response()
        }
        Ok(None) => no_chart(&file),
        Ok(Some((_, Err(error)))) => {
            tracing::warn!(%error, "could not serve a PNG chart");
            (StatusCode::INTERNAL_SERVER_ERROR, error).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "the PNG chart task failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the PNG chart could not be drawn".to_string(),
            )
                .into_response()
        }
    }
}

fn no_chart(file: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        format!(
            "no chart `{file}`: the charts are traffic, energy and transport, as .svg or .png \
             (e.g. /api/charts/traffic.svg)"
        ),
    )
        .into_response()
}

async fn health(State(app): State<AppState>) -> Response {
    axum::Json(json!({
        "status": "ok",
        "viewers": app.hub.viewers(),
        "metrics_read": app.stats.metrics_read(),
        "viewers_stalled": app.hub.stalled(),
        "refused": app.access.refused(),
    }))
    .into_response()
}
