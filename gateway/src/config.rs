//! Gateway configuration: the `[gateway]` section of the Polis config file.

use std::net::SocketAddr;
use std::time::Duration;

use bytesize::ByteSize;
use polis_telemetry::Limits;
use serde::{Deserialize, Serialize};

use crate::bridge::BridgeConfig;
use crate::tls::TlsConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address of the embedded MQTT v3.1.1 listener (not used in bridge mode); port 0 lets the
    /// OS pick one, which the startup banner and log report.
    pub mqtt_listen: SocketAddr,
    /// Serve plain MQTT on `mqtt_listen`; `false` leaves only the TLS listener (`tls`).
    pub plain_mqtt: bool,
    /// The embedded mode's MQTT-over-TLS listener, e.g. `[gateway.tls]`
    /// `cert = "/etc/polis/mqtt.crt"` `key = "/etc/polis/mqtt.key"` (on 127.0.0.1:8883 unless
    /// `listen` says otherwise). Unset by default.
    pub tls: Option<TlsConfig>,
    /// Most simultaneous MQTT connections to the embedded listener.
    pub max_connections: usize,
    /// Largest MQTT packet; a larger one closes the connection (MQTT has no way to refuse it).
    /// In bridge mode it is the largest packet the gateway reads from the broker: make the
    /// broker's own limit (Mosquitto's `max_packet_size`) no larger, or a bigger message is
    /// redelivered after every reconnect and stalls the bridge.
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
    /// Embedded mode: how long a QoS 1 publish may wait to be stored before its connection is
    /// closed without a PUBACK (the device then sends it again).
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Memory the embedded MQTT server (rumqttd) may use to buffer messages the gateway has not
    /// taken yet.
    pub mqtt_buffer: ByteSize,
    /// Admit every MQTT CONNECT without checking the device registry (`{data_dir}/devices.json`).
    /// rumqttd refuses a CONNECT without credentials before the gateway is asked, so this
    /// cannot mean "anonymous or registered": `true` turns device authentication off entirely.
    /// Only for tests and closed networks. Bridge mode ignores it: the external broker
    /// authenticates devices.
    pub allow_anonymous: bool,
    /// Most devices whose sequence numbers (`seq`) and last-seen time the gateway remembers; the
    /// least recently seen is forgotten first.
    pub max_tracked_devices: usize,
    /// Bridge mode: take device messages from an external MQTT broker instead of running the
    /// embedded one, e.g. `[gateway.bridge]` `url = "mqtt://127.0.0.1:1883"`. Unset by default.
    pub bridge: Option<BridgeConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        let limits = Limits::default();
        GatewayConfig {
            mqtt_listen: "127.0.0.1:1883".parse().expect("valid address"),
            plain_mqtt: true,
            tls: None,
            max_connections: 10_000,
            max_packet_size: ByteSize::kib(256),
            max_payload_size: ByteSize::b(limits.max_payload_bytes as u64),
            max_clock_skew: limits.max_future_skew,
            max_age: limits.max_age,
            max_batch: 5_000,
            ack_timeout: Duration::from_secs(30),
            mqtt_buffer: ByteSize::mib(256),
            allow_anonymous: false,
            max_tracked_devices: 1_000_000,
            bridge: None,
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
        let mut problems = match &self.bridge {
            Some(bridge) => bridge.problems(),
            None => self.embedded_problems(),
        };
        if self.max_payload_size > self.max_packet_size {
            problems.push(format!(
                "gateway.max_payload_size = {} is larger than gateway.max_packet_size = {}: make the packet limit the larger",
                self.max_payload_size, self.max_packet_size
            ));
        }
        if self.max_tracked_devices == 0 {
            problems.push(
                "gateway.max_tracked_devices = 0: use at least 1 (default 1000000)".to_string(),
            );
        }
        if self.max_batch == 0 {
            problems.push("gateway.max_batch = 0: use at least 1".to_string());
        }
        problems
    }

    /// Problems with the settings only the embedded MQTT server uses (bridge mode ignores them).
    fn embedded_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.ack_timeout.is_zero() {
            problems
                .push("gateway.ack_timeout = 0s: use a positive time, e.g. \"30s\"".to_string());
        }
        match &self.tls {
            None if !self.plain_mqtt => problems.push(
                "gateway.plain_mqtt = false and no [gateway.tls] section leaves devices no MQTT listener: add [gateway.tls] with cert and key, or set plain_mqtt = true".to_string(),
            ),
            Some(tls) if self.plain_mqtt && tls.listen == self.mqtt_listen && tls.listen.port() != 0 => {
                problems.push(format!(
                    "gateway.tls.listen and gateway.mqtt_listen are both {}: give TLS its own port (8883 is usual) or set plain_mqtt = false",
                    tls.listen
                ));
            }
            _ => {}
        }
        if self.max_connections == 0 {
            problems.push(
                "gateway.max_connections = 0 would refuse every device: use at least 1".to_string(),
            );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bridge_section_reads_with_defaults_and_human_durations() {
        let config: GatewayConfig = toml::from_str(
            "[bridge]\nurl = \"mqtt://10.0.0.5\"\nusername = \"polis-gateway\"\npassword = \"pw\"\nkeep_alive = \"45s\"\n",
        )
        .unwrap();
        let bridge = config.bridge.unwrap();
        assert_eq!(bridge.keep_alive, Duration::from_secs(45));
        assert_eq!(bridge.client_id, "polis-gateway");
        assert_eq!(bridge.topic_filter(), "$share/polis/city/#");
        assert_eq!(bridge.max_inflight, 1_000);
        let unknown =
            toml::from_str::<GatewayConfig>("[bridge]\nurl = \"mqtt://h\"\nshare = \"x\"\n")
                .unwrap_err()
                .to_string();
        assert!(unknown.contains("unknown field `share`"), "{unknown}");
        let missing = toml::from_str::<GatewayConfig>("[bridge]\nclient_id = \"gw\"\n")
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing field `url`"), "{missing}");
    }

    #[test]
    fn the_section_prints_and_reads_back_unchanged() {
        let embedded = GatewayConfig::default();
        let text = toml::to_string_pretty(&embedded).unwrap();
        assert!(!text.contains("bridge"), "unset by default:\n{text}");
        assert_eq!(toml::from_str::<GatewayConfig>(&text).unwrap(), embedded);
        let bridged = GatewayConfig {
            bridge: Some(BridgeConfig::new("mqtt://10.0.0.5:1883")),
            ..GatewayConfig::default()
        };
        let text = toml::to_string_pretty(&bridged).unwrap();
        assert!(
            text.contains("[bridge]") && text.contains("keep_alive = \"30s\""),
            "{text}"
        );
        assert_eq!(toml::from_str::<GatewayConfig>(&text).unwrap(), bridged);
    }

    #[test]
    fn bridge_mode_checks_its_section_instead_of_the_embedded_listener() {
        let mut config = GatewayConfig {
            max_connections: 0,
            ..GatewayConfig::default()
        };
        assert_eq!(
            config.problems(),
            ["gateway.max_connections = 0 would refuse every device: use at least 1"]
        );
        config.bridge = Some(BridgeConfig::new("mqtts://broker:8883"));
        assert_eq!(
            config.problems(),
            [
                "gateway.bridge.url = \"mqtts://broker:8883\" uses mqtts://, which bridge mode does not support (plain MQTT only): use mqtt://HOST[:PORT], e.g. \"mqtt://127.0.0.1:1883\""
            ]
        );
        config.bridge = Some(BridgeConfig::new("mqtt://broker"));
        assert_eq!(config.problems(), Vec::<String>::new());
    }

    #[test]
    fn turning_plain_mqtt_off_needs_a_tls_listener_on_its_own_port() {
        let mut config = GatewayConfig {
            plain_mqtt: false,
            ..GatewayConfig::default()
        };
        assert_eq!(
            config.problems(),
            [
                "gateway.plain_mqtt = false and no [gateway.tls] section leaves devices no MQTT listener: add [gateway.tls] with cert and key, or set plain_mqtt = true"
            ]
        );
        config.tls = Some(TlsConfig::new("mqtt.crt", "mqtt.key"));
        assert_eq!(config.problems(), Vec::<String>::new());
        config.plain_mqtt = true;
        assert_eq!(config.problems(), Vec::<String>::new());
        config.mqtt_listen = "127.0.0.1:8883".parse().unwrap();
        assert_eq!(
            config.problems(),
            [
                "gateway.tls.listen and gateway.mqtt_listen are both 127.0.0.1:8883: give TLS its own port (8883 is usual) or set plain_mqtt = false"
            ]
        );
        let text = toml::to_string_pretty(&config).unwrap();
        assert_eq!(toml::from_str::<GatewayConfig>(&text).unwrap(), config);
    }
}
