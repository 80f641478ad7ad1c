//! The Polis gateway: where city devices meet the platform.
//!
//! Devices publish FIWARE JSON over MQTT to `city/{district}/{kind}/{device_id}`. An embedded
//! rumqttd ([`mqtt`]) accepts them; a forwarder ([`forward`]) takes every message from rumqttd's
//! local link, validates and normalizes it ([`translate`]), and appends it durably to
//! `telemetry.{kind}` keyed by device id — or, when it cannot be accepted, to
//! `telemetry.deadletter` with the original bytes and the reason. Accepted plus dead-lettered
//! always equals received ([`GatewayStats`]).
//!
//! Devices authenticate ([`auth`]): every CONNECT must log in with client id = user name = the id
//! of a device in the registry ([`devices`], `{data_dir}/devices.json`, managed with
//! `polis devices`) and that device's secret, unless `gateway.allow_anonymous` turns
//! authentication off. The running gateway sees registry changes at the next CONNECT.
//!
//! What is not enforced: that a device publishes only under its own id. rumqttd's local link
//! yields topic and payload but not the client that published them, and rumqttd has no per-topic
//! ACL hook, so an authenticated device can still publish to another device's topic, and
//! dead letters carry no client id. The way to close this is bridge mode: devices connect to an
//! MQTT broker that enforces per-device topic ACLs, and the gateway subscribes to it.

mod auth;
mod config;
pub mod devices;
mod error;
mod forward;
mod mqtt;
mod stats;
pub mod translate;

use std::sync::Arc;

use polis_broker::LogClient;
use tokio_util::sync::CancellationToken;

pub use auth::Refusal;
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
    /// Starts the MQTT listener and the forwarder; returns once the listener accepts connections.
    /// CONNECTs are checked against `devices` unless `config.allow_anonymous` is set.
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
        let authenticator = auth::Authenticator::for_config(&config, devices, stats.clone())?;
        let link = mqtt::EmbeddedMqtt::start(&config, authenticator)?;
        let forwarder = forward::spawn(link, config, log, stats.clone(), shutdown)?;
        Ok(Gateway { stats, forwarder })
    }

    pub fn stats(&self) -> Arc<GatewayStats> {
        self.stats.clone()
    }

    /// Waits until the forwarder has appended what it had and stopped (after shutdown).
    pub fn join(self) {
        if self.forwarder.join().is_err() {
            tracing::error!("the gateway forwarder panicked");
        }
    }
}
