//! Simulator configuration: the `[simulate]` section of the Polis config file.

use std::fmt;
use std::time::Duration;

use humantime_serde::re::humantime::format_duration;
use serde::{Deserialize, Serialize};

/// Most devices one simulator runs; each holds one TCP connection to the broker.
pub const MAX_DEVICES: usize = 50_000;
/// Shortest accepted publishing interval (the simulators double as the MQTT load generator).
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);
/// Longest accepted publishing interval.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Fastest accepted connection ramp, connections per second.
pub const MAX_CONNECT_PER_SECOND: u32 = 10_000;
/// Longest user name or password MQTT 3.1.1 can carry.
const MAX_MQTT_STRING: usize = 65_535;

/// How many devices to simulate and where to send their readings.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorConfig {
    /// Host name or IP address of the MQTT broker (the Polis gateway or any MQTT 3.1.1 broker).
    pub mqtt_host: String,
    /// TCP port of the MQTT broker. Connections are plain TCP: the simulators do not speak TLS.
    pub mqtt_port: u16,
    /// Traffic counters, spread round-robin over the districts.
    pub traffic_counters: usize,
    /// Electricity meters, spread round-robin over the districts.
    pub energy_meters: usize,
    /// Buses and trams, spread round-robin over the lines.
    pub vehicles: usize,
    /// Time between two readings of one device, e.g. "5s" or "500ms".
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Seed of every random choice: the same seed and counts give the same devices, and the same
    /// readings for the same observation times.
    pub seed: u64,
    /// MQTT quality of service of every publish: 0 (at most once) or 1 (at least once).
    pub qos: u8,
    /// Connections opened per second while the fleet starts, so the broker is not hit by every
    /// device at once.
    pub connect_per_second: u32,
    /// User name sent on CONNECT. If only `password` is set, each device sends its own id as
    /// the user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password sent on CONNECT, shared by every device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            mqtt_host: "127.0.0.1".to_string(),
            mqtt_port: 1883,
            traffic_counters: 400,
            energy_meters: 400,
            vehicles: 200,
            interval: Duration::from_secs(5),
            seed: 1,
            qos: 1,
            connect_per_second: 500,
            username: None,
            password: None,
        }
    }
}

