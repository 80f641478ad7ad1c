//! Acknowledge-after-append in embedded mode, with real rumqttc devices: every PUBACK a device
//! gets is for a message already in the log, a message the log refuses is not acknowledged and
//! comes again when the device resumes its session, and a publish outside `city/` is
//! dead-lettered rather than acknowledged and dropped.

#[allow(dead_code)]
mod support;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use polis_broker::{EmbeddedLog, LogClient};
use polis_gateway::{DeviceRegistry, Gateway, GatewayConfig};
use polis_telemetry::deadletter::{HEADER_MQTT_TOPIC, HEADER_REASON};
use polis_telemetry::{RejectReason, topics};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use support::{
    FailingUntilCounted, LIMIT, eventually, open_log, records, stored_count, traffic,
    traffic_sequences,
};

const DEVICE: &str = "tc-harbour-1";
const TOPIC: &str = "city/harbour/traffic/tc-harbour-1";

/// An embedded-mode gateway admitting any device, appending through `client`; its port.
fn start(client: Arc<dyn LogClient>) -> (Gateway, u16, CancellationToken, TempDir) {
    let registry_dir = tempfile::tempdir().unwrap();
    let config = GatewayConfig {
        mqtt_listen: "127.0.0.1:0".parse().unwrap(),
        allow_anonymous: true,
        ..GatewayConfig::default()
    };
    let token = CancellationToken::new();
    let gateway = Gateway::start(
        config,
        DeviceRegistry::in_data_dir(registry_dir.path()),
        client,
        token.clone(),
    )
    .unwrap();
    let port = gateway.mqtt_addr().unwrap().port();
    (gateway, port, token, registry_dir)
}

/// A device with a persistent session (clean_session = false), so that what the gateway did
/// not acknowledge is sent again after a reconnect.
fn device(port: u16) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(DEVICE, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(false);
    AsyncClient::new(options, 1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_puback_is_for_a_message_already_in_the_log() {
    const MESSAGES: u64 = 300;
    let (log, _log_dir) = open_log();
    let (gateway, port, _token, _registry) = start(Arc::new(EmbeddedLog(log.clone())));
    let (client, mut events) = device(port);
    for seq in 0..MESSAGES {
        client
            .publish(TOPIC, QoS::AtLeastOnce, false, traffic(seq as i64))
            .await
            .unwrap();
    }
    client
        .publish("weather/harbour", QoS::AtLeastOnce, false, "sunny")
        .await
        .unwrap();
    let mut acked = 0;
    tokio::time::timeout(LIMIT, async {
        while acked < MESSAGES + 1 {
            if let Event::Incoming(Packet::PubAck(ack)) = events.poll().await.unwrap() {
                acked += 1;
                let stored = stored_count(&log) as u64;
                assert!(
                    stored >= acked,
                    "PUBACK #{acked} (packet {}) came with only {stored} messages stored",
                    ack.pkid
                );
            }
        }
    })
    .await
    .expect("every PUBACK within the limit");

    let sequences = traffic_sequences(&log);
    assert_eq!(sequences.len() as u64, MESSAGES);
    assert!(sequences.values().all(|n| *n == 1), "{sequences:?}");
    let letters = records(&log, topics::DEADLETTER);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].value, &b"sunny"[..]);
    assert_eq!(
        letters[0].header(HEADER_REASON).unwrap(),
        RejectReason::BadTopic.as_str().as_bytes()
    );
    assert_eq!(
        letters[0].header(HEADER_MQTT_TOPIC).unwrap(),
        &b"weather/harbour"[..]
    );
    let stats = gateway.stats();
    assert_eq!(stats.durable_ack_latency().count, MESSAGES + 1);
    assert_eq!(stats.received(), MESSAGES + 1);
    assert_eq!(stats.ack_timeouts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_log_refuses_is_not_acknowledged_and_is_sent_again() {
    let (log, _log_dir) = open_log();
    let failing = Arc::new(FailingUntilCounted {
        inner: EmbeddedLog(log.clone()),
        stats: OnceLock::new(),
    });
    let (gateway, port, _token, _registry) = start(failing.clone());
    failing.stats.set(gateway.stats()).ok().unwrap();
    let (client, mut events) = device(port);
    client
        .publish(TOPIC, QoS::AtLeastOnce, false, traffic(41))
        .await
        .unwrap();
    let (mut connacks, mut lost) = (0, 0);
    tokio::time::timeout(LIMIT, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                    connacks += 1;
                    assert_eq!(connack.session_present, connacks > 1);
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => break,
                Ok(_) => {}
                Err(_) => {
                    lost += 1;
                    assert_eq!(
                        records(&log, topics::TRAFFIC).len(),
                        0,
                        "closed although stored"
                    );
                }
            }
        }
    })
    .await
    .expect("a PUBACK after the reconnect, within the limit");

    assert_eq!((connacks, lost), (2, 1));
    assert_eq!(
        traffic_sequences(&log).into_iter().collect::<Vec<_>>(),
        [(41, 1)]
    );
    let stats = gateway.stats();
    assert_eq!(stats.append_failures(), 1);
    assert_eq!(stats.received(), 1);
    assert_eq!(stats.durable_ack_latency().count, 1);
    eventually("the first connection counted closed", || {
        (stats.connections_admitted() == 2 && stats.connections_open() == 1).then_some(())
    })
    .await;
}
