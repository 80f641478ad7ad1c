//! Devices → gateway → log → analytics → dashboard and SQL, through real protocols: a real MQTT
//! client publishes a known set of readings and malformed messages; the test checks every one is
//! stored exactly once or dead-lettered with its reason, that metrics computed from the input
//! arrive over a real WebSocket with the expected values, and that a restart keeps everything.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use common::{LIMIT, count, counts_by, eventually, publish, sql, test_config};
use futures::StreamExt;
use polis::{Platform, PolisConfig};
use polis_dashboard::MetricWindows;
use polis_telemetry::fiware::{AcMeasurement, GeoPoint, PhaseValues, TrafficFlowObserved, Vehicle};
use polis_telemetry::reading::format_time;
use serde_json::Value;

/// One client publishes for many device ids and to malformed topics (to check dead-lettering),
/// which no device login is for: device authentication is off here, and tests/device_auth.rs
/// tests it.
fn anonymous_config(dir: &std::path::Path) -> PolisConfig {
    let mut config = test_config(dir);
    config.gateway.allow_anonymous = true;
    config
}

/// One message the test publishes, and where it must end up.
struct Message {
    topic: String,
    payload: Vec<u8>,
    expected_reason: Option<&'static str>,
}

impl Message {
    fn valid(topic: String, payload: impl serde::Serialize) -> Message {
        Message {
            topic,
            payload: serde_json::to_vec(&payload).unwrap(),
            expected_reason: None,
        }
    }
}

/// A known city: traffic, energy and transport readings in one window, plus bad messages.
struct Input {
    window_start: DateTime<Utc>,
    messages: Vec<Message>,
    traffic: Vec<(String, i64, f64, f64)>,
    energy: Vec<(String, String, f64, f64)>,
    transport: Vec<(String, String, f64)>,
}

