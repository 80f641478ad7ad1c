//! Validation and normalization: MQTT topic + FIWARE JSON payload → canonical [`Reading`].
//!
//! Every refusal is a [`Rejection`] whose reason is machine-readable and whose detail names the
//! attribute, the value found and what was expected.

use std::ops::RangeInclusive;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::deadletter::{RejectReason, Rejection};
use crate::kind::DeviceKind;
use crate::reading::{EnergyReading, Reading, TrafficReading, TransportReading};
use crate::topics::DeviceTopic;

/// The optional payload attribute with the device's message sequence number (a Polis extension
/// beside the FIWARE attributes): a whole number ≥ 0, normally one more than the previous message's.
pub const SEQUENCE_FIELD: &str = "seq";

/// Bounds on what the gateway accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest accepted payload in bytes.
    pub max_payload_bytes: usize,
    /// How far in the future an observation time may be (device clock skew).
    pub max_future_skew: Duration,
    /// How old an observation may be when it arrives.
    pub max_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 16 * 1024,
            max_future_skew: Duration::from_secs(5 * 60),
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// A refused message, with the topic parsed as far as it could be (for the dead-letter key).
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub topic: Option<DeviceTopic>,
    pub rejection: Rejection,
}

/// Turns raw MQTT messages into canonical readings.
#[derive(Debug, Clone, Default)]
pub struct Validator {
    limits: Limits,
}

impl Validator {
    pub fn new(limits: Limits) -> Self {
        Validator { limits }
    }

