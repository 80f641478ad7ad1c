//! The three kinds of city device.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a device measures; the third level of its MQTT topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// A traffic counter (FIWARE TrafficFlowObserved).
    Traffic,
    /// An electricity meter (FIWARE ACMeasurement-style).
    Energy,
    /// A bus or tram (FIWARE Vehicle).
    Transport,
}

impl DeviceKind {
    pub const ALL: [DeviceKind; 3] = [
        DeviceKind::Traffic,
        DeviceKind::Energy,
        DeviceKind::Transport,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Traffic => "traffic",
            DeviceKind::Energy => "energy",
            DeviceKind::Transport => "transport",
        }
    }

    /// The log topic that holds this kind's accepted readings.
    pub fn topic(self) -> &'static str {
        match self {
            DeviceKind::Traffic => crate::topics::TRAFFIC,
            DeviceKind::Energy => crate::topics::ENERGY,
            DeviceKind::Transport => crate::topics::TRANSPORT,
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind name that is not one of `traffic`, `energy`, `transport`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device kind `{0}`: expected traffic, energy or transport")]
pub struct UnknownKind(pub String);

impl FromStr for DeviceKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "traffic" => Ok(DeviceKind::Traffic),
            "energy" => Ok(DeviceKind::Energy),
            "transport" => Ok(DeviceKind::Transport),
            other => Err(UnknownKind(other.to_string())),
        }
    }
}
