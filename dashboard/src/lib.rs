//! The Polis dashboard: the operators' live view of the city.
//!
//! It owns the HTTP and WebSocket server, the operator page (`assets/`, embedded in the binary,
//! no build step, no external URLs) and the server-side charts and district map.
//!
//! Data enters from the log through the [`LogClient`] seam, each topic read from its first record
//! by its own task (module `state`): the `metrics` topic into a bounded history of recent windows,
//! the `alerts` topic into the set of active alarms, the `devices` topic into every device's
//! presence. Every batch of new metrics redraws the three charts (module `charts`, plotters SVG)
//! and the district map (module `map`) once; every change is fanned out to the viewers (module
//! `hub`). Data leaves over HTTP and WebSocket:
//!
//! - `GET /` the operator page (with `/assets/style.css` and `/assets/app.js`);
//! - `GET /ws` a snapshot on connect, then one update per batch (shapes in module `messages`);
//!   each viewer has a bounded queue, and one that falls behind is sent a fresh snapshot in place
//!   of its backlog, so it never slows the others; one that accepts nothing for
//!   `viewer_send_timeout` is disconnected; viewers beyond the limit get HTTP 503;
//! - `GET /api/charts/{traffic,energy,transport}.svg` the current charts, and `….png` the same
//!   chart as a PNG download (drawn on the first request for an update, then reused);
//! - `GET /api/health` `{"status":"ok","viewers":N,"metrics_read":N,"viewers_stalled":N,
//!   "refused":N}`;
//! - whatever routes the caller merges in (the SQL service's `POST /api/sql`, the alarm API
//!   `GET /api/alerts`, `POST /api/alerts/ack` and `/api/alerts/clear` that the page calls).
//!
//! Every route but the page, its assets and health is guarded by the access tokens of the
//! configuration (module `access`).

mod access;
mod charts;
mod compact_svg;
mod config;
mod draw;
mod error;
mod http;
mod hub;
mod map;
mod messages;
pub mod report;
mod state;
mod websocket;

use std::sync::{Arc, Mutex};

use polis_broker::{LogClient, LogError, TopicReader};
use polis_telemetry::topics;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::DashboardConfig;
pub use error::DashboardError;
pub use messages::MetricWindows;

use http::AppState;
use hub::Hub;
use state::{City, FollowStats, MetricHistory, follow};

/// Serves the dashboard on `listener` until `shutdown` is cancelled, then closes every viewer and
/// returns once they are gone.
///
/// The caller binds `listener` (so a port in use is its error, and port 0 works) and passes the
/// routes of other tiers in `api`, merged into the dashboard's router; they must not repeat the
/// dashboard's own paths (`/`, `/assets/*`, `/ws`, `/api/charts/*`, `/api/health`), or merging
/// panics. Fails at once on an invalid `config` or when the `metrics` topic does not exist; a
/// missing `alerts` or `devices` topic only leaves the alarm list or device health empty.
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
    let mut readers = vec![TopicReader::from_beginning(
        log.clone(),
        &[topics::METRICS],
    )?];
    for topic in [topics::ALERTS, topics::DEVICES] {
        match TopicReader::from_beginning(log.clone(), &[topic]) {
            Ok(reader) => readers.push(reader),
            Err(LogError::UnknownTopic(_)) => tracing::warn!(
                topic,
                "the dashboard does not follow a topic that does not exist; create it and restart"
            ),
            Err(error) => return Err(error.into()),
        }
    }
    let city = City::new(MetricHistory::new(config.history));
    let snapshot = messages::snapshot(&city).map_err(DashboardError::Encode)?;
    let hub = Arc::new(Hub::new(
        config.viewer_queue,
        config.max_viewers,
        snapshot,
        city.charts.clone(),
    ));
    let city = Arc::new(Mutex::new(city));
    let stats = Arc::new(FollowStats::default());
    let stop = shutdown.child_token();
    let tasks = TaskTracker::new();
    for reader in readers {
        tasks.spawn(follow(
            reader,
            city.clone(),
            hub.clone(),
            stats.clone(),
            stop.clone(),
        ));
    }

    let access = Arc::new(access::Access::new(&config));
    let app = http::router(AppState {
        hub,
        stats,
        access: access.clone(),
        viewers: tasks.clone(),
        send_timeout: config.viewer_send_timeout,
        shutdown: stop.clone(),
    })
    .merge(api)
    .layer(axum::middleware::from_fn_with_state(access, access::check));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .await;
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    served.map_err(DashboardError::Serve)
}
