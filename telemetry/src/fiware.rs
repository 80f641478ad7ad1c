//! The payloads devices publish: FIWARE Smart Data Model attribute names, in camelCase.
//!
//! These types describe the wire format for producers (simulators, tests, device firmware
//! examples). The gateway does not deserialize into them: [`crate::validate`] reads the JSON field
//! by field so that each refusal can say exactly which attribute was wrong.

use serde::{Deserialize, Serialize};

/// FIWARE TrafficFlowObserved, as published to `city/{district}/traffic/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficFlowObserved {
    /// RFC 3339 observation time.
    pub date_observed: String,
    /// Vehicles counted during the observation period.
    pub intensity: i64,
    /// Detector occupancy, 0–1.
    pub occupancy: f64,
    /// km/h.
    pub average_vehicle_speed: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lane_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub congested: Option<bool>,
}

/// A per-phase value as in ACMeasurement (`{"L1": …, "L2": …, "L3": …}`) or a single number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PhaseValues {
    Single(f64),
    Phases {
        #[serde(rename = "L1")]
        l1: f64,
        #[serde(rename = "L2")]
        l2: f64,
        #[serde(rename = "L3")]
        l3: f64,
    },
}

/// An ACMeasurement-style electricity meter reading, as published to `city/{district}/energy/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcMeasurement {
    pub date_observed: String,
    /// kW; negative when the site exports.
    pub total_active_power: f64,
    /// kWh, cumulative.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_active_energy_import: Option<f64>,
    /// V.
    pub phase_voltage: PhaseValues,
    /// A.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<PhaseValues>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_factor: Option<f64>,
}

/// A GeoJSON point: `{"type": "Point", "coordinates": [longitude, latitude]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    #[serde(rename = "type")]
    pub kind: String,
    pub coordinates: [f64; 2],
}

impl GeoPoint {
    pub fn new(longitude: f64, latitude: f64) -> Self {
        GeoPoint {
            kind: "Point".to_string(),
            coordinates: [longitude, latitude],
        }
    }
}

/// FIWARE Vehicle plus the transit attributes Polis uses, as published to
/// `city/{district}/transport/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vehicle {
    /// RFC 3339 observation time (`dateObserved` is accepted too).
    pub observation_date_time: String,
    pub location: GeoPoint,
    /// km/h.
    pub speed: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearing: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_status: Option<String>,
    pub route_id: String,
    /// Seconds behind the timetable; negative when early.
    pub delay: f64,
    /// Fraction of capacity in use, 0–1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub occupancy: Option<f64>,
}

/// A payload plus the Polis sequence number extension: `{…the FIWARE attributes…, "seq": n}`.
/// `seq` counts the device's messages (0, 1, 2, …) so the gateway can tell duplicates and gaps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sequenced<T> {
    #[serde(flatten)]
    pub payload: T,
    pub seq: u64,
}
