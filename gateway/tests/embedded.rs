//! Embedded mode with real rumqttc devices: presence records on `devices` for each session,
//! and `/metrics` plus `/api/devices/status` scraped over HTTP after crafted messages (sequence
//! numbers with a duplicate, a gap and a restart; malformed payloads).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use polis_broker::{BrokerConfig, EmbeddedLog, Log};
use polis_gateway::devices::NewDevice;
use polis_gateway::{DeviceRegistry, Gateway, GatewayConfig, GatewayMonitor};
use polis_telemetry::fiware::{Sequenced, TrafficFlowObserved};
use polis_telemetry::reading::format_time;
use polis_telemetry::{DeviceKind, PresenceEvent, PresenceRecord, topics};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(60);
const DEVICE: &str = "tc-harbour-1";
const SECRET: &str = "secret-of-tc-harbour-1";

struct Running {
    gateway: Gateway,
    log: Arc<Log>,
    token: CancellationToken,
    port: u16,
    _dirs: (TempDir, TempDir),
}

fn start(allow_anonymous: bool) -> Running {
    let log_dir = tempfile::tempdir().unwrap();
    let log = Log::open(log_dir.path(), BrokerConfig::default()).unwrap();
    for topic in topics::TELEMETRY_TOPICS
        .into_iter()
        .chain([topics::DEVICES])
    {
        log.create_topic(topic, 2).unwrap();
    }
    let registry_dir = tempfile::tempdir().unwrap();
    let registry = DeviceRegistry::in_data_dir(registry_dir.path());
    registry
        .add(NewDevice {
            id: DEVICE.into(),
            kind: DeviceKind::Traffic,
            district: "harbour".into(),
            secret: SECRET.into(),
        })
        .unwrap();
    let config = GatewayConfig {
        mqtt_listen: "127.0.0.1:0".parse().unwrap(),
        allow_anonymous,
        ..GatewayConfig::default()
    };
    let token = CancellationToken::new();
    let gateway = Gateway::start(
        config,
        registry,
        Arc::new(EmbeddedLog(log.clone())),
        token.clone(),
    )
    .unwrap();
    Running {
        port: gateway.mqtt_addr().unwrap().port(),
        gateway,
        log,
        token,
        _dirs: (log_dir, registry_dir),
    }
}

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn presence(log: &Log) -> Vec<PresenceRecord> {
    let mut all = Vec::new();
    for partition in 0..log.partition_count(topics::DEVICES).unwrap() {
        let mut offset = 0;
        while offset < log.high_watermark(topics::DEVICES, partition).unwrap() {
            let (read, _) = log
                .read(topics::DEVICES, partition, offset, 1 << 20)
                .unwrap();
            offset = read.last().unwrap().offset + 1;
            all.extend(
                read.into_iter()
                    .map(|s| serde_json::from_slice(&s.record.value).unwrap()),
            );
        }
    }
    all
}

fn presence_events(log: &Log) -> Vec<PresenceEvent> {
    presence(log).into_iter().map(|r| r.event).collect()
}

