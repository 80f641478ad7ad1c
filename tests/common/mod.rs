//! Helpers shared by the end-to-end tests: free ports, a test configuration, SQL over HTTP, and
//! waiting for a condition with a deadline. Each test binary uses only some of them.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use polis::PolisConfig;
use serde_json::Value;

/// A port that was free a moment ago (rumqttd cannot report a port the OS picked).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The default configuration on a temporary data dir, a free MQTT port and an OS-picked HTTP port.
pub fn test_config(data_dir: &Path) -> PolisConfig {
    let mut config = PolisConfig {
        data_dir: data_dir.to_path_buf(),
        ..PolisConfig::default()
    };
    config.gateway.mqtt_listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    config.dashboard.listen = "127.0.0.1:0".parse().unwrap();
    config.broker.kafka_listen = "127.0.0.1:0".parse().unwrap();
    config.analytics.pg_listen = "127.0.0.1:0".parse().unwrap();
    config.broker.telemetry_partitions = 4;
    config
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