    /// Validates one message received at `now`.
    pub fn validate(
        &self,
        mqtt_topic: &str,
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Reading, Refused> {
        let topic = DeviceTopic::parse(mqtt_topic).map_err(|rejection| Refused {
            topic: None,
            rejection,
        })?;
        self.validate_payload(&topic, payload, now)
            .map_err(|rejection| Refused {
                topic: Some(topic),
                rejection,
            })
    }

    fn validate_payload(
        &self,
        topic: &DeviceTopic,
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Reading, Rejection> {
        if payload.len() > self.limits.max_payload_bytes {
            return Err(Rejection::new(
                RejectReason::PayloadTooLarge,
                format!(
                    "payload is {} bytes; the limit is {} bytes",
                    payload.len(),
                    self.limits.max_payload_bytes
                ),
            ));
        }
        let value: Value = serde_json::from_slice(payload).map_err(|e| {
            Rejection::new(
                RejectReason::MalformedJson,
                format!("payload is not valid JSON: {e}"),
            )
        })?;
        let Value::Object(map) = value else {
            return Err(Rejection::new(
                RejectReason::MalformedJson,
                format!("payload must be a JSON object, found {}", type_name(&value)),
            ));
        };
        let fields = Fields(&map);
        let observed_at = self.observed_at(&fields, now)?;
        let sequence = fields.integer(SEQUENCE_FIELD, 0..=i64::MAX)?;
        let device_id = topic.device_id.clone();
        let district = topic.district.clone();
        Ok(match topic.kind {
            DeviceKind::Traffic => Reading::Traffic(TrafficReading {
                device_id,
                district,
                observed_at,
                ingested_at: now,
                lane_id: fields.integer("laneId", 0..=1_000)?,
                vehicles: fields.required(
                    fields.integer("intensity", 0..=1_000_000)?,
                    "intensity",
                    "a vehicle count",
                )?,
                occupancy_ratio: fields.required(
                    fields.number("occupancy", 0.0..=1.0)?,
                    "occupancy",
                    "a ratio 0-1",
                )?,
                average_speed_kmh: fields.required(
                    fields.number("averageVehicleSpeed", 0.0..=400.0)?,
                    "averageVehicleSpeed",
                    "a speed in km/h",
                )?,
                congested: fields.boolean("congested")?,
                sequence,
            }),
            DeviceKind::Energy => Reading::Energy(EnergyReading {
                device_id,
                district,
                observed_at,
                ingested_at: now,
                active_power_kw: fields.required(
                    fields.number("totalActivePower", -1_000_000.0..=1_000_000.0)?,
                    "totalActivePower",
                    "a power in kW",
                )?,
                energy_import_kwh: fields.number("totalActiveEnergyImport", 0.0..=1e12)?,
                voltage_v: fields.required(
                    fields.phases("phaseVoltage", 0.0..=1_000.0)?,
                    "phaseVoltage",
                    "a voltage in V",
                )?,
                current_a: fields.phases("current", 0.0..=100_000.0)?,
                power_factor: fields.number("powerFactor", -1.0..=1.0)?,
                sequence,
            }),
            DeviceKind::Transport => {
                let (longitude_deg, latitude_deg) =
                    fields.required(fields.point("location")?, "location", "a GeoJSON Point")?;
                Reading::Transport(TransportReading {
                    device_id,
                    district,
                    observed_at,
                    ingested_at: now,
                    route_id: fields.required(
                        fields.string("routeId")?,
                        "routeId",
                        "a route id string",
                    )?,
                    latitude_deg,
                    longitude_deg,
                    speed_kmh: fields.required(
                        fields.number("speed", 0.0..=300.0)?,
                        "speed",
                        "a speed in km/h",
                    )?,
                    bearing_deg: fields.number("bearing", 0.0..=360.0)?,
                    service_status: fields.string("serviceStatus")?,
                    delay_s: fields.required(
                        fields.number("delay", -86_400.0..=86_400.0)?,
                        "delay",
                        "seconds behind timetable",
                    )?,
                    occupancy_ratio: fields.number("occupancy", 0.0..=1.0)?,
                    sequence,
                })
            }
        })
    }

    fn observed_at(
        &self,
        fields: &Fields<'_>,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, Rejection> {
        let name = if fields.0.contains_key("dateObserved") {
            "dateObserved"
        } else {
            "observationDateTime"
        };
        let text = fields.required(
            fields.string(name)?,
            "dateObserved",
            "an RFC 3339 time such as 2026-11-25T16:00:00Z",
        )?;
        let observed_at = DateTime::parse_from_rfc3339(&text)
            .map_err(|e| {
                Rejection::new(
                    RejectReason::BadTimestamp,
                    format!("`{name}` = {text:?} is not an RFC 3339 time ({e}); expected e.g. 2026-11-25T16:00:00Z"),
                )
            })?
            .with_timezone(&Utc);
        let skew = chrono::Duration::from_std(self.limits.max_future_skew)
            .unwrap_or(chrono::Duration::MAX);
        if observed_at > now + skew {
            return Err(Rejection::new(
                RejectReason::TimestampInFuture,
                format!(
                    "`{name}` = {text} is {}s ahead of the gateway clock; at most {}s of skew is accepted",
                    (observed_at - now).num_seconds(),
                    self.limits.max_future_skew.as_secs()
                ),
            ));
        }
        let max_age =
            chrono::Duration::from_std(self.limits.max_age).unwrap_or(chrono::Duration::MAX);
        if observed_at < now - max_age {
            return Err(Rejection::new(
                RejectReason::TimestampTooOld,
                format!(
                    "`{name}` = {text} is {}s old; observations older than {}s are refused",
                    (now - observed_at).num_seconds(),
                    self.limits.max_age.as_secs()
                ),
            ));
        }
        Ok(observed_at)
    }
}

/// Typed access to a payload's attributes; absent and `null` both read as `None`.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn required<T>(&self, value: Option<T>, name: &str, expected: &str) -> Result<T, Rejection> {
        value.ok_or_else(|| {
            Rejection::new(
                RejectReason::MissingField,
                format!("attribute `{name}` is missing: expected {expected}"),
            )
        })
    }