impl fmt::Debug for SimulatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatorConfig")
            .field("mqtt_host", &self.mqtt_host)
            .field("mqtt_port", &self.mqtt_port)
            .field("traffic_counters", &self.traffic_counters)
            .field("energy_meters", &self.energy_meters)
            .field("vehicles", &self.vehicles)
            .field("interval", &self.interval)
            .field("seed", &self.seed)
            .field("qos", &self.qos)
            .field("connect_per_second", &self.connect_per_second)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl SimulatorConfig {
    /// Every device the configuration asks for.
    pub fn devices(&self) -> usize {
        self.traffic_counters
            .saturating_add(self.energy_meters)
            .saturating_add(self.vehicles)
    }

    /// Every problem with the configuration, each naming its key and what would be right.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.mqtt_host.trim().is_empty() {
            problems.push(
                "simulate.mqtt_host is empty: set the broker's host name or IP address, e.g. 127.0.0.1"
                    .to_string(),
            );
        }
        if self.mqtt_port == 0 {
            problems.push(
                "simulate.mqtt_port = 0 is not a usable port: use 1-65535 (MQTT listens on 1883)"
                    .to_string(),
            );
        }
        let devices = self.devices();
        if devices == 0 {
            problems.push(
                "simulate.traffic_counters, simulate.energy_meters and simulate.vehicles are all 0: \
                 simulate at least one device"
                    .to_string(),
            );
        }
        if devices > MAX_DEVICES {
            problems.push(format!(
                "simulate.traffic_counters + simulate.energy_meters + simulate.vehicles = {devices} is too many: \
                 use at most {MAX_DEVICES} (each device holds its own connection)"
            ));
        }
        if self.interval < MIN_INTERVAL {
            problems.push(format!(
                "simulate.interval = {} is too short: use at least {}",
                format_duration(self.interval),
                format_duration(MIN_INTERVAL)
            ));
        }
        if self.interval > MAX_INTERVAL {
            problems.push(format!(
                "simulate.interval = {} is too long: use at most {}",
                format_duration(self.interval),
                format_duration(MAX_INTERVAL)
            ));
        }
        if self.qos > 1 {
            problems.push(format!(
                "simulate.qos = {} is not supported: use 0 (at most once) or 1 (at least once)",
                self.qos
            ));
        }
        if !(1..=MAX_CONNECT_PER_SECOND).contains(&self.connect_per_second) {
            problems.push(format!(
                "simulate.connect_per_second = {} is out of range: use 1 to {MAX_CONNECT_PER_SECOND}",
                self.connect_per_second
            ));
        }
        for (key, value) in [("username", &self.username), ("password", &self.password)] {
            match value.as_deref().map(str::len) {
                Some(0) => problems.push(format!(
                    "simulate.{key} is empty: remove it or set a non-empty value"
                )),
                Some(len) if len > MAX_MQTT_STRING => problems.push(format!(
                    "simulate.{key} is {len} bytes long: MQTT carries at most {MAX_MQTT_STRING}"
                )),
                _ => {}
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(SimulatorConfig::default().problems(), Vec::<String>::new());
        assert_eq!(SimulatorConfig::default().devices(), 1000);
    }

    #[test]
    fn reports_every_problem_with_its_key() {
        let config = SimulatorConfig {
            mqtt_host: " ".into(),
            mqtt_port: 0,
            traffic_counters: 0,
            energy_meters: 0,
            vehicles: 0,
            interval: Duration::ZERO,
            qos: 2,
            connect_per_second: 0,
            username: Some(String::new()),
            password: Some("x".repeat(70_000)),
            ..SimulatorConfig::default()
        };
        let problems = config.problems();
        assert_eq!(problems.len(), 8, "{problems:#?}");
        assert!(
            problems.contains(&"simulate.interval = 0s is too short: use at least 1ms".to_string())
        );
        for key in [
            "mqtt_host",
            "mqtt_port",
            "vehicles",
            "interval",
            "qos",
            "connect_per_second",
            "username",
            "password",
        ] {
            assert!(
                problems
                    .iter()
                    .any(|p| p.contains(&format!("simulate.{key}"))),
                "{key}"
            );
        }
    }

    #[test]
    fn bounds_the_fleet_the_interval_and_the_ramp() {
        let config = SimulatorConfig {
            traffic_counters: MAX_DEVICES,
            interval: Duration::from_secs(7200),
            connect_per_second: MAX_CONNECT_PER_SECOND + 1,
            ..SimulatorConfig::default()
        };
        let problems = config.problems();
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].contains("= 50600 is too many"));
        assert!(problems[1].contains("2h is too long"));
        assert!(problems[2].contains("= 10001 is out of range"));
    }

    #[test]
    fn reads_human_durations_and_refuses_unknown_keys() {
        let config: SimulatorConfig =
            serde_json::from_str(r#"{"interval": "250ms", "vehicles": 3}"#).unwrap();
        assert_eq!(config.interval, Duration::from_millis(250));
        assert_eq!(config.vehicles, 3);
        assert_eq!(config.traffic_counters, 400);
        let error = serde_json::from_str::<SimulatorConfig>(r#"{"intervall": "1s"}"#).unwrap_err();
        assert!(
            error.to_string().contains("unknown field `intervall`"),
            "{error}"
        );
        let json = serde_json::to_value(SimulatorConfig::default()).unwrap();
        assert_eq!(json["interval"], "5s");
        assert!(json.get("password").is_none());
    }

    #[test]
    fn debug_output_hides_the_password() {
        let config = SimulatorConfig {
            password: Some("hunter2".into()),
            ..SimulatorConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
