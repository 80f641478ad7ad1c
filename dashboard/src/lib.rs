//! The Polis dashboard: the operators' live view of the city.
//!
//! It owns the HTTP and WebSocket server, the operator page (`assets/`, embedded in the binary,
//! no build step, no external URLs) and the server-side charts.
//!
//! Data enters from one place: the `metrics` topic, read from its first record through the
//! [`LogClient`] seam into a bounded history of recent windows (module `state`). Every batch of
//! new records redraws the three charts once (module `charts`, plotters SVG) and is fanned out to
//! the viewers (module `hub`). Data leaves over HTTP and WebSocket:
//!
//! - `GET /` the operator page (with `/assets/style.css` and `/assets/app.js`);
//! - `GET /ws` a snapshot on connect, then one update per batch (shapes in module `messages`);
//!   each viewer has a bounded queue, and one that falls behind is sent a fresh snapshot in place
//!   of its backlog, so it never slows the others; viewers beyond the limit get HTTP 503;
//! - `GET /api/charts/{traffic,energy,transport}.svg` the current charts;
//! - `GET /api/health` `{"status":"ok","viewers":N,"metrics_read":N}`;
//! - whatever routes the caller merges in (the SQL service's `POST /api/sql`).

mod charts;
mod config;
mod error;
mod http;
mod hub;
mod messages;
mod state;
mod websocket;

use std::sync::Arc;

use polis_broker::{LogClient, TopicReader};
use polis_telemetry::topics;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::DashboardConfig;
pub use error::DashboardError;

use charts::Charts;
use http::AppState;
use hub::Hub;
use state::{FollowStats, MetricHistory, follow_metrics};

/// Serves the dashboard on `listener` until `shutdown` is cancelled, then closes every viewer and
/// returns once they are gone.
///
/// The caller binds `listener` (so a port in use is its error, and port 0 works) and passes the
/// routes of other tiers in `api`, merged into the dashboard's router; they must not repeat the
/// dashboard's own paths (`/`, `/assets/*`, `/ws`, `/api/charts/*`, `/api/health`), or merging
/// panics. Fails at once on an invalid `config` or when the `metrics` topic does not exist.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: DashboardConfig,
    log: Arc<dyn LogClient>,
    api: axum::Router,
    shutdown: CancellationToken,
) -> Result<(), DashboardError> {
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(DashboardError::Config(problems));
    }
    let reader = TopicReader::from_beginning(log, &[topics::METRICS])?;
    let history = MetricHistory::new(config.history);
    let charts = Charts::render(&history);
    let snapshot = messages::snapshot(&history, &charts).map_err(DashboardError::Encode)?;
    let hub = Arc::new(Hub::new(
        config.viewer_queue,
        config.max_viewers,
        snapshot,
        charts,
    ));
    let stats = Arc::new(FollowStats::default());
    let stop = shutdown.child_token();
    let tasks = TaskTracker::new();
    tasks.spawn(follow_metrics(
        reader,
        history,
        hub.clone(),
        stats.clone(),
        stop.clone(),
    ));

    let app = http::router(AppState {
        hub,
        stats,
        viewers: tasks.clone(),
        shutdown: stop.clone(),
    })
    .merge(api);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .await;
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    served.map_err(DashboardError::Serve)
}
