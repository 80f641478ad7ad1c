//! The Polis gateway: where city devices meet the platform.
//!
//! Devices publish FIWARE JSON over MQTT to `city/{district}/{kind}/{device_id}`. The messages
//! come from one of two [`source`]s: an embedded rumqttd ([`mqtt`]), or, in bridge mode
//! ([`bridge`], `[gateway.bridge]`), an external MQTT broker the gateway subscribes to. A
//! forwarder ([`forward`]) takes every message from the source, validates and normalizes it
//! ([`translate`]), and appends it durably to `telemetry.{kind}` keyed by device id — or, when it
//! cannot be accepted, to `telemetry.deadletter` with the original bytes and the reason.
//! Accepted plus dead-lettered always equals received ([`GatewayStats`]). A device's optional
//! `seq` is checked per device ([`sequence`]): a repeated number is dead-lettered as
//! `duplicate`, skipped numbers are counted as gaps. [`GatewayMonitor::router`] serves the
//! counters as Prometheus `GET /metrics` ([`metrics`]) and the per-device tracking as
//! `GET /api/devices/status`.
//!
//! Presence: in embedded mode the listener is a relay in front of rumqttd ([`front`]) that
//! appends `connected`, `disconnected` and `connection_lost` records to the `devices` topic
//! ([`presence`]). Bridge mode writes none: an MQTT broker does not tell one client about other
//! clients' sessions.
//!
//! Embedded mode: devices authenticate ([`auth`]): every CONNECT must log in with client id =
//! user name = the id of a device in the registry ([`devices`], `{data_dir}/devices.json`,
//! managed with `polis devices`) and that device's secret, unless `gateway.allow_anonymous`
//! turns authentication off. The running gateway sees registry changes at the next CONNECT.
//! What is not enforced there: that a device publishes only under its own id — rumqttd's local
//! link yields topic and payload but not the client that published them, and rumqttd has no
//! per-topic ACL hook. rumqttd acknowledges a device's QoS 1 publish from memory; the relay
//! holds that PUBACK until the message is stored ([`ack`]), so a PUBACK means fsynced in the
//! log, and a message lost before that (a crash, a failed append, an overwrite of rumqttd's
//! buffer) is one the device still holds unacknowledged and sends again.
//!
//! Bridge mode closes the ACL gap too: devices connect to a broker (Mosquitto, EMQX, HiveMQ, …) that
//! authenticates them and confines each to its own topic with ACLs; the gateway takes messages
//! through a QoS 1 persistent (shared) subscription and acknowledges each only after its append
//! is durable, so delivery into the log is at least once, and gateways in one share group
//! split the load.

mod ack;
mod auth;
mod bridge;
mod config;
pub mod devices;
mod error;
mod forward;
mod front;
mod histogram;
pub mod metrics;
mod mqtt;
mod presence;
pub mod sequence;
mod source;
mod stats;
mod tls;
pub mod translate;

use std::net::SocketAddr;
use std::sync::Arc;

use polis_broker::LogClient;
use polis_telemetry::Validator;
use tokio_util::sync::CancellationToken;

pub use auth::Refusal;
pub use bridge::BridgeConfig;
pub use config::GatewayConfig;
pub use devices::DeviceRegistry;
pub use error::GatewayError;
pub use histogram::HistogramSnapshot;
pub use metrics::GatewayMonitor;
pub use stats::GatewayStats;
pub use tls::{TlsConfig, TlsError};

/// A running gateway.
pub struct Gateway {
    monitor: GatewayMonitor,
    forwarder: std::thread::JoinHandle<()>,
    mqtt_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
}

