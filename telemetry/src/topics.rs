//! Log topic names and the MQTT topic scheme `city/{district}/{kind}/{device_id}`.

use crate::deadletter::{RejectReason, Rejection};
use crate::kind::DeviceKind;

/// Accepted traffic counter readings, keyed by device id.
pub const TRAFFIC: &str = "telemetry.traffic";
/// Accepted energy meter readings, keyed by device id.
pub const ENERGY: &str = "telemetry.energy";
/// Accepted vehicle readings, keyed by device id.
pub const TRANSPORT: &str = "telemetry.transport";
/// Every MQTT message the gateway could not accept: original bytes plus reason headers.
pub const DEADLETTER: &str = "telemetry.deadletter";
/// Windowed metric rows computed by analytics.
pub const METRICS: &str = "metrics";
/// Alarm state changes raised by analytics.
pub const ALERTS: &str = "alerts";
/// Device presence events (connect, disconnect, last will).
pub const DEVICES: &str = "devices";

/// The topics whose records are raw device telemetry (including the dead letters).
pub const TELEMETRY_TOPICS: [&str; 4] = [TRAFFIC, ENERGY, TRANSPORT, DEADLETTER];
/// The topics analytics and the dashboard derive from telemetry.
pub const DERIVED_TOPICS: [&str; 3] = [METRICS, ALERTS, DEVICES];

/// The MQTT topic filter that covers every device.
pub const MQTT_FILTER: &str = "city/#";

/// Longest district or device id accepted in a topic.
pub const MAX_SEGMENT_LEN: usize = 64;

/// A parsed device topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTopic {
    pub district: String,
    pub kind: DeviceKind,
    pub device_id: String,
}

impl DeviceTopic {
    /// Parses `city/{district}/{kind}/{device_id}`; district and id are 1–64 characters of
    /// `A-Z a-z 0-9 - _`.
    pub fn parse(topic: &str) -> Result<Self, Rejection> {
        let parts: Vec<&str> = topic.split('/').collect();
        let [root, district, kind, device_id] = parts.as_slice() else {
            return Err(bad_shape(topic));
        };
        if *root != "city" {
            return Err(bad_shape(topic));
        }
        let kind: DeviceKind = kind.parse().map_err(|e: crate::kind::UnknownKind| {
            Rejection::new(RejectReason::UnknownKind, format!("topic `{topic}`: {e}"))
        })?;
        for (what, value) in [("district", district), ("device id", device_id)] {
            if !is_valid_segment(value) {
                return Err(Rejection::new(
                    RejectReason::BadTopic,
                    format!(
                        "topic `{topic}`: {what} `{value}` must be 1-{MAX_SEGMENT_LEN} characters of A-Z, a-z, 0-9, '-' or '_'"
                    ),
                ));
            }
        }
        Ok(DeviceTopic {
            district: district.to_string(),
            kind,
            device_id: device_id.to_string(),
        })
    }

    /// The MQTT topic a device publishes to.
    pub fn mqtt_topic(&self) -> String {
        format!("city/{}/{}/{}", self.district, self.kind, self.device_id)
    }
}

fn bad_shape(topic: &str) -> Rejection {
    Rejection::new(
        RejectReason::BadTopic,
        format!(
            "topic `{topic}` does not match city/{{district}}/{{traffic|energy|transport}}/{{device_id}}"
        ),
    )
}

fn is_valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SEGMENT_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_device_topic() {
        let t = DeviceTopic::parse("city/harbour/energy/meter-0042").unwrap();
        assert_eq!(t.district, "harbour");
        assert_eq!(t.kind, DeviceKind::Energy);
        assert_eq!(t.device_id, "meter-0042");
        assert_eq!(t.mqtt_topic(), "city/harbour/energy/meter-0042");
    }

    #[test]
    fn rejects_wrong_shapes_with_reasons() {
        for (topic, reason) in [
            ("city/harbour/energy", RejectReason::BadTopic),
            ("town/harbour/energy/m1", RejectReason::BadTopic),
            ("city/harbour/energy/m1/extra", RejectReason::BadTopic),
            ("city/harbour/water/m1", RejectReason::UnknownKind),
            ("city/har bour/energy/m1", RejectReason::BadTopic),
            ("city//energy/m1", RejectReason::BadTopic),
        ] {
            assert_eq!(
                DeviceTopic::parse(topic).unwrap_err().reason,
                reason,
                "{topic}"
            );
        }
    }
}
