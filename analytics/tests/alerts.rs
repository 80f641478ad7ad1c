//! Alarms: the golden run of the engines over fixed input, and analytics on an embedded log
//! raising, listing, acknowledging and clearing an alarm across a restart.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use polis_analytics::alerts::{Engine, Sighting, Silence, rules};
use polis_analytics::{Analytics, AnalyticsConfig};
use polis_broker::{BrokerConfig, EmbeddedLog, Log, LogClient, Record, TopicReader};
use polis_telemetry::{AlertRecord, AlertState, DeviceKind, MetricRecord, schema, topics};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use common::eventually;

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Input {
    Metric(MetricRecord),
    Reading {
        kind: DeviceKind,
        device_id: String,
        observed_at: DateTime<Utc>,
    },
}

/// Runs the shipped rules over `input.ndjson`: consecutive metric rows of one window are one
/// window, consecutive readings one batch of sightings.
fn golden_run(input: &str) -> String {
    let rules = rules::load(None).unwrap();
    let mut engine = Engine::new(rules.threshold);
    let mut silence = Silence::new(rules.silence);
    let mut out = Vec::new();
    let mut window: Vec<MetricRecord> = Vec::new();
    let mut batch: Vec<Sighting> = Vec::new();
    let inputs = input
        .lines()
        .map(|l| serde_json::from_str::<Input>(l).unwrap());
    for item in inputs.map(Some).chain([None]) {
        let same_window = matches!(&item, Some(Input::Metric(m)) if window.first().is_none_or(|w| {
            (w.domain(), w.window_start, w.window_end) == (m.domain(), m.window_start, m.window_end)
        }));
        if !same_window && !window.is_empty() {
            out.extend(engine.window(&std::mem::take(&mut window)));
        }
        if !matches!(item, Some(Input::Reading { .. })) && !batch.is_empty() {
            out.extend(silence.observe(&std::mem::take(&mut batch)));
        }
        match item {
            Some(Input::Metric(m)) => window.push(m),
            Some(Input::Reading {
                kind,
                device_id,
                observed_at,
            }) => batch.push(Sighting {
                kind,
                device_id,
                at: observed_at,
            }),
            None => {}
        }
    }
    out.iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect()
}

#[test]
fn golden_alarms_of_the_shipped_rules() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/alerts");
    let input = std::fs::read_to_string(dir.join("input.ndjson")).unwrap();
    let expected = std::fs::read_to_string(dir.join("expected.ndjson")).unwrap();
    assert_eq!(golden_run(&input), expected);
}

struct Running {
    analytics: Analytics,
    shutdown: CancellationToken,
    http: SocketAddr,
}

async fn start(log: Arc<dyn LogClient>) -> Running {
    let shutdown = CancellationToken::new();
    let analytics = Analytics::start(AnalyticsConfig::default(), log, shutdown.clone())
        .await
        .unwrap();
    let api = polis_analytics::http::router(analytics.sql())
        .merge(polis_analytics::alerts::router(analytics.alerts()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, api)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .unwrap();
    });
    Running {
        analytics,
        shutdown,
        http,
    }
}

impl Running {
    async fn stop(self) {
        common::stop(self.analytics, self.shutdown).await;
    }
}

/// Every record on `alerts`, in offset order per partition.
async fn alert_records(log: &Arc<dyn LogClient>) -> Vec<AlertRecord> {
    let mut reader = TopicReader::from_beginning(log.clone(), &[topics::ALERTS]).unwrap();
    let mut out = Vec::new();
    loop {
        let records = reader.poll(Duration::ZERO).await.unwrap();
        if records.is_empty() {
            return out;
        }
        out.extend(
            records
                .iter()
                .map(|r| serde_json::from_slice::<AlertRecord>(&r.record.value).unwrap()),
        );
    }
}

/// Appends the `traffic.congestion_index` row of `centre` for the window ending
/// `base + 10 s × window`.
async fn congestion(log: &Arc<dyn LogClient>, base: DateTime<Utc>, window: i64, value: f64) {
    let end = base + chrono::Duration::seconds(10 * window);
    let row = MetricRecord {
        metric: "traffic.congestion_index".into(),
        entity_kind: "district".into(),
        entity: "centre".into(),
        window_start: end - chrono::Duration::seconds(10),
        window_end: end,
        value,
        revision: 0,
        emitted_at: end,
    };
    log.produce(
        topics::METRICS,
        vec![Record::new(
            Some(row.key()),
            serde_json::to_vec(&row).unwrap(),
            end.timestamp_millis(),
        )],
    )
    .await
    .unwrap();
}

