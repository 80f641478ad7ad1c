//! The Polis gateway: where city devices meet the platform.
//!
//! Devices publish FIWARE JSON over MQTT to `city/{district}/{kind}/{device_id}`. An embedded
//! rumqttd ([`mqtt`]) accepts them; a forwarder ([`forward`]) takes every message from rumqttd's
//! local link, validates and normalizes it ([`translate`]), and appends it durably to
//! `telemetry.{kind}` keyed by device id — or, when it cannot be accepted, to
//! `telemetry.deadletter` with the original bytes and the reason. Accepted plus dead-lettered
//! always equals received ([`GatewayStats`]).

mod config;
mod error;
mod forward;
mod mqtt;
mod stats;
pub mod translate;

use std::sync::Arc;

use polis_broker::LogClient;
use tokio_util::sync::CancellationToken;

pub use config::GatewayConfig;
pub use error::GatewayError;
pub use stats::GatewayStats;

/// A running gateway.
pub struct Gateway {
    stats: Arc<GatewayStats>,
    forwarder: std::thread::JoinHandle<()>,
}

impl Gateway {
    /// Starts the MQTT listener and the forwarder; returns once the listener accepts connections.
    pub fn start(
        config: GatewayConfig,
        log: Arc<dyn LogClient>,
        shutdown: CancellationToken,
    ) -> Result<Gateway, GatewayError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(GatewayError::Config(problems.join("; ")));
        }
        let stats = Arc::new(GatewayStats::default());
        let link = mqtt::EmbeddedMqtt::start(&config)?;
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
