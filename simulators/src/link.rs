//! One device's MQTT connection: connect, publish a reading every interval, reconnect with
//! backoff when the connection fails, and disconnect cleanly on shutdown.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::time::{self, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::config::SimulatorConfig;
use crate::fleet::Device;
use crate::stats::Counters;

/// Requests a device may queue for its connection; a reading that finds the queue full is dropped
/// and counted as an error.
const REQUEST_CAPACITY: usize = 10;
/// QoS 1 publishes a device may have awaiting acknowledgement.
const MAX_INFLIGHT: u16 = 10;
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// How long a device may take to send its DISCONNECT at shutdown.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

/// The connection options of one device: its id is the client id, and credentials are sent when
/// configured (the device id stands in for a missing user name).
pub(crate) fn mqtt_options(config: &SimulatorConfig, device_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(device_id, config.mqtt_host.clone(), config.mqtt_port);
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_inflight(MAX_INFLIGHT);
    if config.username.is_some() || config.password.is_some() {
        let username = config.username.as_deref().unwrap_or(device_id);
        options.set_credentials(username, config.password.clone().unwrap_or_default());
    }
    options
}

/// A device and everything its connection needs.
pub(crate) struct Link {
    pub(crate) device: Device,
    pub(crate) options: MqttOptions,
    pub(crate) qos: QoS,
    /// When the first reading is due; later ones follow every `interval`.
    pub(crate) first_reading: Instant,
    pub(crate) interval: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) counters: Arc<Counters>,
    /// The next reading's sequence number (`seq`): 0 at start, one more per reading, also for a
    /// reading dropped because the connection was not keeping up (the gateway counts it as a gap).
    pub(crate) seq: u64,
}

/// What ended a wait on the connection.
enum Step {
    Polled(Result<Event, ConnectionError>),
    Shutdown,
}

impl Link {
    /// Runs the device until `shutdown` is cancelled. Never fails: errors are logged, counted and
    /// retried.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let (client, mut eventloop) = AsyncClient::new(self.options.clone(), REQUEST_CAPACITY);
        let mut readings = time::interval_at(self.first_reading, self.interval);
        readings.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut connected = false;
        let mut failures = 0u32;
        loop {
            // The poll is only ever abandoned for shutdown, never to publish, so no packet is
            // lost half-read or half-written.
            let step = {
                let poll = eventloop.poll();
                tokio::pin!(poll);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break Step::Shutdown,
                        _ = readings.tick(), if connected => self.publish(&client),
                        polled = &mut poll => break Step::Polled(polled),
                    }
                }
            };
            match step {
                Step::Shutdown => break,
                Step::Polled(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    connected = true;
                    failures = 0;
                    self.counters.connected();
                    self.backoff.reset();
                    debug!(device = self.device.id(), "connected");
                }
                Step::Polled(Ok(event)) => self.count(&event),
                Step::Polled(Err(error)) => {
                    self.counters.error();
                    failures += 1;
                    if connected {
                        connected = false;
                        self.counters.disconnected();
                    }
                    let wait = self.backoff.next_wait();
                    if failures == 1 {
                        warn!(device = self.device.id(), %error, retry_in = ?wait, "MQTT connection failed");
                    } else {
                        debug!(device = self.device.id(), %error, failures, retry_in = ?wait, "MQTT connection failed again");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = time::sleep(wait) => {}
                    }
                }
            }
        }
        if connected {
            self.disconnect(&client, &mut eventloop).await;
        }
    }

    fn publish(&mut self, client: &AsyncClient) {
        let (topic, payload) = self.device.next(Utc::now());
        let payload = with_seq(payload, self.seq);
        self.seq += 1;
        if let Err(error) = client.try_publish(topic.mqtt_topic(), self.qos, false, payload) {
            self.counters.error();
            debug!(device = self.device.id(), %error, "reading dropped: the connection is not keeping up");
        }
    }

    /// Counts a reading as published once the broker has it: acknowledged at QoS 1, written at
    /// QoS 0.
    fn count(&self, event: &Event) {
        match (event, self.qos) {
            (Event::Incoming(Packet::PubAck(_)), QoS::AtLeastOnce)
            | (Event::Outgoing(Outgoing::Publish(_)), QoS::AtMostOnce) => self.counters.published(),
            _ => {}
        }
    }

    /// Sends DISCONNECT after whatever is queued, then keeps reading until every QoS 1 publish
    /// sent before it is acknowledged (or the broker closes), so each acknowledged reading is
    /// counted.
    async fn disconnect(&self, client: &AsyncClient, eventloop: &mut EventLoop) {
        if client.try_disconnect().is_err() {
            return;
        }
        let drained = time::timeout(DISCONNECT_GRACE, async {
            let mut disconnect_sent = false;
            while !disconnect_sent || eventloop.state.inflight() > 0 {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => disconnect_sent = true,
                    Ok(event) => self.count(&event),
                    Err(_) => return,
                }
            }
        })
        .await;
        if drained.is_err() {
            debug!(
                device = self.device.id(),
                "DISCONNECT not sent or acknowledgements not received within {DISCONNECT_GRACE:?}; closing the socket"
            );
        }
    }
}

/// A reading's JSON object with `"seq": n` added as its last attribute.
fn with_seq(mut payload: Vec<u8>, seq: u64) -> Vec<u8> {
    if payload.last() == Some(&b'}') {
        payload.pop();
        let separator = if payload.len() > 1 { "," } else { "" };
        payload.extend_from_slice(format!("{separator}\"seq\":{seq}}}").as_bytes());
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_number_is_added_to_the_reading() {
        let reading = br#"{"dateObserved":"2026-11-25T16:00:00Z","intensity":3}"#.to_vec();
        let numbered: serde_json::Value = serde_json::from_slice(&with_seq(reading, 41)).unwrap();
        assert_eq!(numbered["seq"], 41);
        assert_eq!(numbered["intensity"], 3);
        assert_eq!(with_seq(b"{}".to_vec(), 0), br#"{"seq":0}"#);
    }

    #[test]
    fn the_device_id_is_the_client_id_and_stands_in_for_a_missing_user_name() {
        let config = SimulatorConfig {
            password: Some("secret".into()),
            ..SimulatorConfig::default()
        };
        let options = mqtt_options(&config, "tc-harbour-1");
        assert_eq!(options.client_id(), "tc-harbour-1");
        assert_eq!(options.keep_alive(), KEEP_ALIVE);
        let login = options.credentials().unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("tc-harbour-1", "secret")
        );

        let config = SimulatorConfig {
            username: Some("sim".into()),
            ..config
        };
        assert_eq!(
            mqtt_options(&config, "tc-harbour-1")
                .credentials()
                .unwrap()
                .username,
            "sim"
        );
        assert!(
            mqtt_options(&SimulatorConfig::default(), "x")
                .credentials()
                .is_none()
        );
    }
}
