//! Start-up refuses bad settings with one message that names the key, instead of panicking.

mod common;

use std::net::TcpListener;

use common::test_config;
use polis::Platform;

#[tokio::test]
async fn a_busy_mqtt_port_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = test_config(dir.path());
    config.gateway.mqtt_listen = busy.local_addr().unwrap();
    let err = Platform::start(config)
        .await
        .err()
        .expect("the port is taken")
        .to_string();
    assert!(
        err.contains("gateway.mqtt_listen")
            && err.contains(&busy.local_addr().unwrap().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn a_busy_http_port_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = test_config(dir.path());
    config.dashboard.listen = busy.local_addr().unwrap();
    let err = Platform::start(config)
        .await
        .err()
        .expect("the port is taken")
        .to_string();
    assert!(err.contains("dashboard.listen"), "{err}");
}

#[tokio::test]
async fn every_bad_value_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.gateway.max_batch = 0;
    config.broker.derived_partitions = 0;
    config.dashboard.viewer_queue = 0;
    let err = Platform::start(config)
        .await
        .err()
        .expect("the config is invalid")
        .to_string();
    for key in [
        "gateway.max_batch",
        "broker.derived_partitions",
        "dashboard.viewer_queue",
    ] {
        assert!(err.contains(key), "{key} missing from: {err}");
    }
}
