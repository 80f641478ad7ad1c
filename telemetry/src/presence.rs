//! Device presence: connect and disconnect events, as the gateway writes them to the `devices`
//! topic (JSON, keyed by `device_id`). The latest event per device says whether it is online and
//! when it was last seen; analytics derives silent devices from the telemetry itself.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::reading::rfc3339_ms;

/// What happened to a device's MQTT session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceEvent {
    /// The device connected and authenticated.
    Connected,
    /// The device sent DISCONNECT.
    Disconnected,
    /// The connection ended without DISCONNECT (the device's last will, if any, was published).
    ConnectionLost,
}

/// One presence event of one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceRecord {
    pub device_id: String,
    pub event: PresenceEvent,
    /// When the gateway saw it.
    #[serde(with = "rfc3339_ms")]
    pub at: DateTime<Utc>,
    /// The gateway instance that saw it (its MQTT endpoint or configured name).
    pub gateway: String,
    /// Why the session ended, for the disconnect events.
    pub detail: Option<String>,
}

impl PresenceRecord {
    pub fn is_online(&self) -> bool {
        self.event == PresenceEvent::Connected
    }
}
