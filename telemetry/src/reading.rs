//! Canonical readings: what the gateway writes to the telemetry topics.
//!
//! Field names are snake_case with the unit in the name. Each record is one JSON object per log
//! record, keyed by `device_id`; times are RFC 3339 UTC with milliseconds.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::kind::DeviceKind;

/// Formats a time the way every Polis record does: RFC 3339, UTC, milliseconds.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) mod rfc3339_ms {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(d)
    }
}

/// One traffic counter observation (from FIWARE TrafficFlowObserved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficReading {
    pub device_id: String,
    pub district: String,
    #[serde(with = "rfc3339_ms")]
    pub observed_at: DateTime<Utc>,
    #[serde(with = "rfc3339_ms")]
    pub ingested_at: DateTime<Utc>,
    pub lane_id: Option<i64>,
    /// Vehicles counted during the observation period (`intensity`).
    pub vehicles: i64,
    /// Fraction of time the detector was occupied, 0–1 (`occupancy`).
    pub occupancy_ratio: f64,
    /// Mean speed of the counted vehicles in km/h (`averageVehicleSpeed`).
    pub average_speed_kmh: f64,
    pub congested: Option<bool>,
    /// The device's own message sequence number (`seq`, a Polis extension), when it sends one.
    #[serde(default)]
    pub sequence: Option<i64>,
}

/// One electricity meter measurement (ACMeasurement-style).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyReading {
    pub device_id: String,
    pub district: String,
    #[serde(with = "rfc3339_ms")]
    pub observed_at: DateTime<Utc>,
    #[serde(with = "rfc3339_ms")]
    pub ingested_at: DateTime<Utc>,
    /// Instantaneous active power in kW (`totalActivePower`).
    pub active_power_kw: f64,
    /// Cumulative imported energy in kWh (`totalActiveEnergyImport`).
    pub energy_import_kwh: Option<f64>,
    /// Mean phase voltage in V (`phaseVoltage`, a number or per-phase `{L1, L2, L3}`).
    pub voltage_v: f64,
    /// Mean phase current in A (`current`, a number or per-phase `{L1, L2, L3}`).
    pub current_a: Option<f64>,
    /// Power factor, -1–1 (`powerFactor`).
    pub power_factor: Option<f64>,
    /// The device's own message sequence number (`seq`, a Polis extension), when it sends one.
    #[serde(default)]
    pub sequence: Option<i64>,
}

/// One vehicle position report (from FIWARE Vehicle).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransportReading {
    pub device_id: String,
    pub district: String,
    #[serde(with = "rfc3339_ms")]
    pub observed_at: DateTime<Utc>,
    #[serde(with = "rfc3339_ms")]
    pub ingested_at: DateTime<Utc>,
    pub route_id: String,
    pub latitude_deg: f64,
    pub longitude_deg: f64,
    /// Speed in km/h (`speed`).
    pub speed_kmh: f64,
    /// Heading in degrees clockwise from north (`bearing`).
    pub bearing_deg: Option<f64>,
    /// `onRoute`, `outOfService`, … (`serviceStatus`).
    pub service_status: Option<String>,
    /// Delay against the timetable in seconds; negative is early (`delay`).
    pub delay_s: f64,
    /// Fraction of capacity in use, 0–1 (`occupancy`).
    pub occupancy_ratio: Option<f64>,
    /// The device's own message sequence number (`seq`, a Polis extension), when it sends one.
    #[serde(default)]
    pub sequence: Option<i64>,
}

/// A validated reading of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    Traffic(TrafficReading),
    Energy(EnergyReading),
    Transport(TransportReading),
}

impl Reading {
    pub fn kind(&self) -> DeviceKind {
        match self {
            Reading::Traffic(_) => DeviceKind::Traffic,
            Reading::Energy(_) => DeviceKind::Energy,
            Reading::Transport(_) => DeviceKind::Transport,
        }
    }

    pub fn device_id(&self) -> &str {
        match self {
            Reading::Traffic(r) => &r.device_id,
            Reading::Energy(r) => &r.device_id,
            Reading::Transport(r) => &r.device_id,
        }
    }

    pub fn observed_at(&self) -> DateTime<Utc> {
        match self {
            Reading::Traffic(r) => r.observed_at,
            Reading::Energy(r) => r.observed_at,
            Reading::Transport(r) => r.observed_at,
        }
    }

    pub fn sequence(&self) -> Option<i64> {
        match self {
            Reading::Traffic(r) => r.sequence,
            Reading::Energy(r) => r.sequence,
            Reading::Transport(r) => r.sequence,
        }
    }

    /// The canonical JSON encoding stored as the record value.
    pub fn to_json(&self) -> Vec<u8> {
        let encoded = match self {
            Reading::Traffic(r) => serde_json::to_vec(r),
            Reading::Energy(r) => serde_json::to_vec(r),
            Reading::Transport(r) => serde_json::to_vec(r),
        };
        encoded.expect("readings contain only JSON-representable values")
    }
}
