//! The dashboard against a real embedded log, with real WebSocket and HTTP clients on
//! `127.0.0.1:0`. Every wait has a deadline; nothing sleeps to synchronize.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use polis_broker::{BrokerConfig, EmbeddedLog, FlushPolicy, Log, LogClient, Record};
use polis_dashboard::{DashboardConfig, DashboardError, MetricWindows, serve};
use polis_telemetry::MetricRecord;
use polis_telemetry::topics::METRICS;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Longest wait for anything the dashboard should do promptly.
const DEADLINE: Duration = Duration::from_secs(20);

type Client = WebSocketStream<TcpStream>;

/// A dashboard serving an embedded log in a temporary directory.
struct Dashboard {
    address: SocketAddr,
    log: Arc<dyn LogClient>,
    shutdown: CancellationToken,
    server: JoinHandle<Result<(), DashboardError>>,
    _data: TempDir,
}

impl Dashboard {
    async fn start(config: DashboardConfig, records: &[MetricRecord]) -> Dashboard {
        let data = tempfile::tempdir().unwrap();
        let log = Log::open(
            data.path(),
            BrokerConfig {
                flush: FlushPolicy::Every(Duration::from_secs(1)),
                ..BrokerConfig::default()
            },
        )
        .unwrap();
        log.create_topic(METRICS, 3).unwrap();
        let log: Arc<dyn LogClient> = Arc::new(EmbeddedLog(log));
        produce(&log, records).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let api = Router::new()
            .route(
                "/api/sql",
                post(|sql: String| async move { axum::Json(json!([{ "sql": sql }])) }),
            )
            .route(
                "/api/alerts/ack",
                post(|| async { axum::Json(json!({ "acknowledged": true })) }),
            );
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, config, log.clone(), api, shutdown.clone()));
        Dashboard {
            address,
            log,
            shutdown,
            server,
            _data: data,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    async fn connect(&self) -> Client {
        connect(self.address, None).await
    }

    async fn produce(&self, records: &[MetricRecord]) {
        produce(&self.log, records).await;
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(DEADLINE, self.server)
            .await
            .expect("the dashboard stops on its token");
        stopped.unwrap().unwrap();
    }
}

async fn produce(log: &Arc<dyn LogClient>, records: &[MetricRecord]) {
    if records.is_empty() {
        return;
    }
    let encoded = records
        .iter()
        .map(|r| {
            Record::new(
                Some(r.key()),
                serde_json::to_vec(r).unwrap(),
                r.emitted_at.timestamp_millis(),
            )
        })
        .collect();
    log.produce(METRICS, encoded).await.unwrap();
}

/// A WebSocket client; `receive_buffer` shrinks its socket's receive buffer (a slow network).
async fn connect(address: SocketAddr, receive_buffer: Option<u32>) -> Client {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let stream = socket.connect(address).await.unwrap();
    let (client, _) = tokio_tungstenite::client_async(format!("ws://{address}/ws"), stream)
        .await
        .unwrap();
    client
}