async fn post(http: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{http}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn active(http: SocketAddr) -> Vec<Value> {
    let body: Value = reqwest::get(format!("http://{http}/api/alerts"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_is_raised_acknowledged_and_cleared_once_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), BrokerConfig::default()).unwrap();
    for (_, topic) in schema::TABLES {
        log.create_topic(topic, 3).unwrap();
    }
    let client: Arc<dyn LogClient> = Arc::new(EmbeddedLog(log));
    let base = DateTime::from_timestamp(Utc::now().timestamp() / 10 * 10 - 600, 0).unwrap();

    let running = start(client.clone()).await;
    for (window, value) in [(1, 0.9), (2, 0.95), (3, 0.9)] {
        congestion(&client, base, window, value).await;
    }
    let raised = eventually("the congestion alarm on `alerts`", || async {
        alert_records(&client).await.into_iter().next()
    })
    .await;
    assert_eq!(raised.alert_id, "congestion/centre");
    assert_eq!(raised.state, AlertState::Raised);
    assert_eq!(raised.raised_at, base + chrono::Duration::seconds(20));
    assert_eq!(raised.value, 0.95);
    assert_eq!(raised.message, "congestion index 0.95 above 0.7 in centre");
    let listed = active(running.http).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["alert_id"], "congestion/centre");
    assert_eq!(listed[0]["state"], "raised");

    let ack = json!({"alert_id": "congestion/centre", "by": "ana"}).to_string();
    let (status, body) = post(running.http, "/api/alerts/ack", &ack).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "acknowledged");
    assert_eq!(body["acknowledged_by"], "ana");
    let (status, body) = post(running.http, "/api/alerts/ack", &ack).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["error"],
        "alarm `congestion/centre` was already acknowledged by ana"
    );
    let unknown = json!({"alert_id": "congestion/harbour", "by": "ana"}).to_string();
    let (status, body) = post(running.http, "/api/alerts/clear", &unknown).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        body["error"],
        "no active alarm `congestion/harbour`; active now: congestion/centre (GET /api/alerts lists them)"
    );
    let (status, body) = post(running.http, "/api/alerts/ack", r#"{"id": "x"}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().starts_with(
            r#"the body must be JSON {"alert_id": "congestion/centre", "by": "your name"}"#
        ),
        "{body}"
    );
    let rows = eventually("both records in the alerts table", || async {
        let (_, rows) = post(
            running.http,
            "/api/sql",
            "SELECT state, acknowledged_by FROM alerts ORDER BY changed_at",
        )
        .await;
        (rows.as_array().unwrap().len() == 2).then_some(rows)
    })
    .await;
    assert_eq!(
        rows,
        json!([
            {"state": "raised", "acknowledged_by": null},
            {"state": "acknowledged", "acknowledged_by": "ana"}
        ])
    );
    running.stop().await;

    let running = start(client.clone()).await;
    assert_eq!(active(running.http).await[0]["state"], "acknowledged");
    for (window, value) in [(4, 0.1), (5, 0.2), (6, 0.1)] {
        congestion(&client, base, window, value).await;
    }
    let records = eventually("the alarm cleared after two calm windows", || async {
        let records = alert_records(&client).await;
        records
            .iter()
            .any(|r| r.state == AlertState::Cleared)
            .then_some(records)
    })
    .await;
    let states: Vec<_> = records
        .iter()
        .map(|r| (r.state, r.acknowledged_by.as_deref(), r.changed_at))
        .collect();
    assert_eq!(
        states,
        [
            (
                AlertState::Raised,
                None,
                base + chrono::Duration::seconds(20)
            ),
            (AlertState::Acknowledged, Some("ana"), records[1].changed_at),
            (
                AlertState::Cleared,
                Some("ana"),
                base + chrono::Duration::seconds(50)
            ),
        ],
        "no record appended twice after the restart, the acknowledgement re-applied"
    );
    assert!(active(running.http).await.is_empty());
    running.stop().await;
}