/// A device connected and acknowledged (CONNACK accepted).
async fn connect(port: u16, id: &str, secret: &str) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_credentials(id, secret);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 100);
    tokio::time::timeout(LIMIT, async {
        loop {
            if let Event::Incoming(Packet::ConnAck(_)) = events.poll().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("CONNACK within the limit");
    (client, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_session_is_reported_connected_then_disconnected_or_lost() {
    let running = start(false);
    let log = running.log.clone();
    let stats = running.gateway.stats();

    let (client, mut events) = connect(running.port, DEVICE, SECRET).await;
    eventually("connected", || (events_of(&log) == 1).then_some(())).await;
    assert_eq!(stats.connections_open(), 1);
    client.disconnect().await.unwrap();
    tokio::time::timeout(LIMIT, async { while events.poll().await.is_ok() {} })
        .await
        .unwrap();
    eventually("disconnected", || (events_of(&log) == 2).then_some(())).await;

    let (_client, events) = connect(running.port, DEVICE, SECRET).await;
    drop(events);
    eventually("connection lost", || (events_of(&log) == 4).then_some(())).await;

    let mut options = MqttOptions::new(DEVICE, "127.0.0.1", running.port);
    options.set_credentials(DEVICE, "a-wrong-secret-guess");
    let (_refused, mut events) = AsyncClient::new(options, 10);
    let outcome = tokio::time::timeout(LIMIT, events.poll()).await.unwrap();
    assert!(outcome.is_err(), "a wrong secret is refused: {outcome:?}");
    eventually("the refusal counted", || {
        (stats.refused(polis_gateway::Refusal::WrongSecret) == 1).then_some(())
    })
    .await;

    assert_eq!(
        presence_events(&log),
        [
            PresenceEvent::Connected,
            PresenceEvent::Disconnected,
            PresenceEvent::Connected,
            PresenceEvent::ConnectionLost,
        ]
    );
    let records = presence(&log);
    assert!(records.iter().all(|r| r.device_id == DEVICE));
    assert_eq!(records[1].detail, None);
    assert_eq!(
        records[3].detail.as_deref(),
        Some("the device closed the connection without DISCONNECT")
    );
    assert_eq!(records[0].gateway, format!("127.0.0.1:{}", running.port));
    assert_eq!(stats.connections_open(), 0);
    assert_eq!(stats.connections_admitted(), 2);
    running.token.cancel();
}

fn events_of(log: &Log) -> usize {
    presence(log).len()
}

fn traffic(seq: u64) -> Vec<u8> {
    serde_json::to_vec(&Sequenced {
        payload: TrafficFlowObserved {
            date_observed: format_time(Utc::now()),
            intensity: 10,
            occupancy: 0.2,
            average_vehicle_speed: 42.0,
            lane_id: None,
            congested: None,
        },
        seq,
    })
    .unwrap()
}

async fn get(port: u16, path: &str) -> (String, String) {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    (content_type, response.text().await.unwrap())
}

async fn serve(monitor: GatewayMonitor) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, monitor.router()).await.unwrap() });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_device_status_count_exactly_what_was_published() {
    let running = start(true);
    let stats = running.gateway.stats();
    let http = serve(running.gateway.monitor()).await;
    let topic = format!("city/harbour/traffic/{DEVICE}");
    let mut messages: Vec<(String, Vec<u8>)> = [1, 2, 2, 5, 4, 0, 1]
        .into_iter()
        .map(|seq| (topic.clone(), traffic(seq)))
        .collect();
    messages.push((topic.clone(), b"not json".to_vec()));
    messages.push((format!("city/harbour/bogus/{DEVICE}"), traffic(9)));
    let bytes: usize = messages.iter().map(|(_, p)| p.len()).sum();

    let (client, mut events) = connect(running.port, DEVICE, SECRET).await;
    for (topic, payload) in &messages {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
    }
    let mut acked = 0;
    tokio::time::timeout(LIMIT, async {
        while acked < messages.len() {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.unwrap() {
                acked += 1;
            }
        }
    })
    .await
    .unwrap();
    eventually("all stored", || (stats.received() == 9).then_some(())).await;

    let (content_type, text) = get(http, "/metrics").await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    for line in [
        "polis_gateway_connections 1".to_string(),
        "polis_gateway_messages_received_total 9".to_string(),
        "polis_gateway_messages_accepted_total 6".to_string(),
        "polis_gateway_messages_rejected_total{reason=\"duplicate\"} 1".to_string(),
        "polis_gateway_messages_rejected_total{reason=\"malformed_json\"} 1".to_string(),
        "polis_gateway_messages_rejected_total{reason=\"unknown_kind\"} 1".to_string(),
        "polis_gateway_messages_rejected_total{reason=\"out_of_range\"} 0".to_string(),
        "polis_gateway_duplicates_total 1".to_string(),
        "polis_gateway_sequence_gaps_total 2".to_string(),
        "polis_gateway_sequence_restarts_total 1".to_string(),
        "polis_gateway_tracked_devices 1".to_string(),
        format!("polis_gateway_bytes_received_total {bytes}"),
        "polis_gateway_append_latency_seconds_bucket{le=\"+Inf\"} 9".to_string(),
        "polis_gateway_append_latency_seconds_count 9".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }

    let (content_type, body) = get(http, "/api/devices/status").await;
    assert_eq!(content_type, "application/json");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let status = status.as_array().unwrap();
    assert_eq!(status.len(), 1, "{body}");
    let device = &status[0];
    assert_eq!(device["device_id"], DEVICE);
    assert_eq!(device["last_sequence"], 1);
    assert_eq!(device["duplicates"], 1);
    assert_eq!(device["gaps"], 2);
    assert_eq!(device["restarts"], 1);
    assert!(device["last_seen"].as_str().unwrap().ends_with('Z'));
    let (_, body) = get(http, &format!("/api/devices/status?after={DEVICE}&limit=5")).await;
    assert_eq!(body, "[]");
    running.token.cancel();
}
