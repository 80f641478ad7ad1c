//! The adapter around rumqttd: the only code that knows it exists.
//!
//! rumqttd blocks in `start()` and has no shutdown API, so its threads live as long as the process.
//! The gateway reads every device message through one local link subscribed to `#` before the
//! listener opens (a publish that matches no subscription would be dropped; one outside
//! `city/` is dead-lettered `bad_topic`). rumqttd PUBACKs a device's QoS 1 publish once the
//! message is in its in-memory log; the front relay holds that PUBACK back until the forwarder
//! reports the message stored ([`crate::ack`]), settled here by each batch's fingerprints.
//!
//! Devices do not reach rumqttd directly: it listens on a loopback port picked at start (free
//! when probed, a brief race with other processes), and the front relay on `gateway.mqtt_listen`
//! ([`crate::front`]) forwards every connection to it and reports presence.
//!
//! When authentication is on, rumqttd asks the [`Authenticator`] about every CONNECT; its handler
//! sees the client id, user name and password, never the peer address.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rumqttd::local::{LinkError, LinkRx, LinkTx};
use rumqttd::{Config, ConnectionSettings, Notification, RouterConfig, ServerSettings};

use crate::ack::{AckGate, Outcome, fingerprint};
use crate::auth::Authenticator;
use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::source::{Batch, MqttMessage, Source};

const LINK_ID: &str = "polis-gateway";
/// Every topic but those starting with `$`.
const EVERY_TOPIC: &str = "#";
const SEGMENT_COUNT: usize = 16;
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct EmbeddedMqtt {
    _link_tx: LinkTx,
    link_rx: LinkRx,
    last_cursor: Option<(u64, u64)>,
    acks: Arc<AckGate>,
}

impl EmbeddedMqtt {
    /// Starts rumqttd on a free loopback port (behind the gateway's front relay,
    /// [`crate::front`]) and returns once it accepts connections, with its address. Every
    /// CONNECT is put to `authenticator` when there is one, and admitted when there is not.
    pub fn start(
        config: &GatewayConfig,
        authenticator: Option<Authenticator>,
        acks: Arc<AckGate>,
    ) -> Result<(EmbeddedMqtt, SocketAddr), GatewayError> {
        let probe = SocketAddr::from(([127, 0, 0, 1], 0));
        let addr = TcpListener::bind(probe)
            .and_then(|l| l.local_addr())
            .map_err(|source| GatewayError::Bind {
                key: "the embedded MQTT server's loopback port",
                addr: probe,
                source,
            })?;
        let mut broker = rumqttd::Broker::new(rumqttd_config(config, addr, authenticator));
        let (mut link_tx, mut link_rx) = broker
            .link(LINK_ID)
            .map_err(|e| GatewayError::Link(e.to_string()))?;
        link_tx
            .subscribe(EVERY_TOPIC)
            .map_err(|e| GatewayError::Link(e.to_string()))?;
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        match link_rx.recv_deadline(deadline) {
            Ok(Some(Notification::DeviceAck(_))) => {}
            other => {
                return Err(GatewayError::Link(format!(
                    "expected a subscription acknowledgement, got {other:?}"
                )));
            }
        }
        thread::Builder::new()
            .name("rumqttd".into())
            .spawn(move || {
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "the embedded MQTT server stopped");
                }
            })
            .map_err(GatewayError::Thread)?;
        wait_until_listening(addr, deadline)?;
        tracing::debug!(%addr, "embedded MQTT server ready");
        Ok((
            EmbeddedMqtt {
                _link_tx: link_tx,
                link_rx,
                last_cursor: None,
                acks,
            },
            addr,
        ))
    }
}

/// The local link subscribes at QoS 0; the receipt is the batch's fingerprints, which settle
/// the PUBACKs the front relay holds: released when stored, withheld (the device's connection
/// closes, and it sends again) when not.
impl Source for EmbeddedMqtt {
    type Receipt = Vec<u64>;

    /// Up to `max` messages, waiting until `deadline` for the first one. Gaps in rumqttd's
    /// cursor are counted as overwritten.
    fn next_batch(
        &mut self,
        max: usize,
        deadline: Instant,
    ) -> Result<Batch<Vec<u64>>, GatewayError> {
        let mut batch = Batch {
            messages: Vec::new(),
            overwritten: 0,
            receipt: Vec::new(),
        };
        let mut wait_until = deadline;
        while batch.messages.len() < max {
            let notification = match self.link_rx.recv_deadline(wait_until) {
                Ok(Some(n)) => n,
                Ok(None) | Err(LinkError::RecvTimeout(_)) => break,
                Err(e) => return Err(GatewayError::Link(e.to_string())),
            };
            match notification {
                Notification::Forward(forward) => {
                    if let (Some(cursor), Some(last)) = (forward.cursor, self.last_cursor)
                        && cursor.0 == last.0
                        && cursor.1 > last.1 + 1
                    {
                        batch.overwritten += cursor.1 - last.1 - 1;
                    }
                    self.last_cursor = forward.cursor.or(self.last_cursor);
                    batch.receipt.push(fingerprint(
                        &forward.publish.topic,
                        &forward.publish.payload,
                    ));
                    batch.messages.push(MqttMessage {
                        topic: String::from_utf8_lossy(&forward.publish.topic).into_owned(),
                        payload: forward.publish.payload,
                    });
                    // Once something has arrived, take only what is already waiting.
                    wait_until = Instant::now();
                }
                Notification::Unschedule => {
                    self.link_rx
                        .ready()
                        .map_err(|e| GatewayError::Link(e.to_string()))?;
                }
                _ => {}
            }
        }
        Ok(batch)
    }

    fn stored(&mut self, fingerprints: Vec<u64>) {
        self.acks.settle(&fingerprints, Outcome::Stored);
    }

    fn not_stored(&mut self, fingerprints: Vec<u64>) {
        self.acks.settle(&fingerprints, Outcome::NotStored);
    }

    /// rumqttd cannot be stopped: the forwarder reads until the link has nothing waiting.
    fn stop_intake(&mut self) {}

    fn finish(self) {}
}

fn rumqttd_config(
    config: &GatewayConfig,
    listen: SocketAddr,
    authenticator: Option<Authenticator>,
) -> Config {
    let segment_size = (config.mqtt_buffer.as_u64() as usize / SEGMENT_COUNT).max(1024 * 1024);
    let mut server = ServerSettings {
        name: "polis-mqtt".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: config.max_packet_size.as_u64() as usize,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    if let Some(authenticator) = authenticator {
        let authenticator = Arc::new(authenticator);
        server.set_auth_handler(move |client_id, username, password| {
            authenticator
                .clone()
                .authenticate(client_id, username, password)
        });
    }
    Config {
        id: 0,
        router: RouterConfig {
            // The gateway's own local link counts as a connection too.
            max_connections: config.max_connections + 1,
            // Messages rumqttd hands the gateway's QoS 0 link per round: one forwarder batch
            // (200 queued PUBACKs for half a second at 25,000 msg/s).
            max_outgoing_packet_count: config.max_batch as u64,
            max_segment_size: segment_size,
            max_segment_count: SEGMENT_COUNT,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("polis".to_string(), server)])),
        ..Config::default()
    }
}

fn wait_until_listening(addr: SocketAddr, deadline: Instant) -> Result<(), GatewayError> {
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(GatewayError::NotListening(addr))
}
