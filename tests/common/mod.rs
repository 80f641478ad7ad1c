//! Helpers shared by the end-to-end tests: free ports, a test configuration, publishing over
//! MQTT, SQL over HTTP, and waiting for a condition with a deadline. Each test binary uses only
//! some of them.
#![allow(dead_code)]

pub mod cdp;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use polis::{Platform, PolisConfig};
use polis_gateway::DeviceRegistry;
use polis_simulators::{SimulationStats, SimulatorConfig};
use polis_telemetry::DeviceTopic;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

/// How long any one wait for the platform may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(60);

/// A port that was free a moment ago (rumqttd cannot report a port the OS picked).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The default configuration on a temporary data dir, every listener on a port the OS picks.
pub fn test_config(data_dir: &Path) -> PolisConfig {
    let mut config = PolisConfig {
        data_dir: data_dir.to_path_buf(),
        ..PolisConfig::default()
    };
    config.gateway.mqtt_listen = "127.0.0.1:0".parse().unwrap();
    config.dashboard.listen = "127.0.0.1:0".parse().unwrap();
    config.broker.kafka_listen = "127.0.0.1:0".parse().unwrap();
    config.analytics.pg_listen = "127.0.0.1:0".parse().unwrap();
    // Tests publish in bursts: a quiet partition stops holding windows back after a second.
    config.analytics.idle_partition_timeout = Duration::from_secs(1);
    config.broker.telemetry_partitions = 4;
    config
}

/// Publishes every message at QoS 1 over one real MQTT connection and waits for every PUBACK.
pub async fn publish(mqtt: std::net::SocketAddr, client_id: &str, messages: &[(String, Vec<u8>)]) {
    let mut options = MqttOptions::new(client_id, mqtt.ip().to_string(), mqtt.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let expected = messages.len();
    let acks = tokio::spawn(async move {
        let mut acks = 0;
        while acks < expected {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acks += 1,
                Ok(_) => {}
                Err(e) => panic!("MQTT connection failed: {e}"),
            }
        }
    });
    for (topic, payload) in messages {
        client
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
    }
    tokio::time::timeout(LIMIT, acks)
        .await
        .expect("every publish is acknowledged")
        .unwrap();
    client.disconnect().await.ok();
}

/// A simulated fleet publishing to a platform until `stop` is cancelled.
pub struct Fleet {
    pub stop: tokio_util::sync::CancellationToken,
    pub running: tokio::task::JoinHandle<Result<SimulationStats, polis_simulators::SimulatorError>>,
}

impl Fleet {
    /// Registers `traffic` counters, `energy` meters and `vehicles` with `platform` (whose data
    /// lives in `data_dir`) and starts them publishing four readings a second each.
    pub fn start(
        platform: &Platform,
        data_dir: &Path,
        (traffic, energy, vehicles): (usize, usize, usize),
    ) -> Fleet {
        let mqtt = platform.mqtt_addr().expect("a plain MQTT listener");
        let simulators = SimulatorConfig {
            mqtt_host: mqtt.ip().to_string(),
            mqtt_port: mqtt.port(),
            traffic_counters: traffic,
            energy_meters: energy,
            vehicles,
            interval: Duration::from_millis(250),
            connect_per_second: 1_000,
            password: Some("the-test-fleet-secret".into()),
            ..SimulatorConfig::default()
        };
        let fleet: Vec<DeviceTopic> = polis_simulators::fleet(&simulators)
            .into_iter()
            .map(|mut device| device.next(Utc::now()).0)
            .collect();
        DeviceRegistry::in_data_dir(data_dir)
            .provision(&fleet, simulators.password.as_deref().unwrap())
            .unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let running = tokio::spawn(polis_simulators::run(simulators, stop.clone()));
        Fleet { stop, running }
    }

    /// Stops every simulator and checks they ran without failing.
    pub async fn stop(self) {
        self.stop.cancel();
        self.running.await.unwrap().unwrap();
    }
}

/// Runs `query` through `POST /api/sql`; panics with the server's message on an error status.
pub async fn sql(http: SocketAddr, query: &str) -> Vec<Value> {
    let response = reqwest::Client::new()
        .post(format!("http://{http}/api/sql"))
        .body(query.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{query}: {status} {body}");
    body.as_array().unwrap().clone()
}

/// A `SELECT key, count(*) AS n … GROUP BY key` as a map from each key to its count.
pub async fn counts_by(
    http: SocketAddr,
    key: &str,
    query: &str,
) -> std::collections::BTreeMap<String, i64> {
    sql(http, query)
        .await
        .iter()
        .map(|r| {
            (
                r[key].as_str().unwrap().to_string(),
                r["n"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// The single number a `SELECT count(*) AS n …` returns.
pub async fn count(http: SocketAddr, query: &str) -> i64 {
    sql(http, query).await[0]["n"].as_i64().unwrap()
}

/// Polls `check` until it returns `Some`, failing the test after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