impl Gateway {
    /// Starts the MQTT side and the forwarder. Embedded mode returns once the listener accepts
    /// connections, and CONNECTs are checked against `devices` unless `config.allow_anonymous`
    /// is set. Bridge mode (`config.bridge`) returns at once and connects to the external
    /// broker in the background (`devices` is not used); [`GatewayStats::broker_sessions`]
    /// counts its subscribed connections.
    pub fn start(
        config: GatewayConfig,
        devices: DeviceRegistry,
        log: Arc<dyn LogClient>,
        shutdown: CancellationToken,
    ) -> Result<Gateway, GatewayError> {
        let monitor = GatewayMonitor::new(config.max_tracked_devices);
        Gateway::start_monitored(config, devices, log, shutdown, monitor)
    }

    /// [`Gateway::start`] counting into `monitor`, made beforehand (with
    /// `config.max_tracked_devices`) so its HTTP routes ([`GatewayMonitor::router`]) can be
    /// served before the gateway starts.
    pub fn start_monitored(
        config: GatewayConfig,
        devices: DeviceRegistry,
        log: Arc<dyn LogClient>,
        shutdown: CancellationToken,
        monitor: GatewayMonitor,
    ) -> Result<Gateway, GatewayError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(GatewayError::Config(problems.join("; ")));
        }
        let stats = monitor.stats.clone();
        let forwarder = forward::Forwarder {
            validator: Validator::new(config.limits()),
            max_batch: config.max_batch,
            log: log.clone(),
            stats: stats.clone(),
            sequences: monitor.sequences.clone(),
            shutdown: shutdown.clone(),
        };
        let (mut mqtt_addr, mut tls_addr) = (None, None);
        let forwarder = match &config.bridge {
            Some(bridge) => forwarder.spawn(bridge::BridgeSource::start(
                bridge,
                &config,
                stats.clone(),
                shutdown,
            )?)?,
            None => {
                let listeners = front::listeners(&config)?;
                let authenticator =
                    auth::Authenticator::for_config(&config, devices, stats.clone())?;
                let acks = Arc::new(ack::AckGate::default());
                let (mqtt, backend) =
                    mqtt::EmbeddedMqtt::start(&config, authenticator, acks.clone())?;
                for listener in &listeners {
                    match listener.door {
                        front::Door::Plain => mqtt_addr = Some(listener.addr),
                        front::Door::Tls { .. } => tls_addr = Some(listener.addr),
                    }
                }
                // Presence records name the gateway by its first listener's address.
                let name = mqtt_addr.or(tls_addr).map(|a| a.to_string());
                let presence = presence::start(
                    name.unwrap_or_default(),
                    log.clone(),
                    config.max_batch,
                    shutdown.clone(),
                );
                let front = Arc::new(front::Front {
                    backend,
                    presence,
                    stats: stats.clone(),
                    acks,
                    max_packet: config.max_packet_size.as_u64() as usize,
                    ack_timeout: config.ack_timeout,
                });
                for listener in listeners {
                    let addr = listener.addr;
                    let scheme = match listener.door {
                        front::Door::Plain => "mqtt",
                        front::Door::Tls { .. } => "mqtts",
                    };
                    front.spawn(listener, shutdown.clone());
                    tracing::info!(%addr, scheme, "MQTT listener ready");
                }
                forwarder.spawn(mqtt)?
            }
        };
        Ok(Gateway {
            monitor,
            forwarder,
            mqtt_addr,
            tls_addr,
        })
    }

    /// Where devices connect with plain MQTT, as bound (the OS's port when configured as 0);
    /// `None` in bridge mode or with `plain_mqtt = false`.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt_addr
    }

    /// Where devices connect with MQTT over TLS, as bound; `None` without `[gateway.tls]` or in
    /// bridge mode.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    pub fn stats(&self) -> Arc<GatewayStats> {
        self.monitor.stats()
    }

    pub fn monitor(&self) -> GatewayMonitor {
        self.monitor.clone()
    }

    /// Waits until the forwarder has appended what it had and stopped (after shutdown); in
    /// bridge mode also until those messages are acknowledged to the broker.
    pub fn join(self) {
        if self.forwarder.join().is_err() {
            tracing::error!("the gateway forwarder panicked");
        }
    }
}
