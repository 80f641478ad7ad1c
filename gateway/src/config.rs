//! Gateway configuration: the `[gateway]` section of the Polis config file.

use std::net::SocketAddr;
use std::time::Duration;

use bytesize::ByteSize;
use polis_telemetry::Limits;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address of the MQTT v3.1.1 listener.
    pub mqtt_listen: SocketAddr,
    /// Most simultaneous MQTT connections.
    pub max_connections: usize,
    /// Largest MQTT packet; a larger one closes the connection (MQTT has no way to refuse it).
    pub max_packet_size: ByteSize,
    /// Largest accepted payload; a larger one (up to `max_packet_size`) is dead-lettered as
    /// `payload_too_large`.
    pub max_payload_size: ByteSize,
    /// How far ahead of the gateway clock an observation time may be.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Observations older than this are dead-lettered as `timestamp_too_old`.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Most messages appended to the log in one durable write.
    pub max_batch: usize,
    /// Memory rumqttd may use to buffer messages the gateway has not taken yet.
    pub mqtt_buffer: ByteSize,
    /// Admit every MQTT CONNECT without checking the device registry (`{data_dir}/devices.json`).
    /// rumqttd refuses a CONNECT without credentials before the gateway is asked, so this
    /// cannot mean "anonymous or registered": `true` turns device authentication off entirely.
    /// Only for tests and closed networks.
    pub allow_anonymous: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        let limits = Limits::default();
        GatewayConfig {
            mqtt_listen: "127.0.0.1:1883".parse().expect("valid address"),
            max_connections: 10_000,
            max_packet_size: ByteSize::kib(256),
            max_payload_size: ByteSize::b(limits.max_payload_bytes as u64),
            max_clock_skew: limits.max_future_skew,
            max_age: limits.max_age,
            max_batch: 5_000,
            mqtt_buffer: ByteSize::mib(256),
            allow_anonymous: false,
        }
    }
}

impl GatewayConfig {
    pub fn limits(&self) -> Limits {
        Limits {
            max_payload_bytes: self.max_payload_size.as_u64() as usize,
            max_future_skew: self.max_clock_skew,
            max_age: self.max_age,
        }
    }

    /// Every problem with the configuration, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.mqtt_listen.port() == 0 {
            problems.push("gateway.mqtt_listen needs a fixed port (rumqttd cannot report a port chosen by the OS)".to_string());
        }
        if self.max_connections == 0 {
            problems.push(
                "gateway.max_connections = 0 would refuse every device: use at least 1".to_string(),
            );
        }
        if self.max_payload_size > self.max_packet_size {
            problems.push(format!(
                "gateway.max_payload_size = {} is larger than gateway.max_packet_size = {}: make the packet limit the larger",
                self.max_payload_size, self.max_packet_size
            ));
        }
        if self.max_batch == 0 {
            problems.push("gateway.max_batch = 0: use at least 1".to_string());
        }
        if self.mqtt_buffer < ByteSize::mib(1) {
            problems.push(format!(
                "gateway.mqtt_buffer = {} is too small: use at least 1 MiB",
                self.mqtt_buffer
            ));
        }
        problems
    }
}