fn known_input() -> Input {
    let now = Utc::now().timestamp_millis();
    let window_start =
        DateTime::from_timestamp_millis((now - 120_000).div_euclid(10_000) * 10_000).unwrap();
    let at = |ms: i64| format_time(window_start + chrono::Duration::milliseconds(ms));
    let mut input = Input {
        window_start,
        messages: Vec::new(),
        traffic: Vec::new(),
        energy: Vec::new(),
        transport: Vec::new(),
    };
    for (d, district) in ["harbour", "old-town", "university"]
        .into_iter()
        .enumerate()
    {
        for device in 0..4 {
            for (reading, offset_ms) in [1_000, 6_500].into_iter().enumerate() {
                let intensity = 3 + d as i64 * 7 + device * 2 + reading as i64;
                let speed = 30.0 + device as f64 * 4.5 + reading as f64;
                let occupancy = 0.1 + 0.05 * device as f64;
                input
                    .traffic
                    .push((district.to_string(), intensity, speed, occupancy));
                input.messages.push(Message::valid(
                    format!("city/{district}/traffic/tc-{district}-{device}"),
                    TrafficFlowObserved {
                        date_observed: at(offset_ms + device * 10),
                        intensity,
                        occupancy,
                        average_vehicle_speed: speed,
                        lane_id: Some(device),
                        congested: Some(false),
                    },
                ));
            }
        }
    }
    for district in ["harbour", "industrial"] {
        for meter in 0..3 {
            for (reading, offset_ms) in [2_000, 7_000].into_iter().enumerate() {
                let power = 10.0 + meter as f64 * 2.5 + reading as f64 * 5.0;
                let voltage = 228.0 + meter as f64 - reading as f64;
                let device = format!("em-{district}-{meter}");
                input
                    .energy
                    .push((district.to_string(), device.clone(), power, voltage));
                input.messages.push(Message::valid(
                    format!("city/{district}/energy/{device}"),
                    AcMeasurement {
                        date_observed: at(offset_ms),
                        total_active_power: power,
                        total_active_energy_import: Some(1_000.0 + reading as f64),
                        phase_voltage: PhaseValues::Single(voltage),
                        current: None,
                        power_factor: Some(0.97),
                    },
                ));
            }
        }
    }
    for route in ["L1", "L2"] {
        for bus in 0..3 {
            let delay = 30.0 * bus as f64 + if route == "L2" { 100.0 } else { 0.0 };
            let device = format!("bus-{route}-{bus}");
            input
                .transport
                .push((route.to_string(), device.clone(), delay));
            input.messages.push(Message::valid(
                format!("city/old-town/transport/{device}"),
                Vehicle {
                    observation_date_time: at(3_000 + bus * 100),
                    location: GeoPoint::new(-3.70 + bus as f64 * 0.01, 40.41),
                    speed: 25.0,
                    bearing: Some(90.0),
                    service_status: Some("onRoute".into()),
                    route_id: route.to_string(),
                    delay,
                    occupancy: Some(0.4),
                },
            ));
        }
    }
    let bad = |topic: &str, payload: &[u8], reason| Message {
        topic: topic.into(),
        payload: payload.to_vec(),
        expected_reason: Some(reason),
    };
    let fresh = at(4_000);
    input.messages.extend([
        bad("city/harbour/traffic/tc-bad-1", b"{\"intensity\": 3,", "malformed_json"),
        bad("city/harbour/traffic/tc-bad-2", format!(r#"{{"dateObserved":"{fresh}","intensity":3,"averageVehicleSpeed":40}}"#).as_bytes(), "missing_field"),
        bad("city/harbour/traffic/tc-bad-3", format!(r#"{{"dateObserved":"{fresh}","intensity":3,"occupancy":1.5,"averageVehicleSpeed":40}}"#).as_bytes(), "out_of_range"),
        bad("city/harbour/energy/em-bad-4", format!(r#"{{"dateObserved":"{fresh}","totalActivePower":"high","phaseVoltage":230}}"#).as_bytes(), "wrong_type"),
        bad("city/harbour/water/w-5", b"{}", "unknown_kind"),
        bad("city/harbour/traffic", b"{}", "bad_topic"),
        bad("city/harbour/traffic/tc-bad-7", r#"{"dateObserved":"next tuesday","intensity":1,"occupancy":0.1,"averageVehicleSpeed":40}"#.as_bytes(), "bad_timestamp"),
    ]);
    input
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A dashboard viewer: every metric value that has arrived over its WebSocket.
struct Viewer {
    ws: WsStream,
    seen: BTreeMap<(String, String, DateTime<Utc>), f64>,
}

impl Viewer {
    /// The value of `metric` for `entity` in the window starting at `window_start`, reading
    /// snapshots and updates until it has arrived.
    async fn metric(&mut self, metric: &str, entity: &str, window_start: DateTime<Utc>) -> f64 {
        let key = (metric.to_string(), entity.to_string(), window_start);
        let wait = async {
            while !self.seen.contains_key(&key) {
                let message = self
                    .ws
                    .next()
                    .await
                    .expect("the WebSocket stays open")
                    .unwrap();
                let tokio_tungstenite::tungstenite::Message::Text(text) = message else {
                    continue;
                };
                let value: Value = serde_json::from_str(&text).unwrap();
                let windows: Vec<MetricWindows> =
                    serde_json::from_value(value["metrics"].clone()).unwrap();
                for m in windows.iter().flat_map(MetricWindows::records) {
                    self.seen
                        .insert((m.metric, m.entity, m.window_start), m.value);
                }
            }
        };
        tokio::time::timeout(LIMIT, wait)
            .await
            .unwrap_or_else(|_| panic!("{metric} for {entity} did not arrive over the WebSocket"));
        self.seen[&key]
    }
}

fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.into_iter().collect();
    v.iter().sum::<f64>() / v.len() as f64
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0),
        "{what}: got {actual}, expected {expected}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devices_reach_the_dashboard_and_sql_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let platform = Platform::start(anonymous_config(dir.path())).await.unwrap();
    let http = platform.http_addr();
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
        .await
        .unwrap();
    let mut viewer = Viewer {
        ws,
        seen: BTreeMap::new(),
    };

    let input = known_input();
    let messages: Vec<(String, Vec<u8>)> = input
        .messages
        .iter()
        .map(|m| (m.topic.clone(), m.payload.clone()))
        .collect();
    publish(platform.mqtt_addr().unwrap(), "e2e-publisher", &messages).await;

    let expected_dead: BTreeMap<String, i64> = input
        .messages
        .iter()
        .filter_map(|m| m.expected_reason)
        .fold(BTreeMap::new(), |mut acc, r| {
            *acc.entry(r.to_string()).or_default() += 1;
            acc
        });
    let expected_counts = [
        ("traffic", input.traffic.len() as i64),
        ("energy", input.energy.len() as i64),
        ("transport", input.transport.len() as i64),
        ("deadletter", expected_dead.values().sum::<i64>()),
    ];
    for (table, expected) in expected_counts {
        eventually(
            &format!("{expected} rows in {table}"),
            LIMIT,
            || async move {
                (count(http, &format!("SELECT count(*) AS n FROM {table}")).await == expected)
                    .then_some(())
            },
        )
        .await;
    }

    // No loss and no duplicates: every accepted reading is stored once, under its own device.
    let stored = sql(http, "SELECT device_id, observed_at FROM traffic UNION ALL SELECT device_id, observed_at FROM energy UNION ALL SELECT device_id, observed_at FROM transport").await;
    let distinct: BTreeSet<(String, String)> = stored
        .iter()
        .map(|r| {
            (
                r["device_id"].as_str().unwrap().to_string(),
                r["observed_at"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(distinct.len(), stored.len(), "a reading is stored twice");
    assert_eq!(
        stored.len(),
        input.traffic.len() + input.energy.len() + input.transport.len()
    );

    // Every malformed message is dead-lettered with its reason and its exact original bytes.
    let reasons = counts_by(
        http,
        "reason",
        "SELECT reason, count(*) AS n FROM deadletter GROUP BY reason",
    )
    .await;
    assert_eq!(reasons, expected_dead);
    for m in input
        .messages
        .iter()
        .filter(|m| m.expected_reason.is_some())
    {
        let rows = sql(
            http,
            &format!(
                "SELECT reason, payload_text FROM deadletter WHERE mqtt_topic = '{}'",
                m.topic
            ),
        )
        .await;
        assert_eq!(rows.len(), 1, "{}", m.topic);
        assert_eq!(rows[0]["reason"], m.expected_reason.unwrap());
        assert_eq!(
            rows[0]["payload_text"].as_str().unwrap().as_bytes(),
            &m.payload[..]
        );
    }
    let stats = platform.gateway_stats();
    assert_eq!(stats.received(), input.messages.len() as u64);
    assert_eq!(stats.accepted() + stats.dead_lettered(), stats.received());

    // One reading far enough ahead moves the watermark past the known window, which then closes.
    let later = TrafficFlowObserved {
        date_observed: format_time(input.window_start + chrono::Duration::seconds(20)),
        intensity: 1,
        occupancy: 0.1,
        average_vehicle_speed: 50.0,
        lane_id: None,
        congested: None,
    };
    publish(
        platform.mqtt_addr().unwrap(),
        "e2e-clock",
        &[(
            "city/harbour/traffic/tc-clock".into(),
            serde_json::to_vec(&later).unwrap(),
        )],
    )
    .await;

    for district in ["harbour", "old-town", "university"] {
        let rows: Vec<_> = input.traffic.iter().filter(|t| t.0 == district).collect();
        let vehicles = viewer
            .metric("traffic.vehicles", district, input.window_start)
            .await;
        assert_eq!(
            vehicles,
            rows.iter().map(|t| t.1).sum::<i64>() as f64,
            "traffic.vehicles for {district}"
        );
        let speed = viewer
            .metric("traffic.average_speed_kmh", district, input.window_start)
            .await;
        assert_close(speed, mean(rows.iter().map(|t| t.2)), "average speed");
    }
    for district in ["harbour", "industrial"] {
        let rows: Vec<_> = input.energy.iter().filter(|e| e.0 == district).collect();
        let meters: BTreeSet<&String> = rows.iter().map(|e| &e.1).collect();
        let load: f64 = meters
            .iter()
            .map(|m| mean(rows.iter().filter(|e| &&e.1 == m).map(|e| e.2)))
            .sum();
        let window = format_time(input.window_start);
        let query = format!(
            "SELECT value FROM metrics WHERE metric = 'energy.load_kw' AND entity = '{district}' AND window_start = '{window}'"
        );
        let sql_load = eventually("energy.load_kw in SQL", LIMIT, || {
            let query = query.clone();
            async move {
                sql(http, &query)
                    .await
                    .first()
                    .map(|r| r["value"].as_f64().unwrap())
            }
        })
        .await;
        assert_close(sql_load, load, "energy.load_kw");
        let min_voltage = rows.iter().map(|e| e.3).fold(f64::MAX, f64::min);
        assert_close(
            viewer
                .metric("energy.min_voltage_v", district, input.window_start)
                .await,
            min_voltage,
            "min voltage",
        );
    }
    for route in ["L1", "L2"] {
        let rows: Vec<_> = input.transport.iter().filter(|t| t.0 == route).collect();
        assert_eq!(
            viewer
                .metric("transport.active_vehicles", route, input.window_start)
                .await,
            rows.len() as f64
        );
        assert_close(
            viewer
                .metric("transport.average_delay_s", route, input.window_start)
                .await,
            mean(rows.iter().map(|t| t.2)),
            "delay",
        );
    }
    let metric_rows = count(http, "SELECT count(*) AS n FROM metrics").await;
    assert_eq!(
        metric_rows,
        4 * 3 + 4 * 2 + 4 * 2 + 5,
        "one row per metric and entity of the closed window: 4 traffic measures of 3 districts, 4 energy of 2, 4 transport of 2 routes, 5 city KPIs"
    );

    // A restart on the same data dir keeps every record and emits no window twice.
    let config = anonymous_config(dir.path());
    drop(viewer);
    platform.shutdown().await;
    let platform = Platform::start(config).await.unwrap();
    let http = platform.http_addr();
    for (table, expected) in [
        ("traffic", input.traffic.len() as i64 + 1),
        ("energy", input.energy.len() as i64),
        ("transport", input.transport.len() as i64),
        ("deadletter", expected_dead.values().sum::<i64>()),
        ("metrics", metric_rows),
    ] {
        eventually(
            &format!("{expected} rows in {table} after the restart"),
            LIMIT,
            || async move {
                (count(http, &format!("SELECT count(*) AS n FROM {table}")).await == expected)
                    .then_some(())
            },
        )
        .await;
    }
    platform.shutdown().await;
}
