//! The simulators against the whole platform: every reading a simulated device had acknowledged is
//! valid, stored exactly once, and windows of every domain come out as metrics.

mod common;

use std::time::Duration;

use common::{count, eventually, sql, test_config};
use polis::Platform;
use polis_gateway::DeviceRegistry;
use polis_simulators::SimulatorConfig;
use polis_telemetry::DeviceTopic;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_simulated_city_flows_into_metrics_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.analytics.window = Duration::from_secs(2);
    config.analytics.allowed_lateness = Duration::from_secs(1);
    let registry = DeviceRegistry::in_data_dir(&config.data_dir);
    let platform = Platform::start(config).await.unwrap();
    let http = platform.http_addr();
    let mqtt = platform.mqtt_addr().unwrap();

    let simulators = SimulatorConfig {
        mqtt_host: mqtt.ip().to_string(),
        mqtt_port: mqtt.port(),
        traffic_counters: 12,
        energy_meters: 12,
        vehicles: 6,
        interval: Duration::from_millis(200),
        connect_per_second: 1_000,
        password: Some("the-simulated-fleet-secret".into()),
        ..SimulatorConfig::default()
    };
    // Every simulated device logs in as itself with the shared secret.
    let fleet: Vec<DeviceTopic> = polis_simulators::fleet(&simulators)
        .into_iter()
        .map(|mut device| device.next(chrono::Utc::now()).0)
        .collect();
    registry
        .provision(&fleet, simulators.password.as_deref().unwrap())
        .unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(polis_simulators::run(simulators, stop.clone()));

    eventually(
        "metrics of every domain",
        Duration::from_secs(60),
        || async {
            let domains = sql(
                http,
                "SELECT DISTINCT split_part(metric, '.', 1) AS domain FROM metrics ORDER BY domain",
            )
            .await;
            let domains: Vec<&str> = domains
                .iter()
                .map(|r| r["domain"].as_str().unwrap())
                .collect();
            (domains == ["city", "energy", "traffic", "transport"]).then_some(())
        },
    )
    .await;
    stop.cancel();
    let published = running.await.unwrap().unwrap().published;
    assert!(published > 0);

    let stats = platform.gateway_stats();
    eventually(
        "the gateway to take every acknowledged reading",
        Duration::from_secs(30),
        || async { (stats.received() >= published).then_some(()) },
    )
    .await;
    eventually("every received reading accepted and in SQL", Duration::from_secs(30), || async {
        let stored = count(
            http,
            "SELECT (SELECT count(*) FROM traffic) + (SELECT count(*) FROM energy) + (SELECT count(*) FROM transport) AS n",
        )
        .await;
        (stored == stats.accepted() as i64 && stats.accepted() == stats.received()).then_some(())
    })
    .await;
    assert_eq!(stats.dead_lettered(), 0, "every simulated reading is valid");
    assert!(stats.authenticated() >= fleet.len() as u64);
    assert_eq!(count(http, "SELECT count(*) AS n FROM deadletter").await, 0);
    platform.shutdown().await;
}