    fn number(&self, name: &str, range: RangeInclusive<f64>) -> Result<Option<f64>, Rejection> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let n = value
            .as_f64()
            .ok_or_else(|| wrong_type(name, value, "a number"))?;
        check_range(name, n, &range)?;
        Ok(Some(n))
    }

    fn integer(&self, name: &str, range: RangeInclusive<i64>) -> Result<Option<i64>, Rejection> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let n = match value {
            Value::Number(n) => n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                    .map(|f| f as i64)
            }),
            _ => None,
        }
        .ok_or_else(|| wrong_type(name, value, "a whole number"))?;
        if !range.contains(&n) {
            return Err(Rejection::new(
                RejectReason::OutOfRange,
                format!(
                    "attribute `{name}` = {n} is out of range: expected {}..={}",
                    range.start(),
                    range.end()
                ),
            ));
        }
        Ok(Some(n))
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, Rejection> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        value
            .as_bool()
            .map(Some)
            .ok_or_else(|| wrong_type(name, value, "true or false"))
    }

    fn string(&self, name: &str) -> Result<Option<String>, Rejection> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let s = value
            .as_str()
            .ok_or_else(|| wrong_type(name, value, "a string"))?;
        if s.is_empty() || s.len() > 128 {
            return Err(Rejection::new(
                RejectReason::OutOfRange,
                format!(
                    "attribute `{name}` must be 1-128 characters long, found {}",
                    s.len()
                ),
            ));
        }
        Ok(Some(s.to_string()))
    }

    /// A number, or an `{L1, L2, L3}` object of numbers whose mean is taken.
    fn phases(&self, name: &str, range: RangeInclusive<f64>) -> Result<Option<f64>, Rejection> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let expected = "a number or an object {\"L1\": n, \"L2\": n, \"L3\": n}";
        let n = match value {
            Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| wrong_type(name, value, expected))?,
            Value::Object(phases) => {
                let mut sum = 0.0;
                for phase in ["L1", "L2", "L3"] {
                    let v = phases
                        .get(phase)
                        .and_then(Value::as_f64)
                        .ok_or_else(|| wrong_type(name, value, expected))?;
                    check_range(&format!("{name}.{phase}"), v, &range)?;
                    sum += v;
                }
                sum / 3.0
            }
            _ => return Err(wrong_type(name, value, expected)),
        };
        check_range(name, n, &range)?;
        Ok(Some(n))
    }

    /// A GeoJSON point; returns (longitude, latitude).
    fn point(&self, name: &str) -> Result<Option<(f64, f64)>, Rejection> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let expected =
            "a GeoJSON Point {\"type\": \"Point\", \"coordinates\": [longitude, latitude]}";
        let coordinates = value
            .as_object()
            .filter(|o| o.get("type").and_then(Value::as_str) == Some("Point"))
            .and_then(|o| o.get("coordinates"))
            .and_then(Value::as_array)
            .filter(|c| c.len() == 2)
            .and_then(|c| Some((c[0].as_f64()?, c[1].as_f64()?)))
            .ok_or_else(|| wrong_type(name, value, expected))?;
        check_range(
            &format!("{name} longitude"),
            coordinates.0,
            &(-180.0..=180.0),
        )?;
        check_range(&format!("{name} latitude"), coordinates.1, &(-90.0..=90.0))?;
        Ok(Some(coordinates))
    }
}

fn check_range(name: &str, n: f64, range: &RangeInclusive<f64>) -> Result<(), Rejection> {
    if range.contains(&n) {
        Ok(())
    } else {
        Err(Rejection::new(
            RejectReason::OutOfRange,
            format!(
                "attribute `{name}` = {n} is out of range: expected {}..={}",
                range.start(),
                range.end()
            ),
        ))
    }
}