/// The dashboard's health document.
async fn health(http: &reqwest::Client, dashboard: &Dashboard) -> Value {
    http.get(dashboard.url("/api/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The next JSON message, within the deadline.
async fn next_message(client: &mut Client) -> Value {
    loop {
        let message = tokio::time::timeout(DEADLINE, client.next())
            .await
            .expect("a message before the deadline")
            .expect("the socket stays open")
            .expect("a valid WebSocket message");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected WebSocket message {other:?}"),
        }
    }
}

fn metrics_of(message: &Value) -> Vec<MetricRecord> {
    let windows: Vec<MetricWindows> = serde_json::from_value(message["metrics"].clone()).unwrap();
    windows.iter().flat_map(MetricWindows::records).collect()
}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
}

fn metric(metric: &str, entity: &str, window: i64, value: f64, revision: u32) -> MetricRecord {
    MetricRecord {
        metric: metric.to_string(),
        entity_kind: if metric.starts_with("transport.") {
            "route"
        } else {
            "district"
        }
        .to_string(),
        entity: entity.to_string(),
        window_start: at(window * 10),
        window_end: at(window * 10 + 10),
        value,
        revision,
        emitted_at: at(window * 10 + 11) + TimeDelta::milliseconds(i64::from(revision)),
    }
}

/// What a viewer knows: per (metric, entity, window start), the highest revision it was sent.
#[derive(Default)]
struct ViewerState(BTreeMap<(String, String, DateTime<Utc>), MetricRecord>);

impl ViewerState {
    fn apply(&mut self, message: &Value) {
        if message["type"] == "snapshot" {
            self.0.clear();
        }
        for record in metrics_of(message) {
            let key = (
                record.metric.clone(),
                record.entity.clone(),
                record.window_start,
            );
            if self
                .0
                .get(&key)
                .is_none_or(|known| known.revision < record.revision)
            {
                self.0.insert(key, record);
            }
        }
    }

    fn has(&self, record: &MetricRecord) -> bool {
        self.0.get(&(
            record.metric.clone(),
            record.entity.clone(),
            record.window_start,
        )) == Some(record)
    }
}

/// Reads `client` until it knows every record of `expected`; returns how many messages it took.
async fn read_until_known(client: &mut Client, expected: &[MetricRecord]) -> usize {
    let mut state = ViewerState::default();
    let mut messages = 0;
    while !expected.iter().all(|record| state.has(record)) {
        state.apply(&next_message(client).await);
        messages += 1;
    }
    messages
}

fn sorted(mut records: Vec<MetricRecord>) -> Vec<MetricRecord> {
    records.sort_by(|a, b| {
        (&a.metric, &a.entity, a.window_start).cmp(&(&b.metric, &b.entity, b.window_start))
    });
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_gets_a_snapshot_of_the_log_then_live_updates() {
    let superseded = metric("traffic.vehicles", "north", 0, 10.0, 0);
    let expected = vec![
        metric("traffic.vehicles", "north", 0, 12.0, 1),
        metric("traffic.vehicles", "south", 0, 7.5, 0),
        metric("energy.load_kw", "port", 0, 1234.5, 0),
        metric("transport.average_delay_s", "route-7", 0, 42.25, 0),
    ];
    let mut produced = vec![superseded];
    produced.extend(expected.iter().cloned());
    let dashboard = Dashboard::start(DashboardConfig::default(), &produced).await;

    // A first viewer follows until the dashboard has read the log, so the next one's snapshot
    // must hold all of it.
    let mut probe = dashboard.connect().await;
    read_until_known(&mut probe, &expected).await;

    let mut viewer = dashboard.connect().await;
    let snapshot = next_message(&mut viewer).await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(sorted(metrics_of(&snapshot)), sorted(expected.clone()));
    assert_eq!(snapshot["latest_window_end"], json!("2023-11-14T22:13:30Z"));
    for (domain, entity) in [
        ("traffic", "north"),
        ("energy", "port"),
        ("transport", "route-7"),
    ] {
        let svg = snapshot["charts"][domain].as_str().unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains(entity),
            "{domain} chart lacks {entity}"
        );
    }

    // A record that is not a MetricRecord is skipped; the next valid one arrives as an update.
    dashboard
        .log
        .produce(METRICS, vec![Record::new(Some("junk"), "not json", 0)])
        .await
        .unwrap();
    let fresh = metric("traffic.vehicles", "north", 1, 99.0, 0);
    dashboard.produce(std::slice::from_ref(&fresh)).await;
    let update = next_message(&mut viewer).await;
    assert_eq!(update["type"], "update");
    assert_eq!(metrics_of(&update), vec![fresh]);
    assert_eq!(update["latest_window_end"], json!("2023-11-14T22:13:40Z"));
    assert!(
        update["charts"]["traffic"]
            .as_str()
            .unwrap()
            .starts_with("<svg")
    );

    let health: Value = reqwest::get(dashboard.url("/api/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        health,
        json!({"status": "ok", "viewers": 2, "metrics_read": 6, "viewers_stalled": 0, "refused": 0})
    );

    dashboard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_charts_and_merged_api_are_served_over_http() {
    let dashboard = Dashboard::start(
        DashboardConfig::default(),
        &[metric("energy.load_kw", "port", 0, 800.0, 0)],
    )
    .await;
    let http = reqwest::Client::new();

    let page = http.get(dashboard.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("<title>Polis"), "{page}");
    assert!(
        !page.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    for asset in ["/assets/app.js", "/assets/style.css"] {
        assert_eq!(
            http.get(dashboard.url(asset))
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{asset}"
        );
    }

    let chart = http
        .get(dashboard.url("/api/charts/energy.svg"))
        .send()
        .await
        .unwrap();
    assert_eq!(chart.status(), 200);
    assert_eq!(chart.headers()["content-type"], "image/svg+xml");
    assert!(chart.text().await.unwrap().starts_with("<svg"));
    let unknown = http
        .get(dashboard.url("/api/charts/weather.svg"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(
        unknown
            .text()
            .await
            .unwrap()
            .contains("traffic, energy and transport, as .svg or .png")
    );
    let png = http
        .get(dashboard.url("/api/charts/energy.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(png.status(), 200);
    assert_eq!(png.headers()["content-type"], "image/png");
    assert!(
        png.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"polis-energy-")
    );
    let decoder = png::Decoder::new(std::io::Cursor::new(png.bytes().await.unwrap()));
    let info = decoder.read_info().unwrap();
    assert_eq!((info.info().width, info.info().height), (960, 300));

    let sql = http
        .post(dashboard.url("/api/sql"))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        sql.json::<Value>().await.unwrap(),
        json!([{"sql": "SELECT 1"}])
    );

    dashboard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_viewer_does_not_delay_others_and_catches_up_with_a_snapshot() {
    const UPDATES: i64 = 200;
    let config = DashboardConfig {
        viewer_queue: 2,
        ..DashboardConfig::default()
    };
    let dashboard = Dashboard::start(config, &[]).await;
    let mut normal = dashboard.connect().await;
    let mut slow = connect(dashboard.address, Some(4096)).await;
    assert_eq!(next_message(&mut normal).await["type"], "snapshot");
    assert_eq!(next_message(&mut slow).await["type"], "snapshot");

    // Each update carries a dozen lines in each chart, so the slow viewer's socket fills soon.
    let window = |w: i64| -> Vec<MetricRecord> {
        (0..12)
            .flat_map(|d| {
                let (district, route) = (format!("district-{d:02}"), format!("route-{d:02}"));
                [
                    metric("traffic.vehicles", &district, w, (w * 7 + d) as f64, 0),
                    metric("energy.load_kw", &district, w, 500.0 + (w + d) as f64, 0),
                    metric(
                        "transport.average_delay_s",
                        &route,
                        w,
                        (w % 60 + d) as f64,
                        0,
                    ),
                ]
            })
            .collect()
    };
    // Each window is produced once the normal viewer has it, so every window is its own update
    // and the normal viewer is shown to keep pace while the slow one reads nothing.
    for w in 0..UPDATES {
        let records = window(w);
        dashboard.produce(&records).await;
        read_until_known(&mut normal, &records).await;
    }

    let last = window(UPDATES - 1);
    let mut state = ViewerState::default();
    let mut messages = 0;
    let caught_up_by = loop {
        let message = next_message(&mut slow).await;
        messages += 1;
        state.apply(&message);
        if last.iter().all(|record| state.has(record)) {
            break message;
        }
    };
    assert_eq!(
        caught_up_by["type"], "snapshot",
        "the slow viewer catches up through a fresh snapshot"
    );
    assert!(
        messages < UPDATES as usize,
        "the slow viewer's backlog was dropped, not delivered ({messages} messages)"
    );

    dashboard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_reads_nothing_is_disconnected_after_the_send_timeout() {
    let config = DashboardConfig {
        viewer_queue: 2,
        viewer_send_timeout: Duration::from_millis(300),
        ..DashboardConfig::default()
    };
    let dashboard = Dashboard::start(config, &[]).await;
    let http = reqwest::Client::new();
    let mut normal = dashboard.connect().await;
    let mut stalled = connect(dashboard.address, Some(4096)).await;
    assert_eq!(next_message(&mut normal).await["type"], "snapshot");
    assert_eq!(next_message(&mut stalled).await["type"], "snapshot");

    // Windows of 36 lines each until the stalled viewer's socket is full for longer than the
    // timeout; the normal viewer is shown to get every one meanwhile.
    let window = |w: i64| -> Vec<MetricRecord> {
        (0..36)
            .map(|d| {
                metric(
                    "traffic.vehicles",
                    &format!("district-{d:02}"),
                    w,
                    (w + d) as f64,
                    0,
                )
            })
            .collect()
    };
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut w = 0;
    while health(&http, &dashboard).await["viewers_stalled"] == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled viewer was not disconnected within {DEADLINE:?} ({w} windows)"
        );
        let records = window(w);
        dashboard.produce(&records).await;
        read_until_known(&mut normal, &records).await;
        w += 1;
    }
    assert_eq!(health(&http, &dashboard).await["viewers"], 1);

    // What the stalled viewer's socket still held arrives, then the connection ends.
    let ended = tokio::time::timeout(DEADLINE, async {
        loop {
            match stalled.next().await {
                Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => continue,
                other => break other,
            }
        }
    })
    .await
    .expect("the stalled viewer's connection ends");
    assert!(
        matches!(ended, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
        "{ended:?}"
    );
    let after = window(w);
    dashboard.produce(&after).await;
    read_until_known(&mut normal, &after).await;
    dashboard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_viewing_and_operating() {
    const VIEWER: &str = "viewer-token-0123456789";
    const OPERATOR: &str = "operator-token-0123456789";
    let config = DashboardConfig {
        viewer_token: Some(VIEWER.to_string()),
        operator_token: Some(OPERATOR.to_string()),
        ..DashboardConfig::default()
    };
    let dashboard = Dashboard::start(config, &[]).await;
    let http = reqwest::Client::new();
    let status = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        (status, challenge, response.text().await.unwrap())
    };

    for open in ["/", "/assets/app.js", "/api/health"] {
        assert_eq!(status(http.get(dashboard.url(open))).await.0, 200, "{open}");
    }
    let (code, challenge, body) = status(http.get(dashboard.url("/api/charts/energy.svg"))).await;
    assert_eq!(
        (code, challenge.as_deref()),
        (401, Some("Bearer realm=\"polis\""))
    );
    assert!(
        body.contains("dashboard.viewer_token") && body.contains("no token was given"),
        "{body}"
    );
    let (code, _, body) = status(
        http.get(dashboard.url("/api/charts/energy.svg"))
            .bearer_auth("wrong-token-0123456789"),
    )
    .await;
    assert_eq!(code, 401);
    assert!(body.contains("the token given is not valid"), "{body}");
    for token in [VIEWER, OPERATOR] {
        let chart = status(
            http.get(dashboard.url("/api/charts/energy.svg"))
                .bearer_auth(token),
        )
        .await;
        assert_eq!(chart.0, 200, "{token}");
    }
    let png =
        status(http.get(dashboard.url(&format!("/api/charts/energy.png?token={VIEWER}")))).await;
    assert_eq!(png.0, 200);
    assert_eq!(
        status(
            http.post(dashboard.url("/api/sql"))
                .bearer_auth(VIEWER)
                .body("SELECT 1")
        )
        .await
        .0,
        200
    );

    let (code, _, body) = status(
        http.post(dashboard.url("/api/alerts/ack"))
            .bearer_auth(VIEWER),
    )
    .await;
    assert_eq!(code, 403);
    assert!(body.contains("dashboard.operator_token"), "{body}");
    assert_eq!(
        status(
            http.post(dashboard.url("/api/alerts/ack"))
                .bearer_auth(OPERATOR)
        )
        .await
        .0,
        200
    );

    match tokio_tungstenite::connect_async(format!("ws://{}/ws", dashboard.address)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected HTTP 401, got {other:?}"),
    }
    let stream = TcpStream::connect(dashboard.address).await.unwrap();
    let url = format!("ws://{}/ws?token={VIEWER}", dashboard.address);
    let (mut viewer, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    assert_eq!(next_message(&mut viewer).await["type"], "snapshot");

    assert_eq!(health(&http, &dashboard).await["refused"], 4);
    dashboard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_beyond_the_limit_are_refused_with_503() {
    let dashboard = Dashboard::start(
        DashboardConfig {
            max_viewers: 1,
            ..DashboardConfig::default()
        },
        &[],
    )
    .await;
    let mut first = dashboard.connect().await;
    assert_eq!(next_message(&mut first).await["type"], "snapshot");

    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws", dashboard.address)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
            assert!(body.contains("dashboard.max_viewers"), "{body}");
        }
        other => panic!("expected HTTP 503, got {other:?}"),
    }
    dashboard.stop().await;
}

#[tokio::test]
async fn shutdown_closes_viewers_and_serve_returns() {
    let dashboard = Dashboard::start(DashboardConfig::default(), &[]).await;
    let mut viewer = dashboard.connect().await;
    assert_eq!(next_message(&mut viewer).await["type"], "snapshot");
    dashboard.shutdown.cancel();
    let closed = tokio::time::timeout(DEADLINE, viewer.next())
        .await
        .expect("the viewer is closed promptly");
    assert!(
        matches!(closed, Some(Ok(Message::Close(_))) | None),
        "{closed:?}"
    );
    dashboard.stop().await;
}

#[tokio::test]
async fn serve_refuses_an_invalid_configuration_and_a_missing_topic() {
    let data = tempfile::tempdir().unwrap();
    let log: Arc<dyn LogClient> = Arc::new(EmbeddedLog(
        Log::open(data.path(), BrokerConfig::default()).unwrap(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let invalid = DashboardConfig {
        viewer_queue: 0,
        ..DashboardConfig::default()
    };
    let refused = serve(
        listener,
        invalid,
        log.clone(),
        Router::new(),
        CancellationToken::new(),
    )
    .await;
    match refused {
        Err(DashboardError::Config(problems)) => {
            assert!(
                problems[0].starts_with("dashboard.viewer_queue"),
                "{problems:?}"
            )
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let missing = serve(
        listener,
        DashboardConfig::default(),
        log,
        Router::new(),
        CancellationToken::new(),
    )
    .await;
    assert!(
        matches!(missing, Err(DashboardError::Log(_))),
        "{missing:?}"
    );
}
