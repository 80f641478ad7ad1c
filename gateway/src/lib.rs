//! The Polis gateway: where city devices meet the platform.
//!
//! Devices publish FIWARE JSON over MQTT to `city/{district}/{kind}/{device_id}`. The messages
//! come from one of two [`source`]s: an embedded rumqttd ([`mqtt`]), or, in bridge mode
//! ([`bridge`], `[gateway.bridge]`), an external MQTT broker the gateway subscribes to. A
//! forwarder ([`forward`]) takes every message from the source, validates and normalizes it
//! ([`translate`]), and appends it durably to `telemetry.{kind}` keyed by device id — or, when it
//! cannot be accepted, to `telemetry.deadletter` with the original bytes and the reason.
//! Accepted plus dead-lettered always equals received ([`GatewayStats`]).
//!
//! Embedded mode: devices authenticate ([`auth`]): every CONNECT must log in with client id =
//! user name = the id of a device in the registry ([`devices`], `{data_dir}/devices.json`,
//! managed with `polis devices`) and that device's secret, unless `gateway.allow_anonymous`
//! turns authentication off. The running gateway sees registry changes at the next CONNECT.
//! What is not enforced there: that a device publishes only under its own id — rumqttd's local
//! link yields topic and payload but not the client that published them, and rumqttd has no
//! per-topic ACL hook. rumqttd acknowledges a device's QoS 1 publish from memory, before the
//! gateway has stored it.
//!
//! Bridge mode closes both gaps: devices connect to a broker (Mosquitto, EMQX, HiveMQ, …) that
//! authenticates them and confines each to its own topic with ACLs; the gateway takes messages
//! through a QoS 1 persistent (shared) subscription and acknowledges each only after its append
//! is durable, so delivery into the log is at least once, and gateways in one share group
//! split the load.

mod auth;
mod bridge;
mod config;
pub mod devices;
mod error;
mod forward;
mod mqtt;
mod source;
mod stats;
pub mod translate;

use std::sync::Arc;

use polis_broker::LogClient;
use polis_telemetry::Validator;
use tokio_util::sync::CancellationToken;

pub use auth::Refusal;
pub use bridge::BridgeConfig;
pub use config::GatewayConfig;
pub use devices::DeviceRegistry;
pub use error::GatewayError;
pub use stats::GatewayStats;

/// A running gateway.
pub struct Gateway {
    stats: Arc<GatewayStats>,
    forwarder: std::thread::JoinHandle<()>,
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
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(GatewayError::Config(problems.join("; ")));
        }
        let stats = Arc::new(GatewayStats::default());
        let forwarder = forward::Forwarder {
            validator: Validator::new(config.limits()),
            max_batch: config.max_batch,
            log,
            stats: stats.clone(),
            shutdown: shutdown.clone(),
        };
        let forwarder = match &config.bridge {
            Some(bridge) => forwarder.spawn(bridge::BridgeSource::start(
                bridge,
                &config,
                stats.clone(),
                shutdown,
            )?)?,
            None => {
                let authenticator =
                    auth::Authenticator::for_config(&config, devices, stats.clone())?;
                forwarder.spawn(mqtt::EmbeddedMqtt::start(&config, authenticator)?)?
            }
        };
        Ok(Gateway { stats, forwarder })
    }

    pub fn stats(&self) -> Arc<GatewayStats> {
        self.stats.clone()
    }

    /// Waits until the forwarder has appended what it had and stopped (after shutdown); in
    /// bridge mode also until those messages are acknowledged to the broker.
    pub fn join(self) {
        if self.forwarder.join().is_err() {
            tracing::error!("the gateway forwarder panicked");
        }
    }
}