fn wrong_type(name: &str, value: &Value, expected: &str) -> Rejection {
    Rejection::new(
        RejectReason::WrongType,
        format!(
            "attribute `{name}` is {}: expected {expected}",
            type_name(value)
        ),
    )
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fiware::{AcMeasurement, GeoPoint, PhaseValues, TrafficFlowObserved, Vehicle};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T16:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn traffic_payload() -> serde_json::Value {
        serde_json::to_value(TrafficFlowObserved {
            date_observed: "2026-11-25T15:59:50.250Z".into(),
            intensity: 17,
            occupancy: 0.25,
            average_vehicle_speed: 42.5,
            lane_id: Some(1),
            congested: Some(false),
        })
        .unwrap()
    }

    fn reason(topic: &str, payload: &[u8]) -> RejectReason {
        Validator::default()
            .validate(topic, payload, now())
            .unwrap_err()
            .rejection
            .reason
    }

    #[test]
    fn an_optional_seq_is_carried_as_the_sequence() {
        let topic = "city/centre/traffic/tc-1";
        let mut payload = traffic_payload();
        let validate = |p: &serde_json::Value| {
            Validator::default().validate(topic, &serde_json::to_vec(p).unwrap(), now())
        };
        assert_eq!(validate(&payload).unwrap().sequence(), None);
        payload["seq"] = serde_json::json!(9_007_199_254_740_993u64);
        assert_eq!(
            validate(&payload).unwrap().sequence(),
            Some(9_007_199_254_740_993)
        );
        for (seq, expected) in [
            (serde_json::json!(-1), RejectReason::OutOfRange),
            (serde_json::json!(1.5), RejectReason::WrongType),
            (serde_json::json!("7"), RejectReason::WrongType),
        ] {
            payload["seq"] = seq;
            assert_eq!(validate(&payload).unwrap_err().rejection.reason, expected);
        }
    }

    #[test]
    fn normalizes_traffic() {
        let payload = serde_json::to_vec(&traffic_payload()).unwrap();
        let Reading::Traffic(r) = Validator::default()
            .validate("city/centre/traffic/tc-1", &payload, now())
            .unwrap()
        else {
            panic!("expected traffic")
        };
        assert_eq!(r.device_id, "tc-1");
        assert_eq!(r.district, "centre");
        assert_eq!(r.vehicles, 17);
        assert_eq!(r.occupancy_ratio, 0.25);
        assert_eq!(r.average_speed_kmh, 42.5);
        assert_eq!(r.lane_id, Some(1));
        assert_eq!(
            crate::reading::format_time(r.observed_at),
            "2026-11-25T15:59:50.250Z"
        );
    }

    #[test]
    fn normalizes_energy_phases_to_their_mean() {
        let payload = serde_json::to_vec(&AcMeasurement {
            date_observed: "2026-11-25T15:59:00Z".into(),
            total_active_power: 12.5,
            total_active_energy_import: Some(1000.0),
            phase_voltage: PhaseValues::Phases {
                l1: 229.0,
                l2: 231.0,
                l3: 230.0,
            },
            current: Some(PhaseValues::Single(18.0)),
            power_factor: Some(0.95),
        })
        .unwrap();
        let Reading::Energy(r) = Validator::default()
            .validate("city/north/energy/m-1", &payload, now())
            .unwrap()
        else {
            panic!("expected energy")
        };
        assert_eq!(r.voltage_v, 230.0);
        assert_eq!(r.current_a, Some(18.0));
        assert_eq!(r.active_power_kw, 12.5);
    }

    #[test]
    fn normalizes_vehicles() {
        let payload = serde_json::to_vec(&Vehicle {
            observation_date_time: "2026-11-25T15:59:00Z".into(),
            location: GeoPoint::new(-3.7, 40.4),
            speed: 30.0,
            bearing: Some(90.0),
            service_status: Some("onRoute".into()),
            route_id: "L1".into(),
            delay: 45.0,
            occupancy: Some(0.5),
        })
        .unwrap();
        let Reading::Transport(r) = Validator::default()
            .validate("city/north/transport/bus-1", &payload, now())
            .unwrap()
        else {
            panic!("expected transport")
        };
        assert_eq!((r.longitude_deg, r.latitude_deg), (-3.7, 40.4));
        assert_eq!(r.route_id, "L1");
        assert_eq!(r.delay_s, 45.0);
    }

    #[test]
    fn each_reason_has_a_message_that_produces_it() {
        let t = "city/centre/traffic/tc-1";
        let with = |key: &str, value: serde_json::Value| {
            let mut p = traffic_payload();
            p[key] = value;
            serde_json::to_vec(&p).unwrap()
        };
        let mut missing = traffic_payload();
        missing.as_object_mut().unwrap().remove("occupancy");
        assert_eq!(reason(t, b"{not json"), RejectReason::MalformedJson);
        assert_eq!(reason(t, b"[1,2]"), RejectReason::MalformedJson);
        assert_eq!(
            reason(t, &serde_json::to_vec(&missing).unwrap()),
            RejectReason::MissingField
        );
        assert_eq!(
            reason(t, &with("occupancy", "high".into())),
            RejectReason::WrongType
        );
        assert_eq!(
            reason(t, &with("intensity", 2.5.into())),
            RejectReason::WrongType
        );
        assert_eq!(
            reason(t, &with("occupancy", 1.7.into())),
            RejectReason::OutOfRange
        );
        assert_eq!(
            reason(t, &with("dateObserved", "yesterday".into())),
            RejectReason::BadTimestamp
        );
        assert_eq!(
            reason(t, &with("dateObserved", "2026-11-25T17:00:00Z".into())),
            RejectReason::TimestampInFuture
        );
        assert_eq!(
            reason(t, &with("dateObserved", "2026-01-01T00:00:00Z".into())),
            RejectReason::TimestampTooOld
        );
        assert_eq!(
            reason(t, &vec![b' '; 20_000]),
            RejectReason::PayloadTooLarge
        );
        assert_eq!(
            reason("city/centre/water/w-1", b"{}"),
            RejectReason::UnknownKind
        );
        assert_eq!(reason("city/centre", b"{}"), RejectReason::BadTopic);
    }

    #[test]
    fn details_name_the_attribute_and_the_expectation() {
        let mut p = traffic_payload();
        p["occupancy"] = 1.7.into();
        let refused = Validator::default()
            .validate(
                "city/centre/traffic/tc-1",
                &serde_json::to_vec(&p).unwrap(),
                now(),
            )
            .unwrap_err();
        assert_eq!(
            refused.rejection.detail,
            "attribute `occupancy` = 1.7 is out of range: expected 0..=1"
        );
        assert_eq!(refused.topic.unwrap().device_id, "tc-1");
    }
}
