//! Property test of the translator: random topics (valid and broken shapes, unicode, very long)
//! and random payloads (raw bytes, and JSON objects using the real attribute names with values
//! of random types) each yield exactly one outcome — an accepted record on the topic kind's
//! telemetry topic that decodes back into a canonical reading within its ranges, or a dead letter
//! with a reason header and the original bytes unchanged — and never a panic.

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use polis_gateway::sequence::SequenceTracker;
use polis_gateway::translate::{route, route_tracked};
use polis_telemetry::deadletter::HEADER_REASON;
use polis_telemetry::{
    DeviceKind, DeviceTopic, EnergyReading, RejectReason, TrafficReading, TransportReading,
    Validator, topics,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const CASES: u32 = 400;

/// Every attribute name the validator reads, plus `seq` and one it ignores.
const FIELDS: [&str; 20] = [
    "dateObserved",
    "observationDateTime",
    "intensity",
    "occupancy",
    "averageVehicleSpeed",
    "laneId",
    "congested",
    "totalActivePower",
    "totalActiveEnergyImport",
    "phaseVoltage",
    "current",
    "powerFactor",
    "location",
    "speed",
    "bearing",
    "serviceStatus",
    "routeId",
    "delay",
    "seq",
    "unrelated",
];

fn now() -> DateTime<Utc> {
    "2026-11-25T16:00:00Z".parse().unwrap()
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_-]{1,12}",
        "[A-Za-z0-9_-]{60,70}",
        "\\PC{0,8}",
        Just(String::new()),
        Just("+".to_string()),
        Just("#".to_string()),
    ]
}

fn topic() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        Just("traffic".to_string()),
        Just("energy".to_string()),
        Just("transport".to_string()),
        "\\PC{0,10}",
    ];
    prop_oneof![
        4 => (segment(), kind, segment()).prop_map(|(d, k, id)| format!("city/{d}/{k}/{id}")),
        1 => proptest::collection::vec(segment(), 0..7).prop_map(|parts| parts.join("/")),
        1 => "\\PC{0,40}",
        1 => "[a-z/]{900,1100}",
    ]
}

fn time_text() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3_600i64..600).prop_map(|s| json!((now() + Duration::seconds(s)).to_rfc3339())),
        Just(json!("2026-11-25T15:59:00.123+01:00")),
        Just(json!("2000-01-01T00:00:00Z")),
        Just(json!("yesterday")),
    ]
}

fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-2_000i64..2_000).prop_map(|n| json!(n)),
        (-1.5f64..500.0).prop_map(|f| json!(f)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,20}".prop_map(Value::String),
        time_text(),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(a, b, c)| json!({"L1": a, "L2": b, "L3": c})),
            (-200.0f64..200.0, -100.0f64..100.0)
                .prop_map(|(lon, lat)| json!({"type": "Point", "coordinates": [lon, lat]})),
            inner.prop_map(|v| json!({"type": "Point", "coordinates": v})),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::btree_map(proptest::sample::select(&FIELDS[..]), any_value(), 0..14),
        time_text(),
        any::<bool>(),
    )
        .prop_map(|(fields, time, with_time)| {
            let mut object: Map<String, Value> = fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            if with_time {
                object.insert("dateObserved".into(), time);
            }
            serde_json::to_vec(&Value::Object(object)).unwrap()
        })
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..300),
        4 => json_object(),
    ]
}

/// The accepted record decodes into its kind's reading, with every value in range.
fn check_reading(kind: DeviceKind, value: &[u8], device_id: &str) -> Result<(), TestCaseError> {
    let in_range = |ok: bool, what: &str| {
        prop_assert!(
            ok,
            "{what} out of range in {}",
            String::from_utf8_lossy(value)
        );
        Ok(())
    };
    let (id, sequence) = match kind {
        DeviceKind::Traffic => {
            let r: TrafficReading = serde_json::from_slice(value).unwrap();
            in_range((0.0..=1.0).contains(&r.occupancy_ratio), "occupancy")?;
            in_range(r.vehicles >= 0, "vehicles")?;
            in_range((0.0..=400.0).contains(&r.average_speed_kmh), "speed")?;
            (r.device_id, r.sequence)
        }
        DeviceKind::Energy => {
            let r: EnergyReading = serde_json::from_slice(value).unwrap();
            in_range((0.0..=1_000.0).contains(&r.voltage_v), "voltage")?;
            in_range(
                r.power_factor.is_none_or(|p| (-1.0..=1.0).contains(&p)),
                "power factor",
            )?;
            (r.device_id, r.sequence)
        }
        DeviceKind::Transport => {
            let r: TransportReading = serde_json::from_slice(value).unwrap();
            in_range((-90.0..=90.0).contains(&r.latitude_deg), "latitude")?;
            in_range((-180.0..=180.0).contains(&r.longitude_deg), "longitude")?;
            in_range(!r.route_id.is_empty(), "route id")?;
            (r.device_id, r.sequence)
        }
    };
    prop_assert_eq!(id, device_id);
    in_range(sequence.is_none_or(|s| s >= 0), "sequence")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn every_message_has_exactly_one_outcome(topic in topic(), payload in payload()) {
        let validator = Validator::default();
        let bytes = Bytes::from(payload.clone());
        let routed = route(&validator, &topic, &bytes, Some("client"), now());
        // The tracked path agrees for a device's first message (never a duplicate).
        let mut tracker = SequenceTracker::new(10);
        let (tracked, _) = route_tracked(&validator, &mut tracker, &topic, &bytes, Some("client"), now());
        prop_assert_eq!(&tracked, &routed);
        match routed.rejected {
            Some(reason) => {
                prop_assert_eq!(routed.topic, topics::DEADLETTER);
                prop_assert_eq!(&routed.record.value[..], &payload[..]);
                prop_assert_eq!(
                    routed.record.header(HEADER_REASON).map(|h| h.to_vec()),
                    Some(reason.as_str().as_bytes().to_vec())
                );
                prop_assert_ne!(reason, RejectReason::Duplicate);
            }
            None => {
                let parsed = DeviceTopic::parse(&topic).expect("an accepted topic parses");
                prop_assert_eq!(routed.topic, parsed.kind.topic());
                prop_assert_eq!(routed.record.key.as_deref(), Some(parsed.device_id.as_bytes()));
                check_reading(parsed.kind, &routed.record.value, &parsed.device_id)?;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn in_range_traffic_with_any_seq_is_accepted_and_keeps_it(
        intensity in 0i64..=1_000_000,
        occupancy in 0.0f64..=1.0,
        speed in 0.0f64..=400.0,
        seq in 0i64..=i64::MAX,
        id in "[A-Za-z0-9_-]{1,64}",
    ) {
        let payload = json!({
            "dateObserved": "2026-11-25T15:59:00Z",
            "intensity": intensity,
            "occupancy": occupancy,
            "averageVehicleSpeed": speed,
            "seq": seq,
        });
        let topic = format!("city/centre/traffic/{id}");
        let bytes = Bytes::from(serde_json::to_vec(&payload).unwrap());
        let routed = route(&Validator::default(), &topic, &bytes, None, now());
        prop_assert_eq!(routed.rejected, None);
        let reading: TrafficReading = serde_json::from_slice(&routed.record.value).unwrap();
        prop_assert_eq!(reading.sequence, Some(seq));
        check_reading(DeviceKind::Traffic, &routed.record.value, &id)?;
    }
}
