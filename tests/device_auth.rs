//! Device authentication through real MQTT clients against the whole platform: only a registered
//! device logging in as itself with its secret gets a CONNACK, every other CONNECT is dropped
//! and counted by cause, registry changes made while the platform runs apply at the next
//! CONNECT, and the `polis devices` command manages the registry the platform reads.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use chrono::Utc;
use common::{count, eventually, test_config};
use polis::Platform;
use polis_gateway::devices::NewDevice;
use polis_gateway::{DeviceRegistry, Refusal};
use polis_telemetry::DeviceKind;
use polis_telemetry::fiware::TrafficFlowObserved;
use polis_telemetry::reading::format_time;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

const LIMIT: Duration = Duration::from_secs(30);
const DEVICE: &str = "tc-harbour-1";
const SECRET: &str = "secret-of-tc-harbour-1";

/// Connects and waits for the server's answer: the CONNACK, or the connection closed (rumqttd
/// closes a refused CONNECT without a CONNACK).
async fn connect(
    mqtt: SocketAddr,
    client_id: &str,
    login: Option<(&str, &str)>,
) -> Result<(AsyncClient, EventLoop), String> {
    let mut options = MqttOptions::new(client_id, mqtt.ip().to_string(), mqtt.port());
    options.set_keep_alive(Duration::from_secs(5));
    if let Some((username, password)) = login {
        options.set_credentials(username, password);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    loop {
        let polled = tokio::time::timeout(LIMIT, eventloop.poll())
            .await
            .expect("the server answers a CONNECT within the limit");
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok((client, eventloop)),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Connects expecting the connection to be closed without a CONNACK; returns the client's error.
async fn refused(
    mqtt: SocketAddr,
    client_id: &str,
    login: Option<(&str, &str)>,
    why: &str,
) -> String {
    match connect(mqtt, client_id, login).await {
        Ok(_) => panic!("{why}: the CONNECT was accepted"),
        Err(e) => e,
    }
}

/// Publishes one valid traffic reading at QoS 1 and waits for its PUBACK.
async fn publish_reading(client: &AsyncClient, eventloop: &mut EventLoop, device: &str) {
    let reading = TrafficFlowObserved {
        date_observed: format_time(Utc::now()),
        intensity: 7,
        occupancy: 0.2,
        average_vehicle_speed: 41.0,
        lane_id: None,
        congested: None,
    };
    client
        .publish(
            format!("city/harbour/traffic/{device}"),
            QoS::AtLeastOnce,
            false,
            serde_json::to_vec(&reading).unwrap(),
        )
        .await
        .unwrap();
    loop {
        let polled = tokio::time::timeout(LIMIT, eventloop.poll())
            .await
            .expect("the publish is acknowledged within the limit");
        if let Event::Incoming(Packet::PubAck(_)) = polled.unwrap() {
            return;
        }
    }
}

fn traffic_counter(id: &str, secret: &str) -> NewDevice {
    NewDevice {
        id: id.into(),
        kind: DeviceKind::Traffic,
        district: "harbour".into(),
        secret: secret.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_registered_device_with_its_secret_gets_in() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    DeviceRegistry::in_data_dir(&config.data_dir)
        .add(traffic_counter(DEVICE, SECRET))
        .unwrap();
    let platform = Platform::start(config).await.unwrap();
    let mqtt = platform.mqtt_addr().unwrap();
    let stats = platform.gateway_stats();

    // No credentials at all: rumqttd refuses before the gateway is asked (so it is not counted).
    refused(mqtt, DEVICE, None, "no credentials").await;
    for (client_id, login, cause) in [
        (DEVICE, ("", SECRET), Refusal::Anonymous),
        (
            DEVICE,
            (DEVICE, "not-the-secret-of-it"),
            Refusal::WrongSecret,
        ),
        (
            "tc-harbour-9",
            ("tc-harbour-9", SECRET),
            Refusal::UnknownDevice,
        ),
        ("tc-harbour-9", (DEVICE, SECRET), Refusal::ClientIdMismatch),
    ] {
        refused(mqtt, client_id, Some(login), cause.as_str()).await;
        assert_eq!(stats.refused(cause), 1, "{cause}");
    }
    assert_eq!(stats.authenticated(), 0);
    assert_eq!(stats.received(), 0, "no refused client published anything");

    let (client, mut eventloop) = connect(mqtt, DEVICE, Some((DEVICE, SECRET)))
        .await
        .expect("the registered device gets in");
    assert_eq!(stats.authenticated(), 1);
    publish_reading(&client, &mut eventloop, DEVICE).await;
    let http = platform.http_addr();
    eventually("the device's reading in SQL", LIMIT, || async {
        let query = format!("SELECT count(*) AS n FROM traffic WHERE device_id = '{DEVICE}'");
        (count(http, &query).await == 1).then_some(())
    })
    .await;
    client.disconnect().await.ok();
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_changes_apply_to_a_running_platform_at_the_next_connect() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let registry = DeviceRegistry::in_data_dir(&config.data_dir);
    let platform = Platform::start(config).await.unwrap();
    let mqtt = platform.mqtt_addr().unwrap();
    let stats = platform.gateway_stats();

    refused(mqtt, DEVICE, Some((DEVICE, SECRET)), "not registered yet").await;
    assert_eq!(stats.refused(Refusal::UnknownDevice), 1);

    registry.add(traffic_counter(DEVICE, SECRET)).unwrap();
    let (client, mut eventloop) = connect(mqtt, DEVICE, Some((DEVICE, SECRET)))
        .await
        .expect("a device registered while the platform runs gets in");
    publish_reading(&client, &mut eventloop, DEVICE).await;
    client.disconnect().await.ok();

    registry.remove(DEVICE).unwrap();
    refused(mqtt, DEVICE, Some((DEVICE, SECRET)), "removed").await;
    assert_eq!(stats.refused(Refusal::UnknownDevice), 2);
    assert_eq!(stats.authenticated(), 1);
    platform.shutdown().await;
}

fn polis(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_polis"))
        .arg("devices")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("POLIS_CONFIG")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn the_devices_command_manages_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let added = stdout(&polis(
        data,
        &["add", "em-7", "--kind", "energy", "--district", "harbour"],
    ));
    let secret = added
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .expect("a generated secret is printed");
    let registered = DeviceRegistry::in_data_dir(data).load().unwrap();
    assert!(polis_gateway::devices::secret::verify(
        secret,
        &registered[0].secret_hash
    ));

    let csv = data.join("fleet.csv");
    std::fs::write(
        &csv,
        "id,kind,district,secret\ntc-1,traffic,old-town,secret-of-tc-1-long\nem-7,energy,harbour,secret-of-em-7-again\nbus 3,transport,north,short\n",
    )
    .unwrap();
    let refused = polis(data, &["import", csv.to_str().unwrap()]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("nothing was imported")
            && message.contains("line 3: device `em-7` is already registered")
            && message.contains("line 4: device id `bus 3`"),
        "{message}"
    );
    std::fs::write(
        &csv,
        "id,kind,district,secret\ntc-1,traffic,old-town,secret-of-tc-1-long\n",
    )
    .unwrap();
    assert!(stdout(&polis(data, &["import", csv.to_str().unwrap()])).contains("registered 1"));

    let listed = stdout(&polis(data, &["list"]));
    assert!(listed.contains("em-7") && listed.contains("tc-1") && listed.contains("(2 devices)"));
    assert!(
        !listed.contains(secret) && !listed.contains("argon2"),
        "{listed}"
    );

    let unknown = polis(data, &["remove", "em-8"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no device `em-8` is registered"));
    stdout(&polis(data, &["remove", "em-7"]));
    assert_eq!(DeviceRegistry::in_data_dir(data).load().unwrap().len(), 1);
}
